"""Learning curves of reward models (analysis/reward_curves.py, tools/reward_curve.py) on banks of balls."""

import collections
import json
import os

import numpy as np
import pytest
import scipy.stats
import torch

from eg3d_rlhf.analysis import rating_trials
from eg3d_rlhf.analysis import reward_curves as C
from eg3d_rlhf.data import annotators, labeling
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.scores import write_scores
from eg3d_rlhf.rewards import fitting, linear_heads
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward
from tests.helpers.banks import ball_bank
from tests.helpers.cli import tool
from tools import reward_curve

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def balls(tmp_path_factory):
    root, radii = ball_bank(tmp_path_factory.mktemp('curves') / 'bank', 40, seed=2)
    bank = Bank(root)
    spec = SigmaReward.default_input(bank.meta(bank.ids[0])['slab'], {})
    return root, radii, fitting.prepared_inputs(bank, bank.ids, spec, progress=False)


def test_curves_of_random_and_active_pairs_learn_the_taste(balls):
    _root, radii, inputs = balls
    options = C.CurveOptions(sizes=(20, 80), seeds=(0, 1), warmup=10, round=20, temperature=0.3)
    config = dict(levels=(10.0,), cells=(2, 2, 2), members=4)
    seen = []
    rows = C.learning_curves(inputs, {'nose': radii}, ('random', 'active'), options, model_config=config,
        progress=lambda *a: seen.append(a))
    assert [(r['policy'], r['seed'], r['size']) for r in rows] == [(p, s, n) for p in ('random', 'active')
        for s in (0, 1) for n in (20, 80)]
    pool, test = C.split_pool(list(radii), 0.2, 0)
    assert not set(pool) & set(test) and len(test) == 8
    for r in rows:
        assert r['total'] == len(fitting.all_pairs_by_truth(radii, test)) and 0.5 < r['agreement'] <= 1
        assert r['accuracy'] == pytest.approx(r['correct'] / r['total'])
    assert min(r['accuracy'] for r in rows if r['size'] == 80) >= 0.85         # Bigger balls liked: learned.
    assert ('nose', 'active', 1, 50) in seen and ('nose', 'random', 1, 50) not in seen  # Active refits every round.
    alone = C.learning_curves(inputs, {'nose': radii}, ('random',), C.CurveOptions(sizes=(80,), seeds=(1,), warmup=10,
        round=20, temperature=0.3), model_config=config)
    assert alone[0]['accuracy'] == next(r['accuracy'] for r in rows if (r['policy'], r['seed'], r['size']) == ('random', 1, 80))
    summary = C.summarise([dict(r, taste='nose') for r in rows])
    point = summary['nose']['random'][1]
    trials = [r['accuracy'] for r in rows if r['policy'] == 'random' and r['size'] == 80]
    half = scipy.stats.t.ppf(0.975, 1) * np.std(trials, ddof=1) / np.sqrt(2)
    assert point['size'] == 80 and point['trials'] == trials and point['mean'] == pytest.approx(np.mean(trials))
    assert point['ci95'] == pytest.approx([max(np.mean(trials) - half, 0), min(np.mean(trials) + half, 1)])


def test_an_active_trial_asks_what_the_ensemble_disputes():
    ids = [f's{i}' for i in range(12)]
    truth = {k: float(i) for i, k in enumerate(ids)}
    oracle = annotators.OracleAnnotator('nose', truth, temperature=0, seed=0)
    trial = C.Trial(oracle, ids, 'active', C.CurveOptions(warmup=10, round=5), seed=0)
    trial.judge(trial.pairs_to_judge(10))                        # No model yet: random pairs.
    disputed = {k: [0.0, 0.0] for k in ids}
    disputed['s3'], disputed['s8'] = [5.0, -5.0], [-5.0, 5.0]
    first = trial.pairs_to_judge(5, disputed)
    assert labeling.pair_key(*first[0]) == labeling.pair_key('s3', 's8') or \
        labeling.pair_key('s3', 's8') in {labeling.pair_key(j.a, j.b) for j in trial.judgements}
    assert not {labeling.pair_key(*p) for p in first} & {labeling.pair_key(j.a, j.b) for j in trial.judgements}
    train, val = trial.labels()
    assert len(val) == 1 and len(train['pairs']) == 9 and all(truth[w] > truth[l] for w, l in train['pairs'] + val)
    assert trial.agreement() == 1.0


