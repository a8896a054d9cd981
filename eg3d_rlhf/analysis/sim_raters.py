"""Simulated raters of the five-criterion study (paper5): each sample a ratings page serves rated 1-5 from its geometry."""

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np

import dnnlib
from eg3d_rlhf.analysis.plausibility import residuals
from eg3d_rlhf.data import annotators
from eg3d_rlhf.data import bank as B
from eg3d_rlhf.data.ratings import PRESETS
from eg3d_rlhf.data.study_player import Page  # noqa: F401 (the rater's browser)
from eg3d_rlhf.geometry.head_measures import axis_world, front_surface, head_size
from eg3d_rlhf.synthetic import family as families
from eg3d_rlhf.synthetic import flow_data

#----------------------------------------------------------------------------
# What a simulated rater measures. Every measure is held against the generator's training family (synthetic/family.py:
# its first heads drawn as true density on the samples' slab grid, once per grid, kept in the cache dir): the family
# says what a good head of each kind looks like on this grid, so a rating means the same at any --res.
#   condition_consistency  the head's family read from its width profile (the widths of the inside along x, averaged
#                          over blocks of BLOCK world units in y and z, over the head size), by a ridge regression
#                          fitted to the family's heads and their true family score (synthetic/flow_data.py's, the
#                          conditions' own scale); 5 minus one point per family between that and the condition shown.
#   plausibility           the nearest-head residual (analysis/plausibility.py: 1 - IoU with the family head it overlaps
#                          most): 5 at or below the family heads' own median residual, 1 at the top of the family's
#                          range, linear between; a head size outside the family's range rates 2 at most.
#   geometric_detail       the face's fine relief: the RMS of the front surface minus its Gaussian blur of RELIEF world
#                          units over the central face (FACE_WINDOW), where the nose, lips, eye sockets and brow are;
#                          1 + 4 x its share of the family's median relief (a blurred blob reads low), at most 5.
#   surface_quality        floaters and holes (annotators.defects: the surface share off the largest piece, 0.05 per
#                          handle) cost one point per DEFECT_STEP; roughness (annotators.roughness) beyond the family's
#                          median costs up to ROUGH_POINTS, all of them at the top of the family's range.
#   overall                the mean of the other four.
# A rater adds its own leniency (one draw per rater) and noise (one draw per rating) and rounds to 1-5.

CRITERIA = tuple(PRESETS['paper5'])
BLOCK = 0.064               # World units: 4 voxels of the 64^3 cube.
RIDGE = 0.01                # Ridge penalty per head on standardised features (held-out family error about 1 family).
RELIEF = 0.032              # World units: 2 voxels of the 64^3 cube; the flow model's 32^3 surface rounds this off.
FACE_WINDOW = dict(x=0.1, y=(-0.16, 0.1))   # |x| < 0.1, y in [-0.16, 0.1]: nose, lips, eyes, brow of the heads.
DEFECT_STEP = 0.05          # One handle, or 5% of the surface in floaters: one point of surface quality.
ROUGH_POINTS = 2.0
SIZE_CAP = 2.0              # A head bigger or smaller than any of the family rates at most this plausible.
CACHE = 'sim-raters'        # In the cache dir: one small JSON per family, grid and level.


def width_features(inside, grid):
    """Width profile [blocks] of an inside mask [X, Y, Z]: mean x-width per (y, z) block of BLOCK, over head size."""
    widths = inside.sum(axis=0) * grid.voxel_size
    y, z = (axis_world(grid, inside.shape[a], a) for a in (1, 2))
    by, bz = (np.floor((a - a[0]) / BLOCK + 1e-9).astype(int) for a in (y, z))
    total, count = np.zeros((by.max() + 1, bz.max() + 1)), np.zeros((by.max() + 1, bz.max() + 1))
    np.add.at(total, (by[:, None], bz[None, :]), widths)
    np.add.at(count, (by[:, None], bz[None, :]), 1)
    size = (np.count_nonzero(inside) * grid.voxel_size ** 3) ** (1 / 3)
    return (total / count).ravel() / max(size, grid.voxel_size)


