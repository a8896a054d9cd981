"""The `pointcloud` reward: a fixed-size cloud of surface points, differentiable in the slab, scored by a PointNet."""

import torch
from torch import nn

from eg3d_rlhf.rewards.base import RewardNet
from torch_utils import misc

#----------------------------------------------------------------------------
# Surface points. A voxel is a candidate when the field crosses the level between it and its +1 neighbour along
# any axis. Its position moves by one Newton step toward the level set, p = q - (x(q) - level) g / |g|^2 with g
# the central-difference gradient (one-sided at the faces), each component of the step clamped to one voxel;
# p is thus a differentiable function of x. Candidates are taken in C order (x slowest) and num_points of them
# are picked evenly spaced along that list (each repeated when there are fewer); a slab with none gives zeros.

SURFACE_LEVEL = 50.0        # Normalised value of the surface (raw sigma 10 after the per-slab min-max to [0, 100]).


def _candidates(above):
    """Voxels [X, Y, Z] bool where `above` differs from its +1 neighbour along some axis."""
    mask = torch.zeros_like(above)
    mask[:-1] |= above[:-1] != above[1:]
    mask[:, :-1] |= above[:, :-1] != above[:, 1:]
    mask[:, :, :-1] |= above[:, :, :-1] != above[:, :, 1:]
    return mask


def surface_points(x, num_points=2048, surface_level=SURFACE_LEVEL):
    """Normalised slabs [N, X, Y, Z] -> surface points [N, num_points, 3], (x, y, z) scaled to [-1, 1] per axis."""
    misc.assert_shape(x, [None, None, None, None])
    shifted = x - surface_level
    grads = torch.stack(torch.gradient(x, dim=(1, 2, 3)), dim=-1)            # [N, X, Y, Z, 3], per voxel.
    extent = torch.tensor([s - 1 for s in x.shape[1:]], dtype=x.dtype, device=x.device)
    result = []
    for value, grad in zip(shifted, grads):
        index = _candidates(value >= 0).flatten().nonzero()[:, 0]
        if len(index) == 0:
            result.append(torch.zeros([num_points, 3], dtype=x.dtype, device=x.device))
            continue
        index = index[torch.arange(num_points, device=x.device) * len(index) // num_points]
        q = torch.stack(torch.unravel_index(index, value.shape), dim=-1).to(x.dtype)
        v, g = value.flatten()[index], grad.flatten(0, 2)[index]
        step = (-v[:, None] * g / (g.square().sum(dim=-1, keepdim=True) + 1e-6)).clamp(-1, 1)
        result.append((q + step) / extent * 2 - 1)
    return torch.stack(result)

#----------------------------------------------------------------------------

class PointCloudReward(RewardNet):
    def __init__(self,
        num_points      = 2048,                     # Surface points per slab.
        surface_level   = SURFACE_LEVEL,            # Normalised value of the surface the points sit on.
        widths          = (64, 128, 256),           # Widths of the shared per-point MLP; widths[-1] = feature size.
        hidden          = 256,                      # Hidden units of the scoring MLP.
    ):
        super().__init__()
        self.num_points, self.surface_level = num_points, surface_level
        layers = []
        for a, b in zip([3] + list(widths[:-1]), widths):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.SiLU()]  # Norm per point, so sizes survive.
        self.point_mlp = nn.Sequential(*layers)
        self.init_head(widths[-1], hidden)

    def points(self, x):
        """Normalised slabs [N, X, Y, Z] -> surface points [N, num_points, 3] in [-1, 1]."""
        return surface_points(x, self.num_points, self.surface_level)

    def features(self, x):
        """Prepared slabs [N, X, Y, Z] (by default self min-max to [0, 100]) -> global features [N, feature_dim]."""
        return self.point_mlp(self.points(x)).amax(dim=1)                     # Max over [N, num_points, widths[-1]].

#----------------------------------------------------------------------------
