"""Tests of the synthetic-heads world: true SDF, defects, camera projection, dataset zip and the CLI."""

import dataclasses
import io
import json
import math
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
import scipy.ndimage
import torch
from click.testing import CliRunner

from eg3d_rlhf.synthetic import cameras, dataset_writer, defects, heads, render, sdf_ops, world
from eg3d_rlhf.synthetic.sdf_ops import V
from tools import make_dataset
FFHQ_INTRINSICS = [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]


pytestmark = pytest.mark.usefixtures('one_thread')   # Tiny tensors: one thread is fastest (tests.conftest).


def sdf_at(sample, points):
    return world.sdf([sample], torch.as_tensor(np.asarray(points), dtype=torch.float32).reshape(-1, 3))[0].numpy()


def numeric_gradient_norm(sample, points, h=1e-3):
    grad = [(sdf_at(sample, points + e) - sdf_at(sample, points - e)) / (2 * h) for e in np.eye(3) * h]
    return np.linalg.norm(np.stack(grad, axis=-1), axis=-1)


def surface_points(sample, count, seed=0):
    """Points on the surface (with normals) along random directions from the head centre."""
    rng = np.random.default_rng(seed)
    found = [world.find_surface(sample, rng.standard_normal(3)) for _ in range(count)]
    return np.array([p for p, _ in found]), np.array([n for _, n in found])

#----------------------------------------------------------------------------
# Primitives against independent maths.

def test_round_cone_is_distance_to_hull_of_two_spheres():
    # The convex hull of balls (a, ra) and (b, rb) is the union of balls (lerp(a, b, s), lerp(ra, rb, s)),
    # so outside it the distance is min_s |p - c(s)| - r(s).
    rng = np.random.default_rng(1)
    a, b, ra, rb = np.array([0.1, -0.2, 0.05]), np.array([-0.15, 0.3, 0.2]), 0.12, 0.04
    p = rng.uniform(-0.6, 0.6, [500, 3])
    s = np.linspace(0, 1, 4001)[:, None, None]
    centres, radii = a + s * (b - a), ra + s[..., 0] * (rb - ra)
    brute = (np.linalg.norm(p[None] - centres, axis=-1) - radii).min(axis=0)
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    ours = sdf_ops.round_cone(V.of(t(p)), V(*t(a)), V(*t(b)), ra, rb).numpy()
    outside = brute > 0
    assert outside.sum() > 300
    np.testing.assert_allclose(ours[outside], brute[outside], atol=1e-5)
    assert np.all((ours < 0) == (brute < 0))


def test_ellipsoid_zero_on_surface_and_sign():
    radii = np.array([0.3, 0.2, 0.1])
    u = np.random.default_rng(2).standard_normal([100, 3])
    on = u / np.linalg.norm(u, axis=1, keepdims=True) * radii
    t = lambda x: V.of(torch.tensor(x, dtype=torch.float64))
    d = lambda p: sdf_ops.ellipsoid(t(p), 0.0, V(*radii)).numpy()
    np.testing.assert_allclose(d(on), 0, atol=1e-12)
    assert np.all(d(on * 0.9) < 0) and np.all(d(on * 1.1) > 0)

#----------------------------------------------------------------------------
# The true SDF of clean heads.

def test_sdf_sign_and_eikonal():
    sample = world.sample(0, 3)
    h = sample.head
    centre = np.array(h.origin) + h.scale * np.array([0.0, 0.05, 0.0])
    assert sdf_at(sample, centre)[0] < -0.1
    assert np.all(sdf_at(sample, [[0, 0, 2.7], [0.6, 0.6, 0.6], [-0.5, 0.5, -0.5]]) > 0.05)
    assert sdf_at(sample, [0, -0.49, -0.05])[0] > 0               # The neck is cut inside the box.

    points, normals = surface_points(sample, 150)
    assert np.abs(sdf_at(sample, points)).max() < 1e-4
    offsets = np.random.default_rng(3).uniform(-0.01, 0.01, [len(points), 1])
    g = numeric_gradient_norm(sample, points + offsets * normals)
    assert abs(np.median(g) - 1) < 0.01
    assert np.mean(np.abs(g - 1) < 0.2) > 0.85                    # Smooth unions lower it only in blends.


