"""What fine-tuning cost: every simulated taste, the mesh statistics, diversity and true geometry, and the hacking alarm."""

import concurrent.futures

import numpy as np
import torch

from eg3d_rlhf.analysis import plausibility as plausible
from eg3d_rlhf.analysis.evaluation import paired_change, win_rate
from eg3d_rlhf.analysis.flow_quality import pairwise_rms
from eg3d_rlhf.data import annotators, person_like
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.rewards.mesh_stats import STATS, mesh_statistics
from eg3d_rlhf.synthetic import family as families

#----------------------------------------------------------------------------
# A reward that rises says only that the reward rose. Each report that compares samples before and after a method
# (the same ids drawn from both) also measures, per sample, every taste the project simulates (data/annotators.py),
# the statistics of the level-10 mesh people look at (rewards/mesh_stats.py) and the true geometry (nose prominence,
# left-right asymmetry, head size, mirror mismatch: the synthetic world's properties), then compares them pair by pair:
#   tastes      temperature 0 (each pair's noise-free choice; differences below NOTICEABLE are ties): win rate of the
#               tuned sample, Wilson 95%, binomial p, Cohen's h
#   mesh        mean before and after, the paired change with a 95% t interval
#   truth       the same in world units (a share for mirror_mismatch)
#   diversity   mean pairwise RMS distance of the slabs, before and after
#   dents       per id, how deep the new surface cuts into the old solid beyond its typical move (world units,
#               distances, not depths along the view: a nose sliding sideways moves its flanks' depth a lot): a
#               carved mouth or a blocky step, which the tastes may like (flat, closed)
#   plausibility how far the samples lie from the heads the generator was trained on (analysis/plausibility.py):
#               per id whether its head size, nose prominence or the residual of the nearest training head left the
#               family's range, in the measures the original reproduces
# A taste is uninformative, shown so and counted neither way, where the generator cannot move it (INVARIANT) or where
# it decides so few pairs that no split of them could be significant at ALPHA. Given a just-noticeable difference
# (person_like.py; compare() gets it in world units), a taste scored in world units is also marked invisible where
# fewer than INVISIBLE of its pairs differ by the JND: a person shown them would answer about at random, so the report
# calls it neither a win nor a loss, and the true properties in world units say in how many samples they moved by it.
# Evaluation reports pass the JND; the training panel does not, so its alarm still stops a loss too small to see yet.
# The alarm: the reward rose while some informative taste prefers the original significantly (binomial p < ALPHA) -
# the trained taste included, since a reward that rises while its own taste falls is hacked too - or while more than
# DENT_SHARE of the samples have a dent deeper than DENT, or while the share of samples out of the training family's
# range rose by more than plausibility.RISE.

MESH_STATS = ('roughness', 'bending', 'abs_bending', 'pieces', 'floater_share', 'handles', 'cap_share')
TRUTH = dict(
    nose_prominence = annotators.nose_prominence,   # How far the nose tip stands out of the face (world units).
    asymmetry       = annotators.asymmetry,         # Mean |z(x, y) - z(-x, y)| of the front surface (world units).
    head_size       = annotators.head_size,         # Cube root of the volume inside the slab (world units).
    mirror_mismatch = annotators.mirror_mismatch,   # 1 - IoU of the inside and its mirror image (a share, no unit).
)
UNITS = dict(mirror_mismatch='share')               # Every other true property is in world units.
MEASURED_BY = dict(nose='nose_prominence', symmetric='asymmetry', size='head_size')    # A world taste's true property.
ALPHA = 0.05                # Significance of a collateral loss that raises the alarm.
DENT = 0.03                 # A cut this deep into the old solid (world units; a head is ~0.35 across) is a dent.
DENT_SHARE = 0.05           # Dents in more of the samples than this raise the alarm.
BAR_TRAINED = 0.75          # A clean result (clears_bar): the trained taste prefers the tuned sample in this share
BAR_OTHERS = 0.45           # of pairs or more, every other taste in this share or more, dents in DENT_SHARE at most.
NOTICEABLE = 0.05           # Taste differences below this many standard deviations of the originals' scores are ties:
                            # at the simulated annotators' default noise (temperature 0.5) such a pair is a coin
                            # flip (P = 0.525), and numerical dust (a floater share moving by 1e-6) is no preference.
