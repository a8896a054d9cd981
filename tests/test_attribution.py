"""Regions, Shapley/IG attribution and the reward-feature embedding on analytic slabs; tools/attribute.py and embed.py."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from eg3d_rlhf.analysis import attribution, embedding, regions
from eg3d_rlhf.cli import load_regions
from eg3d_rlhf.geometry import sigma as geometry
from eg3d_rlhf.rewards.contract import InputSpec, Reward
from eg3d_rlhf.synthetic import heads
from tests.helpers.cli import refused_in_one_line
from tests.helpers.scored import NPY, run_tool, write_npy
from tools import attribute, embed

pytestmark = pytest.mark.usefixtures('one_thread')

PUBLISHED_SHAPE = (128, 141, 129)

#----------------------------------------------------------------------------
# Regions.

def box_indices(n, lo, hi):
    """Voxel indices i of an axis of n points with lo <= i / (n - 1) <= hi, computed independently."""
    return set(range(math.ceil(lo * (n - 1) - 1e-9), math.floor(hi * (n - 1) + 1e-9) + 1))


def test_published_boxes_on_the_published_grid():
    r = regions.published(PUBLISHED_SHAPE)
    assert r.names == ['brow', 'eyes', 'nose', 'cheeks', 'mouth', 'chin_jaw', 'other']
    # The brow is claimed first, so it is its whole box: x .25-.75, y .70-.88, z .45-.82.
    expect = [box_indices(n, lo, hi) for n, (lo, hi) in zip(PUBLISHED_SHAPE, [(.25, .75), (.70, .88), (.45, .82)])]
    found = np.nonzero(r.mask('brow'))
    assert [set(np.unique(f)) for f in found] == expect
    assert r.counts()['brow'] == np.prod([len(e) for e in expect])
    # The nose box (x .38-.62, y .38-.68, z .60-.94) overlaps no earlier box: at 128x141x129 it is 30 x 42 x 44 voxels.
    nose = [box_indices(n, lo, hi) for n, (lo, hi) in zip(PUBLISHED_SHAPE, [(.38, .62), (.38, .68), (.60, .94)])]
    assert [len(s) for s in nose] == [30, 42, 44] and r.counts()['nose'] == 30 * 42 * 44
    # Eyes (listed before cheeks) keep the voxels both boxes claim: x .14-.34, y .50-.58, z .52-.82.
    i, j, k = (min(box_indices(n, lo, hi)) for n, (lo, hi) in zip(PUBLISHED_SHAPE, [(.14, .34), (.50, .58), (.52, .82)]))
    assert r.names[r.labels[i, j, k]] == 'eyes'
    assert r.names[r.labels[0, 0, 0]] == 'other'
    assert sum(r.counts().values()) == np.prod(PUBLISHED_SHAPE)


def test_template_puts_the_average_nose_tip_in_the_nose_region():
    grid = geometry.slab_grid(64)
    r = load_regions('template', grid)
    assert r.names == ['nose', 'eyes', 'brow', 'mouth', 'chin_jaw', 'cheeks', 'ears', 'skull', 'other']
    assert all(c > 0 for c in r.counts().values())
    tip = heads.nose_tip(heads.mean_head())
    index = np.rint((tip - grid.index_to_world(np.zeros(3))) / grid.voxel_size).astype(int)
    assert r.names[r.labels[tuple(index)]] == 'nose'
    # The template is left-right symmetric, as the heads are.
    assert (r.labels == r.labels[::-1]).mean() > 0.97


def test_landmark_boxes_and_user_volumes(tmp_path):
    grid = geometry.slab_grid(32)
    lo, hi = grid.index_to_world(np.zeros(3)), grid.index_to_world(np.asarray(grid.shape) - 1)
    points = np.tile((lo + hi) / 2, (98, 1))
    points[51:60] = lo + 0.5 * (hi - lo) + np.linspace(-1, 1, 9)[:, None] * 0.03      # The nose group, spread.
    r = regions.from_landmarks(points, grid, margin=0.01)
    nose = np.argwhere(r.mask('nose'))
    world = grid.index_to_world(nose)
    assert world.min(0) == pytest.approx(points[51:60].min(0) - 0.01, abs=grid.voxel_size)
    assert world.max(0) == pytest.approx(points[51:60].max(0) + 0.01, abs=grid.voxel_size)
    with pytest.raises(ValueError, match=r'needs point 97, but there are 60'):
        regions.from_landmarks(points[:60], grid)
    # A user's volume: saved, loaded, refused when it does not fit.
    r.save(str(tmp_path / 'mine'))
    back = regions.load(str(tmp_path / 'mine.npy'), str(tmp_path / 'mine.json'), grid.shape)
    assert back.names == r.names and (back.labels == r.labels).all()
    with pytest.raises(ValueError, match=r'mine.npy: label volume is .* the reward\'s slab is \[4, 4, 4\]'):
        regions.load(str(tmp_path / 'mine.npy'), str(tmp_path / 'mine.json'), (4, 4, 4))
    (tmp_path / 'bad.json').write_text('{"names": [1, 2]}')
    with pytest.raises(ValueError, match='bad.json: expected a JSON list of region names'):
        regions.load(str(tmp_path / 'mine.npy'), str(tmp_path / 'bad.json'), grid.shape)
    np.save(tmp_path / 'few.npy', np.full(grid.shape, 3, dtype=np.int16))
    (tmp_path / 'few.json').write_text('["a", "b"]')
    with pytest.raises(ValueError, match=r'few.npy: region labels must lie in 0..2'):
        regions.load(str(tmp_path / 'few.npy'), str(tmp_path / 'few.json'), grid.shape)


def test_region_picture(tmp_path):
    grid = geometry.slab_grid(32)
    r = load_regions('template', grid)
    regions.plot(r, np.where(r.labels < len(r.names) - 1, 20.0, 0.0), str(tmp_path / 'regions.png'))
    assert (tmp_path / 'regions.png').stat().st_size > 5000

#----------------------------------------------------------------------------
# Attribution on analytic slabs.

class RegionReward(nn.Module):
    """A toy reward that reads only the voxels under `weight`: smooth and nonlinear."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight, dtype=torch.float32), requires_grad=False)

    def score(self, x):
        s = (x * self.weight).flatten(1)
        return 3 * torch.tanh(s.sum(1) / 200) + s.pow(2).mean(1) / 50

    def features(self, x):
        return x.flatten(1)[:, :4]


