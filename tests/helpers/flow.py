"""Flow generators for tests: a hand-written two-stage pipeline (blob, then patches) and the bundled heads' tiny preset."""

import torch
import torch.nn.functional as F
from torch import nn

from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.generators.flow import FlowGenerator, FlowPipeline, FlowStage

#----------------------------------------------------------------------------
# A second two-stage pipeline, written apart from any bundled model: stage 1 draws a 4^3 occupancy (a tiny
# MLP over the grid, t and a one-hot of 2 conditions, pulled toward a central blob, with a ridge in front under
# condition 1) and thresholds it; stage 2 draws
# a 2^3 patch per coarse voxel (a 1x1 convolution over patches) and assembles an 8^3 signed field, mapped to raw sigma
# with level 10 at the surface and inactive voxels empty.

EMPTY = -10.0


class OccupancyVelocity(nn.Module):
    """Stage 1's velocity: a tiny MLP over the 4^3 grid, t and the condition, pulled toward the blob (and ridge)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64 + 1 + 2, 32), nn.Tanh(), nn.Linear(32, 64))
        blob = torch.full([4, 4, 4], -2.0)
        blob[1:3, 1:3, 1:3] = 2.0                                 # The central 2^3 voxels end up occupied.
        nose = torch.zeros([4, 4, 4])
        nose[1:3, 1, 3] = 4.0                                     # Condition 1 grows a ridge toward +z (the face).
        self.register_buffer('blob', blob)
        self.register_buffer('nose', nose)

    def forward(self, x, t, cond, context):
        h = torch.cat([x.flatten(1), t[:, None], F.one_hot(cond, 2).float()], dim=1)
        return self.blob + self.nose * cond.view(-1, 1, 1, 1) + 0.3 * self.net(h).view_as(x)


class Occupancy(FlowStage):
    """Stage 1: a 4^3 occupancy, thresholded at 0 into the active coarse voxels."""

    name = 'occupancy'

    def data_shape(self, context):
        return (4, 4, 4)

    def decode(self, x1, context):
        return x1 > 0                                               # Not differentiable: the active coarse voxels.

    def encode(self, asset, context):
        active = asset.reshape(len(asset), 4, 2, 4, 2, 4, 2).amax(dim=(2, 4, 6)) > EMPTY
        return torch.where(active, 1.0, -1.0)


class PatchVelocity(nn.Module):
    """Stage 2's velocity: a 1x1 convolution over the 2^3 patches of the active voxels."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Conv1d(8 + 2, 8, kernel_size=1)

    def forward(self, x, t, cond, active):
        a = active.flatten(1).float()[..., None]                    # [N, 64, 1]
        h = torch.cat([x, t[:, None, None].expand(-1, 64, 1), a], dim=2)
        return (1.0 + 0.3 * self.mix(h.transpose(1, 2)).transpose(1, 2)) * a   # Inactive patches stay as drawn.


class Patches(FlowStage):
    """Stage 2: a 2^3 patch per coarse voxel, assembled into an 8^3 raw sigma with inactive voxels empty."""

    name = 'patches'

    def data_shape(self, context):
        return (64, 8)

    def decode(self, x1, active):
        n = len(x1)
        fine = x1.reshape(n, 4, 4, 4, 2, 2, 2).permute(0, 1, 4, 2, 5, 3, 6).reshape(n, 8, 8, 8)
        mask = active.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3)
        return torch.where(mask, 10 + 20 * fine, EMPTY)

    def encode(self, asset, active):
        patches = ((asset - 10) / 20).reshape(len(asset), 4, 2, 4, 2, 4, 2).permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, 64, 8)
        return patches * active.flatten(1)[..., None]


def tiny_pipeline():
    """The seeded two-stage blob-and-patches pipeline (2 conditions)."""
    torch.manual_seed(0)
    return FlowPipeline([Occupancy(OccupancyVelocity()), Patches(PatchVelocity())], conditions=2, name='blob-patches')


def tiny_generator(**kwargs):
    """A FlowGenerator of tiny_pipeline(): 4 steps, 32-pixel images, unless `kwargs` say otherwise."""
    return FlowGenerator(tiny_pipeline(), **dict(dict(steps=4, image_res=32), **kwargs))

#----------------------------------------------------------------------------
# The bundled flow heads' tiny preset.

TINY = flow_heads.PRESETS['tiny']


def save_tiny(path):
    """A flow checkpoint of the tiny preset (init seed 0) at `path`; returns the path as a string."""
    flow_heads.save_flow(str(path), flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    return str(path)

#----------------------------------------------------------------------------
