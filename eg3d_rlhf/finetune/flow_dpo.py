"""Flow-DPO on one stage of a flow pipeline, and Circular-DPO's pair weights: w1 (quality gap) and w2 (reliability)."""

import dataclasses

import torch
import torch.nn.functional as F

from eg3d_rlhf.generators.flow import mse_t

#----------------------------------------------------------------------------
# Flow-DPO (Circular-DPO, eq. 6 and 7). For a pair x^w > x^l of one condition, one t and one x0 per side, shared by
# the policy and the frozen reference:
#   L = -log sigmoid(beta * T * w2 * [(MSE_t(w; ref) - MSE_t(w; theta)) - (MSE_t(l; ref) - MSE_t(l; theta))]).
# Our mse_t is a mean over the stage's elements (the paper's is a squared norm, a sum), so beta * T here is a scale
# per element. The implicit reward of a side is beta * T * (MSE_t(ref) - MSE_t(theta)): how much better the policy
# fits it than the reference does; the stats use TRL's DPO names for it.

@dataclasses.dataclass
class Side:
    """One side of a pair at one stage: what MSE_t needs (generators.flow.StageRun has the same fields)."""
    x0:         torch.Tensor        # Noise [N, *data_shape].
    x1:         torch.Tensor        # Data [N, *data_shape].
    context:    object              # The previous stage's decode (None at the first stage).


def flow_dpo_loss(policy, reference, chosen, rejected, t, cond=None, beta=1.0, T=1.0, weight=None):
    """(loss [N] per pair, stats) of Flow-DPO on one stage: policy and reference are its velocity models, chosen and
    rejected Sides (or StageRuns) of N pairs, t [N] or a number, weight [N] (w2; None = 1). stats holds TRL's names
    per pair: rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies. Gradients reach the policy only."""
    def implicit(side):
        with torch.no_grad():
            ref = mse_t(reference, side.x0, side.x1, t, cond, side.context)
        return beta * T * (ref - mse_t(policy, side.x0, side.x1, t, cond, side.context))
    r_chosen, r_rejected = implicit(chosen), implicit(rejected)
    margin = r_chosen - r_rejected
    logits = margin if weight is None else torch.as_tensor(weight, dtype=margin.dtype, device=margin.device) * margin
    loss = -F.logsigmoid(logits)
    stats = {'rewards/chosen': r_chosen.detach(), 'rewards/rejected': r_rejected.detach(),
        'rewards/margins': margin.detach(), 'rewards/accuracies': (margin > 0).float().detach()}
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


def bank_sides(pipeline, bank, ids, stage):
    """Side of stage `stage` for bank samples: x1 and context by encoding each kept asset (asset.npz) through the
    pipeline, x0 from the sample's noise seed, as drawn; plus cond [N] (None when unconditional)."""
    metas = [bank.meta(i) for i in ids]
    assets = torch.stack([torch.from_numpy(bank.array(i, 'asset')) for i in ids]).to(pipeline.device)
    runs = pipeline.runs_from_asset([m['seed'] for m in metas], assets)
    conditions = [m.get('condition') for m in metas]
    cond = None if conditions[0] is None else torch.tensor(conditions, dtype=torch.int64, device=pipeline.device)
    run = runs[stage]
    return Side(run.x0, run.x1, run.context), cond

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


def reliability_weights(chosen_rewards, rejected_rewards):
    """w2 [M] = exp(h) / mean(exp(h)), h = log sigmoid(r_chosen - r_rejected): mean 1 over the data set."""
    delta = torch.as_tensor(chosen_rewards, dtype=torch.float64) - torch.as_tensor(rejected_rewards, dtype=torch.float64)
    if delta.numel() == 0 or not torch.isfinite(delta).all():
        raise ValueError('reliability weights need finite rewards for at least one pair')
    p = torch.sigmoid(delta)
    return p / p.mean()

#----------------------------------------------------------------------------
