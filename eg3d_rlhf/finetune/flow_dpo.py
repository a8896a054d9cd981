"""Flow-DPO on one stage of a flow pipeline, and Circular-DPO's pair weights: w1 (quality gap) and w2 (reliability)."""

import dataclasses

import numpy as np
import torch

from eg3d_rlhf.finetune import lora, losses, ref_cache
from eg3d_rlhf.finetune.ref_cache import ReferenceCache
from eg3d_rlhf.generators.flow import check_sigma, mse_t
from torch_utils import misc

#----------------------------------------------------------------------------
# Flow-DPO (Circular-DPO, eq. 6 and 7). For a pair x^w > x^l of one condition, one t and one x0 per side, shared by
# the policy and the frozen reference:
#   L = -log sigmoid(beta * T * w2 * [(MSE_t(w; ref) - MSE_t(w; theta)) - (MSE_t(l; ref) - MSE_t(l; theta))]).
# Our mse_t is a mean over the stage's elements (the paper's is a squared norm, a sum), so beta * T here is a scale
# per element. The implicit reward of a side is beta * T * (MSE_t(ref) - MSE_t(theta)): how much better the policy
# fits it than the reference does; the stats use TRL's DPO names for it.
# w2 sits inside the sigmoid as above (w2_placement='inside', eq. 7, the default) or scales the pair's loss instead
# (w2_placement='outside': L = -w2 log sigmoid(beta T [...]), the paper's Algorithm 1, line 22). sft_weight W > 0 adds
# W * MSE_t(w; theta), the SFT loss of the preferred side, to every pair of a DPO-family loss (TRL's rpo_alpha; its
# stat is TRL's nll_loss); w2 does not weight it.

W2_PLACEMENTS = ('inside', 'outside')

@dataclasses.dataclass
class Side:
    """One side of a pair at one stage: what MSE_t needs (generators.flow.StageRun has the same fields)."""
    x0:         torch.Tensor        # Noise [N, *data_shape].
    x1:         torch.Tensor        # Data [N, *data_shape].
    context:    object              # The previous stage's decode (None at the first stage).


def side_quantities(policy, reference, side, t, cond=None):
    """(policy, reference) log-likelihood proxies [N] of one side: -MSE_t of each velocity model (reference without
    gradients; None when reference is None)."""
    ref = None
    if reference is not None:
        with torch.no_grad():
            ref = -mse_t(reference, side.x0, side.x1, t, cond, side.context)
    return -mse_t(policy, side.x0, side.x1, t, cond, side.context), ref


def flow_dpo_loss(policy, reference, chosen, rejected, t, cond=None, beta=1.0, T=1.0, weight=None, loss_type='sigmoid',
    label_smoothing=0.0, w2_placement='inside', sft_weight=0.0, ref=None):
    """(loss [N] per pair, stats) of a preference loss (finetune/losses.py; Flow-DPO is 'sigmoid') on one stage: policy
    and reference are its velocity models, chosen and rejected Sides (or StageRuns) of N pairs, t [N] or a number,
    weight [N] (w2; None = 1) inside the sigmoid or outside it (w2_placement), plus sft_weight times the preferred
    side's SFT loss. ref = (chosen [N], rejected [N] or None) gives the reference's -MSE_t precomputed (ref_cache.py):
    the reference model is then not run (it may be None). stats holds TRL's names per pair (rewards/chosen,
    rewards/rejected, rewards/margins, rewards/accuracies for the DPO family). Gradients reach the policy only; what
    a loss does not read is not run."""
    loss_fn = losses.get(loss_type)
    if w2_placement not in W2_PLACEMENTS:
        raise ValueError(f'w2 placement must be one of {", ".join(W2_PLACEMENTS)}, got {w2_placement!r}')
    if sft_weight and not loss_fn.needs_rejected:
        raise ValueError(f'SFT mixing adds to a loss of pairs; the {loss_type} loss reads the preferred side only')
    ref_model = reference if loss_fn.needs_reference and ref is None else None
    pol_chosen, ref_chosen = side_quantities(policy, ref_model, chosen, t, cond)
    pol_rejected = ref_rejected = None
    if loss_fn.needs_rejected:
        pol_rejected, ref_rejected = side_quantities(policy, ref_model, rejected, t, cond)
    if ref is not None and loss_fn.needs_reference:
        ref_chosen, ref_rejected = ref[0], ref[1] if loss_fn.needs_rejected else None
    weight = None if weight is None else torch.as_tensor(weight, device=pol_chosen.device)
    inside = weight if w2_placement == 'inside' else None
    batch = losses.PairBatch(pol_chosen, pol_rejected, ref_chosen, ref_rejected, weight=inside)
    loss, stats = loss_fn(batch, losses.LossOptions(beta=beta * T, label_smoothing=label_smoothing))
    if w2_placement == 'outside' and weight is not None:
        loss = weight.to(loss.dtype) * loss
    if sft_weight:
        nll, _ = losses.get('sft')(batch)
        loss = loss + sft_weight * nll
        stats = dict(stats, nll_loss=nll.detach())
    return loss, stats


