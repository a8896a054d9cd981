"""MipRayMarcher2: composite colours and depths along rays with the volume rendering equation (MipNeRF style)."""

import torch
import torch.nn.functional as F

#----------------------------------------------------------------------------
# Not a persistent class: EG3D pickles refer to it by name and restore an empty instance __dict__ into it.

class MipRayMarcher2(torch.nn.Module):
    def forward(self, colors, densities, depths, rendering_options):
        """Composite [N, R, S, C] colours, [N, R, S, 1] raw densities at [N, R, S, 1] sorted depths.

        Works on the S-1 intervals between consecutive samples (midpoint colour, density and depth).
        Returns (rgb [N, R, C] scaled to [-1, 1], depth [N, R, 1], weights [N, R, S-1, 1]).
        """
        assert rendering_options['clamp_mode'] == 'softplus', 'MipRayMarcher2 supports only clamp_mode=softplus'
        deltas = depths[:, :, 1:] - depths[:, :, :-1]
        colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
        densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
        depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2

        # Density activation with a -1 bias; opacity of each interval.
        densities_mid = F.softplus(densities_mid - 1)
        alpha = 1 - torch.exp(-(densities_mid * deltas))

        # Transmittance up to (not including) each interval, then the per-interval weights.
        transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2), -2)
        weights = alpha * transmittance[:, :, :-1]

        rgb = torch.sum(weights * colors_mid, -2)
        weight_total = weights.sum(2)
        depth = torch.sum(weights * depths_mid, -2) / weight_total

        # Empty rays (0/0) go to the far end; every depth is clamped to the sampled range.
        depth = torch.nan_to_num(depth, float('inf'))
        depth = torch.clamp(depth, torch.min(depths), torch.max(depths))

        if rendering_options.get('white_back', False):
            rgb = rgb + 1 - weight_total
        rgb = rgb * 2 - 1
        return rgb, depth, weights

#----------------------------------------------------------------------------
