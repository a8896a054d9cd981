"""Runs that continue: snapshots keep kimg and a reward run's anchor, resume checks the architecture and refuses a
damaged snapshot, a run whose rewards turn non-finite stops keeping what it saved, and stale temporaries are cleaned."""

import csv
import json
import math
import os
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import train
from eg3d_rlhf.finetune import reward_phase
from tests.helpers.cli import refused_in_one_line
from tests.helpers.train import TRAIN_ARGS, base_args, only_run_dir, run_train
from training import legacy

pytestmark = pytest.mark.usefixtures('one_thread')


def reward_run(data, rewards, start, outdir, *extra):
    return base_args(data, outdir, *TRAIN_ARGS, '--tick', '0.002', '--resume', start, '--trust-pickle', '--reward', 'sigma',
        '--reward-model', rewards['sigma'], '--reward-batch', '2', '--panel-seeds', '3-5', *extra)


def trajectory(run_dir):
    with open(os.path.join(run_dir, 'reward_trajectories.csv')) as f:
        rows = list(csv.reader(f))[1:]
    return [float(r[0]) for r in rows], np.array([r[1:] for r in rows], dtype=float)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def one_line_error(result, message):
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output[-2000:]
    errors = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(errors) == 1 and message in errors[0] and 'Traceback' not in result.output, result.output[-2000:]
    return errors[0]

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def first_run(data, rewards, start_pkl, tmp_path_factory):
    """A reward run of two ticks (0.002 and 0.004 kimg after the start); returns its run directory."""
    outdir, threads = tmp_path_factory.mktemp('first'), torch.get_num_threads()
    torch.set_num_threads(1)                        # As the tests that compare with it run: the same float sums.
    try:
        run_train(reward_run(data, rewards, start_pkl, outdir, '--kimg', '0.004'))
    finally:
        torch.set_num_threads(threads)
    return only_run_dir(outdir)


@pytest.mark.slow
def test_a_snapshot_records_its_kimg_and_the_reward_runs_anchor(first_run, start_pkl):
    snap = legacy.load_network_pkl(os.path.join(first_run, 'network-snapshot-000000.pkl'), trust=True)
    assert snap['progress'] == dict(kimg=0.004, tick=1)
    start = legacy.load_network_pkl(start_pkl, trust=True)
    assert same_weights(snap['reward_anchor']['G_start'], start['G_ema'])       # The generator the run began from,
    assert not same_weights(snap['G_ema'], start['G_ema'])                      # not the tuned one.
    kimg, rewards = trajectory(first_run)
    state = snap['reward_anchor']['panel']
    assert state['seeds'] == [3, 4, 5] and state['kimg'] == kimg == [0, 0.002, 0.004]
    np.testing.assert_allclose(state['rewards'], rewards, rtol=1e-5)


@pytest.mark.slow
def test_a_resumed_reward_run_measures_change_from_the_first_runs_start(data, rewards, first_run, tmp_path):
    pkl = os.path.join(first_run, 'network-snapshot-000000.pkl')
    output = run_train(reward_run(data, rewards, pkl, tmp_path, '--kimg', '0.008'))
    assert 'panel: continuing 3 ticks from 0 kimg to 0.004 kimg' in output
    run_dir = only_run_dir(tmp_path)
    assert json.load(open(os.path.join(run_dir, 'training_options.json')))['resume_kimg'] == 0.004     # The snapshot's.
    kimg, rewards_now = trajectory(run_dir)
    kimg_then, rewards_then = trajectory(first_run)
    assert kimg == [0, 0.002, 0.004, 0.006, 0.008]                         # The first run's ticks, then this run's.
    np.testing.assert_allclose(rewards_now[:3], rewards_then, rtol=1e-5)
    report = json.load(open(os.path.join(run_dir, 'reward_report.json')))
    assert (report['first_kimg'], report['last_kimg']) == (0, 0.008)
    assert report['mean_delta'] == pytest.approx((rewards_now[-1] - rewards_then[0]).mean(), rel=1e-4, abs=1e-6)
    snap = legacy.load_network_pkl(os.path.join(run_dir, 'network-snapshot-000000.pkl'), trust=True)
    first = legacy.load_network_pkl(pkl, trust=True)
    assert snap['progress']['kimg'] == 0.008
    assert same_weights(snap['reward_anchor']['G_start'], first['reward_anchor']['G_start'])  # Kept through resumes.


