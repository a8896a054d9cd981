"""--report-to: TensorBoard event files (read back with tensorboard's EventAccumulator) and W&B offline runs of
train.py's EG3D method, train_reward and train_flow (Circular-DPO's: tests/test_circular_dpo.py's run); none writes
nothing; logging draws nothing from a run's RNG."""

import glob
import json
import os
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import train
from tests.helpers.events import events, steps
from tests.helpers.rewards import TINY
from tests.helpers.train import TRAIN_ARGS, base_args, only_run_dir, run_train
from tools import train_flow, train_reward
from torch_utils import report_to
from training import legacy

#----------------------------------------------------------------------------

def read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f]


def no_events(folder):
    return not glob.glob(os.path.join(folder, '**', 'events.out.tfevents.*'), recursive=True)

#----------------------------------------------------------------------------
# The module.

def test_default_is_tensorboard_where_installed_and_a_missing_library_fails_in_one_line(monkeypatch, capsys):
    assert report_to.resolve(None) == ('tensorboard' if report_to.installed('tensorboard') else 'none')
    assert report_to.resolve('none') == 'none'
    monkeypatch.setattr(report_to, 'installed', lambda library: False)
    with pytest.raises(report_to.ReportError) as err:
        report_to.resolve('wandb')
    assert str(err.value) == '--report-to wandb needs `pip install wandb`'
    monkeypatch.setattr(report_to, '_said_default', False)
    assert report_to.resolve(None) == 'none' and report_to.resolve(None) == 'none'
    said = capsys.readouterr().err
    assert said.count('tensorboard is not installed') == 1                  # Said once.


def test_flat_scalars_keeps_numbers_flattens_dicts_and_summarises_lists():
    record = dict(kind='bridge', step=3, loss=0.5, kept=4, ok=True, phase='last-dpo-0', w1=[0.0, 1.0, 2.0],
        collateral=dict(nose=dict(wins=3, losses=1)), empty=[])
    assert report_to.flat_scalars(record, 'bridge', skip=('kind', 'step')) == {'bridge/loss': 0.5, 'bridge/kept': 4.0,
        'bridge/w1/mean': 1.0, 'bridge/w1/min': 0.0, 'bridge/w1/max': 2.0, 'bridge/collateral/nose/wins': 3.0,
        'bridge/collateral/nose/losses': 1.0}


def test_writers_leave_every_random_state_alone(tmp_path):
    picture = np.random.RandomState(0).rand(8, 6)                               # Floats in [0, 1], one channel.
    assert report_to.picture_array(picture).shape == (8, 6, 3)
    for kind in ('tensorboard', 'none'):
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        expected = random.random(), np.random.rand(), torch.rand(1).item()
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        writer = report_to.open_writer(str(tmp_path / kind), kind)
        writer.scalars(0, {'a': 1.0})
        writer.image('p', 0, picture)
        writer.close()
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected, kind
    accumulator = events(str(tmp_path / 'tensorboard'))
    assert accumulator.Tags()['scalars'] == ['a'] and accumulator.Tags()['images'] == ['p']
    assert no_events(str(tmp_path / 'none'))

#----------------------------------------------------------------------------
# train.py's EG3D method: every stats.jsonl scalar under its name, one step per tick, the panel's pictures; the same
# run with --report-to none writes no events file and ends with the same weights.

