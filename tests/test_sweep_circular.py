"""tools/sweep_circular.py: one Circular-DPO run per value of a setting, and one table of every run's groups."""

import json
import os

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from eg3d_rlhf.analysis import collateral
from eg3d_rlhf.finetune import circular_run
from eg3d_rlhf.finetune.circular_config import GROUPS
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.generators.base import sample_id
from tests.helpers.replication import fake_measures
from tools import sweep_circular
from tests.helpers.flow import save_tiny

pytestmark = pytest.mark.usefixtures('one_thread')
TINY = flow_heads.PRESETS['tiny']
SMALL = ['--set', 'dpo_steps=2', '--set', 'dpo_batch=2', '--set', 'bridge_seeds=0-1', '--set', 'eval_seeds=1000-1001',
    '--set', 'draw_batch=2', '--set', 'w1_tau=-1', '--set', 'annotator=oracle:nose']


@pytest.fixture
def tiny_pt(tmp_path):
    return save_tiny(tmp_path / 'tiny.pt')


def test_bad_settings_are_refused_in_one_line_and_a_dry_run_writes_nothing(tiny_pt, tmp_path):
    run = lambda *args: CliRunner().invoke(sweep_circular.main, [*args, '--outdir', str(tmp_path / 'out'), '--dry-run'])
    for args, message in ((['--sweep', 'betta=1,2'], 'NAME one of'), (['--sweep', 'beta=x'], '--detail-beta takes float values'),
            (['--sweep', 'beta=-1'], '--detail-beta=-1.0: must be at least 0'),
            (['--sweep', 'beta=1', '--set', 'beta=2'], 'not both'), (['--ablation', 'a,x'], 'give all, or variants'),
            (['--seeds', '1,1'], 'give each seed once'), (['--set', 'bf16=maybe'], '--bf16 takes true/false values'), (['--seeds', '1-x'], '--train-seeds=1-x: cannot parse')):
        result = run(*args)
        assert result.exit_code == 2 and message in result.output.strip().splitlines()[-1], result.output
    result = run('--sweep', 'dpo_lr=1e-4,2e-4', '--resume', tiny_pt, *SMALL)
    assert result.exit_code == 0 and result.output.count('Dry run; exiting.') == 2, result.output
    result = run('--seeds', '0-2', '--ablation', 'a,d', '--resume', tiny_pt, *SMALL)      # A group list, and the placebo.
    assert result.exit_code == 0 and result.output.count('Dry run; exiting.') == 3, result.output
    assert result.output.count('"ablation": "a,d,k"') == 3 and all(f'"seed": {s},' in result.output for s in range(3))
    result = run('--sweep', 'mirror_pairs=no,TRUE', '--resume', tiny_pt, *SMALL)      # A flag's words, not bool('false').
    assert result.output.count('"mirror_pairs": false') == result.output.count('"mirror_pairs": true') == 1, result.output
    assert not os.path.exists(tmp_path / 'out')


def run_sweep(tiny_pt, tmp_path, *args):
    result = CliRunner().invoke(sweep_circular.main, [*args, '--resume', tiny_pt, '--outdir', str(tmp_path / 'out'),
        '--device', 'cpu', *SMALL])
    assert result.exit_code == 0, result.output[-3000:]


@pytest.mark.slow
def test_settings_and_variants_take_their_new_names_and_the_old_ones():
    assert sweep_circular.parse_setting('detail_lr=1e-4,2e-4', many=True) == ('dpo_lr', [1e-4, 2e-4])
    assert sweep_circular.parse_setting('--detail-beta=5', many=False) == ('beta', 5.0)
    assert sweep_circular.parse_setting('beta=5', many=False) == ('beta', 5.0)