INVISIBLE = 0.1            # A world-unit taste whose pairs differ by a JND in less than this share is invisible.
INVARIANT = dict(           # Tastes a generator cannot move, by the property (a true key of its config) that makes it so:
    symmetric = 'mirror',   # a mirror-equivariant model draws heads symmetric in law, so which of a tuned and an
)                           # original sample is the more symmetric is their noises' business, a coin flip.


def measure(slabs, grid, level=10.0):
    """Per-sample numbers of raw sigma slabs [N, X, Y, Z] (torch or numpy) on a CubeGrid, as plain lists (a snapshot
    can keep them): {'tastes': {taste: [N]}, 'mesh': {stat: [N]}, 'truth': {name: [N]}, 'diversity': float}."""
    result = measure_samples(slabs, grid, level)
    result['diversity'] = pairwise_rms(slabs)[0]
    return result


def measure_samples(slabs, grid, level=10.0):
    """measure() without the set's diversity."""
    index = [STATS.index(s) for s in MESH_STATS]
    result = dict(tastes={t: [] for t in annotators.TASTES}, mesh={s: [] for s in MESH_STATS},
        truth={t: [] for t in TRUTH})
    with torch.no_grad():
        for volume in slabs:
            volume = np.asarray(volume, dtype=np.float32)
            for name, taste in annotators.TASTES.items():
                result['tastes'][name].append(float(taste(volume, grid, level)))
            stats = mesh_statistics(torch.from_numpy(volume).double(), level, precision=None)[index].tolist()
            for name, value in zip(MESH_STATS, stats):
                result['mesh'][name].append(float(value))
            for name, fn in TRUTH.items():
                result['truth'][name].append(float(fn(volume, grid, level)))
    return result


def measure_drawn(draw, ids, grid, chunk=8, level=10.0):
    """(measure() of the slabs draw(ids) [n, *grid] gives, drawn `chunk` ids at a time, and the slabs as float16
    numpy [N, *grid]): a few slabs in float32 at a time, so a panel of 64 costs little memory beyond its float16 copy."""
    parts, kept = [], []
    for start in range(0, len(ids), chunk):
        slabs = draw(ids[start : start + chunk])
        parts.append(measure_samples(slabs, grid, level))
        kept.append(np.asarray(slabs, dtype=np.float16))
    merged = {part: {name: sum((p[part][name] for p in parts), []) for name in parts[0][part]} for part in parts[0]}
    kept = np.concatenate(kept)
    merged['diversity'] = pairwise_rms(kept)[0]
    return merged, kept


def well_formed(measures, n):
    """Is `measures` what measure() returns for n samples (read back from a file: the parts, names and counts)?"""
    parts = dict(tastes=annotators.TASTES, mesh=MESH_STATS, truth=TRUTH)
    try:
        return set(measures) == {*parts, 'diversity'} and isinstance(measures['diversity'], (int, float)) and all(
            set(measures[part]) == set(names) and all(len(values) == n and all(isinstance(v, (int, float))
            for v in values) for values in measures[part].values()) for part, names in parts.items())
    except TypeError:
        return False


def paired(before, after):
    """Mean before and after, and the paired change with its 95% t interval, p (1 where nothing changed) and Cohen's
    d_z (evaluation.paired_change)."""
    delta, mean, sd, ci, p, d = paired_change(before, after)
    n = len(delta)
    return dict(before=float(np.mean(before)), after=float(np.mean(after)), sd_before=float(np.std(before, ddof=1))
        if n > 1 else 0.0, change=mean, change_ci95=ci, p=1.0 if n > 1 and sd == 0 else p, cohens_d=d)


