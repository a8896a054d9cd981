"""eg3d_rlhf/analysis/replication.py: contrasts over training seeds, the across-seed result, Holm, clusters, writers."""

import itertools
import json

import numpy as np
import PIL.Image
import pytest
import scipy.stats

from eg3d_rlhf.analysis import collateral, replication
from tests.helpers.replication import fake_measures

#----------------------------------------------------------------------------
# Held-out ids as the flow demo has them: noise seeds 5000.. under 8 conditions, the noise seed the cluster.

def flow_ids(noise_seeds=32, conditions=8):
    return [f'c{c:02d}-seed{s:06d}' for s in range(5000, 5000 + noise_seeds) for c in range(conditions)]


def outcomes(wins, total, seed, ties=0):
    """`wins` wins, `ties` ties and the rest losses over `total` pairs, in an order drawn from `seed`."""
    values = np.array(['win'] * wins + ['tie'] * ties + ['loss'] * (total - wins - ties), dtype=object)
    return list(values[np.random.default_rng(seed).permutation(total)])


def contrast_rows(name, wins_per_seed, ids, first_seed=100):
    return [r for i, wins in enumerate(wins_per_seed)
        for r in replication.records(name, first_seed + i, ids, outcomes(wins, len(ids), seed=i))]


def hand_holm(pvalues):
    """Holm's step-down adjustment written out: the k-th smallest p times (m - k + 1), kept monotone, at most 1."""
    order, m = np.argsort(pvalues), len(pvalues)
    adjusted, running = np.empty(m), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def exact_wilcoxon(d):
    """Two-sided exact signed-rank p by enumerating every sign assignment of the ranks (no ties or zeros in d)."""
    ranks = scipy.stats.rankdata(np.abs(d))
    observed = ranks[np.asarray(d) > 0].sum()
    sums = np.array([np.dot(signs, ranks) for signs in itertools.product((0, 1), repeat=len(d))])
    return min(1.0, 2 * min(np.mean(sums <= observed), np.mean(sums >= observed)))

#----------------------------------------------------------------------------

def test_one_lucky_seed_wins_pair_by_pair_but_the_result_is_the_across_seed_test(tmp_path):
    ids = flow_ids()                                    # 256 ids a seed, 32 noise clusters.
    lucky = [122, 133, 125, 131, 124, 135, 128, 250]    # Seven seeds near 50%, one at 250 of 256.
    steady = [150, 160, 145, 170, 155, 149, 165, 158]   # Every seed above 50%: a real effect.
    table = replication.replicate(contrast_rows('(a) vs (d)', lucky, ids) + contrast_rows('(a) vs (k)', steady, ids))
    luck, real = table['contrasts']
    wins, losses = (sum(s[k] for s in luck['seeds']) for k in ('wins', 'losses'))
    assert (wins, losses) == (sum(lucky), 8 * 256 - sum(lucky))
    assert scipy.stats.binomtest(wins, wins + losses).pvalue < 1e-6          # Pair-level counting, pooled...
    assert luck['seeds'][-1]['pair_sign_p'] < 1e-6                            # ... and the lucky seed's own.
    assert replication.within([0.84, 1.01], 'preference') == [0.84, 1.0]      # A share's interval ends at 1 ...
    assert replication.within([-0.2, 1.5], 'difference') == [-0.2, 1.5]       # ... a difference's does not.
    assert luck['across']['wilcoxon_p'] > 0.3 and luck['across']['holm_p'] > 0.3 and luck['model']['p'] > 0.05
    assert luck['result'].endswith('no difference shown across seeds (alpha 0.05)')
    assert luck['across']['ci95'][0] < 0.5 < luck['across']['ci95'][1]
    assert real['across']['holm_p'] < 0.05 and real['model']['holm_p'] < 0.05
    assert real['result'].endswith('first side better across seeds (alpha 0.05)')
    assert table['result_test'] == 'Wilcoxon signed-rank over training seeds, Holm-adjusted over the 2 contrasts'
    text = replication.markdown(table)
    row = next(line for line in text.splitlines() if line.startswith('| (a) vs (d) | 8 |'))
    assert row.endswith('| no difference shown across seeds (alpha 0.05) |')
    assert 'pair-level sign p (this seed alone; descriptive, not a result)' in text
    paths = replication.write(table, str(tmp_path))
    assert sorted(p.split('/')[-1] for p in paths) == ['forest-a-vs-d.png', 'forest-a-vs-k.png', 'replication.json',
        'replication.md']
    assert json.loads((tmp_path / 'replication.json').read_text())['contrasts'][0]['result'] == luck['result']
    with PIL.Image.open(tmp_path / 'forest-a-vs-d.png') as im:
        assert im.size[0] > 300


