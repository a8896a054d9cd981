"""A generator's family of training heads as a slab sees them: true density drawn coarse to fine, measured, cached."""

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np
import torch

import dnnlib
from eg3d_rlhf.geometry import head_measures
from eg3d_rlhf.synthetic import flow_data, world

#----------------------------------------------------------------------------
# The heads a generator was trained on are the synthetic world's: EG3D's dataset is world.sample(seed, index) (the
# bundled one seed 0; its defects are defects, not the family), the flow model's the same heads grown or shrunk by
# their builds (flow_data.flow_head). The first `heads` of them stand for the family. Each is drawn as its true
# density on the slab grid the samples are measured on (the same voxels, so a voxel count reads alike on both sides)
# and measured once per grid: head size and nose prominence (geometry/head_measures.py) and the inside voxels. Drawing 64
# heads on the collateral's 128 slab takes about a minute on 2 cores, so the measures are kept in the cache dir's
# head-family/ (dnnlib.util.make_cache_dir_path), keyed by the family, the grid, the level and the code they come
# from; an entry that cannot be read is drawn again.

FOLDER = 'head-family'       # In the cache dir.
BLOCK = 4                    # Coarse-to-fine: voxel blocks of BLOCK^3 whose centre lies farther from the surface than
REACH = 1.5                  # REACH x their half-diagonal are wholly inside or outside (the world's signed distance is
                             # close to a true distance: the same voxels as dense evaluation, tests/test_plausibility.py),
                             # so only the blocks near the surface, about a fifth, are evaluated voxel by voxel.
SOURCES = ('eg3d_rlhf/synthetic', 'eg3d_rlhf/geometry/head_measures.py', 'eg3d_rlhf/geometry/sigma.py')  # What a key covers.
MARGIN = 0.25                # A family's range: its heads' least and largest values widened by this share of their
                             # span either way, for the training heads beyond the first `heads`: the 1024 flow heads'
                             # extremes lie about a fifth of the 64's span beyond them (one nose 0.27;
                             # docs/guides/synthetic-world.md).


@dataclasses.dataclass(frozen=True)
class Family:
    seed:           int = 0         # Dataset seed of the training heads (make_dataset's --seed, a flow config's data_seed).
    build_spread:   float = 0.0     # Their builds (flow_data.build; a flow config's build_spread); 0: the world's heads.
    heads:          int = 64        # Heads 0 .. heads-1 of the dataset stand for the family.

    def samples(self):
        """The family's heads (world.SyntheticHead, clean)."""
        return [flow_data.flow_head(self.seed, index, self.build_spread) for index in range(self.heads)]

    def describe(self):
        built = f', builds +-{self.build_spread:.0%}' if self.build_spread else ''
        return f'heads 0-{self.heads - 1} of the synthetic world\'s dataset seed {self.seed}{built}'


def of_generator(generator):
    """The Family of heads a generator was trained on: a flow model's data_seed and build_spread (its config), else the
    world's heads of seed 0 (the bundled EG3D generator's data)."""
    config = getattr(generator, 'config', None) or {}
    return Family(seed=int(config.get('data_seed', 0)), build_spread=float(config.get('build_spread', 0.0)))

#----------------------------------------------------------------------------

