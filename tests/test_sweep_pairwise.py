"""tools/sweep_pairwise.py: one train.py run per (pair construction, tau), and one table of panel change per minute."""

import json
import os

import PIL.Image
import pytest
from click.testing import CliRunner

from eg3d_rlhf.finetune import pair_sweep
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
    names = [line.split(':')[0].strip() for line in result.output.splitlines()[1:]]
    assert names == [f'{c}-tau{t:g}-seed0' for c in ('offsets', 'truncation', 'latents') for t in (0, 0.01, 0.05, 0.1, 0.3)]
    assert result.output.startswith('15 runs into')
    assert '--tau=0.05 --pair-construction=truncation --seed=0' in result.output
    assert not (tmp_path / 'out').exists()
    result = sweep('--outdir', str(tmp_path / 'out'), '--constructions', 'latents', '--taus', '0.1,0', '--seeds', '0,1',
        '--dry-run', '--', '--kimg=0.2')
    assert result.output.startswith('4 runs into') and result.output.count('--kimg=0.2') == 4


@pytest.mark.parametrize('args, message', [
    (['--constructions', 'offsets,noise'], "unknown pair construction 'noise'"),
    (['--taus', '0.1,x'], '--taus=0.1,x: expected comma-separated float values'),
    (['--taus', '-0.1'], 'tau -0.1: expected a finite number >= 0'),
    (['--taus', 'nan'], 'tau nan: expected a finite number >= 0'),
    (['--seeds', '-1'], 'seeds are whole numbers >= 0'),
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
