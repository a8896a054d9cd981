"""Analytic raw-sigma volumes on a slab grid (balls, faces with noses) and hand-made banks laid out like sample_bank's."""

import os

import numpy as np

from eg3d_rlhf.data import bank
from eg3d_rlhf.geometry.sigma import SlabCrop, slab_grid

#----------------------------------------------------------------------------
# Analytic volumes.

def world_points(grid):
    """World coordinates [X, Y, Z, 3] of every point of `grid` (float64)."""
    axes = [grid.index_to_world(np.stack([np.arange(n) if a == b else np.zeros(n) for b in range(3)], -1))[:, a]
        for a, n in enumerate(grid.shape)]
    return np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1)


def ball_sdf(points, centre, radius):
    """Signed distance of `points` to the ball (centre, radius): negative inside."""
    return np.linalg.norm(points - np.asarray(centre, dtype=np.float64), axis=-1) - radius


def sigma_from_sdf(sdf):
    """Raw-sigma-like volume: 30 inside, -10 outside, level 10 exactly on the surface (linear within +-0.05)."""
    return np.clip(10 - 400 * sdf, -10, 30).astype(np.float32)


def balls_volume(grid, balls):
    """Raw sigma of the union of (centre, radius) balls."""
    p = world_points(grid)
    return sigma_from_sdf(np.min([ball_sdf(p, c, r) for c, r in balls], axis=0))

#----------------------------------------------------------------------------
# Hand-made banks.

def slab_description(resolution, cube_length=1.0, crop=SlabCrop(), dtype='float32'):
    """meta.json's "slab" entry, as tools/sample_bank.py writes it."""
    grid = slab_grid(resolution, cube_length=cube_length, crop=crop)
    return dict(resolution=resolution, cube_length=cube_length, crop=dict(crop.__dict__), start=list(grid.start),
        stop=list(grid.stop), shape=list(grid.shape), dtype=dtype, order='xyz', flipped=False)


def write_bank(root, slabs, resolution, cube_length=1.0, crop=SlabCrop()):
    """A bank folder holding {id: raw slab}: sigma_slab.npy and meta.json per sample. Returns the folder as str."""
    slab = slab_description(resolution, cube_length, crop)
    for sample_id, volume in slabs.items():
        assert list(volume.shape) == slab['shape'], (volume.shape, slab['shape'])
        folder = os.path.join(root, sample_id)
        os.makedirs(folder)
        np.save(os.path.join(folder, bank.SLAB_FILE), volume.astype(np.float32))
        bank.write_json(os.path.join(folder, bank.META_FILE), dict(id=sample_id, slab=slab))
    return str(root)

#----------------------------------------------------------------------------
# A bank of balls of distinct radii (the reward-training tests' bank).

RES = 40                                                # slab_grid(40): slabs of 20 x 22 x 20.
CENTRE = (0.03, 0.02, 0.15)                             # Off the x = 0 mirror plane, so left-right flips change the input.


def ball_bank(root, count, seed=0, resolution=RES):
    """A bank of `count` balls of distinct radii (ids in random radius order); returns (folder, {id: radius})."""
    radii = np.random.RandomState(seed).permutation(np.linspace(0.06, 0.2, count))
    radii = {f'ball{i:02d}': float(r) for i, r in enumerate(radii)}
    g = slab_grid(resolution)
    return write_bank(root, {k: balls_volume(g, [(CENTRE, r)]) for k, r in radii.items()}, resolution), radii

#----------------------------------------------------------------------------
# Faces with noses (the annotator tests' volumes and bank).

FACE = ((0.0, 0.0, -0.3), 0.5)          # A big sphere whose front (z = 0.2) fills the slab like a face.
TIP = (0.0, 0.0, 0.2)                   # Where the nose (a small ball) sits on it.
NOSES = {f'face{i:02d}': nose for i, nose in zip([3, 7, 0, 9, 1, 4, 8, 2, 6, 5], np.linspace(0.02, 0.07, 10))}


def face_volume(grid, nose=None):
    """Raw sigma of the FACE sphere, with a ball of radius `nose` at TIP when given."""
    p = world_points(grid)
    sdf = ball_sdf(p, *FACE)
    if nose:
        sdf = np.minimum(sdf, ball_sdf(p, TIP, nose))
    return sigma_from_sdf(sdf)

#----------------------------------------------------------------------------