def test_holm_is_the_hand_computed_step_down():
    p = [0.01, 0.04, 0.03, 0.005]
    assert replication.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert replication.holm(p) == pytest.approx(hand_holm(np.array(p)))
    adjusted = replication.holm([0.01, float('nan'), 0.04])                  # nan is no test: m = 2.
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    ids = flow_ids(8, 2)
    table = replication.replicate(contrast_rows('x', [9, 10, 12, 11], ids) + contrast_rows('y', [6, 12, 15, 9], ids)
        + contrast_rows('z', [16, 15, 16, 14], ids))
    raw = np.array([c['across']['wilcoxon_p'] for c in table['contrasts']])
    assert [c['across']['holm_p'] for c in table['contrasts']] == pytest.approx(hand_holm(raw))


def test_the_across_seed_wilcoxon_is_scipys_and_the_exact_enumeration():
    shares = np.array([0.55, 0.48, 0.61, 0.52, 0.58, 0.45, 0.63, 0.57])      # Per-seed effects, 100 pairs each.
    ids = [f'seed{i:06d}' for i in range(100)]
    table = replication.replicate(contrast_rows('x', (shares * 100).round().astype(int), ids))
    (c,) = table['contrasts']
    assert [s['effect'] for s in c['seeds']] == pytest.approx(shares)
    assert c['across']['wilcoxon_p'] == pytest.approx(scipy.stats.wilcoxon(shares - 0.5).pvalue)
    assert c['across']['wilcoxon_p'] == pytest.approx(exact_wilcoxon(shares - 0.5))
    assert (c['across']['above'], c['across']['below']) == (6, 2)
    assert c['across']['effect'] == pytest.approx(shares.mean())
    differences = [[0.3, -0.1, 0.2], [0.5, 0.1, 0.0], [-0.2, -0.4, 0.0], [0.1, 0.2, 0.6]]   # Paired numbers per seed.
    rows = [r for seed, d in enumerate(differences) for r in replication.records('y', seed, ['p0', 'p1', 'p2'], d)]
    (c,) = replication.replicate(rows, kind='difference')['contrasts']
    means = np.mean(differences, axis=1)
    assert c['null'] == 0 and [s['effect'] for s in c['seeds']] == pytest.approx(means)
    assert c['across']['wilcoxon_p'] == pytest.approx(scipy.stats.wilcoxon(means).pvalue)
    assert c['across']['wilcoxon_p'] == pytest.approx(exact_wilcoxon(means))


def test_ids_of_one_noise_cluster_count_as_one_unit():
    ids = flow_ids(32, 4)
    values = [replication.OUTCOMES[o] for o in outcomes(70, len(ids), seed=3, ties=10)]
    doubled = ids + [i.replace('c0', 'c1', 1) for i in ids]            # c10..c13 of the same noise: duplicates.
    assert {replication.noise_cluster(i) for i in doubled} == {replication.noise_cluster(i) for i in ids}
    width = lambda e: e['ci95'][1] - e['ci95'][0]
    clustered = [replication.seed_effect(v, [replication.noise_cluster(i) for i in x], 'preference')
        for v, x in ((values, ids), (values * 2, doubled))]
    naive = [replication.seed_effect(v, x, 'preference') for v, x in ((values, ids), (values * 2, doubled))]
    assert clustered[0]['effect'] == clustered[1]['effect'] == pytest.approx((70 + 5) / 128)
    assert width(clustered[1]) == pytest.approx(width(clustered[0]), rel=1e-9)    # The same evidence, the same interval.
    assert width(naive[1]) < 0.75 * width(naive[0])                                # Taken as independent: it would shrink.
    assert clustered[0]['clusters'] == 32 and naive[0]['clusters'] == 128


