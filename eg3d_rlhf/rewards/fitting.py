"""Fitting a reward model to a bank's labels: Bradley-Terry pairs (ties modelled or dropped) or unpaired good/bad (CS)."""

import contextlib
import copy
import dataclasses
import itertools
import json
import math
import time

import numpy as np
import torch
from tqdm import tqdm

import dnnlib

from eg3d_rlhf.rewards import REWARDS, build_reward, linear_heads
from eg3d_rlhf.rewards.losses import (UNPAIRED_OBJECTIVES, bradley_terry, bradley_terry_ties, dreamcs_loss,
    rao_kupper_nll, unpaired_cs_loss)
from torch_utils import misc
from torch_utils import report_to

#----------------------------------------------------------------------------
# Inputs. A model is trained on exactly what its checkpoint will declare: every raw slab goes through the input
# spec's prepare(), the function contract.Reward scores with. `bank` is duck-typed (ids, slab(id) -> raw [X, Y, Z]),
# as rewards/ does not import data/.

FLOAT16_MAX = float(torch.finfo(torch.float16).max)


@dataclasses.dataclass
class PreparedInputs:
    index:  dict                # {sample id: row of data}.
    data:   torch.Tensor        # float16 [N, ...]: spec.prepare of each raw slab, in the network's axis order.
    spec:   object              # contract.InputSpec they were prepared by.

    @property
    def x_axis(self):
        """The axis of a batch [B, ...] that is world x (the face's left-right) in the network's order."""
        return 1 + self.spec.order.index('x')

    def batch(self, ids, device='cpu'):
        """float32 [len(ids), ...] on `device`."""
        return self.data[[self.index[i] for i in ids]].to(device, torch.float32)

    def mean(self, ids):
        """Mean prepared input [...] (float32) of `ids`: the sigma reward's reference."""
        total = torch.zeros(self.data.shape[1:], dtype=torch.float64)
        for sample_id in ids:
            total += self.data[self.index[sample_id]].double()
        return (total / max(len(ids), 1)).float()


def prepared_inputs(bank, ids, spec, progress=True):
    """PreparedInputs of `ids`, every model input held in memory (float16); ValueError for a slab off the spec's
    grid, or one whose prepared values float16 cannot hold."""
    ids, shape = list(ids), tuple(spec.grid.shape)
    data = None
    for row, sample_id in enumerate(tqdm(ids, desc='loading slabs', unit='sample', disable=not progress)):
        raw = bank.slab(sample_id)
        if tuple(raw.shape) != shape:
            raise ValueError(f'{sample_id}: slab of shape {list(raw.shape)}, but the input spec\'s grid has shape {list(shape)}')
        x = torch.as_tensor(np.ascontiguousarray(spec.prepare(raw[None])[0]))
        if not bool(torch.isfinite(x).all()) or float(x.abs().max()) > FLOAT16_MAX:
            raise ValueError(f'{sample_id}: prepared input outside the float16 range (input spec {spec.to_dict()})')
        if data is None:
            data = torch.empty([len(ids), *x.shape], dtype=torch.float16)
        data[row] = x
    return PreparedInputs({x: i for i, x in enumerate(ids)}, data, spec)

#----------------------------------------------------------------------------
# Held-out measures.

def pairwise_accuracy(scores, pairs):
    """(correct, total) over (winner, loser) pairs given {id: score}; a model tie counts as wrong."""
    correct = sum(scores[w] > scores[l] for w, l in pairs)
    return int(correct), len(pairs)


def all_pairs_by_truth(truth, ids):
    """Every (winner, loser) pair of `ids` whose true scores differ: the noise-free preference over a split."""
    pairs = []
    for a, b in itertools.combinations(sorted(ids), 2):
        if truth[a] != truth[b]:
            pairs.append((a, b) if truth[a] > truth[b] else (b, a))
    return pairs


def wilson_interval(correct, total, confidence=0.95):
    """Wilson score interval (lo, hi) of a proportion; (0, 1) when total is 0."""
    if total == 0:
        return 0.0, 1.0
    import scipy.stats # pylint: disable=import-outside-toplevel  # 0.5 s to import; every tool reaches this module.
    ci = scipy.stats.binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method='wilson')
    return float(ci.low), float(ci.high)

#----------------------------------------------------------------------------

