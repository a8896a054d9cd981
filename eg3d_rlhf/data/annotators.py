"""Simulated annotators: geometric tastes scored from a raw sigma slab, judgements drawn Bradley-Terry with a temperature."""

import collections
import functools

import numpy as np

from eg3d_rlhf.data.preferences import Judgement, now
from eg3d_rlhf.geometry import mesh
from eg3d_rlhf.geometry.head_measures import axis_world, front_surface, head_size, nose_prominence
from eg3d_rlhf.geometry.sigma import CubeGrid, closed_slab
from eg3d_rlhf.synthetic import family, heads

#----------------------------------------------------------------------------
# Tastes. Each maps (raw sigma slab [X, Y, Z], its CubeGrid, level) to a number; higher = liked more. World y is up
# and the face looks toward +z (high z index), as everywhere in eg3d_rlhf.

def closed_mesh(volume, grid, level):
    """Mesh of the slab with its six faces set below the level, so the cut head closes (gen_samples' border idea)."""
    return mesh.extract_mesh(closed_slab(np.asarray(volume, dtype=np.float32), level), grid, level=level)


def roughness(volume, grid, level=10.0):
    """Mean distance of each mesh vertex from the average of its neighbours, in mean edge lengths (umbrella operator)."""
    verts, faces = closed_mesh(volume, grid, level)
    if len(faces) == 0:
        return 1.0
    edges = mesh.unique_edges(faces)
    n, points = len(verts), verts.astype(np.float64)
    ends = np.r_[edges[:, 0], edges[:, 1]]                                  # Each edge seen from both of its ends.
    others = np.r_[edges[:, 1], edges[:, 0]]
    degree = np.bincount(ends, minlength=n).clip(min=1)
    neighbours = np.stack([np.bincount(ends, weights=points[others, k], minlength=n) for k in range(3)], axis=1)
    offset = neighbours / degree[:, None] - verts
    edge_length = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1).mean()
    return float(np.linalg.norm(offset, axis=1).mean() / max(edge_length, 1e-12))


def defects(volume, grid, level=10.0):
    """Floaters and holes: the surface share outside the largest piece plus 0.05 per handle (tunnel) of the mesh."""
    verts, faces = closed_mesh(volume, grid, level)
    if len(faces) == 0:
        return 1.0
    fractions = mesh.component_fractions(verts, faces)
    handles = mesh.handle_count(faces, mesh.unique_edges(faces), len(fractions))
    return float(1 - fractions[0] + 0.05 * handles)


def mirror_columns(grid, size):
    """(index of each x column's mirror image across x = 0 [size], whether that mirror lies on the grid to within
    half a voxel [size])."""
    x = axis_world(grid, size, 0)
    mirror = np.argmin(np.abs(x[:, None] + x[None, :]), axis=1)
    return mirror, np.abs(x + x[mirror]) <= 0.5 * np.abs(x[1] - x[0]) + 1e-9


def asymmetry(volume, grid, level=10.0):
    """How far the face is from its mirror image (world units): the mean |z(x, y) - z(-x, y)| of the front surface
    over the columns hit on both sides (mirror columns matched to within half a voxel); 1.0 if there are none."""
    z = front_surface(volume, grid, level)
    mirror, matched = mirror_columns(grid, volume.shape[0])
    d = np.abs(z[matched] - z[mirror[matched]])
    return float(np.nanmean(d)) if np.isfinite(d).any() else 1.0


def mirror_mismatch(volume, grid, level=10.0):
    """How far the head is from its mirror image, as a share: 1 - IoU of the voxels inside the surface and their
    mirror images across x = 0 (over the columns whose mirror is on the grid); 1.0 if nothing is inside. Unlike
    asymmetry it has no unit, so a head scaled up or down reads as symmetric as before."""
    mirror, matched = mirror_columns(grid, volume.shape[0])
    inside = np.asarray(volume)[matched] >= level
    flipped = np.asarray(volume)[mirror[matched]] >= level
    union = np.count_nonzero(inside | flipped)
    return 1.0 - np.count_nonzero(inside & flipped) / union if union else 1.0


# The size-liking tastes like a larger head only up to the largest head of the world's widest family of training
# heads (the flow model's: the world's heads grown or shrunk by up to 15%, flow_heads.PRESETS['default']), as drawn on
# the same grid (synthetic/family.py: the top of its range). Inside that range they read head_size as before; beyond
# it a head is no better, so a change that grows heads past anything the family holds wins nothing there.
SIZE_FAMILY = family.Family(seed=0, build_spread=0.15)


