"""tools/guide.py: the flow and EG3D sweeps write their report; weight or scale 0 is the sample itself; bad flags fail."""

import json
import os
import re

import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf import cli
from eg3d_rlhf.guidance.inverted import InvertedEG3D
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from tools import guide

pytestmark = pytest.mark.usefixtures('one_thread')

REWARD = os.path.join(demo.CHECKPOINTS, 'reward-sigma-nose.safetensors')
FLOW_REWARD = os.path.join(demo.CHECKPOINTS, 'reward-sigma-flow-nose.safetensors')


def run(args):
    result = CliRunner().invoke(guide.main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    return result.output


def test_weight_zero_edits_nothing_and_a_weight_moves_the_reward():
    G = cli.load_generator(cli.network_path('bundled', True), torch.device('cpu'))
    reward = load_reward(REWARD)
    seeds = [1000, 1001]
    plain = InvertedEG3D(G, reward, reward_weight=0.0, steps=3)
    own = torch.cat([G.seed_ws([s]) for s in seeds])                           # As images() maps a seed: alone.
    assert torch.equal(plain.seed_ws(seeds), own)                               # Its own render: nothing to fit.
    assert torch.equal(plain.images(seeds), G.images(seeds))
    edited = InvertedEG3D(G, reward, reward_weight=0.1, steps=3)
    with torch.no_grad():
        before, after = (reward.score(g.field(seeds).sample_grid(reward.grid)) for g in (G, edited))
    assert (after > before).all() and edited.identity()['guidance'].startswith('reward-guided inversion, reward weight 0.1')
    assert sorted(edited.found) == seeds and edited.seed_ws(seeds) is not None                  # Inverted once, kept.
    with pytest.raises(ValueError, match='edits latents only'):
        InvertedEG3D(G, reward, tune_steps=2)


@pytest.mark.slow
def test_eg3d_sweep_writes_a_report_row_per_weight(tmp_path):
    output = run(['eg3d', '--reward-model', REWARD, '--seeds', '1000-1001', '--weights', '0,0.1', '--lrs', 0.01, '--steps', 3,
        '--res', 32, '--outdir', tmp_path / 'g'])
    assert re.search(r'weight 0: reward [+-]0\.000,', output)   # Zero up to float rounding (below).
    report = json.load(open(tmp_path / 'g' / 'report.json'))
    assert report['knob'] == 'weight' and report['settings']['inversion']['lr'] == 0.01
    rows = {r['value']: r for r in report['rows']}
    # Weight 0: the seeds themselves, up to the float rounding of mapping seeds in a batch or one at a time.
    assert set(rows) == {0.0, 0.1} and rows[0.0]['reward_mean_delta'] == pytest.approx(0, abs=1e-4)
    assert rows[0.0]['psnr_db'] is None or rows[0.0]['psnr_db'] > 60
    assert rows[0.1]['reward_mean_delta'] > 0 and rows[0.1]['psnr_db'] > 25
    for name in ('sweep.png', 'strip.png', 'report.html', 'weight-0.1/report.json'):
        assert (tmp_path / 'g' / name).is_file(), name


@pytest.mark.slow
def test_flow_sweep_writes_a_report_row_per_scale(tmp_path):
    run(['flow', '--reward-model', FLOW_REWARD, '--conditions', 0, '--seeds', '1000-1001', '--scales', '0,0.05', '--res', 32,
        '--outdir', tmp_path / 'g'])
    rows = {r['value']: r for r in json.load(open(tmp_path / 'g' / 'report.json'))['rows']}
    assert rows[0.0]['reward_mean_delta'] == 0 and rows[0.05]['reward_mean_delta'] > 0
    assert 'cfg guidance, scale 1, stage -1, t in [0, 0.5)' in json.load(open(tmp_path / 'g' / 'report.json'))['settings']['guidance']


@pytest.mark.parametrize('args, message', [
    (['flow', '--scales', 'nan'], "'nan' is not a finite number"),
    (['flow', '--scales', '0.1,-1'], '-1.0 is not in the range x>=0'),
    (['flow', '--scales', 'x'], "'x' is not a valid finite float"),
    (['flow', '--scales', '0.1,,0.2'], 'give comma-separated numbers'),
    (['flow', '--t-start', '0.6'], '0 <= t_start < t_end <= 1'),
    (['flow', '--annotator', 'oracle:chin'], "unknown annotator 'oracle:chin'"),
    (['eg3d', '--weights', 'inf'], "'inf' is not a finite number"),
    (['eg3d', '--lrs', '0,0.01'], '0.0 is not in the range x>0'),
    (['eg3d', '--lrs', '0.001,0.01', '--weights', '0,1'], 'sweep --lrs or --weights, not both'),
    (['eg3d', '--steps', '0'], "Invalid value for '--steps'"),
    (['eg3d', '--network', 'bundled-flow', '--trust-pickle'], 'is not an EG3D network pickle'),
])
def test_bad_settings_are_refused_in_one_line(tmp_path, args, message):
    reward = FLOW_REWARD if args[0] == 'flow' else REWARD
    result = CliRunner().invoke(guide.main, args + ['--reward-model', reward, '--seeds', '1000', '--outdir', str(tmp_path / 'g')])
    assert result.exit_code in (1, 2) and message in result.output and 'Traceback' not in result.output, result.output
    assert not (tmp_path / 'g').exists()


def test_dry_runs_describe_the_sweep(tmp_path):
    assert 'with cfg guidance at scales 0.02, 0.05, 0.1' in run(['flow', '--reward-model', FLOW_REWARD, '--outdir',
        tmp_path / 'g', '--dry-run'])
    assert '(10 w steps, reward weight 1) at lr 0.002, 0.005, 0.01' in run(['eg3d', '--reward-model', REWARD, '--outdir',
        tmp_path / 'g', '--dry-run'])
    assert '(10 w steps, lr 0.003) at weight 0, 0.5' in run(['eg3d', '--reward-model', REWARD, '--lrs', 0.003, '--weights',
        '0,0.5', '--outdir', tmp_path / 'g', '--dry-run'])
    assert not (tmp_path / 'g').exists()
