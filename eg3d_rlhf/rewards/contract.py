"""The reward contract: what a reward model reads (grid, normalisation, axis order) and its one scoring path from raw sigma."""

import dataclasses
import itertools
import math

import numpy as np
import torch

from eg3d_rlhf.geometry.sigma import grid_from_meta, normalise_sigma_self, slab_problem
from eg3d_rlhf.rewards import aggregate
from torch_utils import misc

#----------------------------------------------------------------------------
# Every caller (fitting, scoring a bank, the labeling page's active order, fine-tuning, the panel, evaluation) hands
# a Reward *raw* sigma of the slab grid in (x, y, z) order, exactly as generators and banks produce it; the
# InputSpec stored in the checkpoint turns that into what the network was trained on.

NORMALISATIONS = ('self_minmax', 'affine')
AXES = 'xyz'


class InputSpecError(ValueError):
    """An input description that no model can be fed with."""


class ScoreError(ValueError):
    """A reward's score of a sample that is nan or inf; the message names the sample and the cause."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    slab:           dict                    # The slab grid: resolution, cube_length, crop, [exact_eg3d_grid] (sigma.slab_description).
    normalisation:  str     = 'self_minmax' # 'self_minmax': each slab min-max scaled to [0, scale]; 'affine': raw * scale + offset.
    scale:          float   = 100.0         # Top of the min-max range, or the affine multiplier.
    offset:         float   = 0.0           # Affine only: added after scaling.
    order:          str     = 'xyz'         # Axis order the network reads, a permutation of 'xyz'.
    flip_x:         bool    = False         # Reverse the x axis first (gen_samples' np.flip(sigmas, 0))?

    def __post_init__(self):
        if self.normalisation not in NORMALISATIONS:
            raise InputSpecError(f'unknown input normalisation {self.normalisation!r}; known: {", ".join(NORMALISATIONS)}')
        for name in ('scale', 'offset'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputSpecError(f'input {name} must be a finite number, got {value!r}')
        if self.scale == 0:
            raise InputSpecError('input scale must not be 0')
        if sorted(str(self.order)) != sorted(AXES):
            raise InputSpecError(f'input order must be a permutation of "xyz", got {self.order!r}')
        problem = slab_problem(self.slab)
        if problem is not None:
            raise InputSpecError(f'input {problem}')

    @classmethod
    def from_dict(cls, d):
        """From a checkpoint's "input" entry; format 1's {'normalisation': 'self_minmax_0_100', 'slab': ...} reads too."""
        if not isinstance(d, dict):
            raise InputSpecError(f'input description must be a dict, got {type(d).__name__}')
        d = dict(d)
        if d.get('normalisation') == 'self_minmax_0_100':
            d.update(normalisation='self_minmax', scale=100.0)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)}, key=repr)
        if unknown:
            raise InputSpecError(f'unknown input field {unknown[0]!r}')
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise InputSpecError(f'input field {missing[0]!r} is missing')
        return cls(**d)

    def to_dict(self):
        return dict(slab=dict(self.slab), normalisation=self.normalisation, scale=float(self.scale),
            offset=float(self.offset), order=self.order, flip_x=bool(self.flip_x))

    @property
    def grid(self):
        """The CubeGrid the raw slabs must be sampled on."""
        return grid_from_meta(self.slab)

    def prepare(self, raw):
        """Raw slabs [N, X, Y, Z] (torch or numpy) -> the network's input [N, ...] in its axis order."""
        if self.flip_x:
            raw = torch.flip(raw, [-3]) if torch.is_tensor(raw) else np.flip(raw, -3)
        if self.normalisation == 'self_minmax':
            x = normalise_sigma_self(raw)
            x = x if self.scale == 100 else x * (self.scale / 100)
        else:
            x = raw * self.scale + self.offset
        if self.order != AXES:
            perm = [x.ndim - 3 + AXES.index(a) for a in self.order]
            lead = list(range(x.ndim - 3))
            x = x.permute(*lead, *perm) if torch.is_tensor(x) else np.transpose(x, lead + perm)
        return x

#----------------------------------------------------------------------------

