"""Preference losses on reward pairs: Bradley-Terry, and Bradley-Terry with ties (Rao-Kupper)."""

import math

import torch
import torch.nn.functional as F

#----------------------------------------------------------------------------

def bradley_terry(r_winner, r_loser):
    """Mean of -log sigmoid(r_w - r_l) over pairs [N]."""
    return -F.logsigmoid(r_winner - r_loser).mean()


def bradley_terry_ties(r_a, r_b, tie, theta=2.0):
    """Rao-Kupper: P(a > b) = sigmoid(d - log theta), P(tie) = 1 - P(a > b) - P(b > a), with d = r_a - r_b.

    r_a, r_b [N]; tie [N] bool (False: a won). theta > 1 sets how often ties are expected; mean NLL.
    """
    log_theta = math.log(theta)
    d = r_a - r_b
    log_win = F.logsigmoid(d - log_theta)
    p_tie = (1 - torch.sigmoid(d - log_theta) - torch.sigmoid(-d - log_theta)).clamp(min=1e-12)
    return -torch.where(tie, p_tie.log(), log_win).mean()

#----------------------------------------------------------------------------
