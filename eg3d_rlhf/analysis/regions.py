"""Facial regions over a slab: a label volume with names, from the published boxes, landmarks, a template or a user."""

import json
import os

import numpy as np
import torch

from dnnlib.util import BadFile, NotRegularFile, open_regular, read_npy
from eg3d_rlhf.analysis import report_plots

#----------------------------------------------------------------------------
# A Regions is an integer volume of the slab's shape, label i meaning names[i]; the last name is always 'other'
# (everything no region claims). Boxes are given in normalised slab coordinates: voxel i of an axis with n points
# sits at i / (n - 1), so 0 and 1 are the slab's first and last planes; a box keeps the voxels in [lo, hi] on
# every axis, and where boxes overlap the earlier region keeps the voxel ("first claim wins").

OTHER = 'other'

# The published study's fixed boxes for EG3D-FFHQ slabs, (x, y, z) ranges; y is up and the face looks toward +z.
PUBLISHED_BOXES = (
    ('brow',     [((.25, .75), (.70, .88), (.45, .82))]),
    ('eyes',     [((.14, .38), (.50, .72), (.52, .86)), ((.62, .86), (.50, .72), (.52, .86))]),
    ('nose',     [((.38, .62), (.38, .68), (.60, .94))]),
    ('cheeks',   [((.08, .34), (.28, .58), (.46, .82)), ((.66, .92), (.28, .58), (.46, .82))]),
    ('mouth',    [((.32, .68), (.20, .40), (.54, .88))]),
    ('chin_jaw', [((.18, .82), (.02, .20), (.40, .82))]),
)

# The 98-point WFLW landmark layout, grouped into regions (index ranges are inclusive).
WFLW_GROUPS = (
    ('brow',     [(33, 50)]),
    ('eyes',     [(60, 75), (96, 97)]),
    ('nose',     [(51, 59)]),
    ('mouth',    [(76, 95)]),
    ('chin_jaw', [(0, 32)]),
)


class Regions:
    def __init__(self,
        labels,                 # Integer volume [X, Y, Z] of the slab: label i is names[i].
        names,                  # Region names; the last is 'other'.
        source,                 # Where they came from ('published boxes', 'synthetic template', a file name, ...).
    ):
        labels = np.asarray(labels)
        if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f'a region volume must be a 3-D integer array, got {labels.dtype} {list(labels.shape)}')
        names = [str(n) for n in names]
        if not names or names[-1] != OTHER or len(set(names)) != len(names):
            raise ValueError(f'region names must be distinct and end with {OTHER!r}, got {names}')
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(f'region labels must lie in 0..{len(names) - 1}, got {labels.min()}..{labels.max()}')
        self.labels, self.names, self.source = labels.astype(np.int64), names, str(source)

    @property
    def shape(self):
        return tuple(self.labels.shape)

    def counts(self):
        """{name: voxels}."""
        found = np.bincount(self.labels.ravel(), minlength=len(self.names))
        return {name: int(c) for name, c in zip(self.names, found)}

    def mask(self, name):
        """Boolean volume of one region."""
        return self.labels == self.names.index(name)

    def feature_mask(self):
        """(mask [1, X, Y, Z] int64 with consecutive ids from 0, [names of those ids]): the regions that claim at least
        one voxel, as captum's feature_mask wants them."""
        present = [i for i, c in enumerate(self.counts().values()) if c > 0]
        remap = np.full(len(self.names), -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        return torch.from_numpy(remap[self.labels])[None], [self.names[i] for i in present]

    def sum_by_region(self, values):
        """{name: sum} of a volume [X, Y, Z] over each region."""
        values = np.asarray(values, dtype=np.float64)
        assert values.shape == self.shape, (values.shape, self.shape)
        sums = np.bincount(self.labels.ravel(), weights=values.ravel(), minlength=len(self.names))
        return {name: float(s) for name, s in zip(self.names, sums)}

    def save(self, path):
        """PATH.npy (the labels) and PATH.json (the names), the user-supplied format."""
        np.save(f'{path}.npy', self.labels.astype(np.int16))
        with open(f'{path}.json', 'w', encoding='utf-8') as f:
            json.dump(dict(names=self.names, source=self.source), f, indent=2)

#----------------------------------------------------------------------------

def normalised_axes(shape):
    """Normalised coordinates (three 1-D arrays) of the voxels of a slab of `shape`."""
    return [np.arange(n) / max(n - 1, 1) for n in shape]


def from_boxes(boxes, shape, source):
    """Regions of [(name, [((x0, x1), (y0, y1), (z0, z1)), ...]), ...] in normalised slab coordinates."""
    labels = np.full(shape, len(boxes), dtype=np.int64)
    claimed = np.zeros(shape, dtype=bool)
    ax = normalised_axes(shape)
    for label, (_, name_boxes) in enumerate(boxes):
        for box in name_boxes:
            inside = [(a >= lo) & (a <= hi) for a, (lo, hi) in zip(ax, box)]
            region = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :] & ~claimed
            labels[region] = label
            claimed |= region
    return Regions(labels, [name for name, _ in boxes] + [OTHER], source)