def choices(before, after, tolerance=0.0):
    """'tuned' | 'original' | 'tie' per pair: the noise-free choice of a taste (higher is liked); differences of at
    most `tolerance` are ties."""
    return ['tuned' if a - b > tolerance else 'original' if b - a > tolerance else 'tie' for b, a in zip(before, after)]


def noticeable(values):
    """The smallest difference of a taste that counts: NOTICEABLE standard deviations of its scores over the
    originals (0 where they do not vary)."""
    return NOTICEABLE * float(np.std(values)) if len(values) > 1 else 0.0


def invariances(generator):
    """The properties of INVARIANT a generator has (its config's true keys: a flow model's `mirror`)."""
    config = getattr(generator, 'config', None) or {}
    return sorted(p for p in set(INVARIANT.values()) if config.get(p) is True)


def uninformative(name, result, invariant=(), alpha=ALPHA):
    """Why a taste's win_rate() result is no evidence either way for a generator with the properties `invariant`, or
    None: the generator cannot move it, or its decided pairs are too few for even the most lopsided split of them to
    have a two-sided binomial p under alpha (5 or fewer at 0.05: all ties included)."""
    if INVARIANT.get(name) in invariant:
        return f'the generator is {INVARIANT[name]}-equivariant'
    decided = result['wins'] + result['losses']
    if min(1.0, 2 * 0.5 ** decided) >= alpha:
        return f'{decided} decided pairs'
    return None


def seen_by(before, after, jnd):
    """How many pairs (before[i], after[i]) differ by the JND or more."""
    return int(np.count_nonzero(np.abs(np.subtract(after, before, dtype=np.float64)) >= jnd))


def invisible(before, after, jnd):
    """Why a world-unit taste's or property's change is invisible to a person (fewer than INVISIBLE of the pairs
    differ by the JND, world units), or None."""
    seen = seen_by(before, after, jnd)
    return f'{seen} of {len(before)} pairs differ by a JND ({jnd:.2g})' if seen < INVISIBLE * len(before) else None


def compare(before, after, trained=None, invariant=(), jnd=None):
    """Tuned-vs-original collateral of two measure() results of the same samples (before[i] and after[i] one id);
    trained: the taste the method optimised (marked in the table), or None; invariant: the generator's properties
    that make tastes uninformative (invariances()); jnd: a person's just-noticeable difference in world units, or
    None (no taste is then judged invisible)."""
    if len(before['tastes']['nose']) != len(after['tastes']['nose']):
        raise ValueError('before and after measure different numbers of samples')
    tastes = {}
    for name in annotators.TASTES:
        b, a = before['tastes'][name], after['tastes'][name]
        tastes[name] = dict(trained=name == trained, tie_below=noticeable(b), **win_rate(choices(b, a, noticeable(b))))
        tastes[name]['uninformative'] = uninformative(name, tastes[name], invariant)
        if jnd is not None and name in person_like.WORLD_TASTES:
            tastes[name].update(visible_pairs=seen_by(b, a, jnd), invisible=invisible(b, a, jnd))
    truth = {t: paired(before['truth'][t], after['truth'][t]) for t in TRUTH if t in before['truth'] and t in after['truth']}
    for t, entry in truth.items():
        if jnd is not None and unit(t) == 'world units':
            entry.update(jnd=jnd, visible=seen_by(before['truth'][t], after['truth'][t], jnd))
    return dict(samples=len(before['tastes']['nose']), temperature=0, trained_taste=trained, tastes=tastes, jnd=jnd,
        mesh={s: paired(before['mesh'][s], after['mesh'][s]) for s in MESH_STATS}, truth=truth,
        diversity=dict(before=before['diversity'], after=after['diversity'],
            ratio=after['diversity'] / before['diversity'] if before['diversity'] else float('nan')))


