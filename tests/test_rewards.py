"""Reward models: the sigma 3D CNN, soft depth maps + 2D CNN, surface points + PointNet; the preference losses."""

import math

import pytest
import torch

from eg3d_rlhf.rewards import REWARDS, build_reward, losses
from eg3d_rlhf.rewards.base import RewardNet
from eg3d_rlhf.rewards.depth_cnn import DepthReward, render_depth
from eg3d_rlhf.rewards.pointnet import PointCloudReward, surface_points
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward, SqueezeExcite


def test_sigma_cnn_trunk_small_slab_shapes_and_input_gradient():
    torch.manual_seed(0)
    model = SigmaReward(trunk='cnn', hidden=512, members=1)
    x = (torch.rand([2, 32, 36, 33]) * 100).requires_grad_(True)
    features = model.features(x)
    assert features.shape == (2, 8192) and model.feature_dim == 8192
    scores = model.score(x)
    assert scores.shape == (2,) and not torch.allclose(scores[0], scores[1])
    scores.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(AssertionError):
        model.score(torch.zeros([2, 1, 32, 36, 33]))       # A channel axis is not expected.


def test_sigma_levels_trunk_is_fixed_and_its_ensemble_scores_by_the_mean():
    torch.manual_seed(0)
    model = SigmaReward()                                   # The default: level-set features, 8 linear heads.
    assert model.frozen_trunk and not [n for n, p in model.named_parameters() if not n.startswith('heads.')]
    for head in model.heads:
        torch.nn.init.normal_(head.weight)
    x = (torch.randn([3, 20, 22, 21]) * 10).requires_grad_(True)
    members = model.member_scores(model.features(x))
    assert members.shape == (3, 8) and torch.allclose(model.score(x), members.mean(dim=1))
    assert members.std(dim=1).min() > 0                     # Members differ: their spread is the doubt.
    model.score(x).sum().backward()
    assert x.grad.abs().sum() > 0                           # Fine-tuning reaches sigma through the fixed trunk.
    with pytest.raises(ValueError, match='no reference'):
        SigmaReward(reference_shape=[4, 4, 4])
    with pytest.raises(ValueError, match='unknown sigma trunk'):
        SigmaReward(trunk='mlp')
    assert SigmaReward.uses_reference({}) is False and SigmaReward.uses_reference(dict(trunk='cnn')) is True
    assert SigmaReward.default_input(dict(resolution=64, cube_length=1.0, crop={}), {}).normalisation == 'affine'


@pytest.mark.slow
def test_sigma_reward_accepts_the_full_published_slab():
    for model in (SigmaReward().eval(), SigmaReward(trunk='cnn').eval()):
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

#----------------------------------------------------------------------------
# Depth and point-cloud rewards, Cauchy-Schwarz losses, the registry. Balls are normalised slabs with a linear
# 2-voxel edge: 50 (the surface level) exactly at radius r, 100 inside, 0 outside.

one_thread = pytest.mark.usefixtures('one_thread')   # Tiny tensors: one thread is fastest (tests.conftest).


def _ball(shape, r, offset=(0.0, 0.0, 0.0), batch=1):
    axes = [torch.arange(s, dtype=torch.float32) - (s - 1) / 2 for s in shape]
    g = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1) - torch.tensor(offset)
    return (50 + 25 * (r - g.norm(dim=-1))).clamp(0, 100)[None].repeat(batch, 1, 1, 1)


def _hit_centroid(depth):
    """(row, col) centroid of the pixels [res, res] whose ray hits something."""
    hit = (depth < 0.99).float()
    rows, cols = torch.meshgrid(torch.arange(depth.shape[0]), torch.arange(depth.shape[1]), indexing='ij')
    return ((hit * rows).sum() / hit.sum()).item(), ((hit * cols).sum() / hit.sum()).item()


