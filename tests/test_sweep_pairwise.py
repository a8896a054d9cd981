"""tools/sweep_pairwise.py: one train.py run per (pair construction, tau), and one table of panel change per minute."""

import csv
import json
import os
import subprocess

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from eg3d_rlhf.finetune import pair_sweep
from eg3d_rlhf.finetune.config import PAIR_CONSTRUCTIONS
from eg3d_rlhf.finetune.options import RunError
from tests.helpers.train import TINY_NETS
from tools import sweep_pairwise

#----------------------------------------------------------------------------

def sweep(*args):
    return CliRunner().invoke(sweep_pairwise.main, list(args))


def error_lines(result):
    return [line for line in result.output.splitlines() if line.startswith('Error')]


def test_dry_run_lists_the_grid_and_runs_nothing(tmp_path):
    result = sweep('--outdir', str(tmp_path / 'out'), '--dry-run')
    assert result.exit_code == 0, result.output
    names = [line.split(':')[0].strip() for line in result.stdout.splitlines()[1:]]
    assert names == [f'{c}-tau{t:g}-seed0' for c in ('offsets', 'truncation', 'latents') for t in (0, 0.01, 0.05, 0.1, 0.3)]
    assert result.stdout.startswith('15 runs into') and result.stderr.startswith('Warning: training seeds 0 and')
    assert '--tau=0.05 --pair-construction=truncation --seed=0' in result.output
    assert not (tmp_path / 'out').exists()
    result = sweep('--outdir', str(tmp_path / 'out'), '--constructions', 'latents', '--taus', '0.1,0', '--seeds', '0,1',
        '--dry-run', '--', '--kimg=0.2')
    assert result.stdout.startswith('4 runs into') and result.output.count('--kimg=0.2') == 4


@pytest.mark.parametrize('args, message', [
    (['--constructions', 'offsets,noise'], "unknown pair construction 'noise'"),
    (['--taus', '0.1,x'], '--taus=0.1,x: expected comma-separated float values'),
    (['--taus', '-0.1'], 'tau -0.1: expected a finite number >= 0'),
    (['--taus', 'nan'], 'tau nan: expected a finite number >= 0'),
    (['--seeds', '-1'], '--train-seeds=-1: cannot parse'),
    (['--baseline', 'offsets:0.2'], '--baseline=offsets:0.2: not a cell of the grid'),
    (['--baseline', 'offsets'], 'expected CONSTRUCTION:TAU'),
    (['--eval-seeds', '5000-5009', '--', '--panel-seeds=1-2'], '--panel-seeds=1-2 after --: the sweep sets'),
    (['--taus', ''], 'the grid is empty'),
    (['--', '--tau=0.2'], '--tau=0.2 after --: the sweep sets'),
])
def test_bad_grids_are_refused_in_one_line(tmp_path, args, message):
    result = sweep('--outdir', str(tmp_path / 'out'), *args, '--dry-run')
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and message in error_lines(result)[0]
    assert 'Traceback' not in result.output and not (tmp_path / 'out').exists()


def test_a_non_empty_outdir_needs_force(tmp_path):
    (tmp_path / 'notes.txt').write_text('keep me')
    result = sweep('--outdir', str(tmp_path), '--dry-run')
    assert result.exit_code == 2 and 'is not empty' in error_lines(result)[0]
    assert sweep('--outdir', str(tmp_path), '--dry-run', '--force').exit_code == 0
    assert (tmp_path / 'notes.txt').read_text() == 'keep me'