def dents(before, after, grid, level=10.0):
    """Per pair of raw sigma slabs (before[i], after[i] one id): how deep the new surface cuts into the old solid
    (world units): the old solid's signed distance at the new surface's voxels, its median less its least (so a head
    that grows or shrinks evenly has none, and a feature that slides sideways only its slide); and how many exceed
    DENT."""
    import scipy.ndimage  # pylint: disable=import-outside-toplevel  # 0.3 s to import; train.py's start needs none.
    def depth(b, a):
        old, new = np.asarray(b) >= level, np.asarray(a) >= level
        if not old.any() or old.all() or not new.any():
            return 0.0
        signed = scipy.ndimage.distance_transform_edt(~old) - scipy.ndimage.distance_transform_edt(old)
        surface = new & ~scipy.ndimage.binary_erosion(new, border_value=1)         # Not the slab's cut faces.
        values = signed[surface] * grid.voxel_size
        return float(np.median(values) - values.min())
    # The distance transforms release the GIL: torch's thread count of samples at once (the demo's 64: 3.4 -> 1.9 s).
    with concurrent.futures.ThreadPoolExecutor(max(1, min(torch.get_num_threads(), len(before)))) as pool:
        depths = list(pool.map(depth, before, after))
    deeper = int(np.sum(np.asarray(depths) > DENT))
    return dict(depths=depths, median=float(np.median(depths)) if depths else 0.0, max=max(depths, default=0.0),
        threshold=DENT, deeper=deeper, share=deeper / len(depths) if depths else 0.0)


def plausibility(before, after, grid, family, level=10.0, measures=(None, None)):
    """plausibility.compare() of raw sigma slabs before[i], after[i] (one id) against the generator's training family
    (synthetic.family.of_generator); measures: their measure() results, whose true head sizes and noses it reuses."""
    sides = [plausible.measure(slabs, grid, family, level, truth=(m or {}).get('truth'))
        for slabs, m in zip((before, after), measures)]
    return plausible.compare(*sides, family, grid, level)


def report(before, after, grid, generator, trained=None, measures=None):
    """A tuned generator's whole collateral from raw sigma slabs before[i], after[i] (one id) of the original
    generator's grid: compare() of every taste, with dents and plausibility; measures: their measure() results when
    the caller has them."""
    measures = measures or (measure(before, grid), measure(after, grid))
    found = compare(*measures, trained=trained, invariant=invariances(generator), jnd=person_like.jnd_of(grid))
    found['dents'] = dents(before, after, grid)
    found['plausibility'] = plausibility(before, after, grid, families.of_generator(generator), measures=measures)
    return found

#----------------------------------------------------------------------------

def losses(collateral, alpha=ALPHA):
    """[(taste, win rate entry)] of the tastes preferring the original significantly, worst first."""
    bad = [(name, r) for name, r in collateral['tastes'].items() if r['wins'] + r['losses'] and r['win_rate'] < 0.5
        and r['binomial_p'] < alpha and not r.get('uninformative') and not r.get('invisible')]
    return sorted(bad, key=lambda item: item[1]['binomial_p'])


def size_of(collateral, taste):
    """'; PROPERTY +0.00015 world units' (mean change of the true property a world-unit taste scores, and its ratio to
    the JND where one is known), so a loss reads in units a person understands; '' for the other tastes."""
    t = collateral.get('truth', {}).get(MEASURED_BY.get(taste))
    if t is None:
        return ''
    jnd = collateral.get('jnd')
    ratio = f', {abs(t["change"]) / jnd:.2g} of a JND' if jnd else ''
    return f'; {MEASURED_BY[taste].replace("_", " ")} {t["change"]:+.2g} world units{ratio}'


