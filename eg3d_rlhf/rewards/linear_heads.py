"""Linear heads on fixed features: Bradley-Terry by L-BFGS, an ensemble from bootstrap resamples, L2 chosen on validation."""

import dataclasses
import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from eg3d_rlhf.rewards import losses
from torch_utils import misc

#----------------------------------------------------------------------------
# A reward whose trunk learns nothing (model.frozen_trunk) is a fixed map from a slab to features; judgements then
# only have to place a hyperplane in that space. Its features are computed once per sample (and once mirrored), every
# member's weights solve a convex problem exactly, and the penalty that generalises best is picked on the validation
# judgements, so there is no learning rate, epoch count or early stopping to tune.

@dataclasses.dataclass
class FeatureTable:
    index:      dict            # {sample id: row}.
    plain:      torch.Tensor    # float64 [N, F]: model.trunk_features of each prepared input.
    mirrored:   torch.Tensor    # float64 [N, F]: the same, flipped left-right (world x); None without mirroring.


@torch.no_grad()
def feature_table(model, inputs, ids, mirror=True, batch=16, device='cpu', progress=True, ranks=None):
    """FeatureTable of `ids` (fitting.PreparedInputs) under the model's fixed trunk. ranks (shards.Ranks, or None for
    one process): under torchrun each rank computes every size-th batch of `batch` ids and every rank gets the whole
    table, the same bits as one process (each batch holds the same ids)."""
    ids = list(ids)
    model = model.to(device).eval()
    chunks = [ids[s:s + batch] for s in range(0, len(ids), batch)]
    mine = range(len(chunks)) if ranks is None else range(ranks.rank, len(chunks), ranks.size)
    done = {}
    for c in tqdm(mine, desc='features', unit='batch', leave=False, disable=not progress):
        x = inputs.batch(chunks[c], device)
        done[c] = (model.trunk_features(x).double().cpu(),
            model.trunk_features(x.flip(inputs.x_axis)).double().cpu() if mirror else None)
    if ranks is not None and ranks.size > 1:
        done = {c: part for shard in ranks.all_gather(done) for c, part in shard.items()}
    parts = [done[c] for c in range(len(chunks))]
    return FeatureTable({x: i for i, x in enumerate(ids)}, torch.cat([p for p, _ in parts]),
        torch.cat([m for _, m in parts]) if mirror else None)


def set_feature_scale(model, table, train_ids):
    """Store the mean and standard deviation of the training samples' features (plain and mirrored) in the model
    (model.set_feature_scale); returns the table's plain (and mirrored) features standardised with them."""
    rows = [table.index[x] for x in train_ids]
    seen = torch.cat([table.plain[rows]] + ([table.mirrored[rows]] if table.mirrored is not None else []))
    mean, std = seen.mean(dim=0), seen.std(dim=0).clamp(min=1e-6)
    model.set_feature_scale(mean, std)
    return [(t - mean) / std for t in (table.plain, table.mirrored) if t is not None]


def margins_of(table, scaled, pairs):
    """Feature differences [P (x2 mirrored), F] of (winner, loser) or (a, b) pairs in the scaled tables."""
    if not pairs:
        return torch.zeros([0, table.plain.shape[1]], dtype=torch.float64)
    rows = torch.tensor([[table.index[a], table.index[b]] for a, b in pairs])
    d = [t[rows[:, 0]] - t[rows[:, 1]] for t in scaled]
    return torch.cat(d)


def pair_nll(m, tie, theta=2.0):
    """Per-pair negative log-likelihood [P, K] of margins m = r_winner - r_loser (or r_a - r_b of a tie): Bradley-
    Terry, or Rao-Kupper with `theta` where `tie` [P] is set (losses.rao_kupper_nll)."""
    return losses.rao_kupper_nll(m, tie[:, None], theta) if bool(tie.any()) else F.softplus(-m)


