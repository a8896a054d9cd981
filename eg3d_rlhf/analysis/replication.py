"""Method comparisons replicated over training seeds: per-seed effects, tests across seeds, Holm, forest plots."""

import json
import os
import re
import warnings

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import collateral
from eg3d_rlhf.analysis.evaluation import _stats, win_rate

#----------------------------------------------------------------------------
# The unit of replication is the training seed: it sets a run's annotator noise, batches and draws, so the held-out
# pairs of one run share all of it, and pairs of one noise seed (c00-seed000005, c01-seed000005: the conditions of a
# flow model start from the same noise) share that noise too. A comparison is a set of contrasts "first vs second",
# each given as records, one per (training seed, held-out id): its noise cluster and its paired outcome, either a
# preference (1: first preferred, 0: second, 0.5: a tie) or a paired numeric difference (first minus second). Per
# contrast the table gives
#   per seed      the effect (share of pairs preferring the first side, ties half; or the mean difference) and its
#                 95% interval with the noise cluster as the unit (cluster-robust, t with clusters - 1 df); for
#                 preferences also the counts and the pair-level sign test of that seed alone, a descriptive figure:
#                 it takes the pairs as independent, and they share the run and the noise clusters
#   across seeds  the mean of the per-seed effects with a t interval over seeds, and the Wilcoxon signed-rank test of
#                 the per-seed effects against no effect (0.5 or 0): THE RESULT, Holm-adjusted over the contrasts
#                 reported together
#   model         every pair at once, clustered two ways (model_test below): a second reading, also Holm-adjusted
# With 8 seeds the smallest two-sided Wilcoxon p is 2/256 = 0.0078 (every seed on one side), 0.039 after Holm over 5
# contrasts; a contrast is called significant at ALPHA after Holm.

ALPHA = 0.05
NULL = dict(preference=0.5, difference=0.0)
OUTCOMES = dict(win=1.0, loss=0.0, tie=0.5)             # Preference outcomes from the first side's view.
FIELDS = ('contrast', 'seed', 'id', 'cluster', 'value')

#----------------------------------------------------------------------------
# Dev and test seeds (docs/guides/analysis.md#dev-and-test-seeds). The defaults were chosen on DEV: Circular-DPO's on
# training seeds 0-7 judged on held-out seeds 1000-1007 under each condition, the EG3D main job's and the pair
# sweep's on training seeds 0 and 1 (0-7 kept apart for both families) with held-out seeds 1000-1099
# (tools/evaluate.py) and panel seeds 2000-2199. A number quoted as a claim is measured on TEST, which no setting was
# chosen on and no bundled reward was trained on (their banks: seeds 0-999 and 0-47).

DEV = dict(
    flow=dict(train=range(0, 8), eval=range(1000, 1008)),
    eg3d=dict(train=range(0, 8), eval=(*range(1000, 1100), *range(2000, 2200))),
)
TEST = dict(
    flow=dict(train=range(100, 108), eval=range(5000, 5032)),   # 32 noise clusters x 8 conditions: 256 ids.
    eg3d=dict(train=range(100, 108), eval=range(5000, 5200)),   # Held-out (tools/evaluate.py) or --panel-seeds.
)


def spans(seeds):
    """'0-3,7' of a seed list (sorted, each once): the form seed lists take on the command line."""
    seeds, parts = sorted(set(int(s) for s in seeds)), []
    for s in seeds:
        if parts and s == parts[-1][1] + 1:
            parts[-1][1] = s
        else:
            parts.append([s, s])
    return ','.join(f'{lo}' if lo == hi else f'{lo}-{hi}' for lo, hi in parts)


def dev_overlap(family, train_seeds, eval_seeds):
    """A warning (one line) when a comparison's training seeds or evaluation ids overlap the dev seeds of `family`
    ('flow' or 'eg3d'), else None."""
    dev, test = DEV[family], TEST[family]
    hits = [(what, sorted(set(seeds) & set(dev[key]))) for what, key, seeds in
        (('training seeds', 'train', train_seeds), ('evaluation ids', 'eval', eval_seeds))]
    hits = [f'{what} {spans(common)}' for what, common in hits if common]
    if not hits:
        return None
    return (f'Warning: {" and ".join(hits)} are dev seeds, those the defaults were chosen on (training '
        f'{spans(dev["train"])}, evaluation {spans(dev["eval"])}): fine for choosing settings, not for a claim; measure '
        f'claims on the test seeds (training {spans(test["train"])}, evaluation {spans(test["eval"])}; '
        'docs/guides/analysis.md#dev-and-test-seeds)')

