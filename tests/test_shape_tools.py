"""Mesh components and closedness, shaded surface previews, the synthetic shape prior and tools/shape_report.py."""

import json
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch

from eg3d_rlhf.analysis import shapes
from eg3d_rlhf.geometry import mesh, preview
from eg3d_rlhf.geometry.sigma import CubeGrid
from eg3d_rlhf.synthetic import shape_prior, world
from tests.helpers.cli import invoke
from tests.helpers.eg3d import RENDERING_KWARGS, tiny_generator
from tools import shape_report
from training.camera_utils import orbit_camera_label

#----------------------------------------------------------------------------
# Volumes with known surfaces.

def balls(grid, balls_):
    """Raw-sigma-like volume on `grid`: 20 inside any of the (centre, radius) balls, 0 outside; level 10 between."""
    x = torch.linspace(grid.origin, -grid.origin, grid.resolution)
    X, Y, Z = torch.meshgrid(x, x, x, indexing='ij')
    sdf = torch.full_like(X, float('inf'))
    for (cx, cy, cz), r in balls_:
        sdf = torch.minimum(sdf, ((X - cx) ** 2 + (Y - cy) ** 2 + (Z - cz) ** 2).sqrt() - r)
    return (20 * torch.sigmoid(-sdf / 0.01)).numpy()


def test_component_fractions_are_area_shares_largest_first():
    grid = CubeGrid(64)
    verts, faces = mesh.extract_mesh(balls(grid, [((0, 0, 0), 0.25), ((0.33, 0.33, 0.33), 0.08)]), grid)
    fractions = mesh.component_fractions(verts, faces)
    assert len(fractions) == 2
    assert fractions.sum() == pytest.approx(1)
    assert fractions[1] == pytest.approx(0.08 ** 2 / (0.25 ** 2 + 0.08 ** 2), rel=0.05)   # Sphere areas go as r^2.
    assert mesh.component_fractions(verts, faces[:0]).shape == (0,)


def test_closed_surfaces_and_open_ones():
    grid = CubeGrid(32)
    volume = balls(grid, [((0, 0, 0), 0.3)])
    verts, faces = mesh.extract_mesh(volume, grid)
    assert mesh.is_closed(faces)
    assert not mesh.is_closed(faces[1:])                     # One triangle missing leaves a hole.
    cut = volume.copy()
    cut[:, :, 16:] = 20                                       # Filled up to the box face: the surface ends there.
    assert not mesh.is_closed(mesh.extract_mesh(cut, grid)[1])
    assert not mesh.is_closed(faces[:0])


def test_volume_shape_uses_the_mesh_conventions_border():
    """A small ball at x = +0.35 lies inside the published x border (the outer 60/256) but not inside gen_samples'
    (30/256): ours meshes it, published sees nothing there; a central ball is one closed head in both."""
    grid = CubeGrid(64)
    side = balls(grid, [((0.35, 0, 0), 0.08)])
    assert shapes.volume_shape(side, grid)[1]['faces'] > 0
    volume, stats = shapes.volume_shape(side, grid, convention='published')
    assert stats['faces'] == 0 and stats['components'] == 0 and (volume[-15:] == -1000).all()
    for convention in ('ours', 'published'):
        _, stats = shapes.volume_shape(balls(grid, [((0, 0, 0.05), 0.2)]), grid, convention=convention)
        assert stats['components'] == 1 and stats['closed'] and stats['largest_fraction'] == 1

#----------------------------------------------------------------------------

def test_preview_of_a_ball_is_a_lit_disc_of_the_right_size():
    grid = CubeGrid(48)
    r = 0.25
    picture = preview.render_surface(balls(grid, [((0, 0, 0), r)]), grid, resolution=96)
    assert picture.shape == (96, 96) and picture.dtype == np.float32
    covered = picture < preview.BACKGROUND
    assert covered.mean() == pytest.approx(math.pi * r ** 2 / 1.0 ** 2, rel=0.06)   # The picture spans the 1-wide box.
    assert picture[0, 0] == preview.BACKGROUND
    assert picture[48, 48] > picture[48, 48 + int(0.9 * r * 96)]                      # Facing the light vs grazing.
    assert picture[covered].min() >= preview.AMBIENT - 1e-6


def test_preview_views_see_an_off_centre_ball_where_it_is():
    grid = CubeGrid(32)
    pictures = preview.render_views(balls(grid, [((0.25, 0, 0), 0.15)]), grid, resolution=64)
    assert set(pictures) == {'front', 'three_quarter', 'profile'}
    column = lambda p: np.nonzero((p < 255).any(axis=0))[0].mean()
    assert column(pictures['front']) == pytest.approx(32 + 0.25 * 64, abs=2)     # x = +0.25 is right of centre.
    assert column(pictures['profile']) == pytest.approx(32, abs=2)                # Seen from +x it is centred.


