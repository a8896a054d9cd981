"""Statistics of the closed mesh (rewards/mesh_stats.py): what they measure, their gradients, the reward reading them."""

import math

import numpy as np
import pytest
import torch

from eg3d_rlhf.data import annotators
from eg3d_rlhf.geometry import mesh
from eg3d_rlhf.geometry.sigma import CubeGrid, SlabCrop, closed_slab, slab_description
from eg3d_rlhf.rewards.checkpoint import load_reward, save_reward
from eg3d_rlhf.rewards.contract import InputSpec
from eg3d_rlhf.rewards.mesh_stats import STATS, MeshStatistics, edge_vertices, mesh_statistics
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward


def distance(n, centre=(0.0, 0.0, 0.0)):
    axis = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    x, y, z = torch.meshgrid(axis - centre[0], axis - centre[1], axis - centre[2], indexing='ij')
    return (x ** 2 + y ** 2 + z ** 2).sqrt()


def ball(radius, n=28, centre=(0.0, 0.0, 0.0)):
    """Raw sigma [n, n, n]: 30 at the centre, 10 (the mesh level) at `radius` voxels, falling on outside."""
    return 30 - 20 * distance(n, centre) / radius


def stats(volume, level=10.0):
    return dict(zip(STATS, mesh_statistics(volume, level).tolist()))


def test_vertices_are_marching_cubes_vertices_recomputed_from_sigma():
    volume = ball(8.0) + torch.from_numpy(np.random.RandomState(0).normal(0, 0.5, size=(28, 28, 28)))
    closed = closed_slab(volume, 10.0)
    verts, _faces = mesh.index_mesh(closed.numpy(), 10.0)
    assert np.abs(edge_vertices(closed, verts, 10.0).numpy() - verts).max() < 1e-9


def test_unique_edges_lists_each_edge_once_in_order():
    tetra = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
    assert mesh.unique_edges(tetra).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert mesh.unique_edges(np.array([[5, 1000000, 7]])).tolist() == [[5, 7], [5, 1000000], [7, 1000000]]
    assert mesh.unique_edges(np.zeros([0, 3], dtype=np.int64)).shape == (0, 2)


def test_sorted_unique_and_is_closed_agree_with_numpy():
    keys = np.random.RandomState(1).randint(0, 50, size=300)
    values, counts = mesh.sorted_unique(keys, return_counts=True)
    expected = np.unique(keys, return_counts=True)
    assert values.tolist() == expected[0].tolist() and counts.tolist() == expected[1].tolist()
    assert mesh.sorted_unique(np.zeros([0], dtype=np.int64)).shape == (0,)
    tetra = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
    assert mesh.is_closed(tetra) and not mesh.is_closed(tetra[:3]) and not mesh.is_closed(tetra[:0])


def test_a_float64_copy_of_a_float32_slab_finds_its_mesh_in_the_memo(monkeypatch):
    volume = (ball(8.0) + torch.from_numpy(np.random.RandomState(2).normal(0, 0.5, size=(28, 28, 28)))).float().numpy()
    grid = CubeGrid(28, 1.0)
    first = annotators.closed_mesh(volume, grid, 10.0)                 # float32: meshed and remembered.
    calls = []
    marching_cubes = mesh.marching_cubes()
    monkeypatch.setattr(mesh, '_marching_cubes', lambda *a: calls.append(1) or marching_cubes(*a))
    exact = dict(zip(STATS, mesh_statistics(torch.from_numpy(volume).double(), 10.0, precision=None).tolist()))
    assert calls == []                                                  # Its float64 copy: the same mesh, not meshed again.
    assert exact['vertices'] == len(first[0])
    noisy = torch.from_numpy(volume).double() + 1e-12                   # Not float32 values: meshed afresh.
    mesh_statistics(noisy, 10.0, precision=None)
    assert calls == [1]


def test_a_ball_one_piece_its_area_and_its_bending():
    small, big = stats(ball(6.0)), stats(ball(10.0))
    assert big['area'] == pytest.approx(4 * math.pi * 10 ** 2, rel=0.05)
    assert small['area'] == pytest.approx(4 * math.pi * 6 ** 2, rel=0.05)
    for s in (small, big):
        assert s['pieces'] == 1 and s['floater_share'] == pytest.approx(0, abs=1e-12) and s['handles'] == 0
        assert s['cap_share'] == 0 and s['valence'] == pytest.approx(6, abs=0.1)
    assert abs(small['bending']) > abs(big['bending'])                  # A smaller ball bends more per vertex.
    assert stats(ball(6.0, n=28) * 0 - 5)['area'] == 0                 # Nothing above the level: no mesh, zeros.