def bank_pairs(bank, judgements):
    """(chosen ids, rejected ids, dropped) of judgements over a flow bank's samples usable as DPO pairs: a decided
    choice ('a' or 'b', not a tie or skip) between two samples of one condition; dropped counts the rest by reason."""
    chosen, rejected, dropped = [], [], dict(undecided=0, across_conditions=0)
    for j in judgements:
        if j.choice not in ('a', 'b'):
            dropped['undecided'] += 1
        elif bank.meta(j.a).get('condition') != bank.meta(j.b).get('condition'):
            dropped['across_conditions'] += 1
        else:
            chosen.append(j.a if j.choice == 'a' else j.b)
            rejected.append(j.b if j.choice == 'a' else j.a)
    return chosen, rejected, dropped


@dataclasses.dataclass
class PairData:
    """Preference pairs over finished assets of one flow pipeline: what Flow-DPO trains any of its stages on."""
    assets:     torch.Tensor        # Raw sigma [M, R, R, R] of the assets, on the CPU.
    conditions: object              # int64 [M] of their conditions, or None (unconditional).
    chosen:     torch.Tensor        # int64 [P]: index of each pair's preferred asset.
    rejected:   torch.Tensor        # int64 [P]: index of the other one.
    weight:     torch.Tensor        # float32 [P]: w2 of each pair (ones when unweighted).
    ids:        list                # Name of each asset (bank ids, or cCC-seedNNNNNN-<side>).
    wins:       object = None       # float64 [M]: each asset's win count C among its judged rivals (a tie half), or None.
    pool:       object = None       # int64 [M]: N, its rivals + 1 (k of a k-way ranking), or None (with wins).
    drawn:      object = None       # {stage index: (x1 [M, ...], context [M, ...] or None)}: what that stage drew for
                                    # each asset, trained on instead of the asset's encoding (step 2's candidates).

    def __post_init__(self):
        check_sigma(self.assets, source='PairData assets')
        m, p = len(self.assets), len(self.chosen)
        if (self.wins is None) != (self.pool is None) or (self.wins is not None and not (
                list(self.wins.shape) == list(self.pool.shape) == [m] and torch.isfinite(self.wins).all()
                and (self.wins >= 0).all() and (self.wins <= self.pool - 1).all())):
            raise ValueError(f'PairData: win counts must be given with their pools, [{m}] each, 0 <= C <= N - 1')
        misc.assert_shape(self.rejected, [p])
        misc.assert_shape(self.weight, [p])
        if len(self.ids) != m or (self.conditions is not None and list(self.conditions.shape) != [m]):
            raise ValueError(f'PairData: {m} assets, but {len(self.ids)} ids and conditions of shape '
                f'{None if self.conditions is None else list(self.conditions.shape)}')
        if p and not (0 <= int(min(self.chosen.min(), self.rejected.min())) and max(self.chosen.max(), self.rejected.max()) < m):
            raise ValueError(f'PairData: pair indices must lie in 0..{m - 1}')
        for index, (x1, context) in (self.drawn or {}).items():
            if len(x1) != m or (context is not None and len(context) != m):
                raise ValueError(f'PairData: stage {index}\'s drawn data must cover the {m} assets')
        if not torch.isfinite(self.weight).all() or (self.weight < 0).any():
            raise ValueError('PairData: pair weights must be finite and non-negative')
        if self.conditions is not None and (self.conditions[self.chosen] != self.conditions[self.rejected]).any():
            raise ValueError('PairData: the two sides of a pair must share their condition')

    def __len__(self):
        return len(self.chosen)

    def select(self, keep):
        """The pairs where keep [P] (bool) holds, over the same assets."""
        keep = torch.as_tensor(keep, dtype=torch.bool)
        return dataclasses.replace(self, chosen=self.chosen[keep], rejected=self.rejected[keep], weight=self.weight[keep])

    def mirrored(self):
        """These pairs and each pair's mirror image: every asset also flipped in x (the left-right axis of EG3D's box,
        the assets' first axis), the same choice, weight, condition and win counts; ids get '-mirror'. For a taste
        that does not tell a head from its mirror image (every simulated one), a second, equally true pair. Drawn
        stage data (step 2's) is flipped on its third axis from the end: x of a stage whose data and context end in the
        volume's (x, y, z), as every bundled stage's do."""
        m, twice = len(self.assets), lambda x: None if x is None else torch.cat([x, x])
        flip = lambda x: None if x is None else torch.cat([x, x.flip(x.dim() - 3)])
        drawn = None if self.drawn is None else {i: (flip(x1), flip(c)) for i, (x1, c) in self.drawn.items()}
        return dataclasses.replace(self, assets=torch.cat([self.assets, self.assets.flip(1)]), drawn=drawn,
            conditions=twice(self.conditions), chosen=torch.cat([self.chosen, self.chosen + m]),
            rejected=torch.cat([self.rejected, self.rejected + m]), weight=twice(self.weight),
            ids=self.ids + [f'{i}-mirror' for i in self.ids], wins=twice(self.wins), pool=twice(self.pool))

    @classmethod
    def from_bank(cls, bank, judgements):
        """(PairData, dropped) of judgements over a flow bank's samples (bank_pairs), each kept asset read once."""
        chosen, rejected, dropped = bank_pairs(bank, judgements)
        if not chosen:
            raise ValueError(f'{bank.root}: the labels hold no decided pair of two samples of one condition '
                f'(dropped: {dropped})')
        ids = sorted(set(chosen) | set(rejected))
        index = {k: i for i, k in enumerate(ids)}
        metas = [bank.meta(k) for k in ids]
        conditions = [m.get('condition') for m in metas]
        assets = torch.stack([torch.from_numpy(np.asarray(bank.array(k, 'asset'), dtype=np.float32)) for k in ids])
        if not torch.isfinite(assets).all():
            raise ValueError(f'{bank.root}: an asset.npz holds nan or inf; redraw those samples')
        data = cls(assets=assets, conditions=None if conditions[0] is None else torch.tensor(conditions),
            chosen=torch.tensor([index[k] for k in chosen]), rejected=torch.tensor([index[k] for k in rejected]),
            weight=torch.ones(len(chosen)), ids=ids)
        return data, dropped