def test_clean_head_is_one_solid_without_cavities():
    # One inside component and one outside component on a grid: no floaters, no hollow pockets (which an
    # ellipsoid bound that vanishes at its centre would create), as the mesh-based checks downstream need.
    sample = world.sample(6, 0)
    grid = np.stack(np.meshgrid(*[np.linspace(-0.5, 0.5, 64)] * 3, indexing='ij'), -1).reshape(-1, 3)
    inside = (sdf_at(sample, grid) < 0).reshape(64, 64, 64)
    assert scipy.ndimage.label(inside)[1] == 1 and scipy.ndimage.label(~inside)[1] == 1


def test_clean_heads_symmetric_and_inside_box():
    grid = np.stack(np.meshgrid(*[np.linspace(-0.55, 0.55, 34)] * 3, indexing='ij'), -1).reshape(-1, 3)
    for index in range(8):
        sample = world.sample(5, index)
        d = sdf_at(sample, grid)
        np.testing.assert_allclose(d, sdf_at(sample, grid * [-1, 1, 1]), atol=1e-6)
        inside = d < 0
        assert inside.mean() > 0.04 and np.abs(grid[inside]).max() < 0.5


def test_density_level_10_is_the_surface():
    sample = world.sample(0, 1)
    points, normals = surface_points(sample, 20)
    rho = lambda p: world.density([sample], torch.tensor(p, dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(rho(points), 10, atol=0.05)
    inside, outside = rho(points - 0.03 * normals), rho(points + 0.03 * normals)
    assert np.median(inside) > 19.9 and inside.min() > 15 and np.median(outside) < 0.1 and outside.max() < 1


def test_sample_deterministic_and_round_trips():
    a, b = world.sample(7, 11, 0.5), world.sample(7, 11, 0.5)
    assert a == b and a != world.sample(8, 11, 0.5)
    assert world.SyntheticHead.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    # Changing the defect rate keeps head and camera.
    c = world.sample(7, 11, 0.0)
    assert (c.head, c.yaw, c.pitch) == (a.head, a.yaw, a.pitch)


def test_defect_rate_and_kinds():
    assert not any(world.sample(1, i, 0.0).defects for i in range(50))
    assert all(world.sample(1, i, 1.0).defects for i in range(50))
    samples = [world.sample(2, i, 0.3) for i in range(300)]
    assert abs(np.mean([bool(s.defects) for s in samples]) - 0.3) < 0.08
    kinds = {k for s in samples for k in s.defects}
    assert kinds == set(defects.KINDS)

#----------------------------------------------------------------------------
# Each defect changes the SDF where it should, and nowhere else.

def with_defect(kind, seed=0):
    clean = world.sample(0, 2)
    rng = np.random.default_rng(seed)
    params = defects.sample_defect(kind, rng, lambda d: world.find_surface(clean, d), clean.head)
    return clean, dataclasses.replace(clean, defects={kind: params}), params


def near_segment(p, a, b):
    a, b = np.asarray(a), np.asarray(b)
    s = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(p - (a + s[:, None] * (b - a)), axis=1)


PROBES = np.random.default_rng(5).uniform(-0.5, 0.5, [20000, 3])


@pytest.mark.parametrize('seed', [0, 1])
def test_dent_and_hole_remove_material_locally(seed):
    clean, dented, dent = with_defect('dent', seed)
    far = np.linalg.norm(PROBES - dent.centre, axis=1) - dent.radius > np.abs(sdf_at(clean, PROBES)) + 0.01
    assert far.mean() > 0.9
    np.testing.assert_array_equal(sdf_at(dented, PROBES[far]), sdf_at(clean, PROBES[far]))
    ball = np.asarray(dent.centre) + np.random.default_rng(6).uniform(-1, 1, [3000, 3]) * dent.radius
    removed = (sdf_at(clean, ball) < -0.002) & (sdf_at(dented, ball) > 0.002)
    assert removed.sum() > 20

    clean, holed, hole = with_defect('hole', seed)
    far = near_segment(PROBES, hole.entry, hole.end) - hole.radius > np.abs(sdf_at(clean, PROBES)) + 1e-6
    assert far.mean() > 0.9
    np.testing.assert_array_equal(sdf_at(holed, PROBES[far]), sdf_at(clean, PROBES[far]))
    axis = np.linspace(hole.entry, hole.end, 200)
    assert (sdf_at(clean, axis) < -0.02).any()
    assert np.all(sdf_at(holed, axis) >= hole.radius * 0.99)


@pytest.mark.parametrize('kind', ['spike', 'sharp_nose'])
def test_spikes_add_material_at_their_tips(kind):
    clean, spiky, spike = with_defect(kind)
    near_tip = np.asarray(spike.tip) + 0.1 * (np.asarray(spike.base) - np.asarray(spike.tip))
    assert sdf_at(clean, near_tip)[0] > 0.02 and sdf_at(spiky, near_tip)[0] < 0
    far = near_segment(PROBES, spike.base, spike.tip) - spike.radius > np.abs(sdf_at(clean, PROBES)) + 0.004
    assert far.mean() > 0.9
    np.testing.assert_array_equal(sdf_at(spiky, PROBES[far]), sdf_at(clean, PROBES[far]))


def test_floater_is_detached():
    clean, floating, blob = with_defect('floater')
    centre, head_centre = np.asarray(blob.centre), np.array(clean.head.origin)
    assert sdf_at(clean, centre)[0] > 0.03 and sdf_at(floating, centre)[0] < 0
    line = sdf_at(floating, np.linspace(centre, head_centre, 400))
    first_out = np.argmax(line > 0)
    assert first_out > 0 and (line[first_out:] > 0.01).any() and line[-1] < 0   # Out of the blob, gap, into the head.


def test_asymmetry_breaks_mirror_symmetry():
    clean, skewed, asym = with_defect('asymmetry')
    points, _ = surface_points(clean, 100)
    mirror = lambda s, p: np.abs(sdf_at(s, p) - sdf_at(s, p * [-1, 1, 1]))
    assert mirror(clean, points).max() < 1e-6
    assert mirror(skewed, points).max() > 0.5 * np.linalg.norm(asym.shift)
    left = PROBES[:, 0] < -0.4                                      # Far left of the midline: almost untouched.
    np.testing.assert_allclose(sdf_at(skewed, PROBES[left]), sdf_at(clean, PROBES[left]), atol=1e-3)


def test_noise_is_bounded_by_its_amplitude():
    clean, noisy, noise = with_defect('noise')
    delta = np.abs(sdf_at(noisy, PROBES) - sdf_at(clean, PROBES))
    assert delta.max() <= noise.amp + 1e-6 and delta.max() > 0.6 * noise.amp

#----------------------------------------------------------------------------
# Rendering: a 3D point projected through the label lands where the renderer draws it.

def project(c, x):
    """Pixel (column, row) in [0, 1] and camera distance of world point x, from the label c (OpenCV)."""
    cam2world, K = c[:16].reshape(4, 4), c[16:].reshape(3, 3)
    x_cam = np.linalg.inv(cam2world) @ np.append(x, 1)
    uvw = K @ x_cam[:3]
    return uvw[:2] / uvw[2], np.linalg.norm(x - cam2world[:3, 3])


def test_nose_tip_projects_to_its_rendered_depth():
    resolution, voxel = 64, 1 / 64
    samples = [world.sample(3, i) for i in range(4)]
    samples[0] = dataclasses.replace(samples[0], yaw=math.pi / 2 + 0.5, pitch=math.pi / 2 - 0.2)
    out = render.render(samples, resolution)
    for sample, depth, mask in zip(samples, out.depth, out.mask):
        tip = heads.nose_tip(sample.head)
        assert abs(sdf_at(sample, tip)[0]) < 1e-5
        uv, distance = project(sample.label().double().numpy(), tip)
        col, row = (uv * resolution).astype(int)
        assert mask[0, row, col]
        assert abs(depth[0, row, col].item() - distance) < voxel
        # Reading the label with image rows flipped (OpenGL's y up) lands elsewhere: the check is sharp.
        flipped = depth[0, resolution - 1 - row, col].item()
        assert not abs(flipped - distance) < voxel
    assert out.mask.float().mean() > 0.2 and torch.isinf(out.depth[~out.mask]).all()


def test_render_shapes_and_background():
    out = render.render([world.sample(0, 0)], 16)
    assert out.image.shape == (1, 3, 16, 16) and out.depth.shape == out.mask.shape == (1, 1, 16, 16)
    corner = out.image[0, :, 0, 0]
    assert not out.mask[0, 0, 0, 0] and torch.allclose(corner, torch.tensor(render.BACKGROUND))
    assert out.image.min() >= 0 and out.image.max() <= 1

#----------------------------------------------------------------------------
# Dataset zip.

def test_dataset_zip_deterministic_and_eg3d_format(tmp_path):
    paths = [tmp_path / name for name in ('a.zip', 'b.zip', 'c.zip')]
    for path, seed in zip(paths, (4, 4, 5)):
        dataset_writer.write_dataset(str(path), count=5, resolution=32, seed=seed, defect_rate=0.5, progress=False)
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()

    with zipfile.ZipFile(paths[0]) as zf:
        names = zf.namelist()
        labels = json.loads(zf.read('dataset.json'))['labels']
        images = {n: np.array(PIL.Image.open(io.BytesIO(zf.read(n)))) for n in names if n.endswith('.png')}
    assert sorted(images) == [f'00000/img0000000{i}.png' for i in range(5)] == [f for f, _ in labels]
    assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in images.values())
    rebuilt = dataset_writer.read_samples(str(paths[0]))
    for fname, label in labels:
        c = np.array(label)
        assert c.shape == (25,)
        np.testing.assert_allclose(c[16:], FFHQ_INTRINSICS, atol=1e-6)
        cam2world = c[:16].reshape(4, 4)
        np.testing.assert_allclose(cam2world[:3, :3] @ cam2world[:3, :3].T, np.eye(3), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(cam2world[:3, 3]), cameras.RADIUS, rtol=1e-5)
        forward = np.asarray(cameras.PIVOT) - cam2world[:3, 3]
        np.testing.assert_allclose(cam2world[:3, 2], forward / np.linalg.norm(forward), atol=1e-5)
        sample = rebuilt[fname]
        assert sample == world.sample(4, int(fname[-12:-4]), 0.5)
        np.testing.assert_allclose(c, sample.label().numpy(), rtol=0, atol=0)


def test_supersampling_keeps_pixel_centres(tmp_path):
    # A 2x2 box filter of a render at twice the size: same content, softer edges.
    paths = [str(tmp_path / f'{n}.zip') for n in (1, 2)]
    for path, n in zip(paths, (1, 2)):
        dataset_writer.write_dataset(path, count=2, resolution=32, seed=0, supersample=n, progress=False)
    read = lambda path: np.array(PIL.Image.open(io.BytesIO(zipfile.ZipFile(path).read('00000/img00000001.png')))).astype(float)
    sharp, smooth = read(paths[0]), read(paths[1])
    assert np.abs(sharp - smooth).mean() < 6 and np.abs(sharp - smooth).max() > 30


def test_dataset_loads_with_the_training_loader(tmp_path):
    from training.dataset import ImageFolderDataset
    path = str(tmp_path / 'heads.zip')
    dataset_writer.write_dataset(path, count=3, resolution=16, seed=1, progress=False)
    data = ImageFolderDataset(path=path, use_labels=True)
    image, label = data[2]
    assert len(data) == 3 and image.shape == (3, 16, 16) and data.label_shape == [25]
    np.testing.assert_allclose(label, world.sample(1, 2).label().numpy())


def test_pose_spread_is_ffhq_like():
    poses = np.array([cameras.sample_pose(np.random.default_rng([9, i])) for i in range(2000)])
    np.testing.assert_allclose(poses.mean(axis=0), [math.pi / 2] * 2, atol=0.03)
    np.testing.assert_allclose(poses.std(axis=0), [cameras.YAW_STD, cameras.PITCH_STD], rtol=0.08)
    c = cameras.camera_labels([math.pi / 2], [math.pi / 2])[0].numpy()
    np.testing.assert_allclose(c[[3, 7, 11]], [0, 0, cameras.RADIUS], atol=1e-5)     # Frontal camera on +z.

#----------------------------------------------------------------------------
# CLI: every flag.

def run_cli(*args):
    return CliRunner().invoke(make_dataset.main, ['synthetic-heads', *map(str, args)])


def test_cli_writes_dataset_with_its_flags(tmp_path):
    out = tmp_path / 'heads.zip'
    result = run_cli('--out', out, '--count', 3, '--resolution', 16, '--seed', 2, '--defect-rate', 1, '--supersample', 1)
    assert result.exit_code == 0, result.output
    assert 'wrote 3 images of 16x16 (1x1 rays per pixel), seed 2, defect rate 1.0' in result.output
    samples = dataset_writer.read_samples(str(out))
    assert len(samples) == 3 and all(s.seed == 2 and s.defects for s in samples.values())
    with zipfile.ZipFile(out) as zf:
        assert PIL.Image.open(io.BytesIO(zf.read('00000/img00000002.png'))).size == (16, 16)
        meta = json.loads(zf.read('dataset.json'))['synthetic_heads']
        assert meta['defect_rate'] == 1.0 and meta['supersample'] == 1


def test_cli_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / 'heads.zip'
    out.write_bytes(b'precious')
    result = run_cli('--out', out, '--count', 1, '--resolution', 8)
    assert result.exit_code != 0 and 'exists; pass --force' in result.output
    assert out.read_bytes() == b'precious'
    result = run_cli('--out', out, '--count', 1, '--resolution', 8, '--force')
    assert result.exit_code == 0, result.output
    assert zipfile.is_zipfile(out) and not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


def test_cli_dry_run_writes_nothing(tmp_path):
    out = tmp_path / 'heads.zip'
    result = run_cli('--out', out, '--count', 10, '--dry-run')
    assert result.exit_code == 0 and 'would write 10 images of 64x64 (2x2 rays per pixel), seed 0, defect rate 0.0' in result.output
    assert not out.exists()


@pytest.mark.parametrize('args, message', [
    (['--out', 'x.tar', '--count', 1], '--out must be a .zip path'),
    (['--out', 'x.zip', '--count', 1, '--resolution', 48], 'must be a power of two'),
    (['--out', 'no/such/dir/x.zip', '--count', 1], 'does not exist'),
    (['--out', 'x.zip', '--count', 0], 'Invalid value for \'--count\''),
    (['--out', 'x.zip', '--count', 1, '--defect-rate', 1.5], 'Invalid value for \'--defect-rate\''),
    (['--out', 'x.zip', '--count', 1, '--seed', -1], 'Invalid value for \'--seed\''),
    (['--out', 'x.zip', '--count', 1, '--supersample', 5], 'Invalid value for \'--supersample\''),
])
def test_cli_clear_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.exit_code != 0 and message in result.output
    assert os.listdir(tmp_path) == []


def test_cli_grid_tiles_dataset_images(tmp_path):
    data, out = tmp_path / 'heads.zip', tmp_path / 'grid.png'
    dataset_writer.write_dataset(str(data), count=5, resolution=16, seed=0, progress=False)
    grid_cli = lambda *args: CliRunner().invoke(make_dataset.main, ['grid', '--data', str(data), '--out', str(out), *map(str, args)])
    result = grid_cli('--count', 5, '--cols', 3)
    assert result.exit_code == 0, result.output
    canvas = np.array(PIL.Image.open(out))
    assert canvas.shape == (32, 48, 3) and (canvas[16:, 32:] == 255).all()
    with zipfile.ZipFile(data) as zf:
        np.testing.assert_array_equal(canvas[16:, 16:32], np.array(PIL.Image.open(io.BytesIO(zf.read('00000/img00000004.png')))))
    assert 'exists; pass --force' in grid_cli().output
    assert grid_cli('--force', '--count', 2).exit_code == 0 and np.array(PIL.Image.open(out)).shape == (16, 128, 3)
    result = CliRunner().invoke(make_dataset.main, ['grid', '--data', str(out), '--out', str(tmp_path / 'x.png')])
    assert result.exit_code != 0 and 'cannot read images from' in result.output

#----------------------------------------------------------------------------
