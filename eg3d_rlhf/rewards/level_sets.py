"""Fixed geometric features of a sigma slab: soft occupancy, surface area, orientation and curvature of level sets, per cell."""

import torch
import torch.nn.functional as F
from torch import nn

from torch_utils import misc

#----------------------------------------------------------------------------
# What people judge is the mesh at a density level (EG3D's gen_samples and every tool here: raw sigma 10). Near that
# level, a slab's geometry is its soft occupancy o = sigmoid((sigma - level) / width); from o, with fixed stencils,
# each voxel gets 10 channels:
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
        self.register_buffer('stencils', self.make_stencils(), persistent=False)
        self.dim = len(self.levels) * len(CHANNELS) * (self.cells[0] * self.cells[1] * self.cells[2] + 1)

    @staticmethod
    def make_stencils():
        """[4, 1, 3, 3, 3]: central differences along x, y, z and the 7-point Laplacian."""
        k = torch.zeros(4, 1, 3, 3, 3)
        for axis in range(3):
            lo, hi = [1, 1, 1], [1, 1, 1]
            lo[axis], hi[axis] = 0, 2
            k[axis, 0][tuple(lo)], k[axis, 0][tuple(hi)] = -0.5, 0.5
            k[3, 0][tuple(lo)] = k[3, 0][tuple(hi)] = 1.0
        k[3, 0, 1, 1, 1] = -6.0
        return k

    def channels(self, x):
        """[N, len(levels) * 10, X - 2, Y - 2, Z - 2]: the per-voxel channels of every level (the border voxels, whose
        stencils would reach outside, are left out)."""
        misc.assert_shape(x, [None, None, None, None])
        out = []
        for level in self.levels:
            o = torch.sigmoid((x[:, None] - level) / self.width)
            d = F.conv3d(o, self.stencils.to(o.dtype))
            g, lap = d[:, :3], d[:, 3:]
            area = (g.square().sum(dim=1, keepdim=True) + 1e-12).sqrt()
            gg = [g[:, i:i + 1] * g[:, j:j + 1] / area for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
            out += [o[:, :, 1:-1, 1:-1, 1:-1], area, *gg, lap, lap.abs()]
        return torch.cat(out, dim=1)

    def forward(self, x):
        c = self.channels(x)
        local = F.adaptive_avg_pool3d(c, self.cells).flatten(1)
        return torch.cat([local, c.mean(dim=(2, 3, 4))], dim=1)

#----------------------------------------------------------------------------
