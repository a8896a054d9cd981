"""Mesh conventions (ours, published) and .mrc maps, checked on analytic fields whose surfaces are known exactly."""

import os

import mrcfile
import numpy as np
import pytest

from eg3d_rlhf.analysis import tails
from eg3d_rlhf.geometry import convention as C
from eg3d_rlhf.geometry import mesh, mrc
from eg3d_rlhf.geometry.sigma import CubeGrid, eg3d_border_pad, slab_grid

N = 64                      # Published widths at N=64: x 15 both ends, y 7 both ends, z rear 20, z front 7 voxels.

#----------------------------------------------------------------------------
# Fields: level 10 lies exactly on the union of balls (raw sigma linear in the distance near the surface).

def world_points(grid):
    """World coordinates [X, Y, Z, 3] of the points of `grid`."""
    return grid.points(0, grid.num_points).numpy().astype(np.float64).reshape(*grid.shape, 3)


def balls_sigma(grid, balls):
    p = world_points(grid)
    sdf = np.min([np.linalg.norm(p - np.asarray(c), axis=-1) - r for c, r in balls], axis=0)
    return np.clip(10 - 200 * sdf, -20, 40).astype(np.float32)


HEAD = [((0.0, 0.0, 0.0), 0.15),        # World x in [-0.15, 0.22], y in [-0.15, 0.15], z in [-0.15, 0.21].
        ((0.17, 0.05, 0.0), 0.05),      # A bump on the +x side.
        ((0.0, 0.0, 0.17), 0.04)]       # A nose toward +z (the face's side).


def to_published(world, n=N):
    """Where a world point of CubeGrid(n) lands in the published frame: (-0.5 + (k, j, n-1-i) / n)."""
    i, j, k = ((np.asarray(world, dtype=np.float64) + 0.5) * (n - 1)).T
    return np.stack([k, j, n - 1 - i], axis=-1) / n - 0.5


