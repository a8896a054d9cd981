"""Gold from people: the snapshots a run keeps for blind studies, the plan read back as untrusted input, the studies'
win rates collected onto the distance from the start, and the tool that says what is left to do."""

import json
import os

import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.analysis.evaluation import win_rate
from eg3d_rlhf.finetune import gold_studies as gs
from tools import gold_studies as tool
from training import legacy


def kept_run(tmp_path, ticks=5, every=2):
    """A run folder whose GoldStudies kept a Linear 'G_ema' every `every` of `ticks` ticks (weights = the tick)."""
    studies = gs.GoldStudies(str(tmp_path), every)
    for tick in range(ticks):
        net = torch.nn.Linear(1, 1)
        torch.nn.init.constant_(net.weight, float(tick))
        studies.keep(net, tick, 0.1 * tick, 0.2 * tick, 1.5 * tick)
    return str(tmp_path)


def score(run_dir, tick, choices):
    """A study's score.json beside its labels, pooled as score-study writes it."""
    path = gs.study_path(run_dir, dict(tick=tick))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + '.score.json', 'w', encoding='utf-8') as f:
        json.dump(dict(pooled=win_rate(choices), pooled_without_flagged=None), f)


def test_every_nth_tick_is_kept_with_its_distance_and_proxy(tmp_path):
    run = kept_run(tmp_path)
    plan = gs.read_plan(run)
    assert [e['tick'] for e in plan] == [0, 2, 4] and [e['distance'] for e in plan] == pytest.approx([0, 0.4, 0.8])
    assert [e['proxy_gain'] for e in plan] == pytest.approx([0, 3, 6])
    weights = [float(legacy.load_network_pkl(gs.snapshot_path(run, e), trust=True)['G_ema'].weight) for e in plan]
    assert weights == [0, 2, 4]
    assert not os.path.exists(os.path.join(run, gs.FOLDER, 'tick-0001.pkl'))


def test_scored_studies_become_win_rates_at_their_distance(tmp_path):
    run = kept_run(tmp_path)
    score(run, 2, ['tuned'] * 15 + ['original'] * 5)
    os.makedirs(os.path.dirname(gs.study_path(run, dict(tick=4))))
    open(gs.study_path(run, dict(tick=4)), 'w').close()                      # Being labelled, not scored yet.
    rows = gs.collect(run)
    assert [r['state'] for r in rows] == ['start', 'scored', 'labelled']
    assert rows[0]['win_rate'] == 0.5 and rows[1]['win_rate'] == pytest.approx(0.75) and rows[1]['decided'] == 20
    lo, hi = rows[1]['wilson95']
    assert lo < 0.75 < hi
    path = gs.write_report(run, rows)
    assert json.load(open(path))['snapshots'][1]['win_rate'] == pytest.approx(0.75)
    assert os.path.getsize(os.path.join(run, gs.REPORT + '.png')) > 1000


def test_the_tool_prints_what_is_left_and_writes_the_report(tmp_path):
    run = kept_run(tmp_path)
    result = CliRunner().invoke(tool.main, [run, '--seeds', '7000-7003', '--res', '32'])
    assert result.exit_code == 0, result.output
    assert 'tick 2' in result.output and 'to do; next:' in result.output and 'report:' not in result.output
    assert f'--network {gs.snapshot_path(run, dict(tick=2))} --trust-pickle --seeds 7000-7003 --res 32' in result.output
    assert 'tools/label.py study --original' in result.output and 'score-study' in result.output
    score(run, 4, ['tuned'] * 3 + ['original'] * 7)
    result = CliRunner().invoke(tool.main, [run])
    assert 'tuned preferred in 30.0% of 10 decided pairs' in result.output and 'report:' in result.output


@pytest.mark.parametrize('damage, message', [
    (None, 'does not exist: train with --gold-study-every N'),
    ('{"snapshots": [', 'is not a gold-studies plan'),
    ({'snapshots': [dict(tick=0, kimg=0, distance=float('nan'), proxy_gain=0, pkl='gold-studies/tick-0000.pkl')]},
        'non-finite or negative'),
    ({'snapshots': [dict(tick=0, kimg=0, distance=0, proxy_gain=0, pkl='../../elsewhere.pkl')]}, 'not its own snapshot'),
    ({'snapshots': [dict(tick=2, kimg=0, distance=0, proxy_gain=0, pkl='gold-studies/tick-0002.pkl')]}, 'no start snapshot'),
])
def test_a_bad_plan_is_refused_in_one_line_naming_the_file(tmp_path, damage, message):
    if damage is not None:
        (tmp_path / gs.PLAN).write_text(damage if isinstance(damage, str) else json.dumps(damage))
    result = CliRunner().invoke(tool.main, [str(tmp_path)])
    assert result.exit_code == 1 and message in result.output and gs.PLAN in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_bad_score_is_refused_naming_it(tmp_path):
    run = kept_run(tmp_path)
    path = gs.study_path(run, dict(tick=2)) + '.score.json'
    os.makedirs(os.path.dirname(path))
    open(path, 'w').write(json.dumps(dict(pooled=dict(wins=1, losses=1, win_rate=7.0, wilson95=[0, 1]),
        pooled_without_flagged=None)))
    result = CliRunner().invoke(tool.main, [run])
    assert result.exit_code == 1 and 'not a share in [0, 1]' in result.output and path in result.output