@pytest.mark.slow
def test_a_resumed_run_continues_exactly_where_an_uninterrupted_one_goes(data, rewards, start_pkl, first_run, tmp_path):
    # Optimizer states, random state, data order and tick count travel in the snapshot: on a CPU the second half of a
    # run resumed from its snapshot takes the very steps the uninterrupted run takes.
    run_train(reward_run(data, rewards, os.path.join(first_run, 'network-snapshot-000000.pkl'), tmp_path / 'resumed',
        '--kimg', '0.008'))
    run_train(reward_run(data, rewards, start_pkl, tmp_path / 'straight', '--kimg', '0.008'))
    resumed, straight = (only_run_dir(tmp_path / name) for name in ('resumed', 'straight'))
    assert trajectory(resumed)[0] == trajectory(straight)[0] == [0, 0.002, 0.004, 0.006, 0.008]
    np.testing.assert_array_equal(trajectory(resumed)[1], trajectory(straight)[1])
    a, b = (legacy.load_network_pkl(os.path.join(d, 'network-snapshot-000000.pkl'), trust=True) for d in (resumed, straight))
    for name in ('G', 'D', 'G_ema'):
        assert same_weights(a[name], b[name]), name


@pytest.mark.slow
@pytest.mark.parametrize('extra, message', [
    (['--map-depth', '3'], 'its G does not match the options (backbone.mapping.fc2.weight is missing'),
    (['--panel-seeds', '3-6'], 'its panel scored other seeds: pass --panel-seeds=3-5'),
    (['--reward-model', '{other}'], 'its panel was scored with another reward model'),
])
def test_resume_refuses_a_snapshot_that_does_not_fit_in_one_line(data, rewards, first_run, tmp_path, extra, message):
    other = tmp_path / 'other.pt'
    other.write_bytes(open(rewards['sigma'], 'rb').read() + b'\0')             # Loads the same; another file.
    pkl = os.path.join(first_run, 'network-snapshot-000000.pkl')
    args = reward_run(data, rewards, pkl, tmp_path / 'runs', '--kimg', '0.008') + [e.format(other=other) for e in extra]
    one_line_error(CliRunner().invoke(train.main, args), message)
    assert not (tmp_path / 'runs').exists()

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_non_finite_rewards_stop_the_run_keeping_the_last_good_snapshot_and_report(data, rewards, start_pkl, tmp_path,
        monkeypatch):
    calls, scored = [0], reward_phase.RewardTerm.rewards

    def diverging(self, field):
        calls[0] += 1
        r = scored(self, field)
        return r * float('nan') if calls[0] >= 2 else r                     # The second step's rewards are nan.
    monkeypatch.setattr(reward_phase.RewardTerm, 'rewards', diverging)
    result = CliRunner().invoke(train.main, reward_run(data, rewards, start_pkl, tmp_path, '--kimg', '0.008'))
    run_dir = only_run_dir(tmp_path)
    snapshot = os.path.join(run_dir, 'network-snapshot-000000.pkl')
    line = one_line_error(result, 'training stopped at 0.002 kimg: the reward of 2 of 2 samples is not finite')
    assert line.endswith(f'the last good snapshot is {snapshot}')
    snap = legacy.load_network_pkl(snapshot, trust=True)
    assert snap['progress']['kimg'] == 0.002
    assert all(torch.isfinite(p).all() for p in snap['G'].parameters())
    assert trajectory(run_dir)[0] == [0, 0.002]
    report = json.load(open(os.path.join(run_dir, 'reward_report.json')))
    assert report['last_kimg'] == 0.002 and 'not finite' in report['stopped']
    assert os.path.isfile(os.path.join(run_dir, 'before_after.png'))


def test_snapshots_are_refused_from_non_finite_weights():
    from training.training_loop import check_finite_weights
    net = torch.nn.Linear(2, 2)
    check_finite_weights(G=net)
    with torch.no_grad():
        net.bias[1] = float('inf')
    with pytest.raises(FloatingPointError, match='G_ema has non-finite weights'):
        check_finite_weights(G=torch.nn.Linear(2, 2), G_ema=net)

#----------------------------------------------------------------------------