def toy(r, name, normalisation='affine'):
    spec = InputSpec(slab=geometry.slab_description(32), normalisation=normalisation, scale=1.0 if normalisation == 'affine' else 100.0)
    return Reward(RegionReward(r.mask(name)), spec, 'toy')


@pytest.mark.parametrize('normalisation', ['affine', 'self_minmax'])
def test_a_reward_that_reads_one_region_is_attributed_there(normalisation):
    grid = geometry.slab_grid(32)
    r = regions.published(grid.shape)
    reward = toy(r, 'nose', normalisation)
    g = torch.Generator().manual_seed(0)
    x = 5 + torch.rand(3, *grid.shape, generator=g) * 10
    b = 5 + torch.rand(3, *grid.shape, generator=g) * 2
    # Self min-max normalisation reads the whole slab's extremes; pin them inside the nose (same in input and
    # baseline), so the score truly depends on the nose alone and the test sees the gradients pass the normalisation.
    nose_voxels = np.argwhere(r.mask('nose'))
    for v, value in ((nose_voxels[0], 0.0), (nose_voxels[-1], 30.0)):
        x[(slice(None), *v)] = b[(slice(None), *v)] = value
    result = attribution.attribute(reward, x, b, r, permutations=3, ig_steps=32, batch=2)
    nose = r.names.index('nose')
    for key in ('shapley', 'ig', 'ig_abs'):
        share = np.abs(result[key][:, nose]).sum() / np.abs(result[key]).sum()
        assert share >= 0.95, (key, share)
    assert result['shapley_completeness'].max() < 1e-4          # Exact in sum for every permutation.
    assert result['ig_completeness'].max() < 0.01               # A smooth reward: IG converges at 32 steps.
    table, rho = attribution.region_table(result, r)
    assert table['nose']['rank_shapley'] == table['nose']['rank_ig'] == 1 and table['nose']['voxels'] == r.counts()['nose']


