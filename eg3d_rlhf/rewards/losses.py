"""Preference losses: Bradley-Terry on reward pairs (with or without ties); Cauchy-Schwarz on unpaired good/bad sets."""

import math

import torch
import torch.nn.functional as F

#----------------------------------------------------------------------------

def bradley_terry(r_winner, r_loser):
    """Mean of -log sigmoid(r_w - r_l) over pairs [N]."""
    return -F.logsigmoid(r_winner - r_loser).mean()


def rao_kupper_nll(d, tie, theta=2.0):
    """Per-pair NLL of margins d = r_a - r_b (any shape; tie broadcasts against it, False: a won) under Rao-Kupper:
    P(a > b) = sigmoid(d - log theta), P(tie) = 1 - P(a > b) - P(b > a). theta > 1 sets how often ties are expected."""
    log_theta = math.log(theta)
    log_win = F.logsigmoid(d - log_theta)
    p_tie = (1 - torch.sigmoid(d - log_theta) - torch.sigmoid(-d - log_theta)).clamp(min=1e-12)
    return -torch.where(tie, p_tie.log(), log_win)


def bradley_terry_ties(r_a, r_b, tie, theta=2.0):
    """Mean Rao-Kupper NLL (rao_kupper_nll) of r_a, r_b [N] with tie [N] bool (False: a won)."""
    return rao_kupper_nll(r_a - r_b, tie, theta).mean()

#----------------------------------------------------------------------------
# Cauchy-Schwarz divergence between two sets of embeddings, Parzen estimate with a Gaussian kernel
# k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)), diagonal pairs included:
#   D_CS = log mean K_gg + log mean K_bb - 2 log mean K_gb  (>= 0 by Cauchy-Schwarz; 0 for equal sets).

def _sq_distances(a, b):
    """Squared distances [Na, Nb] from explicit differences (exact zeros on equal rows; Na * Nb * F memory)."""
    return (a[:, None, :] - b[None, :, :]).square().sum(dim=-1)


def _log_mean_kernel(a, b, bandwidth):
    """log of the mean Gaussian kernel value over all pairs of rows of a [Na, F] and b [Nb, F]."""
    sq = _sq_distances(a, b)
    return torch.logsumexp((-sq / (2 * bandwidth ** 2)).flatten(), dim=0) - math.log(sq.numel())


def cs_divergence(f_good, f_bad, bandwidth=None):
    """Cauchy-Schwarz divergence between embeddings [Ng, F] and [Nb, F]; scalar >= 0, symmetric.

    bandwidth None: the median distance between distinct rows of the union (detached), at least 1e-6.
    """
    if bandwidth is None:
        union = torch.cat([f_good, f_bad]).detach()
        distances = _sq_distances(union, union).sqrt()
        off = ~torch.eye(len(union), dtype=torch.bool, device=union.device)
        bandwidth = distances[off].median().clamp(min=1e-6) if len(union) > 1 else torch.ones([])
    return (_log_mean_kernel(f_good, f_good, bandwidth) + _log_mean_kernel(f_bad, f_bad, bandwidth)
        - 2 * _log_mean_kernel(f_good, f_bad, bandwidth))


# The unpaired objectives, by name (FitOptions.objective). Both separate the good and the bad samples' embeddings by
# -D_CS and tie the scalar reward to the labels by a second term:
#   cs-bce   -D_CS + reg_weight * BCE(reward, good)     this repository's form from the start (checkpoints, docs);
#   dreamcs  MSE(reward, score) + lambda * (-D_CS)      DreamCS's L_RewardCS = L_MSE + lambda L_div, L_div = -D_CS
#                                                       ("Loss & Training"; lambda = 1 typically, 0 = the MSE alone).
UNPAIRED_OBJECTIVES = ('cs-bce', 'dreamcs')


def both_classes(good, name):
    """good [N] as bool; ValueError naming the loss unless it holds good and bad samples."""
    good = good.bool()
    if good.all() or not good.any():
        raise ValueError(f'{name} needs good and bad samples in a batch; got {int(good.sum())} good of {len(good)}')
    return good


def unpaired_cs_loss(scores, features, good, reg_weight=1.0):
    """Objective cs-bce: -D_CS(good, bad features) + reg_weight * BCE(scores, good).

    scores [N], features [N, F], good [N] bool; the batch must hold both classes. Scalar.
    """
    good = both_classes(good, 'unpaired_cs_loss')
    regression = F.binary_cross_entropy_with_logits(scores, good.to(scores.dtype))
    return -cs_divergence(features[good], features[~good]) + reg_weight * regression


def dreamcs_loss(scores, features, good, targets, cs_lambda=1.0):
    """Objective dreamcs (DreamCS's L_RewardCS): MSE(scores, targets) + cs_lambda * L_div, L_div = -D_CS(good, bad).

    scores [N] (rewards), targets [N] (each sample's own score), features [N, F], good [N] bool (both classes, unless
    cs_lambda is 0: then the MSE alone, and D_CS is not computed). Scalar.
    """
    mse = F.mse_loss(scores, targets.to(scores.dtype))
    if cs_lambda == 0:
        return mse
    good = both_classes(good, 'dreamcs_loss')
    return mse + cs_lambda * -cs_divergence(features[good], features[~good])

#----------------------------------------------------------------------------
