"""Mesh conventions: which voxels of a sigma volume get the -1000 border, and the frame its mesh is written in."""

import dataclasses

import numpy as np

from eg3d_rlhf.geometry import mesh

#----------------------------------------------------------------------------
# Two conventions, chosen by name (--mesh-convention in the tools):
#
#   ours       world coordinates (CubeGrid: origin -L/2, voxel L/(N-1)), x as sampled; a full cube gets
#              gen_samples' border, int(30*N/256) voxels on every face; a slab or other box is meshed as sampled.
#   published  the meshes of "Sculpting NeRF Geometry": the full N^3 cube x-flipped, int(w*N/256) voxels of the
#              widths below set to -1000, transposed from (x, y, z) to (z, y, x), marching cubes at the level,
#              vertex = -0.5 + index / N. The flip and transpose together turn the head by 90 degrees about y
#              (no mirror image): a vertex's coordinates are (z, y, -x) up to the offsets. A box inside the cube
#              (the slab) gets the border voxels it shares with the cube and the same frame.

CONVENTIONS = ('ours', 'published')
PAD_VALUE = -1000.0
HELP = ("Mesh convention: ours = world coordinates, gen_samples' border on a full cube; published = the paper's "
    "meshes (x-flipped, borders x 60, y 30, z rear 80 / front 30 in 256ths, transposed to (z, y, x), origin -0.5, "
    "voxel 1/N)")


@dataclasses.dataclass(frozen=True)
class Border:
    """Widths, in 256ths of the cube's N, of the border overwritten on each face (int(w * N / 256) voxels);
    faces are named in world terms, before any flip."""
    x_low:      int     # Low x (the head's right side as it looks toward +z).
    x_high:     int     # High x.
    y_low:      int     # Low y (world y is up).
    y_high:     int     # High y.
    z_rear:     int     # Low z (behind the head).
    z_front:    int     # High z (in front of the face).

    def voxels(self, n):
        """((low, high) voxel counts) of the x, y and z axes of an N^3 cube."""
        pairs = ((self.x_low, self.x_high), (self.y_low, self.y_high), (self.z_rear, self.z_front))
        return tuple((int(lo * n / 256), int(hi * n / 256)) for lo, hi in pairs)


GEN_SAMPLES_BORDER = Border(30, 30, 30, 30, 30, 30)     # EG3D's gen_samples.py (sigma.eg3d_border_pad).
PUBLISHED_BORDER = Border(60, 60, 30, 30, 80, 30)       # The paper's mesh export; symmetric in x, so the x flip
                                                        # before it changes nothing about which voxels it takes.


def check(convention):
    if convention not in CONVENTIONS:
        raise ValueError(f'unknown mesh convention {convention!r}; use one of {", ".join(CONVENTIONS)}')
    return convention


def _is_full_cube(grid):
    return grid.start == (0, 0, 0) and grid.stop == (grid.resolution,) * 3


def border_of(grid, convention):
    """The Border a convention puts on volumes of `grid` (a CubeGrid, full cube or box), None for none."""
    if check(convention) == 'published':
        return PUBLISHED_BORDER
    return GEN_SAMPLES_BORDER if _is_full_cube(grid) else None


def apply_border(volume, grid, border, value=PAD_VALUE):
    """A copy of `volume` [X, Y, Z] (on `grid`, (x, y, z) order, not flipped) with the cube's border voxels that lie
    in grid's box set to `value`."""
    out = np.array(volume, dtype=np.float32, copy=True)
    assert out.shape == tuple(grid.shape), (out.shape, grid.shape)
    n = grid.resolution
    for axis, ((lo, hi), start) in enumerate(zip(border.voxels(n), grid.start)):
        size = out.shape[axis]
        index = [slice(None)] * 3
        index[axis] = slice(0, int(np.clip(lo - start, 0, size)))       # Cube indices [0, lo).
        out[tuple(index)] = value
        index[axis] = slice(int(np.clip(n - hi - start, 0, size)), size) # Cube indices [n - hi, n).
        out[tuple(index)] = value
    return out


def bordered(volume, grid, convention):
    """The volume a convention meshes, still in (x, y, z) order on `grid` (what previews and mesh statistics read)."""
    border = border_of(grid, convention)
    return np.array(volume, dtype=np.float32) if border is None else apply_border(volume, grid, border)

#----------------------------------------------------------------------------
# The published frame.

def published_array(volume, grid):
    """(array, offset): the bordered volume x-flipped, as the paper's cube (and its .mrc) holds it, [X, Y, Z], and the
    cube index of the array's first voxel on each axis after the flip."""
    flipped = np.ascontiguousarray(np.flip(bordered(volume, grid, 'published'), 0))
    offset = (grid.resolution - grid.stop[0], grid.start[1], grid.start[2])
    return flipped, offset


def published_mesh(volume, grid, level=10.0):
    """(vertices [V, 3] float32, faces [F, 3] int64) of the published convention: vertex = -0.5 + (z, y, x') / N, with
    x' the flipped x index."""
    flipped, offset = published_array(volume, grid)
    verts, faces = mesh.index_mesh(flipped.transpose(2, 1, 0), level)
    verts = (verts + np.asarray(offset[::-1], dtype=np.float64)) / grid.resolution - 0.5
    return verts.astype(np.float32), faces


def extract(volume, grid, convention='ours', level=10.0):
    """(vertices, faces) of raw sigma `volume` [X, Y, Z] on `grid` ((x, y, z) order, not flipped) in a convention."""
    if check(convention) == 'published':
        return published_mesh(volume, grid, level)
    return mesh.extract_mesh(bordered(volume, grid, convention), grid, level=level)

#----------------------------------------------------------------------------