def test_preview_skipping_empty_space_draws_every_step_pictures_bit_for_bit(monkeypatch):
    grid = CubeGrid(24)
    rng = np.random.default_rng(0)
    lumpy = balls(grid, [((0.1, -0.05, 0.2), 0.2), ((-0.2, 0.15, -0.1), 0.12)]).astype(np.float32)
    lumpy += rng.normal(0, 3, lumpy.shape).astype(np.float32)                       # Specks near the level too.
    edge = np.full(grid.shape, -10.0, np.float32)
    edge[:, :, -1] = 30.0                                                               # Inside right on the box face.
    edge[0, 0, 0] = 10.0                                                            # Exactly the level, in a corner.
    edge[4:6, 18:20, 3:5] = 11.0                                                    # Just above it, far from the rest.
    broken = lumpy.copy()
    broken[3, 4, 5] = np.nan
    volumes = dict(lumpy=lumpy, edge=edge, broken=broken, empty=np.full(grid.shape, -10.0, np.float32),
        full=np.full(grid.shape, 30.0, np.float32))
    taken = []
    march = preview._march
    monkeypatch.setattr(preview, '_march', lambda field, o, forward, t, k: taken.append(k.numel()) or march(field, o,
        forward, t, k))
    for name, volume in volumes.items():
        for yaw, pitch in ((0, 0), (45, 0), (90, 0), (200, 30), (13, -60)):
            taken.clear()
            with preview.every_step():
                every = preview.render_surface(volume, grid, yaw=yaw, pitch=pitch, resolution=40)
            dense = sum(taken)
            taken.clear()
            skipping = preview.render_surface(volume, grid, yaw=yaw, pitch=pitch, resolution=40)
            assert np.array_equal(every, skipping), (name, yaw, pitch)
            assert dense >= 40 * 40 * 48                                                # Every step of every ray.
            assert sum(taken) == 0 if name == 'empty' else sum(taken) < dense / 2 or name in ('broken', 'edge')
            assert (every < preview.BACKGROUND).any() != (name == 'empty')

#----------------------------------------------------------------------------
# The shape prior on a tiny generator.

def test_target_sigma_is_level_10_on_the_surface_and_flat_away_from_it():
    head = world.sample(shape_prior.PRIOR_SEED, 0)
    points = torch.rand([1, 4096, 3]) - 0.5
    sdf = world.sdf([head], points)[0]
    target = shape_prior.target_sigma([head], points)[0]
    assert torch.all((target > 10) == (sdf < 0))
    assert torch.allclose(target[sdf > 0.1], torch.tensor(shape_prior.SIGMA_OUT), atol=1e-2)
    assert torch.allclose(target[sdf < -0.1], torch.tensor(shape_prior.SIGMA_IN), atol=1e-2)


def test_fit_shape_prior_moves_sigma_toward_the_heads_and_leaves_the_sr_head():
    G = tiny_generator()
    sr_before = {k: v.clone() for k, v in G.superresolution.state_dict().items()}
    labels = orbit_camera_label(RENDERING_KWARGS).numpy()
    losses = shape_prior.fit_shape_prior(G, labels, steps=40, batch=2, num_heads=4, num_points=1024, lr=0.01, progress=False)
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert all(torch.equal(v, G.superresolution.state_dict()[k]) for k, v in sr_before.items())
    assert not any(p.requires_grad for p in G.parameters())
    # Inside a fresh prior head the fitted sigma is now higher than far outside it.
    head = world.sample(shape_prior.PRIOR_SEED + 1, 0)
    points = torch.rand([1, 4096, 3]) - 0.5
    sdf = world.sdf([head], points)[0]
    with torch.no_grad():
        sigma = G.sample(points, torch.zeros_like(points), torch.randn([1, 16]), torch.from_numpy(labels))['sigma'][0, :, 0]
    assert sigma[sdf < -0.05].mean() > sigma[sdf > 0.1].mean() + 10