class StencilReward(RegionReward):
    """RegionReward plus a term on neighbouring voxel pairs outside the nose, +1 and -1 along z (both voxels of one
    region), as a difference stencil of the default reward weighs them."""

    def __init__(self, weight, pairs):
        super().__init__(weight)
        self.pairs = nn.Parameter(torch.as_tensor(pairs, dtype=torch.float32), requires_grad=False)

    def score(self, x):
        return super().score(x) + (x * self.pairs).flatten(1).sum(1) / 10


def test_region_shares_see_through_cancelling_voxels():
    grid = geometry.slab_grid(32)
    r = regions.published(grid.shape)
    nose = r.mask('nose')
    pairs = np.zeros(grid.shape, dtype=np.float32)
    first, second = r.labels[:, :, 0:-1:2], r.labels[:, :, 1::2]
    keep = (first == second) & ~nose[:, :, 0:-1:2]                 # A pair lies in one region, outside the nose.
    pairs[:, :, 0:-1:2][keep], pairs[:, :, 1::2][keep] = 1, -1
    reward = Reward(StencilReward(nose, pairs), InputSpec(slab=geometry.slab_description(32), normalisation='affine',
        scale=1.0), 'toy')
    g = torch.Generator().manual_seed(0)
    b = 5 + torch.rand(3, *grid.shape, generator=g) * 2
    x = b + torch.rand(3, grid.shape[0], grid.shape[1], 1, generator=g) * 10    # Each column moves as one: pairs cancel.
    x[:, torch.from_numpy(nose)] += 4                                        # And the nose rises.
    result = attribution.attribute(reward, x, b, r, permutations=3, ig_steps=16, batch=3)
    table, _ = attribution.region_table(result, r)
    assert table['nose']['voxel_ig_share'] < 0.25                            # Voxel by voxel, IG is everywhere,
    assert table['nose']['ig_share'] > 0.95 and table['nose']['shapley_share'] > 0.95     # but the regions' sums
    ig_other = np.array([v['ig'] for n, v in table.items() if n != 'nose'])               # cancel outside the nose.
    assert np.abs(ig_other).max() < 1e-3 * abs(table['nose']['ig'])


@pytest.mark.parametrize('kind', ['sigma', 'depth', 'pointcloud'])
def test_every_slab_reward_kind_is_explained(kind):
    from eg3d_rlhf.rewards.checkpoint import load_reward
    from eg3d_rlhf.synthetic.demo import CHECKPOINTS
    reward = load_reward(f'{CHECKPOINTS}/reward-{kind}-nose.safetensors')
    grid = reward.grid
    r = regions.published(grid.shape)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing='ij'), -1).astype(np.float32)
    ball = lambda r: torch.from_numpy(np.clip(3 * (r - np.linalg.norm(idx - np.asarray(grid.shape) / 2, axis=-1)), -10, 30))
    x, b = torch.stack([ball(9), ball(13)]), torch.stack([ball(11), ball(11)])
    result = attribution.attribute(reward, x, b, r, permutations=1, ig_steps=4, batch=2)
    assert result['shapley'].shape == (2, len(r.names)) and result['ig'].shape == (2, len(r.names))
    assert np.isfinite(result['ig']).all() and np.abs(result['ig']).sum() > 0       # Gradients reach the slab.
    assert result['shapley_completeness'].max() < 1e-3