def test_sizes_to_reach_interpolates_and_says_never():
    curve = [dict(size=250, mean=0.70), dict(size=500, mean=0.80), dict(size=1000, mean=0.90)]
    assert C.sizes_to_reach(curve, 0.85) == pytest.approx(750)
    assert C.sizes_to_reach(curve, 0.70) == 250 and C.sizes_to_reach(curve, 0.95) is None
    summary = dict(nose=dict(random=[dict(size=1000, mean=0.8)], active=curve))
    assert C.active_savings(summary, 1000)['nose'] == dict(reference=1000, random_at=0.8, active_at=0.9,
        active_needs=pytest.approx(500))
    assert C.tick_labels([250, 500, 600, 700, 800, 1000, 2000]) == ['250', '500', '', '700', '', '1000', '2000']
    with pytest.raises(ValueError, match='sizes must rise'):
        C.CurveOptions(sizes=(500, 250))


run = tool(reward_curve.main, '--device', 'cpu')


def test_reward_curve_tool_writes_its_report_and_refuses_to_overwrite(balls, tmp_path, monkeypatch):
    root, radii, _inputs = balls
    out = tmp_path / 'curves'
    out.mkdir()
    write_scores(str(out / 'truth_nose.csv'), radii)             # A cached taste: read back, not rescored.
    args = ['--bank', root, '--outdir', out, '--tastes', 'nose', '--sizes', '20,60', '--seeds', '0-1', '--warmup', 10, '--round', 20,
        '--model-config', json.dumps(dict(levels=[10.0], cells=[1, 1, 1], members=3))]
    dry = run(*args, '--dry-run')
    assert dry.exit_code == 0 and '2 seeds: 14 fits of the sigma reward' in dry.output and not os.path.exists(out / 'report.json')
    result = run(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    for name in reward_curve.OUTPUTS:
        assert os.path.isfile(out / name), name
    report = json.loads((out / 'report.json').read_text())
    assert set(report['curves']['nose']) == {'random', 'active'} and report['active_vs_random']['nose']['reference'] == 60
    assert len((out / 'trials.jsonl').read_text().splitlines()) == 8
    assert 'nose random  20:' in result.output and "active reaches random's 60-judgement accuracy" in result.output
    again = run(*args)
    assert again.exit_code != 0 and 'exists; pass --force' in again.output
    assert report['mirror'] == 'auto' and {r['mirror'] for r in map(json.loads, (out / 'trials.jsonl').read_text().splitlines())} <= {True, False}
    asked, real = [], linear_heads.feature_table
    monkeypatch.setattr(linear_heads, 'feature_table', lambda *a, **k: asked.append(a[3]) or real(*a, **k))
    plain = run(*args, '--policies', 'random', '--no-mirror', '--force')             # Tastes about one side: no
    assert plain.exit_code == 0 and asked == [False]                                 # mirrored copies of the pairs.
    assert json.loads((out / 'report.json').read_text())['mirror'] == 'plain'
    bad = run('--bank', root, '--outdir', tmp_path / 'x', '--tastes', 'nose,sharp')
    assert bad.exit_code != 0 and "'sharp': choose from nose, smooth, closed" in bad.output
    bad = run('--bank', root, '--outdir', tmp_path / 'x', '--sizes', '60,20')
    assert bad.exit_code != 0 and 'sizes must rise' in bad.output


def test_compare_mirror_fits_each_trial_three_ways_and_auto_is_the_fixed_fit_it_chose(balls, tmp_path):
    root, radii, _inputs = balls
    out = tmp_path / 'compare'
    out.mkdir()
    write_scores(str(out / 'truth_nose.csv'), radii)
    args = ['--bank', root, '--outdir', out, '--tastes', 'nose', '--policies', 'random', '--sizes', '20,60', '--seeds', '0-1',
        '--temperature', 0.3, '--model-config', json.dumps(dict(levels=[10.0], cells=[2, 2, 2], members=2))]
    clash = run(*args, '--compare-mirror', '--no-mirror')
    assert clash.exit_code == 2 and 'leave out --mirror/--no-mirror' in clash.output
    assert '2 seeds: 12 fits of the sigma reward' in run(*args, '--compare-mirror', '--dry-run').output
    result = run(*args, '--compare-mirror')
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((out / 'report.json').read_text())
    assert report['mirror'] == 'compare' and set(report['curves']['nose']) == {'random/auto', 'random/mirrored', 'random/plain'}
    rows = [json.loads(line) for line in (out / 'trials.jsonl').read_text().splitlines()]
    assert len(rows) == 12 and {r['mirror'] for r in rows if r['curve'] == 'random/plain'} == {False}
    fixed = {(r['seed'], r['size'], r['mirror']): r for r in rows if r['curve'] != 'random/auto'}
    for r in (r for r in rows if r['curve'] == 'random/auto'):                      # The same judgements and start:
        same = fixed[(r['seed'], r['size'], r['mirror'])]                             # auto is the fit it kept.
        assert r['correct'] == same['correct'] and r['val_mirrored'] == fixed[(r['seed'], r['size'], True)]['val_mirrored']
        assert r['val_plain'] == fixed[(r['seed'], r['size'], False)]['val_plain']
        assert r['mirror'] == (r['val_mirrored'] >= r['val_plain'])                  # Better validation; a tie mirrors.
    versus = report['auto_vs_fixed']['nose']
    assert [(v['policy'], v['size']) for v in versus] == [('random', 20), ('random', 60)]
    for v in versus:
        means = {c: report['curves']['nose'][f'random/{c}'][[20, 60].index(v['size'])]['mean'] for c in ('mirrored', 'plain', 'auto')}
        assert (v['mirrored'], v['plain'], v['auto']) == (means['mirrored'], means['plain'], means['auto'])
        assert v['shortfall'] == pytest.approx(max(means['mirrored'], means['plain']) - means['auto'])
    assert 'nose random 60: auto ' in result.output and 'points below' in result.output

#----------------------------------------------------------------------------
# Comparing objectives (--objectives): Bradley-Terry on judgements against the unpaired ones on a rating session.

def test_a_rating_session_respects_its_budget_and_bands_and_rates_again_past_the_pool():
    ids = [f's{i:02d}' for i in range(30)]
    truth = {k: float(i) for i, k in enumerate(ids)}
    oracle = lambda: annotators.OracleAnnotator('nose', truth, temperature=0.4, seed=3)
    options = C.CurveOptions(bad_quantile=0.3, good_quantile=0.7)
    trial = rating_trials.RatingTrial(oracle(), ids, options, seed=1)
    trial.rate(20)
    scores, labels = trial.scores(), trial.labels()
    rated_z = [trial.oracle.z[k] for k in scores]
    lo, hi = np.quantile(rated_z, 0.3), np.quantile(rated_z, 0.7)
    assert len(trial.ratings) == 20 and len(scores) == 20 and set(labels) <= set(scores)    # Distinct, within budget.
    assert all(scores[k] >= hi if v else scores[k] <= lo for k, v in labels.items())          # Outside the band only,
    assert {k for k in scores if scores[k] <= lo or scores[k] >= hi} == set(labels)           # and all of those.
    assert 0 < trial.counts()['good'] < len(labels) < 20
    trial.rate(40)                                                                             # Past the pool: twice each.
    assert len(trial.ratings) == 60 and all(n == 2 for n in collections.Counter(k for k, _ in trial.ratings).values())
    k = ids[4]
    assert trial.scores()[k] == pytest.approx(np.mean([s for i, s in trial.ratings if i == k]))
    alone = rating_trials.RatingTrial(oracle(), ids, options, seed=1)
    alone.rate(60)
    assert alone.ratings == trial.ratings                                      # A point is the same measured alone.
    train, val = trial.split()
    labels = trial.labels()
    assert set(train['labels']) | {x for p in val for x in p} <= set(labels) and val
    assert not set(train['labels']) & {x for p in val for x in p}
    assert all(labels[g] == 1 and labels[b] == 0 for g, b in val)
    assert train['scores'] == {k: trial.scores()[k] for k in train['labels']}                 # dreamcs's MSE targets.
    exact = rating_trials.RatingTrial(annotators.OracleAnnotator('nose', truth, temperature=0, seed=0), ids, options, 0)
    exact.rate(30)
    assert exact.agreement() == 1.0 and len(exact.labels()) == 2 * 9                          # 9 below 0.3, 9 above 0.7.


@pytest.mark.parametrize('trunk', ['levels', 'cnn'])
def test_compare_objectives_fits_each_objective_on_the_same_labels(balls, monkeypatch, trunk):
    _root, radii, inputs = balls
    fits, real = [], fitting.train_model

    def spy(model, inputs, train_ids, train, val_pairs, options, **kwargs):
        report = real(model, inputs, train_ids, train, val_pairs, options, **kwargs)
        fits.append(dict(train=train, objective=options.objective, cs_lambda=options.cs_lambda,
            weights=[p.detach().clone() for p in model.parameters()]))
        return report
    monkeypatch.setattr(fitting, 'train_model', spy)
    config = dict(levels=(10.0,), cells=(2, 2, 2), members=2) if trunk == 'levels' else \
        dict(trunk='cnn', members=1, channels=(2, 4, 4, 4, 4), pool=(1, 1, 1), hidden=8)
    options = C.CurveOptions(sizes=(24, 32), seeds=(0,), temperature=0.2)
    objectives = ('bt', 'cs-bce', 'dreamcs', 'dreamcs-l0')
    rows = C.learning_curves(inputs, {'nose': radii}, ('random',), options, model_config=config, objectives=objectives,
        fit_options=fitting.FitOptions(mirror=False, batch=8, lr=0.05, epochs=3, patience=3, cs_lambda=2.0))
    assert [(r['curve'], r['size']) for r in rows] == [('bt', 24), ('bt', 32)] + [(o, n) for n in (24, 32)
        for o in objectives[1:]]
    assert len(fits) == 8 and 'pairs' in fits[0]['train'] and 'pairs' in fits[1]['train']
    for size, at in ((24, fits[2:5]), (32, fits[5:8])):
        row = next(r for r in rows if r['curve'] == 'cs-bce' and r['size'] == size)
        assert [(f['objective'], f['cs_lambda']) for f in at] == [('cs-bce', 2.0), ('dreamcs', 2.0), ('dreamcs', 0.0)]
        assert at[0]['train']['labels'] == at[1]['train']['labels'] == at[2]['train']['labels']      # One session,
        assert row['ratings'] == size and row['labelled'] <= row['rated'] <= size                     # within budget.
        same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a['weights'], b['weights']))
        assert not same(at[0], at[1])                                          # BCE on labels is not MSE on scores.
        assert same(at[1], at[2]) == (trunk == 'levels')       # A fixed trunk: -D_CS is a constant, lambda does nothing.
    summary = C.summarise(rows)
    assert set(summary['nose']) == set(objectives)
    assert [p['labelled'] for p in summary['nose']['bt']] == [24, 32]
    versus = C.objectives_vs_bt(summary)['nose']
    assert [v['size'] for v in versus] == [24, 32] and set(versus[0]) == {'size', *objectives}