def setting(default, help, **limits):
    """A FitOptions field: its default, and the help and limits (min, min_open, max, choices; default_shown: what --help
    calls a default of None) of the command-line flag that sets it. Tools derive their flags from these
    (eg3d_rlhf.cli.fit_options), so each is stated here only."""
    return dataclasses.field(default=default, metadata=dict(help=help, **limits))


@dataclasses.dataclass
class FitOptions:
    """How a reward model is fitted: models that learn by epochs read epochs, patience, batch and lr; linear heads on
    a fixed trunk are solved exactly for each l2 penalty instead."""
    epochs:         int     = setting(20, 'Most epochs (models that learn their trunk; the default sigma reward solves its '
                                'linear heads exactly, for each --l2)', min=1)
    patience:       int     = setting(4, 'Early stopping: epochs without a better validation accuracy', min=1)
    batch:          int     = setting(16, 'Pairs (or samples, unpaired) per step', min=2)
    lr:             float   = setting(1e-3, 'Learning rate (AdamW)', min=0, min_open=True)
    weight_decay:   float   = setting(1e-4, 'AdamW weight decay', min=0)
    ties:           str     = setting('drop', 'Drop ties, or model them (Rao-Kupper)', choices=('drop', 'model'))
    mirror:         bool    = setting(None, 'Train on the left-right mirror image too (random flips by epochs; mirrored '
                                'copies of every pair for linear heads); auto (neither flag): fit both ways, keep the '
                                'better accuracy on validation (and out-of-bag) pairs, a tie mirroring',
                                default_shown='auto')
    objective:      str     = setting('cs-bce', 'Unpaired: cs-bce = -D_CS + --reg-weight x BCE(reward, good); dreamcs = '
                                'DreamCS\'s MSE(reward, --scores) + --cs-lambda x -D_CS', choices=UNPAIRED_OBJECTIVES)
    reg_weight:     float   = setting(1.0, 'Unpaired cs-bce: weight of the score regression term (BCE)', min=0)
    cs_lambda:      float   = setting(1.0, 'Unpaired dreamcs: lambda, the weight of -D_CS (0 = the MSE alone)', min=0)
    seed:           int     = setting(0, 'Seed of the initial weights, batch order and flips', min=0,
                                max=2**32 - 1)             # Also the bootstraps'; numpy's RandomState takes no more.
    l2:             tuple   = setting((0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0), 'Linear heads on fixed features: L2 '
                                'penalties tried; the lowest validation NLL wins', min=0, min_open=True)