def liked_size(volume, grid, level=10.0):
    """head_size, but no more than the top of SIZE_FAMILY's range on this grid (world units)."""
    size = head_size(volume, grid, level)
    if size <= family.size_floor(SIZE_FAMILY, grid, level):        # Below one of its heads: below the top, no need
        return size                                                 # to draw them all.
    return min(size, family.feature_range(SIZE_FAMILY, grid, level)[0][1])


NOSE_WEIGHT = 2.0       # proportions: world units of head size one unit of nose prominence is worth.


def proportions(volume, grid, level=10.0):
    """A large head with a nose that does not stick out: liked_size minus NOSE_WEIGHT x nose_prominence (world units).
    A taste that needs both stages of a two-stage generator: the structure decides the size, the detail the nose.
    The weight is the ratio of their spreads over the bundled flow model's samples (0.0175 and 0.0088 world units,
    docs/results/2026-11-27-circular-dpo-notebook.md), so each part moves the taste about as much as the other."""
    return liked_size(volume, grid, level) - NOSE_WEIGHT * nose_prominence(volume, grid, level)


TASTES = {
    'nose':      lambda v, g, level: -nose_prominence(v, g, level),     # A face whose nose does not stick out.
    'smooth':    lambda v, g, level: -roughness(v, g, level),           # A smooth surface.
    'closed':    lambda v, g, level: -defects(v, g, level),             # One piece, no floaters, no holes.
    'symmetric': lambda v, g, level: -asymmetry(v, g, level),           # Left and right halves alike.
    'size':      liked_size,                                              # A large head, up to the family's largest.
    'proportions': proportions,                                           # A large head, a nose that does not stick out.
}


# A taste with an ideal point, for over-optimisation studies: a nose that does not stick out is liked, as with 'nose',
# but a face flatter than the world's flattest nose is not a face: below that floor each world unit of prominence lost
# costs FLATTER_COST units of taste, so the taste peaks at the floor. The floor is the least nose prominence of the
# world's training heads (seed 0, no build spread: the bundled EG3D generator's data) drawn on the same grid. On the
# original generator's samples, which all lie above the floor, its judgements equal those of 'nose'.
NOSE_FAMILY = family.Family(seed=0)
FLATTER_COST = 3.0      # natural-nose: taste lost per world unit of prominence below the floor (1 is gained above it).


def nose_floor(grid, level=10.0):
    """The least nose prominence of NOSE_FAMILY's heads drawn on this grid (world units)."""
    return float(family.measures(NOSE_FAMILY, grid, level)[0][:, 1].min())


def below_floor(prominence, floor):
    """-prominence down to floor, then falling FLATTER_COST - 1 times as fast as it rose (world units)."""
    return -prominence - FLATTER_COST * max(0.0, floor - prominence)


def natural_nose(volume, grid, level=10.0):
    """below_floor of the nose's prominence, with nose_floor of this grid as the floor (world units)."""
    return below_floor(nose_prominence(volume, grid, level), nose_floor(grid, level))


# The bundled flow model draws flatter noses than its training heads (its detail stage smooths them: prominence
# 0.033-0.065 world units on its samples, where the world's heads start at 0.093), so 'natural-nose' would want their
# noses longer. 'flow-natural-nose' is the same taste on the flow's own scale: its floor is the flattest nose among
# the bundled flow model's samples of seeds 0-9 under its 8 conditions on a 64 slab (python tools/sample_bank.py
# --network bundled-flow --seeds 0-9 --res 64, then the least nose_prominence), so on its original samples it
# judges as 'nose' does.
FLOW_NOSE_FLOOR = 0.0326
# 'flow-natural-nose-p15' puts the floor at the 15th percentile of those 80 samples' prominences instead, so 15% of the
# original samples already lie below it. Flattening every nose of those samples by the same amount raises the taste's
# mean by 0.32 of its sd up to 0.0054 world units of flattening; 20% of that gain is lost by 0.0069 and all of it by
# 0.0090, within reach of a run (the flattest samples' floor was not).
FLOW_NOSE_FLOOR_P15 = 0.0388


def flow_natural_nose(volume, grid, level=10.0):
    """below_floor of the nose's prominence, with FLOW_NOSE_FLOOR as the floor (world units)."""
    return below_floor(nose_prominence(volume, grid, level), FLOW_NOSE_FLOOR)


def flow_natural_nose_p15(volume, grid, level=10.0):
    """below_floor of the nose's prominence, with FLOW_NOSE_FLOOR_P15 as the floor (world units)."""
    return below_floor(nose_prominence(volume, grid, level), FLOW_NOSE_FLOOR_P15)


