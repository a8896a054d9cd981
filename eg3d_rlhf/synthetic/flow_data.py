"""Training data of the bundled flow model: synthetic heads' families (the condition) and true SDFs on a fine grid."""

import dataclasses
import math

import numpy as np
import torch
from tqdm import tqdm

from eg3d_rlhf.geometry.sigma import CubeGrid
from eg3d_rlhf.synthetic import world
from torch_utils import misc

#----------------------------------------------------------------------------
# Heads and families. Head `index` of dataset `seed` is world.sample(seed, index) (clean, no defects) grown or shrunk
# about its origin by its build, a factor drawn uniformly from [1 - spread, 1 + spread] by its own generator (seeded by
# seed, index and BUILD_STREAM): the world's heads vary in size by only ~5%, a fraction of one 16^3 structure voxel, so
# the build gives the structure stage a decision of its own (spread 0.15: the face surface moves by up to ~0.5 voxel
# either way). A head's family (its condition) is a bucket of its face shape: face and jaw half-widths, each standardised
# by the world's spreads, their mean (scaled to unit variance) through the normal CDF, [0, 1] cut into `families` equal
# buckets: family 0 holds narrow faces, the last broad ones, each about as common as the others. Build and nose length
# vary freely within a family, so pairs drawn within one condition can disagree on both.

FACE_MEAN, FACE_REL = 0.185, 0.05
JAW_MEAN, JAW_REL = 0.15, 0.08
BUILD_STREAM = 1


def family_score(head):
    """A score in (0, 1) of a world head (HeadParams), about uniform over the world's heads."""
    face = (head.face_width / FACE_MEAN - 1) / FACE_REL
    jaw = (head.jaw_width / JAW_MEAN - 1) / JAW_REL
    z = (face + jaw) / math.sqrt(2)
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def head_family(head, families):
    """The family (condition) in 0..families-1 of a world head."""
    return min(int(family_score(head) * families), families - 1)


def build(seed, index, spread):
    """The build (size factor) of head `index` of dataset `seed`, uniform in [1 - spread, 1 + spread]."""
    if not 0 <= spread < 1:
        raise ValueError(f'build spread must be in [0, 1), got {spread!r}')
    return float(1 + spread * np.random.default_rng([int(seed), int(index), BUILD_STREAM]).uniform(-1, 1))


def flow_head(seed, index, spread):
    """World sample `index` of dataset `seed` scaled by its build about its origin (world = origin + scale * local)."""
    sample = world.sample(seed, index)
    head = dataclasses.replace(sample.head, scale=sample.head.scale * build(seed, index, spread))
    return dataclasses.replace(sample, head=head)


def sdf_grid(heads, resolution, cube_length=1.0, chunk=2**16):
    """True SDF [B, R, R, R] ((x, y, z) order, world units) of world samples on CubeGrid(R, cube_length)'s points."""
    grid = CubeGrid(resolution, cube_length)
    values = [world.sdf(heads, grid.points(begin, min(begin + chunk, grid.num_points)))
        for begin in range(0, grid.num_points, chunk)]
    sdf = torch.cat(values, dim=1).reshape(len(heads), resolution, resolution, resolution)
    misc.assert_shape(sdf, [len(heads), resolution, resolution, resolution])
    return sdf


def training_heads(seed, count, resolution, families, cube_length=1.0, build_spread=0.0, batch=8, progress=False):
    """(true SDF [count, R, R, R], family [count] int64) of flow heads 0..count-1 of dataset `seed`."""
    sdfs, fams = [], []
    for begin in tqdm(range(0, count, batch), desc='heads', unit='batch', disable=not progress):
        heads = [flow_head(seed, index, build_spread) for index in range(begin, min(begin + batch, count))]
        sdfs.append(sdf_grid(heads, resolution, cube_length))
        fams.extend(head_family(h.head, families) for h in heads)
    return torch.cat(sdfs), torch.tensor(np.array(fams, dtype=np.int64))

#----------------------------------------------------------------------------