#----------------------------------------------------------------------------
# Records.

def noise_cluster(sample_id):
    """The noise seed of a sample id: c03-seed000123 and seed000123 are both seed000123 (the conditions of one seed
    start from the same noise); any other id is its own cluster."""
    return re.sub(r'^c[0-9]+-(?=seed[0-9]+$)', '', str(sample_id))


def preference_outcomes(first, second, taste):
    """'win' | 'loss' | 'tie' per id of two collateral.measure() results of the same ids (first[i], second[i] one
    id), from the first side's view: the taste's noise-free choice, differences within collateral.noticeable of the
    second side's scores a tie, as collateral.compare counts them."""
    before, after = second['tastes'][taste], first['tastes'][taste]
    names = dict(tuned='win', original='loss', tie='tie')
    return [names[c] for c in collateral.choices(before, after, collateral.noticeable(before))]


def records(contrast, seed, ids, outcomes):
    """The records of one contrast and training seed: outcomes per id ('win' | 'loss' | 'tie' from the first side's
    view, or paired differences), each id's noise cluster from noise_cluster."""
    if len(ids) != len(outcomes):
        raise ValueError(f'{contrast}, seed {seed}: {len(ids)} ids but {len(outcomes)} outcomes')
    value = lambda o: OUTCOMES.get(o, o) if isinstance(o, str) else float(o)      # check_records refuses the rest.
    return [dict(contrast=contrast, seed=int(seed), id=str(i), cluster=noise_cluster(i), value=value(o))
        for i, o in zip(ids, outcomes)]


def check_records(rows, kind):
    """ValueError (one line) unless every record has the FIELDS, a finite value (0, 0.5 or 1 for preferences) and
    each (contrast, seed, id) comes once."""
    if kind not in NULL:
        raise ValueError(f'kind {kind!r}: expected {" or ".join(NULL)}')
    seen = set()
    for r in rows:
        missing = [k for k in FIELDS if k not in r]
        if missing:
            raise ValueError(f'a record without {", ".join(missing)}: {r!r}')
        key = (r['contrast'], r['seed'], r['id'])
        if key in seen:
            raise ValueError(f'{r["contrast"]}, seed {r["seed"]}: id {r["id"]} given twice')
        seen.add(key)
        v = r['value']
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ValueError(f'{r["contrast"]}, seed {r["seed"]}, id {r["id"]}: value {v!r} is not a finite number')
        if kind == 'preference' and v not in OUTCOMES.values():
            raise ValueError(f'{r["contrast"]}, seed {r["seed"]}, id {r["id"]}: a preference is 1, 0 or 0.5, not {v!r}')

#----------------------------------------------------------------------------
# Tests.

def _sm():
    """statsmodels' OLS, GLM and families, imported on first use (statsmodels.api would import 4 times as much)."""
    from statsmodels.genmod import families  # pylint: disable=import-outside-toplevel
    from statsmodels.genmod.generalized_linear_model import GLM  # pylint: disable=import-outside-toplevel
    from statsmodels.regression.linear_model import OLS  # pylint: disable=import-outside-toplevel
    return dnnlib.EasyDict(OLS=OLS, GLM=GLM, families=families)


def _special():
    import scipy.special  # pylint: disable=import-outside-toplevel
    return scipy.special


def codes(labels):
    """Integer codes of a list of hashable labels (statsmodels' cluster groups)."""
    return np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)[1]


def cluster_mean(values, clusters):
    """(mean, [lo, hi]) of values with a 95% interval that takes each cluster as one unit: OLS on a constant with a
    cluster-robust covariance, t with clusters - 1 df (nan with fewer than 2 clusters)."""
    values = np.asarray(values, dtype=np.float64)
    mean, groups = float(values.mean()), codes(clusters)
    k = groups.max() + 1
    if k < 2:
        return mean, [float('nan')] * 2
    fit = _sm().OLS(values, np.ones((len(values), 1))).fit(cov_type='cluster', cov_kwds=dict(groups=groups))
    half = float(_stats().t.ppf(0.975, k - 1) * fit.bse[0])
    return mean, [mean - half, mean + half]


def within(ci, kind):
    """A 95% interval of a preference share clipped to [0, 1] (a t interval can reach past either end); others as
    they are."""
    return [float(np.clip(v, 0, 1)) for v in ci] if kind == 'preference' else ci


