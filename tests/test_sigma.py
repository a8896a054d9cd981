"""Tests for eg3d_rlhf.geometry.sigma (grids, streaming sigma, slab, normalisation) and eg3d_rlhf.geometry.mesh (marching cubes, files)."""


import numpy as np
import pytest
import torch

from eg3d_rlhf.generators.eg3d import TriPlaneField
from eg3d_rlhf.geometry import mesh
from eg3d_rlhf.geometry.sigma import (CubeGrid, SlabCrop, eg3d_border_pad, flip_and_pad, normalise_sigma_self,
    slab_grid)
from tests.conftest import load_golden

#----------------------------------------------------------------------------
# Helpers. The backbone takes seconds on a CPU, so generators and fields are built once per module.

@pytest.fixture(scope='module')
def ffhq():
    """This project's TriPlaneGenerator with the FFHQ golden's weights (eval mode), and the golden."""
    return golden_generator('golden_ffhq512_small.pt')

@pytest.fixture(scope='module')
def ffhq_field(ffhq):
    """Field of both golden latents at psi 1, built from the golden ws."""
    G, gold = ffhq
    return TriPlaneField(G, gold['outputs']['ws'])

def golden_generator(name):
    triplane = pytest.importorskip('training.triplane')
    gold = load_golden(name)
    G = triplane.TriPlaneGenerator(**gold['G_init_kwargs'])
    G.load_state_dict(gold['G_state'], strict=True)
    return G.eval().requires_grad_(False), gold

def count_backbone_calls(G):
    """(list that grows by one entry per G.backbone.synthesis call, hook handle to remove)."""
    calls = []
    return calls, G.backbone.synthesis.register_forward_pre_hook(lambda module, args: calls.append(1))

def count_decoded_points(G, monkeypatch):
    """A list of the number of points (per latent) of each renderer.run_model call."""
    sizes = []
    run_model = G.renderer.run_model
    def wrapped(planes, decoder, coords, dirs, options, **kwargs):
        sizes.append(coords.shape[1])
        return run_model(planes, decoder, coords, dirs, options, **kwargs)
    monkeypatch.setattr(G.renderer, 'run_model', wrapped)
    return sizes

def full_index_grid(n):
    """(i, j, k) of every cube point in C order, computed independently of CubeGrid."""
    i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing='ij')
    return np.stack([i, j, k], axis=-1).reshape(-1, 3)

#----------------------------------------------------------------------------
# Grids.

def test_exact_grid_matches_gen_samples(golden):
    box_warp = golden['G_init_kwargs']['rendering_kwargs']['box_warp']
    grid = CubeGrid(32, cube_length=box_warp, exact_eg3d_grid=True)
    points = grid.points(0, grid.num_points)
    assert torch.equal(points, golden['outputs']['cube32_samples'][0])

@pytest.mark.parametrize('cube_length', [1.0, 1.6])
def test_regular_grid_is_on_grid(cube_length):
    n = 17
    grid = CubeGrid(n, cube_length=cube_length)
    points = grid.points(0, grid.num_points).double().numpy()
    expected = -cube_length / 2 + full_index_grid(n) * cube_length / (n - 1)
    np.testing.assert_allclose(points, expected, rtol=0, atol=1e-6)
    assert points.min() == pytest.approx(-cube_length / 2) and points.max() == pytest.approx(cube_length / 2)

def test_exact_grid_is_off_grid_by_under_one_voxel_on_slow_axes():
    grid = CubeGrid(32, exact_eg3d_grid=True)
    exact = grid.points(0, grid.num_points)
    regular = CubeGrid(32).points(0, grid.num_points)
    off = ((exact - regular) / grid.voxel_size).abs()
    assert torch.equal(exact[:, 2], regular[:, 2])
    assert off[:, :2].max() > 0.9 and off[:, :2].max() < 1
    assert (exact[:, :2] >= regular[:, :2] - 1e-6).all()

def test_points_in_chunks_concatenate_to_whole():
    grid = CubeGrid(9, exact_eg3d_grid=True)
    whole = grid.points(0, grid.num_points)
    parts = torch.cat([grid.points(s, min(s + 100, grid.num_points)) for s in range(0, grid.num_points, 100)])
    assert torch.equal(whole, parts)

#----------------------------------------------------------------------------
# Slab.