def published(shape):
    """The published study's fixed boxes on a slab of `shape` (made for EG3D-FFHQ's 128x141x129)."""
    return from_boxes(PUBLISHED_BOXES, shape, 'published boxes')


def from_landmarks(points, grid, groups=WFLW_GROUPS, margin=0.02):
    """Regions from 3-D landmarks [L, 3] in world coordinates (e.g. the 98-point WFLW layout lifted to 3-D): each
    group's bounding box widened by `margin` world units on every side, in the groups' order (first claim wins)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise ValueError(f'landmarks must be a finite [L, 3] array, got {list(points.shape)}')
    lo_world = grid.index_to_world(np.zeros(3))
    span = grid.index_to_world(np.asarray(grid.shape) - 1) - lo_world
    boxes = []
    for name, ranges in groups:
        index = [i for a, b in ranges for i in range(a, b + 1)]
        if max(index) >= len(points):
            raise ValueError(f'landmark group {name!r} needs point {max(index)}, but there are {len(points)}')
        chosen = points[index]
        lo = (chosen.min(0) - margin - lo_world) / span
        hi = (chosen.max(0) + margin - lo_world) / span
        boxes.append((name, [tuple(zip(lo, hi))]))
    return from_boxes(boxes, grid.shape, 'landmarks')


def load(labels_path, names_path, shape):
    """User-supplied regions: a .npy label volume and a JSON list of names (or {"names": [...]}) for its labels 0..K-1;
    'other' is appended if absent. ValueError naming the file on anything that does not fit."""
    try:
        labels = read_npy(labels_path)                              # Its header checked against its size first.
    except (NotRegularFile, BadFile) as err:                        # A FIFO would block: refused, never read.
        raise ValueError(str(err)) from None
    except (OSError, ValueError) as err:
        raise ValueError(f'{labels_path}: cannot read a .npy label volume ({err})')
    try:
        with open_regular(names_path, 'r', encoding='utf-8') as f:
            names = json.load(f)
    except NotRegularFile as err:
        raise ValueError(str(err)) from None
    except (OSError, ValueError, RecursionError) as err:
        raise ValueError(f'{names_path}: cannot read region names as JSON ({" ".join(str(err).split())[:200]})')
    names = names.get('names') if isinstance(names, dict) else names
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f'{names_path}: expected a JSON list of region names')
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f'{labels_path}: label volume is {list(labels.shape)}, the reward\'s slab is {list(shape)}')
    if OTHER not in names:
        names = names + [OTHER]
    try:
        return Regions(labels, names, os.path.basename(labels_path))
    except ValueError as err:
        raise ValueError(f'{labels_path}: {err}')

#----------------------------------------------------------------------------

def plot(regions, mean_slab, path, level=10.0):
    """PNG of the regions over a mean slab: three orthogonal slices through the nose region's centre (the slab's
    centre without one), the density in grey and each region in its own colour; y is up, the face looks right
    (profile) or up (top view)."""
    plt = report_plots._pyplot()
    colours = plt.get_cmap('tab10')
    mean_slab = np.asarray(mean_slab, dtype=np.float32)
    centre = [n // 2 for n in regions.shape]
    if 'nose' in regions.names and regions.mask('nose').any():
        centre = [int(round(c)) for c in np.argwhere(regions.mask('nose')).mean(0)]
    cx, cy, cz = centre
    cuts = [(f'profile (x = {cx})', np.s_[cx, :, :], (0, 1), ('z', 'y')),
        (f'top (y = {cy})', np.s_[:, cy, :], (1, 0), ('x', 'z')),
        (f'front (z = {cz})', np.s_[:, :, cz], (1, 0), ('x', 'y'))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (title, cut, order, (across, up)) in zip(axes, cuts):
        density = (mean_slab[cut] > level).transpose(order)
        label = regions.labels[cut].transpose(order)
        rgb = np.ones(label.shape + (3,)) * np.where(density, 0.55, 0.9)[..., None]
        for i, name in enumerate(regions.names[:-1]):
            colour = np.array(colours(i % 10)[:3])
            inside = label == i
            rgb[inside] = 0.45 * rgb[inside] + 0.55 * colour
        ax.imshow(rgb, origin='lower', interpolation='nearest')
        ax.set(title=title, xlabel=across, ylabel=up, xticks=[], yticks=[])
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(i % 10)) for i in range(len(regions.names) - 1)]
    fig.legend(handles, regions.names[:-1], loc='lower center', ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f'regions ({regions.source}) over the mean slab (dark: sigma > {level:g})', fontsize=10)
    report_plots._save(fig, path)