def seed_effect(values, clusters, kind):
    """One training seed's entry of a contrast: ids, clusters, effect and its cluster-aware interval; for preferences
    the counts and the pair-level sign test of this seed alone (evaluation.win_rate: exact binomial, ties left out)."""
    effect, ci = cluster_mean(values, clusters)
    entry = dict(ids=len(values), clusters=len(set(clusters)), effect=effect, ci95=within(ci, kind))
    if kind == 'preference':
        named = {1.0: 'tuned', 0.0: 'original', 0.5: 'tie'}
        counts = win_rate([named[v] for v in values])
        entry.update(wins=counts['wins'], losses=counts['losses'], ties=counts['ties'], pair_sign_p=counts['binomial_p'])
    return entry


def wilcoxon(effects, null):
    """Two-sided Wilcoxon signed-rank p of per-seed effects against `null` (scipy; exact where it can be, seeds with
    no effect left out); 1 where no seed differs from it, nan with fewer than 2 seeds."""
    d = np.asarray(effects, dtype=np.float64) - null
    if len(d) < 2:
        return float('nan')
    if not np.any(d):
        return 1.0
    return float(_stats().wilcoxon(d).pvalue)


def across_seeds(effects, null):
    """Mean of the per-seed effects, its t 95% interval over seeds, how many seeds lie above and below `null`, and
    the Wilcoxon p."""
    effects = np.asarray(effects, dtype=np.float64)
    n, mean = len(effects), float(effects.mean())
    sd = float(effects.std(ddof=1)) if n > 1 else float('nan')
    half = float(_stats().t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float('nan')
    return dict(seeds=n, effect=mean, ci95=[mean - half, mean + half], above=int(np.sum(effects > null)),
        below=int(np.sum(effects < null)), wilcoxon_p=wilcoxon(effects, null))

#----------------------------------------------------------------------------
# The model of every pair at once. What the issue asks for is a logistic model with random intercepts for training
# seed and noise cluster; statsmodels' BinomialBayesMixedGLM fits one, but its variational fit (fit_vb) keeps the
# intercept's posterior sd near the within-seed binomial one: on the lucky-seed data of tests/test_replication.py
# (seven seeds near 50%, one at 250 of 256) it gave sd 0.047 and p 6e-20 where Wilcoxon over the seeds gives 0.48 (a
# mean-field fit cannot see that the seed effects and the intercept trade off), and its Laplace fit (fit_map) did not
# converge. So the documented equivalent: a marginal model (a GEE with an independence working correlation) of the
# outcomes on a constant - logistic for preferences, ties as 0.5 (a quasi-binomial response), linear for
# differences - with its covariance clustered two ways, by training seed and by noise cluster (statsmodels' two-way
# cluster-robust sandwich, Cameron, Gelbach and Miller), its p and interval from t with training seeds - 1 df. It
# answers the same question (is the first side better on average over seeds and noise draws, each a random unit)
# and is as wide as the spread of the seeds makes it.

def model_test(values, seeds, clusters, kind):
    """The model's estimate (a share for preferences), its 95% interval and p; nan with fewer than 2 seeds or where
    the two-way variance is not positive."""
    values = np.asarray(values, dtype=np.float64)
    g = len(set(seeds))
    nan = dict(effect=float('nan'), ci95=[float('nan')] * 2, p=float('nan'))
    if g < 2 or len(set(clusters)) < 2 or np.ptp(values) == 0:     # Every outcome alike: no spread to test.
        return nan
    sm, ones = _sm(), np.ones((len(values), 1))
    model = sm.GLM(values, ones, family=sm.families.Binomial()) if kind == 'preference' else sm.OLS(values, ones)
    groups = np.column_stack([codes(seeds), codes(clusters)])
    with np.errstate(all='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore')                 # Near-separation (a share near 0 or 1): the sandwich tells.
        fit = model.fit(cov_type='cluster', cov_kwds=dict(groups=groups))
    beta, se = float(fit.params[0]), float(fit.bse[0])
    if not (np.isfinite(beta) and np.isfinite(se) and se > 0):
        return nan
    t = _stats().t
    half = float(t.ppf(0.975, g - 1) * se)
    scale = (lambda x: float(_special().expit(x))) if kind == 'preference' else float   # The logit back to a share.
    return dict(effect=scale(beta), ci95=[scale(beta - half), scale(beta + half)], p=float(2 * t.sf(abs(beta / se), g - 1)))


def holm(pvalues):
    """Holm-adjusted p of a list (statsmodels' multipletests); nan entries stay nan and are not counted."""
    from statsmodels.stats.multitest import multipletests  # pylint: disable=import-outside-toplevel
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted, finite = np.full(len(p), np.nan), np.isfinite(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method='holm')[1]
    return [float(v) for v in adjusted]

#----------------------------------------------------------------------------

def contrast_entry(name, rows, kind):
    """One contrast of the table from its records, Holm's adjustment still to come."""
    null, per_seed = NULL[kind], []
    for seed in sorted({r['seed'] for r in rows}):
        mine = [r for r in rows if r['seed'] == seed]
        per_seed.append(dict(seed=seed, **seed_effect([r['value'] for r in mine], [r['cluster'] for r in mine], kind)))
    effects = [s['effect'] for s in per_seed]
    across = across_seeds(effects, null)
    across['ci95'] = within(across['ci95'], kind)
    return dict(contrast=name, kind=kind, null=null, seeds=per_seed, across=across,
        model=model_test([r['value'] for r in rows], [r['seed'] for r in rows], [r['cluster'] for r in rows], kind))


def replicate(rows, kind='preference', alpha=ALPHA):
    """The replication table of records (records()) of one kind: per contrast (in the order first seen) its per-seed
    entries, the across-seed test and the model, each p Holm-adjusted over the contrasts, and the result."""
    rows = list(rows)
    check_records(rows, kind)
    names = list(dict.fromkeys(r['contrast'] for r in rows))
    contrasts = [contrast_entry(name, [r for r in rows if r['contrast'] == name], kind) for name in names]
    for part, test in (('across', 'wilcoxon_p'), ('model', 'p')):        # Two families, each adjusted on its own.
        for c, p in zip(contrasts, holm([c[part][test] for c in contrasts])):
            c[part]['holm_p'] = p
    for c in contrasts:
        c['result'] = result(c, alpha)
    return dict(kind=kind, alpha=alpha, null=NULL[kind], result_test='Wilcoxon signed-rank over training seeds, '
        f'Holm-adjusted over the {len(contrasts)} contrasts', contrasts=contrasts)


def result(c, alpha):
    """The contrast's result in one line: the across-seed estimate, Wilcoxon and Holm p, and what they show."""
    a, pct = c['across'], c['kind'] == 'preference'
    num = (lambda v: f'{v:.1%}') if pct else (lambda v: f'{v:+.4g}')
    what = 'share preferring the first side' if pct else 'mean difference'
    if a['seeds'] < 2:
        return f'{c["contrast"]}: one training seed ({what} {num(a["effect"])}); nothing can be said across seeds'
    p = a['holm_p']
    shown = ('first side better' if a['effect'] > c['null'] else 'second side better') if p < alpha else \
        'no difference shown'
    floor = smallest_p(a['above'] + a['below'])
    return (f'{c["contrast"]}: {what} {num(a["effect"])} across {a["seeds"]} training seeds (95% '
        f'{num(a["ci95"][0])} to {num(a["ci95"][1])}; {a["above"]} above, {a["below"]} below {num(c["null"])}), '
        f'Wilcoxon p {a["wilcoxon_p"]:.2g}, Holm {p:.2g}: {shown} across seeds (alpha {alpha:g})'
        + (f'; {a["above"] + a["below"]} seeds away from {num(c["null"])} cannot give a Wilcoxon p under {floor:.2g}, '
           f'so no number of them agreeing could show a difference: run at least {seeds_needed(alpha)}'
           if p >= alpha and floor >= alpha else ''))


def smallest_p(seeds):
    """The smallest two-sided Wilcoxon signed-rank p that `seeds` non-zero per-seed effects can give (all on one side)."""
    return min(1.0, 2 * 0.5 ** seeds)


def seeds_needed(alpha=ALPHA):
    """The fewest seeds whose Wilcoxon test can reach alpha (6 at 0.05)."""
    return next(n for n in range(1, 64) if smallest_p(n) < alpha)

#----------------------------------------------------------------------------
# Writers.

def fmt_effect(value, kind):
    if value is None or not np.isfinite(value):
        return '-'
    return f'{value:.1%}' if kind == 'preference' else f'{value:+.4g}'


def fmt_ci(ci, kind):
    return f'{fmt_effect(ci[0], kind)} to {fmt_effect(ci[1], kind)}'


def fmt_p(p):
    return '-' if p is None or not np.isfinite(p) else f'{p:.2g}'


def markdown_table(header, body):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    return '\n'.join(lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in body]) + '\n'