def test_a_sweep_runs_each_value_and_writes_one_table(tiny_pt, tmp_path):
    run_sweep(tiny_pt, tmp_path, '--sweep', 'beta=100,1000')
    sweep_dir = tmp_path / 'out' / '00000-circular-dpo-sweep-beta'
    assert sorted(os.listdir(sweep_dir)) == ['00000-flow-circular-dpo-a-demo-beta-100.0',
        '00001-flow-circular-dpo-a-demo-beta-1000.0', 'sweep.json', 'sweep.md']
    table = json.load(open(sweep_dir / 'sweep.json'))
    assert [(r['beta'], r['group']) for r in table['rows']] == [(100.0, 'a'), (1000.0, 'a')]
    for r, run in zip(table['rows'], sorted(os.listdir(sweep_dir))[:2]):           # Each row is its run's evaluation.
        evals = [json.loads(line) for line in open(sweep_dir / run / 'stats.jsonl') if '"eval"' in line]
        assert evals[-1]['reward_mean_delta'] == r['reward_mean_delta']
    lines = (sweep_dir / 'sweep.md').read_text().splitlines()
    assert lines[0].startswith('| --beta | group |') and len(lines) == 4 and lines[2].startswith('| 100.0 | a |')


@pytest.mark.slow
def test_seeds_run_every_value_once_per_seed_and_count_the_clean_runs(tiny_pt, tmp_path):
    run_sweep(tiny_pt, tmp_path, '--seeds', '3,5')
    sweep_dir = tmp_path / 'out' / '00000-circular-dpo-sweep-seeds'
    runs = sorted(d for d in os.listdir(sweep_dir) if os.path.isdir(sweep_dir / d))
    assert runs == ['00000-flow-circular-dpo-a-demo-seed-3', '00001-flow-circular-dpo-a-demo-seed-5']
    table = json.load(open(sweep_dir / 'sweep.json'))
    assert table['seeds'] == [3, 5] and table['trained'] == 'nose' and table['sweep'] is None
    for row, run in zip(table['rows'], runs):
        assert json.load(open(sweep_dir / run / 'options.json'))['seed'] == row['seed']
        clean, short = collateral.clears_bar(row, 'nose')
        assert row['bar'] == dict(clean=clean, short=short)
    (robust,) = table['robustness']
    assert robust['group'] == 'a' and robust['clean'] == f'{sum(r["bar"]["clean"] for r in table["rows"])} of 2'
    lines = (sweep_dir / 'sweep.md').read_text().splitlines()
    assert lines[0].startswith('| seed | group |') and lines[0].endswith('| clean (bar) |')
    assert lines[2].startswith('| 3 | a |') and lines[3].startswith('| 5 | a |')
    assert lines[5].startswith('| group | seeds clean | nose share (min-max) |') and lines[7].startswith('| a | ')


def test_the_bar_of_a_clean_result():
    def row(nose, smooth, symmetric, dents=0):
        entry = lambda share: dict(share=share)
        return dict(collateral=dict(nose=entry(nose), smooth=entry(smooth), symmetric=entry(symmetric)),
            dents_deeper=dents, dents_samples=64)
    assert collateral.clears_bar(row(0.75, 0.45, 0.9), 'nose') == (True, [])
    assert collateral.clears_bar(row(0.74, 0.45, 0.9), 'nose') == (False, ['nose 74% < 75%'])
    assert collateral.clears_bar(row(0.9, 0.44, 0.9, dents=3), 'nose') == (False, ['smooth 44% < 45%'])
    assert collateral.clears_bar(row(0.9, 0.5, float('nan'), dents=4), 'nose') == (False, ['symmetric nan% < 45%',
        'dents 4/64 > 5%'])
    assert collateral.clears_bar(row(0.9, 0.5, 0.5), 'smooth') == (False, ['smooth 50% < 75%'])
    assert collateral.clears_bar(row(0.9, 0.5, 0.5), 'size')[1] == ['size not measured']
    assert collateral.clears_bar(dict(row(0.9, 0.5, 0.5), dents_deeper=None), 'nose')[0]


#----------------------------------------------------------------------------
# Replication over training seeds, on fake runs: circular_run.run replaced by one that writes each group's
# eval-<group>/measures.json as compare() does (8 conditions of every held-out seed) and returns the summary align()
# would, its versus_a from those files (circular_run.versus_a). (a)'s trained taste (proportions) beats group g's on
# wins[g][training seed] of the ids and loses on the rest.