def alarm(collateral, reward_delta, alpha=ALPHA):
    """The one-sentence alarm when the reward rose (mean change reward_delta > 0) while an informative taste prefers the
    original significantly or (where measured) more than DENT_SHARE of the samples have a dent or the share out of
    the training family's range rose by more than plausibility.RISE, else None."""
    named = [f'{name} preferred in {r["win_rate"]:.0%} ({r["wins"]} of {r["wins"] + r["losses"]} decided pairs, '
        f'binomial p {r["binomial_p"]:.2g}{size_of(collateral, name)})' for name, r in losses(collateral, alpha)]
    dent = collateral.get('dents')
    if dent and dent['share'] > DENT_SHARE:
        named.append(f'dents deeper than {dent["threshold"]:g} world units in {dent["share"]:.0%} of the samples '
            f'({dent["deeper"]} of {len(dent["depths"])})')
    if implausible(collateral.get('plausibility')):
        named.append(range_words(collateral['plausibility']))
    if not (reward_delta > 0) or not named:
        return None
    return f'reward hacking suspected: {"; ".join(named)}, while the reward rose by {reward_delta:+.3g}'


def implausible(plausibility):
    """Did the share of samples out of the training family's range rise past its threshold (False where not measured)?"""
    return bool(plausibility) and plausible.rose(plausibility['out_before'], plausibility['out_after'],
        plausibility['samples'])


def range_words(p):
    return (f'{p["out_after"]} of {p["samples"]} samples out of the training family\'s range '
        f'({", ".join(p["counted"]).replace("_", " ")}) against {p["out_before"]} before')


def unit(name):
    return UNITS.get(name, 'world units')


def describe_truth(collateral):
    """One line per true property: before -> after in its unit, with the change's 95% interval."""
    return [f'{name.replace("_", " ")}: {t["before"]:.4f} -> {t["after"]:.4f} {unit(name)} (change {t["change"]:+.4f}, '
        f'95% CI {t["change_ci95"][0]:+.4f}..{t["change_ci95"][1]:+.4f}; originals spread sd {t["sd_before"]:.4f}'
        + (f'; moved by a JND ({t["jnd"]:.2g}) in {t["visible"]} of {collateral["samples"]} samples' if 'jnd' in t
            else '') + ')' for name, t in collateral['truth'].items()]


def tables(collateral):
    """The report's collateral tables as (title, header, rows)."""
    rows = []
    for name, r in collateral['tastes'].items():
        lo, hi = r['wilson95']
        flag = f'uninformative ({r["uninformative"]})' if r.get('uninformative') else \
            f'invisible ({r["invisible"]})' if r.get('invisible') else 'LOSS' if (name, r) in losses(collateral) else ''
        rows.append([f'oracle:{name}' + (' (trained)' if r['trained'] else ''), f'{r["wins"]} of {r["wins"] + r["losses"]}',
            f'{r["win_rate"]:.1%} ({lo:.1%}-{hi:.1%})' if r['wins'] + r['losses'] else '-', f'{r["binomial_p"]:.2g}',
            f'{r["cohens_h"]:+.2f}' if np.isfinite(r['cohens_h']) else '-', str(r['ties']), flag])
    taste_table = (f'Collateral: every taste at temperature 0, tuned vs original ({collateral["samples"]} samples)',
        ['taste', 'tuned preferred', 'win rate (Wilson 95%)', 'binomial p', "Cohen's h", 'ties', ''], rows)
    measured = [(f'mesh {k}', v) for k, v in collateral['mesh'].items()] + [(f'{k} ({unit(k)})', v)
        for k, v in collateral['truth'].items()]
    div = collateral['diversity']
    effect = lambda d: f'{d:+.2f}' if d is not None and np.isfinite(d) else '-'
    rows = [[name, f'{v["before"]:.4g}', f'{v["after"]:.4g}', f'{v["change"]:+.4g} ({v["change_ci95"][0]:+.3g}..'
        f'{v["change_ci95"][1]:+.3g})', f'{v["p"]:.2g}', effect(v.get('cohens_d'))] for name, v in measured]
    rows.append(['diversity (mean pairwise slab RMS)', f'{div["before"]:.4g}', f'{div["after"]:.4g}',
        f'ratio {div["ratio"]:.3f}', '-', '-'])
    if collateral.get('dents'):
        d = collateral['dents']
        rows.append(['dents (how deep the new surface cuts into the old solid, world units)', '-', f'median {d["median"]:.3g}, '
            f'max {d["max"]:.3g}', f'{d["deeper"]} of {len(d["depths"])} deeper than {d["threshold"]:g}', '-', '-'])
    if collateral.get('plausibility'):
        rows += plausibility_rows(collateral['plausibility'], effect)
    return [taste_table, ('Collateral: mesh statistics, true geometry and diversity (means; paired change, 95% CI)',
        ['measure', 'before', 'after', 'change (95% CI)', 'paired t p', "Cohen's d"], rows)]


