"""Reward learning curves: noise-free held-out accuracy against the number of simulated judgements, random or active."""

import dataclasses
import itertools
import json
import os
import time

import numpy as np
import torch
from tqdm import tqdm

import dnnlib
from eg3d_rlhf.analysis import rating_trials, report_plots
from eg3d_rlhf.data import annotators, labeling
from eg3d_rlhf.data.preferences import to_pairs
from eg3d_rlhf.data.scores import read_scores, write_scores
from eg3d_rlhf.rewards import fitting

#----------------------------------------------------------------------------
# One trial: a simulated annotator (a taste with Bradley-Terry noise) judges pairs of the bank's pool samples, chosen
# at random or by the labeling page's --active policy run on the model fitted so far; at each size the reward is fitted
# on every judgement made and scored against the taste's noise-free preference on all pairs of the held-out test
# samples. Sizes are nested within a trial, so a curve is one labeling session watched as it grows.

POLICIES = ('random', 'active')
MIRROR_SETTINGS = {None: 'auto', True: 'mirrored', False: 'plain'}  # FitOptions.mirror -> its name in a comparison.


@dataclasses.dataclass
class CurveOptions:
    sizes:          tuple   = (250, 500, 1000, 2000)    # Judgements at which the reward is fitted and measured.
    seeds:          tuple   = (0, 1, 2)                 # Trials per taste and policy (annotator noise, pairs, weights).
    temperature:    float   = 0.5                       # Annotator noise in taste standard deviations.
    agreement:      float   = None                      # Instead of temperature: each taste's noise set so that this
                                                        # share of random pool pairs is judged as noise-free (e.g. 0.83).
    test_share:     float   = 0.2                       # Share of the bank's samples held out (never judged).
    val_share:      float   = 0.1                       # Share of each fit's judgements kept for early stopping.
    warmup:         int     = 100                       # Active: random judgements before the first model exists.
    round:          int     = 100                       # Active: judgements between refits (a labeling sitting).
    split_seed:     int     = 0                         # Seed of the test/pool split, shared by every trial.
    bad_quantile:   float   = 0.477                     # Unpaired: bad at most this quantile of the rated samples' z,
    good_quantile:  float   = 0.577                     # good at least this one; the band between is left out (the
                                                        # paper's <= 3.5 / >= 4.0 of 5 points, docs: 10% left out).

    def __post_init__(self):
        sizes = [int(s) for s in self.sizes]
        if not sizes or sizes != sorted(set(sizes)) or sizes[0] < 10:
            raise ValueError(f'sizes must rise and start at 10 or more, got {list(self.sizes)}')
        if not 0 < self.test_share < 1 or not 0 < self.val_share < 0.5:
            raise ValueError('test_share must lie in (0, 1) and val_share in (0, 0.5)')
        if self.agreement is not None and not 0.5 < self.agreement < 1:
            raise ValueError(f'agreement must lie in (0.5, 1), got {self.agreement}')
        if self.temperature < 0 or self.warmup < 10 or self.round < 1:
            raise ValueError('temperature must be >= 0, warmup >= 10 and round >= 1')
        if not 0 <= self.bad_quantile <= self.good_quantile <= 1:
            raise ValueError(f'bands need 0 <= bad quantile <= good quantile <= 1; got {self.bad_quantile}, '
                f'{self.good_quantile}')

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def split_pool(ids, test_share, seed):
    """(pool ids, test ids): a seeded shuffle of the sorted ids, the last test_share of them held out."""
    ids = sorted(ids)
    order = np.random.RandomState(seed).permutation(len(ids))
    cut = len(ids) - max(int(round(test_share * len(ids))), 2)
    return sorted(ids[i] for i in order[:cut]), sorted(ids[i] for i in order[cut:])


def expected_agreement(z_gaps, temperature):
    """Mean probability that a Bradley-Terry annotator picks the noise-free side of pairs with standardised taste gaps
    |z_a - z_b| (numpy [P]) at `temperature`."""
    return float(np.mean(1 / (1 + np.exp(-z_gaps / max(temperature, 1e-12)))))


