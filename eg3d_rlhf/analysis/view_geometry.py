"""Rendered geometry of tuned vs original from several views: depth and normal change beside the image change."""

import math

import numpy as np
import torch

from eg3d_rlhf.analysis import image_metrics
from eg3d_rlhf.geometry import preview
from torch_utils import misc

#----------------------------------------------------------------------------
# The published study's referee asked whether the preferred shapes changed in 3D or only in appearance. Each sample
# is rendered by both generators from the same orbit cameras (EG3D's renderer: its image and its expected ray depth);
# from each depth map come camera-space normals, and per view the report gives how far the surface moved (mean
# |depth change| in world units, mean normal turn in degrees) beside how far the picture moved (PSNR of the images).
# A geometry change that is real shows from every view; appearance leaking into the change would show as a low
# PSNR with little depth or normal change. Foreground: pixels whose depth lies in the nearer FOREGROUND share of the
# renderer's [ray_start, ray_end] on both sides (rays that miss the head end near ray_end), eroded by one pixel so
# every normal's neighbours are foreground too, and the largest connected piece of them.

YAWS = (-0.6, -0.3, 0.0, 0.3, 0.6)  # Camera yaw offsets from the frontal camera, radians (left to right).
FOREGROUND = 0.6                    # Share of [ray_start, ray_end] whose depths count as the head.
SAMPLES = 16                        # Samples rendered (the first ones of a comparison): 2 x views x SAMPLES renders.
PICTURED = 3                        # Samples in the picture.
GAP = 8                             # Picture pixels between samples (a multiple of save_views' scale).


def normals(depth, focal):
    """Unit camera-space normals [3, H, W] of a depth map [H, W] (a pinhole of focal length `focal` pixels): the
    depth's slope per world unit across the image plane, whose pixel pitch at depth d is d / focal."""
    misc.assert_shape(depth, [None, None])
    dy, dx = torch.gradient(depth)
    pitch = depth / focal
    n = torch.stack([-dx / pitch, -dy / pitch, torch.ones_like(depth)])
    return n / n.norm(dim=0, keepdim=True)


def foreground(depths, ray_start, ray_end):
    """Pixels [H, W] that are the head in every depth map of `depths` [K, H, W]: near, the largest 4-connected piece
    of them (grazing rays at the image's edge also end early), eroded by one pixel."""
    import scipy.ndimage # pylint: disable=import-outside-toplevel
    near = (depths < ray_start + FOREGROUND * (ray_end - ray_start)).all(dim=0)
    eroded = -torch.nn.functional.max_pool2d(-near[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0.5
    labels, count = scipy.ndimage.label(eroded.numpy())
    if count == 0:
        return eroded
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return torch.from_numpy(labels == largest)


def view_changes(generators, seeds, yaws=YAWS):
    """Per view (yaw offset): mean |depth change| (world units), mean normal turn (degrees) and image PSNR (dB) of
    tuned vs original over `seeds`, and shaded normal maps of both for the pictures. generators: {'original', 'tuned'}
    EG3D adapters (camera_views)."""
    kw = generators['original'].G.rendering_kwargs
    if not all(isinstance(kw.get(k), (int, float)) for k in ('ray_start', 'ray_end')):
        raise ValueError('view geometry needs fixed ray_start and ray_end in the generator\'s rendering_kwargs')
    rows, maps = [], {side: [] for side in generators}
    for yaw in yaws:
        depth_change, normal_turn, psnr = [], [], []
        for seed in seeds:
            views = {side: render(G, seed, yaw) for side, G in generators.items()}
            depths = torch.stack([views[side]['depth'][0].cpu() for side in generators]).double()
            mask = foreground(depths, kw['ray_start'], kw['ray_end'])
            focal = 0.5 * depths.shape[-1] / math.tan(math.radians(generators['original'].fov_degrees) / 2)
            n = {side: normals(d, focal) for side, d in zip(generators, depths)}
            if mask.any():
                depth_change.append(float((depths[0] - depths[1]).abs()[mask].mean()))
                cos = (n['original'] * n['tuned']).sum(0).clamp(-1, 1)
                normal_turn.append(float(torch.rad2deg(torch.arccos(cos))[mask].mean()))
            images = [image_metrics.to_uint8_hwc(views[side]['image'][None].cpu()) for side in generators]
            psnr.append(float(image_metrics.psnr_ssim(*images)[0][0]))
            if seed in seeds[:PICTURED]:
                for k, side in enumerate(generators):
                    maps[side].append(shaded(n[side], foreground(depths[k : k + 1], kw['ray_start'], kw['ray_end'])))
        finite = [p for p in psnr if np.isfinite(p)]
        rows.append(dict(yaw=yaw, samples=len(seeds), head_samples=len(depth_change),
            depth_change=float(np.mean(depth_change)) if depth_change else float('nan'),
            normal_turn_deg=float(np.mean(normal_turn)) if normal_turn else float('nan'),
            image_psnr_db=float(np.mean(finite)) if finite else float('inf'), identical_images=len(psnr) - len(finite)))
    return rows, maps


def render(G, seed, yaw):
    """G.camera_views of the seed at the yaw offset, the renderer's stratified ray samples drawn from the seed (both
    sides see the same rays; torch's random state is left as it was)."""
    G.camera()                                      # Made on first use, drawing from torch's generator: made first.
    with torch.random.fork_rng(devices=[G.device] if G.device.type == 'cuda' else []):
        torch.manual_seed(int(seed))
        return G.camera_views(seed, yaw=math.pi / 2 + yaw)


def shaded(normal, mask):
    """uint8 [H, W, 3] picture of normals (x, y, z mapped to RGB), white off the head."""
    rgb = ((normal.permute(1, 2, 0) * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    rgb[~mask.numpy()] = 255
    return rgb


def save_views(maps, yaws, path, scale=4):
    """One picture: per sample a row of the original's normal maps at every view, the tuned one's below it, and a
    white gap before the next sample."""
    count = len(maps['original']) // len(yaws)                              # Samples pictured, yaw-major.
    order = lambda side, s: [maps[side][v * count + s] for v in range(len(yaws))]
    rows = []
    for s in range(count):
        pair = [np.concatenate(order(side, s), axis=1) for side in ('original', 'tuned')]
        gap = [np.full((GAP // scale, pair[0].shape[1], 3), 255, np.uint8)] if s < count - 1 else []
        rows += pair + gap
    picture = np.concatenate(rows, axis=0).repeat(scale, axis=0).repeat(scale, axis=1)
    preview.save_picture(picture, path)


def table(rows):
    """The report's table of view_changes' rows as (title, header, rows)."""
    return (f'Rendered geometry from {len(rows)} views, tuned vs original (means over samples; the referee\'s check)',
        ['yaw offset (rad)', 'samples with a head', '|depth change| (world units)', 'normal turn (deg)', 'image PSNR (dB)'],
        [[f'{r["yaw"]:+.1f}', f'{r["head_samples"]} of {r["samples"]}', f'{r["depth_change"]:.4f}',
            f'{r["normal_turn_deg"]:.2f}', f'{r["image_psnr_db"]:.2f}'] for r in rows])

#----------------------------------------------------------------------------