def plausibility_rows(p, effect):
    """The measured table's rows of plausibility.compare(): the samples out of range, each measure's, the residual."""
    n, r = p['samples'], p['residual']
    words = lambda name: name.replace('_', ' ')
    counted = ', '.join(map(words, p['counted'])) or 'no measure'
    rows = [[f'out of the training family\'s range ({p["family"]}) in {counted}',
        f'{p["out_before"]} of {n}', f'{p["out_after"]} of {n}', f'{p["rise"]:+.0%} (alarm above {p["threshold"]:+.0%})'
        + (' ALARM' if implausible(p) else ''), '-', '-']]
    for name, m in p['measures'].items():
        low, high = m['range']
        rows.append([f'  {words(name)} outside {low:.4g}..{high:.4g}' + ('' if name in p['counted'] else
            ' (not reproduced by the original: not counted)'), f'{m["out_before"]} of {n}', f'{m["out_after"]} of {n}',
            '-', '-', '-'])
    rows.append([f'residual: 1 - IoU with the nearest training head (the family\'s own median {r["family"]:.3f})',
        f'{r["before"]:.4g}', f'{r["after"]:.4g}', f'{r["change"]:+.4g} ({r["change_ci95"][0]:+.3g}..'
        f'{r["change_ci95"][1]:+.3g})', f'{r["p"]:.2g}', effect(r.get('cohens_d'))])
    return rows


def row_entries(summary):
    """The collateral of compare()'s summary as entries of one table row (an ablation group, a sweep value): the alarm,
    each taste's counts, test and whether it is uninformative, the true nose's change, the dents and the samples out
    of the training family's range before and after (None where not measured)."""
    cost = summary['collateral']
    nose = cost['truth']['nose_prominence']
    dent = cost.get('dents') or {}
    fit = cost.get('plausibility') or {}
    return dict(alarm=summary['alarm'], nose_prominence_change=nose['change'],
        nose_prominence_change_ci95=nose['change_ci95'], dents_deeper=dent.get('deeper'),
        dents_samples=len(dent.get('depths', [])), out_of_range_before=fit.get('out_before'),
        out_of_range_after=fit.get('out_after'), out_of_range_samples=fit.get('samples'),
        collateral={name: dict({k: r[k] for k in ('wins', 'losses', 'ties', 'win_rate', 'wilson95', 'binomial_p',
            'cohens_h', 'share')}, uninformative=r.get('uninformative')) for name, r in cost['tastes'].items()})


def range_cell(row):
    """'out of range 1 -> 9/64' of a row_entries() row, and whether that rise raises the alarm (None where not measured)."""
    if row.get('out_of_range_after') is None:
        return None, False
    before, after, n = row['out_of_range_before'], row['out_of_range_after'], row['out_of_range_samples']
    return f'out of range {before} -> {after}/{n}', plausible.rose(before, after, n)


def row_cells(row):
    """Two table cells of row_entries(): every taste's tuned-preferred count (LOSS where it prefers the original
    significantly, or uninformative), the dents and the samples out of range; and the true nose's change with its
    interval."""
    tastes = ', '.join(f'{name} {c["wins"]}/{c["wins"] + c["losses"]}' + (' uninformative' if c.get('uninformative')
        else ' LOSS' if c['win_rate'] < 0.5 and c['binomial_p'] < ALPHA else '') for name, c in row['collateral'].items())
    if row.get('dents_deeper') is not None:
        tastes += f'; dents {row["dents_deeper"]}/{row["dents_samples"]}'
    cell, rose = range_cell(row)
    tastes += f'; {cell}' + (' ALARM' if rose else '') if cell else ''
    low, high = row['nose_prominence_change_ci95']
    return [tastes, f'{row["nose_prominence_change"]:+.4f} ({low:+.4f}..{high:+.4f})']