def face_bank(resolution=40):
    """The default `sigma` reward (level sets and the level-10 mesh's statistics; seeded heads, features standardised
    over the slabs) and four procedural faces whose noses differ, against the mean slab (attribute --bank's default)."""
    from eg3d_rlhf.rewards import SigmaReward
    from tests.helpers.banks import face_volume
    grid = geometry.slab_grid(resolution)
    x = torch.from_numpy(np.stack([face_volume(grid, nose) for nose in (0.0, 0.03, 0.05, 0.08)]))
    torch.manual_seed(0)
    model = SigmaReward()
    assert model.trunk == 'levels' and model.mesh_stats.levels == [10.0]                # The default reward.
    spec = SigmaReward.default_input(geometry.slab_description(resolution), model.config)
    with torch.no_grad():
        f = model.trunk_features(spec.prepare(x))
    model.set_feature_scale(f.mean(0), f.std(0))
    b, _ = attribution.reference_baselines(x, 'mean')
    return Reward(model, spec, 'sigma'), x, b


def counting(reward):
    """reward with its model's score() counting the slabs it scores (the returned list's one entry)."""
    scored, score = [0], reward.model.score
    def counted(x):
        scored[0] += len(x)
        return score(x)
    reward.model.score = counted
    return scored


@pytest.mark.parametrize('source', ['two', 'template'])
def test_the_fast_path_gives_the_reference_paths_attributions(source):
    reward, x, b = face_bank()
    r = load_regions('template', reward.grid)
    if source == 'two':
        r = regions.Regions(np.where(r.mask('nose'), 0, 1), ['nose', 'other'], 'nose and the rest')
    kw = dict(permutations=5, ig_steps=6, batch=3, seed=4)
    scored = counting(reward)
    slow = attribution.attribute(reward, x, b, r, fast=False, **kw)
    slow_slabs, scored[0] = scored[0], 0
    fast = attribution.attribute(reward, x, b, r, **kw)
    scale = np.abs(slow['change']).max()
    assert scale > 1e-3 and np.abs(slow['shapley']).sum() > 0 and np.abs(slow['ig']).sum() > 0
    # The same random orders and the same float32 sums: Shapley agrees to float32 rounding of scores taken in other
    # batches; IG is captum's on the same points in smaller passes, its delta from the scores already taken.
    assert np.abs(fast['change'] - slow['change']).max() <= 1e-6 * scale
    assert np.abs(fast['shapley'] - slow['shapley']).max() <= 1e-5 * scale
    assert np.abs(fast['ig'] - slow['ig']).max() <= 1e-5 * scale
    assert np.abs(fast['ig_delta'] - slow['ig_delta']).max() <= 1e-5 * scale
    assert fast['shapley_completeness'].max() < 1e-4
    # The reference scores every permutation's every step; the fast path each coalition once, and no endpoint twice.
    n, k = len(x), len(r.names)
    assert slow_slabs == n * (2 + 2 + kw['permutations'] * k + 1 + kw['ig_steps'] + 2)
    shapley_slabs = scored[0] - n * (2 + kw['ig_steps'])
    assert shapley_slabs == (2 * n if k == 2 else shapley_slabs) and 0 < shapley_slabs <= n * kw['permutations'] * (k - 1)


def test_shapley_values_score_each_coalition_once():
    calls = []
    f = lambda s: s[0] * s[1] + s[2] + 2 * s[0] * s[1] * s[2]       # Not additive: a player's worth depends on who came first.
    def score(v):
        calls.append(len(v))
        s = v.flatten(1)
        return f([s[:, 0], s[:, 1], s[:, 2]])
    mask = torch.tensor([0, 1, 2, 2]).view(1, 1, 4)                        # Voxel 3 belongs to player 2 and is not read.
    x, b = torch.tensor([[[[1.0, 2.0, 3.0, 7.0]]], [[[2.0, 1.0, 1.0, 5.0]]]]), torch.zeros(2, 1, 1, 4)
    torch.manual_seed(0)
    orders = [torch.randperm(3).tolist() for _ in range(40)]
    assert len(set(map(tuple, orders))) == 6                                    # Every prefix of 3 players occurs.
    torch.manual_seed(0)
    sv = attribution.shapley_values(score, x, b, mask, 40, batch=4)
    assert sum(calls) == 2 * 8 and max(calls) <= 4             # The 8 coalitions once per sample, 4 slabs a pass at most.
    expect = []                                                 # The mean over the orders of each player's marginal worth.
    for v in ((1.0, 2.0, 3.0), (2.0, 1.0, 1.0)):
        worth = lambda S: f([v[i] if i in S else 0.0 for i in range(3)])
        expect.append([np.mean([worth(set(o[:o.index(p) + 1])) - worth(set(o[:o.index(p)])) for o in orders])
            for p in range(3)])
    assert sv.numpy() == pytest.approx(np.array(expect), abs=1e-5)
    assert sv.sum(1).numpy() == pytest.approx([f([1.0, 2.0, 3.0]), f([2.0, 1.0, 1.0])], abs=1e-5)