IDEAL_TASTES = {                # Peaked tastes; not in TASTES, the collateral set, whose 'nose' they would repeat.
    'natural-nose': natural_nose,
    'flow-natural-nose': flow_natural_nose,
    'flow-natural-nose-p15': flow_natural_nose_p15,
}


TASTE_HELP = {
    'nose':        'a face whose nose does not stick out',
    'smooth':      'a smooth surface',
    'closed':      'one piece, no floaters, no holes',
    'symmetric':   'left and right halves alike',
    'size':        'a large head, up to the family\'s largest',
    'proportions': 'a large head with a nose that does not stick out',
    'natural-nose': 'a nose that does not stick out, but no flatter than the world\'s flattest',
    'flow-natural-nose': 'a nose that does not stick out, but no flatter than the bundled flow model\'s flattest',
    'flow-natural-nose-p15': 'a nose that does not stick out, but not among the flattest 15% of the bundled flow '
        'model\'s',
}


REGION = 'region:'       # A taste that looks at one facial part alone: 'region:' + a name of heads.PARTS.


@functools.lru_cache(maxsize=8)
def _part_mask(resolution, cube_length, exact, start, stop, part):
    grid = CubeGrid(resolution, cube_length, exact, start, stop)
    labels, names = heads.part_labels(grid)
    return labels == names.index(part)


def part_fill(volume, grid, part, level=10.0):
    """The share of one facial part's voxels inside the surface: the part as the demos' region template draws it
    over this grid (heads.part_labels: the voxels of the average head nearest that part, within 0.05 world units).
    A fuller part scores higher; nothing outside the part counts."""
    mask = _part_mask(grid.resolution, grid.cube_length, grid.exact_eg3d_grid, grid.start, grid.stop, part)
    return float(np.count_nonzero(np.asarray(volume)[mask] >= level) / max(np.count_nonzero(mask), 1))


def taste_function(taste):
    """The function (slab, grid, level) -> score of a taste: a key of TASTES or 'region:PART' (part_fill)."""
    if taste.startswith(REGION) and taste[len(REGION):] in heads.PARTS:
        part = taste[len(REGION):]
        return lambda v, g, level: part_fill(v, g, part, level)
    if taste in IDEAL_TASTES:
        return IDEAL_TASTES[taste]
    if taste not in TASTES:
        raise ValueError(f'unknown taste {taste!r}; use one of {", ".join(taste_names())}')
    return TASTES[taste]


def taste_names():
    """Every taste an annotator can have: the keys of TASTES and IDEAL_TASTES, then region:PART for each part."""
    return list(TASTES) + list(IDEAL_TASTES) + [REGION + p for p in heads.PARTS]


def taste_scores(taste, bank, level=10.0, progress=None):
    """{id: raw taste score} of every sample of a bank (ids, slab(id), grid(id)), one slab in memory at a time;
    progress(1) after each."""
    scores, function = {}, taste_function(taste)
    for sample_id in bank.ids:
        scores[sample_id] = function(bank.slab(sample_id), bank.grid(sample_id), level)
        if progress is not None: progress(1)
    return scores

#----------------------------------------------------------------------------

def parse_annotator(name):
    """'oracle:NAME' -> NAME (a taste of taste_names()), with a clear error for anything else."""
    kind, _, taste = name.partition(':')
    if kind != 'oracle' or taste not in taste_names():
        raise ValueError(f'unknown annotator {name!r}; use oracle:TASTE, TASTE one of {", ".join([*TASTES, *IDEAL_TASTES])} '
            f'or oracle:{REGION}PART (PART: {", ".join(heads.PARTS)})')
    return taste


