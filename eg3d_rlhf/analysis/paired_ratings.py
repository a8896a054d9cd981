"""Paired rating differences, tuned minus original, per criterion over the ids both banks hold: t, Wilcoxon, Holm."""

import collections
import os

import numpy as np

from eg3d_rlhf.data.preferences import LabelError

#----------------------------------------------------------------------------
# A ratings study of two banks drawn for the same ids (tools/sample_bank.py's seeds and conditions, once per
# generator) rates each id twice, tuned and original, behind opaque tokens. Per criterion and id the difference is
# tuned's rating minus original's: per annotator over the ids that annotator rated in both banks, and pooled as the
# mean over the annotators who rated both (one number per id, so ids, not ratings, are the units). Each set of
# differences reports the mean in rating points with a 95% t interval, the Wilcoxon signed-rank p (zero differences
# dropped, scipy's default; 1.0 where every difference is zero), the p values Holm-adjusted over the criteria (per
# annotator, and pooled), and the share of ids where tuned was rated higher, lower or the same.

TUNED_WORD = 'tuned'        # Without --tuned: the one of two banks whose folder name holds this word is the tuned one.


def name_banks(labels, tuned=None, original=None):
    """(tuned label, original label) of a ratings key's bank labels, or None where they are not named: --tuned and
    --original as given (either one names the other of two banks), else the one of two banks whose folder's name holds
    'tuned'. A name that is no label is a LabelError listing the labels."""
    labels = list(labels)
    for given in (tuned, original):
        if given is not None and given not in labels:
            raise LabelError(f'{given!r} is none of the rated banks ({", ".join(labels)}); name one as the ratings '
                'key does (the folder as given to rate --bank)')
    if tuned is None and original is None:
        named = [b for b in labels if TUNED_WORD in os.path.basename(os.path.normpath(b)).lower()]
        if len(labels) != 2 or len(named) != 1:
            return None
        tuned = named[0]
    if len(labels) != 2 and (tuned is None or original is None):
        raise LabelError(f'{len(labels)} banks were rated; name both --tuned and --original')
    tuned = tuned if tuned is not None else next(b for b in labels if b != original)
    original = original if original is not None else next(b for b in labels if b != tuned)
    if tuned == original:
        raise LabelError(f'{tuned!r} is named both tuned and original')
    return tuned, original


def ratings_by_id(records, key, bank):
    """{annotator: {id: {criterion: rating}}} of one bank's standing ratings (skips left out)."""
    result = collections.defaultdict(dict)
    for r in records:
        label, sample_id = key.samples[r['sample']]
        if label == bank and not r.get('skip'):
            result[r['annotator']][sample_id] = r['ratings']
    return result


def differences(tuned, original, criterion):
    """{id: tuned - original} of one annotator's ratings ({id: {criterion: rating}} each) on the ids rated in both."""
    return {x: tuned[x][criterion] - original[x][criterion] for x in sorted(set(tuned) & set(original))}


def pooled_differences(tuned, original, criterion):
    """{id: mean over the annotators who rated the id in both banks of their difference}."""
    per_id = collections.defaultdict(list)
    for name in sorted(set(tuned) & set(original)):
        for x, d in differences(tuned[name], original[name], criterion).items():
            per_id[x].append(d)
    return {x: float(np.mean(v)) for x, v in sorted(per_id.items())}