def test_ig_coloured_mesh(tmp_path):
    grid = geometry.slab_grid(32)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing='ij'), -1)
    ball = 30 - 2 * np.linalg.norm(idx - np.asarray(grid.shape) / 2, axis=-1)
    ig = np.zeros(grid.shape)
    ig[grid.shape[0] // 2:] = 1.0                                # Only the +x half raised the reward.
    n = attribution.coloured_mesh(ball, ig, grid, str(tmp_path / 'ig.ply'))
    raw = (tmp_path / 'ig.ply').read_bytes()
    header, body = raw.split(b'end_header\n')
    assert b'property uchar red' in header and f'element vertex {n}'.encode() in header
    rows = np.frombuffer(body[:n * 15], dtype=[('xyz', '<f4', (3,)), ('rgb', 'u1', (3,))])
    centre = grid.index_to_world(np.asarray(grid.shape) / 2)[0]
    plus = rows['xyz'][:, 0] > centre + grid.voxel_size
    assert (rows['rgb'][plus] == [214, 39, 40]).all() and (rows['rgb'][rows['xyz'][:, 0] < centre - grid.voxel_size] == 255).all()

#----------------------------------------------------------------------------
# Embedding.

def test_separation_and_reward_order():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 12))
    b = rng.normal(size=(30, 12)) + 6
    groups = np.repeat([0, 1], 30)
    both = embedding.embed(np.concatenate([a, b]), pca_components=5, n_neighbors=10)
    assert both['pca'].shape == (60, 5) and both['umap'].shape == (60, 2)
    assert embedding.knn_separation(both['umap'], groups) == 1.0
    mixed = embedding.embed(np.concatenate([a, rng.normal(size=(30, 12))]), pca_components=5, n_neighbors=10)
    assert embedding.knn_separation(mixed['umap'], groups) < 0.75
    # A feature that is mostly the reward: the first principal component orders the samples by reward.
    reward = rng.normal(size=60)
    feats = np.concatenate([reward[:, None] * 5 + rng.normal(size=(60, 1)) * 0.1, rng.normal(size=(60, 4)) * 0.1], 1)
    order = embedding.reward_order(embedding.embed(feats, pca_components=3, n_neighbors=10), reward)
    assert abs(order['spearman_pc1']) > 0.95 and abs(order['spearman_umap1']) > 0.6
    with pytest.raises(ValueError, match='at least 4 samples'):
        embedding.embed(feats[:3])


def test_umap_maps_are_turned_to_their_principal_axes():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 2)) * [0.3, 3.0] @ np.array([[0.6, 0.8], [-0.8, 0.6]]) + 5   # Long axis not on x.
    turned = embedding.principal_axes(points)
    assert np.allclose(turned.mean(axis=0), 0) and turned[:, 0].var() > 50 * turned[:, 1].var()
    distances = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)
    assert np.allclose(distances(turned), distances(points))
    assert all(turned[np.abs(turned[:, k]).argmax(), k] > 0 for k in range(2))
    assert np.allclose(embedding.principal_axes(-points), turned)               # A mirrored map reads the same.

#----------------------------------------------------------------------------
# The tools.

def run(tool, args):
    return CliRunner().invoke(tool.main, [str(a) for a in args])


