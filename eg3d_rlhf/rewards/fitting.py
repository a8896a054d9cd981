"""Fitting a reward model to a bank's labels: Bradley-Terry pairs (ties modelled or dropped) or unpaired good/bad (CS)."""

import copy
import dataclasses
import itertools

import numpy as np
import scipy.stats
import torch
from tqdm import tqdm

from eg3d_rlhf.rewards.losses import bradley_terry, bradley_terry_ties, unpaired_cs_loss
from eg3d_rlhf.geometry.sigma import normalise_sigma_self

#----------------------------------------------------------------------------
# Inputs and held-out measures.

def normalised_inputs(bank, ids, progress=True):
    """({id: row}, float16 tensor [N, X, Y, Z] of self-normalised slabs): every model input, held in memory."""
    ids = list(ids)
    first = bank.slab(ids[0])
    data = torch.empty([len(ids), *first.shape], dtype=torch.float16)
    for row, sample_id in enumerate(tqdm(ids, desc='loading slabs', unit='sample', disable=not progress)):
        data[row] = torch.from_numpy(normalise_sigma_self(bank.slab(sample_id)))
    return {x: i for i, x in enumerate(ids)}, data


def mean_input(index, inputs, ids):
    """Mean normalised slab [X, Y, Z] (float32) of `ids`: the sigma reward's reference."""
    total = torch.zeros(inputs.shape[1:], dtype=torch.float64)
    for sample_id in ids:
        total += inputs[index[sample_id]].double()
    return (total / max(len(ids), 1)).float()


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
    ci = scipy.stats.binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method='wilson')
    return float(ci.low), float(ci.high)

#----------------------------------------------------------------------------

@dataclasses.dataclass
class FitOptions:
    epochs:     int = 20            # Most passes over the training labels.
    patience:   int = 4             # Stop after this many epochs without a better validation accuracy.
    batch:      int = 16            # Pairs (or samples, unpaired) per optimiser step.
    lr:         float = 1e-3        # AdamW learning rate.
    weight_decay: float = 1e-4      # AdamW weight decay.
    ties:       str = 'drop'        # 'drop' or 'model' (Rao-Kupper Bradley-Terry with ties).
    mirror:     bool = True         # Flip x (the face's left-right) at random while training.
    reg_weight: float = 1.0         # Unpaired mode: weight of the score regression term beside -D_CS.
    seed:       int = 0             # Order of the batches and the flips.


class RewardFitter:
    """Optimises a reward model on in-memory inputs; log(record) receives one TRL-named dict per epoch and split."""

    def __init__(self, model, index, inputs, options, device='cpu', log=None):
        self.model, self.index, self.inputs = model.to(device), index, inputs
        self.opts, self.device, self.log = options, torch.device(device), log or (lambda record: None)
        self.opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        self.rng = np.random.RandomState(options.seed)
        self.step = 0

    def batch(self, ids, train):
        x = self.inputs[[self.index[i] for i in ids]].to(self.device, torch.float32)
        if train and self.opts.mirror:
            flip = torch.from_numpy(self.rng.uniform(size=len(ids)) < 0.5).to(self.device)
            x = torch.where(flip[:, None, None, None], x.flip(1), x)
        return x

    def forward(self, ids, train=True):
        """Rewards [len(ids)] and features [len(ids), F] of distinct ids."""
        features = self.model.features(self.batch(ids, train))
        return self.model.head(features)[:, 0], features

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
        """Loss and TRL metrics of (winner, loser) pairs and (a, b) ties, each distinct sample computed once."""
        ids = sorted({x for p in pairs + ties for x in p})
        r, _ = self.forward(ids)
        at = {x: i for i, x in enumerate(ids)}
        pick = lambda items, k: r[[at[p[k]] for p in items]] if items else r[:0]
        rw, rl = pick(pairs, 0), pick(pairs, 1)
        if self.opts.ties == 'model' and ties:
            tie = torch.cat([torch.zeros(len(pairs), dtype=torch.bool), torch.ones(len(ties), dtype=torch.bool)]).to(r.device)
            loss = bradley_terry_ties(torch.cat([rw, pick(ties, 0)]), torch.cat([rl, pick(ties, 1)]), tie)
        else:
            loss = bradley_terry(rw, rl)
        return loss, trl_metrics(loss, rw, rl)

    def unpaired_loss(self, ids, labels):
        r, features = self.forward(ids)
        good = torch.tensor([labels[x] == 1 for x in ids], device=r.device)
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

        train: dict(pairs=[(w, l)], ties=[(a, b)]) or dict(labels={id: 1 | 0}); val_pairs: [(winner, loser)].
        Returns the history of validation accuracies.
        """
        val_ids = sorted({x for p in val_pairs for x in p})
        best, best_state, stale, history = -1.0, None, 0, []
        for epoch in range(self.opts.epochs):
            self.model.train()
            sums, count = {}, 0
            for items in tqdm(self.train_batches(train), desc=f'epoch {epoch}', unit='step', leave=False, disable=not progress):
                if 'labels' in train:
                    loss, m = self.unpaired_loss(items, train['labels'])
                else:
                    loss, m = self.pair_loss([p for k, p in items if k == 'pair'], [p for k, p in items if k == 'tie'])
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


def centre_scores(model, mean_score):
    """Shift the model's output by -mean_score (the bias of its last layer, head[-1]). Bradley-Terry fits only
    score differences, so the level is arbitrary; centred on the training samples, rewards fall inside the
    fine-tuning clip of [-10, 10] instead of above it, where the clipped loss has no gradient."""
    with torch.no_grad():
        model.head[-1].bias.sub_(float(mean_score))


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