def markdown(table):
    """The table as Markdown: the results, then every seed of every contrast."""
    kind = table['kind']
    body = []
    for c in table['contrasts']:
        a, m = c['across'], c['model']
        effects = [s['effect'] for s in c['seeds']]
        body.append([c['contrast'], a['seeds'], f'{fmt_effect(min(effects), kind)} to {fmt_effect(max(effects), kind)}',
            f'{fmt_effect(a["effect"], kind)} ({fmt_ci(a["ci95"], kind)})', f'{a["above"]} / {a["below"]}',
            fmt_p(a['wilcoxon_p']), fmt_p(a['holm_p']), f'{fmt_effect(m["effect"], kind)} ({fmt_ci(m["ci95"], kind)}), '
            f'p {fmt_p(m["p"])}, Holm {fmt_p(m["holm_p"])}', c['result'].split(': ')[-1]])
    effect = 'share preferring the first side (ties half)' if kind == 'preference' else 'mean paired difference'
    text = (f'Across training seeds: the {effect}; the result is the {table["result_test"]} (alpha {table["alpha"]:g}).\n\n'
        + markdown_table(['contrast', 'seeds', 'per-seed effect (min to max)', 'across seeds (t 95%)',
        f'seeds above / below {fmt_effect(table["null"], kind)}', 'Wilcoxon p', 'Holm p',
        'model: two-way clustered (95%), p', 'result'], body))
    per = [[c['contrast'], s['seed'], f'{s["ids"]} ({s["clusters"]})', f'{fmt_effect(s["effect"], kind)} '
        f'({fmt_ci(s["ci95"], kind)})', *([f'{s["wins"]} / {s["losses"]} / {s["ties"]}', fmt_p(s['pair_sign_p'])]
        if kind == 'preference' else [])] for c in table['contrasts'] for s in c['seeds']]
    header = ['contrast', 'training seed', 'ids (noise clusters)', 'effect (cluster 95%)']
    if kind == 'preference':
        header += ['wins / losses / ties', 'pair-level sign p (this seed alone; descriptive, not a result)']
    return text + '\nPer training seed:\n\n' + markdown_table(header, per)


