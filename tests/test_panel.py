"""The reward panel's proxy against gold: members, disagreement, gold and distance every tick, in stats.jsonl and the
report, kept through a resume; --stop-at-peak; the conservative aggregate reaches the phase."""

import json
import math
import os

import pytest

from eg3d_rlhf.finetune import gold_studies
from eg3d_rlhf.rewards.checkpoint import save_reward
from tests.helpers.rewards import slab_description, tiny_ensemble
from tests.helpers.train import TRAIN_ARGS, base_args, only_run_dir, run_train
from training import legacy

pytestmark = pytest.mark.usefixtures('one_thread')

NAMES = ('Panel/proxy', 'Panel/aggregate', 'Panel/disagreement', 'Panel/gold', 'Panel/distance', 'Panel/param_distance')


@pytest.fixture(scope='module')
def ensemble(tmp_path_factory):
    """A seeded three-member sigma reward on the tiny slab."""
    path = str(tmp_path_factory.mktemp('ensemble') / 'sigma3.pt')
    save_reward(path, tiny_ensemble(seed=5), 'sigma', slab_description())
    return path


def reward_run(data, reward, start, outdir, *extra):
    return base_args(data, outdir, *TRAIN_ARGS, '--tick', '0.002', '--resume', start, '--trust-pickle', '--reward', 'sigma',
        '--reward-model', reward, '--reward-batch', '2', '--panel-seeds', '3-5', '--collateral-seeds', '0',
        '--gold-taste', 'nose', *extra)


@pytest.fixture(scope='module')
def gold_run(data, ensemble, start_pkl, tmp_path_factory):
    outdir = tmp_path_factory.mktemp('gold')
    run_train(reward_run(data, ensemble, start_pkl, outdir, '--kimg', '0.004', '--reward-aggregate', 'mean-std',
        '--aggregate-lambda', '0.5', '--gold-study-every', '2'))
    return only_run_dir(outdir)


@pytest.mark.slow
def test_every_tick_records_proxy_members_gold_and_distance(gold_run):
    stats = [json.loads(line) for line in open(os.path.join(gold_run, 'stats.jsonl'))]
    assert stats and all(name in stats[-1] for name in NAMES), sorted(stats[-1])
    assert all(math.isfinite(line[name]['mean']) for line in stats for name in NAMES)   # The start's too: no nan row.
    report = json.load(open(os.path.join(gold_run, 'reward_report.json')))
    pg = report['proxy_gold']
    rows = pg['rows']
    assert rows['kimg'] == [0, 0.002, 0.004] and pg['aggregate'] == 'mean-std, lambda 0.5' and pg['gold_taste'] == 'nose'
    assert rows['distance'][0] == 0 and rows['param_distance'][0] == 0 and rows['distance'][-1] > 0
    assert all(len(m) == 3 for m in rows['members'])
    assert [sum(m) / 3 for m in rows['members']] == pytest.approx(rows['proxy'])
    assert all(a <= p + 1e-9 for a, p in zip(rows['aggregate'], rows['proxy']))     # mean - 0.5 sd.
    assert stats[-1]['Panel/gold']['mean'] == pytest.approx(rows['gold'][-1])
    assert os.path.isfile(os.path.join(gold_run, 'proxy_gold.png'))
    assert 'proxy_gold.png' in open(os.path.join(gold_run, 'reward_report.html')).read()
    options = json.load(open(os.path.join(gold_run, 'training_options.json')))
    assert options['loss_kwargs']['reward_kwargs']['reward_aggregate'] == 'mean-std'


@pytest.mark.slow
def test_gold_studies_keep_g_ema_every_n_ticks_with_its_distance(gold_run):
    plan = gold_studies.read_plan(gold_run)
    rows = json.load(open(os.path.join(gold_run, 'reward_report.json')))['proxy_gold']['rows']
    assert [e['tick'] for e in plan] == [0, 2] and [e['kimg'] for e in plan] == [0, 0.004]
    assert [e['distance'] for e in plan] == pytest.approx([rows['distance'][0], rows['distance'][2]])
    start, end = (legacy.load_network_pkl(gold_studies.snapshot_path(gold_run, e), trust=True)['G_ema'] for e in plan)
    moved = [float((a - b).abs().max()) for a, b in zip(start.parameters(), end.parameters())]
    assert max(moved) > 0                                                    # Tick 2's G_ema, not the start's again.
    assert [r['state'] for r in gold_studies.collect(gold_run)] == ['start', 'to do']


@pytest.mark.slow
def test_stop_at_peak_with_gold_keeps_the_best_gold_ticks_generator(data, ensemble, start_pkl, tmp_path):
    run_train(reward_run(data, ensemble, start_pkl, tmp_path, '--kimg', '0.004', '--stop-at-peak'))
    run = only_run_dir(tmp_path)
    pg = json.load(open(os.path.join(run, 'reward_report.json')))['proxy_gold']
    best = max(range(len(pg['rows']['gold'])), key=lambda i: pg['rows']['gold'][i])
    assert pg['peak_snapshot'] == dict(kimg=pg['rows']['kimg'][best], path='gold-peak.pkl')
    assert legacy.load_network_pkl(os.path.join(run, 'gold-peak.pkl'), trust=True)['G_ema'] is not None


@pytest.mark.slow
def test_a_resumed_run_continues_the_curves(data, ensemble, gold_run, tmp_path):
    pkl = os.path.join(gold_run, 'network-snapshot-000000.pkl')
    assert legacy.load_network_pkl(pkl, trust=True)['reward_anchor']['panel']['curves']['kimg'] == [0, 0.002, 0.004]
    run_train(reward_run(data, ensemble, pkl, tmp_path, '--kimg', '0.006', '--reward-aggregate', 'mean-std',
        '--aggregate-lambda', '0.5'))
    first = json.load(open(os.path.join(gold_run, 'reward_report.json')))['proxy_gold']['rows']
    rows = json.load(open(os.path.join(only_run_dir(tmp_path), 'reward_report.json')))['proxy_gold']['rows']
    assert rows['kimg'] == [0, 0.002, 0.004, 0.006]
    for name in ('proxy', 'gold', 'distance', 'disagreement'):
        assert rows[name][:3] == pytest.approx(first[name]), name


@pytest.mark.slow
def test_stop_at_peak_without_gold_stops_when_the_disagreement_grows(data, ensemble, start_pkl, tmp_path):
    args = [a for a in reward_run(data, ensemble, start_pkl, tmp_path, '--kimg', '0.008', '--stop-at-peak',
        '--disagreement-stop', '1.0000001', '--lambda-r', '1000') if a not in ('--gold-taste', 'nose')]
    output = run_train(args)
    assert "the reward members' disagreement on the panel reached" in output
    report = json.load(open(os.path.join(only_run_dir(tmp_path), 'reward_report.json')))
    assert report['last_kimg'] < 0.008 and 'disagreement' in report['stopped']