def temperature_for_agreement(oracle, pool, target, pairs=20000, seed=0):
    """The temperature at which the oracle agrees with its noise-free choice on `target` of random pool pairs
    (bisection on expected_agreement, which falls as the temperature rises); tastes with heavy tails need less noise
    than others for the same agreement, so tastes are compared at equal agreement, not equal temperature."""
    rng = np.random.RandomState(seed)
    pool = list(pool)
    i, j = rng.randint(len(pool), size=(2, pairs))
    gaps = np.abs(np.array([oracle.z[pool[a]] - oracle.z[pool[b]] for a, b in zip(i, j) if a != b]))
    lo, hi = 1e-4, 100.0
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if expected_agreement(gaps, mid) > target else (lo, mid)
    return float(np.sqrt(lo * hi))


def accuracy(scores, pairs):
    """fitting.held_out of {id: score} on (winner, loser) pairs."""
    return fitting.held_out(*fitting.pairwise_accuracy(scores, pairs))

#----------------------------------------------------------------------------

class Trial:
    """One labeling session: an annotator, a pair policy and the judgements so far (a list of Judgement)."""

    def __init__(self, oracle, pool, policy, options, seed):
        assert policy in POLICIES
        self.oracle, self.pool, self.policy, self.opts = oracle, list(pool), policy, options
        self.rng, self.seed = np.random.RandomState(seed), int(seed)
        self.judgements = []
        self.random = labeling.random_pairs(self.pool, self.rng)

    def pairs_to_judge(self, count, member_scores=None):
        """The next `count` pairs: random ones, or the page's active order under the current model's member scores."""
        if self.policy == 'random' or member_scores is None:
            judged = {labeling.pair_key(j.a, j.b) for j in self.judgements}
            fresh = (p for p in self.random if labeling.pair_key(*p) not in judged)
            return list(itertools.islice(fresh, count))
        done = [(j.a, j.b) for j in self.judgements]
        return list(itertools.islice(labeling.active_order(member_scores, self.rng, exclude=done), count))

    def judge(self, pairs):
        self.judgements += self.oracle.judgements(pairs)

    def labels(self):
        """(train dict(pairs, ties), val pairs): the judgements split at random, val_share of them for validation. The
        split is seeded by the trial's seed and the count alone, so a size's fit does not depend on the fits before it
        (random pairs and their judgements do not either: a point of a curve is the same measured alone)."""
        order = np.random.RandomState([self.seed, len(self.judgements)]).permutation(len(self.judgements))
        n_val = max(int(round(self.opts.val_share * len(order))), 1)
        val, _ = to_pairs([self.judgements[i] for i in order[:n_val]])
        pairs, ties = to_pairs([self.judgements[i] for i in order[n_val:]])
        return dict(pairs=pairs, ties=ties), val

    def agreement(self):
        """Share of the decided judgements that match the noise-free choice."""
        decided = [j for j in self.judgements if j.choice in ('a', 'b')]
        return float(np.mean([j.choice == j.extra['noise_free'] for j in decided])) if decided else float('nan')


def fit_sizes(policy, options):
    """The judgement counts at which a trial fits its reward: the sizes; for active, also after the warm-up and every
    round (the model that orders the next pairs)."""
    if policy == 'active':
        return sorted(set(range(options.warmup, options.sizes[-1], options.round)) | set(options.sizes))
    return sorted(options.sizes)


def run_trial(oracle, truth, pool, test, policy, seed, options, fit, progress=None):
    """[{size, seconds, agreement, accuracy, correct, total, wilson95, ...}] of one trial; fit(train, val_pairs, seed) ->
    ({id: [K] member scores} of every pool and test sample (the reward, mean over members, scores the test pairs),
    a dict of what the fit chose, added to the size's row)."""
    trial, rows, scores = Trial(oracle, pool, policy, options, seed), [], None
    test_pairs = fitting.all_pairs_by_truth(truth, test)          # The noise-free preference on the test samples.
    marks = set(options.sizes)
    start = time.time()
    for size in fit_sizes(policy, options):
        trial.judge(trial.pairs_to_judge(size - len(trial.judgements), scores))
        train, val = trial.labels()
        scores, chosen = fit(train, val, seed)
        if size in marks:
            mean = {k: float(np.mean(v)) for k, v in scores.items() if k in set(test)}
            rows.append(dict(size=size, seconds=time.time() - start, agreement=trial.agreement(),
                **accuracy(mean, test_pairs), **chosen))
        if progress is not None: progress(size)
    return rows