def slug(name):
    return re.sub(r'[^A-Za-z0-9.=+-]+', '-', name).strip('-') or 'contrast'


def forest_plot(c, path):
    """PNG: each seed's effect with its cluster-aware interval, and the across-seed estimate with its t interval."""
    from eg3d_rlhf.analysis.report_plots import _pyplot, _save  # pylint: disable=import-outside-toplevel
    plt = _pyplot()
    seeds, a = c['seeds'], c['across']
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.32 * (len(seeds) + 2)))
    ys = np.arange(len(seeds), 0, -1) + 1
    for y, s in zip(ys, seeds):
        ax.plot(s['ci95'], [y, y], color='tab:blue', linewidth=1.5)
        ax.plot(s['effect'], y, 'o', color='tab:blue', markersize=4)
    ax.plot(a['ci95'], [0, 0], color='black', linewidth=2.5)
    ax.plot(a['effect'], 0, 'D', color='black', markersize=7)
    ax.axvline(c['null'], color='grey', linestyle='--', linewidth=1)
    ax.set_yticks([*ys, 0], [f'seed {s["seed"]}' for s in seeds] + [f'across {a["seeds"]} seeds'])
    ax.set_ylim(-0.8, len(seeds) + 1.8)
    ax.set_xlabel('share of pairs preferring the first side (ties half)' if c['kind'] == 'preference'
        else 'mean paired difference (first minus second)')
    ax.set_title(f'{c["contrast"]}\nWilcoxon p {fmt_p(a["wilcoxon_p"])}, Holm {fmt_p(a.get("holm_p"))}', fontsize=9)
    _save(fig, path)


def write(table, outdir, stem='replication'):
    """STEM.md, STEM.json and a forest plot per contrast (forest-NAME.png) in outdir, each written atomically; the
    plots' file names are kept in the table ('forest' of each contrast). Returns the paths."""
    paths = []
    for c in table['contrasts']:
        c['forest'] = f'forest-{slug(c["contrast"])}.png'
        forest_plot(c, os.path.join(outdir, c['forest']))
        paths.append(os.path.join(outdir, c['forest']))
    with dnnlib.util.atomic_write(os.path.join(outdir, f'{stem}.json'), 'w', encoding='utf-8') as f:
        json.dump(dnnlib.util.json_safe(table), f, indent=2, allow_nan=False)     # nan (no interval) as null.
    with dnnlib.util.atomic_write(os.path.join(outdir, f'{stem}.md'), 'w', encoding='utf-8') as f:
        f.write(markdown(table))
    return [os.path.join(outdir, f'{stem}.{ext}') for ext in ('md', 'json')] + paths

#----------------------------------------------------------------------------
