"""Plausibility: how far generated heads lie from the family of heads their generator was trained on."""

import numpy as np

from eg3d_rlhf.analysis.evaluation import paired_change
from eg3d_rlhf.geometry import head_measures
from eg3d_rlhf.synthetic import family as families

#----------------------------------------------------------------------------
# A taste can be climbed past anything a head of the family looks like (a larger head, a flatter face), and every
# taste then reads it as a win. Each sample is held against its generator's training family (synthetic/family.py:
# the first 64 training heads, drawn on the same slab grid), per id before and after a method, in three measures:
#   head size, nose prominence   world units (geometry/head_measures.py)
#   residual                     how unlike every training head the sample is: 1 - IoU of its inside voxels with those
#                                of the training head it overlaps most (the nearest head of the family: the world's
#                                head that fits it best); for the family's own heads, against the others
# Each measure's range is the family's least to largest value, widened by family.MARGIN of that span either way; a
# sample beyond it in a counted measure is out of range. A measure in which more than REPRODUCED of the original's
# samples already lie out of range is one the generator does not reproduce (the bundled flow model's noses stand out
# 0.04-0.05 world units, the training heads' 0.09-0.14: its 32^3 surface rounds them off): shown, not counted.
# The alarm (collateral.alarm): the share of samples out of range rises by more than RISE.

MEASURES = ('head_size', 'nose_prominence', 'residual')
RISE = 0.1              # Out-of-range samples rising by more than this share of the samples (7 of the reports' 64)
                        # raise the alarm: a generator's own noise moves a sample or two across a range's edge.
REPRODUCED = 0.5        # A measure counts when at most this share of the original's samples lie out of its range.


def rose(out_before, out_after, samples):
    """Does a rise of the samples out of range from out_before to out_after of `samples` raise the alarm?"""
    return samples > 0 and (out_after - out_before) / samples > RISE


def residuals(inside, family_inside):
    """1 - IoU of each sample's inside voxels (packed bits [N, B]) with the family head's (packed bits [H, B]) it
    overlaps most."""
    family_inside = np.asarray(family_inside, dtype=np.uint8)
    result = []
    for bits in np.asarray(inside, dtype=np.uint8):
        common = np.bitwise_count(bits & family_inside).sum(axis=1)
        either = np.bitwise_count(bits | family_inside).sum(axis=1)
        result.append(float(1 - np.max(np.where(either > 0, common / np.maximum(either, 1), 1.0))))
    return result


def family_ranges(family, grid, level=10.0):
    """{measure: [low, high]} of a family on a CubeGrid, and the median residual of its heads against the others."""
    inside = families.measures(family, grid, level)[1]
    own = [residuals(inside[i:i + 1], np.delete(inside, i, axis=0))[0] for i in range(len(inside))]
    ranges = families.feature_range(family, grid, level) + [families.widened(own)]
    return dict(zip(MEASURES, ranges)), float(np.median(own))


def measure(slabs, grid, family, level=10.0, truth=None):
    """Per sample of raw sigma slabs [N, X, Y, Z] on a CubeGrid, against a synthetic.family.Family: {measure: [N]} and
    'outside': {measure: [N] bool}, as plain lists. truth: collateral.measure()'s 'truth' of the same slabs, whose
    head sizes and nose prominences are used instead of measuring them again."""
    functions = dict(head_size=head_measures.head_size, nose_prominence=head_measures.nose_prominence)
    result = {name: [float(v) for v in truth[name]] if truth is not None and name in truth else
        [float(fn(np.asarray(v, dtype=np.float32), grid, level)) for v in slabs] for name, fn in functions.items()}
    inside = [np.packbits(np.asarray(v).reshape(-1) >= level) for v in slabs]
    result['residual'] = residuals(inside, families.measures(family, grid, level)[1])
    ranges = family_ranges(family, grid, level)[0]
    result['outside'] = {name: [not low <= v <= high for v in result[name]] for name, (low, high) in ranges.items()}
    return result


def compare(before, after, family, grid, level=10.0):
    """Plausibility before and after of two measure() results of the same samples (before[i] and after[i] one id): the
    family, each measure's range and out-of-range counts and whether it counts, the samples out of range in any
    counted measure before and after and their rise, and the residual's paired change."""
    n = len(before['residual'])
    ranges, own = family_ranges(family, grid, level)
    counted = [name for name in MEASURES if np.sum(before['outside'][name]) <= REPRODUCED * n]
    out = {side: np.any([m['outside'][name] for name in counted], axis=0) if counted else np.zeros(n, dtype=bool)
        for side, m in (('before', before), ('after', after))}
    _delta, mean, _sd, ci, p, d = paired_change(before['residual'], after['residual'])
    return dict(family=family.describe(), samples=n, counted=counted, measures={name: dict(range=ranges[name],
        out_before=int(np.sum(before['outside'][name])), out_after=int(np.sum(after['outside'][name])))
        for name in MEASURES}, out_before=int(out['before'].sum()), out_after=int(out['after'].sum()),
        rise=float(out['after'].sum() - out['before'].sum()) / n if n else 0.0, threshold=RISE,
        residual=dict(before=float(np.mean(before['residual'])), after=float(np.mean(after['residual'])), change=mean,
            change_ci95=ci, p=p if np.isfinite(p) else 1.0, cohens_d=d, family=own))

#----------------------------------------------------------------------------