def clears_bar(row, trained, trained_min=BAR_TRAINED, others_min=BAR_OTHERS):
    """(whether a row of row_entries() is a clean result, [what falls short]): the trained taste prefers the tuned
    sample in at least trained_min of the pairs, every other informative taste in at least others_min (temperature 0,
    ties half: the share; an uninformative taste counts neither way, but an uninformative trained taste falls short),
    at most DENT_SHARE of the samples have a dent and the share out of the training family's range rose by at most
    plausibility.RISE (each where measured)."""
    short = []
    for name, c in row['collateral'].items():
        low = trained_min if name == trained else others_min
        if c.get('uninformative'):
            short += [f'{name} uninformative ({c["uninformative"]})'] if name == trained else []
        elif not c['share'] >= low:                        # nan (no pair) falls short too.
            short.append(f'{name} {c["share"]:.0%} < {low:.0%}')
    if trained not in row['collateral']:
        short.append(f'{trained} not measured')
    if row.get('dents_deeper') is not None and row['dents_deeper'] > DENT_SHARE * row['dents_samples']:
        short.append(f'dents {row["dents_deeper"]}/{row["dents_samples"]} > {DENT_SHARE:.0%}')
    cell, rose = range_cell(row)
    short += [cell] if rose else []
    return not short, short


def summary_line(collateral):
    """The tastes' win rates in one line, for logs."""
    line = 'collateral (tuned preferred, temperature 0): ' + ', '.join(f'{name} {r["wins"]}/{r["wins"] + r["losses"]}'
        + (' uninformative' if r.get('uninformative') else ' invisible' if r.get('invisible') else '')
        for name, r in collateral['tastes'].items())
    dent, fit = collateral.get('dents'), collateral.get('plausibility')
    line += f'; dents deeper than {dent["threshold"]:g} in {dent["deeper"]} of {len(dent["depths"])}' if dent else ''
    return line + (f'; out of the training range {fit["out_before"]} -> {fit["out_after"]} of {fit["samples"]}, '
        f'residual {fit["residual"]["before"]:.3f} -> {fit["residual"]["after"]:.3f}' if fit else '')

#----------------------------------------------------------------------------
# Pictures: the samples whose collateral changed most, and where their surface moved.

def most_changed(before, after, count):
    """Indices of the `count` samples whose worst taste fell furthest, in standard deviations of that taste over the
    originals, and for each (taste, change in sd)."""
    worst = []
    for i in range(len(before['tastes']['nose'])):
        drops = []
        for name in annotators.TASTES:
            values = np.asarray(before['tastes'][name], dtype=np.float64)
            scale = values.std() if values.std() > 0 else 1.0
            drops.append(((after['tastes'][name][i] - before['tastes'][name][i]) / scale, name))
        worst.append(min(drops))
    order = sorted(range(len(worst)), key=lambda i: worst[i][0])[:count]
    return [(i, worst[i][1], worst[i][0]) for i in order]