def test_floaters_caps_handles_and_roughness():
    two = torch.maximum(ball(7.0, centre=(-5, 0, 0)), ball(3.0, centre=(8, 0, 0)))
    s = stats(two)
    assert s['pieces'] == 2 and s['floater_share'] == pytest.approx(9 / (49 + 9), abs=0.03)   # The small ball's area.
    cut = stats(ball(10.0, centre=(9, 0, 0)))                           # The slab's +x face cuts the ball: a flat cap.
    assert cut['pieces'] == 1 and 0.05 < cut['cap_share'] < 0.5
    d = distance(40)
    axis = torch.arange(40, dtype=torch.float64) - 19.5
    ring = ((torch.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2) - 11) ** 2 + axis[None, None, :] ** 2).sqrt()
    assert stats(30 - 20 * ring / 4.0)['handles'] == 1 and stats(30 - 20 * d / 12)['handles'] == 0    # A torus.
    noisy = ball(10.0) + torch.from_numpy(np.random.RandomState(1).normal(0, 3.0, size=(28, 28, 28)))
    assert stats(noisy)['roughness'] > 1.2 * stats(ball(10.0))['roughness']


def test_the_mesh_read_is_the_one_people_and_the_annotators_see():
    grid = CubeGrid(28)
    volume = torch.maximum(ball(9.0, centre=(6, 0, 0)), ball(3.0, centre=(-8, 2, 0)))
    volume = volume + torch.from_numpy(np.random.RandomState(2).normal(0, 1.0, size=(28, 28, 28)))
    s = stats(volume)
    raw = volume.numpy().astype(np.float32)
    assert s['roughness'] / s['edge_length'] == pytest.approx(annotators.roughness(raw, grid), rel=1e-4)
    assert s['floater_share'] + 0.05 * s['handles'] == pytest.approx(annotators.defects(raw, grid), rel=1e-4)


def test_gradients_match_finite_differences():
    volume = ball(8.0) + torch.from_numpy(np.random.RandomState(3).normal(0, 0.3, size=(28, 28, 28)))
    x = volume.clone().requires_grad_(True)
    weights = torch.tensor([0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0], dtype=torch.float64)  # The differentiable ones.
    (mesh_statistics(x, 10.0, precision=None) * weights).sum().backward()
    near = torch.nonzero((volume - 10).abs() < 2)[:5]
    for i, j, k in near.tolist():
        eps = 1e-5
        plus, minus = volume.clone(), volume.clone()
        plus[i, j, k] += eps
        minus[i, j, k] -= eps
        numeric = ((mesh_statistics(plus, 10.0, None) - mesh_statistics(minus, 10.0, None)) * weights).sum() / (2 * eps)
        assert x.grad[i, j, k].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-7)
    assert x.grad.abs().sum() > 0
    rounded = volume.clone().requires_grad_(True)                       # Rounded as a float16 bank holds it; the
    mesh_statistics(rounded, 10.0)[5].backward()                        # gradient passes straight through.
    assert torch.equal(mesh_statistics(volume, 10.0), mesh_statistics(volume.half().double(), 10.0))
    assert rounded.grad.abs().sum() > 0


def test_the_default_sigma_reward_reads_them_and_old_checkpoints_keep_meaning(tmp_path):
    model = SigmaReward(levels=(10.0,), cells=(1, 1, 1), members=2)
    assert model.mesh_stats.dim == len(STATS) and model.feature_mean.shape == (10 * 2 + len(STATS),)
    batch = torch.stack([ball(6.0), ball(9.0)]).float()
    f = model.trunk_features(batch)
    assert torch.equal(f[:, -len(STATS):], MeshStatistics((10.0,))(batch))
    spec = InputSpec(slab=slab_description(28, crop=SlabCrop(0, 0, 0, 0, 0, 0)), normalisation='affine')
    older = SigmaReward(levels=(10.0,), cells=(1, 1, 1), members=2, mesh_levels=())
    path = str(tmp_path / 'older.pt')
    save_reward(path, older, 'sigma', spec)
    data = torch.load(path, weights_only=True)
    del data['config']['mesh_levels']                                   # As the levels trunk was first written.
    torch.save(data, path)
    old = load_reward(path)
    assert list(old.model.config['mesh_levels']) == [] and old.model.feature_mean.shape == (20,)
    with torch.no_grad():
        assert torch.equal(old.model.score(batch), older.eval().score(batch))  # Scores as it did: no mesh read.
    assert MeshStatistics(())(batch).shape == (2, 0)