@pytest.mark.slow
def test_eg3d_reward_run_logs_every_stat_per_tick_and_none_changes_nothing(data, rewards, start_pkl, tmp_path):
    args = [*TRAIN_ARGS, '--kimg', '0.004', '--tick', '0.002', '--resume', start_pkl, '--trust-pickle', '--reward', 'sigma',
        '--reward-model', rewards['sigma'], '--reward-batch', '3', '--sigma-box-points', '16', '--panel-seeds', '3-5',
        '--collateral-seeds', '0']
    run_train(base_args(data, tmp_path / 'tb', *args, '--report-to', 'tensorboard'))
    run_dir = only_run_dir(tmp_path / 'tb')
    stats = read_jsonl(os.path.join(run_dir, 'stats.jsonl'))
    accumulator = events(run_dir)
    names = set(stats[0]) - {'timestamp'}
    assert {'Loss/G/reward', 'Reward/raw', 'Progress/kimg', 'Timing/Greward'} <= names
    assert names <= set(accumulator.Tags()['scalars'])
    ticks = [round(s['Progress/kimg']['mean'] * 1000) for s in stats]          # Images seen at each tick.
    assert ticks == [2, 4]                                                       # --batch 2: every step a tick.
    for name in ('Loss/G/reward', 'Reward/raw', 'Progress/kimg'):
        logged = accumulator.Scalars(name)
        assert [e.step for e in logged] == ticks, name
        assert [e.value for e in logged] == pytest.approx([s[name]['mean'] for s in stats], rel=1e-6), name
    pictures = accumulator.Tags()['images']
    assert {'Panel/reward_trajectories', 'Panel/reward_histograms', 'Panel/before_after', 'Fakes/fakes'} <= set(pictures)
    assert len(accumulator.Images('Panel/reward_trajectories')) == len(ticks) + 1   # Each tick, and the end's.

    output = run_train(base_args(data, tmp_path / 'none', *args, '--report-to', 'none'))
    plain = only_run_dir(tmp_path / 'none')
    assert no_events(plain) and 'Last snapshot' in output
    assert json.load(open(os.path.join(plain, 'training_options.json')))['report_to'] == 'none'
    snap = lambda folder: legacy.load_network_pkl(os.path.join(folder, 'network-snapshot-000000.pkl'), trust=True)['G_ema']
    for (name, a), (_, b) in zip(snap(run_dir).state_dict().items(), snap(plain).state_dict().items()):
        assert torch.equal(a, b), name                                          # Logging took nothing from the RNG.


def test_report_to_is_a_flag_of_both_methods_and_wandb_without_wandb_fails_in_one_line(data, tmp_path, monkeypatch):
    for args in (['--generator=flow', '--report-to', 'none', '--outdir', str(tmp_path), '--dry-run'],
            base_args(data, tmp_path, '--report-to', 'none', '--dry-run')):
        result = CliRunner().invoke(train.main, args)
        assert result.exit_code == 0 and 'Dry run; exiting.' in result.output, result.output
    monkeypatch.setattr(report_to, 'installed', lambda library: library != 'wandb')
    for args in (['--generator=flow', '--report-to', 'wandb', '--outdir', str(tmp_path), '--dry-run'],
            base_args(data, tmp_path, '--report-to', 'wandb', '--dry-run')):
        result = CliRunner().invoke(train.main, args)
        assert result.exit_code == 1 and result.output == 'Error: --report-to wandb needs `pip install wandb`\n'
    result = CliRunner().invoke(train_flow.main, ['--outdir', str(tmp_path / 'f'), '--report-to', 'wandb', '--dry-run'])
    assert result.exit_code == 1 and result.output == 'Error: --report-to wandb needs `pip install wandb`\n'
    assert os.listdir(tmp_path) == []

#----------------------------------------------------------------------------
# train_reward: epochs as train/..., validation as eval/... (TRL's TensorBoard names) beside the checkpoint.

