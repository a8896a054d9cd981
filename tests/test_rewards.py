"""Reward models: the sigma 3D CNN's shapes and gradients on full and small slabs; Bradley-Terry losses."""

import math

import pytest
import torch

from eg3d_rlhf.rewards import losses
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward, SqueezeExcite


def test_sigma_reward_small_slab_shapes_and_input_gradient():
    torch.manual_seed(0)
    model = SigmaReward()
    x = (torch.rand([2, 32, 36, 33]) * 100).requires_grad_(True)
    features = model.features(x)
    assert features.shape == (2, 8192) and model.feature_dim == 8192
    scores = model.score(x)
    assert scores.shape == (2,) and not torch.allclose(scores[0], scores[1])
    scores.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(AssertionError):
        model.score(torch.zeros([2, 1, 32, 36, 33]))       # A channel axis is not expected.


@pytest.mark.slow
def test_sigma_reward_accepts_the_full_published_slab():
    model = SigmaReward().eval()
    with torch.no_grad():
        assert model.score(torch.rand([1, 128, 141, 129]) * 100).shape == (1,)


def test_squeeze_excite_only_rescales_channels():
    se = SqueezeExcite(8)
    x = torch.rand([2, 8, 3, 3, 3]) + 0.1
    ratio = se(x) / x
    assert torch.all((ratio > 0) & (ratio < 1))
    assert torch.allclose(ratio, ratio[:, :, :1, :1, :1].expand_as(ratio))   # One gate per channel.


def test_bradley_terry():
    r = torch.tensor([0.0, 1.0])
    assert losses.bradley_terry(r, r).item() == pytest.approx(math.log(2))
    assert losses.bradley_terry(torch.tensor([20.0]), torch.tensor([0.0])).item() < 1e-6
    assert losses.bradley_terry(torch.tensor([0.0]), torch.tensor([3.0])).item() == pytest.approx(math.log1p(math.exp(3)))


def test_bradley_terry_with_ties_is_a_distribution():
    d = torch.linspace(-4, 4, 9)
    zeros, theta = torch.zeros_like(d), 2.0
    nll = lambda a, b, tie: torch.stack([losses.bradley_terry_ties(a[i:i+1], b[i:i+1], tie[i:i+1], theta) for i in range(len(a))])
    p_a = torch.exp(-nll(d, zeros, torch.zeros_like(d, dtype=torch.bool)))
    p_b = torch.exp(-nll(zeros, d, torch.zeros_like(d, dtype=torch.bool)))
    p_tie = torch.exp(-nll(d, zeros, torch.ones_like(d, dtype=torch.bool)))
    assert torch.allclose(p_a + p_b + p_tie, torch.ones_like(d), atol=1e-5)
    assert p_tie.argmax() == 4 and p_a[-1] > p_a[0]                        # Ties likeliest at equal rewards.
    assert p_tie[4].item() == pytest.approx((theta ** 2 - 1) / (1 + theta) ** 2, rel=1e-5)   # Rao-Kupper at d = 0.