def encode_stage(pipeline, sigma, index):
    """(x1, context) of stage `index` for finished assets (raw sigma [N, R, R, R]): the earlier stages' encodings
    decoded in turn give the context, as runs_from_asset does, without noise."""
    context = None
    for i, stage in enumerate(pipeline.stages[:index + 1]):
        x1 = stage.encode(sigma, context)
        if i == index:
            return x1, context
        context = stage.decode(x1, context)
    raise IndexError(f'stage {index} of a {len(pipeline.stages)}-stage pipeline')

#----------------------------------------------------------------------------
# Training one stage. Every step picks `batch` pairs, encodes both sides to the stage's data, and draws one t (uniform
# in [0, t_max], t = 0 being noise) and one x0 per pair from a generator seeded by (seed, stage, step), shared by both
# sides and by policy and reference (so what they do not share cancels in the margins): step_draw, the same at every
# call. The loss comes from finetune/losses.py: 'sigmoid' is Flow-DPO, 'sft' the plain supervised baseline (flow
# matching on the preferred side only; the loser is never encoded). Only the trained stage's velocity model changes;
# the others are frozen. With lora_rank R > 0 only LoRA adapters of rank R on its Linear and Conv layers train
# (finetune/lora.py), merged into its weights at the end (merge_lora).
#
# Early stopping (early_stop_split F > 0): a share F of the pairs (split_pairs, the same for every stage of one data
# set and seed) is held out; every `early_stop_every` steps the held-out pairs' implicit-reward accuracy (Flow-DPO's
# rewards/accuracies, unweighted, one fixed t and x0 per pair) is measured and logged as eval/rewards/accuracies with
# that step's record, and the stage stops once it has not improved for `early_stop_patience` evaluations (the weights
# of the last step are kept).
#
# For stages too big for two copies (issue 35): precompute_ref runs the reference once over every step's draws and
# the held-out pairs' before the first step (reference_cache, ref_cache.py) and trains from those numbers, and
# train_stage also takes such a cache in place of the reference pipeline, so a caller can drop the reference. bf16
# runs every velocity pass (policy and reference) under bf16 autocast: the weights and the optimizer stay float32,
# the velocities come back as float32 and MSE_t and the loss are float32 (in_precision).

