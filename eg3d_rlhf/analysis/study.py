"""Blind studies and ratings scored: tuned's win rate with interval, p and Cohen's h, agreement, attention, means."""

import collections
import itertools
import os

import numpy as np

import dnnlib
from eg3d_rlhf.analysis import paired_ratings as paired
from eg3d_rlhf.analysis.evaluation import win_rate
from eg3d_rlhf.analysis.report_plots import write_report
from eg3d_rlhf.data.blind_study import ROLES, Study, key_path, study_judgements
from eg3d_rlhf.data.labeling import cohen_kappa, pair_key
from eg3d_rlhf.data.preferences import LabelError, is_repeat
from eg3d_rlhf.data.ratings import RatingKey, load_ratings
from eg3d_rlhf.data.ratings import key_path as ratings_key_path

#----------------------------------------------------------------------------
# Agreement.

def fleiss_kappa(counts):
    """Fleiss' kappa of a table counts[item, category] (how many raters put each item in each category; every item
    rated by the same number n >= 2 of raters): (P_bar - P_e) / (1 - P_e), P_bar the mean share of agreeing rater
    pairs per item, P_e the chance agreement from the categories' overall shares. None when P_e = 1 (one category)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    assert counts.ndim == 2 and len(counts) > 0 and np.all(n == n[0]) and n[0] >= 2, 'every item needs the same n >= 2 raters'
    n = n[0]
    share = counts.sum(axis=0) / counts.sum()
    p_item = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_e = float((share ** 2).sum())
    return None if np.isclose(p_e, 1.0) else float((p_item.mean() - p_e) / (1 - p_e))

#----------------------------------------------------------------------------
# A study.

CATEGORIES = ('tuned', 'original', 'tie')


def study_choice(j, study):
    """'tuned' | 'original' | 'tie' | 'skip' of a judgement of a study pair; None for an attention check."""
    roles = study.role(j.a), study.role(j.b)
    if sorted(roles) != sorted(ROLES):
        return None
    return {'a': roles[0], 'b': roles[1]}.get(j.choice, j.choice)


def attention_passed(j, study):
    """Whether a judgement of an attention check picked its clean side (a tie or skip does not)."""
    clean = study.clean[pair_key(j.a, j.b)]
    return {'a': j.a, 'b': j.b}.get(j.choice) == clean


def score_study(judgements, study, min_attention=0.8):
    """The study's numbers from its judgements (loaded with repeats; undone ones gone) and key: per annotator and
    pooled, tuned's win rate among decided pairs (evaluation.win_rate: Wilson 95% interval, exact binomial p, Cohen's
    h; ties counted, skips left out), self-consistency on repeats (the same outcome, sides swapped), attention checks
    passed (flagged below `min_attention`); between annotators, Cohen's kappa per two on the pairs both decided or
    tied, and Fleiss' kappa on the pairs every annotator did (categories tuned, original, tie)."""
    by = collections.defaultdict(list)
    for j in judgements:
        by[j.annotator].append(j)
    annotators, firsts = {}, {}
    for name in sorted(by):
        js = by[name]
        first = {pair_key(j.a, j.b): j for j in js if not is_repeat(j)}
        firsts[name] = {k: study_choice(j, study) for k, j in first.items() if k not in study.clean}
        choices = [c for c in firsts[name].values() if c != 'skip']
        agreed = total = 0
        for r in (j for j in js if is_repeat(j) and pair_key(j.a, j.b) not in study.clean):
            before, again = firsts[name].get(pair_key(r.a, r.b)), study_choice(r, study)
            if before not in (None, 'skip') and again != 'skip':
                total, agreed = total + 1, agreed + (before == again)
        checks = [j for j in first.values() if pair_key(j.a, j.b) in study.clean]
        passed = sum(attention_passed(j, study) for j in checks)
        rate = passed / len(checks) if checks else None
        annotators[name] = dict(judged=len(firsts[name]), skips=len(firsts[name]) - len(choices), **win_rate(choices),
            self_consistency=dict(pairs=total, agreed=agreed, rate=agreed / total if total else None),
            attention=dict(shown=len(checks), passed=passed, rate=rate, flagged=rate is not None and rate < min_attention))
    pooled = [c for name in annotators for c in firsts[name].values() if c != 'skip']
    flagged = sorted(n for n, a in annotators.items() if a['attention']['flagged'])
    kept = [c for name in annotators if name not in flagged for c in firsts[name].values() if c != 'skip']
    return dict(key=study.path, pairs=len(study.pairs), attention_checks=len(study.checks), min_attention=min_attention,
        annotators=annotators, pooled=win_rate(pooled), flagged=flagged,
        pooled_without_flagged=win_rate(kept) if flagged else None, agreement=agreement(firsts))


