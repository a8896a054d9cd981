"""Conservative rewards: an ensemble's member scores reduced by their mean, worst member, mean - lambda sd or UWO."""

import copy
import math

import torch

from torch_utils import misc

#----------------------------------------------------------------------------
# An ensemble's members agree where the labels constrain them and drift apart where a generator leaves the labelled
# samples behind, which is where optimising the mean over-optimises. A conservative aggregate penalises that spread
# (Coste et al., ICLR 2024: worst-case optimisation and uncertainty-weighted optimisation of 4-5 members):
#   mean        mean_k r_k                               (what every reward scores by default)
#   min         min_k r_k                                (worst case)
#   mean-std    mean_k r_k - lambda * sd_k r_k           (sd over members, population form)
#   uwo         mean_k r_k - lambda * var_k r_k          (uncertainty-weighted: the variance, population form)
# Each is differentiable in the members' scores, so fine-tuning ascends it as it ascends the mean.

AGGREGATES = ('mean', 'min', 'mean-std', 'uwo')


def check(kind, lam):
    """A ValueError naming the flag when `kind` is no aggregate or lambda is not a finite number >= 0."""
    if kind not in AGGREGATES:
        raise ValueError(f'unknown reward aggregate {kind!r}; use one of {", ".join(AGGREGATES)}')
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f'the aggregate\'s lambda is {lam!r}; expected a finite number >= 0')


def reduce(members, kind='mean', lam=1.0):
    """Member scores [N, K] -> rewards [N] by the aggregate `kind` (AGGREGATES) with penalty weight `lam`."""
    check(kind, lam)
    misc.assert_shape(members, [None, None])
    mean = members.mean(dim=1)
    if kind == 'mean':
        return mean
    if kind == 'min':
        return members.min(dim=1).values
    var = members.var(dim=1, unbiased=False)
    if kind == 'uwo':
        return mean - lam * var
    sd = torch.where(var > 0, var.clamp_min(1e-30).sqrt(), torch.zeros_like(var))    # A finite gradient where
    return mean - lam * sd                                                          # every member agrees.


def disagreement(members):
    """The members' spread, sd over members [N] (population form), of member scores [N, K]."""
    misc.assert_shape(members, [None, None])
    return members.std(dim=1, unbiased=False)


def summary(members, kind='mean', lam=1.0):
    """Means over the samples of member scores [N, K]: dict(proxy: the members' mean, aggregate: `kind`'s reward,
    disagreement: the members' sd, members: [each member's mean])."""
    return dict(proxy=float(members.mean()), aggregate=float(reduce(members, kind, lam).mean()),
        disagreement=float(disagreement(members).mean()), members=[float(m) for m in members.mean(dim=0)])


def aggregated(reward, kind='mean', lam=1.0):
    """The contract.Reward `reward` scoring by the aggregate `kind`: itself for 'mean', else a copy that shares its
    model and contract. A model of one member has no spread to penalise, so any other aggregate is refused."""
    check(kind, lam)
    if kind == 'mean':
        return reward
    members = int(getattr(reward.model, 'members', 1))
    if members < 2:
        raise ValueError(f'the reward aggregate {kind!r} needs an ensemble, but this {reward.kind} reward has one member: '
            'train it with tools/train_reward.py --members 5 or use --reward-aggregate=mean')
    view = copy.copy(reward)
    view.aggregate = (kind, float(lam))
    return view

#----------------------------------------------------------------------------