def fine_relief(volume, grid, level):
    """RMS (world units) of the front surface minus its Gaussian blur of RELIEF over FACE_WINDOW; 0 with no surface."""
    import scipy.ndimage  # pylint: disable=import-outside-toplevel
    z = front_surface(np.asarray(volume, dtype=np.float32), grid, level)
    if np.all(np.isnan(z)):
        return 0.0
    z = np.where(np.isnan(z), np.nanmin(z), z)
    x, y = axis_world(grid, z.shape[0], 0), axis_world(grid, z.shape[1], 1)
    window = (np.abs(x)[:, None] < FACE_WINDOW['x']) & (y[None, :] > FACE_WINDOW['y'][0]) & (y[None, :] < FACE_WINDOW['y'][1])
    band = z - scipy.ndimage.gaussian_filter(z, RELIEF / grid.voxel_size)
    return float(np.sqrt(np.mean(band[window] ** 2))) if window.any() else 0.0

#----------------------------------------------------------------------------
# The reference: what the family reads on a grid.

def fit_ridge(features, target):
    """(mean, sd, weights, intercept) of a ridge regression of target on standardised features."""
    mean, sd = features.mean(axis=0), features.std(axis=0) + 1e-9
    a = (features - mean) / sd
    weights = np.linalg.solve(a.T @ a + RIDGE * len(a) * np.eye(a.shape[1]), a.T @ (target - target.mean()))
    return mean, sd, weights, float(target.mean())


def draw_reference(family, grid, level):
    """(the family's anchors on a grid, a JSON-able dict; its heads' inside voxels [heads, bytes], packed bits)."""
    heads = family.samples()
    volumes = [families.density_slab(h, grid) for h in heads]
    inside = np.stack([np.packbits(v.reshape(-1) >= level) for v in volumes])
    own = [residuals(inside[i:i + 1], np.delete(inside, i, axis=0))[0] for i in range(len(inside))]
    rough = [annotators.roughness(v, grid, level) for v in volumes]
    scores = np.array([flow_data.family_score(h.head) for h in heads])
    mean, sd, weights, intercept = fit_ridge(np.stack([width_features(v >= level, grid) for v in volumes]), scores)
    anchors = dict(residual=[float(np.median(own)), families.widened(own)[1]],
        head_size=families.widened([head_size(v, grid, level) for v in volumes]),
        relief=float(np.median([fine_relief(v, grid, level) for v in volumes])),
        roughness=[float(np.median(rough)), families.widened(rough)[1]],
        ridge=dict(mean=mean.tolist(), sd=sd.tolist(), weights=weights.tolist(), intercept=intercept))
    return anchors, inside


_references = {}

def reference(family, grid, level):
    """The anchors of draw_reference, with 'inside' added, of a Family on a CubeGrid: from this process's memory, the
    cache dir's CACHE/ (keyed by the family, grid, level and the code they come from), or drawn now and kept there (a
    cache that cannot be written costs only the time; an entry that cannot be read is drawn again)."""
    described = dict(family=dataclasses.asdict(family), grid=families.grid_key(grid), level=float(level),
        code=families.code_digest(), rater=source_digest())
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
    if key not in _references:
        paths = [os.path.join(dnnlib.util.make_cache_dir_path(CACHE), f'{key}{end}') for end in ('.json', '-inside.npy')]
        _references[key] = load_reference(paths, family.heads, grid) or save_reference(paths, *draw_reference(family,
            grid, level))
    return _references[key]


