"""Training data of the bundled flow model: synthetic heads' families (the condition) and true SDFs on a fine grid."""

import math

import numpy as np
import torch
from tqdm import tqdm

from eg3d_rlhf.geometry.sigma import CubeGrid
from eg3d_rlhf.synthetic import world
from torch_utils import misc

#----------------------------------------------------------------------------
# Families. A head's family is a bucket of one score built from two of its drawn parameters: overall size
# (scale * cranium height, drawn around 0.88 * 0.29 with relative spreads 3% and 4%) and nose length (around 0.09,
# relative spread 10%). Each is standardised, their mean (scaled to unit variance) goes through the normal CDF, and
# [0, 1] is cut into `families` equal buckets: family 0 holds small heads with short noses, the last large heads
# with long noses, each about as common as the others. Head `index` of dataset `seed` is world.sample(seed, index)
# (clean, no defects); its family is its condition, so pairs drawn with one condition share a family.

SIZE_MEAN, SIZE_REL = 0.88 * 0.29, math.hypot(0.03, 0.04)
NOSE_MEAN, NOSE_REL = 0.09, 0.1


def family_score(head):
    """A score in (0, 1) of a world head (HeadParams), about uniform over the world's heads."""
    size = (head.scale * head.skull_radii[1] / SIZE_MEAN - 1) / SIZE_REL
    nose = (head.nose_length / NOSE_MEAN - 1) / NOSE_REL
    z = (size + nose) / math.sqrt(2)
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def head_family(head, families):
    """The family (condition) in 0..families-1 of a world head."""
    return min(int(family_score(head) * families), families - 1)


def sdf_grid(heads, resolution, cube_length=1.0, chunk=2**16):
    """True SDF [B, R, R, R] ((x, y, z) order, world units) of world samples on CubeGrid(R, cube_length)'s points."""
    grid = CubeGrid(resolution, cube_length)
    values = [world.sdf(heads, grid.points(begin, min(begin + chunk, grid.num_points)))
        for begin in range(0, grid.num_points, chunk)]
    sdf = torch.cat(values, dim=1).reshape(len(heads), resolution, resolution, resolution)
    misc.assert_shape(sdf, [len(heads), resolution, resolution, resolution])
    return sdf


def training_heads(seed, count, resolution, families, cube_length=1.0, batch=8, progress=False):
    """(true SDF [count, R, R, R], family [count] int64) of heads 0..count-1 of dataset `seed`."""
    sdfs, fams = [], []
    for begin in tqdm(range(0, count, batch), desc='heads', unit='batch', disable=not progress):
        heads = [world.sample(seed, index) for index in range(begin, min(begin + batch, count))]
        sdfs.append(sdf_grid(heads, resolution, cube_length))
        fams.extend(head_family(h.head, families) for h in heads)
    return torch.cat(sdfs), torch.tensor(np.array(fams, dtype=np.int64))

#----------------------------------------------------------------------------