def signed_volume(verts, faces):
    a, b, c = (verts[faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum('ij,ij->i', a, np.cross(b, c)).sum() / 6)

#----------------------------------------------------------------------------
# The border.

def test_border_widths_are_the_published_ones():
    assert C.PUBLISHED_BORDER.voxels(256) == ((60, 60), (30, 30), (80, 30))
    assert C.PUBLISHED_BORDER.voxels(N) == ((15, 15), (7, 7), (20, 7))
    assert C.GEN_SAMPLES_BORDER.voxels(N) == ((eg3d_border_pad(N),) * 2,) * 3


def test_published_border_marks_exactly_its_voxels():
    grid = CubeGrid(N)
    volume = np.random.RandomState(0).uniform(0, 50, size=(N, N, N)).astype(np.float32)
    out = C.bordered(volume, grid, 'published')
    i, j, k = np.meshgrid(np.arange(N), np.arange(N), np.arange(N), indexing='ij')
    expected = (i < 15) | (i >= 49) | (j < 7) | (j >= 57) | (k < 20) | (k >= 57)
    np.testing.assert_array_equal(out == C.PAD_VALUE, expected)
    np.testing.assert_array_equal(out[~expected], volume[~expected])
    flipped, offset = C.published_array(volume, grid)
    assert offset == (0, 0, 0)
    np.testing.assert_array_equal(flipped, out[::-1])               # The paper's cube: x flipped after the border.
    ours = C.bordered(volume, grid, 'ours')                         # gen_samples: 7 voxels on every face.
    p = eg3d_border_pad(N)
    inner = (i >= p) & (i < N - p) & (j >= p) & (j < N - p) & (k >= p) & (k < N - p)
    np.testing.assert_array_equal(ours == C.PAD_VALUE, ~inner)


def test_a_box_gets_the_border_voxels_it_shares_with_the_cube():
    cube, slab = CubeGrid(N), slab_grid(N)
    assert slab.stop[2] == 58                                       # The slab reaches z index 57, inside the front border.
    volume = np.random.RandomState(1).uniform(0, 50, size=(N, N, N)).astype(np.float32)
    box = tuple(slice(a, b) for a, b in zip(slab.start, slab.stop))
    got = C.bordered(volume[box], slab, 'published')
    np.testing.assert_array_equal(got, C.bordered(volume, cube, 'published')[box])
    assert (got[:, :, -1] == C.PAD_VALUE).all() and not (got[:, :, :-1] == C.PAD_VALUE).any()
    np.testing.assert_array_equal(C.bordered(volume[box], slab, 'ours'), volume[box])   # Ours meshes a slab as sampled.


def test_a_full_field_meshes_to_the_border_planes():
    """sigma = 100 everywhere: the surface is the inner face of the border, rear (80/256) at low z, which comes first."""
    verts, faces = C.extract(np.full((N, N, N), 100, np.float32), CubeGrid(N), 'published')
    assert len(faces) and mesh.is_closed(faces)
    low, high = (10 + 1000) / 1100, (100 - 10) / 1100               # Linear crossing between -1000 and 100.
    want_lo = (np.array([20, 7, 15]) - 1 + low) / N - 0.5           # (z rear, y, x) after the transpose.
    want_hi = (N - np.array([7, 7, 15]) - 1 + high) / N - 0.5       # (z front, y, x).
    np.testing.assert_allclose(verts.min(0), want_lo, atol=1e-6)
    np.testing.assert_allclose(verts.max(0), want_hi, atol=1e-6)

#----------------------------------------------------------------------------
# Orientation: flip and transpose turn the head 90 degrees about y, never mirror it.

def test_published_frame_puts_the_nose_first_and_the_bump_at_low_x():
    grid = CubeGrid(N)
    verts, faces = C.extract(balls_sigma(grid, HEAD), grid, 'published', level=10)
    tol = 0.01
    lo, hi = to_published([[-0.15, -0.15, -0.15]]), to_published([[0.22, 0.15, 0.21]])
    np.testing.assert_allclose(verts.min(0), [lo[0, 0], lo[0, 1], hi[0, 2]], atol=tol)   # z rear, y low, +x bump.
    np.testing.assert_allclose(verts.max(0), [hi[0, 0], hi[0, 1], lo[0, 2]], atol=tol)   # Nose, y high, -x side.
    assert verts[:, 0].max() - 0 > 0.19 and verts[:, 0].min() > -0.16  # The nose (+z) stands out along the first axis.
    assert verts[:, 2].min() < -0.2 and verts[:, 2].max() < 0.16       # The +x bump lies at negative third coordinate.


def test_published_mesh_is_ours_turned_about_y():
    grid = CubeGrid(N)
    volume = balls_sigma(grid, HEAD)
    ours_v, ours_f = C.extract(volume, grid, 'ours')
    pub_v, pub_f = C.extract(volume, grid, 'published')
    assert len(ours_v) == len(pub_v) and len(ours_f) == len(pub_f)
    turned = to_published(ours_v)
    order = lambda v: v[np.lexsort(np.round(v, 5).T)]
    np.testing.assert_allclose(order(pub_v), order(turned), atol=1e-5)
    assert signed_volume(pub_v, pub_f) * signed_volume(ours_v, ours_f) > 0   # Same handedness: a turn, no mirror.


def test_published_mesh_matches_the_papers_steps_with_skimage():
    """The paper's order written out by hand on a numpy cube (flip x, six border slices, transpose, scikit-image's
    marching cubes with spacing 1/N, shifted by -0.5) gives the same vertices as our PyMCubes path."""
    measure = pytest.importorskip('skimage.measure')
    grid = CubeGrid(N)
    volume = balls_sigma(grid, HEAD + [((0.0, -0.1, -0.1), 0.12)])
    cube = np.flip(volume, 0).copy()
    cube[:15] = cube[-15:] = -1000                                 # x: 60/256 of 64 at both ends.
    cube[:, :7] = cube[:, -7:] = -1000                             # y: 30/256.
    cube[:, :, :20] = -1000                                         # z rear: 80/256.
    cube[:, :, -7:] = -1000                                         # z front: 30/256.
    want, want_faces, _normals, _values = measure.marching_cubes(cube.transpose(2, 1, 0), level=10, spacing=[1 / N] * 3)
    got, faces = C.extract(volume, grid, 'published', level=10)
    assert len(got) == len(want) and len(faces) == len(want_faces)
    order = lambda v: v[np.lexsort(np.round(v, 5).T)]
    np.testing.assert_allclose(order(got), order(want - 0.5), atol=1e-6)


def test_slab_mesh_sits_where_the_cube_mesh_does():
    cube, slab = CubeGrid(N), slab_grid(N)
    head = [((0.0, 0.05, 0.1), 0.1)]
    volume = balls_sigma(cube, head)
    box = tuple(slice(a, b) for a, b in zip(slab.start, slab.stop))
    for convention in C.CONVENTIONS:
        v_cube, f_cube = C.extract(volume, cube, convention)
        v_slab, f_slab = C.extract(volume[box], slab, convention)
        assert len(v_cube) == len(v_slab) > 0
        order = lambda v: v[np.lexsort(np.round(v, 5).T)]
        np.testing.assert_allclose(order(v_slab), order(v_cube), atol=1e-6)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="unknown mesh convention 'paper'"):
        C.extract(np.zeros((4, 4, 4)), CubeGrid(4), 'paper')