def study_outcomes(judgements, study):
    """[(annotator, sample id, 'tuned' | 'original' | 'tie')]: each annotator's standing judgement of every study pair
    it decided or tied (repeats, attention checks and skips left out), as score_study counts them."""
    standing = {}
    for j in judgements:
        if not is_repeat(j) and pair_key(j.a, j.b) not in study.clean:
            standing[j.annotator, pair_key(j.a, j.b)] = j
    choices = [(name, study.samples[j.a][1], study_choice(j, study)) for (name, _), j in standing.items()]
    return [c for c in choices if c[2] in CATEGORIES]


def agreement(firsts):
    """Cohen's kappa for each two annotators and Fleiss' kappa over all, from {annotator: {pair: choice}}."""
    decided = {name: {k: c for k, c in f.items() if c in CATEGORIES} for name, f in firsts.items()}
    pairs = []
    for x, y in itertools.combinations(sorted(decided), 2):
        shared = sorted(set(decided[x]) & set(decided[y]), key=sorted)
        cx, cy = [decided[x][k] for k in shared], [decided[y][k] for k in shared]
        agreed = sum(u == v for u, v in zip(cx, cy))
        pairs.append(dict(annotators=[x, y], shared=len(shared), agreed=agreed,
            agreement=agreed / len(shared) if shared else None, kappa=cohen_kappa(cx, cy) if shared else None))
    fleiss = None
    if len(decided) >= 2:
        common = set.intersection(*(set(d) for d in decided.values()))
        table = [[sum(d[k] == c for d in decided.values()) for c in CATEGORIES] for k in sorted(common, key=sorted)]
        fleiss = dict(annotators=len(decided), items=len(table), kappa=fleiss_kappa(table) if table else None)
    return dict(pairs=pairs, fleiss=fleiss)


def _pct(x):
    return 'n/a' if x is None or not np.isfinite(x) else f'{100 * x:.1f}%'


def _win_line(w):
    lo, hi = w['wilson95']
    return (f'tuned preferred in {w["wins"]}/{w["wins"] + w["losses"]} decided pairs ({_pct(w["win_rate"])}, Wilson 95% '
        f'{_pct(lo)}-{_pct(hi)}), {w["ties"]} ties, binomial p {w["binomial_p"]:.3g}, Cohen\'s h {w["cohens_h"]:.3f}')


def describe_study(result):
    """Console lines of score_study's result."""
    lines = [f'{result["key"]}: {result["pairs"]} same-seed pairs, {result["attention_checks"]} attention checks, '
        f'{len(result["annotators"])} annotators']
    for name, a in result['annotators'].items():
        sc, at = a['self_consistency'], a['attention']
        flag = '  FLAGGED: below the attention threshold' if at['flagged'] else ''
        lines.append(f'{name}: {_win_line(a)}; {a["skips"]} skipped; self-consistency {sc["agreed"]}/{sc["pairs"]}; '
            f'attention {at["passed"]}/{at["shown"]}{flag}')
    lines.append(f'pooled: {_win_line(result["pooled"])}')
    if result['pooled_without_flagged'] is not None:
        lines.append(f'pooled without {", ".join(result["flagged"])}: {_win_line(result["pooled_without_flagged"])}')
    for p in result['agreement']['pairs']:
        kappa = 'n/a' if p['kappa'] is None else f'{p["kappa"]:.3f}'
        lines.append(f'{" vs ".join(p["annotators"])}: {p["agreed"]}/{p["shared"]} shared pairs agree, Cohen\'s kappa {kappa}')
    fleiss = result['agreement']['fleiss']
    if fleiss is not None:
        kappa = 'n/a' if fleiss['kappa'] is None else f'{fleiss["kappa"]:.3f}'
        lines.append(f'all {fleiss["annotators"]} annotators: Fleiss\' kappa {kappa} on the {fleiss["items"]} pairs all judged')
    return lines


def write_study_report(out, result):
    """OUT.score.json and OUT.score.html beside the labels file OUT; returns the JSON's path."""
    header = ['annotator', 'decided', 'tuned wins', 'win rate', 'Wilson 95%', 'binomial p', "Cohen's h", 'ties', 'skips',
        'self-consistency', 'attention']
    rows = [[name, a['wins'] + a['losses'], a['wins'], _pct(a['win_rate']), f'{_pct(a["wilson95"][0])}-{_pct(a["wilson95"][1])}',
        f'{a["binomial_p"]:.3g}', f'{a["cohens_h"]:.3f}', a['ties'], a['skips'],
        f'{a["self_consistency"]["agreed"]}/{a["self_consistency"]["pairs"]}',
        f'{a["attention"]["passed"]}/{a["attention"]["shown"]}' + (' flagged' if a['attention']['flagged'] else '')]
        for name, a in [*result['annotators'].items(), ('pooled', dict(result['pooled'], skips='', self_consistency=dict(
            agreed='', pairs=''), attention=dict(passed='', shown='', flagged=False)))]]
    folder, name = os.path.split(os.path.abspath(out))
    write_report(folder, 'Blind same-seed study', result, [], name=f'{name}.score', tables=[('Tuned vs original', header, rows)])
    return os.path.join(folder, f'{name}.score.json')