def test_train_reward_logs_epochs_and_validation_beside_the_checkpoint(balls, tmp_path):
    out = tmp_path / 'reward.pt'
    args = ['--device', 'cpu', '--bank', balls['bank'], '--labels', balls['labels'], '--epochs', '2', '--model-config',
        json.dumps(TINY['sigma']), '--out', str(out)]
    result = CliRunner().invoke(train_reward.main, args + ['--report-to', 'tensorboard'])
    assert result.exit_code == 0, result.output
    records = read_jsonl(tmp_path / 'reward.metrics.jsonl')
    accumulator = events(str(tmp_path / 'reward.logs'))
    epochs = [r['step'] for r in records if 'loss' in r]
    for name in ('loss', 'rewards/accuracies', 'rewards/margins', 'epoch'):
        assert steps(accumulator, f'train/{name}') == epochs, name
    assert [e.value for e in accumulator.Scalars('eval/rewards/accuracies')] == pytest.approx(
        [r['eval_rewards/accuracies'] for r in records if 'eval_loss' in r])
    assert accumulator.Tags()['images'] == ['report/curves']
    again = CliRunner().invoke(train_reward.main, args + ['--report-to', 'none'])
    assert again.exit_code == 1 and 'exists; pass --force' in again.output
    again = CliRunner().invoke(train_reward.main, args + ['--report-to', 'tensorboard'])
    assert again.exit_code == 1 and 'reward.pt exists' in again.output
    result = CliRunner().invoke(train_reward.main, args + ['--report-to', 'tensorboard', '--force'])
    assert result.exit_code == 0 and len(glob.glob(str(tmp_path / 'reward.logs' / 'events.*'))) == 1   # The old one went.
    result = CliRunner().invoke(train_reward.main, args[:-1] + [str(tmp_path / 'plain.pt'), '--report-to', 'none'])
    assert result.exit_code == 0 and not os.path.exists(tmp_path / 'plain.logs')

#----------------------------------------------------------------------------
# train_flow: its losses at every step, a resumed run's continuing in the same folder; W&B offline.

def test_train_flow_logs_its_losses_and_a_resumed_run_continues_them(tmp_path):
    common = ['--preset', 'tiny', '--batch', '2', '--snap', '2', '--device', 'cpu', '--outdir', str(tmp_path / 'a')]
    for more in (['--steps', '2', '--preview', '2'], ['--steps', '3', '--preview', '0', '--resume', str(tmp_path / 'a' / 'flow-000002.pt')]):
        result = CliRunner().invoke(train_flow.main, common + more + ['--report-to', 'tensorboard'])
        assert result.exit_code == 0, result.output
    accumulator = events(str(tmp_path / 'a'))
    stats = read_jsonl(tmp_path / 'a' / 'stats.jsonl')
    assert set(accumulator.Tags()['scalars']) == set(stats[0]) - {'step'} == {'loss/structure', 'loss/detail'}
    assert steps(accumulator, 'loss/detail') == [1, 2, 3]
    assert [e.value for e in accumulator.Scalars('loss/detail')] == pytest.approx([s['loss/detail'] for s in stats])
    assert set(accumulator.Tags()['images']) == {'losses', 'preview'}
    result = CliRunner().invoke(train_flow.main, common[:-1] + [str(tmp_path / 'b'), '--steps', '1', '--report-to', 'none'])
    assert result.exit_code == 0 and no_events(str(tmp_path / 'b'))


@pytest.mark.skipif(not report_to.installed('wandb'), reason='--report-to wandb needs `pip install wandb`')
def test_train_flow_to_wandb_offline_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv('WANDB_MODE', 'offline')
    result = CliRunner().invoke(train_flow.main, ['--preset', 'tiny', '--batch', '2', '--snap', '2', '--device', 'cpu',
        '--outdir', str(tmp_path), '--steps', '2', '--preview', '1', '--report-to', 'wandb'])
    assert result.exit_code == 0, result.output
    runs = glob.glob(str(tmp_path / 'wandb' / 'offline-run-*' / 'run-*.wandb'))
    assert len(runs) == 1 and no_events(str(tmp_path))
    written = open(runs[0], 'rb').read()
    assert b'loss/structure' in written and b'loss/detail' in written and b'preview' in written
    assert glob.glob(str(tmp_path / 'wandb' / 'offline-run-*' / 'files' / 'media' / 'images' / 'preview_2_*.png'))

#----------------------------------------------------------------------------
