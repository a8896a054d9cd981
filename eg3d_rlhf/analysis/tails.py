"""The ends of a reward's scale and its reach: top and bottom samples, and sigma cubes of other generators scored."""

import os

import numpy as np
import torch
import torch.nn.functional as F

from eg3d_rlhf.analysis import report_plots
from eg3d_rlhf.geometry import mesh, preview

#----------------------------------------------------------------------------

def tails(ids, scores, k):
    """(top, bottom): [(id, score)] of the k highest scores (highest first) and the k lowest (lowest first)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind='stable')
    k = min(k, len(order))
    pick = lambda index: [(ids[i], float(scores[i])) for i in index]
    return pick(order[:k]), pick(order[::-1][:k])


def plot_strip(rows, slabs, grid, path, level=10.0, resolution=128):
    """PNG of three-quarter surface previews: one row per (title, [(id, score)]), each sample labelled."""
    plt = report_plots._pyplot()
    columns = max(len(items) for _, items in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.5 * len(rows)), squeeze=False)
    for r, (title, items) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(items):
                sample_id, score = items[c]
                picture = preview.render_views(slabs[sample_id], grid, level, ('three_quarter',), resolution)
                ax.imshow(picture['three_quarter'], cmap='gray', vmin=0, vmax=255)
                ax.set_title(f'{sample_id}\nreward {score:+.2f}', fontsize=8)
        axes[r][0].text(-0.08, 0.5, title, transform=axes[r][0].transAxes, rotation=90, va='center', ha='right')
    report_plots._save(fig, path)


def write_meshes(items, slabs, grid, outdir, prefix, level=10.0):
    """A PLY of each sample's surface {sigma = level}; returns the file names written (none for an empty surface)."""
    written = []
    for rank, (sample_id, _) in enumerate(items):
        verts, faces = mesh.extract_mesh(slabs[sample_id], grid, level)
        if len(verts):
            name = f'{prefix}{rank + 1}-{sample_id}.ply'
            mesh.write_ply(os.path.join(outdir, name), verts, faces)
            written.append(name)
    return written

#----------------------------------------------------------------------------
# Sigma cubes of other generators: an N^3 raw-sigma cube in (x, y, z) order, as gen_samples.py writes (.npy, or
# .mrc with its own axis order read as stored). gen_samples flips x before saving, hence flip_x.

def read_cube(path):
    """float32 cube [N, N, N] from .npy or .mrc; ValueError naming the file when it is not one."""
    try:
        if path.lower().endswith('.mrc'):
            import mrcfile
            with mrcfile.open(path, permissive=True) as f:
                cube = np.asarray(f.data, dtype=np.float32)
        else:
            cube = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f'{path}: cannot read a sigma cube ({err})')
    if cube.ndim != 3 or len(set(cube.shape)) != 1 or cube.shape[0] < 2:
        raise ValueError(f'{path}: expected a cube [N, N, N], got {list(cube.shape)}')
    if not np.isfinite(cube).all():
        raise ValueError(f'{path}: the cube holds nan or inf')
    return cube


def cube_to_slab(cube, grid, flip_x=False):
    """The slab of `grid` (a crop of a grid.resolution^3 cube over the same box) out of an N^3 cube: resampled
    trilinearly to grid.resolution first when N differs (both grids put their first and last points on the box's
    faces), then cropped."""
    cube = np.flip(cube, 0) if flip_x else cube
    n = grid.resolution
    if cube.shape[0] != n:
        x = torch.from_numpy(np.array(cube, dtype=np.float32))[None, None]
        cube = F.interpolate(x, size=(n, n, n), mode='trilinear', align_corners=True)[0, 0].numpy()
    (x0, y0, z0), (x1, y1, z1) = grid.start, grid.stop
    return np.ascontiguousarray(cube[x0:x1, y0:y1, z0:z1], dtype=np.float32)


def robust_normalise(values, reference, low=1.0, high=99.9):
    """values mapped linearly so that their low..high percentiles land on the reference's (a source whose sigma has
    another scale or offset, e.g. another generator's activation, then reads like ours)."""
    a, b = np.percentile(values, [low, high])
    c, d = np.percentile(reference, [low, high])
    if b <= a:
        raise ValueError('the cube is constant between its 1st and 99.9th percentiles; it cannot be normalised')
    return ((np.asarray(values, dtype=np.float32) - a) * ((d - c) / (b - a)) + c).astype(np.float32)


def plot_sigma_histograms(sources, path, bins=60):
    """Log-log histogram PNG of the positive sigma values of each {source name: array}."""
    plt = report_plots._pyplot()
    positive = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in sources.items()}
    positive = {name: v[v > 0] for name, v in positive.items()}
    found = [v for v in positive.values() if len(v)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if found:
        lo, hi = min(v.min() for v in found), max(v.max() for v in found)
        edges = np.geomspace(lo, hi * (1 + 1e-9), bins + 1)
        for name, v in positive.items():
            counts, _ = np.histogram(v, edges)
            density = counts / max(len(v), 1) / np.diff(edges)
            ax.loglog(np.sqrt(edges[:-1] * edges[1:]), np.where(density > 0, density, np.nan), label=f'{name} ({len(v):,})')
    ax.set(xlabel='sigma (positive values)', ylabel='density', title='positive sigma per source')
    ax.legend(loc='best', fontsize=8)
    report_plots._save(fig, path)