def test_noise_clusters_and_the_outcomes_of_measures():
    assert replication.noise_cluster('c03-seed000123') == replication.noise_cluster('seed000123') == 'seed000123'
    assert replication.noise_cluster('tuned-c03-seed000123') == 'tuned-c03-seed000123'
    rng = np.random.default_rng(0)
    first, second = fake_measures(rng, 40), fake_measures(rng, 40)
    second['tastes']['nose'][:5] = first['tastes']['nose'][:5]                     # Equal scores: ties.
    got = replication.preference_outcomes(first, second, 'nose')
    counts = collateral.compare(second, first)['tastes']['nose']                  # As circular_run.versus_a counts.
    assert (got.count('win'), got.count('loss'), got.count('tie')) == (counts['wins'], counts['losses'], counts['ties'])
    assert got[:5] == ['tie'] * 5


@pytest.mark.parametrize('change, message', [
    (dict(value=float('nan')), 'value nan is not a finite number'),
    (dict(value=0.3), 'a preference is 1, 0 or 0.5'),
    (dict(value=True), 'is not a finite number'),
    (replication.records('x', 0, ['seed000002'], ['won'])[0], "value 'won' is not a finite number"),
])
def test_bad_records_are_refused_in_one_line(change, message):
    rows = replication.records('x', 0, ['seed000001', 'seed000002'], ['win', 'loss'])
    with pytest.raises(ValueError, match=message):
        replication.replicate([rows[0], dict(rows[1], **change)])
    with pytest.raises(ValueError, match='id seed000001 given twice'):
        replication.replicate([rows[0], rows[0]])
    with pytest.raises(ValueError, match='2 ids but 1 outcomes'):
        replication.records('x', 0, ['seed000001', 'seed000002'], ['win'])


def test_one_seed_says_nothing_across_seeds():
    (c,) = replication.replicate(replication.records('x', 0, flow_ids(4, 2), ['win'] * 8))['contrasts']
    assert np.isnan(c['across']['wilcoxon_p']) and np.isnan(c['across']['holm_p']) and np.isnan(c['model']['p'])
    assert c['result'] == 'x: one training seed (share preferring the first side 100.0%); nothing can be said across seeds'


def test_too_few_seeds_to_reach_alpha_are_named_as_the_reason_and_enough_are_not():
    ids = flow_ids(4, 2)
    for seeds, floor in ((5, 0.0625), (6, None)):
        (c,) = replication.replicate(contrast_rows('x', [8] * seeds, ids))['contrasts']
        assert c['across']['wilcoxon_p'] == pytest.approx(exact_wilcoxon(np.full(seeds, 0.5) + np.arange(seeds) * 1e-3))
        if floor:                                       # Every seed at 100%, yet no p under 0.0625 is possible.
            assert c['across']['wilcoxon_p'] == pytest.approx(floor)
            assert c['result'].endswith('no difference shown across seeds (alpha 0.05); 5 seeds away from 50.0% cannot '
                'give a Wilcoxon p under 0.062, so no number of them agreeing could show a difference: run at least 6')
        else:
            assert c['result'].endswith('first side better across seeds (alpha 0.05)')
    assert replication.seeds_needed(0.05) == 6 and replication.seeds_needed(0.01) == 8


def test_dev_seeds_are_warned_of_and_test_seeds_are_not():
    warning = replication.dev_overlap('flow', [0, 1, 9], range(1000, 1032))
    assert warning.startswith('Warning: training seeds 0-1 and evaluation ids 1000-1007 are dev seeds')
    assert 'test seeds (training 100-107, evaluation 5000-5031' in warning
    assert replication.dev_overlap('flow', replication.TEST['flow']['train'], replication.TEST['flow']['eval']) is None
    assert replication.dev_overlap('eg3d', [100], [2150]).startswith('Warning: evaluation ids 2150 are dev seeds')
    assert replication.spans([7, 0, 1, 2, 9, 8]) == '0-2,7-9'

#----------------------------------------------------------------------------