class Reward:
    """A reward model with its contract: score raw sigma of the grid it was trained on, with or without gradients."""

    def __init__(self,
        model,                      # The network: score(x) -> [N], features(x) -> [N, F] on prepared inputs.
        spec,                       # InputSpec: grid, normalisation and axis order of its inputs.
        kind,                       # Registry name ('sigma', 'depth', 'pointcloud', ...).
        info        = None,         # The checkpoint's other entries (config, training report), informational.
    ):
        self.model, self.spec, self.kind, self.info = model, spec, kind, dict(info or {})
        self.grid = spec.grid
        self.aggregate = ('mean', 1.0)      # How score() reduces an ensemble's members (aggregate.aggregated sets it).

    @property
    def device(self):
        return next(self.model.parameters()).device

    def prepare(self, raw):
        """Raw slabs [N, X, Y, Z] -> network inputs on the model's device."""
        misc.assert_shape(raw, [None, *self.grid.shape])
        x = self.spec.prepare(raw if torch.is_tensor(raw) else torch.as_tensor(np.asarray(raw, dtype=np.float32)))
        return x.to(self.device, torch.float32)

    def score(self, raw):
        """Rewards [N] of raw slabs [N, X, Y, Z], its members reduced by self.aggregate; differentiable when raw is
        (the model's weights stay as they are)."""
        kind, lam = self.aggregate
        if kind == 'mean':
            return self.model.score(self.prepare(raw))
        return aggregate.reduce(self.member_scores(raw), kind, lam)

    def member_scores(self, raw):
        """Every ensemble member's reward [N, members] of raw slabs."""
        return self.model.member_scores(self.model.features(self.prepare(raw)))

    def features(self, raw):
        """Global features [N, F] of raw slabs."""
        return self.model.features(self.prepare(raw))

    @torch.no_grad()
    def score_slabs(self, slabs, batch=8, progress=None, members=False, names=None):
        """numpy rewards [len(slabs)] of raw slabs (an iterable of [X, Y, Z] arrays, read `batch` at a time, so a
        generator of a bank's slabs never holds more than one batch in memory); with members, every ensemble member's
        reward [len(slabs), members]. A score that is not finite stops it (check_scores; names: the slabs' names)."""
        slabs, out, done = iter(slabs), [], 0
        while True:
            chunk = list(itertools.islice(slabs, batch))
            if not chunk:
                break
            x = torch.stack([torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in chunk])
            out.append((self.model.member_scores(self.features(x)) if members else self.score(x)).cpu())
            self.check_scores(out[-1], x, None if names is None else names[done:done + len(x)], start=done)
            done += len(x)
            if progress is not None: progress(len(x))
        return torch.cat(out).numpy() if out else np.zeros([0, self.model.members] if members else [0], dtype=np.float32)

    @torch.no_grad()
    def check_scores(self, scores, raw, names=None, start=0):
        """ScoreError naming the first sample whose score (scores [N] or [N, members]) is nan or inf, and why: its raw
        slab (raw [N, X, Y, Z]) holds nan or inf, the input preparation takes it out of float32's range, or the model
        does on a finite input (weights out of range). names [N]; None names them 'slab START+i'. Every tool that
        scores samples stops on such a score: a nan ranked as "highest", or written as null, is a wrong result."""
        bad = ~torch.isfinite(torch.as_tensor(scores).reshape(len(scores), -1)).all(dim=1)
        if not bool(bad.any()):
            return
        i = int(bad.nonzero()[0, 0])
        value = next(float(v) for v in torch.as_tensor(scores)[i].reshape(-1) if not math.isfinite(float(v)))
        slab = torch.as_tensor(raw[i]).float().cpu()
        spec = self.spec
        how = f'{spec.normalisation}, scale {spec.scale:g}' + (f', offset {spec.offset:g}' if spec.offset else '')
        if not bool(torch.isfinite(slab).all()):
            cause = 'its slab holds nan or inf'
        elif not bool(torch.isfinite(self.prepare(slab[None])).all()):
            cause = (f'its slab (sigma {float(slab.min()):.3g} to {float(slab.max()):.3g}) overflows float32 in the '
                f'reward\'s input preparation ({how}); check the slab, and the checkpoint\'s input scale')
        else:
            cause = ('the reward model overflows float32 on a finite input (its weights are out of range); retrain the '
                'reward or restore its checkpoint')
        name = f'slab {start + i}' if names is None else names[i]
        raise ScoreError(f'{name}: the {self.kind} reward scores it {value}: {cause}')

#----------------------------------------------------------------------------