HELD_OUT_KEY = 2 ** 32 - 1                  # Seed key of the split and the held-out draws (no step reaches it).


def step_generator(*keys):
    """A CPU torch.Generator seeded by a tuple of non-negative integers."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0]))


def split_pairs(data, fraction, seed=0):
    """(train, held) PairData: a seeded share `fraction` of the pairs held out (at least one, and at least one left
    to train on; None held when there are fewer than two pairs)."""
    p = len(data)
    if p < 2:
        return data, None
    n = min(max(int(round(fraction * p)), 1), p - 1)
    held = torch.zeros(p, dtype=torch.bool)
    held[torch.randperm(p, generator=step_generator(seed, HELD_OUT_KEY))[:n]] = True
    return data.select(~held), data.select(held)


class EarlyStop:
    """Counts evaluations since the best score; update() says stop once `patience` have passed without a better one."""

    def __init__(self, patience):
        self.patience, self.best, self.since = int(patience), -float('inf'), 0

    def update(self, score):
        """Record one evaluation; True when training should stop."""
        if score > self.best:
            self.best, self.since = score, 0
        else:
            self.since += 1
        return self.since >= self.patience


def stage_data(policy, data, which, index, device):
    """(x1, context) of stage `index` for the assets `which` (indices): what the stage drew for them where the data
    keeps it (data.drawn), else their encoding (encode_stage)."""
    if data.drawn is not None and index in data.drawn:
        x1, context = data.drawn[index]
        return x1[which].to(device), None if context is None else context[which].to(device)
    return encode_stage(policy, data.assets[which].to(device), index)


@dataclasses.dataclass
class Draw:
    """N pairs at one stage as a training step (or a chunk of the held-out pairs) draws them."""
    cond:       object              # int64 [N]: the pairs' condition, or None (unconditional).
    chosen:     Side                # The preferred sides.
    rejected:   object              # Side of the others (the same x0), or None where the loss reads the preferred only.
    t:          torch.Tensor        # [N]: one flow time per pair.
    pick:       object = None       # int64 [N]: the pairs' indices in the PairData (None for held-out chunks).


def priors(stage, context, n, generator, device):
    """x0 [n, *data_shape] of a stage, one prior draw after another from `generator`."""
    shape = tuple(stage.data_shape(context))
    return torch.stack([stage.prior(shape, generator) for _ in range(n)]).to(device, torch.float32)


def step_draw(policy, data, index, seed, step, batch, t_max=1.0, rejected=True, rows=None):
    """The Draw of training step `step` at stage `index`: `batch` pairs of the PairData, one x0 (both sides) and one t
    in [0, t_max] each, from step_generator(seed, index, step); the losers are encoded only with `rejected`. rows
    (int64 [n], positions in the batch) keeps those pairs only, each with the x0 and t it has in the whole batch (a
    torchrun rank's share); the others are drawn from the generator and dropped, never encoded."""
    stage, device, gen = policy.stages[index], policy.device, step_generator(seed, index, step)
    pick = torch.randint(len(data), [batch], generator=gen)
    keep = (lambda x: x) if rows is None else (lambda x: x[rows.to(x.device)])
    pick = keep(pick)
    cond = None if data.conditions is None else data.conditions[data.chosen[pick]].to(device)
    x1_win, ctx_win = stage_data(policy, data, data.chosen[pick], index, device)
    x0 = keep(priors(stage, ctx_win, batch, gen, device))
    t = keep(t_max * torch.rand([batch], generator=gen).to(device))
    lose = Side(x0, *stage_data(policy, data, data.rejected[pick], index, device)) if rejected else None
    return Draw(cond, Side(x0, x1_win, ctx_win), lose, t, pick)


def held_out_draws(policy, index, held, batch, seed, t_max=1.0):
    """Draws of the held-out pairs, `batch` at a time in order, one x0 and t each from step_generator(seed, index,
    HELD_OUT_KEY): the same at every call."""
    stage, device, gen = policy.stages[index], policy.device, step_generator(seed, index, HELD_OUT_KEY)
    for s in range(0, len(held), batch):
        which = torch.arange(s, min(s + batch, len(held)))
        win, lose = held.chosen[which], held.rejected[which]
        cond = None if held.conditions is None else held.conditions[win].to(device)
        x1_win, ctx_win = stage_data(policy, held, win, index, device)
        x0 = priors(stage, ctx_win, len(which), gen, device)
        t = t_max * torch.rand([len(which)], generator=gen).to(device)
        yield Draw(cond, Side(x0, x1_win, ctx_win), Side(x0, *stage_data(policy, held, lose, index, device)), t)

#----------------------------------------------------------------------------

def bf16_problem(device):
    """None where bf16 autocast runs on `device` (the CPU; a CUDA device with native bf16, compute capability 8.0+),
    else one line saying why not."""
    device = torch.device(device)
    if device.type == 'cuda':
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        ok = device.type == 'cpu' and torch.amp.is_autocast_available('cpu')
    return None if ok else (f'--bf16: {device} cannot run bf16 autocast (it needs the CPU or a CUDA device with native '
        'bf16, compute capability 8.0+); leave --bf16 off')


def in_precision(velocity, bf16):
    """The velocity model (None stays None) with its passes under bf16 autocast on its input's device and its output
    as float32, with bf16; itself without."""
    if not bf16 or velocity is None:
        return velocity
    def run(x, t, cond, context):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            v = velocity(x, t, cond, context)
        return v.float()
    return run


def cache_key(index, data, batch, seed=0, loss_type='sigmoid', early_stop_split=0.0, t_max=1.0, bf16=False, rows=None):
    """What the reference's numbers of train_stage's draws depend on (ReferenceCache.key)."""
    loss_fn = losses.get(loss_type)
    key = dict(stage=int(index), batch=int(batch), seed=int(seed), reference=loss_fn.needs_reference,
        rejected=loss_fn.needs_rejected, early_stop_split=float(early_stop_split), t_max=float(t_max), bf16=bool(bf16),
        pairs=ref_cache.fingerprint(data))
    if rows is not None:                                # A torchrun rank's share of each step's pairs.
        key['rows'] = [int(r) for r in rows]
    return key


def reference_cache(policy, reference, index, data, steps, batch, seed=0, loss_type='sigmoid', early_stop_split=0.0,
    t_max=1.0, bf16=False, ref_batch=None, rows=None):
    """ReferenceCache of the reference pipeline's -MSE_t on every pair train_stage draws with the same arguments (its
    steps, and with early_stop_split its held-out pairs), without gradients, in eval mode, `ref_batch` pairs a pass
    (whole steps joined; default `batch`: every value is then the one the live reference gives in training, bit for
    bit). Train with train_stage(policy, cache, ...): the reference pipeline is not needed any more. A policy that
    starts as the reference may be its own: reference_cache(policy, policy, ...) needs no copy at all. rows (a
    torchrun rank's positions in each step's batch, step_draw) keeps the values of those pairs only, [steps, n]."""
    if not len(data):
        raise ValueError('no pairs to train on')
    if ref_batch is not None and (isinstance(ref_batch, bool) or not isinstance(ref_batch, int) or ref_batch < 1):
        raise ValueError(f'ref_batch must be a positive whole number of pairs or None, got {ref_batch!r}')
    loss_fn = losses.get(loss_type)
    train, held = split_pairs(data, early_stop_split, seed) if early_stop_split else (data, None)
    module = reference.stages[index].velocity
    mine = batch if rows is None else len(rows)
    velocity, pairs = in_precision(module, bf16), ref_batch or mine
    chosen = rejected = held_values = None
    with ref_cache.eval_mode(module):
        if loss_fn.needs_reference:                     # SFT's steps read no reference; its early stopping does.
            chosen, rejected = ref_cache.reference_values(velocity, (step_draw(policy, train, index, seed, step, batch,
                t_max, loss_fn.needs_rejected, rows) for step in range(steps)), pairs)
            chosen, rejected = chosen.view(steps, mine), None if rejected is None else rejected.view(steps, mine)
        if held is not None:
            held_values = ref_cache.reference_values(velocity, held_out_draws(policy, index, held, batch, seed, t_max),
                pairs)
    return ReferenceCache(cache_key(index, data, batch, seed, loss_type, early_stop_split, t_max, bf16, rows), chosen,
        rejected, held_values)

#----------------------------------------------------------------------------

@torch.no_grad()
def held_out_accuracy(policy, reference, index, held, batch, beta, seed, t_max=1.0, ref=None, bf16=False):
    """Mean implicit-reward accuracy and Flow-DPO loss (sigmoid, unweighted) of the held-out pairs at stage `index`,
    with one t and x0 per pair drawn the same way at every call; ref = (chosen [H], rejected [H]) gives the
    reference's numbers precomputed (ReferenceCache.held; reference may then be None)."""
    velocity = policy.stages[index].velocity
    mode = velocity.training
    velocity.eval()
    run_policy = in_precision(velocity, bf16)
    run_reference = None if ref is not None else in_precision(reference.stages[index].velocity, bf16)
    acc, loss, done = [], [], 0
    for draw in held_out_draws(policy, index, held, batch, seed, t_max):
        n = len(draw.t)
        l, stats = flow_dpo_loss(run_policy, run_reference, draw.chosen, draw.rejected, draw.t, draw.cond, beta=beta,
            ref=None if ref is None else (ref[0][done : done + n], ref[1][done : done + n]))
        acc.append(stats['rewards/accuracies'])
        loss.append(l)
        done += n
    velocity.train(mode)
    return torch.cat(acc).float().mean().item(), torch.cat(loss).float().mean().item()


def train_stage(policy, reference, index, data, steps, batch, lr, beta, seed=0, loss_type='sigmoid', label_smoothing=0.0,
    log=None, progress=None, w2_placement='inside', sft_weight=0.0, lora_rank=0, merge_lora=True, early_stop_split=0.0,
    early_stop_patience=3, early_stop_every=10, t_max=1.0, precompute_ref=False, bf16=False, ranks=None, snapshot=None,
    start=None, probe=None, probe_every=0):
    """Train stage `index` of the policy pipeline on PairData for `steps` Adam steps of `batch` pairs (weighted by
    data.weight, w2_placement) with the preference loss `loss_type` (plus sft_weight times SFT); reference is the
    frozen pipeline the loss compares with, or a ReferenceCache of it (reference_cache with the same arguments; the
    reference model is then not needed). lora_rank > 0 trains LoRA adapters only (merged at the end unless merge_lora
    is False); early_stop_split > 0 holds out pairs and may stop early; t_max < 1 trains at early flow times only;
    precompute_ref runs the reference over every draw before the first step (then never); bf16 runs the velocity
    passes under bf16 autocast. log(record) gets each step's TRL-named means (of the whole batch).

    Under torchrun, ranks (shards.Ranks) share each step: every rank draws the step's batch alike and runs its every
    size-th pair, its loss is the sum over its pairs divided by `batch`, and the gradients are summed over the ranks,
    so each takes the step of the whole batch and the weights stay equal. snapshot(step, state) is called on every
    rank after each step with a function giving the training state (the trained model's and the optimizer's state,
    early stopping's), and start, such a state, resumes training after its step. probe(policy, steps done) is called
    every probe_every steps and after the last (flow_probe.py), before the snapshot of that step; when it returns True
    the phase ends there (--stop-at-peak)."""
    loss_fn = losses.get(loss_type)
    if not len(data):
        raise ValueError('no pairs to train on')
    rows = None
    if ranks is not None and ranks.size > 1:
        if batch < ranks.size:
            raise ValueError(f'{batch} pairs a step cannot be shared by {ranks.size} processes; use at least one each')
        rows = torch.tensor(ranks.share(range(batch)))
    if bf16 and bf16_problem(policy.device):
        raise ValueError(bf16_problem(policy.device))
    cache = reference if isinstance(reference, ReferenceCache) else None
    options = dict(seed=seed, loss_type=loss_type, early_stop_split=early_stop_split, t_max=t_max, bf16=bf16)
    if precompute_ref and cache is None:
        cache = reference_cache(policy, reference, index, data, steps, batch, rows=rows, **options)
    if cache is not None:
        cache.check(cache_key(index, data, batch, rows=rows, **options), steps)
        reference = None                                # Not run again: a pipeline only this call held is freed.
    held, stopper = None, EarlyStop(early_stop_patience)
    if early_stop_split:
        data, held = split_pairs(data, early_stop_split, seed)
    stage = policy.stages[index]
    run_reference = None if reference is None else in_precision(reference.stages[index].velocity, bf16)
    for m in policy.modules():
        m.eval().requires_grad_(False)
    velocity = stage.velocity
    if lora_rank:
        velocity = stage.velocity = lora.wrap(velocity, lora_rank, step_generator(seed, index).initial_seed())
        velocity.train()
        params = [p for p in velocity.parameters() if p.requires_grad]
    else:
        velocity.train().requires_grad_(True)
        params = list(velocity.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    run_policy = in_precision(velocity, bf16)
    first, stop = 0, False
    if start is not None:                               # A snapshot's state: go on after its step.
        velocity.load_state_dict(start['velocity'])
        optimizer.load_state_dict(start['optimizer'])
        (stopper.best, stopper.since), first, stop = start['stopper'], start['step'], start['stopped']
    for step in range(first, steps if not stop else first):
        draw = step_draw(policy, data, index, seed, step, batch, t_max, loss_fn.needs_rejected, rows)
        loss, stats = flow_dpo_loss(run_policy, run_reference, draw.chosen, draw.rejected, draw.t, draw.cond, beta=beta,
            weight=data.weight[draw.pick].to(policy.device), loss_type=loss_type, label_smoothing=label_smoothing,
            w2_placement=w2_placement, sft_weight=sft_weight, ref=None if cache is None else cache.step(step))
        optimizer.zero_grad(set_to_none=True)
        if rows is None:
            loss.mean().backward()
            means = dict(loss=loss.detach().mean().item(), **{k: v.float().mean().item() for k, v in stats.items()})
        else:                                           # This rank's share of the batch's mean; gradients summed.
            (loss.sum() / batch).backward()
            ranks.sum_gradients(params)
            sums = ranks.sum(torch.stack([x.detach().double().sum() for x in (loss, *stats.values())]))
            means = dict(zip(['loss', *stats], (sums / batch).tolist()))
        optimizer.step()
        record, stop = dict(step=step, **means), False
        if held is not None and (step + 1) % early_stop_every == 0:
            accuracy, held_loss = held_out_accuracy(policy, reference, index, held, batch, beta, seed, t_max,
                ref=None if cache is None else cache.held, bf16=bf16)
            if ranks is not None:                       # Every rank stops where rank 0 does.
                accuracy, held_loss = ranks.broadcast((accuracy, held_loss))
            stop = stopper.update(accuracy)
            record.update({'eval/rewards/accuracies': accuracy, 'eval/loss': held_loss, 'eval/pairs': len(held)})
            if stop:
                record['early_stop'] = True
        if log is not None:
            log(record)
        if probe is not None and probe_every and ((step + 1) % probe_every == 0 or step + 1 == steps or stop):
            halt = bool(probe(policy, step + 1))                          # True: a stop rule ends the phase here.
            if ranks is not None:
                (halt,) = ranks.broadcast((halt,))
            stop = stop or bool(halt)
        if progress is not None:
            progress(1)
        if snapshot is not None:
            snapshot(step + 1, lambda: dict(step=step + 1, stopped=stop, stopper=[stopper.best, stopper.since],
                velocity=velocity.state_dict(), optimizer=optimizer.state_dict()))
        if stop:
            break
    velocity.eval().requires_grad_(False)
    if lora_rank and merge_lora:
        stage.velocity = lora.merge(velocity)
    return policy

#----------------------------------------------------------------------------
# Circular-DPO's data selection (section 4.4). For one condition, N candidates are scored by a reward model: the
# first k from the tuned policy, the rest from the reference. Win counts C_i over all pairs (a tie counts half),
# P_i = 2 C_i / (N (N - 1)), G_i = 2^P_i - 1; a pair (tuned i, reference j) has the quality gap w1 = G_i - G_j and
# is kept only when w1 > tau (tau = 0 in the paper). The kept pairs' reliability w2 = exp(h) / mean(exp(h)) with
# h = log sigmoid(r(x^w) - r(x^l)) over the whole data set.

def quality_scores(scores):
    """G [N] = 2^P - 1 of N candidates' reward scores, P_i = 2 C_i / (N (N - 1)) from all-pairs win counts."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    n = len(s)
    if n < 2:
        raise ValueError(f'quality scores need at least 2 candidates, got {n}')
    if not torch.isfinite(s).all():
        raise ValueError('reward scores must be finite')
    wins = (s[:, None] > s[None, :]).double().sum(1) + 0.5 * ((s[:, None] == s[None, :]).double().sum(1) - 1)
    return torch.exp2(2 * wins / (n * (n - 1))) - 1


def quality_gaps(scores, k):
    """w1 [k, N - k]: G of each tuned candidate (the first k) minus G of each reference candidate (the rest)."""
    g = quality_scores(scores)
    if not 0 < k < len(g):
        raise ValueError(f'k must lie in 1..{len(g) - 1}, got {k}')
    return g[:k, None] - g[None, k:]


def pair_quality_gaps(data):
    """w1 [P] of PairData's pairs from its assets' win counts (data.wins, e.g. a k-way ranking's, tools/import_ranked.py
    --ranking): G(chosen) - G(rejected) with G = 2^P - 1, P = 2 C / (N (N - 1)) as in quality_scores."""
    if data.wins is None:
        raise ValueError('these pairs carry no win counts (labels from a ranking or all pairs of a condition give them)')
    n = data.pool.double()
    g = torch.exp2(2 * data.wins.double() / (n * (n - 1)).clamp(min=1)) - 1
    return g[data.chosen] - g[data.rejected]


def reliability_weights(chosen_rewards, rejected_rewards):
    """w2 [M] = exp(h) / mean(exp(h)), h = log sigmoid(r_chosen - r_rejected): mean 1 over the data set."""
    delta = torch.as_tensor(chosen_rewards, dtype=torch.float64) - torch.as_tensor(rejected_rewards, dtype=torch.float64)
    if delta.numel() == 0 or not torch.isfinite(delta).all():
        raise ValueError('reliability weights need finite rewards for at least one pair')
    p = torch.sigmoid(delta)
    return p / p.mean()

#----------------------------------------------------------------------------
