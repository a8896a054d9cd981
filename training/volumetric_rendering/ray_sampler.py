"""RaySampler: one ray per pixel centre from OpenCV cam2world matrices and normalised intrinsics."""

import torch

#----------------------------------------------------------------------------
# Not a persistent class: EG3D pickles refer to it by name and restore its instance __dict__ into it.

class RaySampler(torch.nn.Module):
    def __init__(self):
        super().__init__()
        # Unused; EG3D instances carry these five attributes, so ours do too (same pickled state).
        self.ray_origins_h, self.ray_directions, self.depths, self.image_coords, self.rendering_options = None, None, None, None, None

    def forward(self, cam2world_matrix, intrinsics, resolution):
        """Rays through the pixel centres of a resolution x resolution image, row-major (y outer, x inner).

        cam2world_matrix [N, 4, 4], intrinsics [N, 3, 3] normalised by image size.
        Returns ray_origins [N, M, 3] and unit ray_dirs [N, M, 3], M = resolution ** 2.
        """
        N, M = cam2world_matrix.shape[0], resolution ** 2
        device = cam2world_matrix.device
        cam_locs_world = cam2world_matrix[:, :3, 3]
        fx = intrinsics[:, 0, 0].unsqueeze(-1)
        fy = intrinsics[:, 1, 1].unsqueeze(-1)
        cx = intrinsics[:, 0, 2].unsqueeze(-1)
        cy = intrinsics[:, 1, 2].unsqueeze(-1)
        sk = intrinsics[:, 0, 1].unsqueeze(-1)

        # Normalised pixel centres in [0, 1].
        centers = torch.arange(resolution, dtype=torch.float32, device=device) * (1. / resolution) + (0.5 / resolution)
        v, u = torch.meshgrid(centers, centers, indexing='ij')
        x_cam = u.reshape(1, M).repeat(N, 1)
        y_cam = v.reshape(1, M).repeat(N, 1)
        z_cam = torch.ones((N, M), device=device)

        # Unproject onto the z=1 plane in camera space (undoing skew), then move to world space.
        x_lift = (x_cam - cx + cy * sk / fy - sk * y_cam / fy) / fx
        y_lift = (y_cam - cy) / fy
        cam_rel_points = torch.stack((x_lift, y_lift, z_cam, torch.ones_like(z_cam)), dim=-1)
        world_rel_points = torch.bmm(cam2world_matrix, cam_rel_points.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]

        ray_dirs = torch.nn.functional.normalize(world_rel_points - cam_locs_world[:, None, :], dim=2)
        ray_origins = cam_locs_world.unsqueeze(1).repeat(1, M, 1)
        return ray_origins, ray_dirs

#----------------------------------------------------------------------------