def pair_limit(ids, groups=None):
    """How many distinct unordered pairs the ids make (within each group of {id: group}, if given)."""
    sizes = collections.Counter(groups[k] for k in ids).values() if groups is not None else [len(ids)]
    return sum(m * (m - 1) // 2 for m in sizes)


class OracleAnnotator:
    """A taste over a set of samples, standardised over that set, judging pairs like a noisy person.

    P(a preferred) = sigmoid((z_a - z_b) / temperature - log theta), likewise for b, tie otherwise (Rao-Kupper; theta
    = 1 never ties), where z are the taste scores standardised over the set (mean 0, standard deviation 1).
    """

    def __init__(self,
        taste,                      # A name of taste_names().
        scores,                     # {sample id: raw taste score}.
        temperature     = 0.5,      # Noise, in standard deviations of the taste; 0 = always the noise-free choice.
        theta           = 1.0,      # Rao-Kupper tie parameter (>= 1).
        seed            = 0,        # Seed of the judgement noise and of the pair draw.
        standard        = None,     # (mean, sd) the scores are standardised by; None: their own over this set.
    ):
        assert taste in taste_names() and temperature >= 0 and theta >= 1
        self.taste, self.name = taste, f'oracle:{taste}'
        self.temperature, self.theta = float(temperature), float(theta)
        values = np.array(list(scores.values()), dtype=np.float64)
        if standard is None:
            standard = (values.mean(), values.std() if len(values) > 1 and values.std() > 0 else 1.0)
        self.z = {k: (float(v) - standard[0]) / (standard[1] or 1.0) for k, v in scores.items()}
        self.rng = np.random.RandomState(seed)

    @classmethod
    def from_slabs(cls, taste, slabs, grid, level=10.0, **kwargs):
        """Score every slab of {id: raw slab} with the taste."""
        function = taste_function(taste)
        return cls(taste, {k: function(v, grid, level) for k, v in slabs.items()}, **kwargs)

    def prefers(self, a, b):
        """The noise-free choice: 'a', 'b' or 'tie' (equal scores)."""
        d = self.z[a] - self.z[b]
        return 'a' if d > 0 else 'b' if d < 0 else 'tie'

    def probabilities(self, a, b):
        """(P(a), P(b), P(tie))."""
        d = self.z[a] - self.z[b]
        if self.temperature == 0:
            return dict(a=(1.0, 0.0, 0.0), b=(0.0, 1.0, 0.0), tie=(0.0, 0.0, 1.0))[self.prefers(a, b)]
        log_theta = np.log(self.theta)
        pa = 1 / (1 + np.exp(-(d / self.temperature - log_theta)))
        pb = 1 / (1 + np.exp(-(-d / self.temperature - log_theta)))
        return pa, pb, max(0.0, 1 - pa - pb)

    def judge(self, a, b):
        pa, pb, _ = self.probabilities(a, b)
        u = self.rng.uniform()
        return 'a' if u < pa else 'b' if u < pa + pb else 'tie'

    def draw_pairs(self, ids, count, groups=None):
        """`count` distinct unordered pairs of different ids, in random order and random sides; with groups ({id:
        group}, e.g. a flow sample's condition) only pairs within one group, as a prompt's pairs share the prompt."""
        ids = sorted(ids)
        n, limit = len(ids), pair_limit(ids, groups)
        if count > limit:
            raise ValueError(f'{count} pairs asked for, but {n} samples give only {limit}'
                + (' within their groups' if groups is not None else ''))
        seen, pairs = set(), []
        while len(pairs) < count:
            i, j = self.rng.randint(n, size=2)
            if i == j or (min(i, j), max(i, j)) in seen or (groups is not None and groups[ids[i]] != groups[ids[j]]):
                continue
            seen.add((min(i, j), max(i, j)))
            pairs.append((ids[i], ids[j]))
        return pairs

    def given_scores(self, ids):
        """{id: the score the annotator gives}, in id order: z plus logistic noise of scale temperature (one uniform
        draw per id; none at temperature 0). A median split of these is the good/bad split of good_bad."""
        given = {}
        for k in sorted(ids):
            u = max(self.rng.uniform(), np.finfo(np.float64).tiny)
            given[k] = self.z[k] - self.temperature * (np.log(u) - np.log1p(-u))     # Minus logit(u): logistic noise.
        return given

    def good_bad(self, ids, bad_quantile=0.5, good_quantile=0.5, given=None):
        """{id: 1 (good) or 0 (bad)} of the ids outside the middle band: bad when the annotator's score (given_scores,
        drawn now unless `given`) is at most the bad_quantile of the ids' z, else good when it is at least their
        good_quantile, else left out (DreamCS's bands, "Key Designs" 1). Equal quantiles leave none out; at 0.5 it is
        the median split: good with probability sigmoid((z - median z) / temperature)."""
        if not 0 <= bad_quantile <= good_quantile <= 1:
            raise ValueError(f'bands need 0 <= bad quantile <= good quantile <= 1; got {bad_quantile}, {good_quantile}')
        ids = sorted(ids)
        z = [self.z[k] for k in ids]
        lo, hi = np.quantile(z, bad_quantile), np.quantile(z, good_quantile)
        given = self.given_scores(ids) if given is None else given
        return {k: int(given[k] > lo) for k in ids if given[k] <= lo or given[k] >= hi}

    def judgements(self, pairs, time=None):
        """Judgement records for pairs; extra keys keep the noise-free choice and the settings."""
        time = time or now()
        return [Judgement(a=a, b=b, choice=self.judge(a, b), annotator=self.name, time=time,
            extra=dict(noise_free=self.prefers(a, b), temperature=self.temperature)) for a, b in pairs]

#----------------------------------------------------------------------------
