"""rewards/aggregate.py: each conservative aggregate against its formula on hand-made member scores, and the refusals."""

import numpy as np
import pytest
import torch

from eg3d_rlhf.rewards import aggregate
from eg3d_rlhf.rewards.contract import InputSpec, Reward
from tests.helpers.rewards import slab_description, tiny_ensemble, tiny_reward

MEMBERS = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 0.0], [-3.0, 1.0, -1.0]], dtype=torch.float64)


def by_hand(row, kind, lam):
    mean = sum(row) / len(row)
    var = sum((r - mean) ** 2 for r in row) / len(row)
    return {'mean': mean, 'min': min(row), 'mean-std': mean - lam * var ** 0.5, 'uwo': mean - lam * var}[kind]


@pytest.mark.parametrize('kind', aggregate.AGGREGATES)
@pytest.mark.parametrize('lam', [0.0, 0.5, 2.0])
def test_each_aggregate_is_its_formula(kind, lam):
    got = aggregate.reduce(MEMBERS, kind, lam).tolist()
    assert got == pytest.approx([by_hand(row, kind, lam) for row in MEMBERS.tolist()], abs=1e-12)


def test_the_disagreement_is_the_members_population_sd():
    assert aggregate.disagreement(MEMBERS).tolist() == pytest.approx([np.std(r) for r in MEMBERS.tolist()])


def test_conservative_aggregates_never_exceed_the_mean_and_have_finite_gradients_where_members_agree():
    x = MEMBERS.clone().requires_grad_(True)
    for kind in aggregate.AGGREGATES:
        r = aggregate.reduce(x, kind, 1.0)
        assert (r <= aggregate.reduce(x, 'mean') + 1e-12).all()
        (grad,) = torch.autograd.grad(r.sum(), x)
        assert torch.isfinite(grad).all(), kind
        expected = [1.0, 0.0, 0.0] if kind == 'min' else [1 / 3] * 3          # Agreeing members: the mean's gradient,
        assert grad[1].tolist() == pytest.approx(expected), kind                # or min's pick of one of them.


@pytest.mark.parametrize('kind, lam, message', [('max', 1.0, "unknown reward aggregate 'max'"),
    ('uwo', -1.0, 'expected a finite number >= 0'), ('mean-std', float('nan'), 'expected a finite number >= 0')])
def test_bad_aggregates_are_refused(kind, lam, message):
    with pytest.raises(ValueError, match=message):
        aggregate.reduce(MEMBERS, kind, lam)


def test_a_reward_scores_by_its_aggregate_and_one_member_is_refused():
    model = tiny_reward(seed=1)
    spec = InputSpec(slab=slab_description())
    one = Reward(model.eval(), spec, 'sigma')
    with pytest.raises(ValueError, match="'min' needs an ensemble"):
        aggregate.aggregated(one, 'min')
    assert aggregate.aggregated(one, 'mean') is one
    three = Reward(tiny_ensemble(seed=2).eval(), spec, 'sigma')
    raw = torch.rand([2, *spec.grid.shape]) * 50
    members = three.member_scores(raw)
    assert members.shape == (2, 3)
    worst = aggregate.aggregated(three, 'min')
    assert torch.equal(worst.score(raw), members.min(dim=1).values) and three.score(raw).tolist() == pytest.approx(
        members.mean(dim=1).tolist(), abs=1e-6)
    assert three.aggregate == ('mean', 1.0) and worst.model is three.model      # A view: the original scores as before.