#----------------------------------------------------------------------------
# Curves: trials summarised per (taste, curve, size) as the mean accuracy with a 95% t-interval over the trials.

def curve_of(row):
    """The curve a trial row belongs to: its policy, and its mirror setting where a report compares them."""
    return row.get('curve', row['policy'])


def summarise(rows):
    """{taste: {curve: [{size, mean, ci95: [lo, hi], trials: [accuracy], agreement, seconds, mirrored, labelled}]}}
    from trial rows (each with taste, policy, seed, size, accuracy, mirror: whether the fit mirrored, ...); a curve is a
    policy (curve_of); mirrored is the share of its trials' fits that mirrored, labelled the mean labels they had
    (the size, unless a row says: an unpaired session's samples outside the middle band)."""
    import scipy.stats
    out = {}
    key = lambda r: (r['taste'], curve_of(r), r['size'])
    for (taste, curve, size), group in itertools.groupby(sorted(rows, key=key), key=key):
        group = list(group)
        acc = np.array([r['accuracy'] for r in group])
        half = float(scipy.stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else float('nan')
        out.setdefault(taste, {}).setdefault(curve, []).append(dict(size=size, mean=float(acc.mean()),
            ci95=[max(float(acc.mean() - half), 0.0), min(float(acc.mean() + half), 1.0)], trials=acc.tolist(),
            agreement=float(np.mean([r['agreement'] for r in group])), seconds=float(np.mean([r['seconds'] for r in group])),
            temperature=float(np.mean([r.get('temperature', np.nan) for r in group])),
            labelled=float(np.mean([r.get('labelled', r['size']) for r in group])),
            mirrored=float(np.mean([bool(r.get('mirror', True)) for r in group]))))
    return out


def auto_vs_fixed(summary):
    """{taste: [{size, auto, mirrored, plain, best, shortfall, auto_mirrored}]} of a report comparing mirror settings
    (curves POLICY/SETTING, MIRROR_SETTINGS): each setting's mean accuracy, the better fixed setting, how far auto's
    mean falls below it (negative: above), and the share of auto's fits that mirrored."""
    out = {}
    for taste, by in summary.items():
        for policy in POLICIES:
            names = {s: f'{policy}/{s}' for s in MIRROR_SETTINGS.values()}
            if not all(n in by for n in names.values()):
                continue
            at = {s: {p['size']: p for p in by[n]} for s, n in names.items()}
            for size, auto in at['auto'].items():
                fixed = {s: at[s][size]['mean'] for s in ('mirrored', 'plain')}
                best = max(fixed, key=lambda s: (fixed[s], s == 'mirrored'))
                out.setdefault(taste, []).append(dict(policy=policy, size=size, auto=auto['mean'], **fixed, best=best,
                    shortfall=fixed[best] - auto['mean'], auto_mirrored=auto['mirrored']))
    return out


def objectives_vs_bt(summary):
    """{taste: [{size, bt, OBJECTIVE: mean accuracy, ...}]} of a comparison of objectives: each curve's mean accuracy
    at each size of bt's (random pairs) curve."""
    out = {}
    for taste, by in summary.items():
        if 'bt' not in by:
            continue
        for point in by['bt']:
            means = {c: p['mean'] for c, curve in by.items() for p in curve if p['size'] == point['size']}
            out.setdefault(taste, []).append(dict(size=point['size'], **means))
    return out


def sizes_to_reach(curve, target):
    """The fewest judgements at which a policy's mean accuracy reaches `target`, linearly interpolated between the
    measured sizes; None when it never does."""
    points = [(p['size'], p['mean']) for p in curve]
    for (s0, a0), (s1, a1) in zip([(0, 0.5)] + points[:-1], points):
        if a1 >= target:
            return float(s1 if a1 == a0 or s0 == 0 else s0 + (target - a0) / (a1 - a0) * (s1 - s0))
    return None


def active_savings(summary, reference=1000):
    """{taste: {random_at, active_needs, active_at}}: random pairs' mean accuracy at `reference` judgements, the
    judgements active choice needs to reach it (interpolated; None when it never does), and active's own accuracy there."""
    out = {}
    for taste, by in summary.items():
        if 'random' not in by or 'active' not in by:
            continue
        random_at = next((p['mean'] for p in by['random'] if p['size'] == reference), None)
        active_at = next((p['mean'] for p in by['active'] if p['size'] == reference), None)
        if random_at is not None:
            out[taste] = dict(reference=reference, random_at=random_at, active_at=active_at,
                active_needs=sizes_to_reach(by['active'], random_at))
    return out


def describe(summary, savings, versus=None, objectives=None):
    """Lines for the console: each curve's means, what active choice saves, auto mirroring against the better
    fixed setting (auto_vs_fixed) and the objectives against bt (objectives_vs_bt) when given."""
    lines = []
    for taste, by in summary.items():
        for policy, curve in by.items():
            points = ', '.join(f'{p["size"]}: {100 * p["mean"]:.1f}% ({100 * p["ci95"][0]:.1f}-{100 * p["ci95"][1]:.1f})'
                for p in curve)
            lines.append(f'{taste:>7} {policy:>6}  {points}')
    for taste, s in savings.items():
        needs = 'never' if s['active_needs'] is None else f'{s["active_needs"]:.0f}'
        lines.append(f'{taste:>7} active reaches random\'s {s["reference"]}-judgement accuracy '
            f'({100 * s["random_at"]:.1f}%) at: {needs}')
    for taste, cs in (versus or {}).items():
        for c in cs:
            lines.append(f'{taste:>7} {c["policy"]} {c["size"]}: auto {100 * c["auto"]:.1f}% vs {c["best"]} '
                f'{100 * c[c["best"]]:.1f}% ({100 * c["shortfall"]:+.1f} points below; auto mirrored '
                f'{100 * c["auto_mirrored"]:.0f}% of fits)')
    for taste, cs in (objectives or {}).items():
        for c in cs:
            others = ', '.join(f'{k} {100 * (v - c["bt"]):+.1f}' for k, v in c.items() if k not in ('size', 'bt'))
            lines.append(f'{taste:>7} {c["size"]}: bt {100 * c["bt"]:.1f}%; against it (points): {others}')
    return lines


def tick_labels(sizes, spacing=1.25):
    """Labels of sizes on a log axis, blank where one would crowd the last shown (closer than `spacing` times it)."""
    labels, last = [], 0
    for s in sizes:
        shown = s >= spacing * last
        labels.append(str(s) if shown else '')
        last = s if shown else last
    return labels


LINE_STYLES = (('-', 'o'), ('--', 's'), ('-.', '^'), (':', 'x'))      # plot_curves' distinct lines, in turn.


def plot_curves(summary, path, targets=None, xlabel='judgements', distinct=False):
    """One panel per taste: mean noise-free held-out accuracy against judgements (log x), one line per policy, the
    95% interval shaded; targets {taste: accuracy} drawn as dashed lines. distinct: each curve its own line style and
    marker (LINE_STYLES), so one that coincides with another stays visible."""
    plt = report_plots._pyplot()
    tastes = list(summary)
    fig, axes = plt.subplots(1, len(tastes), figsize=(4.2 * len(tastes), 3.6), squeeze=False)
    for ax, taste in zip(axes[0], tastes):
        for i, (policy, curve) in enumerate(summary[taste].items()):
            x = [p['size'] for p in curve]
            style, marker = LINE_STYLES[i % len(LINE_STYLES)] if distinct else ('-', 'o')
            ax.plot(x, [p['mean'] for p in curve], linestyle=style, marker=marker, label=policy)
            ax.fill_between(x, [p['ci95'][0] for p in curve], [p['ci95'][1] for p in curve], alpha=0.2)
        if targets and taste in targets:
            ax.axhline(targets[taste], color='grey', linestyle='--', linewidth=1)
        ax.set(xscale='log', xlabel=xlabel, ylabel='noise-free held-out accuracy', title=f'oracle:{taste}', ylim=(0.5, 1))
        ax.minorticks_off()
        ax.set_xticks(x, tick_labels(x))
        ax.legend(loc='lower right')
    fig.tight_layout()
    report_plots._save(fig, path)

#----------------------------------------------------------------------------

def oracle_of(taste, truth, pool, seed, options):
    """The trial's simulated annotator: the taste with options' temperature, or the one giving options.agreement."""
    oracle = annotators.OracleAnnotator(taste, truth, temperature=options.temperature, seed=seed)
    if options.agreement is not None:
        oracle.temperature = temperature_for_agreement(oracle, pool, options.agreement)
    return oracle


def make_fit(kind, inputs, pool, test, model_config, fit_options, table, device):
    """fit(train, val_pairs, seed, **changes to fit_options) -> ({id: [K] member scores} of the pool and test samples,
    what the fit chose: mirror, val_mirrored, val_plain, val_nll_mirrored, val_nll_plain): a new `kind` model fitted by
    train_model (pairs or unpaired labels), from the fixed trunk's FeatureTable when given. Its initial weights are
    seeded by the fit's seed (as fitting.fit_reward's), so fits that differ only in `changes` start alike."""
    def fit(train, val, fit_seed, **changes):
        torch.manual_seed(fit_seed)
        model = fitting.new_model(kind, inputs, pool, model_config)
        opts = dataclasses.replace(fit_options, seed=fit_seed, **changes)
        fitted = fitting.train_model(model, inputs, pool, train, val, opts, table=table, device=device, progress=False)
        ids, choice = pool + test, fitted['mirror']
        chosen = {f'val_{k}': v['accuracy'] for k, v in choice['validation'].items()}
        chosen.update({f'val_nll_{k}': v['nll'] for k, v in choice['validation'].items()})
        return dict(zip(ids, fitting.member_scores(model, inputs, ids, table=table, device=device))), dict(
            mirror=choice['chosen'], **chosen)
    return fit


def run_ratings(oracle, truth, pool, test, seed, options, fits, progress=None):
    """[{curve, size, seconds, agreement, accuracy, ..., rated, labelled, good, ratings}] of one unpaired session
    (rating_trials.RatingTrial): at each size (ratings made) every fit of fits ({curve: fit(train, val, seed)}) on the
    same labels, scored like run_trial's."""
    trial, rows, spent = rating_trials.RatingTrial(oracle, pool, options, seed), [], dict.fromkeys(fits, 0.0)
    test_pairs = fitting.all_pairs_by_truth(truth, test)
    for size in options.sizes:
        trial.rate(size - len(trial.ratings))
        train, val = trial.split()
        for curve, fit in fits.items():
            start = time.time()
            scores, chosen = fit(train, val, seed)
            spent[curve] += time.time() - start
            mean = {k: float(np.mean(v)) for k, v in scores.items() if k in set(test)}
            rows.append(dict(curve=curve, size=size, seconds=spent[curve], agreement=trial.agreement(),
                **accuracy(mean, test_pairs), **trial.counts(), **chosen))
            if progress is not None: progress(curve, size)
    return rows


def learning_curves(inputs, truths, policies, options, kind='sigma', model_config=None, fit_options=None,
        device='cpu', progress=None, mirrors=None, objectives=None):
    """Every trial of every taste in truths ({taste: {id: noise-free score}}), policy and mirror setting: a list of rows
    {taste, policy, seed, size, accuracy, correct, total, wilson95, agreement, seconds, mirror (whether the fit
    mirrored), val_mirrored, val_plain (validation accuracies of the ways fitted), val_nll_mirrored, val_nll_plain
    (their validation NLL; None by epochs)}. inputs: fitting.PreparedInputs of the bank, prepared by the reward's
    contract; mirrors: FitOptions.mirror settings to compare (default: fit_options' own); with more than one, each
    row's curve is POLICY/SETTING (MIRROR_SETTINGS) and every setting sees the same annotator; objectives: instead,
    names of rating_trials.OBJECTIVES compared at fit_options' mirror (compare_objectives); progress(taste, policy,
    seed, size) after each fit."""
    fit_options = fit_options or fitting.FitOptions()
    mirrors = [fit_options.mirror] if mirrors is None else list(mirrors)
    pool, test = split_pool(list(inputs.index), options.test_share, options.split_seed)
    prototype = fitting.new_model(kind, inputs, pool, model_config)
    table = None
    if fitting.fits_heads_only(prototype):                         # A fixed trunk: its features once for every fit.
        table = fitting.linear_heads.feature_table(prototype, inputs, inputs.index, any(m is not False for m in mirrors),
            device=device, progress=False)
    fit = make_fit(kind, inputs, pool, test, model_config, fit_options, table, device)
    if objectives is not None:
        return compare_objectives(truths, pool, test, policies, options, objectives, fit, progress)
    rows = []
    for taste, truth in truths.items():
        for policy, seed, mirror in itertools.product(policies, options.seeds, mirrors):
            oracle = oracle_of(taste, truth, pool, seed, options)
            report = (lambda size: progress(taste, policy, seed, size)) if progress else None
            label = dict(curve=f'{policy}/{MIRROR_SETTINGS[mirror]}') if len(mirrors) > 1 else {}
            trial_fit = lambda train, val, fit_seed, mirror=mirror: fit(train, val, fit_seed, mirror=mirror)
            for row in run_trial(oracle, truth, pool, test, policy, seed, options, trial_fit, progress=report):
                rows.append(dict(taste=taste, policy=policy, seed=seed, temperature=oracle.temperature, **label, **row))
    return rows


def bt_curve(policy):
    """The curve name of Bradley-Terry fits of a pair policy in a comparison of objectives: bt, or bt/active."""
    return 'bt' if policy == 'random' else f'bt/{policy}'


def compare_objectives(truths, pool, test, policies, options, objectives, fit, progress=None):
    """learning_curves' rows of a comparison of objectives, each row's curve an objective: per taste and seed, bt fits
    the pairwise judgements of each policy's trial (curve bt_curve(policy)) and every unpaired objective the one
    rating session's labels (run_ratings), each annotator the same taste and noise (oracle_of: a rating's noise has
    the temperature a judgement's has). At size N bt has N judgements, the others N ratings."""
    rows = []
    for taste, truth in truths.items():
        for seed in options.seeds:
            if 'bt' in objectives:
                for policy in policies:
                    oracle = oracle_of(taste, truth, pool, seed, options)
                    report = (lambda size: progress(taste, bt_curve(policy), seed, size)) if progress else None
                    for row in run_trial(oracle, truth, pool, test, policy, seed, options, fit, progress=report):
                        rows.append(dict(taste=taste, policy=policy, seed=seed, temperature=oracle.temperature,
                            curve=bt_curve(policy), labelled=row['size'], **row))
            fits = {o: (lambda train, val, fit_seed, o=o: fit(train, val, fit_seed, **rating_trials.OBJECTIVES[o]))
                for o in rating_trials.unpaired(objectives)}
            if fits:
                oracle = oracle_of(taste, truth, pool, seed, options)
                report = (lambda curve, size: progress(taste, curve, seed, size)) if progress else None
                for row in run_ratings(oracle, truth, pool, test, seed, options, fits, progress=report):
                    rows.append(dict(taste=taste, policy='random', seed=seed, temperature=oracle.temperature, **row))
    return rows

#----------------------------------------------------------------------------
# The report: the tastes' noise-free scores (kept beside it, as they take minutes), every trial, the curves.

OUTPUTS = ('report.json', 'report.html', 'curves.png', 'trials.jsonl')


def fit_count(tastes, policies, options, settings=1, objectives=None):
    """The fits a report makes: one per fit size of each taste, policy, seed and mirror setting (auto's fits both
    ways count as one); comparing objectives, bt's per policy and each unpaired objective's per size."""
    per_trial = sum(len(fit_sizes(p, options)) for p in policies)
    if objectives is not None:
        per_trial = per_trial * ('bt' in objectives) + len(rating_trials.unpaired(objectives)) * len(options.sizes)
    return len(tastes) * len(options.seeds) * settings * per_trial


def taste_truths(bank, tastes, level, outdir):
    """{taste: {id: noise-free taste score}} of the bank, each kept as outdir/truth_TASTE.csv (read back when it covers
    the bank); ScoresError for such a file that cannot be read."""
    truths = {}
    for taste in tastes:
        path = os.path.join(outdir, f'truth_{taste}.csv')
        if os.path.isfile(path):
            truths[taste] = read_scores(path, bank.ids)
            if set(truths[taste]) == set(bank.ids):
                continue
        with tqdm(total=len(bank), desc=f'oracle:{taste}', unit='sample') as bar:
            truths[taste] = annotators.taste_scores(taste, bank, level, progress=bar.update)
        write_scores(path, truths[taste])
    return truths


def report(inputs, truths, outdir, policies, options, bank_dir, kind='sigma', model_config=None, mirror=None,
        device='cpu', compare_mirror=False, fit_options=None, objectives=None):
    """Run every trial (learning_curves) and write OUTPUTS into outdir: the trials, the mean and 95% t-interval over
    seeds per taste, policy and size, what active choice saves against random at 1,000 judgements (or the largest
    size), and curves.png. mirror: FitOptions.mirror of every fit; compare_mirror: instead, every trial fitted mirrored,
    plain and auto, and how far auto falls below the better fixed setting (auto_vs_fixed); objectives: instead, those
    of rating_trials.OBJECTIVES compared (compare_objectives; objectives_vs_bt). fit_options: the rest of every fit's
    FitOptions (cs_lambda, reg_weight, epochs, ...). Returns the summary."""
    mirrors = list(MIRROR_SETTINGS) if compare_mirror else [mirror]
    fit_options = dataclasses.replace(fit_options or fitting.FitOptions(), mirror=mirror)
    total = fit_count(truths, policies, options, len(mirrors), objectives)
    with tqdm(total=total, desc='fits', unit='fit') as bar:
        def progress(taste, policy, seed, size):
            bar.set_postfix_str(f'{taste} {policy} seed {seed} n={size}')
            bar.update()
        rows = learning_curves(inputs, truths, policies, options, kind=kind, model_config=model_config,
            fit_options=fit_options, device=device, progress=progress, mirrors=mirrors, objectives=objectives)
    with dnnlib.util.atomic_write(os.path.join(outdir, 'trials.jsonl'), 'w', encoding='utf-8') as f:
        f.writelines(json.dumps(r) + '\n' for r in rows)
    curves = summarise(rows)
    plot_curves(curves, os.path.join(outdir, 'curves.png'),
        xlabel='labels (bt: judgements; unpaired: ratings)' if objectives else 'judgements', distinct=bool(objectives))
    reach = active_savings(curves, reference=1000 if 1000 in options.sizes else options.sizes[-1])
    summary = dict(bank=os.path.abspath(bank_dir), reward=kind, model_config=model_config,
        mirror='compare' if compare_mirror else MIRROR_SETTINGS[mirror], options=options.to_dict(), curves=curves,
        active_vs_random=reach)
    table = [[t, p, c['size'], f'{100 * c["mean"]:.1f}', f'{100 * c["ci95"][0]:.1f}-{100 * c["ci95"][1]:.1f}',
        f'{100 * c["agreement"]:.1f}', f'{100 * c["mirrored"]:.0f}'] + ([f'{c["labelled"]:.0f}'] if objectives else [])
        for t, by in curves.items() for p, curve in by.items() for c in curve]
    tables = [('Noise-free held-out accuracy (%)', ['taste', 'curve', 'judgements', 'mean', '95% interval',
        'label agreement', 'fits mirrored (%)'] + (['labels used'] if objectives else []), table)]
    if objectives:
        summary.update(objectives=list(objectives), objectives_vs_bt=objectives_vs_bt(curves),
            fit_options=dataclasses.asdict(fit_options))
    if compare_mirror:
        summary['auto_vs_fixed'] = auto_vs_fixed(curves)
        tables.append(('Automatic mirroring against the better fixed setting (held-out accuracy, %)', ['taste', 'policy',
            'judgements', 'mirrored', 'plain', 'auto', 'auto below the better', 'auto mirrored (%)'], [[t, c['policy'],
            c['size'], *(f'{100 * c[k]:.1f}' for k in ('mirrored', 'plain', 'auto', 'shortfall')),
            f'{100 * c["auto_mirrored"]:.0f}'] for t, cs in summary['auto_vs_fixed'].items() for c in cs]))
    report_plots.write_report(outdir, 'Reward learning curves', summary, ['curves.png'], tables=tables)
    return summary

#----------------------------------------------------------------------------
