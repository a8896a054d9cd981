"""ImportanceRenderer: samples tri-plane features along rays (stratified, then importance) and composites them."""

import torch

from torch_utils import misc
from training.volumetric_rendering import math_utils
from training.volumetric_rendering.ray_marcher import MipRayMarcher2

#----------------------------------------------------------------------------
# Tri-plane geometry.

def generate_planes():
    """Axes of the three feature planes, [3, 3, 3]: each plane's rows are its (u, v, normal) directions.

    Projecting with these gives (x, y), (x, z) and (z, x) coordinates. The third plane is ZX, not YZ;
    released EG3D weights were trained with it.
    """
    return torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                         [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                         [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)


def project_onto_planes(planes, coordinates):
    """In-plane coordinates [N * n_planes, M, 2] of points [N, M, 3] on planes given by their axes [n_planes, 3, 3]."""
    N, M, _ = coordinates.shape
    n_planes = planes.shape[0]
    coordinates = coordinates.unsqueeze(1).expand(-1, n_planes, -1, -1).reshape(N * n_planes, M, 3)
    inv_planes = torch.linalg.inv(planes).unsqueeze(0).expand(N, -1, -1, -1).reshape(N * n_planes, 3, 3)
    return torch.bmm(coordinates, inv_planes)[..., :2]


def sample_from_planes(plane_axes, plane_features, coordinates, mode='bilinear', padding_mode='zeros', box_warp=None):
    """Bilinearly sample plane features [N, n_planes, C, H, W] at points [N, M, 3] -> [N, n_planes, M, C].

    The cube of side `box_warp` centred at the origin maps onto the full extent of every plane.
    """
    assert padding_mode == 'zeros'
    N, n_planes, C, H, W = plane_features.shape
    M = coordinates.shape[1]
    plane_features = plane_features.view(N * n_planes, C, H, W)
    coordinates = (2 / box_warp) * coordinates
    grid = project_onto_planes(plane_axes, coordinates).unsqueeze(1)
    features = torch.nn.functional.grid_sample(plane_features, grid.float(), mode=mode, padding_mode=padding_mode, align_corners=False)
    return features.permute(0, 3, 2, 1).reshape(N, n_planes, M, C)

_PLANE_AXES = generate_planes()    # What the fused op assumes (official pickles carry exactly these).

#----------------------------------------------------------------------------
# Not a persistent class: EG3D pickles refer to it by name and restore its instance __dict__ (the submodule
# `ray_marcher` and the plain tensor `plane_axes`) without calling __init__. Keep forward to those two.

class ImportanceRenderer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ray_marcher = MipRayMarcher2()
        self.plane_axes = generate_planes() # Plain attribute, not a buffer: absent from state dicts.

    def forward(self, planes, decoder, ray_origins, ray_directions, rendering_options):
        """Render rays [N, M, 3] through tri-planes [N, 3, C, H, W] with `decoder`.

        Returns (features [N, M, C_out], depth [N, M, 1], accumulated opacity [N, M, 1]).
        """
        misc.assert_shape(planes, [None, 3, None, None, None])
        misc.assert_shape(ray_origins, [planes.shape[0], None, 3])
        misc.assert_shape(ray_directions, list(ray_origins.shape))
        opts = rendering_options

        # Coarse pass: stratified depths, between the box faces when the limits are 'auto'.
        if opts['ray_start'] == opts['ray_end'] == 'auto':
            ray_start, ray_end = math_utils.get_ray_limits_box(ray_origins, ray_directions, box_side_length=opts['box_warp'])
            # Rays that miss the box borrow the smallest / largest valid *start* (EG3D's exact rule).
            is_ray_valid = ray_end > ray_start
            if torch.any(is_ray_valid).item():
                ray_start[~is_ray_valid] = ray_start[is_ray_valid].min()
                ray_end[~is_ray_valid] = ray_start[is_ray_valid].max()
        else:
            ray_start, ray_end = opts['ray_start'], opts['ray_end']
        depths_coarse = self.sample_stratified(ray_origins, ray_start, ray_end, opts['depth_resolution'], opts['disparity_space_sampling'])
        colors_coarse, densities_coarse = self._evaluate(planes, decoder, ray_origins, ray_directions, depths_coarse, opts)

        # Fine pass: importance samples from the coarse weights, merged with the coarse samples in depth order.
        n_importance = opts['depth_resolution_importance']
        if n_importance > 0:
            _, _, weights = self.ray_marcher(colors_coarse, densities_coarse, depths_coarse, opts)
            depths_fine = self.sample_importance(depths_coarse, weights, n_importance)
            colors_fine, densities_fine = self._evaluate(planes, decoder, ray_origins, ray_directions, depths_fine, opts)
            depths, colors, densities = self.unify_samples(depths_coarse, colors_coarse, densities_coarse, depths_fine, colors_fine, densities_fine)
        else:
            depths, colors, densities = depths_coarse, colors_coarse, densities_coarse

        rgb, depth, weights = self.ray_marcher(colors, densities, depths, opts)
        return rgb, depth, weights.sum(2)

    def _evaluate(self, planes, decoder, ray_origins, ray_directions, depths, options):
        """Decoder colours [N, M, S, C] and raw densities [N, M, S, 1] at depths [N, M, S, 1] along the rays."""
        N, M, S, _ = depths.shape
        coordinates = (ray_origins.unsqueeze(-2) + depths * ray_directions.unsqueeze(-2)).reshape(N, -1, 3)
        directions = ray_directions.unsqueeze(-2).expand(-1, -1, S, -1).reshape(N, -1, 3)
        out = self.run_model(planes, decoder, coordinates, directions, options)
        colors = out['rgb'].reshape(N, M, S, out['rgb'].shape[-1])
        densities = out['sigma'].reshape(N, M, S, 1)
        return colors, densities

    def run_model(self, planes, decoder, sample_coordinates, sample_directions, options, rgbs_thru_sigmoid=True,
            planes_cl=None, sigma_only=False):
        """Decoder output {'rgb': [N, P, C], 'sigma': [N, P, 1] raw} at arbitrary points [N, P, 3].

        rgbs_thru_sigmoid=False asks the decoder for raw rgb features (OSGDecoder's sigmoid_final); the EG3D fork of
        "Sculpting NeRF Geometry" passes it from the TriPlaneGenerator its pickles embed. Where the decoder offers
        `fused` (OSGDecoder) and the compiled op runs (CPU), plane sampling and decoder are one op: planes_cl
        (triplane_sigma.channels_last(planes)) saves it a copy of the planes and sigma_only leaves 'rgb' out there.
        """
        out = None
        if hasattr(decoder, 'fused') and torch.equal(self.plane_axes, _PLANE_AXES):
            out = decoder.fused(planes, sample_coordinates, options['box_warp'], sigmoid_final=rgbs_thru_sigmoid,
                sigma_only=sigma_only, planes_cl=planes_cl)
        if out is None:
            plane_axes = self.plane_axes.to(sample_coordinates.device)
            sampled_features = sample_from_planes(plane_axes, planes, sample_coordinates, padding_mode='zeros', box_warp=options['box_warp'])
            if rgbs_thru_sigmoid:
                out = decoder(sampled_features, sample_directions)
            else:
                out = decoder(sampled_features, sample_directions, sigmoid_final=False)
        if options.get('density_noise', 0) > 0:
            out['sigma'] += torch.randn_like(out['sigma']) * options['density_noise']
        return out

    #------------------------------------------------------------------------
    # Sample placement.

    def sample_stratified(self, ray_origins, ray_start, ray_end, depth_resolution, disparity_space_sampling=False):
        """Depths [N, M, S, 1]: S evenly spaced bins per ray, each jittered forward by up to one bin.

        ray_start / ray_end are floats or per-ray tensors [N, M, 1]. With disparity_space_sampling the bins
        are even in inverse depth instead.
        """
        N, M, _ = ray_origins.shape
        if disparity_space_sampling:
            depths = torch.linspace(0, 1, depth_resolution, device=ray_origins.device).reshape(1, 1, depth_resolution, 1).repeat(N, M, 1, 1)
            depths += torch.rand_like(depths) * (1 / (depth_resolution - 1))
            return 1. / (1. / ray_start * (1. - depths) + 1. / ray_end * depths)
        if isinstance(ray_start, torch.Tensor):
            depths = math_utils.linspace(ray_start, ray_end, depth_resolution).permute(1, 2, 0, 3)
            depth_delta = ((ray_end - ray_start) / (depth_resolution - 1))[..., None]
        else:
            depths = torch.linspace(ray_start, ray_end, depth_resolution, device=ray_origins.device).reshape(1, 1, depth_resolution, 1).repeat(N, M, 1, 1)
            depth_delta = (ray_end - ray_start) / (depth_resolution - 1)
        depths += torch.rand_like(depths) * depth_delta
        return depths

    def sample_importance(self, z_vals, weights, N_importance):
        """Depths [N, M, N_importance, 1] drawn from the smoothed coarse weights (NeRF hierarchical sampling)."""
        with torch.no_grad():
            N, M, S, _ = z_vals.shape
            z_vals = z_vals.reshape(N * M, S)
            weights = weights.reshape(N * M, -1) # S - 1 interval weights.

            # Smooth: max over neighbouring pairs (S values), mean over pairs again (S - 1), plus a floor.
            weights = torch.nn.functional.max_pool1d(weights.unsqueeze(1).float(), 2, 1, padding=1)
            weights = torch.nn.functional.avg_pool1d(weights, 2, 1).squeeze(1)
            weights = weights + 0.01

            # Bins are the S - 1 midpoints; the S - 3 inner weights fill the S - 2 gaps between them.
            z_vals_mid = 0.5 * (z_vals[:, :-1] + z_vals[:, 1:])
            samples = self.sample_pdf(z_vals_mid, weights[:, 1:-1], N_importance)
            return samples.detach().reshape(N, M, N_importance, 1)

    def sample_pdf(self, bins, weights, N_importance, det=False, eps=1e-5):
        """Inverse-transform sampling of the piecewise-constant pdf `weights` [R, B] over bin edges `bins` [R, B + 1].

        Returns [R, N_importance] samples; det=True uses evenly spaced quantiles instead of torch.rand.
        """
        n_rays, n_bins = weights.shape
        weights = weights + eps
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1) # [R, B + 1], from 0 to 1.

        if det:
            u = torch.linspace(0, 1, N_importance, device=bins.device).expand(n_rays, N_importance)
        else:
            u = torch.rand(n_rays, N_importance, device=bins.device)
        u = u.contiguous()

        # Bracket each quantile between two cdf knots and interpolate the bin edge linearly.
        above = torch.searchsorted(cdf, u, right=True)
        below = torch.clamp_min(above - 1, 0)
        above = torch.clamp_max(above, n_bins)
        knots = torch.stack([below, above], -1).view(n_rays, 2 * N_importance)
        cdf_g = torch.gather(cdf, 1, knots).view(n_rays, N_importance, 2)
        bins_g = torch.gather(bins, 1, knots).view(n_rays, N_importance, 2)

        denom = cdf_g[..., 1] - cdf_g[..., 0]
        denom = torch.where(denom < eps, torch.ones_like(denom), denom) # Empty bins are never picked; any value works.
        return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])

    #------------------------------------------------------------------------
    # Merging sample sets.

    def sort_samples(self, all_depths, all_colors, all_densities):
        """Reorder samples [N, M, S, *] of every ray by increasing depth."""
        _, indices = torch.sort(all_depths, dim=-2)
        all_depths = torch.gather(all_depths, -2, indices)
        all_colors = torch.gather(all_colors, -2, indices.expand(-1, -1, -1, all_colors.shape[-1]))
        all_densities = torch.gather(all_densities, -2, indices.expand(-1, -1, -1, 1))
        return all_depths, all_colors, all_densities

    def unify_samples(self, depths1, colors1, densities1, depths2, colors2, densities2):
        """Concatenate two sample sets along each ray and sort the result by depth."""
        all_depths = torch.cat([depths1, depths2], dim=-2)
        all_colors = torch.cat([colors1, colors2], dim=-2)
        all_densities = torch.cat([densities1, densities2], dim=-2)
        return self.sort_samples(all_depths, all_colors, all_densities)

#----------------------------------------------------------------------------
