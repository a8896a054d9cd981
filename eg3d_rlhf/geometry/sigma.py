"""Where sigma is sampled and how it is streamed: cube and slab grids, chunked fields, gen_samples' padding, normalisation."""

import dataclasses
import math

import numpy as np
import torch
import torch.utils.checkpoint

from torch_utils import misc

#----------------------------------------------------------------------------
# Sampling grids. Conventions follow EG3D's gen_samples.py: N points per axis
# spanning [-L/2, +L/2] (voxel_size = L / (N-1)), flat index i*N*N + j*N + k
# for the point with coordinates (x_i, y_j, z_k), i.e. coordinate 0 comes from
# the slowest index. A grid may also cover only an index box inside the cube
# (the slab); its points are produced chunk by chunk, never all at once.

class CubeGrid:
    def __init__(self,
        resolution,                     # Points per axis of the full cube, N.
        cube_length     = 1.0,          # Side of the cube in world units; gen_samples uses box_warp.
        exact_eg3d_grid = False,        # Reproduce create_samples' float division on the two slower indices?
        start           = (0, 0, 0),    # First cube index kept on each axis (x, y, z).
        stop            = None,         # One past the last index kept on each axis; None = (N, N, N).
    ):
        assert resolution >= 2
        self.resolution = int(resolution)
        self.cube_length = float(cube_length)
        self.exact_eg3d_grid = bool(exact_eg3d_grid)
        self.start = tuple(int(s) for s in start)
        self.stop = (self.resolution,) * 3 if stop is None else tuple(int(s) for s in stop)
        assert all(0 <= a < b <= self.resolution for a, b in zip(self.start, self.stop))
        self.origin = -self.cube_length / 2                         # World coordinate of index 0 on every axis.
        self.voxel_size = self.cube_length / (self.resolution - 1)  # World distance between neighbouring indices.

    @property
    def shape(self):
        """Points kept on each axis, (x, y, z)."""
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def num_points(self):
        return int(np.prod(self.shape))

    def points(self, begin, end, device='cpu'):
        """World coordinates [end-begin, 3] (float32) of the kept points at C-order positions [begin, end)."""
        return self.points_at(torch.arange(begin, end, dtype=torch.int64, device=device))

    def points_at(self, pos):
        """World coordinates [len(pos), 3] (float32) of the kept points at C-order positions pos (int64 tensor)."""
        nx, ny, nz = self.shape
        i = pos // (ny * nz) + self.start[0]
        j = pos // nz % ny + self.start[1]
        k = pos % nz + self.start[2]
        return self._coordinates(i, j, k)

    def _coordinates(self, i, j, k):
        n = self.resolution
        idx = torch.empty([len(i), 3], dtype=torch.float32, device=i.device)
        idx[:, 2] = k
        if self.exact_eg3d_grid:
            # create_samples derives the slower indices from the flat index by
            # float32 division without flooring, so they carry a fraction k/N.
            flat = ((i * n + j) * n + k).float()
            idx[:, 1] = (flat / n) % n
            idx[:, 0] = ((flat / n) / n) % n
        else:
            idx[:, 1] = j
            idx[:, 0] = i
        return idx * self.voxel_size + self.origin

    def index_to_world(self, ijk):
        """World coordinates of (possibly fractional) indices into the KEPT box, e.g. marching-cubes vertices."""
        offset = np.asarray(self.start, dtype=np.float64)
        return (np.asarray(ijk, dtype=np.float64) + offset) * self.voxel_size + self.origin

#----------------------------------------------------------------------------
# The published sigma slab: the face region of the N=256 cube.

@dataclasses.dataclass(frozen=True)
class SlabCrop:
    """Fractions of the cube trimmed from each face; at N=256 the defaults keep [64:192, 64:205, 102:231]."""
    x_left:   float = 0.25      # Trimmed from low x.
    x_right:  float = 0.25      # Trimmed from high x.
    y_bottom: float = 0.25      # Trimmed from low y (world y is up).
    y_top:    float = 0.2       # Trimmed from high y.
    z_rear:   float = 0.4       # Trimmed from low z (the face looks toward +z).
    z_front:  float = 0.1       # Trimmed from high z.

    def bounds(self, n):
        """(start, stop) index triples of the slab in an N^3 cube."""
        lo = (self.x_left, self.y_bottom, self.z_rear)
        hi = (self.x_right, self.y_top, self.z_front)
        return tuple(int(f * n) for f in lo), tuple(n - int(f * n) for f in hi)

