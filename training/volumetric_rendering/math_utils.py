"""Small tensor helpers for the renderer: vector normalisation, batched linspace, ray/box intersection."""

import torch

#----------------------------------------------------------------------------

def normalize_vecs(vectors):
    """Scale each vector along the last axis to unit length (no epsilon, like EG3D)."""
    return vectors / torch.norm(vectors, dim=-1, keepdim=True)


def linspace(start, stop, num):
    """Tensor-valued numpy.linspace: [num, *start.shape], from `start` to `stop` inclusive, per element."""
    steps = torch.arange(num, dtype=torch.float32, device=start.device) / (num - 1)
    steps = steps.reshape(num, *([1] * start.ndim))
    return start[None] + steps * (stop - start)[None]

#----------------------------------------------------------------------------

def get_ray_limits_box(rays_o, rays_d, box_side_length):
    """Entry and exit distances of rays through the axis-aligned cube of side `box_side_length` at the origin.

    Slab method (one interval per axis, intersected axis by axis in x, y, z order). Returns two tensors
    shaped like rays_o[..., :1]; rays that miss the cube get start -1 and end -2, so that end < start.
    """
    shape = rays_o.shape
    rays_o = rays_o.detach().reshape(-1, 3)
    rays_d = rays_d.detach().reshape(-1, 3)
    half = torch.tensor(box_side_length / 2, dtype=rays_o.dtype, device=rays_o.device)

    # Per axis, the slab face a ray meets first depends on the sign of 1/d (so -0.0 counts as negative).
    inv_d = 1 / rays_d
    backwards = inv_d < 0
    near_face = torch.where(backwards, half, -half)
    far_face = torch.where(backwards, -half, half)
    t_near = (near_face - rays_o) * inv_d
    t_far = (far_face - rays_o) * inv_d

    # Shrink the x interval by the y then the z interval; disjoint intervals mean a miss.
    t_start, t_end = t_near[:, 0], t_far[:, 0]
    hit = torch.ones_like(t_start, dtype=torch.bool)
    for axis in (1, 2):
        hit &= ~torch.logical_or(t_start > t_far[:, axis], t_near[:, axis] > t_end)
        t_start = torch.max(t_start, t_near[:, axis])
        t_end = torch.min(t_end, t_far[:, axis])

    t_start = t_start.masked_fill(~hit, -1)
    t_end = t_end.masked_fill(~hit, -2)
    return t_start.reshape(*shape[:-1], 1), t_end.reshape(*shape[:-1], 1)

#----------------------------------------------------------------------------
