"""Preference losses as registries: pair losses map a batch of pairs to (loss, stats), unpaired ones single samples."""

import dataclasses
import typing

import torch
import torch.nn.functional as F

#----------------------------------------------------------------------------
# Every method that learns from pairs (Flow-DPO on a flow stage, the EG3D reward phase's pairwise term) reduces a
# pair to per-side quantities with one meaning: how likely the policy finds that side, up to a constant (for a flow
# stage -MSE_t, for an EG3D slab -MSE to the side's sigma), and the same for the frozen reference. A loss reads
# them and returns a loss per pair with TRL's stats names. Adding a loss is one function here with @register.

@dataclasses.dataclass
class PairBatch:
    """N pairs as a loss sees them; a side the loss does not declare it needs may be None."""
    chosen:         torch.Tensor                        # [N] policy log-likelihood proxy of the preferred side.
    rejected:       typing.Optional[torch.Tensor]       # [N] the same of the other side.
    ref_chosen:     typing.Optional[torch.Tensor]       # [N] the frozen reference's, preferred side (no gradient).
    ref_rejected:   typing.Optional[torch.Tensor]       # [N] the frozen reference's, other side.
    weight:         typing.Optional[torch.Tensor] = None  # [N] per-pair weight of the margin (Circular-DPO's w2), None = 1.
    gap:            typing.Optional[torch.Tensor] = None  # [N] reward of the winner minus the loser's, when a reward judged.


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """The settings every loss may read."""
    beta:               float = 1.0     # Scale of the implicit rewards (DPO's beta; beta * T for flows).
    label_smoothing:    float = 0.0     # Share of pairs assumed flipped (robust, cDPO); 0 = none.
    tau:                float = 0.1     # dreamdpo: reward gap above which the loser is pushed away.


@dataclasses.dataclass(frozen=True)
class PreferenceLoss:
    name:               str             # The registry key (--loss-type, --pair-loss).
    fn:                 typing.Callable # fn(PairBatch, LossOptions) -> (loss [N], {stat name: [N] tensor}).
    help:               str             # One line for --help and docs.
    needs_rejected:     bool = True     # Reads batch.rejected (SFT does not: its loser is never computed).
    needs_reference:    bool = True     # Reads ref_chosen / ref_rejected (the frozen reference's pass).
    needs_gap:          bool = False    # Reads batch.gap (only methods whose pairs a reward judged have it).

    def __call__(self, batch, options=LossOptions()):
        for name, need in (('rejected', self.needs_rejected), ('ref_chosen', self.needs_reference),
                ('ref_rejected', self.needs_reference and self.needs_rejected), ('gap', self.needs_gap)):
            if need and getattr(batch, name) is None:
                raise ValueError(f'the {self.name} loss needs {name}, which this method does not give')
        return self.fn(batch, options)


LOSSES = {}

def register(name, help, needs_rejected=True, needs_reference=True, needs_gap=False):
    """Decorator adding fn(batch, options) -> (loss [N], stats) to the registry under `name` (a duplicate is refused)."""
    def decorate(fn):
        if name in LOSSES:
            raise ValueError(f'a preference loss named {name!r} is registered already')
        LOSSES[name] = PreferenceLoss(name, fn, help, needs_rejected, needs_reference, needs_gap)
        return fn
    return decorate


def get(name):
    """The registered loss `name`; ValueError listing the known ones."""
    if name not in LOSSES:
        raise ValueError(f'unknown preference loss {name!r}; use one of {", ".join(names())}')
    return LOSSES[name]


def names(needs_gap=None):
    """Registered loss names (those a method can feed: needs_gap False leaves out losses reading a reward gap)."""
    return tuple(n for n, l in LOSSES.items() if needs_gap is None or needs_gap or not l.needs_gap)

#----------------------------------------------------------------------------
# Implicit rewards and margins, shared by the DPO family: r = beta * (policy - reference) per side (TRL's
# rewards/chosen and rewards/rejected), margin = r_chosen - r_rejected, logits = weight * margin.

def implicit_rewards(batch, options):
    """(r_chosen, r_rejected, logits) of a batch."""
    r_chosen = options.beta * (batch.chosen - batch.ref_chosen)
    r_rejected = options.beta * (batch.rejected - batch.ref_rejected)
    margin = r_chosen - r_rejected
    logits = margin if batch.weight is None else batch.weight.to(margin.dtype) * margin
    return r_chosen, r_rejected, logits


def dpo_stats(r_chosen, r_rejected):
    """TRL's per-pair DPO stats (detached)."""
    margin = (r_chosen - r_rejected).detach()
    return {'rewards/chosen': r_chosen.detach(), 'rewards/rejected': r_rejected.detach(), 'rewards/margins': margin,
        'rewards/accuracies': (margin > 0).float()}


@register('sigmoid', 'DPO: -log sigmoid(margin of implicit rewards); with --label-smoothing, cDPO')
def sigmoid_loss(batch, options):
    r_chosen, r_rejected, logits = implicit_rewards(batch, options)
    loss = -F.logsigmoid(logits)
    if options.label_smoothing:
        eps = options.label_smoothing
        loss = (1 - eps) * loss - eps * F.logsigmoid(-logits)
    return loss, dpo_stats(r_chosen, r_rejected)