def slab_grid(resolution=256, cube_length=1.0, crop=SlabCrop(), exact_eg3d_grid=False):
    """The slab points of an N^3 cube as a CubeGrid; only these points are ever sampled."""
    start, stop = crop.bounds(resolution)
    return CubeGrid(resolution, cube_length, exact_eg3d_grid=exact_eg3d_grid, start=start, stop=stop)


def slab_description(resolution, cube_length=1.0, crop=SlabCrop(), exact_eg3d_grid=False):
    """The plain-type description of a slab that banks (meta.json "slab") and reward checkpoints record; the optional
    "exact_eg3d_grid" entry (create_samples' off-grid points) appears only when set, so older descriptions read alike."""
    grid = slab_grid(resolution, cube_length=cube_length, crop=crop)
    desc = dict(resolution=int(resolution), cube_length=float(cube_length), crop=dataclasses.asdict(crop),
        start=list(grid.start), stop=list(grid.stop), shape=list(grid.shape))
    return dict(desc, exact_eg3d_grid=True) if exact_eg3d_grid else desc


MAX_RESOLUTION = 4096           # Largest cube resolution a slab description may name.
MAX_CUBE_LENGTH = 1000.0        # Largest cube side (world units): EG3D's boxes are 1 or so; beyond, a file is damaged.


def describe(value):
    """A value as a message shows it: numbers, strings, booleans and null as written, anything else by its kind."""
    if value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 40):
        return repr(value)
    return f'a {type(value).__name__}'


def is_number(value, low=-math.inf, high=math.inf):
    """Is `value` a finite int or float (not a bool) with low <= value <= high?"""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high


def slab_problem(slab, name='slab'):
    """What is wrong with a slab description (a bank's meta.json "slab", a reward checkpoint's input slab), as one
    phrase naming the key ('slab.resolution is 1; expected an integer in [2, 4096]'); None when grid_from_meta can read
    it. Entries beyond resolution, cube_length, crop and exact_eg3d_grid are informational and not checked."""
    if not isinstance(slab, dict):
        return f'{name} is {describe(slab)}; expected an object'
    missing = [k for k in ('resolution', 'cube_length', 'crop') if k not in slab]
    if missing:
        return f'{name} must describe resolution, cube_length and crop; it has no {missing[0]}'
    n, length, crop = slab['resolution'], slab['cube_length'], slab['crop']
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_RESOLUTION:
        return f'{name}.resolution is {describe(n)}; expected an integer in [2, {MAX_RESOLUTION}]'
    if not is_number(length, high=MAX_CUBE_LENGTH) or not length > 0:
        return f'{name}.cube_length is {describe(length)}; expected a finite number in (0, {MAX_CUBE_LENGTH:g}]'
    fractions = [f.name for f in dataclasses.fields(SlabCrop)]
    if not isinstance(crop, dict):
        return f'{name}.crop is {describe(crop)}; expected an object of the fractions {", ".join(fractions)}'
    for key, value in crop.items():
        if key not in fractions:
            return f'{name}.crop.{key} is not a crop fraction ({", ".join(fractions)})'
        if not is_number(value, 0) or not value < 1:
            return f'{name}.crop.{key} is {describe(value)}; expected a number in [0, 1)'
    start, stop = SlabCrop(**crop).bounds(n)
    empty = [axis for axis, a, b in zip('xyz', start, stop) if not a < b]
    if empty:
        return f'{name}.crop keeps nothing on {empty[0]} at resolution {n}'
    exact = slab.get('exact_eg3d_grid', False)
    if not isinstance(exact, bool):
        return f'{name}.exact_eg3d_grid is {describe(exact)}; expected true or false'
    return None


def grid_from_meta(slab):
    """The CubeGrid of a slab description (slab_description(), a bank's meta.json "slab"); ValueError of slab_problem's
    phrase when it is not one."""
    problem = slab_problem(slab)
    if problem is not None:
        raise ValueError(problem)
    return slab_grid(slab['resolution'], cube_length=slab['cube_length'], crop=SlabCrop(**slab['crop']),
        exact_eg3d_grid=slab.get('exact_eg3d_grid', False))

#----------------------------------------------------------------------------
# A batch of samples' density field, streamed: subclasses (generators/) say how sigma is computed at points; this
# class feeds them bounded chunks of any grid, with or without gradients.