def density_slab(sample, grid):
    """True density [X, Y, Z] (numpy float32, world.density's) of a world sample on a CubeGrid: evaluated voxel by voxel
    in the blocks near the surface, DENSITY_SCALE or 0 in the others (which lie more than a voxel from the surface:
    the voxels inside are the same, and so is every level crossing the measures refine)."""
    shape = np.asarray(grid.shape)
    blocks = -(-shape // BLOCK)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in blocks], indexing='ij'), -1).reshape(-1, 3)
    centres = grid.index_to_world(np.minimum(ijk * BLOCK + (BLOCK - 1) / 2, shape - 1))
    with torch.no_grad():
        sdf = world.sdf([sample], torch.as_tensor(centres, dtype=torch.float32))[0].numpy()
    near = np.abs(sdf) <= REACH * (BLOCK - 1) / 2 * np.sqrt(3) * grid.voxel_size
    coarse = np.where(sdf < 0, world.DENSITY_SCALE, 0.0).astype(np.float32).reshape(blocks)
    volume = np.kron(coarse, np.ones([BLOCK] * 3, dtype=np.float32))[:shape[0], :shape[1], :shape[2]]
    offsets = np.stack(np.meshgrid(*[np.arange(BLOCK)] * 3, indexing='ij'), -1).reshape(-1, 3)
    points = (ijk[near][:, None] * BLOCK + offsets).reshape(-1, 3)
    points = points[(points < shape).all(axis=1)]
    with torch.no_grad():
        values = world.density([sample], torch.as_tensor(grid.index_to_world(points), dtype=torch.float32))[0]
    volume[tuple(points.T)] = values.numpy()
    return volume


def grid_key(grid):
    return dict(resolution=grid.resolution, cube_length=grid.cube_length, exact=grid.exact_eg3d_grid,
        start=list(grid.start), stop=list(grid.stop))


@functools.lru_cache(maxsize=None)
def code_digest():
    """sha256 of the source files SOURCES names (paths and bytes): the code a family's measures come from."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    h = hashlib.sha256()
    for source in SOURCES:
        path = os.path.join(root, source)
        files = [path] if os.path.isfile(path) else \
            [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith('.py')]
        for name in files:
            with open(name, 'rb') as f:
                h.update(os.path.relpath(name, root).encode() + b'\0' + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def measure_head(volume, grid, level):
    """(head size, nose prominence) of one density slab, and its inside voxels packed into bits."""
    features = [head_measures.head_size(volume, grid, level), head_measures.nose_prominence(volume, grid, level)]
    return features, np.packbits(volume.reshape(-1) >= level)


_measured = {}

def measures(family, grid, level=10.0):
    """(features [heads, 2] float64: head size and nose prominence in world units, inside [heads, bytes] uint8: each
    head's voxels >= level, np.packbits of the flat slab) of a family on a CubeGrid, from this process's memory, the
    cache dir, or drawn now (and kept in both)."""
    described = dict(family=dataclasses.asdict(family), grid=grid_key(grid), level=float(level), code=code_digest(),
        torch=torch.__version__)
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    if key not in _measured:
        _measured[key] = load(key, family.heads, grid) or save(key, *draw(family, grid, level))
    return _measured[key]


def widened(values):
    """[low, high]: the least and largest of values, MARGIN of their span beyond either way."""
    low, high = float(np.min(values)), float(np.max(values))
    return [low - MARGIN * (high - low), high + MARGIN * (high - low)]


def feature_range(family, grid, level=10.0):
    """[[low, high] of head size, [low, high] of nose prominence]: the family's range on a grid (world units)."""
    features = measures(family, grid, level)[0]
    return [widened(features[:, k]) for k in range(features.shape[1])]


_floors = {}

def size_floor(family, grid, level=10.0):
    """The head size on a grid of the family's head drawn largest (its scale, build included): no more than the top of
    the family's range, and one head to draw instead of all."""
    key = (family, json.dumps(grid_key(grid)), float(level))
    if key not in _floors:
        largest = max(family.samples(), key=lambda sample: sample.head.scale)
        _floors[key] = measure_head(density_slab(largest, grid), grid, level)[0][0]
    return _floors[key]


def draw(family, grid, level):
    rows = [measure_head(density_slab(sample, grid), grid, level) for sample in family.samples()]
    return np.array([r[0] for r in rows], dtype=np.float64), np.stack([r[1] for r in rows])


def entry_paths(key):
    folder = dnnlib.util.make_cache_dir_path(FOLDER)
    return os.path.join(folder, f'{key[:32]}-features.npy'), os.path.join(folder, f'{key[:32]}-inside.npy')


def load(key, heads, grid):
    """A cache entry's (features, inside), or None when it is absent or not what its key says."""
    try:
        features, inside = [dnnlib.util.read_npy(path, error=ValueError) for path in entry_paths(key)]
    except (OSError, ValueError):
        return None
    fine = features.shape == (heads, 2) and np.isfinite(features).all() and inside.dtype == np.uint8 \
        and inside.shape == (heads, -(-grid.num_points // 8))
    return (features.astype(np.float64), inside) if fine else None


def save(key, features, inside):
    """Keep an entry in the cache dir (a cache that cannot be written costs only the time); returns it."""
    try:
        for path, array in zip(entry_paths(key), (features, inside)):
            with dnnlib.util.atomic_write(path, 'wb') as f:
                np.save(f, array, allow_pickle=False)
    except OSError:
        pass
    return features, inside

#----------------------------------------------------------------------------
