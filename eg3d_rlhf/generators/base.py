"""The generator interface: what the preference core may ask of any 3D generator, and the sample-id vocabulary."""

import hashlib
import os
import re

import torch

from eg3d_rlhf.geometry.preview import rgb_picture
from torch_utils import misc

#----------------------------------------------------------------------------
# Sample ids: 'seed%06d' for unconditional generators, 'c%02d-seed%06d' with a condition. A seed list on
# the command line reads like '0,2,5-7'.

def sample_id(seed, condition=None):
    """The id of a generator's sample: seed000123, or c03-seed000123 with a condition."""
    return f'seed{int(seed):06d}' if condition is None else f'c{int(condition):02d}-seed{int(seed):06d}'


MAX_SEED = 2**32 - 1            # Latents are drawn by numpy's RandomState(seed), which takes no more.
MAX_SEEDS = 10**7               # Seeds one list may name (a typo like 0-9999999999 would fill the memory).


def seed_ranges(s):
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; ValueError naming the part that cannot be read."""
    seeds = []
    for part in s.split(','):
        m = re.fullmatch(r'\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?', part)     # ASCII digits: \d takes others.
        if m is None:
            raise ValueError(f'cannot parse "{part}" (use numbers and ranges, e.g. 0,2,5-7)')
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f'empty range "{part}"')
        if hi > MAX_SEED:
            raise ValueError(f'"{part}": seeds go up to {MAX_SEED}')
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise ValueError(f'"{s}" names more than {MAX_SEEDS:,} seeds')
        seeds.extend(range(lo, hi + 1))
    return seeds


def sample_keys(seeds, conditions, available, kind='this'):
    """[(seed, condition)] of every seed under every condition (condition-major) of a generator with `available`
    condition values (None: unconditional). conditions None means none for an unconditional generator and all of
    them for a conditional one; ValueError for conditions it lacks."""
    if available is None:
        if conditions:
            raise ValueError(f'the {kind} generator is unconditional; give no conditions')
        conditions = [None]
    else:
        conditions = list(range(available)) if conditions is None else list(conditions)
        bad = [c for c in conditions if not 0 <= c < available]
        if bad or not conditions:
            raise ValueError(f'conditions must lie in 0..{available - 1}, got {bad or "none"}')
    return [(int(s), c) for c in conditions for s in seeds]


def file_sha256(path):
    """Hex SHA-256 of a file: a generator's identity in bank metadata."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()

#----------------------------------------------------------------------------

class Generator3D:
    """A 3D generator as the preference core sees it. Samples are named by seed (and an optional condition) and
    always come out the same; sigma lives in a centred box of side `cube_length` (EG3D's convention: world y up, the
    face toward +z). Adapters (generators/eg3d.py, ...) implement the methods that raise NotImplementedError."""

    kind            = None      # Short family name recorded in bank metadata ('eg3d', ...).
    cube_length     = 1.0       # Side of the box sigma lives in, world units.
    batch           = 8         # Samples per generator pass in sigma_grid().
    path            = None      # The file the generator was loaded from, if any (its identity).
    conditions      = None      # Number of condition values (ids c%02d-seed%06d); None = unconditional.

    def field(self, seeds, condition=None, requires_grad=False):
        """The samples of `seeds` as an eg3d_rlhf.geometry.sigma.SigmaField (raw sigma at any world points)."""
        raise NotImplementedError

    def images(self, seeds, condition=None):
        """RGB renders [len(seeds), 3, H, W] in [-1, 1] on the CPU, for people and image metrics."""
        raise NotImplementedError

    def reference(self):
        """A frozen copy of this generator as it is now (the anchor of consistency terms)."""
        raise NotImplementedError

    def settings(self):
        """Plain-type description of how samples are drawn (truncation, camera, ...), recorded in banks."""
        return {}

    #------------------------------------------------------------------------
    # Provided on top of the above.

    @property
    def device(self):
        return torch.device('cpu')

    def sample_id(self, seed, condition=None):
        return sample_id(seed, condition)

    def keys(self, seeds, conditions=None):
        """sample_keys of this generator's seeds and conditions."""
        return sample_keys(seeds, conditions, self.conditions, self.kind)

    def sigma_grid(self, seeds, grid, condition=None, chunk=2**18, progress=None):
        """Raw sigma [len(seeds), *grid.shape] on the CPU, `self.batch` samples per pass, without gradients."""
        seeds = list(seeds)
        parts = [self.field(seeds[s : s + self.batch], condition).sample_grid(grid, chunk=chunk, progress=progress).cpu()
            for s in range(0, len(seeds), self.batch)]
        sigma = torch.cat(parts)
        misc.assert_shape(sigma, [len(seeds), *grid.shape])
        return sigma

    def picture(self, seed, condition=None):
        """uint8 RGB picture [H, W, 3] of one sample: the same image every tool shows for this id."""
        return rgb_picture(self.images([seed], condition)[0])

    def identity(self):
        """{network, network_sha256} of the file behind the generator (None when it was built in memory)."""
        if self.path is None:
            return dict(network=None, network_sha256=None)
        return dict(network=os.path.abspath(self.path), network_sha256=file_sha256(self.path))

    def sample_arrays(self, seed, condition=None):
        """{name: numpy array} a bank keeps beside the slab (BANK/<id>/<name>.npz), e.g. a flow's finished asset,
        which Circular-DPO encodes back into each stage's data; none by default."""
        return {}

    def sample_meta(self, seed, condition=None):
        """What a bank's meta.json records about one sample (besides the slab): enough to draw it again."""
        meta = dict(id=self.sample_id(seed, condition), seed=int(seed))
        if condition is not None:
            meta['condition'] = int(condition)
        return meta

#----------------------------------------------------------------------------
