"""Shaded pictures of a sigma volume's iso-surface (orthographic ray marching, no OpenGL), for people to look at."""

import contextlib
import contextvars
import math

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
import torch.nn.functional as F

import dnnlib

#----------------------------------------------------------------------------
# The volume is treated as a continuous field (trilinear interpolation between grid points). Each pixel's ray
# marches front to back through the volume's box, stops at the first sample at or above `level`, refines the
# crossing linearly and shades it with the field's gradient as the normal. Views orbit the y axis (world up);
# yaw 0 looks at the face (from +z), 90 degrees at the head's left profile (from +x).

VIEWS = {'front': (0.0, 0.0), 'three_quarter': (45.0, 0.0), 'profile': (90.0, 0.0)}   # name -> (yaw, pitch) degrees.
BACKGROUND = 1.0            # Grey level of pixels whose ray misses the surface.
AMBIENT = 0.25              # Light every visible point receives.


def _view_frame(yaw_deg, pitch_deg):
    """(forward, right, up) unit vectors of a camera orbiting the origin; forward points from the camera inward."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    eye = torch.tensor([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    forward = -eye
    right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    return forward, right, up


class _Field:
    """Trilinear lookups of a volume [X, Y, Z] at world points."""

    def __init__(self, volume, lo, hi):
        self.data = torch.as_tensor(np.asarray(volume, dtype=np.float32)).permute(2, 1, 0)[None, None] # [1,1,Z,Y,X]
        self.lo = torch.as_tensor(lo, dtype=torch.float32)
        self.hi = torch.as_tensor(hi, dtype=torch.float32)

    def __call__(self, points):
        """Values [P] at world points [P, 3]; points outside the box read as -inf."""
        unit = (points - self.lo) / (self.hi - self.lo) * 2 - 1
        values = F.grid_sample(self.data, unit.view(1, 1, 1, -1, 3), mode='bilinear', padding_mode='border', align_corners=True)
        values = values.view(-1)
        outside = (unit.abs() > 1).any(dim=-1)
        return values.masked_fill(outside, float('-inf'))


def render_surface(volume, grid, level=10.0, yaw=0.0, pitch=0.0, resolution=256, steps=None):
    """Grey-level picture [resolution, resolution] (float32 in [0, 1]) of {sigma >= level} seen from (yaw, pitch).

    volume: [X, Y, Z] raw sigma in (x, y, z) order on `grid` (eg3d_rlhf.geometry.sigma.CubeGrid; a slab grid works too).
    Rays march only where the surface can be (below), or every step inside every_step(): the same picture.
    """
    volume = np.asarray(volume, dtype=np.float32)
    assert volume.shape == tuple(grid.shape), (volume.shape, grid.shape)
    lo = grid.index_to_world(np.zeros(3))
    hi = grid.index_to_world(np.asarray(grid.shape) - 1)
    field = _Field(volume, lo, hi)
    centre = torch.as_tensor((lo + hi) / 2, dtype=torch.float32)
    half = float(np.linalg.norm(hi - lo) / 2)                 # The box fits in this sphere around centre.
    frame = float(np.max(hi - lo) / 2)                         # Half-width of the picture: the box's widest side.
    steps = steps or 2 * max(volume.shape)
    forward, right, up = _view_frame(yaw, pitch)

    u = torch.linspace(-frame, frame, resolution)
    v = torch.linspace(frame, -frame, resolution)              # Image rows run downward.
    origins = centre + v[:, None, None] * up + u[None, :, None] * right - half * forward   # [H, W, 3]
    origins = origins.view(-1, 3)
    t = torch.linspace(0, 2 * half, steps)
    skip = not _EVERY_STEP.get()
    box = _surface_box(volume, level, lo, hi) if skip else (np.full(3, -np.inf), np.full(3, np.inf))
    group, window = (1 << 16, 16) if skip else (8192, steps)    # Rays and steps a pass.
    found = torch.cat([_first_inside(field, origins[rows], forward, t, level, box, window)
        for rows in torch.split(torch.arange(origins.shape[0]), group)])
    image = torch.full([origins.shape[0]], BACKGROUND)
    for rows in torch.split(torch.arange(origins.shape[0]), 8192):
        hit = found[rows] >= 0
        if not hit.any():
            continue
        first = found[rows].clamp(min=1)[hit]
        o, rows = origins[rows][hit], rows[hit]
        v0, v1 = _march(field, o, forward, t, torch.stack([first - 1, first], dim=1)).unbind(1)
        frac = torch.where(torch.isfinite(v0), ((level - v0) / (v1 - v0).clamp(min=1e-6)).clamp(0, 1), torch.ones_like(v0))
        depth = t[first - 1] + frac * (t[1] - t[0])
        p = o + depth[:, None] * forward
        eps = float(grid.voxel_size)
        grad = torch.stack([field(p + eps * e) - field(p - eps * e) for e in torch.eye(3)], dim=1)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        normal = -grad / grad.norm(dim=1, keepdim=True).clamp(min=1e-8)   # Sigma grows inward; normals point out.
        light = -forward + 0.6 * up + 0.3 * right
        light = light / light.norm()
        shade = AMBIENT + (1 - AMBIENT) * (normal @ light).clamp(min=0)
        image[rows] = shade
    return image.view(resolution, resolution).numpy()

#----------------------------------------------------------------------------
# Marching. A ray's k-th sample is the field at o + t[k] forward, computed alike whichever samples are taken, so
# skipping samples where the surface cannot be changes no bit of the picture. A trilinear value is a weighted mean
# of its cell's 8 grid values, so it stays below `level` (float rounding included) outside the box around the grid
# points at or above level - tol, widened by a cell and half a voxel; a ray marches from that box's near side in
# windows and stops at its first sample at or above `level`. every_step() turns the skipping off: the reference
# path (every sample of every ray, as pictures were first drawn) for tests and benchmarks/bench_flow.py.

_EVERY_STEP = contextvars.ContextVar('eg3d_rlhf_preview_every_step', default=False)


@contextlib.contextmanager
def every_step():
    """Inside the block, render_surface takes every sample of every ray (slower; the same pictures)."""
    token = _EVERY_STEP.set(True)
    try:
        yield
    finally:
        _EVERY_STEP.reset(token)


def _march(field, o, forward, t, k):
    """Field values [R, K] at samples k [R, K] (step indices) of rays from o [R, 3]."""
    return field((o[:, None, :] + t[k][:, :, None] * forward).view(-1, 3)).view(k.shape)


def _surface_box(volume, level, lo, hi):
    """World (lo, hi) of the box outside which the volume's trilinear values are below `level`; None if nowhere near
    it; the whole box when the volume is not finite (every sample is then taken)."""
    if not np.isfinite(volume).all() or min(volume.shape) < 2:
        return lo, hi
    near = volume >= level - 1e-5 * (abs(level) + float(np.abs(volume).max()))
    if not near.any():
        return None
    spacing = (hi - lo) / (np.asarray(volume.shape) - 1)
    others = lambda axis: tuple(a for a in range(3) if a != axis)
    ends = np.array([np.flatnonzero(near.any(axis=others(axis)))[[0, -1]] for axis in range(3)])   # First and last.
    return lo + (ends[:, 0] - 1.5) * spacing, lo + (ends[:, 1] + 1.5) * spacing


def _first_inside(field, o, forward, t, level, box, window):
    """Each ray's first step index k with field >= level, or -1 ([R] int64): its samples inside `box` (None: no ray
    can hit), `window` steps at a time."""
    found = torch.full([len(o)], -1, dtype=torch.int64)
    begin, end = _steps_in_box(o, forward, t, box)
    todo = torch.nonzero(begin <= end)[:, 0]
    while len(todo):
        k = begin[todo, None] + torch.arange(window)
        inside = (_march(field, o[todo], forward, t, k.clamp(max=len(t) - 1)) >= level) & (k <= end[todo, None])
        hit = inside.any(dim=1)
        found[todo[hit]] = k[hit, inside[hit].float().argmax(dim=1)]
        begin[todo] += window
        todo = todo[~hit & (begin[todo] <= end[todo])]
    return found


def _steps_in_box(o, forward, t, box):
    """(first, last) step index [R] of each ray's samples inside the world box (with a step to spare each side;
    first > last: it misses, as every ray misses box None)."""
    if box is None:
        return torch.zeros(len(o), dtype=torch.int64), torch.full([len(o)], -1)
    lo, hi = (torch.as_tensor(b, dtype=torch.float32) for b in box)
    along = forward.abs() > 1e-9
    scale = torch.where(along, 1 / torch.where(along, forward, torch.ones_like(forward)), torch.zeros_like(forward))
    a, b = (lo - o) * scale, (hi - o) * scale
    within = (o >= lo) & (o <= hi)                              # Rays parallel to an axis: inside its slab or not.
    near = torch.where(along, torch.minimum(a, b), torch.where(within, -math.inf, math.inf)).amax(dim=1)
    far = torch.where(along, torch.maximum(a, b), torch.where(within, math.inf, -math.inf)).amin(dim=1)
    dt = float(t[1] - t[0])
    first = torch.floor(near.clamp(min=0) / dt).clamp(max=len(t)).long() - 1
    last = torch.ceil(far.clamp(max=float(t[-1])) / dt).clamp(min=-1).long() + 1
    return first.clamp(min=0), torch.where(far >= near, last.clamp(max=len(t) - 1), -1)


def render_views(volume, grid, level=10.0, views=tuple(VIEWS), resolution=256):
    """{view name: uint8 picture [resolution, resolution]} for the named VIEWS."""
    result = {}
    for name in views:
        yaw, pitch = VIEWS[name]
        picture = render_surface(volume, grid, level=level, yaw=yaw, pitch=pitch, resolution=resolution)
        result[name] = grey_uint8(picture)
    return result


def grey_uint8(picture):
    """A render_surface picture (float in [0, 1]) as uint8."""
    return np.rint(picture * 255).clip(0, 255).astype(np.uint8)


def rgb_picture(image):
    """A generator image [3, H, W] in [-1, 1] (torch) -> uint8 RGB picture [H, W, 3]."""
    return (image.permute(1, 2, 0).clamp(-1, 1).cpu().numpy() * 127.5 + 128).clip(0, 255).astype(np.uint8)


def save_picture(picture, path):
    """Write a uint8 grey [H, W] or RGB [H, W, 3] picture as PNG, atomically (dnnlib.util.atomic_write)."""
    with dnnlib.util.atomic_write(path, 'wb') as f:
        PIL.Image.fromarray(picture).save(f, format='PNG')

def tile(pictures, columns):
    """Pictures of one shape ([H, W] or [H, W, C]) laid out in rows of `columns`, white where the last row ends."""
    rows = (len(pictures) + columns - 1) // columns
    blank = np.full_like(pictures[0], 255)
    pictures = list(pictures) + [blank] * (rows * columns - len(pictures))
    return np.concatenate([np.concatenate(pictures[r * columns:(r + 1) * columns], axis=1) for r in range(rows)], axis=0)

#----------------------------------------------------------------------------
# Before/after pictures of the same samples from two generators (the panel's report, evaluate's report).

LABEL_TOP = 16              # Height of the column labels' strip above labelled() tiles.
LABEL_LEFT = 84             # Width of the row labels' strip left of them.
BEFORE_AFTER_VIEWS = ('front', 'profile')


def labelled(rows, row_labels, column_labels):
    """uint8 picture of rows [[picture [H, W] grey or [H, W, 3] RGB]] (one size) tiled, each column's label in a strip
    of LABEL_TOP above it and each row's label in a strip of LABEL_LEFT left of it (text clipped to its cell); grey
    unless some picture is RGB."""
    h, w = rows[0][0].shape[:2]
    mode = 'RGB' if any(p.ndim == 3 for row in rows for p in row) else 'L'
    white, black = (255, 255, 255) if mode == 'RGB' else 255, (0, 0, 0) if mode == 'RGB' else 0
    canvas = PIL.Image.new(mode, (LABEL_LEFT + w * len(rows[0]), LABEL_TOP + h * len(rows)), white)
    draw, font = PIL.ImageDraw.Draw(canvas), PIL.ImageFont.load_default()
    for c, text in enumerate(column_labels):
        cell = PIL.Image.new(mode, (w, LABEL_TOP), white)
        PIL.ImageDraw.Draw(cell).text((2, 1), text, fill=black, font=font)
        canvas.paste(cell, (LABEL_LEFT + c * w, 0))
    for r, (row, text) in enumerate(zip(rows, row_labels)):
        draw.text((2, LABEL_TOP + r * h + h // 2 - 6), text, fill=black, font=font)
        for c, picture in enumerate(row):
            canvas.paste(PIL.Image.fromarray(picture).convert(mode), (LABEL_LEFT + c * w, LABEL_TOP + r * h))
    return np.asarray(canvas)


def before_after(before, after, grid, row_labels, names=('before', 'after'), level=10.0, resolution=128):
    """Shaded front and profile views of the same samples from two generators: one row per sample (volumes
    before[i] and after[i], [X, Y, Z] raw sigma on `grid`), columns NAME view for both names, labelled()."""
    rows = []
    for volumes in zip(before, after):
        shown = [render_views(np.asarray(v), grid, level, BEFORE_AFTER_VIEWS, resolution) for v in volumes]
        rows.append([views[view] for views in shown for view in BEFORE_AFTER_VIEWS])
    return labelled(rows, row_labels, [f'{name} {view}' for name in names for view in BEFORE_AFTER_VIEWS])


def save_orbit(volumes, grid, path, names, label='', level=10.0, frames=24, resolution=96, amplitude=90.0):
    """An animated GIF of volumes (raw sigma [X, Y, Z] on `grid`, e.g. one sample of two generators) side by side,
    the camera's yaw swinging sinusoidally between -amplitude and +amplitude degrees over `frames` frames."""
    pictures = []
    for k in range(frames):
        yaw = amplitude * math.sin(2 * math.pi * k / frames)
        row = [grey_uint8(render_surface(v, grid, level, yaw=yaw, resolution=resolution)) for v in volumes]
        pictures.append(PIL.Image.fromarray(labelled([row], [label], names)))
    pictures[0].save(path, format='GIF', save_all=True, append_images=pictures[1:], duration=80, loop=0)

#----------------------------------------------------------------------------