def fake_runs(monkeypatch, tmp_path, wins):
    """The (cfg, common) of every run circular_run.run was asked for."""
    asked = []
    def run(cfg, common):
        asked.append((cfg, common))
        if common.dry_run:
            return None
        run_dir, rng = tmp_path / f'run-{len(asked)}', np.random.default_rng(common.seed)
        ids = [sample_id(s, c) for s in cfg.seeds('eval_seeds') for c in range(8)]
        base, mine = fake_measures(rng, len(ids)), rng.normal(size=len(ids))
        for group in cfg.groups:
            beaten = np.zeros(len(ids), dtype=bool)
            beaten[rng.permutation(len(ids))[:wins[group][common.seed]] if group != 'a' else []] = True
            theirs = mine if group == 'a' else np.where(beaten, mine - 1, mine + 1)
            tuned = fake_measures(rng, len(ids), proportions=theirs)
            (run_dir / f'eval-{group}').mkdir(parents=True)
            (run_dir / f'eval-{group}' / 'measures.json').write_text(json.dumps(dict(ids=ids, original=base, tuned=tuned)))
        cost = collateral.row_entries(dict(alarm=None, collateral=collateral.compare(base, tuned, 'proportions')))
        rows = {g: dict(group=g, description=GROUPS[g], reward_mean_delta=0.1, seconds=1.0, **cost) for g in cfg.groups}
        versus = circular_run.versus_a(str(run_dir), cfg.groups, 'proportions')
        return dict(groups=rows, versus_a=circular_run.versus_summary(versus, 'proportions'))
    monkeypatch.setattr(circular_run, 'run', run)
    return asked


def sweep(tmp_path, *args):
    return CliRunner().invoke(sweep_circular.main, [*args, '--outdir', str(tmp_path / 'out'), '--device', 'cpu'])


def test_a_lucky_seed_is_no_result_across_training_seeds(monkeypatch, tmp_path):
    lucky = dict(zip(range(100, 108), [122, 133, 125, 131, 124, 135, 128, 250]))   # (a) vs (d): one seed 250 of 256.
    steady = dict(zip(range(100, 108), [150, 160, 145, 170, 155, 149, 165, 158]))  # (a) vs (k): every seed above half.
    asked = fake_runs(monkeypatch, tmp_path, dict(d=lucky, k=steady))
    result = sweep(tmp_path, '--train-seeds', '100-107', '--eval-seeds', '5000-5031', '--ablation', 'a,d')
    assert result.exit_code == 0, result.output[-3000:]
    assert [cfg.groups for cfg, _ in asked] == [['a', 'd', 'k']] * 8                # The placebo joins the ablation.
    assert {cfg.eval_seeds for cfg, _ in asked} == {'5000-5031'} and [c.seed for _, c in asked] == list(range(100, 108))
    assert 'dev seeds' not in result.output
    sweep_dir = tmp_path / 'out' / '00000-circular-dpo-sweep-seeds'
    table = json.loads((sweep_dir / 'sweep.json').read_text())['replication']
    luck, placebo = table['contrasts']
    assert (luck['contrast'], placebo['contrast']) == ('(a) vs (d)', '(a) vs (k)')
    assert [s['wins'] for s in luck['seeds']] == list(lucky.values()) and luck['seeds'][0]['clusters'] == 32
    wins, losses = (sum(s[k] for s in luck['seeds']) for k in ('wins', 'losses'))
    assert scipy.stats.binomtest(wins, wins + losses).pvalue < 1e-6 and luck['seeds'][-1]['pair_sign_p'] < 1e-6
    assert luck['across']['holm_p'] > 0.05 and luck['result'].endswith('no difference shown across seeds (alpha 0.05)')
    assert placebo['across']['holm_p'] < 0.05 and placebo['result'].endswith('first side better across seeds (alpha 0.05)')
    for c in (luck, placebo):                                       # What the tool states is the across-seed result.
        assert f'- {c["result"]}' in result.output and f'- {c["result"]}' in (sweep_dir / 'sweep.md').read_text()
        assert (sweep_dir / c['forest']).is_file()
    assert json.loads((sweep_dir / 'replication.json').read_text()) == table