#----------------------------------------------------------------------------
# .mrc maps.

@pytest.mark.parametrize('convention', C.CONVENTIONS)
@pytest.mark.parametrize('make_grid', [CubeGrid, slab_grid], ids=['cube', 'slab'])
def test_mrc_round_trips(tmp_path, convention, make_grid):
    grid = make_grid(N, cube_length=1.2)
    volume = np.random.RandomState(2).uniform(-5, 50, size=grid.shape).astype(np.float32)
    path = str(tmp_path / 'v.mrc')
    mrc.write_mrc(path, volume, grid, convention)
    assert os.listdir(tmp_path) == ['v.mrc']                        # No temporary left beside it.
    assert mrcfile.validate(path, print_file=open(os.devnull, 'w'))
    with mrcfile.open(path) as f:
        data, header, voxel = np.array(f.data), f.header, f.voxel_size
    bordered = C.bordered(volume, grid, convention)
    if convention == 'published':
        np.testing.assert_array_equal(data, bordered[::-1])         # gen_samples' layout: x flipped, as stored.
        assert (int(header.mapc), int(header.mapr), int(header.maps)) == (1, 2, 3)
        want_voxel = 1 / N
        want_origin = (-0.5 + grid.start[2] / N, -0.5 + grid.start[1] / N, -0.5 + (N - grid.stop[0]) / N)
    else:
        np.testing.assert_array_equal(data, bordered)
        assert (int(header.mapc), int(header.mapr), int(header.maps)) == (3, 2, 1)   # Sections are x: world orientation.
        want_voxel = grid.voxel_size
        want_origin = tuple(grid.index_to_world(np.zeros(3)))
    np.testing.assert_allclose([voxel.x, voxel.y, voxel.z], [want_voxel] * 3, rtol=1e-6)
    np.testing.assert_allclose([header.origin.x, header.origin.y, header.origin.z], want_origin, atol=1e-6)
    if make_grid is CubeGrid:
        np.testing.assert_array_equal(tails.read_cube(path), data)  # tails reads the cube back as stored.


def test_mrc_write_is_atomic(tmp_path, monkeypatch):
    grid = CubeGrid(8)
    path = str(tmp_path / 'v.mrc')
    mrc.write_mrc(path, np.ones((8, 8, 8), np.float32), grid)
    before = open(path, 'rb').read()
    def fail(self):
        raise OSError('disk full')
    monkeypatch.setattr(mrc.MrcInterpreter, 'flush', fail)
    with pytest.raises(OSError, match='disk full'):
        mrc.write_mrc(path, np.zeros((8, 8, 8), np.float32), grid)
    assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['v.mrc']

#----------------------------------------------------------------------------