def test_slab_bounds_published():
    grid = slab_grid(256)
    assert (grid.start, grid.stop) == ((64, 64, 102), (192, 205, 231))
    assert grid.shape == (128, 141, 129)

def test_slab_bounds_other_resolution_and_fractions():
    assert SlabCrop().bounds(64) == ((16, 16, 25), (48, 52, 58))
    crop = SlabCrop(x_left=0.1, x_right=0.2, y_bottom=0, y_top=0, z_rear=0.5, z_front=0.25)
    assert crop.bounds(40) == ((4, 0, 20), (32, 40, 30))

@pytest.mark.parametrize('exact', [False, True])
def test_slab_points_are_the_cube_crop(exact):
    n = 40
    cube = CubeGrid(n, cube_length=1.6, exact_eg3d_grid=exact)
    slab = slab_grid(n, cube_length=1.6, exact_eg3d_grid=exact)
    cube_pts = cube.points(0, cube.num_points).view(n, n, n, 3)
    (x0, y0, z0), (x1, y1, z1) = slab.start, slab.stop
    expected = cube_pts[x0:x1, y0:y1, z0:z1].reshape(-1, 3)
    assert torch.equal(slab.points(0, slab.num_points), expected)

#----------------------------------------------------------------------------
# Post-processing and normalisation.

def test_flip_and_pad_overwrites_border_and_flips_x():
    n = 12
    vol = np.arange(n ** 3, dtype=np.float32).reshape(n, n, n)
    out = flip_and_pad(vol, flip=True, pad=2)
    assert out.shape == vol.shape
    assert (out[:2] == -1000).all() and (out[-2:] == -1000).all()
    assert (out[:, :2] == -1000).all() and (out[:, :, -2:] == -1000).all()
    np.testing.assert_array_equal(out[2:-2, 2:-2, 2:-2], vol[::-1][2:-2, 2:-2, 2:-2])
    torch_out = flip_and_pad(torch.from_numpy(vol)[None], flip=True, pad=2)
    np.testing.assert_array_equal(torch_out[0].numpy(), out)
    np.testing.assert_array_equal(flip_and_pad(vol, flip=False, pad=0), vol)
    assert vol[0, 0, 0] == 0 # Input untouched.
    assert eg3d_border_pad(512) == 60 and eg3d_border_pad(256) == 30

def test_normalise_sigma_self_per_sample():
    rng = np.random.default_rng(0)
    x = rng.normal(size=[3, 4, 5, 6]).astype(np.float32)
    x[1] *= 50
    x[2] = 7.0 # Constant.
    y = normalise_sigma_self(x)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    for b in range(2):
        assert y[b].min() == 0 and y[b].max() == pytest.approx(100)
        np.testing.assert_allclose(y[b], (x[b] - x[b].min()) / (x[b].max() - x[b].min()) * 100, rtol=1e-6)
    assert (y[2] == 0).all()
    yt = normalise_sigma_self(torch.from_numpy(x))
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-6)
    np.testing.assert_allclose(normalise_sigma_self(x[0]), y[0], rtol=1e-6) # Unbatched.

#----------------------------------------------------------------------------
# Meshes.

def sphere_volume(grid, radius):
    """A density falling linearly through 10 at `radius` (world units)."""
    r = grid.points(0, grid.num_points).double().norm(dim=1).view(grid.shape).numpy()
    return 10 + 100 * (radius - r)

@pytest.mark.parametrize('cube_length', [1.0, 1.6])
def test_mesh_sphere_radius_in_world_units(cube_length):
    grid = CubeGrid(48, cube_length=cube_length)
    radius = 0.3 * cube_length
    verts, faces = mesh.extract_mesh(sphere_volume(grid, radius), grid, level=10)
    assert len(faces) > 1000
    r = np.linalg.norm(verts, axis=1)
    assert np.abs(r - radius).max() < 0.05 * grid.voxel_size
    # A different level moves the surface: density 60 lies 0.5 world units further in.
    verts60, _ = mesh.extract_mesh(sphere_volume(grid, radius), grid, level=60)
    np.testing.assert_allclose(np.linalg.norm(verts60, axis=1), radius - 0.5, atol=0.05 * grid.voxel_size)