def test_damaged_reports_and_tables_are_refused_in_one_line(tmp_path):
    run = tmp_path / 'runs' / 'offsets-tau0-seed0' / '00000-demo'
    run.mkdir(parents=True)
    (run / 'reward_report.json').write_text('{"mean_delta": NaN, "rose": 1, "seeds": 3}')
    with pytest.raises(RunError, match='mean_delta, rose and seeds must be finite numbers'):
        pair_sweep.read_change(str(run.parent))
    (run / 'reward_report.json').write_text('[1, 2')
    with pytest.raises(RunError, match='reward_report.json: cannot be read .*not JSON'):
        pair_sweep.read_change(str(run.parent))
    with pytest.raises(RunError, match='no run folder'):
        pair_sweep.read_change(str(tmp_path / 'runs' / 'elsewhere'))
    assert pair_sweep.run_facts(str(run)) == dict(pushed=None, diversity_ratio=None, alarm=None)   # Informative only.
    (run / 'stats.jsonl').write_text('{"Reward/pairs_pushed": {"num": 3, "mean": 1.0}}\n{"Reward/pairs_pushed": '
        '{"num": 1, "mean": 0.0}}\n')
    (run / 'reward_report.json').write_text('{"alarm": null, "collateral": {"diversity": {"ratio": 0.97}}}')
    assert pair_sweep.run_facts(str(run)) == dict(pushed=0.75, diversity_ratio=0.97, alarm=False)
    (run / 'stats.jsonl').write_text('{"Reward/pairs_pushed": {"num": 3, "mean": 1.0}}\n[1, 2')
    assert pair_sweep.run_facts(str(run))['pushed'] is None
    (tmp_path / 'sweep.json').write_text(json.dumps(dict(rows=[dict(construction='offsets', tau=0.1)])))
    with pytest.raises(RunError, match="its rows are not a pairwise sweep's table"):
        pair_sweep.earlier_rows(str(tmp_path))

def test_rows_of_an_earlier_table_are_kept_and_given_the_newer_columns(tmp_path):
    run = tmp_path / 'runs' / 'offsets-tau0.1-seed0' / '00000-demo'
    run.mkdir(parents=True)
    (run / 'stats.jsonl').write_text('{"Reward/pairs_pushed": {"num": 2, "mean": 0.5}}\n')
    old = dict(construction='offsets', tau=0.1, seed=0, panel_change=0.2, rose=150, seeds=200, wall_s=300.0, cpu_s=240.0,
        change_per_min=0.04, change_per_cpu_min=0.05, run='runs/offsets-tau0.1-seed0')
    (tmp_path / 'sweep.json').write_text(json.dumps(dict(rows=[old])))
    logged = []
    rows = pair_sweep.sweep(pair_sweep.grid(['offsets'], [0.1]), str(tmp_path), extra=['--data=unused'], log=logged.append)
    assert rows == [dict(old, pushed=0.5, diversity_ratio=None, alarm=None)]
    assert logged == ['[1/1] offsets-tau0.1-seed0: in the table already, kept']
    assert json.loads((tmp_path / 'sweep.json').read_text())['rows'] == rows and (tmp_path / 'sweep.png').is_file()


#----------------------------------------------------------------------------
# Two tiny cells (the `data`, `rewards` and `start_pkl` fixtures: tests/conftest.py), each train.py in a child process.