def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    names = [f'.tmp-{dead_pid}-x1.pkl', f'.tmp-{os.getpid()}-x2.pkl', '.tmp-notapid.pkl', 'network-snapshot-000000.pkl']
    for name in names:
        (tmp_path / name).write_bytes(b'half a snapshot')
    assert dnnlib.util.remove_stale_temporaries(str(tmp_path)) == [names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    assert dnnlib.util.remove_stale_temporaries(str(tmp_path / 'absent')) == []


def test_atomic_write_names_its_temporary_after_its_process(tmp_path):
    with dnnlib.util.atomic_write(str(tmp_path / 'a.pkl')) as f:
        (name,) = [p.name for p in tmp_path.iterdir()]
        assert name.startswith(f'.tmp-{os.getpid()}-') and name.endswith('.pkl')
        f.write(b'x')
    assert [p.name for p in tmp_path.iterdir()] == ['a.pkl']

#----------------------------------------------------------------------------
# Resume snapshots: progress and resume state of the right types and finite, or refused at --dry-run.

@pytest.mark.parametrize('field, value, message', [
    ('progress.kimg', math.nan, 'progress.kimg is nan; expected a finite number >= 0'),
    ('progress.kimg', '4', "progress.kimg is '4'; expected a finite number >= 0"),
    ('progress.tick', 1.5, 'progress.tick is 1.5; expected an integer >= 0'),
    ('progress', [4], 'progress is a list; expected a dict'),
    ('resume_state.kimg', math.inf, 'resume_state.kimg is inf; expected a finite number >= 0'),
    ('resume_state.batch_idx', -1, 'resume_state.batch_idx is -1; expected an integer >= 0'),
    ('resume_state.optimizers', None, 'resume_state.optimizers is None; expected a dict'),
])
def test_a_resume_snapshot_with_a_non_finite_or_mistyped_field_is_refused(data, start_pkl, tmp_path, field, value,
        message):
    import train
    from tests.helpers.train import base_args
    from training import legacy
    snapshot = legacy.load_network_pkl(start_pkl, trust=True)
    snapshot['progress'] = dict(kimg=0.004, tick=1)
    snapshot['resume_state'] = dict(kimg=0.004, tick=1, batch_idx=2, optimizers={}, loss={}, random={})
    where, _, key = field.partition('.')
    if key:
        snapshot[where][key] = value
    else:
        snapshot[where] = value
    pkl = tmp_path / 'snapshot.pkl'
    legacy.save_network_pkl(str(pkl), snapshot)
    result = CliRunner().invoke(train.main, base_args(data, tmp_path / 'runs', '--resume', str(pkl), '--trust-pickle',
        '--kimg', '0.008', '--dry-run'))
    refused_in_one_line(result, f'--resume: {pkl}: {message}')    # Before: accepted.
    assert not (tmp_path / 'runs').exists()

#----------------------------------------------------------------------------
# Resume snapshots (train.py --resume): damaged pickles, entries that are no networks, weights that are not finite.

def resume(data, tmp_path, snapshot_bytes):
    pkl = tmp_path / 'snapshot.pkl'
    pkl.write_bytes(snapshot_bytes)
    result = CliRunner().invoke(train.main, base_args(data, tmp_path / 'runs', '--resume', str(pkl), '--trust-pickle',
        '--kimg', '0.008', '--dry-run'))
    assert not (tmp_path / 'runs').exists()
    return result, pkl


def test_a_snapshot_entry_that_is_not_a_network_is_refused(data, start_pkl, tmp_path):
    snapshot = legacy.load_network_pkl(start_pkl, trust=True)
    snapshot['G'] = 3
    result, pkl = resume(data, tmp_path, pickle.dumps(snapshot))
    refused_in_one_line(result, f'{pkl}": its G is a int, not a network')     # Before: AssertionError.


def test_an_exabyte_length_in_a_snapshot_pickle_is_refused(data, start_pkl, tmp_path):
    raw = open(start_pkl, 'rb').read()
    pos = next(pos for op, _, pos in pickletools.genops(raw) if op.name == 'FRAME')
    raw = raw[:pos + 1] + (1 << 60).to_bytes(8, 'little') + raw[pos + 9:]     # A frame of an exabyte.
    result, pkl = resume(data, tmp_path, raw)
    refused_in_one_line(result, f'cannot unpickle "{pkl}": MemoryError')     # Before: the MemoryError's traceback.


def test_nan_weights_in_a_resume_snapshot_are_refused(data, start_pkl, tmp_path):
    snapshot = legacy.load_network_pkl(start_pkl, trust=True)
    name, param = next(iter(snapshot['G_ema'].named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float('nan')
    result, pkl = resume(data, tmp_path, pickle.dumps(snapshot))
    refused_in_one_line(result, f'{pkl}: G_ema.{name} holds nan or inf; the snapshot is damaged')   # Before: rc 0.