class SigmaField:
    """Raw sigma of a batch of samples at any world points; a generator adapter subclasses it and defines decode()."""

    batch_size      = None      # Samples in the batch.
    device          = None      # Where decode() runs.
    requires_grad   = False     # Is sigma differentiable with respect to the generator?

    def decode(self, coords):
        """Raw sigma [batch, M, 1] at world points [batch, M, 3] (on self.device)."""
        raise NotImplementedError

    def sample(self, coords, chunk=2**18, recompute=False):
        """Raw sigma [batch, M, 1] at coords [batch, M, 3] (or [M, 3], shared), `chunk` points per sample at a time.

        recompute: with gradients, keep no decoder activations and recompute each chunk's pass in backward
        (gradient checkpointing: less memory, one more decoder pass).
        """
        if coords.ndim == 2:
            coords = coords.unsqueeze(0).expand(self.batch_size, -1, -1)
        misc.assert_shape(coords, [self.batch_size, None, 3])
        coords = coords.to(self.device, torch.float32)
        decode = self.decode
        if recompute and self.requires_grad:
            decode = lambda x: torch.utils.checkpoint.checkpoint(self.decode, x, use_reentrant=False)
        with torch.set_grad_enabled(self.requires_grad):
            parts = [decode(coords[:, s : s + chunk]) for s in range(0, coords.shape[1], chunk)]
        return torch.cat(parts, dim=1)

    def sample_grid(self, grid, chunk=2**18, progress=None, recompute=False):
        """Raw sigma [batch, *grid.shape] in (x, y, z) order; `progress(n)` is called after each chunk of n points;
        recompute as in sample()."""
        total = grid.num_points
        if self.requires_grad:
            parts = []
            for s in range(0, total, chunk):
                parts.append(self.sample(grid.points(s, min(s + chunk, total), self.device), chunk, recompute)[..., 0])
                if progress is not None: progress(parts[-1].shape[1])
            return torch.cat(parts, dim=1).view(self.batch_size, *grid.shape)
        out = torch.empty([self.batch_size, total], dtype=torch.float32, device=self.device)
        with torch.no_grad():
            for s in range(0, total, chunk):
                e = min(s + chunk, total)
                out[:, s:e] = self.decode(grid.points(s, e, self.device).unsqueeze(0).expand(self.batch_size, -1, -1))[..., 0]
                if progress is not None: progress(e - s)
        return out.view(self.batch_size, *grid.shape)

#----------------------------------------------------------------------------
# gen_samples' treatment of the cube before it writes a shape, and the
# reward model's per-slab normalisation.

def eg3d_border_pad(resolution):
    """gen_samples' border width, int(30 * N / 256) voxels."""
    return int(30 * resolution / 256)

def flip_and_pad(sigma, flip=True, pad=0, pad_value=-1000.0):
    """gen_samples' post-processing of a cube [..., N, N, N] (numpy or torch), returned as a new array.

    flip: reverse the x axis (gen_samples' np.flip(sigmas, 0)).
    pad:  overwrite (not grow) `pad` voxels on all six faces with pad_value; see eg3d_border_pad().
    """
    is_torch = torch.is_tensor(sigma)
    out = (torch.flip(sigma, [-3]) if is_torch else np.flip(sigma, -3)) if flip else sigma
    out = out.clone() if is_torch else np.array(out, copy=True)
    if pad > 0:
        for axis in (-3, -2, -1):
            lo = [slice(None)] * out.ndim; lo[axis] = slice(0, pad)
            hi = [slice(None)] * out.ndim; hi[axis] = slice(-pad, None)
            out[tuple(lo)] = pad_value
            out[tuple(hi)] = pad_value
    return out

def closed_slab(volume, level):
    """A slab (numpy or torch [..., X, Y, Z]) with its six faces set below `level` (to min(volume, level - 1)), so the
    mesh of a head the slab cuts closes (gen_samples' border idea); a new array."""
    floor = min(float(volume.detach().min() if torch.is_tensor(volume) else np.min(volume)), level - 1)
    return flip_and_pad(volume, flip=False, pad=1, pad_value=floor)

def normalise_sigma_self(x):
    """Min-max scale each volume (the last three axes) to [0, 100] on its own; a constant volume becomes 0."""
    if torch.is_tensor(x):
        lo = x.amin(dim=(-3, -2, -1), keepdim=True)
        span = x.amax(dim=(-3, -2, -1), keepdim=True) - lo
        return (x - lo) / torch.where(span > 0, span, torch.ones_like(span)) * 100
    x = np.asarray(x)
    lo = x.min(axis=(-3, -2, -1), keepdims=True)
    span = x.max(axis=(-3, -2, -1), keepdims=True) - lo
    return (x - lo) / np.where(span > 0, span, 1).astype(x.dtype) * 100

#----------------------------------------------------------------------------