@one_thread
def test_render_depth_of_a_centred_ball():
    shape, r, res = (24, 26, 25), 6.0, 33
    radius = 12.5                                                   # The slab's largest half-extent, voxels.
    for yaw in (0.0, 45.0, 90.0):
        depth = render_depth(_ball(shape, r), yaw, res=res)
        assert depth.shape == (1, res, res) and depth.min() >= 0 and depth.max() <= 1
        assert depth[0, 16, 16].item() == pytest.approx((radius - r) / (2 * radius), abs=1.5 / (res - 1))
        assert torch.all(depth[0, [0, 0, -1, -1], [0, -1, 0, -1]] > 0.999)   # Corner rays miss.


@one_thread
def test_render_depth_follows_an_off_centre_ball():
    shape, r, res, radius = (24, 26, 25), 5.0, 33, 12.5
    centred = render_depth(_ball(shape, r), 0.0, res=res)[0]
    front = render_depth(_ball(shape, r, offset=(0, 0, 3)), 0.0, res=res)[0]     # 3 voxels toward the camera.
    assert (centred[16, 16] - front[16, 16]).item() == pytest.approx(3 / (2 * radius), abs=1.5 / (res - 1))
    profile = render_depth(_ball(shape, r, offset=(0, 0, 3)), 90.0, res=res)[0]  # Seen from +x: +z is on the left.
    row, col = _hit_centroid(profile)
    assert row == pytest.approx(16, abs=0.3) and col == pytest.approx(16 - 3 * (res - 1) / (2 * radius), abs=0.5)
    up = render_depth(_ball(shape, r, offset=(0, 2, 0)), 0.0, res=res)[0]        # World up: toward row 0.
    assert _hit_centroid(up)[0] == pytest.approx(16 - 2 * (res - 1) / (2 * radius), abs=0.5)


@one_thread
def test_render_depth_gradients_reach_the_slab():
    x = _ball((20, 22, 21), 5.0).requires_grad_(True)
    render_depth(x, 45.0, res=24)[0, 8:16, 8:16].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert x.grad.sum() < 0                                         # More density: nearer surfaces.


