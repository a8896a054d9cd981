"""Learning curves of reward models (analysis/reward_curves.py, tools/reward_curve.py) on banks of balls."""

import json
import os

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from eg3d_rlhf.analysis import reward_curves as C
from eg3d_rlhf.data import annotators, labeling
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.scores import write_scores
from eg3d_rlhf.rewards import fitting, linear_heads
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward
from tests.helpers.banks import ball_bank
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


def run(*args):
    return CliRunner().invoke(reward_curve.main, ['--device', 'cpu', *[str(a) for a in args]])


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