def depth_change(before, after, grid, level=10.0, resolution=128, scale=None):
    """(RGB picture [resolution, resolution, 3], scale): how far the front surface moved toward the viewer (world
    units), framed as preview's front view of `after` (its shading kept faint beneath): red forward, blue back, full
    colour at `scale` (default: the 98th percentile of the moves, so one jump at the rim does not wash out the rest)."""
    import matplotlib
    before, after = np.asarray(before, dtype=np.float32), np.asarray(after, dtype=np.float32)
    z0, z1 = annotators.front_surface(before, grid, level), annotators.front_surface(after, grid, level)
    d = np.where(np.isfinite(z0) & np.isfinite(z1), z1 - z0, 0.0)          # [X, Y]
    moved_any = np.abs(d[d != 0])
    scale = scale or max(float(np.percentile(moved_any, 98)) if len(moved_any) else 0.0, 1e-6)   # A rim's jump aside.
    lo, hi = grid.index_to_world(np.zeros(3)), grid.index_to_world(np.asarray(grid.shape) - 1)
    centre, frame = (lo + hi) / 2, float(np.max(hi - lo) / 2)              # As preview.render_surface frames it.
    u = np.linspace(-frame, frame, resolution)
    ix = np.rint((centre[0] + u - lo[0]) / grid.voxel_size).astype(int)     # Columns: world x (the view's right).
    iy = np.rint((centre[1] - u - lo[1]) / grid.voxel_size).astype(int)     # Rows: world y, downward.
    valid = (iy[:, None] >= 0) & (iy[:, None] < d.shape[1]) & (ix[None, :] >= 0) & (ix[None, :] < d.shape[0])
    moved = np.where(valid, d[ix.clip(0, d.shape[0] - 1)[None, :], iy.clip(0, d.shape[1] - 1)[:, None]], 0.0)
    colour = matplotlib.colormaps['RdBu_r']((moved / scale).clip(-1, 1) * 0.5 + 0.5)[..., :3]
    shade = preview.render_surface(after, grid, level, resolution=resolution)[..., None]
    return np.rint((0.25 * shade + 0.75 * colour) * 255).clip(0, 255).astype(np.uint8), scale


def strip(before, after, grid, labels, names=('original', 'tuned'), level=10.0, resolution=128):
    """RGB picture: per sample (raw sigma slabs before[i], after[i] on `grid`, row label labels[i]) the front and
    profile views of both, then the depth change (depth_change, one colour scale for all rows)."""
    changes = [depth_change(b, a, grid, level, resolution) for b, a in zip(before, after)]
    scale = max(s for _, s in changes)
    rows = []
    for b, a in zip(before, after):
        views = [preview.render_views(np.asarray(v, dtype=np.float32), grid, level, preview.BEFORE_AFTER_VIEWS,
            resolution) for v in (b, a)]
        rows.append([v[view] for v in views for view in preview.BEFORE_AFTER_VIEWS]
            + [depth_change(b, a, grid, level, resolution, scale)[0]])
    columns = [f'{name} {view}' for name in names for view in preview.BEFORE_AFTER_VIEWS]
    picture = preview.labelled(rows, labels, columns + ['surface moved'])
    return np.concatenate([picture, colour_bar(picture.shape[1], rows[0][-1].shape[1], scale)], axis=0)


BAR_HEIGHT = 34                                         # Pixels of the colour bar under a strip.


def colour_bar(width, bar_width, scale, height=BAR_HEIGHT):
    """uint8 RGB band [height, width, 3] under a strip: depth_change's colours from -scale to +scale (world units) at
    its right end, bar_width wide, with its ends and centre labelled."""
    import matplotlib
    import PIL.Image
    import PIL.ImageDraw
    band = PIL.Image.new('RGB', (width, height), (255, 255, 255))
    ramp = matplotlib.colormaps['RdBu_r'](np.linspace(0, 1, bar_width))[:, :3]
    band.paste(PIL.Image.fromarray(np.rint(np.tile(ramp[None], (10, 1, 1)) * 255).astype(np.uint8)), (width - bar_width, 2))
    draw = PIL.ImageDraw.Draw(band)
    draw.text((width - bar_width - 250, 2), 'surface moved, world units (red: toward', fill=(0, 0, 0))
    draw.text((width - bar_width - 250, 16), 'the viewer, blue: away):', fill=(0, 0, 0))
    for x, text in ((0, f'-{scale:.4f}'), (bar_width // 2 - 4, '0'), (bar_width - 44, f'+{scale:.4f}')):
        draw.text((width - bar_width + x, 16), text, fill=(0, 0, 0))
    return np.asarray(band)

#----------------------------------------------------------------------------