@one_thread
def test_surface_points_lie_on_the_ball():
    shape, r = (24, 26, 25), 7.0
    x = _ball(shape, r).requires_grad_(True)
    points = surface_points(x, num_points=500)
    assert points.shape == (1, 500, 3) and points.abs().max() <= 1
    assert torch.equal(points, surface_points(x, num_points=500))  # Deterministic.
    voxels = (points + 1) / 2 * torch.tensor([s - 1.0 for s in shape]) - torch.tensor([(s - 1) / 2 for s in shape])
    assert (voxels.norm(dim=-1) - r).abs().mean() < 0.05
    voxels.norm(dim=-1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    few = surface_points(_ball(shape, 1.2), num_points=3000)       # Fewer candidates than points: repeats.
    assert few.shape == (1, 3000, 3) and len(torch.unique(few[0], dim=0)) < 3000
    assert torch.equal(surface_points(torch.zeros([2, 16, 17, 18]), 10), torch.zeros([2, 10, 3]))


def _tiny(kind):
    if kind == 'depth':
        return DepthReward(views=('front', 'profile'), render_res=16, channels=(4, 8, 8, 8, 8), hidden=16)
    return PointCloudReward(num_points=128, widths=(8, 16, 32), hidden=16)


@one_thread
@pytest.mark.parametrize('kind', ['depth', 'pointcloud'])
def test_geometry_rewards_shapes_and_rebuild(kind):
    torch.manual_seed(0)
    model = _tiny(kind).eval()
    for shape in [(24, 26, 25), (16, 18, 17)]:
        x = torch.cat([_ball(shape, 4.0), _ball(shape, 6.0, offset=(1, 0, 2))])
        assert model.features(x).shape == (2, model.feature_dim) and model.score(x).shape == (2,)
    rebuilt = build_reward(kind, **model.config)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config and torch.equal(rebuilt.eval().score(x), model.score(x))
    with pytest.raises(AssertionError):
        model.score(x[:, None])


@one_thread
@pytest.mark.parametrize('kind', ['depth', 'pointcloud'])
def test_geometry_rewards_learn_to_prefer_bigger_balls(kind):
    torch.manual_seed(0)
    model = _tiny(kind)
    radii = torch.tensor([3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5])
    x = torch.cat([_ball((18, 20, 19), float(r)) for r in radii])
    big, small = torch.triu_indices(len(radii), len(radii), 1).flip(0)   # Every pair, the bigger ball first.
    accuracy = lambda s: (s[big] > s[small]).float().mean().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(15):
        scores = model.score(x)
        loss = losses.bradley_terry(scores[big], scores[small])
        history.append((loss.item(), accuracy(scores.detach())))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = model.score(x)
    assert losses.bradley_terry(scores[big], scores[small]).item() < history[0][0]
    assert accuracy(scores) >= 0.9 and accuracy(scores) > history[0][1]


@one_thread
def test_cs_divergence():
    torch.manual_seed(0)
    a, b = torch.randn([40, 5]), torch.randn([30, 5])
    assert abs(losses.cs_divergence(a, a.clone()).item()) < 1e-6
    assert losses.cs_divergence(a, b).item() == pytest.approx(losses.cs_divergence(b, a).item(), rel=1e-5)
    shifted = [losses.cs_divergence(a, b + shift, bandwidth=1.0).item() for shift in (0.5, 1.0, 2.0, 4.0)]
    assert shifted[0] > 0 and all(p < q for p, q in zip(shifted, shifted[1:]))
    median = [losses.cs_divergence(a, b + shift).item() for shift in (0.5, 1.0, 2.0, 4.0)]
    assert median[0] > 0 and all(p < q for p, q in zip(median, median[1:]))


@one_thread
def test_unpaired_cs_loss_trains_and_needs_both_classes():
    torch.manual_seed(0)
    inputs, good = torch.randn([24, 6]), torch.arange(24) % 3 == 0
    inputs[good] += 0.5
    embed, head = torch.nn.Linear(6, 4), torch.nn.Linear(4, 1)
    optimizer = torch.optim.Adam([*embed.parameters(), *head.parameters()], lr=1e-2)
    history = []
    for _ in range(20):
        features = embed(inputs)
        loss = losses.unpaired_cs_loss(head(features)[:, 0], features, good)
        history.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.ndim == 0 and history[-1] < history[0]
    with pytest.raises(ValueError, match='good and bad'):
        losses.unpaired_cs_loss(torch.zeros(4), torch.randn([4, 3]), torch.ones(4, dtype=torch.bool))


@one_thread
def test_build_reward_registry():
    assert set(REWARDS) == {'sigma', 'depth', 'pointcloud', 'sigma-unet'}
    assert isinstance(build_reward('depth', views=['front'], render_res=16, channels=[4, 4, 4, 4, 4]), DepthReward)
    with pytest.raises(ValueError, match='depth, pointcloud, sigma'):
        build_reward('voxels')
    with pytest.raises(ValueError, match='Unknown views'):
        DepthReward(views=('back',))


@one_thread
def test_reward_net_records_its_config_and_scores_from_features():
    class Toy(RewardNet):
        def __init__(self, widths=(3, 5), hidden=4, gain=None):
            super().__init__()
            self.trunk = torch.nn.Linear(widths[0], widths[1])
            self.init_head(widths[1], hidden)

        def features(self, x):
            return self.trunk(x)

    model = Toy(hidden=6)
    assert model.config == dict(widths=[3, 5], hidden=6, gain=None) and model.feature_dim == 5   # Defaults in, tuples as lists.
    assert list(model.state_dict()) == ['trunk.weight', 'trunk.bias', 'head.0.weight', 'head.0.bias', 'head.2.weight',
        'head.2.bias']
    x = torch.randn([4, 3])
    assert torch.equal(model.score(x), model.head(model.trunk(x))[:, 0]) and torch.equal(model(x), model.score(x))
    rebuilt = Toy(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.score(x), model.score(x))
    with pytest.raises(TypeError):
        Toy(gain=object())                                                  # Not JSON: no checkpoint could hold it.
    with pytest.raises(AssertionError):
        model.score_features(torch.zeros([4, 6]))
    assert [k for k, c in REWARDS.items() if c.takes_reference] == ['sigma'] and not RewardNet.takes_reference
    assert not RewardNet.uses_reference({}) and not RewardNet.frozen_trunk