def test_attribute_change_mode_writes_the_report(tiny_pair, tmp_path):
    original, tuned, reward = tiny_pair
    out = tmp_path / 'att'
    result = run(attribute, ['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-3', '--regions', 'published', '--permutations', 2, '--ig-steps', 4, '--meshes', 1, '--level', 0,
        '--batch', 2, '--seed', 1, '--outdir', out, '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['mode'] == 'change' and report['samples'] == 4 and report['ids'][:2] == ['seed000000', 'seed000001']
    assert set(report['regions']) == set(regions.published((1, 1, 1)).names)
    assert set(report['regions']['nose']) >= {'shapley', 'ig', 'ig_abs', 'voxels'}
    total = sum(v['shapley'] for v in report['regions'].values())
    assert total == pytest.approx(report['change']['mean'], rel=1e-3, abs=1e-5)
    assert report['completeness']['shapley_max'] < 1e-3 and report['permutations'] == 2
    for name in ('report.html', 'attribution.png', 'regions.png'):
        assert (out / name).exists()
    assert report['meshes'] in ([], ['ig-seed000000.ply']) and len(list(out.glob('*.ply'))) == len(report['meshes'])
    dry = run(attribute, ['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--outdir', tmp_path / 'dry', '--dry-run'])
    assert dry.exit_code == 0 and 'would explain' in dry.output and not (tmp_path / 'dry').exists()


def test_attribute_bank_mode_and_user_regions(tiny_pair, tmp_path):
    from eg3d_rlhf.data.bank import BankWriter
    from eg3d_rlhf.cli import load_generator
    original, _, reward = tiny_pair
    G = load_generator(original, torch.device('cpu'))
    writer = BankWriter(str(tmp_path / 'bank'), G, resolution=24, dtype='float32', preview_res=16)
    writer.open()
    for seed in range(4):
        writer.write(seed)
    grid = geometry.slab_grid(24)
    regions.published(grid.shape).save(str(tmp_path / 'mine'))
    for reference in ('mean', 'empty'):
        out = tmp_path / reference
        result = run(attribute, ['--bank', tmp_path / 'bank', '--reference', reference, '--limit', 2,
            '--reward-model', reward, '--regions', tmp_path / 'mine.npy', '--region-names', tmp_path / 'mine.json',
            '--permutations', 1, '--ig-steps', 2, '--meshes', 0, '--outdir', out])
        assert result.exit_code == 0, result.output
        report = json.loads((out / 'report.json').read_text())
        assert report['reference'] == reference and report['samples'] == 2 and report['region_source'] == 'mine.npy'
    np.save(tmp_path / 'marks.npy', np.zeros((98, 3)))
    result = run(attribute, ['--bank', tmp_path / 'bank', '--reward-model', reward, '--regions', 'landmarks',
        '--landmarks', tmp_path / 'marks.npy', '--landmark-margin', 0.1, '--outdir', tmp_path / 'lm', '--dry-run'])
    assert result.exit_code == 0 and "regions (landmarks): {'brow'" in result.output, result.output
    result = run(embed, ['--bank', tmp_path / 'bank', '--reward-model', reward, '--pca', 2, '--neighbors', 2,
        '--outdir', tmp_path / 'emb'])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / 'emb' / 'report.json').read_text())
    assert report['samples'] == 4 and 'separation' not in report


@pytest.mark.parametrize('args, message', [
    ([], 'give --original and --tuned (change mode) or --bank'),
    (['--original', 'bundled'], 'change mode needs both --original and --tuned'),
    (['--bank', 'b', '--original', 'bundled'], 'give --original and --tuned (change mode) or --bank'),
    (['--original', 'bundled', '--tuned', 'bundled', '--regions', 'landmarks'], '--regions: --regions=landmarks needs --landmarks'),
    (['--original', 'bundled', '--tuned', 'bundled', '--regions', 'nothing.npy'], 'a label volume needs its names'),
    (['--original', 'bundled', '--tuned', 'bundled', '--regions', 'nothing.npy', '--region-names', 'n.json'],
        'nothing.npy: cannot read a .npy label volume'),
    (['--original', 'bundled', '--tuned', 'x.pkl'], 'x.pkl: no such network file'),
    (['--bank', 'nothing'], 'nothing: no such bank folder'),
    (['--original', 'bundled', '--tuned', 'bundled', '--permutations', 0], "Invalid value for '--permutations'"),
    (['--original', 'bundled', '--tuned', 'bundled', '--ig-steps', 1], "Invalid value for '--ig-steps'"),
    (['--original', 'bundled', '--tuned', 'bundled', '--landmark-margin', -1], "Invalid value for '--landmark-margin'"),
])
def test_attribute_refuses_bad_flags_in_one_line(tiny_pair, args, message, tmp_path):
    result = run(attribute, ['--reward-model', tiny_pair[2], '--outdir', tmp_path / 'o', *args])
    assert result.exit_code != 0 and message in result.output, result.output


