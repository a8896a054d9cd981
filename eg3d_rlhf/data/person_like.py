"""Person-like simulated annotators: a taste in world units, judged at random below a just-noticeable difference."""

import numpy as np

from eg3d_rlhf.data.annotators import TASTES

#----------------------------------------------------------------------------
# A person comparing two pictures cannot tell which nose is smaller when the two differ by less than what the pictures
# show. The oracle annotators (annotators.OracleAnnotator) standardise a taste over a set and see any difference, however
# small; these judge the raw difference in world units against a just-noticeable difference (JND) instead:
#   |d| <  jnd:  a coin flip, whatever the taste says;
#   |d| >= jnd:  the liked side with probability sigmoid((|d| - jnd) / spread): 1/2 at the JND, 0.88 at jnd + 2 spread;
# and, on top, a lapse share of answers given at random whatever is shown. Only tastes whose score is a length qualify.

PERSON = 'person:'
WORLD_TASTES = ('nose', 'symmetric', 'size')       # Tastes of annotators.TASTES scored in world units.
JND_PIXELS = 2.0                                    # The default JND, in pixels of the pictures the page serves.
PREVIEW_RES = 192                                   # The pictures' size, pixels: tools/sample_bank.py's default.


def parse_person(name):
    """'person:TASTE' -> TASTE (one of WORLD_TASTES); ValueError naming the choices for anything else."""
    kind, _, taste = name.partition(':')
    if kind + ':' != PERSON or taste not in WORLD_TASTES:
        raise ValueError(f'unknown person-like annotator {name!r}; use one of '
            f'{", ".join(PERSON + t for t in WORLD_TASTES)} (tastes scored in world units)')
    return taste


def pixel_size(grid, preview_res):
    """World units one pixel of a bank's previews spans: a picture's width is the slab's widest side
    (geometry/preview.py), over preview_res pixels; grid the slab's CubeGrid."""
    return float(max(grid.shape) - 1) * grid.voxel_size / preview_res


def jnd_of(grid, preview_res=PREVIEW_RES, pixels=JND_PIXELS):
    """The JND in world units on a slab grid: `pixels` pixels of previews `preview_res` pixels wide of the slab."""
    return pixels * pixel_size(grid, preview_res)


class PersonLikeAnnotator:
    """A taste in world units judged as a person would: at random below the JND, noisily above it, with lapses."""

    def __init__(self,
        taste,                      # A taste of WORLD_TASTES.
        jnd,                        # Just-noticeable difference of the taste's score, world units (> 0).
        spread      = None,         # Logistic scale of the judgement noise above the JND, world units [default: jnd / 2].
        lapse       = 0.02,         # Share of answers given at random whatever is shown.
        seed        = 0,            # Seed of the coin flips and the noise.
    ):
        assert taste in WORLD_TASTES, taste
        if not (np.isfinite(jnd) and jnd > 0):
            raise ValueError(f'the JND must be a positive number of world units, not {jnd}')
        spread = jnd / 2 if spread is None else spread
        if not (np.isfinite(spread) and spread > 0 and 0 <= lapse <= 1):
            raise ValueError(f'spread must be > 0 (got {spread}) and the lapse share in [0, 1] (got {lapse})')
        self.taste, self.name = taste, PERSON + taste
        self.score = TASTES[taste]
        self.jnd, self.spread, self.lapse = float(jnd), float(spread), float(lapse)
        self.rng = np.random.RandomState(seed)

    def probability(self, score_a, score_b):
        """P(a preferred) for taste scores (world units; higher is liked): 1/2 below the JND."""
        d = float(score_a) - float(score_b)
        x = np.sign(d) * (abs(d) - self.jnd) / self.spread
        seen = 0.5 if abs(d) < self.jnd else 0.5 * (1 + np.tanh(x / 2))     # sigmoid(x), with no overflow
        return self.lapse / 2 + (1 - self.lapse) * seen

    def visible(self, score_a, score_b):
        """Whether the difference reaches the JND."""
        return abs(float(score_a) - float(score_b)) >= self.jnd

    def judge(self, score_a, score_b):
        """'a' or 'b' (a person asked to choose always chooses)."""
        return 'a' if self.rng.uniform() < self.probability(score_a, score_b) else 'b'

    def settings(self):
        return dict(annotator=self.name, jnd=self.jnd, spread=self.spread, lapse=self.lapse)

#----------------------------------------------------------------------------
