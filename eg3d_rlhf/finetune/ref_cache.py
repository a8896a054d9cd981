"""Flow-DPO's precomputed reference: the frozen reference's -MSE_t of every pair a stage's training draws, run once."""

import contextlib
import dataclasses
import hashlib

import numpy as np
import torch

from eg3d_rlhf.generators.flow import mse_t

#----------------------------------------------------------------------------
# TRL's precompute_ref_log_probs, for flows. The reference's quantity of a pair side is -MSE_t at the pair's (x0, t),
# and every step draws those from step_generator(seed, stage, step) (flow_dpo.step_draw), so they are known before
# training: flow_dpo.reference_cache runs the reference over every step's draws (and the held-out pairs' of early
# stopping) without gradients and keeps only the numbers, two floats a pair; train_stage then reads them and never
# runs the reference model, which the caller may drop from memory. A cache is keyed by what the draws depend on (the
# stage, seed, batch, t_max, which sides the loss reads, the early-stopping split, the precision and the pairs
# themselves); train_stage refuses one drawn for other settings.

@dataclasses.dataclass
class ReferenceCache:
    """The reference's -MSE_t of every pair one stage's training draws, as reference_cache made it."""
    key:        dict                # What the draws depend on (cache_key): train_stage refuses a cache of another.
    chosen:     object              # [steps, batch]: -MSE_t of the reference on each step's preferred sides, or None
                                    # (a loss reading no reference: SFT).
    rejected:   object              # [steps, batch] of the other sides, or None (a loss reading the preferred side only).
    held:       object = None       # (chosen [H], rejected [H]) of the held-out pairs in order, or None (no early stopping).

    def step(self, step):
        """(chosen [batch], rejected [batch] or None) of training step `step`, or None for a loss reading no reference."""
        if self.chosen is None:
            return None
        return self.chosen[step], None if self.rejected is None else self.rejected[step]

    def check(self, key, steps):
        """ValueError in one line when this cache was drawn for other settings than `key` or for fewer steps."""
        wrong = [f'{name}={self.key.get(name)!r} (train_stage: {value!r})' for name, value in key.items()
            if self.key.get(name) != value]
        if wrong or (self.chosen is not None and len(self.chosen) < steps):
            what = ', '.join(wrong) if wrong else f'{len(self.chosen)} steps (train_stage: {steps})'
            raise ValueError(f'the precomputed reference was drawn for {what}; precompute it with train_stage\'s arguments')


def fingerprint(data):
    """A short hash of PairData's pairs, and of the shape and sum of its assets and drawn data: a cache of other pairs
    is refused (a cheap check, not a proof)."""
    h = hashlib.sha256()
    for pairs in (data.chosen, data.rejected):
        h.update(pairs.cpu().numpy().astype(np.int64).tobytes())
    tensors = [('assets', data.assets)] + [(f'drawn {k}', x) for k, parts in sorted((data.drawn or {}).items())
        for x in parts if torch.is_tensor(x)]
    h.update(repr([(name, list(x.shape), float(x.double().sum())) for name, x in tensors]).encode())
    return h.hexdigest()[:16]

#----------------------------------------------------------------------------

@contextlib.contextmanager
def eval_mode(module):
    """A velocity model in eval mode inside the block (as the frozen reference is), its own mode restored after."""
    training = isinstance(module, torch.nn.Module) and module.training
    if training:
        module.eval()
    try:
        yield module
    finally:
        if training:
            module.train()


def join(draws):
    """One draw of several (their pairs in order); None when their contexts cannot be joined (not all tensors or None)."""
    if len(draws) == 1:
        return draws[0]
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)
    contexts = [s.context for d in draws for s in (d.chosen, d.rejected) if s is not None]
    if not (all(c is None for c in contexts) or all(torch.is_tensor(c) for c in contexts)):
        return None
    side = lambda sides: None if sides[0] is None else dataclasses.replace(sides[0], x0=cat([s.x0 for s in sides]),
        x1=cat([s.x1 for s in sides]), context=cat([s.context for s in sides]))
    return dataclasses.replace(draws[0], cond=cat([d.cond for d in draws]), t=cat([d.t for d in draws]),
        chosen=side([d.chosen for d in draws]), rejected=side([d.rejected for d in draws]), pick=None)


@torch.no_grad()
def reference_values(velocity, draws, pairs):
    """(chosen [N], rejected [N] or None): -MSE_t of a velocity model on the sides of an iterable of flow_dpo.Draw, in
    order, without gradients; whole draws are joined into passes of at least `pairs` pairs (one draw a pass when
    `pairs` is their size: then each value is bit for bit what the same pass in training gives)."""
    chosen, rejected, waiting = [], [], []
    def run(group):
        joined = join(group)
        for d in [joined] if joined is not None else group:
            chosen.append(-mse_t(velocity, d.chosen.x0, d.chosen.x1, d.t, d.cond, d.chosen.context))
            if d.rejected is not None:
                rejected.append(-mse_t(velocity, d.rejected.x0, d.rejected.x1, d.t, d.cond, d.rejected.context))
    for draw in draws:
        waiting.append(draw)
        if sum(len(d.t) for d in waiting) >= pairs:
            run(waiting)
            waiting = []
    if waiting:
        run(waiting)
    if not chosen:
        return torch.zeros(0), None
    return torch.cat(chosen), torch.cat(rejected) if rejected else None

#----------------------------------------------------------------------------
