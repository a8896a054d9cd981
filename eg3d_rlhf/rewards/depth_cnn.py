"""The `depth` reward: soft, differentiable depth maps of the slab from a few yaws, then a residual 2D CNN (the sigma reward's blocks in 2D)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from eg3d_rlhf.geometry.preview import VIEWS
from eg3d_rlhf.rewards.base import RewardNet
from eg3d_rlhf.rewards.sigma_cnn import ResidualSEBlock
from torch_utils import misc

#----------------------------------------------------------------------------
# Rendering. Positions are measured in voxels from the slab's centre (voxels are cubes, so this is the world
# up to scale). The render cube has half-width R = the slab's largest half-extent and `res` samples per axis;
# it is turned to face the camera of preview.VIEWS (yaw about the y axis, then pitch), read from the slab by
# trilinear interpolation (outside the slab reads 0, i.e. empty) and composited front to back along its depth
# axis. Image row 0 is the top (world up), column 0 the camera's left, depth 0 the plane nearest the camera.

SURFACE_LEVEL = 50.0        # Normalised value of the surface (raw sigma 10 after the per-slab min-max to [0, 100]).


def _render_theta(shape, yaw_deg, pitch_deg, device):
    """affine_grid matrix [1, 3, 4]: render-cube coordinates (col, row, depth) in [-1, 1] -> slab grid coordinates."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    eye = torch.tensor([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    right = torch.tensor([math.cos(yaw), 0.0, -math.sin(yaw)])
    up = torch.linalg.cross(right, -eye)
    half = torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.float32)   # Half-extent of each axis, voxels.
    radius = float(half.max())
    # Column +1 lies to the right, row +1 at the bottom, depth +1 on the far side: p = R (c right - r up - d eye).
    basis = torch.stack([right, -up, -eye], dim=1) * radius                  # [3 world axes, 3 render axes]
    theta = torch.cat([basis / half[:, None], torch.zeros([3, 1])], dim=1)   # Voxels -> slab's [-1, 1] per axis.
    return theta[None].to(device)


def render_depth(x, yaw_deg, res=64, surface_level=SURFACE_LEVEL, softness=2.0, pitch_deg=0.0):
    """Normalised slabs [N, X, Y, Z] -> expected depth [N, res, res] in [0, 1] seen from (yaw, pitch) in degrees.

    alpha = sigmoid((v - surface_level) / softness) per sample; transmittance left after the last sample ends at 1.
    """
    misc.assert_shape(x, [None, None, None, None])
    n = x.shape[0]
    theta = _render_theta(x.shape[1:], yaw_deg, pitch_deg, x.device).to(x.dtype).expand(n, 3, 4)
    grid = F.affine_grid(theta, [n, 1, res, res, res], align_corners=True)   # [N, depth, row, col, 3]
    volume = x.permute(0, 3, 2, 1)[:, None]                                  # [N, 1, Z, Y, X]: grid (x, y, z) order.
    values = F.grid_sample(volume, grid, mode='bilinear', padding_mode='zeros', align_corners=True)[:, 0]
    alpha = torch.sigmoid((values - surface_level) / softness)               # [N, depth, row, col]
    through = torch.cumprod(1 - alpha, dim=1)
    transmittance = torch.cat([torch.ones_like(through[:, :1]), through[:, :-1]], dim=1)   # Exclusive product.
    planes = torch.linspace(0, 1, res, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (transmittance * alpha * planes).sum(dim=1) + through[:, -1]

#----------------------------------------------------------------------------

class DepthReward(RewardNet):
    def __init__(self,
        views           = ('front', 'three_quarter', 'profile'),   # Names in preview.VIEWS; one depth map each.
        render_res      = 64,                       # Samples per axis of the render cube (map side and depth steps).
        surface_level   = SURFACE_LEVEL,            # Normalised value where opacity is one half.
        softness        = 2.0,                      # Width of the opacity sigmoid, normalised units.
        channels        = (32, 64, 128, 256, 256),  # Width after the stem and after each strided block.
        hidden          = 256,                      # Hidden units of the scoring MLP.
    ):
        super().__init__()
        unknown = [v for v in views if v not in VIEWS]
        if unknown or not views:
            raise ValueError(f'Unknown views {unknown}; choose from {sorted(VIEWS)}')
        self.views, self.render_res = list(views), render_res
        self.surface_level, self.softness = surface_level, softness
        self.stem = nn.Sequential(nn.Conv2d(len(views), channels[0], 3, padding=1, bias=False),
            nn.GroupNorm(min(8, channels[0]), channels[0]), nn.SiLU())
        self.blocks = nn.Sequential(*[ResidualSEBlock(a, b, dims=2) for a, b in zip(channels[:-1], channels[1:])])
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.init_head(channels[-1] * 16, hidden)

    def depth_maps(self, x):
        """Normalised slabs [N, X, Y, Z] -> depth maps [N, len(views), render_res, render_res] in [0, 1]."""
        misc.assert_shape(x, [None, None, None, None])
        return torch.stack([render_depth(x, VIEWS[v][0], self.render_res, self.surface_level, self.softness,
            pitch_deg=VIEWS[v][1]) for v in self.views], dim=1)

    def features(self, x):
        """Prepared slabs [N, X, Y, Z] (by default self min-max to [0, 100]) -> global features [N, feature_dim]."""
        y = self.blocks(self.stem(self.depth_maps(x)))
        return self.pool(y).flatten(1)

#----------------------------------------------------------------------------
