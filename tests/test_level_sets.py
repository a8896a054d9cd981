"""The levels trunk's fixed features (rewards/level_sets.py) and linear heads fitted on them (rewards/linear_heads.py)."""

import itertools
import math

import numpy as np
import pytest
import torch

from eg3d_rlhf.data.labeling import active_order, pair_key
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_description
from eg3d_rlhf.rewards import linear_heads
from eg3d_rlhf.rewards.contract import InputSpec, Reward
from eg3d_rlhf.rewards.fitting import PreparedInputs
from eg3d_rlhf.rewards.level_sets import CHANNELS, LevelSetFeatures
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward

SPEC = InputSpec(slab=slab_description(24, crop=SlabCrop(0, 0, 0, 0, 0, 0)), normalisation='affine')   # 24^3 raw sigma.


def ball(radius, n=24, centre=(0.0, 0.0, 0.0), peak=30.0):
    """Raw sigma [n, n, n] of a ball: peak - (peak - 10) * (distance / radius) (level 10 at `radius`), voxel units."""
    axis = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    x, y, z = torch.meshgrid(axis - centre[0], axis - centre[1], axis - centre[2], indexing='ij')
    return (peak - (peak - 10) * (x ** 2 + y ** 2 + z ** 2).sqrt() / radius)


def global_channels(f, levels=1):
    """{channel name: value} of a one-level feature vector's whole-slab means."""
    return dict(zip(CHANNELS, f[-len(CHANNELS) * levels:].tolist()))


def test_channels_measure_volume_area_orientation_and_curvature():
    trunk = LevelSetFeatures(levels=(10.0,), width=0.5, cells=(2, 2, 2)).double()
    small, big = (global_channels(trunk(ball(r)[None])[0]) for r in (5.0, 8.0))
    inner = 22 ** 3                                              # Voxels the stencils reach (border left out).
    assert small['occupancy'] * inner == pytest.approx(4 / 3 * math.pi * 5 ** 3, rel=0.05)
    assert big['occupancy'] * inner == pytest.approx(4 / 3 * math.pi * 8 ** 3, rel=0.05)
    assert small['area'] * inner == pytest.approx(4 * math.pi * 5 ** 2, rel=0.05)   # |grad o| integrates to the area.
    assert big['area'] * inner == pytest.approx(4 * math.pi * 8 ** 2, rel=0.05)
    for c in ('n_xx', 'n_yy', 'n_zz'):                           # A sphere faces every way alike: a third each.
        assert big[c] / big['area'] == pytest.approx(1 / 3, abs=0.02)
    for c in ('n_xy', 'n_xz', 'n_yz'):
        assert abs(big[c]) / big['area'] < 0.01
    assert small['laplacian'] * inner == pytest.approx(0, abs=1.0)      # div grad o: the flux through the border, 0.
    curvature = lambda g: g['abs_laplacian'] / g['area']
    assert curvature(small) > curvature(big)                     # A smaller ball bends more.


def test_features_are_local_and_differentiable():
    trunk = LevelSetFeatures(cells=(2, 2, 2)).double()
    a = ball(6.0, centre=(-5, 0, 0))
    b = a.clone()
    b[16:, :, :] = -10                                          # Only the +x half changes (empty).
    fa, fb = trunk(a[None])[0], trunk(b[None])[0]
    per_cell = fa[:-len(trunk.levels) * len(CHANNELS)].view(len(trunk.levels) * len(CHANNELS), 2, 2, 2)
    per_cell_b = fb[:-len(trunk.levels) * len(CHANNELS)].view_as(per_cell)
    assert torch.allclose(per_cell[:, 0], per_cell_b[:, 0])     # The -x cells read the same.
    assert not torch.allclose(per_cell[:, 1], per_cell_b[:, 1])
    x = ball(6.0)[None].requires_grad_(True)
    trunk(x).sum().backward()
    assert x.grad.abs().sum() > 0 and trunk.dim == 3 * 10 * 9
    assert not list(trunk.parameters())


def prepared(slabs):
    data = torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in slabs]).half()
    return PreparedInputs({f's{i}': i for i in range(len(slabs))}, data, SPEC)


def test_linear_heads_learn_a_taste_from_noisy_pairs_and_pick_the_penalty_on_validation():
    rng = np.random.RandomState(0)
    radii = rng.uniform(4.0, 9.0, size=40)
    inputs = prepared([ball(r) for r in radii])
    truth = {f's{i}': -r for i, r in enumerate(radii)}          # Smaller balls preferred.
    model = SigmaReward(levels=(10.0,), cells=(1, 1, 1), members=4)
    table = linear_heads.feature_table(model, inputs, inputs.index, mirror=True, progress=False)
    ids = sorted(inputs.index)
    train_ids, val_ids = ids[:30], ids[30:]

    def judge(a, b):                                            # 80% right.
        w, l = (a, b) if truth[a] > truth[b] else (b, a)
        return (w, l) if rng.uniform() < 0.8 else (l, w)
    pairs = [judge(*rng.choice(train_ids, 2, replace=False)) for _ in range(300)]
    val = [judge(*rng.choice(val_ids, 2, replace=False)) for _ in range(60)]
    fitted = linear_heads.fit_linear_heads(model, table, train_ids, pairs, [], val, (1e-3, 1.0, 1e4), seed=0)
    assert [g['l2'] for g in fitted['grid']] == [1e-3, 1.0, 1e4] and fitted['l2'] != 1e4    # Too strong: no signal.
    assert min(g['val_nll'] for g in fitted['grid']) == fitted['chosen']['val_nll']
    with torch.no_grad():
        members = model.member_scores(model.features(inputs.batch(val_ids)))
    scores = members.mean(dim=1)
    right = [(scores[i] > scores[j]) == (truth[a] > truth[b]) for (i, a), (j, b) in
        itertools.combinations(enumerate(val_ids), 2)]
    assert np.mean(right) > 0.9                                  # Held-out samples ordered as the taste would.
    assert members.std(dim=1).max() > 0                          # Bootstrapped members differ.
    rows = [table.index[x] for x in train_ids]
    seen = torch.cat([table.plain[rows], table.mirrored[rows]])
    assert torch.allclose(model.feature_mean.double(), seen.mean(dim=0).float().double(), rtol=1e-5, atol=1e-7)


def test_a_bank_scored_per_member_gives_the_active_order_what_it_needs():
    torch.manual_seed(0)
    model = SigmaReward(levels=(10.0,), cells=(1, 1, 1), members=3).eval()
    for head in model.heads:
        torch.nn.init.normal_(head.weight)
    reward = Reward(model, SPEC, 'sigma')
    slabs = [ball(r).float().numpy() for r in (4.0, 5.0, 6.0, 7.0)]
    members = reward.score_slabs(iter(slabs), batch=3, members=True)
    assert members.shape == (4, 3) and np.allclose(members.mean(axis=1), reward.score_slabs(iter(slabs), batch=3), atol=1e-5)
    order = list(active_order({f's{i}': m for i, m in enumerate(members)}, np.random.RandomState(0)))
    assert len({pair_key(*p) for p in order}) == 6