def solve(d, tie, weights, l2, start=None, iters=100, theta=2.0):
    """Member weights [K, F] minimising sum_p w_kp nll_p / sum_p w_kp + l2 / 2 |W_k|^2, each member its own problem
    (weights [K, P]: bootstrap counts), from `start` [K, F] (zeros when None)."""
    W = torch.zeros([weights.shape[0], d.shape[1]], dtype=d.dtype) if start is None else start.clone()
    W.requires_grad_(True)
    opt = torch.optim.LBFGS([W], lr=1, max_iter=iters, line_search_fn='strong_wolfe', tolerance_grad=1e-6,
        tolerance_change=1e-9, history_size=20)

    def closure():
        opt.zero_grad()
        nll = pair_nll(d @ W.T, tie, theta)                            # [P, K]
        loss = ((weights.T * nll).sum(dim=0) / weights.sum(dim=1).clamp(min=1)).sum() + 0.5 * l2 * W.square().sum()
        loss.backward()
        return loss
    opt.step(closure)
    return W.detach()


def fit_linear_heads(model, table, train_ids, pairs, ties, val_pairs, l2_grid, seed=0, theta=2.0, log=None):
    """Fit the model's linear heads (model.heads, each Linear(F, 1)) to (winner, loser) pairs and (a, b) ties (ties
    empty = dropped), after storing the feature scale of the training samples (model.set_feature_scale); member k > 0
    trains on a Poisson(1) bootstrap of the pairs. Every penalty of l2_grid is solved and the one whose mean-member
    reward gives the lowest validation NLL is kept. Returns {l2, chosen: {val_nll, val_accuracy}, grid: [...],
    out_of_bag: {accuracy, nll, pairs} of the chosen penalty (out_of_bag)}."""
    scaled = set_feature_scale(model, table, train_ids)
    d = torch.cat([margins_of(table, scaled, pairs), margins_of(table, scaled, ties)]).float()
    copies = len(scaled)
    tie = torch.cat([torch.zeros(len(pairs) * copies, dtype=torch.bool), torch.ones(len(ties) * copies, dtype=torch.bool)])
    n = len(pairs) + len(ties)
    gen = torch.Generator().manual_seed(int(seed))
    weights = torch.ones([model.members, n])
    if model.members > 1:
        weights[1:] = torch.poisson(torch.ones([model.members - 1, n]), generator=gen)
    counts = weights[:, :len(pairs)]                                # Each member's draws of each pair.
    weights = torch.cat([weights[:, :len(pairs)]] * copies + [weights[:, len(pairs):]] * copies, dim=1)  # As d.
    d_val = margins_of(table, scaled[:1], val_pairs).float()
    grid, W = [], None
    for l2 in sorted(l2_grid, reverse=True):                      # Strong to weak, each from the last solution.
        W = solve(d, tie, weights, float(l2), start=W, theta=theta)
        m = (d_val @ W.T).mean(dim=1)
        grid.append(dict(l2=float(l2), val_nll=float(F.softplus(-m).mean()) if len(m) else float('nan'),
            val_accuracy=float((m > 0).double().mean()) if len(m) else float('nan'), W=W))
        if log is not None: log(dict(l2=float(l2), eval_loss=grid[-1]['val_nll'], **{'eval_rewards/accuracies': grid[-1]['val_accuracy']}))
    grid.reverse()
    best = min(grid, key=lambda g: (g['val_nll'] if math.isfinite(g['val_nll']) else 0, -g['l2']))
    with torch.no_grad():
        for head, w in zip(model.heads, best['W']):
            misc.assert_shape(head.weight, [1, w.shape[0]])
            head.weight.copy_(w[None].float())
            head.bias.zero_()
    strip = lambda g: {k: v for k, v in g.items() if k != 'W'}
    oob = out_of_bag(best['W'], margins_of(table, scaled[:1], pairs).float(), counts)
    return dict(l2=best['l2'], chosen=strip(best), grid=[strip(g) for g in grid], out_of_bag=oob)


def out_of_bag(W, d, counts):
    """{accuracy, nll, pairs} of the training pairs (margins d [P, F], unmirrored) scored by the members that did not
    draw them (counts [K, P] of the bootstrap; member 0 draws every pair), the mean margin of those members for each
    pair that has any: a held-out measure of the training pairs at no extra fit."""
    out = (counts == 0).T.to(d.dtype)                               # [P, K]
    n = out.sum(dim=1)
    has = n > 0
    if not bool(has.any()):
        return dict(accuracy=float('nan'), nll=float('nan'), pairs=0)
    m = ((d @ W.T) * out).sum(dim=1)[has] / n[has]
    return dict(accuracy=float((m > 0).double().mean()), nll=float(F.softplus(-m).mean()), pairs=int(has.sum()))

#----------------------------------------------------------------------------