class RewardFitter:
    """Optimises a reward model (base.RewardNet) on PreparedInputs; log(record) receives one TRL-named dict per epoch
    and split. Given a fixed trunk's FeatureTable (linear_heads; model.frozen_trunk), it reads each sample's trunk
    features from the table (a flip: the mirrored row) instead of running the trunk every step."""

    def __init__(self, model, inputs, options, device='cpu', log=None, table=None):
        assert table is None or getattr(model, 'frozen_trunk', False), 'a feature table stands for a fixed trunk only'
        self.model, self.inputs, self.table = model.to(device), inputs, table
        self.opts, self.device, self.log = options, torch.device(device), log or (lambda record: None)
        self.opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        self.rng = np.random.RandomState(options.seed)
        self.step = 0
        self.draws = torch.Generator().manual_seed(int(options.seed))     # The members' bootstrap counts.
        self.counts = {}                                # Pair or tie: [members] times each member draws it.

    def batch(self, ids, train):
        """Prepared inputs [len(ids), ...]; while training, each flipped left-right (world x) with probability 1/2 unless
        options.mirror is False (None, auto, flips: choosing between the two is train_model's)."""
        x = self.inputs.batch(ids, self.device)
        if train and self.opts.mirror is not False:
            flip = torch.from_numpy(self.rng.uniform(size=len(ids)) < 0.5).to(self.device)
            x = torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(self.inputs.x_axis), x)
        return x

    def table_features(self, ids, train):
        """The heads' input [len(ids), F] from the table, with batch()'s flips (the same draws) while training."""
        rows = torch.tensor([self.table.index[i] for i in ids])
        f = self.table.plain[rows]
        if train and self.opts.mirror is not False:
            flip = torch.from_numpy(self.rng.uniform(size=len(ids)) < 0.5)
            f = torch.where(flip[:, None], self.table.mirrored[rows], f)
        return self.model.scale_features(f.to(self.device, torch.float32))

    def forward(self, ids, train=True, members=False):
        """Rewards [len(ids)] (each member's, [len(ids), members], with members=True) and features [len(ids), F] of
        distinct ids."""
        features = self.table_features(ids, train) if self.table is not None else \
            self.model.features(self.batch(ids, train))
        misc.assert_shape(features, [len(ids), None])
        return (self.model.member_scores if members else self.model.score_features)(features), features

    def bootstrap(self, items):
        """[len(items), members] Poisson(1) counts of how often each member draws each pair or tie: member 0 draws
        every one once, and an item keeps its counts every epoch (linear_heads' bootstrap, for heads learned by epochs)."""
        keys = [tuple(item) for item in items]
        for key in keys:
            if key not in self.counts:
                self.counts[key] = torch.cat([torch.ones(1), torch.poisson(torch.ones(self.model.members - 1),
                    generator=self.draws)])
        return torch.stack([self.counts[key] for key in keys]) if keys else torch.zeros([0, self.model.members])

    @torch.no_grad()
    def scores(self, ids, chunk=16):
        """{id: reward} with the model in eval mode."""
        self.model.eval()
        ids, out = list(ids), {}
        for s in range(0, len(ids), chunk):
            r, _ = self.forward(ids[s:s + chunk], train=False)
            out.update(zip(ids[s:s + chunk], r.cpu().tolist()))
        return out

    def pair_loss(self, pairs, ties):
        """Loss and TRL metrics of (winner, loser) pairs and (a, b) ties, each distinct sample computed once. Several
        members each fit their own bootstrap draw of the items (bootstrap), so that their spread is a doubt; their mean
        is what the metrics read."""
        ids = sorted({x for p in pairs + ties for x in p})
        each, _ = self.forward(ids, members=True)
        r = each.mean(dim=1)
        at = {x: i for i, x in enumerate(ids)}
        pick = lambda items, k: r[[at[p[k]] for p in items]] if items else r[:0]
        rw, rl = pick(pairs, 0), pick(pairs, 1)
        if self.model.members > 1:
            items = pairs + (ties if self.opts.ties == 'model' else [])
            a, b = (each[[at[p[k]] for p in items]] for k in (0, 1))
            tie = torch.tensor([False] * len(pairs) + [True] * (len(items) - len(pairs)), device=r.device)[:, None]
            counts = self.bootstrap([('pair', *p) for p in pairs] + [('tie', *t) for t in items[len(pairs):]]).to(r.device)
            nll = rao_kupper_nll(a - b, tie) if self.opts.ties == 'model' else -torch.nn.functional.logsigmoid(a - b)
            loss = ((nll * counts).sum(dim=0) / counts.sum(dim=0).clamp(min=1)).mean()
            return loss, trl_metrics(loss, rw, rl)
        if self.opts.ties == 'model' and ties:
            tie = torch.cat([torch.zeros(len(pairs), dtype=torch.bool), torch.ones(len(ties), dtype=torch.bool)]).to(r.device)
            loss = bradley_terry_ties(torch.cat([rw, pick(ties, 0)]), torch.cat([rl, pick(ties, 1)]), tie)
        else:
            loss = bradley_terry(rw, rl)
        return loss, trl_metrics(loss, rw, rl)

    def unpaired_loss(self, ids, labels, scores=None):
        """Loss (options.objective) and TRL metrics of good and bad ids; scores {id: score}: dreamcs's MSE targets."""
        r, features = self.forward(ids)
        good = torch.tensor([labels[x] == 1 for x in ids], device=r.device)
        if self.opts.objective == 'dreamcs':
            targets = torch.tensor([scores[x] for x in ids], dtype=r.dtype, device=r.device)
            loss = dreamcs_loss(r, features, good, targets, cs_lambda=self.opts.cs_lambda)
        else:
            loss = unpaired_cs_loss(r, features, good, reg_weight=self.opts.reg_weight)
        return loss, trl_metrics(loss, r[good], r[~good])

    def train_batches(self, train):
        """One epoch of batches: lists of pairs (paired) or balanced lists of ids (unpaired)."""
        b = self.opts.batch
        if 'labels' in train:
            good = [x for x, v in train['labels'].items() if v == 1]
            bad = [x for x, v in train['labels'].items() if v == 0]
            self.rng.shuffle(good), self.rng.shuffle(bad)
            n = min(len(good), len(bad)) // max(b // 2, 1)
            return [good[i * (b // 2):(i + 1) * (b // 2)] + bad[i * (b // 2):(i + 1) * (b // 2)] for i in range(n)]
        items = [('pair', p) for p in train['pairs']]
        if self.opts.ties == 'model':
            items += [('tie', t) for t in train['ties']]
        order = self.rng.permutation(len(items))
        return [[items[i] for i in order[s:s + b]] for s in range(0, len(items), b)]

    def fit(self, train, val_pairs, progress=True):
        """Train until the epochs run out or validation accuracy stops rising; keep the best weights.

        train: dict(pairs=[(w, l)], ties=[(a, b)]) or dict(labels={id: 1 | 0}, scores={id: score} for dreamcs);
        val_pairs: [(winner, loser)], or None to run every epoch and keep the last.
        Returns the history of validation accuracies.
        """
        keep_last, val_pairs = val_pairs is None, val_pairs or []      # None: no validation; every epoch, the last kept.
        val_ids = sorted({x for p in val_pairs for x in p})
        best, best_state, stale, history = -1.0, None, 0, []
        for epoch in range(self.opts.epochs):
            self.model.train()
            sums, count = {}, 0
            for items in tqdm(self.train_batches(train), desc=f'epoch {epoch}', unit='step', leave=False, disable=not progress):
                if 'labels' in train:
                    loss, m = self.unpaired_loss(items, train['labels'], train.get('scores'))
                else:
                    loss, m = self.pair_loss([p for k, p in items if k == 'pair'], [p for k, p in items if k == 'tie'])
                if not torch.isfinite(loss):             # Stop before NaN reaches the weights (and the checkpoint).
                    raise FloatingPointError(f'reward training diverged at step {self.step} (loss {float(loss)}); '
                        'lower --lr, or check the bank and labels')
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.step += 1
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            self.log(dict(epoch=epoch, step=self.step, **{k: v / max(count, 1) for k, v in sums.items()}))
            accuracy = self.evaluate(val_pairs, val_ids, epoch)
            history.append(accuracy)
            if keep_last:
                continue
            if accuracy > best:
                best, best_state, stale = accuracy, copy.deepcopy(self.model.state_dict()), 0
            else:
                stale += 1
                if stale >= self.opts.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return history

    def evaluate(self, pairs, ids, epoch):
        """Validation accuracy (model ties wrong), logged with TRL's eval_ names."""
        scores = self.scores(ids)
        rw = torch.tensor([scores[w] for w, _ in pairs])
        rl = torch.tensor([scores[l] for _, l in pairs])
        m = trl_metrics(bradley_terry(rw, rl), rw, rl) if pairs else {}
        self.log(dict(epoch=epoch, step=self.step, **{'eval_' + k: v for k, v in m.items()}))
        return m.get('rewards/accuracies', 0.0)


def centre_scores(model, mean_scores):
    """Shift each member's output by minus its mean score over some samples (mean_scores [members]; the bias of its
    last layer, model.output_biases()). Bradley-Terry fits only score differences, so the level is arbitrary; centred
    on the training samples, rewards fall inside the fine-tuning clip of [-10, 10] instead of above it, where the
    clipped loss has no gradient; centring members alike keeps their spread about what they disagree on."""
    with torch.no_grad():
        for bias, mean in zip(model.output_biases(), np.atleast_1d(mean_scores)):
            bias.sub_(float(mean))


def trl_metrics(loss, r_chosen, r_rejected):
    """TRL's reward-trainer names: loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins."""
    r_chosen, r_rejected = r_chosen.detach().float(), r_rejected.detach().float()
    m = dict(loss=float(loss.detach()))
    if len(r_chosen) and len(r_rejected):
        m['rewards/chosen'] = float(r_chosen.mean())
        m['rewards/rejected'] = float(r_rejected.mean())
        if len(r_chosen) == len(r_rejected):
            m['rewards/accuracies'] = float((r_chosen > r_rejected).float().mean())
            m['rewards/margins'] = float((r_chosen - r_rejected).mean())
        else:
            m['rewards/margins'] = m['rewards/chosen'] - m['rewards/rejected']
    return m

#----------------------------------------------------------------------------
# Mirroring, chosen on validation. Mirrored pairs assume a taste that cannot tell left from right: where that holds
# they double the judgements, where it does not (this generator's faces lean one way, and `symmetric` ranks them by
# it) they forbid the answer. Nobody knows which before labelling, so unless options.mirror says, train_model fits both
# ways and keeps the better held-out accuracy, ties going to mirroring (the old default, and the one that needs the
# fewer judgements where both are right). Linear heads read the mirrored features from the FeatureTable they already
# hold, so the second fit costs only its solves, and are compared on the validation pairs and their bootstrap members'
# out-of-bag training pairs together (pooled_validation); a model that learns by epochs trains twice and is compared
# on the validation pairs. Each way picks its own L2 penalty on validation NLL (linear_heads) before the two are
# compared.

MIRROR_NAMES = {True: 'mirrored', False: 'plain'}


def mirror_candidates(options, val_pairs):
    """The settings train_model fits, in order: options.mirror when set, else both (mirrored first); auto without
    validation pairs to choose by fits mirrored alone."""
    if options.mirror is not None:
        return [bool(options.mirror)]
    return [True, False] if val_pairs else [True]


def mirror_view(table, mirror):
    """The FeatureTable (or None) a fit at `mirror` reads: without its mirrored features for a plain fit; ValueError
    for a mirrored fit on a table computed without them."""
    if table is None or mirror:
        if table is not None and table.mirrored is None:
            raise ValueError('a mirrored fit needs a feature table with mirrored features (feature_table(mirror=True))')
        return table
    return dataclasses.replace(table, mirrored=None)


def choose_mirror(options, validation):
    """The `mirror` entry of train_model's report from validation {mirror: {accuracy, nll, pairs}} of the fits made:
    setting (auto, on or off), chosen (bool), why (a sentence), and validation keyed by MIRROR_NAMES."""
    setting = 'auto' if options.mirror is None else 'on' if options.mirror else 'off'

    def score(m):                                                   # None or NaN (no pairs) below any accuracy.
        a = validation[m]['accuracy']
        return a if a is not None and math.isfinite(a) else -1.0
    chosen = max(validation, key=lambda m: (score(m), m))          # Equal accuracy: True (mirrored) wins.
    if setting != 'auto':
        why = f'set by --{"" if chosen else "no-"}mirror'
    elif len(validation) == 1:
        why = 'auto without validation pairs to choose by: mirrored, the default'
    else:
        a, b = (validation[m]['accuracy'] for m in (True, False))
        v = validation[True]
        where = f'{v["split_pairs"]} validation + {v["oob_pairs"]} out-of-bag' if v.get('oob_pairs') else \
            f'{v["pairs"]} validation'
        why = (f'auto: accuracy {100 * a:.1f}% mirrored vs {100 * b:.1f}% plain on {where} pairs'
            + ('; a tie goes to mirroring' if a == b else ''))
    return dict(setting=setting, chosen=bool(chosen), why=why,
        validation={MIRROR_NAMES[m]: dict(v) for m, v in validation.items()})


def describe_mirror(choice):
    """'mirroring off (auto: accuracy 84.0% mirrored vs 91.0% plain on 100 validation + 870 out-of-bag pairs)'."""
    return f'mirroring {"on" if choice["chosen"] else "off"} ({choice["why"]})'

#----------------------------------------------------------------------------
# A training run: a new model of a registry kind, fitted, centred and measured on held-out samples. `labels` is a
# data.preferences.TrainingLabels (duck-typed): ids per split, train labels, validation and test pairs, counts.

def resolve_centre(kind, centre=None, config=None):
    """Does a `kind` model of `config` subtract the training samples' mean input? By default when that model uses a
    reference slab; ValueError when asked of one that takes none."""
    cls, config = REWARDS[kind], dict(config or {})
    takes = cls.takes_reference and cls.uses_reference(config)
    if centre and not takes:
        kinds = ', '.join(k for k, c in REWARDS.items() if c.takes_reference)
        raise ValueError(f'this {kind} reward takes no reference slab; centring is for {kinds} (with a learned trunk) only')
    return cls.uses_reference(config) if centre is None else bool(centre)


def held_out(correct, total):
    """A held-out pairwise accuracy: {correct, total, accuracy, wilson95: [lo, hi]}."""
    lo, hi = wilson_interval(correct, total)
    return dict(correct=int(correct), total=int(total), accuracy=correct / max(total, 1), wilson95=[lo, hi])


def describe_held_out(result):
    """'87.5% of 40 pairs (95% Wilson interval 73.9-94.5%)'."""
    lo, hi = result['wilson95']
    return f'{100 * result["accuracy"]:.1f}% of {result["total"]} pairs (95% Wilson interval {100 * lo:.1f}-{100 * hi:.1f}%)'


def describe_fit(report):
    """'L2 0.3 of 7 tried, 12 s' or 'best epoch 4 of 9, 80 s', and what a refit_all was fitted to."""
    how = f'L2 {report["heads"]["l2"]:g} of {len(report["heads"]["grid"])} tried' if 'heads' in report else \
        f'best epoch {report["best_epoch"]} of {report["epochs_run"]}'
    refit = report.get('refit')
    if refit:
        labelled = f'{refit["pairs"]} pairs and {refit["ties"]} ties' if 'pairs' in refit else f'{refit["labels"]} labels'
        how += f'; then fitted again on every judgement: {labelled} over {refit["samples"]} samples'
    return f'{how}, {report["train_seconds"]:.0f} s'


def fits_heads_only(model):
    """Is the model a fixed trunk under linear heads, fitted exactly by linear_heads instead of by epochs?"""
    return bool(getattr(model, 'frozen_trunk', False)) and hasattr(model, 'heads') and \
        all(isinstance(h, torch.nn.Linear) for h in model.heads)


def with_members(model_config, members=None):
    """model_config with "members" set to `members` (None: left as it is); ValueError where it already says otherwise."""
    if members is None:
        return dict(model_config)
    if model_config.get('members', members) != members:
        raise ValueError(f'--members {members} and the model config\'s "members": {model_config["members"]} differ; give one')
    return dict(model_config, members=int(members))


def new_model(kind, inputs, train_ids, model_config=None, centre=None):
    """A `kind` model built from model_config; centred ones get the training samples' mean input as reference."""
    if resolve_centre(kind, centre, model_config):
        model = build_reward(kind, **dict(model_config or {}), reference_shape=list(inputs.data.shape[1:]))
        model.set_reference(inputs.mean(train_ids))
        return model
    return build_reward(kind, **dict(model_config or {}))


def train_model(model, inputs, train_ids, train, val_pairs, options, table=None, device='cpu', log=None, progress=True,
        ranks=None):
    """Fit `model` to train (dict(pairs, ties) or dict(labels)) with validation pairs, then centre every member on the
    training samples. A fixed trunk under linear heads is solved exactly on its FeatureTable (computed here unless
    given: it depends only on the model's trunk and the bank); anything else trains by RewardFitter's epochs. With
    options.mirror None (auto) it is fitted with and without mirroring from the same initial weights and the better on
    validation is kept (choose_mirror); log records then carry mirror: True | False. ranks (shards.Ranks): the
    FeatureTable's batches are split over a torchrun job's ranks (linear_heads.feature_table); the fit is every rank's.
    Returns a report of the fit in plain types, its choice of mirroring under `mirror`."""
    start = time.time()
    if getattr(model, 'frozen_trunk', False):                      # Fixed features: computed once per bank.
        table = table or linear_heads.feature_table(model, inputs, inputs.index, options.mirror is not False,
            device=device, progress=progress, ranks=ranks)
    candidates = mirror_candidates(options, val_pairs)
    initial = copy.deepcopy(model.state_dict()) if len(candidates) > 1 else None
    fits, step = {}, 0
    for mirror in candidates:
        if initial is not None:                                     # The same start for both: only mirroring differs.
            model.load_state_dict(initial)
        tagged = log if initial is None or log is None else (lambda record, m=mirror: log(dict(record, mirror=m)))
        report, step = fit_once(model, inputs, train_ids, train, val_pairs, dataclasses.replace(options, mirror=mirror),
            mirror_view(table, mirror), step, device, tagged, progress)
        fits[mirror] = report, (copy.deepcopy(model.state_dict()) if initial is not None else None)
    choice = choose_mirror(options, {m: r['validation'] for m, (r, _) in fits.items()})
    report, state = fits[choice['chosen']]
    report = {k: v for k, v in report.items() if k != 'validation'}      # Both ways' are under mirror.
    if state is not None:
        model.load_state_dict(state)
    offsets = member_scores(model, inputs, train_ids, table=table, device=device).mean(axis=0)
    centre_scores(model, offsets)                                   # Mean score 0 over the training samples.
    model.cpu().eval()
    return dict(report, mirror=choice, centred_by=offsets.tolist(), train_seconds=time.time() - start)


def fit_once(model, inputs, train_ids, train, val_pairs, options, table, step, device, log, progress):
    """One fit of train_model at a fixed options.mirror: (report with its validation {accuracy, nll, pairs}, the
    optimizer step it ended at; a model that learns by epochs counts on from `step`)."""
    if fits_heads_only(model) and 'pairs' in train:                 # Scales the features itself.
        ties = train['ties'] if options.ties == 'model' else []
        heads = linear_heads.fit_linear_heads(model, table, train_ids, train['pairs'], ties, val_pairs or [], options.l2,
            seed=options.seed, log=log)
        model.cpu()
        return dict(heads=heads, validation=pooled_validation(heads, len(val_pairs or []))), step
    if table is not None:                                           # Epochs on a fixed trunk read scaled features.
        linear_heads.set_feature_scale(model, table, train_ids)
    fitter = RewardFitter(model, inputs, options, device=device, log=log, table=table)
    fitter.step = step
    history = fitter.fit(train, val_pairs, progress=progress)
    best = int(np.argmax(history))
    return dict(epochs_run=len(history), best_epoch=best, val_accuracy=history, validation=dict(accuracy=history[best],
        nll=None, pairs=len(val_pairs or []), split_accuracy=history[best], split_pairs=len(val_pairs or []))), fitter.step


def pooled_validation(heads, val_count):
    """What a linear heads fit (linear_heads.fit_linear_heads' report) is chosen by: the accuracy over its validation
    pairs and the out-of-bag training pairs together, {accuracy, nll (the validation split's), pairs, split_accuracy,
    split_pairs, oob_accuracy, oob_pairs}. A hundred noisy validation pairs cannot tell a 4-point difference; ten
    times as many can, and the bootstrap members have scored them already."""
    split, oob = heads['chosen']['val_accuracy'], heads['out_of_bag']
    counted = [(a, n) for a, n in ((split, val_count), (oob['accuracy'], oob['pairs'])) if n and math.isfinite(a)]
    total = sum(n for _, n in counted)
    return dict(accuracy=sum(a * n for a, n in counted) / total if total else math.nan, nll=heads['chosen']['val_nll'],
        pairs=total, split_accuracy=split, split_pairs=val_count, oob_accuracy=oob['accuracy'], oob_pairs=oob['pairs'])

@torch.no_grad()
def member_scores(model, inputs, ids, table=None, device='cpu', chunk=16):
    """numpy [len(ids), members] of every member's reward (from the FeatureTable of a fixed trunk when given)."""
    ids = list(ids)
    model.eval()
    if table is not None:
        f = table.plain[[table.index[i] for i in ids]].float()
        return model.member_scores(model.scale_features(f)).numpy()
    model.to(device)
    out = [model.member_scores(model.features(inputs.batch(ids[s:s + chunk], device))).cpu()
        for s in range(0, len(ids), chunk)]
    model.cpu()
    return torch.cat(out).numpy() if out else np.zeros([0, model.members], dtype=np.float32)


def dreamcs_targets(labels, scores):
    """{id: score} of every id of labels ({id: 1 | 0}): objective dreamcs's MSE targets, from scores ({id: score}, e.g.
    an id,reward CSV); ValueError when scores is None or lacks a labelled id."""
    if scores is None:
        raise ValueError('objective dreamcs regresses the reward on each sample\'s score (L_MSE): give the scores '
            '(--scores CSV of id,reward, e.g. tools/annotate.py good-bad --given-scores-out)')
    missing = [x for x in sorted(labels) if x not in scores]
    if missing:
        raise ValueError(f'objective dreamcs regresses the reward on each sample\'s score (L_MSE), but {len(missing)} of '
            f'{len(labels)} labelled training samples have none (first: {missing[0]})')
    return {x: float(scores[x]) for x in labels}


def fit_reward(kind, bank, labels, spec, options, model_config=None, centre=None, truth=None, scores=None, device='cpu',
        log=None, progress=True, ranks=None, refit=False):
    """A new `kind` model fitted to `labels` on the bank's inputs as `spec` prepares them (train_model), its scores
    centred on the training samples (mean 0), and its held-out pairwise accuracy on the test samples: against the test
    labels and, given truth ({id: score}), against every test pair whose true scores differ. scores ({id: score}) are
    the MSE targets of unpaired labels under objective dreamcs; ranks: train_model's. With refit, the model returned
    is refit_all's, fitted again on every label with the settings chosen here (report['refit']). Returns (model on
    the cpu in eval mode, report: the run in plain types)."""
    centre = resolve_centre(kind, centre, model_config)
    train, targets = labels.train, scores
    if options.objective == 'dreamcs' and 'labels' in train:
        train = dict(train, scores=dreamcs_targets(train['labels'], scores))
    torch.manual_seed(options.seed)
    inputs = prepared_inputs(bank, bank.ids, spec, progress=progress)
    model = new_model(kind, inputs, labels.ids['train'], model_config, centre)
    fitted = train_model(model, inputs, labels.ids['train'], train, labels.val_pairs, options, device=device,
        log=log, progress=progress, ranks=ranks)
    test = labels.ids['test']
    scores = dict(zip(test, member_scores(model, inputs, test, device=device).mean(axis=1).tolist()))
    results = dict(test_labels=held_out(*pairwise_accuracy(scores, labels.test_pairs)))
    if truth is not None:
        results['test_truth'] = held_out(*pairwise_accuracy(scores, all_pairs_by_truth(truth, test)))
    report = dict(reward=kind, centre=centre, config=model.config, input=spec.to_dict(), options=dataclasses.asdict(options),
        counts=dict(labels.counts), **fitted, held_out=results)
    if refit:
        every = labels.every if options.objective != 'dreamcs' else \
            dict(labels.every, scores=dreamcs_targets(labels.every['labels'], targets))
        model, report['refit'] = refit_all(kind, inputs, every, fitted, options, model_config, centre, device, progress)
    return model, json.loads(json.dumps(report))


def refit_all(kind, inputs, every, fitted, options, model_config, centre, device='cpu', progress=True):
    """A new model fitted to every label (TrainingLabels.every: the three splits' and the pairs across them) with the
    settings the split fit chose: its mirroring, and its L2 penalty (linear heads) or its number of epochs (the best
    epoch's). The split fit's held-out accuracy is the estimate for it. Returns (model, what it was fitted to and with)."""
    ids = sorted({x for p in every.get('pairs', []) + every.get('ties', []) for x in p} | set(every.get('labels', {})))
    chosen = dict(mirror=fitted['mirror']['chosen'])
    if 'heads' in fitted:
        chosen['l2'] = (fitted['heads']['l2'],)
    else:
        chosen['epochs'] = fitted['best_epoch'] + 1
    torch.manual_seed(options.seed)
    model = new_model(kind, inputs, ids, model_config, centre)
    train_model(model, inputs, ids, every, None, dataclasses.replace(options, **chosen), device=device, progress=progress)
    counted = {k: len(v) for k, v in every.items()}
    return model, dict(samples=len(ids), **counted, settings={k: list(v) if isinstance(v, tuple) else v
        for k, v in chosen.items()})


class MetricsLog:
    """A RewardFitter log: every record goes to a JSONL file (flushed at once), to .records, and to a writer
    (torch_utils/report_to.py; its owner closes it) under the names TRL gives them in TensorBoard: 'eval_x' as
    'eval/x', the rest as 'train/x', at the record's optimizer step (a linear heads fit has none: its record count);
    the mirror tag of an automatic choice's records (train_model) stays in the file alone."""

    def __init__(self, path, writer=None):
        self.records, self.path = [], path
        with dnnlib.util.writing(path):                             # A full disk: one line naming the log.
            self.file = open(path, 'w', encoding='utf-8')
        self.writer = writer or report_to.NullWriter()

    def __call__(self, record):
        self.records.append(record)
        with dnnlib.util.writing(self.path):
            self.file.write(json.dumps(record) + '\n')
            self.file.flush()
        evaluation = any(k.startswith('eval_') for k in record)     # Its epoch is the training record's, logged already.
        names = {(f'eval/{k[5:]}' if k.startswith('eval_') else f'train/{k}'): v for k, v in record.items()
            if k not in ('step', 'mirror') and not (evaluation and k == 'epoch')}
        self.writer.scalars(record.get('step', len(self.records) - 1), report_to.flat_scalars(names))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(OSError) if exc[0] is not None else dnnlib.util.writing(self.path):
            self.file.close()

#----------------------------------------------------------------------------
