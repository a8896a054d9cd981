"""Fixed geometric features of a sigma slab: soft occupancy, surface area, orientation and curvature of level sets, per cell."""

import torch
import torch.nn.functional as F
from torch import nn

from torch_utils import misc

#----------------------------------------------------------------------------
# What people judge is the mesh at a density level (EG3D's gen_samples and every tool here: raw sigma 10). Near that
# level, a slab's geometry is its soft occupancy o = sigmoid((sigma - level) / width); from o, with fixed stencils
# (central differences, the 7-point Laplacian), each voxel gets 10 channels:
#   o                       volume
#   |grad o|                surface area density
#   g_i g_j / |grad o|      area-weighted orientation (the structure tensor's 6 entries: xx, yy, zz, xy, xz, yz)
#   lap o, |lap o|          curvature (signed mean curvature times area, and its size: bumps, dents, floaters)
# averaged over a coarse grid of cells (and over the whole slab). No weight is learned, so the features of a bank are
# computed once and a few thousand judgements train only the head on top; gradients flow to sigma for fine-tuning.

CHANNELS = ('occupancy', 'area', 'n_xx', 'n_yy', 'n_zz', 'n_xy', 'n_xz', 'n_yz', 'laplacian', 'abs_laplacian')


class LevelSetFeatures(nn.Module):
    """Prepared slabs [N, X, Y, Z] (raw sigma units) -> features [N, len(levels) * 10 * (prod(cells) + 1)]."""

    def __init__(self,
        levels  = (5.0, 10.0, 20.0),    # Density levels whose soft occupancy is read (the mesh level among them).
        width   = 1.0,                  # Softness of the occupancy step, in sigma units.
        cells   = (4, 4, 4),            # Cells per axis the channels are averaged over (adaptive: any slab size).
    ):
        super().__init__()
        self.levels, self.width, self.cells = [float(v) for v in levels], float(width), tuple(int(c) for c in cells)
        self.dim = len(self.levels) * len(CHANNELS) * (self.cells[0] * self.cells[1] * self.cells[2] + 1)

    def level_channels(self, x, level):
        """[N, 10, X - 2, Y - 2, Z - 2]: the per-voxel channels of one level (the border voxels, whose stencils would
        reach outside, are left out)."""
        o = torch.sigmoid((x[:, None] - level) / self.width)
        inner = o[:, :, 1:-1, 1:-1, 1:-1]
        lo = [o[:, :, :-2, 1:-1, 1:-1], o[:, :, 1:-1, :-2, 1:-1], o[:, :, 1:-1, 1:-1, :-2]]    # Neighbours at -1 and +1
        hi = [o[:, :, 2:, 1:-1, 1:-1], o[:, :, 1:-1, 2:, 1:-1], o[:, :, 1:-1, 1:-1, 2:]]       # along x, y, z.
        g = [(h - l) * 0.5 for h, l in zip(hi, lo)]                                             # Central differences.
        lap = sum(h + l for h, l in zip(hi, lo)) - 6 * inner                                     # 7-point Laplacian.
        area = (g[0].square() + g[1].square() + g[2].square() + 1e-12).sqrt()
        gg = [g[i] * g[j] / area for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
        return torch.cat([inner, area, *gg, lap, lap.abs()], dim=1)

    def channels(self, x):
        """[N, len(levels) * 10, X - 2, Y - 2, Z - 2]: every level's channels."""
        misc.assert_shape(x, [None, None, None, None])
        return torch.cat([self.level_channels(x, level) for level in self.levels], dim=1)

    def forward(self, x):
        misc.assert_shape(x, [None, None, None, None])
        local, whole = [], []
        for level in self.levels:                       # One level's full-resolution channels alive at a time.
            c = self.level_channels(x, level)
            local.append(F.adaptive_avg_pool3d(c, self.cells))
            whole.append(c.mean(dim=(2, 3, 4)))
        return torch.cat([torch.cat(local, dim=1).flatten(1), *whole], dim=1)

#----------------------------------------------------------------------------