def mean_interval(values):
    """n, mean, sd and the 95% t interval of the mean (nan for fewer than two values)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else float('nan')
    sd = float(x.std(ddof=1)) if n > 1 else float('nan')
    import scipy.stats  # pylint: disable=import-outside-toplevel  # 1 s to import; the label server's start needs none.
    half = float(scipy.stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float('nan')
    return dict(n=n, mean=mean, sd=sd, ci95=[mean - half, mean + half])


def paired_summary(values):
    """n, mean difference, sd, 95% t interval, Wilcoxon signed-rank p, and the shares higher / lower / equal."""
    import scipy.stats  # pylint: disable=import-outside-toplevel  # 1 s to import; the label server needs none.
    d = np.asarray(values, dtype=np.float64)
    p = float(scipy.stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    share = lambda k: float(np.mean(k)) if len(d) else float('nan')
    return dict(mean_interval(d), wilcoxon_p=p, tuned_higher=share(d > 0), tuned_lower=share(d < 0), equal=share(d == 0))


def holm(rows):
    """Add 'holm_p' to each of {criterion: paired_summary} (Holm over the criteria with differences)."""
    from statsmodels.stats.multitest import multipletests  # pylint: disable=import-outside-toplevel
    named = [c for c, r in rows.items() if r['n'] > 0]
    adjusted = multipletests([rows[c]['wilcoxon_p'] for c in named], method='holm')[1] if named else []
    for c, p in zip(named, adjusted):
        rows[c]['holm_p'] = float(p)
    for c in rows:
        rows[c].setdefault('holm_p', float('nan'))
    return rows


def paired_ratings(records, key, tuned, original):
    """Per criterion, tuned minus original: {'tuned', 'original', 'ids' (held by both banks), 'annotators': {name:
    {criterion: summary}}, 'pooled': {criterion: summary}}; LabelError where the two banks share no id."""
    common = set(key.bank(tuned).ids) & set(key.bank(original).ids)
    if not common:
        raise LabelError(f'{tuned} and {original} share no sample id: paired differences need two banks drawn for the '
            'same seeds (and conditions)')
    t, o = ratings_by_id(records, key, tuned), ratings_by_id(records, key, original)
    annotators = {name: holm({c: paired_summary(list(differences(t[name], o[name], c).values()))
        for c in key.criteria}) for name in sorted(set(t) & set(o))}
    pooled = holm({c: paired_summary(list(pooled_differences(t, o, c).values())) for c in key.criteria})
    return dict(tuned=tuned, original=original, ids=len(common), annotators=annotators, pooled=pooled)

#----------------------------------------------------------------------------
# Words and tables.

def _p(x):
    return 'n/a' if x is None or not np.isfinite(x) else f'{x:.3g}'


def summary_line(criterion, s):
    lo, hi = s['ci95']
    return (f'{criterion:<22} tuned - original {s["mean"]:+.3f} points (95% t {lo:+.3f} to {hi:+.3f}, n {s["n"]} ids), '
        f'Wilcoxon p {_p(s["wilcoxon_p"])}, Holm {_p(s["holm_p"])}; tuned higher {s["tuned_higher"]:.0%}, lower '
        f'{s["tuned_lower"]:.0%}, equal {s["equal"]:.0%}')


def describe(result):
    """Console lines of paired_ratings' result."""
    lines = [f'paired differences, tuned ({result["tuned"]}) minus original ({result["original"]}), over the '
        f'{result["ids"]} ids both hold (per id averaged over the annotators who rated both):']
    for who, rows in [*result['annotators'].items(), ('pooled', result['pooled'])]:
        lines += [f'{who}: ' + summary_line(c, s) for c, s in rows.items()]
    return lines


def table(result):
    """(title, header, rows) of the report's table."""
    header = ['annotator', 'criterion', 'ids', 'mean tuned - original', '95% t interval', 'Wilcoxon p', 'Holm p',
        'tuned higher', 'lower', 'equal']
    rows = [[who, c, s['n'], f'{s["mean"]:+.3f}', f'{s["ci95"][0]:+.3f} to {s["ci95"][1]:+.3f}', _p(s['wilcoxon_p']),
        _p(s['holm_p']), f'{s["tuned_higher"]:.0%}', f'{s["tuned_lower"]:.0%}', f'{s["equal"]:.0%}']
        for who, rows_ in [*result['annotators'].items(), ('pooled', result['pooled'])] for c, s in rows_.items()]
    return (f'Paired differences: tuned ({result["tuned"]}) minus original ({result["original"]})', header, rows)

#----------------------------------------------------------------------------