def test_embed_tool(tiny_pair, tmp_path):
    original, tuned, reward = tiny_pair
    out = tmp_path / 'emb'
    result = run(embed, ['--original', original, '--tuned', tuned, '--trust-pickle', '--reward-model', reward,
        '--seeds', '0-7', '--pca', 4, '--neighbors', 4, '--min-dist', 0.2, '--k', 3, '--seed', 2, '--batch', 4,
        '--outdir', out, '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'report.json').read_text())
    assert report['samples'] == 8 and report['pca_components'] == 4 and report['n_neighbors'] == 4
    assert 0 <= report['separation']['knn_umap'] <= 1 and report['separation']['k'] == 3
    assert -1 <= report['by_reward']['spearman_umap1'] <= 1
    assert (out / 'umap_models.png').exists() and (out / 'umap_reward.png').exists()
    for args, message in [([], 'give --original (optionally with --tuned) or --bank'),
            (['--bank', 'b', '--tuned', tuned], '--tuned needs --original'),
            (['--original', original, '--trust-pickle', '--seeds', '0-2'], 'at least 4 samples'),
            (['--original', original, '--min-dist', 2], "Invalid value for '--min-dist'")]:
        bad = run(embed, ['--reward-model', reward, '--outdir', tmp_path / 'bad', *args])
        assert bad.exit_code != 0 and message in bad.output, (args, bad.output)
    dry = run(embed, ['--original', original, '--trust-pickle', '--reward-model', reward, '--outdir', tmp_path / 'd',
        '--draw-batch', 1, '--dry-run'])
    assert dry.exit_code == 0 and 'would embed' in dry.output and not (tmp_path / 'd').exists()


def test_flow_conditions_reach_both_tools(tmp_path):
    from eg3d_rlhf.synthetic.demo import FLOW_REWARD as reward
    result = run(attribute, ['--original', 'bundled-flow', '--tuned', 'bundled-flow', '--reward-model', reward,
        '--seeds', '0-2', '--conditions', '1,3', '--draw-batch', 4, '--outdir', tmp_path / 'a', '--dry-run'])
    assert result.exit_code == 0 and 'on 6 samples' in result.output, result.output
    result = run(embed, ['--original', 'bundled-flow', '--reward-model', reward, '--seeds', '0-4', '--conditions', '2',
        '--outdir', tmp_path / 'e', '--dry-run'])
    assert result.exit_code == 0 and 'of 5 samples' in result.output, result.output
    result = run(embed, ['--original', 'bundled-flow', '--reward-model', reward, '--conditions', '9',
        '--outdir', tmp_path / 'e', '--dry-run'])
    assert result.exit_code != 0 and 'condition' in result.output

#----------------------------------------------------------------------------
# Array files: a region volume (--regions) that is an .npz, or whose header claims more than the file holds.

@pytest.mark.parametrize('case', list(NPY))
def test_a_region_volume_that_is_no_whole_npy_is_refused(scored, tmp_path, case):
    write_npy(tmp_path / 'regions.npy', case)
    (tmp_path / 'names.json').write_text('["nose"]')
    result = run_tool(attribute, scored['bank'], scored['reward'], tmp_path / 'out', '--regions',
        str(tmp_path / 'regions.npy'), '--region-names', str(tmp_path / 'names.json'), '--dry-run')
    refused_in_one_line(result, f'--regions: {tmp_path / "regions.npy"}: {NPY[case]}')