def test_reward_curve_tool_compares_objectives(balls, tmp_path):
    root, radii, _inputs = balls
    out = tmp_path / 'objectives'
    out.mkdir()
    write_scores(str(out / 'truth_nose.csv'), radii)
    args = ['--bank', root, '--outdir', out, '--tastes', 'nose', '--sizes', '20,30', '--seeds', '0-1', '--temperature', 0.3,
        '--no-mirror', '--model-config', json.dumps(dict(levels=[10.0], cells=[1, 1, 1], members=2))]
    clash = run(*args, '--objectives', 'bt,dreamcs', '--compare-mirror')
    assert clash.exit_code == 2 and 'pass one' in clash.output
    bands = run(*args, '--objectives', 'bt,dreamcs', '--bad-quantile', 0.7, '--good-quantile', 0.6)
    assert bands.exit_code == 2 and 'bad quantile <= good quantile' in bands.output
    bad = run(*args, '--objectives', 'bt,mse')
    assert bad.exit_code == 2 and "'mse': choose from bt, cs-bce, dreamcs, dreamcs-l0" in bad.output
    dry = run(*args, '--objectives', 'bt,cs-bce,dreamcs', '--dry-run')
    assert dry.exit_code == 0 and 'policies random; objectives bt, cs-bce, dreamcs (bands at quantiles 0.477 and 0.577)' \
        in dry.output and '2 seeds: 12 fits' in dry.output
    result = run(*args, '--objectives', 'bt,cs-bce,dreamcs', '--bad-quantile', 0.4, '--good-quantile', 0.6)
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads((out / 'report.json').read_text())
    assert set(report['curves']['nose']) == {'bt', 'cs-bce', 'dreamcs'} and report['objectives'] == ['bt', 'cs-bce', 'dreamcs']
    assert report['options']['bad_quantile'] == 0.4 and report['fit_options']['cs_lambda'] == 1.0
    rows = [json.loads(line) for line in (out / 'trials.jsonl').read_text().splitlines()]
    assert len(rows) == 12 and all(r['labelled'] < r['size'] for r in rows if r['curve'] != 'bt')
    assert 'nose 30: bt ' in result.output and 'cs-bce' in result.output and 'labels used' in (out / 'report.html').read_text()