#----------------------------------------------------------------------------
# Ratings.

mean_interval = paired.mean_interval          # Where it lives; study's name kept for its callers.


def summarise_ratings(records, key):
    """Per criterion, per bank (as the key labels them) and over all banks: mean_interval of the ratings (skips
    left out); per annotator: ratings and skips."""
    rated = [r for r in records if not r.get('skip')]
    banks = list(key.key['banks'])
    criteria = {}
    for c in key.criteria:
        per = {b: mean_interval([r['ratings'][c] for r in rated if key.samples[r['sample']][0] == b]) for b in banks}
        criteria[c] = dict(banks=per, all=mean_interval([r['ratings'][c] for r in rated]))
    annotators = collections.defaultdict(lambda: dict(rated=0, skipped=0))
    for r in records:
        annotators[r['annotator']]['skipped' if r.get('skip') else 'rated'] += 1
    return dict(key=key.path, criteria=criteria, banks=key.key['banks'], annotators=dict(annotators))


def describe_ratings(result):
    lines = [f'{result["key"]}: ' + ', '.join(f'{n} rated {a["rated"]} (skipped {a["skipped"]})'
        for n, a in result['annotators'].items())]
    for c, r in result['criteria'].items():
        for b, m in [*r['banks'].items(), ('all banks', r['all'])]:
            lines.append(f'{c:<12} {b}: mean {m["mean"]:.3f} (95% t {m["ci95"][0]:.3f}-{m["ci95"][1]:.3f}, sd {m["sd"]:.3f}, '
                f'n {m["n"]})')
    return lines


def write_ratings_report(out, result):
    """OUT.score.json and OUT.score.html beside the ratings file OUT; returns the JSON's path."""
    rows = [[c, b, m['n'], f'{m["mean"]:.3f}', f'{m["ci95"][0]:.3f}-{m["ci95"][1]:.3f}', f'{m["sd"]:.3f}']
        for c, r in result['criteria'].items() for b, m in [*r['banks'].items(), ('all banks', r['all'])]]
    tables = [('Ratings per criterion and bank', ['criterion', 'bank', 'n', 'mean', '95% t interval', 'sd'], rows)]
    if result.get('paired'):
        tables.append(paired.table(result['paired']))
    folder, name = os.path.split(os.path.abspath(out))
    write_report(folder, 'Ratings', result, [], name=f'{name}.score', tables=tables)
    return os.path.join(folder, f'{name}.score.json')

#----------------------------------------------------------------------------
# The tool's two scoring commands.

def check_report(out):
    """LabelError (one line), before anything is read, where OUT.score.json or .html cannot be written (a folder
    there, say)."""
    for path in (f'{out}.score.json', f'{out}.score.html'):
        problem = dnnlib.util.writable_problem(path, 'file')
        if problem is not None:
            raise LabelError(f'{problem}; move it away: the report of {out} is written there')


def score_study_file(out, min_attention=0.8):
    """tools/label.py score-study: unblind the study of labels file `out` by its key, write OUT.score.json and .html;
    the console's lines. LabelError for a file or key that cannot be read, or no judgements."""
    check_report(out)
    key = Study.load(key_path(out))
    judgements = study_judgements(out, key)
    if not judgements:
        raise LabelError(f'{out}: no judgements yet')
    result = score_study(judgements, key, min_attention)
    return describe_study(result) + [f'wrote {write_study_report(out, result)} and its .html']


def score_ratings_file(out, tuned=None, original=None):
    """tools/label.py score-ratings: summarise ratings file `out` by its key and, where a tuned and an original bank
    are named (paired_ratings.name_banks: tuned and original labels, or a folder named tuned), their paired
    differences; write OUT.score.json and .html; the console's lines."""
    check_report(out)
    key = RatingKey.load(ratings_key_path(out))
    records = load_ratings(out, key)
    if not records:
        raise LabelError(f'{out}: no ratings yet')
    named = paired.name_banks(key.key['banks'], tuned, original)
    result = summarise_ratings(records, key)
    lines = describe_ratings(result)
    if named:
        result['paired'] = paired.paired_ratings(records, key, *named)
        lines += paired.describe(result['paired'])
    elif len(key.key['banks']) == 2:
        lines.append('paired differences: name the tuned bank (score-ratings --tuned BANK) for tuned minus original')
    return lines + [f'wrote {write_ratings_report(out, result)} and its .html']

#----------------------------------------------------------------------------