def test_the_remembered_mesh_is_the_mesh_of_what_is_given_now(monkeypatch):
    """index_mesh and unique_edges remember their last input (the collateral measures mesh one slab three times): a
    repeat gives equal copies, a caller changing its copy or its volume in place changes nothing the next call reads,
    and a volume too big to remember is meshed directly."""
    grid = CubeGrid(24)
    volume = sphere_volume(grid, 0.3)
    verts, faces = mesh.index_mesh(volume)
    edges = mesh.unique_edges(faces)
    verts[:] = 0
    faces[:] = 0
    again, faces_again = mesh.index_mesh(volume)
    assert again.any() and faces_again.any() and np.array_equal(mesh.unique_edges(faces_again), edges)
    np.testing.assert_array_equal(edges, mesh.edges_of(faces_again))
    volume += 20                                                    # The same array object, another surface.
    moved, _ = mesh.index_mesh(volume)
    assert np.linalg.norm(moved - 11.5, axis=1).mean() > np.linalg.norm(again - 11.5, axis=1).mean()
    monkeypatch.setattr(mesh, 'MEMO_ELEMENTS', 10)
    big, big_faces = mesh.index_mesh(volume)
    np.testing.assert_array_equal(big, moved)
    np.testing.assert_array_equal(mesh.unique_edges(big_faces), mesh.edges_of(big_faces))

def test_mesh_of_slab_uses_crop_offset():
    grid = slab_grid(64, crop=SlabCrop(0.5, 0.0, 0.0, 0.0, 0.0, 0.0))    # Keep indices x >= 32: world x > 0.
    verts, faces = mesh.extract_mesh(sphere_volume(grid, 0.35), grid, level=10)
    assert len(faces) > 100
    np.testing.assert_allclose(np.linalg.norm(verts, axis=1), 0.35, atol=0.05 * grid.voxel_size)
    x0 = grid.index_to_world([[0, 0, 0]])[0, 0]
    assert x0 == pytest.approx(-0.5 + 32 / 63) and verts[:, 0].min() >= x0 - 1e-6

def read_ply(path):
    """Minimal independent PLY reader for what write_ply produces."""
    with open(path, 'rb') as f:
        lines = []
        while not lines or lines[-1] != 'end_header':
            lines.append(f.readline().decode('ascii').strip())
        body = f.read()
    nv = int(next(l for l in lines if l.startswith('element vertex')).split()[-1])
    nf = int(next(l for l in lines if l.startswith('element face')).split()[-1])
    if 'format ascii 1.0' in lines:
        rows = body.decode('ascii').split('\n')
        verts = np.array([[float(v) for v in r.split()] for r in rows[:nv]]).reshape(-1, 3)
        faces = np.array([[int(v) for v in r.split()] for r in rows[nv:nv + nf]]).reshape(-1, 4)
    else:
        verts = np.frombuffer(body[:12 * nv], dtype='<f4').reshape(-1, 3)
        faces = np.frombuffer(body[12 * nv:], dtype=np.dtype([('n', 'u1'), ('i', '<i4', (3,))]))
        assert len(faces) == nf
        faces = np.concatenate([faces['n'][:, None].astype(np.int64), faces['i']], axis=1)
    assert (faces[:, 0] == 3).all()
    return verts, faces[:, 1:]

def read_obj(path):
    verts, faces = [], []
    for line in open(path):
        if line.startswith('v '): verts.append([float(v) for v in line.split()[1:]])
        if line.startswith('f '): faces.append([int(v) - 1 for v in line.split()[1:]])
    return np.array(verts), np.array(faces)

