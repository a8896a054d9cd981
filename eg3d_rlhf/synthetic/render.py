"""Sphere-tracing renderer of the synthetic heads: RGB (Lambertian) and depth from EG3D camera labels."""

import torch

from dnnlib import EasyDict
from torch_utils import misc
from training.volumetric_rendering import math_utils
from training.volumetric_rendering.ray_sampler import RaySampler
from eg3d_rlhf.synthetic import world
from eg3d_rlhf.synthetic.sdf_ops import V

#----------------------------------------------------------------------------
# Rays come from EG3D's RaySampler (pixel centres, OpenCV cameras), so a world point projected through a
# label c lands on the pixel whose ray hits it. Tracing starts where the ray enters the box [-0.5, 0.5]^3
# and stops where it leaves; depth is the distance along the unit ray, as in EG3D's depth images.

BACKGROUND = (1.0, 1.0, 1.0)        # White, as the synthetic preset renders empty space (white_back).
LIGHT = (0.45, 0.6, 1.0)            # Direction toward the key light (world space, normalised below).
AMBIENT = 0.38                      # Ambient term of the shading.
DIFFUSE = 0.72                      # Lambertian term.


def _trace(rows, origins, dirs, t, t_end, max_steps, step_scale, tolerance):
    """Sphere tracing of rays (V of [R]) with gathered parameters rows. Returns t [R] and hit [R] (bool).

    The live rays are compacted (arrays and parameters) only when a third of them have finished, not at
    every step: gathering costs more than evaluating a few finished rays again.
    """
    hit = torch.zeros_like(t, dtype=torch.bool)
    t = t.clone()
    ids = torch.nonzero(t_end > t)[:, 0]
    live = torch.ones_like(ids, dtype=torch.bool)
    rows, o, d, t_live, t_stop = world.subset(rows, t_end > t), origins[ids], dirs[ids], t[ids], t_end[ids]
    for step in range(max_steps + 1):
        if live.sum() < 0.67 * len(live):
            t[ids] = t_live
            ids, rows, o, d, t_live, t_stop = ids[live], world.subset(rows, live), o[live], d[live], t_live[live], t_stop[live]
            live = live[live]
        if len(ids) == 0:
            break
        s = world.rows_sdf(rows, o + d * t_live)
        # Rays still marching after max_steps (grazing the surface) count as hits when nearly there.
        done = live & (s.abs() < (tolerance if step < max_steps else 20 * tolerance))
        hit[ids[done]] = True
        t_live = torch.where(live & ~done, t_live + s * step_scale, t_live)
        live &= ~done & (t_live <= t_stop)
    t[ids] = t_live
    return t, hit


def _normals(rows, p, h=5e-4):
    """Unit normals [P, 3] by central differences of the SDF."""
    grad = [world.rows_sdf(rows, p + V(*o)) - world.rows_sdf(rows, p - V(*o)) for o in ((h, 0, 0), (0, h, 0), (0, 0, h))]
    return torch.nn.functional.normalize(torch.stack(grad, dim=-1), dim=-1)


def render(samples, resolution, c=None, max_steps=96, step_scale=0.8, tolerance=1e-4):
    """Render a list of B SyntheticHead.

    c [B, 25] defaults to the samples' own labels. Returns EasyDict(image [B, 3, H, W] in [0, 1],
    depth [B, 1, H, W] (distance along the ray, +inf on background), mask [B, 1, H, W] (bool)).
    The work is many small elementwise ops: on a busy CPU, torch.set_num_threads(1) can be much faster.
    """
    B, M = len(samples), resolution * resolution
    if c is None:
        c = torch.stack([s.label() for s in samples])
    misc.assert_shape(c, [B, 25])
    table = world.pack(samples, device=c.device)
    origins, dirs = RaySampler()(c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3), resolution)
    t_start, t_end = math_utils.get_ray_limits_box(origins, dirs, box_side_length=1.0)
    origins, dirs = V.of(origins.reshape(-1, 3)), V.of(dirs.reshape(-1, 3))
    rows = world.gather(table, torch.arange(B, device=c.device).repeat_interleave(M))
    t, hit = _trace(rows, origins, dirs, t_start.reshape(-1), t_end.reshape(-1), max_steps, step_scale, tolerance)

    rgb = torch.tensor(BACKGROUND, device=c.device).repeat(B * M, 1)
    rows, p = world.subset(rows, hit), origins[hit] + dirs[hit] * t[hit]
    light = torch.nn.functional.normalize(torch.tensor(LIGHT, device=c.device), dim=0)
    lambert = (_normals(rows, p) @ light).clamp(min=0)[:, None]
    rgb[hit] = (world.rows_albedo(rows, p) * (AMBIENT + DIFFUSE * lambert)).clamp(0, 1)
    depth = torch.where(hit, t, torch.full_like(t, float('inf')))
    return EasyDict(
        image=rgb.reshape(B, resolution, resolution, 3).permute(0, 3, 1, 2),
        depth=depth.reshape(B, 1, resolution, resolution),
        mask=hit.reshape(B, 1, resolution, resolution))

#----------------------------------------------------------------------------