@pytest.mark.slow
def test_a_tiny_sweep_writes_the_table_and_resumes_without_running_again(data, rewards, start_pkl, tmp_path):
    out = tmp_path / 'sweep'
    tiny = ['--cfg', 'synthetic', '--data', data, '--gpus', '1', '--batch', '2', '--batch-gpu', '2', '--mbstd-group', '2',
        '--gamma', '1', '--device', 'cpu', '--workers', '0', '--snap', '1', '--kimg', '0.002', '--tick', '0.002',
        '--resume', start_pkl, '--trust-pickle', '--reward-model', rewards['sigma'], '--panel-seeds', '3-5',
        '--collateral-seeds', '0', *TINY_NETS]
    args = ['--outdir', str(out), '--constructions', 'truncation,latents', '--taus', '0.05', '--', *tiny]
    result = sweep(*args)
    assert result.exit_code == 0, result.output
    table = json.loads((out / 'sweep.json').read_text())
    rows = table['rows']
    assert [(r['construction'], r['tau'], r['seed']) for r in rows] == [('truncation', 0.05, 0), ('latents', 0.05, 0)]
    for row in rows:
        run = out / row['run']
        (folder,) = os.listdir(run)
        report = json.loads((run / folder / 'reward_report.json').read_text())
        assert row['panel_change'] == report['mean_delta'] and row['seeds'] == report['seeds'] == 3
        options = json.loads((run / folder / 'training_options.json').read_text())['loss_kwargs']['reward_kwargs']
        assert (options['pair_construction'], options['tau'], options['reward_loss']) == (row['construction'], 0.05, 'pairwise')
        assert row['wall_s'] > 0 and row['cpu_s'] > 0
        assert 0 <= row['pushed'] <= 1 and row['diversity_ratio'] is None and row['alarm'] is None   # No collateral seeds.
        assert row['change_per_min'] == pytest.approx(row['panel_change'] / (row['wall_s'] / 60), rel=0.05, abs=1e-9)
        assert row['change_per_cpu_min'] == pytest.approx(row['panel_change'] / (row['cpu_s'] / 60), rel=0.05, abs=1e-9)
    markdown = (out / 'sweep.md').read_text().splitlines()
    assert markdown[0].startswith('| construction | tau | seed | panel_change |') and len(markdown) == 4
    assert markdown[2].startswith(f'| truncation | 0.05 | 0 | {rows[0]["panel_change"]:+.3f} |')
    with PIL.Image.open(out / 'sweep.png') as im:
        assert im.size[0] > 300
    again = sweep('--force', *args)                                 # Both cells are in the table: nothing runs again.
    assert again.exit_code == 0 and again.output.count('in the table already, kept') == 2
    assert all(len(os.listdir(out / r['run'])) == 1 for r in rows)
    assert json.loads((out / 'sweep.json').read_text())['rows'] == rows

#----------------------------------------------------------------------------
# Replication over training seeds on fake runs: subprocess.run replaced by one that writes what train.py's panel
# writes (reward_report.json, reward_trajectories.csv) into the cell's run folder; each panel seed's change is drawn
# from the cell's construction, tau and seed.

PANEL = list(range(5000, 5040))


def fake_train(monkeypatch, shift):
    """shift(construction, tau, seed) -> the mean change of the cell's panel seeds."""
    def run(cmd, **kwargs):
        flag = lambda name: next(a.split('=', 1)[1] for a in cmd if a.startswith(f'--{name}='))
        construction, tau, seed = flag('pair-construction'), float(flag('tau')), int(flag('seed'))
        assert flag('panel-seeds') == f'{PANEL[0]}-{PANEL[-1]}'
        noise = np.random.default_rng([seed, PAIR_CONSTRUCTIONS.index(construction)]).normal(0, 0.05, len(PANEL))
        changes = shift(construction, tau, seed) + noise
        run_dir = os.path.join(flag('outdir'), '00000-demo')
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, 'reward_trajectories.csv'), 'w', newline='') as f:
            rows = csv.writer(f, lineterminator='\n')
            rows.writerow(['kimg', *[f'seed{p:06d}' for p in PANEL]])
            rows.writerows([['0', *np.zeros(len(PANEL))], ['0.2', *changes / 2], ['0.4', *changes]])
        with open(os.path.join(run_dir, 'reward_report.json'), 'w') as f:
            json.dump(dict(mean_delta=float(changes.mean()), rose=int((changes > 0).sum()), seeds=len(PANEL)), f)
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(pair_sweep.subprocess, 'run', run)