@pytest.mark.parametrize('name,binary', [('m.ply', True), ('m.ply', False), ('m.obj', True)])
def test_mesh_files_parse_back(tmp_path, name, binary):
    grid = CubeGrid(20)
    verts, faces = mesh.extract_mesh(sphere_volume(grid, 0.3), grid)
    path = str(tmp_path / name)
    mesh.write_mesh(path, verts, faces, binary=binary)
    rv, rf = read_ply(path) if name.endswith('.ply') else read_obj(path)
    assert rv.shape == verts.shape and rf.shape == faces.shape
    np.testing.assert_allclose(rv, verts, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(rf, faces)

#----------------------------------------------------------------------------
# The streaming field on real generators.

def test_cube32_flipped_matches_golden(golden):
    name = 'golden_ffhq512_small.pt' if golden['G_init_kwargs']['img_resolution'] == 512 else 'golden_shapenet128_small.pt'
    G, gold = golden_generator(name)
    z, c = gold['inputs']['z'][:1], gold['inputs']['c'][:1]
    field = TriPlaneField.from_latents(G, z, c, truncation_psi=1, noise_mode='const')
    grid = CubeGrid(32, cube_length=G.rendering_kwargs['box_warp'], exact_eg3d_grid=True)
    sigma = field.sample_grid(grid, chunk=5000)
    assert sigma.shape == (1, 32, 32, 32)
    torch.testing.assert_close(flip_and_pad(sigma, flip=True)[0], gold['outputs']['cube32_flipped'], rtol=1e-5, atol=1e-5)

def test_sample_matches_golden_g_sample_in_chunks(ffhq, ffhq_field, monkeypatch):
    G, gold = ffhq
    calls, hook = count_backbone_calls(G)
    sizes = count_decoded_points(G, monkeypatch)
    sigma = ffhq_field.sample(gold['inputs']['coords'], chunk=1000)
    hook.remove()
    assert sizes == [1000] * 4 + [96] and calls == []
    torch.testing.assert_close(sigma, gold['outputs']['sample_sigma'], rtol=1e-5, atol=1e-5)

def test_latent_constructor_applies_truncation(ffhq, ffhq_field):
    G, gold = ffhq
    z, c = gold['inputs']['z'][:1], gold['inputs']['c'][:1]
    field = TriPlaneField.from_latents(G, z, c, truncation_psi=0.7, truncation_cutoff=14)
    torch.testing.assert_close(field.planes, TriPlaneField(G, gold['outputs']['ws_psi07'][:1]).planes, rtol=1e-5, atol=1e-5)
    coords = gold['inputs']['coords'][:, :500]
    assert not torch.allclose(field.sample(coords[:1]), ffhq_field.sample(coords)[:1], atol=1e-4)

def test_chunk_size_does_not_change_grid_sigma(ffhq, ffhq_field, monkeypatch):
    G, _ = ffhq
    grid = slab_grid(24)
    sizes = count_decoded_points(G, monkeypatch)
    small = ffhq_field.sample_grid(grid, chunk=777)
    assert sum(sizes) == grid.num_points and max(sizes) == 777     # Only slab points are decoded.
    big = ffhq_field.sample_grid(grid, chunk=10 ** 6)
    assert small.shape == (2, *grid.shape)
    torch.testing.assert_close(small, big, rtol=1e-6, atol=1e-6)

def test_gradients_flow_only_when_asked(ffhq):
    G, gold = ffhq
    ws = gold['outputs']['ws'][:1].clone().requires_grad_(True)
    grid = CubeGrid(6)
    ticks = []
    sigma = TriPlaneField(G, ws, requires_grad=True).sample_grid(grid, chunk=50, progress=ticks.append)
    assert sum(ticks) == grid.num_points and len(ticks) == 5
    sigma.square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    plain = TriPlaneField(G, ws)
    assert plain.planes.grad_fn is None
    plain_sigma = plain.sample_grid(grid, chunk=50)
    assert plain_sigma.grad_fn is None and not plain_sigma.requires_grad
    torch.testing.assert_close(plain_sigma, sigma.detach(), rtol=1e-6, atol=1e-6)

@pytest.mark.slow
def test_256_cube_streams_with_one_backbone_call():
    torch.manual_seed(0)
    triplane = pytest.importorskip('training.triplane')
    kwargs = load_golden('golden_ffhq512_small.pt')['G_init_kwargs']    # FFHQ-512 structure, small channels.
    G = triplane.TriPlaneGenerator(**kwargs).eval().requires_grad_(False) # Random init.
    calls, _ = count_backbone_calls(G)
    z, c = torch.randn([1, G.z_dim]), torch.randn([1, G.c_dim])
    field = TriPlaneField.from_latents(G, z, c, truncation_psi=0.7, truncation_cutoff=14)
    grid = CubeGrid(256, cube_length=G.rendering_kwargs['box_warp'])
    sigma = field.sample_grid(grid, chunk=2 ** 20)
    assert calls == [1]
    assert sigma.shape == (1, 256, 256, 256) and torch.isfinite(sigma).all()
    # Spot-check the corners of the cube against a direct evaluation.
    corners = torch.tensor([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5]])
    direct = field.sample(corners)[0, :, 0]
    torch.testing.assert_close(torch.stack([sigma[0, 0, 0, 0], sigma[0, -1, -1, -1], sigma[0, -1, 0, -1]]), direct,
        rtol=1e-5, atol=1e-5)
    assert calls == [1]

#----------------------------------------------------------------------------
