"""Head measures of a raw sigma slab in world units: the front surface, the nose's prominence, the head's size."""

import numpy as np

#----------------------------------------------------------------------------
# Each maps (raw sigma slab [X, Y, Z], its CubeGrid, level) to world units. World y is up and the face looks toward
# +z (high z index), as everywhere in eg3d_rlhf. The simulated annotators' tastes (data/annotators.py) and the
# training family's ranges (synthetic/family.py) both read them.

def front_surface(volume, grid, level):
    """World z [X, Y] of the front-most level crossing in each (x, y) column (linearly refined); NaN where none."""
    inside = volume >= level
    nz = volume.shape[2]
    hit = inside.any(axis=2)
    k = nz - 1 - np.argmax(inside[:, :, ::-1], axis=2)             # Last inside index along z.
    k_out = np.minimum(k + 1, nz - 1)
    v_in = np.take_along_axis(volume, k[..., None], axis=2)[..., 0]
    v_out = np.take_along_axis(volume, k_out[..., None], axis=2)[..., 0]
    frac = np.where((k_out > k) & (v_in > v_out), (v_in - level) / np.maximum(v_in - v_out, 1e-6), 0.0)
    z = grid.index_to_world(np.stack([np.zeros_like(k), np.zeros_like(k), k + np.clip(frac, 0, 1)], axis=-1))[..., 2]
    return np.where(hit, z, np.nan)


def axis_world(grid, size, axis):
    """World coordinates [size] of the grid's indices 0 .. size - 1 along one axis (0 = x, 1 = y, 2 = z)."""
    ijk = np.zeros([size, 3])
    ijk[:, axis] = np.arange(size)
    return grid.index_to_world(ijk)[:, axis]


def nose_prominence(volume, grid, level=10.0, centre_halfwidth=0.1, ring=(0.08, 0.12)):
    """How far the nose tip stands in front of the face around it (world units): the front-most point of the
    central columns (|x| < centre_halfwidth) minus the median front depth at xy distance `ring` from it."""
    z = front_surface(volume, grid, level)
    x, y = axis_world(grid, volume.shape[0], 0), axis_world(grid, volume.shape[1], 1)
    central = np.where(np.abs(x)[:, None] < centre_halfwidth, z, np.nan)
    if np.all(np.isnan(central)):
        return 0.0
    i, j = np.unravel_index(np.nanargmax(central), central.shape)
    dist = np.hypot(x[:, None] - x[i], y[None, :] - y[j])
    around = z[(dist >= ring[0]) & (dist <= ring[1])]
    around = around[~np.isnan(around)]
    return float(z[i, j] - np.median(around)) if len(around) else float(z[i, j] - grid.index_to_world([0, 0, 0])[2])


def head_size(volume, grid, level=10.0):
    """How big the head is as the slab sees it (world units): the cube root of the volume inside the surface within
    the slab, counted in voxels. Mostly the structure stage's business in a two-stage generator: the detail stage can
    move the surface only within the structure's voxels."""
    inside = np.count_nonzero(np.asarray(volume) >= level)
    return float((inside * grid.voxel_size ** 3) ** (1 / 3))

#----------------------------------------------------------------------------