def test_cells_are_compared_with_the_baseline_across_training_seeds(monkeypatch, tmp_path):
    fake_train(monkeypatch, lambda c, t, s: 0.5 if (c, s) == ('latents', 103) else 0.0)     # One lucky seed.
    out = tmp_path / 'sweep'
    result = sweep('--outdir', str(out), '--constructions', 'offsets,latents', '--taus', '0.1', '--train-seeds',
        '100-103', '--eval-seeds', f'{PANEL[0]}-{PANEL[-1]}', '--', '--data=unused')
    assert result.exit_code == 0, result.output
    assert 'dev seeds' not in result.output
    table = json.loads((out / 'sweep.json').read_text())
    assert table['baseline'] == ['offsets', 0.1]
    first = table['rows'][0]
    assert first['panel']['seeds'] == PANEL and np.mean(first['panel']['changes']) == pytest.approx(first['panel_change'])
    (c,) = table['replication']['contrasts']
    assert c['contrast'] == 'latents tau 0.1 vs offsets tau 0.1' and c['kind'] == 'difference'
    rows = {(r['construction'], r['seed']): r for r in table['rows']}
    for s in c['seeds']:                                # Each seed: the mean of the paired panel differences.
        mine, theirs = (np.array(rows[k, s['seed']]['panel']['changes']) for k in ('latents', 'offsets'))
        assert s['effect'] == pytest.approx(np.mean(mine - theirs)) and s['ids'] == s['clusters'] == len(PANEL)
    assert c['seeds'][-1]['ci95'][0] > 0.4                                   # The lucky seed, far above ...
    assert c['across']['holm_p'] > 0.05                                      # ... is no result across seeds.
    assert c['result'].endswith('no difference shown across seeds (alpha 0.05); 4 seeds away from +0 cannot give a '
        'Wilcoxon p under 0.12, so no number of them agreeing could show a difference: run at least 6')
    assert f'- {c["result"]}' in result.output and (out / c['forest']).is_file()
    assert '| latents tau 0.1 vs offsets tau 0.1 | 4 |' in (out / 'sweep.md').read_text()


def test_train_seeds_eval_seeds_and_dev_seeds_in_the_plan(tmp_path):
    result = sweep('--outdir', str(tmp_path / 'out'), '--constructions', 'latents', '--taus', '0.1,0.3', '--seeds',
        '0-1', '--baseline', 'latents:0.3', '--dry-run')
    assert result.exit_code == 0, result.output
    assert 'Warning: training seeds 0-1 and evaluation ids 2000-2199 are dev seeds' in result.output
    assert 'every cell against latents tau 0.3, paired on panel seeds 2000-2199' in result.output
    assert result.output.count('--seed=1 ') == 2 and '--panel-seeds' not in result.output
    result = sweep('--outdir', str(tmp_path / 'out'), '--taus', '0.1', '--train-seeds', '100-101', '--eval-seeds',
        '5000-5009', '--dry-run')
    assert result.output.count('--panel-seeds=5000-5009') == 6 and 'dev seeds' not in result.output


def test_a_damaged_panel_table_is_refused_in_one_line(tmp_path):
    run = tmp_path / 'runs' / 'offsets-tau0-seed0' / '00000-demo'
    run.mkdir(parents=True)
    with pytest.raises(RunError, match=r'reward_trajectories.csv: cannot be read \(No such file'):
        pair_sweep.read_panel(str(run.parent))
    for text in ('kimg,seed000001\n0,1.0\n1,nan\n', 'kimg,seed000001\n0,1.0\n1\n', 'kimg,seedX\n0,1\n', 'x\n', '\xff'):
        (run / 'reward_trajectories.csv').write_text(text, encoding='latin-1')
        with pytest.raises(RunError, match="reward_trajectories.csv: not a panel's reward trajectories"):
            pair_sweep.read_panel(str(run.parent))
    (run / 'reward_trajectories.csv').write_text('kimg,seed000001,seed000002\n0,1.0,2.0\n0.4,1.5,1.0\n')
    assert pair_sweep.read_panel(str(run.parent)) == dict(seeds=[1, 2], changes=[0.5, -1.0])

#----------------------------------------------------------------------------