def test_fit_shape_prior_colour_term_pulls_surface_features_to_albedo(monkeypatch):
    labels = orbit_camera_label(RENDERING_KWARGS).numpy()
    points, _, albedo = shape_prior.point_bank(num_heads=2, num_points=1024, half=0.5)

    def colour_error(weight):
        monkeypatch.setattr(shape_prior, 'COLOUR_WEIGHT', weight)
        G = tiny_generator()
        shape_prior.fit_shape_prior(G, labels, steps=30, batch=2, num_heads=2, num_points=1024, lr=0.01, progress=False)
        with torch.no_grad():
            rgb = G.sample(points, torch.zeros_like(points), torch.randn([2, 16]), torch.from_numpy(labels).expand(2, -1))['rgb']
        return (rgb[:, 1024:, :3] - albedo).square().mean()

    assert colour_error(shape_prior.COLOUR_WEIGHT) < 0.5 * colour_error(0.0)


def test_point_bank_targets_sigma_everywhere_and_albedo_near_the_surface():
    points, sigma, colour = shape_prior.point_bank(num_heads=2, num_points=256, half=0.5, seed=3)
    assert points.shape == (2, 512, 3) and sigma.shape == (2, 512) and colour.shape == (2, 256, 3)
    assert points.abs().max() <= 0.5
    head = world.sample(shape_prior.PRIOR_SEED, 1)
    assert torch.allclose(sigma[1], shape_prior.target_sigma([head], points[1:2])[0])
    assert world.sdf([head], points[1:2, 256:])[0].abs().max() < 0.04      # The second half hugs the surface.
    assert torch.allclose(colour[1], world.albedo([head], points[1:2, 256:])[0])
    assert 0 <= colour.min() and colour.max() <= 1 and colour.std() > 0.01

#----------------------------------------------------------------------------
# tools/shape_report.py on a tiny pickle.

@pytest.fixture(scope='module')
def network(tiny_network_pkl):
    return tiny_network_pkl


def run(args):
    return invoke(shape_report.main, args)


def test_shape_report_writes_report_previews_and_fakes(network, tmp_path):
    outdir = tmp_path / 'report'
    result = run(['--network', network, '--trust-pickle', '--seeds', '0-2', '--res', '24', '--trunc', '1',
        '--level', '0', '--threshold', '0.5', '--previews', '2', '--device', 'cpu', '--outdir', str(outdir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((outdir / 'report.json').read_text())
    assert [s['seed'] for s in report['seeds']] == [0, 1, 2] and report['mesh_convention'] == 'ours'
    assert report['level'] == 0 and report['threshold'] == 0.5 and report['truncation_psi'] == 1 and report['resolution'] == 24
    single = [s['largest_fraction'] >= 0.5 for s in report['seeds']]
    assert report['single_head_fraction'] == pytest.approx(np.mean(single))
    assert f'{sum(single)}/3 samples' in result.output
    assert all(s['components'] >= 1 for s in report['seeds'])    # Level 0 of a random init cuts through the box.
    with PIL.Image.open(outdir / 'previews.png') as im:
        assert im.size == (3 * 128, 2 * 128)
    with PIL.Image.open(outdir / 'fakes.png') as im:
        assert im.size == (8 * 64, 64)


def test_shape_report_published_convention(network, tmp_path):
    args = ['--network', network, '--trust-pickle', '--seeds', '1', '--res', '24', '--trunc', '1', '--level', '0',
        '--previews', '1', '--device', 'cpu']
    reports = {}
    for convention in ('ours', 'published'):
        result = run(args + ['--mesh-convention', convention, '--outdir', str(tmp_path / convention)])
        assert result.exit_code == 0, result.output + repr(result.exception)
        reports[convention] = json.loads((tmp_path / convention / 'report.json').read_text())
    assert reports['published']['mesh_convention'] == 'published'
    assert reports['published']['seeds'][0]['faces'] != reports['ours']['seeds'][0]['faces']   # Other border, other mesh.
    assert run(args + ['--mesh-convention', 'paper', '--outdir', str(tmp_path / 'x')]).exit_code == 2


def test_shape_report_dry_run_and_refusals(network, tmp_path):
    result = run(['--network', network, '--trust-pickle', '--outdir', str(tmp_path / 'x'), '--dry-run'])
    assert result.exit_code == 0 and 'would load' in result.output and not os.path.exists(tmp_path / 'x')
    result = run(['--network', network, '--outdir', str(tmp_path / 'x')])
    assert result.exit_code != 0 and 'pass --trust-pickle' in result.output
    result = run(['--network', str(tmp_path / 'missing.pkl'), '--trust-pickle', '--outdir', str(tmp_path / 'x')])
    assert result.exit_code != 0 and 'missing.pkl' in result.output
    result = run(['--network', network, '--trust-pickle', '--seeds', '5-2', '--outdir', str(tmp_path / 'x')])
    assert result.exit_code != 0 and 'empty range' in result.output

#----------------------------------------------------------------------------