def test_train_seeds_eval_seeds_and_the_placebo_reach_every_run(monkeypatch, tmp_path):
    asked = fake_runs(monkeypatch, tmp_path, {})
    result = sweep(tmp_path, '--seeds', '0-1', '--ablation', 'a,d', '--dry-run')          # --seeds: --train-seeds.
    assert result.exit_code == 0 and [c.seed for _, c in asked] == [0, 1] and asked[0][0].groups == ['a', 'd', 'k']
    assert 'Warning: training seeds 0-1 and evaluation ids 1000-1007 are dev seeds' in result.output
    assert 'Across the 2 training seeds: (a) vs (d), (a) vs (k), judged by proportions' in result.output
    for args, groups in ((['--no-placebo'], ['a', 'd']), (['--ablation', 'a'], ['a']), (['--ablation', 'c,d'], ['c', 'd'])):
        asked.clear()
        assert sweep(tmp_path, '--train-seeds', '100', '--ablation', 'a,d', *args, '--dry-run').exit_code == 0
        assert asked[0][0].groups == groups
    result = sweep(tmp_path, '--eval-seeds', '5000-5001', '--set', 'eval_seeds=1-2', '--dry-run')
    assert result.exit_code == 2 and 'give the held-out seeds once' in result.output
    assert not os.path.exists(tmp_path / 'out')


@pytest.mark.slow
def test_resume_sweep_reads_finished_runs_back_resumes_the_unfinished_and_runs_the_missing(tiny_pt, tmp_path):
    run_sweep(tiny_pt, tmp_path, '--seeds', '3,5', '--set', 'snap_steps=1')
    sweep_dir = tmp_path / 'out' / '00000-circular-dpo-sweep-seeds'
    first = json.loads((sweep_dir / 'sweep.json').read_text())
    runs = sorted(d for d in os.listdir(sweep_dir) if os.path.isdir(sweep_dir / d))
    os.remove(sweep_dir / runs[1] / 'report.json')                   # Seed 5 stopped after its last state was written.
    result = CliRunner().invoke(sweep_circular.main, ['--seeds', '3,5,7', '--set', 'snap_steps=1', '--resume',
        tiny_pt, '--resume-sweep', str(sweep_dir), '--device', 'cpu', *SMALL])
    assert result.exit_code == 0, result.output[-3000:]
    assert f'Seed 3: finished in {sweep_dir / runs[0]}' in result.output and f'Resuming {sweep_dir / runs[1]}' in result.output
    now = sorted(d for d in os.listdir(sweep_dir) if os.path.isdir(sweep_dir / d))
    assert now == runs + ['00002-flow-circular-dpo-a-demo-seed-7']     # Only the missing seed got a new folder.
    table = json.loads((sweep_dir / 'sweep.json').read_text())
    assert [r['seed'] for r in table['rows']] == [3, 5, 7]
    assert [r['reward_mean_delta'] for r in table['rows'][:2]] == [r['reward_mean_delta'] for r in first['rows']]
    result = CliRunner().invoke(sweep_circular.main, ['--seeds', '3', '--set', 'beta=123', '--resume', tiny_pt,
        '--resume-sweep', str(sweep_dir), '--device', 'cpu', *SMALL])        # Other options: a run of its own.
    assert result.exit_code == 0 and 'finished in' not in result.output, result.output[-3000:]
    assert len([d for d in os.listdir(sweep_dir) if os.path.isdir(sweep_dir / d)]) == 4
    (sweep_dir / runs[0] / 'report.json').write_text('[1, 2]')
    result = CliRunner().invoke(sweep_circular.main, ['--seeds', '3', '--set', 'snap_steps=1', '--resume', tiny_pt,
        '--resume-sweep', str(sweep_dir), '--device', 'cpu', *SMALL])
    assert result.exit_code == 1 and 'report.json: not a Circular-DPO report' in result.stderr