@register('robust', 'Robust DPO (Chowdhury et al.): an unbiased loss under label noise at rate --label-smoothing')
def robust_loss(batch, options):
    eps = options.label_smoothing
    if not 0 <= eps < 0.5:
        raise ValueError(f'the robust loss needs a label smoothing in [0, 0.5), got {eps}')
    r_chosen, r_rejected, logits = implicit_rewards(batch, options)
    loss = (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)
    return loss, dpo_stats(r_chosen, r_rejected)


@register('ipo', 'IPO (Azar et al.): (margin / beta - 1 / (2 beta))^2, a bounded target instead of a sigmoid')
def ipo_loss(batch, options):
    r_chosen, r_rejected, logits = implicit_rewards(batch, options)
    loss = (logits / options.beta - 1 / (2 * options.beta)) ** 2
    return loss, dpo_stats(r_chosen, r_rejected)


@register('hinge', 'SLiC hinge: max(0, 1 - margin)')
def hinge_loss(batch, options):
    r_chosen, r_rejected, logits = implicit_rewards(batch, options)
    return torch.relu(1 - logits), dpo_stats(r_chosen, r_rejected)


@register('sft', 'Supervised fine-tuning on the preferred side only: -chosen (the loser and reference are not read)',
    needs_rejected=False, needs_reference=False)
def sft_loss(batch, options):
    return -batch.chosen, {}


@register('dreamdpo', 'DreamDPO: pull toward the winner, push from the loser only where the reward gap exceeds --tau',
    needs_reference=False, needs_gap=True)
def dreamdpo_loss(batch, options):
    push = (batch.gap.abs() > options.tau).to(batch.chosen.dtype)
    loss = -batch.chosen + push * batch.rejected
    return loss, {'pushed': push.detach()}

#----------------------------------------------------------------------------
# Unpaired losses: each sample alone, with a label instead of a rival. A sample's policy and reference quantities
# mean what a side's mean above (a flow stage's -MSE_t); its label is a scalar rating (label.py rate's 1-5, or any
# reward) or good (1) / bad (0). Adding one is one function here with @register_unpaired.

@dataclasses.dataclass
class UnpairedBatch:
    """N samples as an unpaired loss sees them."""
    policy:         torch.Tensor                        # [N] policy log-likelihood proxy of each sample.
    reference:      torch.Tensor                        # [N] the frozen reference's (no gradient).
    label:          torch.Tensor                        # [N] a rating (dro) or good 1 / bad 0 (kto).
    value:          typing.Optional[torch.Tensor] = None  # [N] dro: the baseline V of each sample's condition.
    reference_point: typing.Optional[torch.Tensor] = None # kto: z given (e.g. the mean r over every rank); None = this batch's mean r.


@dataclasses.dataclass(frozen=True)
class UnpairedOptions:
    """The settings every unpaired loss may read."""
    beta:               float = 1.0     # Scale of the implicit reward beta * (policy - reference).
    desirable_weight:   float = 1.0     # kto: weight of the good samples' loss.
    undesirable_weight: float = 1.0     # kto: weight of the bad samples'.


UNPAIRED = {}

def register_unpaired(name, help):
    """Decorator adding fn(UnpairedBatch, UnpairedOptions) -> (loss [N], stats) under `name` (a duplicate is refused)."""
    def decorate(fn):
        if name in UNPAIRED or name in LOSSES:
            raise ValueError(f'a loss named {name!r} is registered already')
        UNPAIRED[name] = PreferenceLoss(name, fn, help, needs_rejected=False, needs_reference=True)
        return fn
    return decorate


def get_unpaired(name):
    """The registered unpaired loss `name`; ValueError listing the known ones."""
    if name not in UNPAIRED:
        raise ValueError(f'unknown unpaired loss {name!r}; use one of {", ".join(UNPAIRED)}')
    return UNPAIRED[name].fn


@register_unpaired('dro', 'DRO (Richemond et al. 2024; DSO): (rating - V - beta (policy - reference))^2 / 2, a '
    'regression of the implicit reward on the rating above its condition\'s baseline V')
def dro_loss(batch, options):
    if batch.value is None:
        raise ValueError('the dro loss needs each sample\'s baseline V (value)')
    implicit = options.beta * (batch.policy - batch.reference)
    residual = batch.label.to(implicit.dtype) - batch.value.to(implicit.dtype) - implicit
    return 0.5 * residual.square(), {'rewards': implicit.detach(), 'residual': residual.detach()}


@register_unpaired('kto', 'KTO (Ethayarajh et al. 2024): 1 - sigmoid(r - z) for good samples, 1 - sigmoid(z - r) for '
    'bad ones; r = beta (policy - reference), z the batch\'s mean r (or the one given) clamped at 0, without gradient')
def kto_loss(batch, options):
    implicit = options.beta * (batch.policy - batch.reference)
    z = implicit.detach().mean() if batch.reference_point is None else batch.reference_point.detach().to(implicit)
    z = z.clamp(min=0)
    good = batch.label.to(implicit.dtype) > 0.5
    loss = torch.where(good, options.desirable_weight * (1 - torch.sigmoid(implicit - z)),
        options.undesirable_weight * (1 - torch.sigmoid(z - implicit)))
    return loss, {'rewards': implicit.detach(), 'kl': z.expand_as(implicit)}

#----------------------------------------------------------------------------