def load_reference(paths, heads, grid):
    try:
        with open(paths[0], encoding='utf-8') as f:
            anchors = json.load(f)
        inside = dnnlib.util.read_npy(paths[1], error=ValueError)
    except (OSError, ValueError):
        return None
    fine = isinstance(anchors, dict) and inside.dtype == np.uint8 and inside.shape == (heads, -(-grid.num_points // 8))
    return dict(anchors, inside=inside) if fine else None


def save_reference(paths, anchors, inside):
    try:
        with dnnlib.util.atomic_write(paths[1], 'wb') as f:
            np.save(f, inside, allow_pickle=False)
        with dnnlib.util.atomic_write(paths[0], 'w', encoding='utf-8') as f:
            json.dump(anchors, f)
    except OSError:
        pass
    return dict(anchors, inside=inside)


@functools.lru_cache(maxsize=None)
def source_digest():
    """sha256 of this file: a reference drawn by other rater code is drawn again."""
    with open(__file__, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()

#----------------------------------------------------------------------------
# A sample's measures and the ratings they give.

def measure(volume, grid, level, ref):
    """The raw measures of one slab against a reference: family score, residual, head size, relief, roughness, defects."""
    volume = np.asarray(volume, dtype=np.float32)
    r = ref['ridge']
    score = float((width_features(volume >= level, grid) - r['mean']) / r['sd'] @ np.asarray(r['weights']) + r['intercept'])
    inside = np.packbits(volume.reshape(-1) >= level)[None]
    return dict(family_score=score, residual=residuals(inside, ref['inside'])[0],
        head_size=head_size(volume, grid, level), relief=fine_relief(volume, grid, level),
        roughness=annotators.roughness(volume, grid, level), defects=annotators.defects(volume, grid, level))


def share(value, low, high):
    """Where value lies from low (0) to high (1), clipped."""
    return float(np.clip((value - low) / max(high - low, 1e-12), 0, 1))


def ratings_of(m, condition, conditions, ref):
    """{criterion: rating on a continuous 1-5 scale} of measure()'s result for a sample drawn for `condition` of
    `conditions` (None: no condition shown, and condition consistency is not rated)."""
    plausible = 5 - 4 * share(m['residual'], *ref['residual'])
    low, high = ref['head_size']
    plausible = min(plausible, SIZE_CAP) if not low <= m['head_size'] <= high else plausible
    values = dict(plausibility=plausible, geometric_detail=1 + 4 * min(1.0, m['relief'] / max(ref['relief'], 1e-12)),
        surface_quality=max(1.0, 5 - m['defects'] / DEFECT_STEP - ROUGH_POINTS * share(m['roughness'], *ref['roughness'])))
    if condition is not None:
        family = float(np.clip(m['family_score'] * conditions - 0.5, 0, conditions - 1))
        values['condition_consistency'] = max(1.0, 5 - abs(family - condition))
    values['overall'] = float(np.mean(list(values.values())))
    return values


class Rater:
    """One simulated rater: a leniency drawn once from its seed, noise on every rating, rounded to 1-5."""

    def __init__(self, seed=0, noise=0.5, leniency=0.3):
        if not (np.isfinite(noise) and noise >= 0 and np.isfinite(leniency) and leniency >= 0):
            raise ValueError(f'noise and leniency must be finite and >= 0, got {noise} and {leniency}')
        self.rng = np.random.default_rng(seed)
        self.noise, self.bias = float(noise), float(self.rng.normal(0, leniency))

    def rate(self, values, criteria):
        """{criterion: whole rating 1-5} of continuous values for the criteria asked."""
        return {c: int(np.clip(np.rint(values[c] + self.bias + self.rng.normal(0, self.noise)), 1, 5)) for c in criteria}

#----------------------------------------------------------------------------
# Samples seen: a served picture leads to the sample's measures, and to nothing else.

VIEWS = ('front', 'three_quarter', 'profile')


def pictures_digest(pictures):
    """sha256 of a sample's three previews (bytes, in VIEWS' order): how the rater knows a sample again."""
    h = hashlib.sha256()
    for data in pictures:
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


class SeenSamples:
    """The samples of some bank folders, known by their previews: {digest of the three previews: the slab's measures},
    measured once against the family's reference. No bank name, folder or id is kept, so whatever leads from a served
    picture to a rating is the geometry behind it, never which bank it came from."""

    def __init__(self, folders, family, progress=None):
        self.measures, self.refs = {}, {}
        for root in folders:
            bank = B.Bank(root)
            level = float(B.Bank.read_settings(root).get('preview_level', 10.0))
            for sample_id in bank.ids:
                pictures = [open_bytes(bank.path(sample_id, B.preview_file(v))) for v in VIEWS]
                grid = bank.grid(sample_id)
                ref, digest = reference(family, grid, level), pictures_digest(pictures)
                self.measures[digest], self.refs[digest] = measure(bank.slab(sample_id), grid, level, ref), ref
                if progress is not None:
                    progress(1)

    def values(self, pictures, condition, conditions):
        """Continuous ratings of the sample whose previews are `pictures`, or None for pictures never seen."""
        digest = pictures_digest(pictures)
        if digest not in self.measures:
            return None
        return ratings_of(self.measures[digest], condition, conditions, self.refs[digest])


def bank_ratings(root, family, progress=None):
    """{sample id: ratings_of() without a rater's noise or leniency} of every sample of a flow bank folder, held
    against `family`: what the simulated raters would rate each, on average."""
    bank = B.Bank(root)
    settings = B.Bank.read_settings(root)
    level, conditions = float(settings.get('preview_level', 10.0)), settings.get('conditions')
    found = {}
    for sample_id in bank.ids:
        grid = bank.grid(sample_id)
        ref = reference(family, grid, level)
        condition = bank.meta(sample_id).get('condition') if isinstance(conditions, int) else None
        found[sample_id] = ratings_of(measure(bank.slab(sample_id), grid, level, ref), condition, conditions, ref)
        if progress is not None:
            progress(1)
    return found


def open_bytes(path):
    """A preview's bytes; BankError naming it when it cannot be read."""
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as err:
        raise B.BankError(f'{path}: cannot be read ({err.strerror or err}); a rated bank needs its previews '
            '(tools/sample_bank.py writes them)') from None

#----------------------------------------------------------------------------
# The page, asked what a browser asks (study_player.Page: GET /api/state and the pictures, POST /api/rate).

def check_criteria(state):
    """ValueError unless every criterion the page asks for is one of paper5's (play checks each sample's condition)."""
    unknown = [c for c in state['criteria'] if c not in CRITERIA]
    if unknown:
        raise ValueError(f'the page asks for {", ".join(unknown)}; simulated raters rate paper5\'s criteria '
            f'({", ".join(CRITERIA)}): serve it with rate --criteria paper5')


def play(page, seen, rater, limit=None, progress=None):
    """Rate the samples the page shows until it has none (or `limit` of them): each sample's three previews fetched,
    known again by SeenSamples, rated by the rater; a later sample never seen is skipped, as a person who cannot tell
    would (ValueError if the first is: the wrong banks).
    Returns what was sent, [{sample, ratings or None}]; progress(1) after each."""
    state, sent = page.request('GET', '/api/state'), []
    check_criteria(state)
    while state.get('current') and (limit is None or len(sent) < limit):
        current = state['current']
        if None in (current.get('condition'), current.get('conditions')) and 'condition_consistency' in state['criteria']:
            raise ValueError('the page shows no condition for its sample: condition consistency needs banks of a '
                'conditional generator (meta.json "condition"); serve the other criteria alone')
        pictures = [page.request('GET', f'/bank/{current["sample"]}/{B.preview_file(v)}') for v in VIEWS]
        values = seen.values(pictures, current.get('condition'), current.get('conditions'))
        if values is None and not sent:
            raise ValueError('the page\'s first sample is in none of the banks given: pass the banks the page rates')
        ratings = None if values is None else rater.rate(values, state['criteria'])
        state = page.request('POST', '/api/rate', dict(sample=current['sample'], ratings=ratings))['state']
        sent.append(dict(sample=current['sample'], ratings=ratings))
        if progress is not None:
            progress(1)
    return sent

#----------------------------------------------------------------------------
