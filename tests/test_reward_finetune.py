"""train.py's reward fine-tuning: every reward flag, the embedded demo's defaults, and a short run with its panel."""

import csv
import dataclasses
import json
import os
import typing

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import train
from eg3d_rlhf.analysis import collateral
from eg3d_rlhf.data import annotators
from eg3d_rlhf.finetune import gan_run
from eg3d_rlhf.finetune import panel
from eg3d_rlhf.finetune.config import RewardFinetuneConfig
from eg3d_rlhf.finetune.options import ConfigError, flag_name
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.rewards.checkpoint import save_reward
from eg3d_rlhf.synthetic import demo
from tests.helpers.eg3d import tiny_generator
from tests.helpers.evaluate import before_after_halves
from tests.helpers.rewards import slab_description, tiny_ensemble
from tests.helpers.train import TRAIN_ARGS, base_args, config_of, lookup, only_run_dir, run_train
from training import legacy
from training.camera_utils import orbit_camera_label

#----------------------------------------------------------------------------
# Command lines (the `data`, `rewards` and `start_pkl` fixtures: tests/conftest.py).

def reward_args(data, rewards, *extra, outdir='unused'):
    return base_args(data, outdir, '--resume', 'snap.pkl', '--trust-pickle', '--reward', 'sigma', '--reward-model',
        rewards['sigma'], *extra)

#----------------------------------------------------------------------------
# Every reward flag reaches the options; bad values fail with a clear message.

def test_reward_defaults(data, rewards):
    c = config_of(reward_args(data, rewards))
    rk = c.loss_kwargs.reward_kwargs
    defaults = RewardFinetuneConfig()                                           # The one place defaults live.
    assert rk.pop('class_name') == 'eg3d_rlhf.finetune.RewardPhase'
    assert rk.pop('total_kimg') == c.total_kimg                                 # Where a scheduled lambda_r ends.
    assert rk == dict(defaults.phase_options(), reward='sigma', reward_model=os.path.abspath(rewards['sigma']))
    assert (rk['lambda_r'], rk['lambda_sigma'], rk['lambda_image'], rk['sigma_box_points']) == (10.0, 0.01, 0.0, 0)
    assert (rk['reward_loss'], rk['tau'], rk['reward_batch'], rk['reward_recompute']) == ('clip', None, None, False)
    assert defaults.tau_value == 0.1
    assert c.reward_interval == defaults.reward_every == 1
    assert c.panel_kwargs == dict(class_name='eg3d_rlhf.finetune.panel.RewardPanel',
        reward_model_path=os.path.abspath(rewards['sigma']), seeds='2000-2199', truncation_psi=0.7, collateral_seeds=64,
        collateral_res=128, stop_on_hacking=False, aggregate_kind='mean', aggregate_lambda=1.0, gold_taste=None,
        stop_at_peak=False, peak_margin=0.2, disagreement_stop=2.0, peak_noise=2.0, peak_patience=1,
        gold_study_every=0)
    assert 'reward_kwargs' not in config_of(base_args(data)).loss_kwargs
    assert 'panel_kwargs' not in config_of(base_args(data)) and 'reward_interval' not in config_of(base_args(data))


def test_reward_options_build_the_phase_and_panel_they_name(data, rewards, start_pkl, tmp_path):
    # training/ builds both by class name: the names must resolve and take the options as written.
    c = config_of(reward_args(data, rewards, '--reward-loss', 'pairwise', '--tau', '0.2', '--reward-batch', '2'))
    G = legacy.load_network_pkl(start_pkl, trust=True)['G']
    phase = dnnlib.util.construct_class_by_name(G=G, G_ref=None, **c.loss_kwargs.reward_kwargs)
    assert phase.pairwise.tau == 0.2 and phase.batch == 2 and phase.lambda_r == 10.0
    panel = dnnlib.util.construct_class_by_name(run_dir=str(tmp_path), device='cpu', **c.panel_kwargs)
    assert len(panel.seeds) == 200


REWARD_FLAGS = [
    (['--lambda-r', '3'],                           'loss_kwargs.reward_kwargs.lambda_r',           3.0),
    (['--lambda-r-schedule', 'cosine', '--lambda-r-end', '1'], 'loss_kwargs.reward_kwargs.lambda_r_schedule', 'cosine'),
    (['--lambda-r-schedule', 'linear', '--lambda-r-start', '0'], 'loss_kwargs.reward_kwargs.lambda_r_start', 0.0),
    (['--lambda-r-schedule', 'linear', '--lambda-r-end', '20'], 'loss_kwargs.reward_kwargs.lambda_r_end',  20.0),
    (['--lambda-sigma', '0.5'],                     'loss_kwargs.reward_kwargs.lambda_sigma',       0.5),
    (['--lambda-image', '2'],                       'loss_kwargs.reward_kwargs.lambda_image',       2.0),
    (['--sigma-box-points', '64'],                  'loss_kwargs.reward_kwargs.sigma_box_points',   64),
    (['--reward-every', '4'],                       'reward_interval',                              4),
    (['--reward-batch', '3'],                       'loss_kwargs.reward_kwargs.reward_batch',       3),
    (['--reward-step', 'gan'],                      'loss_kwargs.reward_kwargs.reward_step',        'gan'),
    (['--reward-step', 'gan'],                      'reward_interval',                              None),  # No Greward phase.
    (['--reward-loss', 'standardised'],             'loss_kwargs.reward_kwargs.reward_loss',        'standardised'),
    (['--reward-loss', 'pairwise', '--tau', '0.7'], 'loss_kwargs.reward_kwargs.tau',                0.7),
    (['--reward-recompute'],                        'loss_kwargs.reward_kwargs.reward_recompute',   True),
    (['--panel-seeds', '5,7-9'],                    'panel_kwargs.seeds',                           '5,7-9'),
    (['--panel-seeds', 'none'],                     'panel_kwargs',                                 None),
    (['--panel-psi', '1'],                          'panel_kwargs.truncation_psi',                  1.0),
    (['--sigma-grid', '16'],                        'loss_kwargs.reward_kwargs.sigma_grid',         16),
    (['--sigma-psi', '0.7'],                        'loss_kwargs.reward_kwargs.sigma_psi',          0.7),
    (['--sigma-psi', '0.7', '--sigma-cutoff', '14'], 'loss_kwargs.reward_kwargs.sigma_cutoff',      14),
    (['--sigma-reduce', 'sum'],                     'loss_kwargs.reward_kwargs.sigma_reduce',       'sum'),
    (['--reward-psi', '0.5'],                       'loss_kwargs.reward_kwargs.reward_psi',         0.5),
    (['--reward-cutoff', '14'],                     'loss_kwargs.reward_kwargs.reward_cutoff',      14),
    (['--reward-optimizer', 'own'],                 'reward_opt_kwargs.lr',                         0.0025),
    (['--reward-loss', 'pairwise', '--pair-loss', 'ipo'], 'loss_kwargs.reward_kwargs.pair_loss',    'ipo'),
    (['--reward-loss', 'pairwise', '--pair-beta', '5'], 'loss_kwargs.reward_kwargs.pair_beta',      5.0),
    (['--reward-loss', 'pairwise', '--pair-smoothing', '0.1'], 'loss_kwargs.reward_kwargs.pair_smoothing', 0.1),
    (['--reward-loss', 'pairwise', '--pair-construction', 'offsets'], 'loss_kwargs.reward_kwargs.pair_construction', 'offsets'),
    (['--reward-loss', 'pairwise', '--pair-construction', 'truncation', '--pair-psi-step', '0.3'],
        'loss_kwargs.reward_kwargs.pair_psi_step', 0.3),
    (['--collateral-seeds', '16'],                  'panel_kwargs.collateral_seeds',                16),
    (['--collateral-res', '64'],                    'panel_kwargs.collateral_res',                  64),
    (['--stop-on-hacking'],                         'panel_kwargs.stop_on_hacking',                 True),
    (['--reward-model', '{sigma3}', '--reward-aggregate', 'uwo'], 'loss_kwargs.reward_kwargs.reward_aggregate', 'uwo'),
    (['--reward-model', '{sigma3}', '--reward-aggregate', 'uwo', '--aggregate-lambda', '0.5'],
        'panel_kwargs.aggregate_lambda', 0.5),
    (['--gold-taste', 'nose'],                      'panel_kwargs.gold_taste',                      'nose'),
    (['--stop-at-peak'],                            'panel_kwargs.stop_at_peak',                    True),
    (['--stop-at-peak', '--peak-margin', '0.3'],    'panel_kwargs.peak_margin',                     0.3),
    (['--stop-at-peak', '--disagreement-stop', '3'], 'panel_kwargs.disagreement_stop',              3.0),
    (['--stop-at-peak', '--peak-noise', '1.5'],     'panel_kwargs.peak_noise',                      1.5),
    (['--stop-at-peak', '--peak-patience', '2'],    'panel_kwargs.peak_patience',                   2),
    (['--gold-study-every', '2'],                   'panel_kwargs.gold_study_every',                2),
]


@pytest.fixture(scope='module')
def rewards(rewards, tmp_path_factory):
    """conftest's rewards, and sigma3: a three-member ensemble on the same slab (for --reward-aggregate)."""
    path = str(tmp_path_factory.mktemp('ensemble') / 'sigma3.pt')
    save_reward(path, tiny_ensemble(seed=5), 'sigma', slab_description())
    return dict(rewards, sigma3=path)


def test_every_reward_flag_has_a_case():
    # A new field of RewardFinetuneConfig that is a flag must reach the training options (add it to REWARD_FLAGS).
    tested = {x for a, _, _ in REWARD_FLAGS for x in a if x.startswith('--')} | {'--reward', '--reward-model'}  # Two: below.
    assert {flag_name(f.name) for f in RewardFinetuneConfig.flags()} == tested

@pytest.mark.parametrize('extra, path, expected', REWARD_FLAGS, ids=[' '.join(a) for a, _, _ in REWARD_FLAGS])
def test_reward_flag_reaches_training_options(data, rewards, extra, path, expected):
    assert lookup(config_of(reward_args(data, rewards)), path) != expected
    assert lookup(config_of(reward_args(data, rewards, *[e.format(**rewards) for e in extra])), path) == expected


def test_reward_kind_picks_its_model(data, rewards):
    args = base_args(data, 'unused', '--resume', 'snap.pkl', '--trust-pickle', '--reward', 'pointcloud', '--reward-model',
        rewards['pointcloud'])
    assert config_of(args).loss_kwargs.reward_kwargs.reward_model == os.path.abspath(rewards['pointcloud'])


@pytest.mark.parametrize('extra, message', [
    (['--reward', 'none', '--lambda-r', '0'], '--lambda-r needs --reward'),
    (['--reward', 'none', '--tau', '1'], '--tau needs --reward'),
    (['--reward', 'none', '--reward-recompute'], '--reward-recompute needs --reward'),
    (['--tau', '0.5'], 'does not use it'),
    (['--lambda-r', '-1'], '--lambda-r'),
    (['--lambda-r-start', '0'], '--lambda-r-start is for --lambda-r-schedule=linear or cosine'),
    (['--lambda-r-end', '5'], '--lambda-r-end is for --lambda-r-schedule=linear or cosine'),
    (['--lambda-r-schedule', 'linear'], 'give at least one'),
    (['--lambda-r-schedule', 'step'], "'step' is not one of"),
    (['--reward', 'none', '--lambda-r-schedule', 'cosine'], '--lambda-r-schedule needs --reward'),
    (['--lambda-sigma', '-0.1'], '--lambda-sigma'),
    (['--lambda-image', '-2'], '--lambda-image'),
    (['--sigma-box-points', '-1'], '--sigma-box-points'),
    (['--reward', 'none', '--sigma-box-points', '5'], '--sigma-box-points needs --reward'),
    (['--reward-every', '0'], '--reward-every'),
    (['--reward-batch', '0'], '--reward-batch'),
    (['--reward-step', 'gan', '--reward-every', '2'], '--reward-every needs --reward-step=phase'),
    (['--reward-step', 'gan', '--reward-psi', '0.7'], '--reward-psi needs --reward-step=phase'),
    (['--reward-step', 'gan', '--reward-optimizer', 'own'], '--reward-optimizer=own needs --reward-step=phase'),
    (['--reward-step', 'gan', '--sigma-psi', '0.7'], '--sigma-psi needs --reward-step=phase'),
    (['--reward-loss', 'hinge'], '--reward-loss'),
    (['--pair-loss', 'ipo'], '--pair-loss is for --reward-loss=pairwise'),
    (['--reward-loss', 'pairwise', '--pair-loss', 'nope'], "'nope' is not one of"),
    (['--reward-loss', 'pairwise', '--pair-smoothing', '0.5'], '--pair-smoothing=0.5: must be below 0.5'),
    (['--pair-construction', 'offsets'], '--pair-construction is for --reward-loss=pairwise'),
    (['--reward-loss', 'pairwise', '--pair-construction', 'steps'], "'steps' is not one of"),
    (['--reward-loss', 'pairwise', '--pair-psi-step', '0.1'], '--pair-psi-step is for --pair-construction=truncation'),
    (['--reward-loss', 'pairwise', '--pair-construction', 'truncation', '--pair-psi-step', '0'], '--pair-psi-step=0.0: must be above 0'),
    (['--reward-loss', 'pairwise', '--pair-construction', 'truncation', '--reward-psi', '0.5', '--pair-psi-step', '0.6'],
        '--pair-psi-step=0.6 is above --reward-psi=0.5'),
    (['--reward', 'mesh'], '--reward'),
    (['--panel-seeds', '9-2'], '--panel-seeds'),
    (['--reward-model', '/nonexistent/reward.pt'], 'no such reward checkpoint'),
    (['--reward', 'depth'], 'is a sigma reward, but --reward=depth'),
    (['--stop-on-hacking', '--collateral-seeds', '0'], "--stop-on-hacking watches the panel's collateral seeds"),
    (['--stop-on-hacking', '--panel-seeds', 'none'], "--stop-on-hacking watches the panel's collateral seeds"),
    (['--collateral-res', '8'], '--collateral-res'),
    (['--aggregate-lambda', '2'], '--aggregate-lambda weighs the spread of mean-std and uwo'),
    (['--reward-aggregate', 'min'], "--reward-aggregate: {sigma}: the reward aggregate 'min' needs an ensemble"),
    (['--gold-taste', 'beauty'], "'beauty' is not one of"),
    (['--gold-taste', 'nose', '--panel-seeds', 'none'], '--gold-taste watches the panel: give --panel-seeds'),
    (['--peak-margin', '0.3'], '--peak-margin is for --stop-at-peak'),
    (['--gold-study-every', '2', '--panel-seeds', 'none'], '--gold-study-every watches the panel: give --panel-seeds'),
    (['--stop-at-peak', '--disagreement-stop', '1'], '--disagreement-stop'),
])
def test_bad_reward_options_fail_with_a_clear_message(data, rewards, tmp_path, extra, message):
    args = reward_args(data, rewards, outdir=tmp_path)
    if extra[:2] == ['--reward', 'none']:                   # No reward: drop --reward-model too.
        args = base_args(data, tmp_path, '--resume', 'snap.pkl', '--trust-pickle')
    result = CliRunner().invoke(train.main, args + extra + ['--dry-run'])   # A repeated option: the last one wins.
    assert result.exit_code != 0
    assert message.format(**rewards) in result.output
    assert not any(tmp_path.iterdir())


NUMERIC_FLAGS = [f for f in RewardFinetuneConfig.flags() if f.type in (int, float, typing.Optional[int], typing.Optional[float])]

@pytest.mark.parametrize('field', NUMERIC_FLAGS, ids=[flag_name(f.name) for f in NUMERIC_FLAGS])
def test_non_finite_and_out_of_range_reward_values_are_refused_in_one_line(data, rewards, tmp_path, field):
    # Every numeric flag of the config, so a new one is covered without a new case here.
    flag, low = flag_name(field.name), field.metadata['min']
    needs = ['--reward-loss', 'pairwise'] if field.name == 'tau' else []           # --tau is pairwise's alone.
    for value in ['nan', 'inf', '-inf', *([] if low is None else [str(low - 1)])]:
        args = reward_args(data, rewards, *needs, outdir=tmp_path) + [flag, value, '--dry-run']
        result = CliRunner().invoke(train.main, args)
        assert result.exit_code in (1, 2) and isinstance(result.exception, SystemExit), (value, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith('Error')]
        assert len(errors) == 1 and flag in errors[0], (value, result.output)
        assert 'Traceback' not in result.output
    assert not any(tmp_path.iterdir())


def test_config_refuses_non_finite_and_out_of_range_values_of_every_numeric_field():
    for f in dataclasses.fields(RewardFinetuneConfig):
        if f.type not in (int, float, typing.Optional[int], typing.Optional[float]):
            continue
        bad = [float('nan'), float('inf'), float('-inf')] if f.type in (float, typing.Optional[float]) else [1.5, 'x']
        bad += [] if f.metadata['min'] is None else [f.metadata['min'] - 1]
        extra = dict(reward_loss='pairwise') if f.name == 'tau' or f.name.startswith('pair_') else \
            dict(sigma_psi=0.7) if f.name == 'sigma_cutoff' else \
            dict(lambda_r_schedule='linear') if f.name.startswith('lambda_r_') else \
            dict(reward_aggregate='uwo') if f.name == 'aggregate_lambda' else \
            dict(stop_at_peak=True) if f.name in ('peak_margin', 'disagreement_stop', 'peak_noise', 'peak_patience') \
            else {}
        for value in bad:
            with pytest.raises(ConfigError, match=flag_name(f.name) if f.metadata['flag'] else f'^{f.name}='):
                RewardFinetuneConfig(reward='sigma', **extra, **{f.name: value})
        RewardFinetuneConfig(reward='sigma', **extra, **({f.name: f.metadata['min']} if f.metadata['min'] is not None else {}))


def test_reward_needs_a_generator_to_start_from(data, rewards):
    args = base_args(data, 'unused', '--reward', 'sigma', '--reward-model', rewards['sigma'])
    result = CliRunner().invoke(train.main, args + ['--dry-run'])
    assert result.exit_code != 0 and 'pass --resume' in result.output

#----------------------------------------------------------------------------
# The embedded demo.

def test_demo_fills_in_what_is_not_given(rewards, tmp_path, monkeypatch):
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path / 'cache'))
    ctx = train.main.make_context('train.py', ['--reward', 'sigma', '--lambda-r', '10', '--reward-model', rewards['sigma'],
        '--kimg', '0.2', '--dry-run'])
    c, desc, outdir = gan_run.make_config(ctx.params, train.explicit_options(ctx))
    ctx = train.main.make_context('train.py', ['--reward', 'sigma', '--outdir', 'elsewhere', '--reward-model', rewards['sigma'], '--dry-run'])
    assert gan_run.make_config(ctx.params, train.explicit_options(ctx))[2] == 'elsewhere'
    assert outdir == demo.OPTIONS['outdir'] and c.batch_size == demo.OPTIONS['batch'] and c.num_gpus == 1
    assert c.total_kimg == 0.2                                                  # Given on the command line: kept.
    assert c.kimg_per_tick == demo.OPTIONS['tick'] and c.G_opt_kwargs.lr == demo.OPTIONS['glr']
    assert c.resume_pkl == demo.GENERATOR and c.trust_resume_pkl
    assert c.training_set_kwargs.path == demo.dataset_path() and c.training_set_kwargs.max_size == demo.DATASET['count']
    assert c.training_set_kwargs.path.startswith(str(tmp_path / 'cache'))
    assert c.loss_kwargs.reward_kwargs.lambda_r == 10 and desc.endswith('sigma-lambdar10-reward-demo')
    assert c.loss_kwargs.d_fakes == demo.OPTIONS['d_fakes'] == 'reuse'
    assert not (tmp_path / 'cache').exists()                                  # A dry run renders no dataset.


def test_demo_reward_overrides_are_config_fields_checked_by_the_config(tmp_path, monkeypatch):
    fields = {f.name: f for f in dataclasses.fields(RewardFinetuneConfig)}
    assert set(demo.OPTIONS) <= {p.name for p in train.main.params}                 # Every override is a train.py flag.
    overrides = {k: v for k, v in demo.OPTIONS.items() if k in fields}
    assert overrides and all(fields[k].metadata['flag'] for k in overrides)
    assert all(v != fields[k].default for k, v in overrides.items())                # None restates a config default.
    RewardFinetuneConfig(reward='sigma', **overrides)
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path))
    monkeypatch.setitem(demo.OPTIONS, 'lambda_sigma', float('nan'))
    ctx = train.main.make_context('train.py', ['--reward', 'sigma', '--dry-run'])
    with pytest.raises(ConfigError, match='--lambda-sigma=nan'):
        gan_run.make_config(ctx.params, train.explicit_options(ctx))


def test_demo_default_reward_model_is_the_bundled_one(tmp_path, monkeypatch):
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path))
    for kind in ('sigma', 'depth', 'pointcloud'):
        if not os.path.isfile(demo.reward_model(kind)):
            pytest.fail(f'the bundled reward model {demo.reward_model(kind)} is missing')
        ctx = train.main.make_context('train.py', ['--reward', kind, '--dry-run'])
        c = gan_run.make_config(ctx.params, train.explicit_options(ctx))[0]
        assert c.loss_kwargs.reward_kwargs.reward_model == demo.reward_model(kind)


def test_demo_needs_all_or_none_of_the_required_options(data, rewards):
    result = CliRunner().invoke(train.main, ['--reward', 'sigma', '--reward-model', rewards['sigma'], '--data', data, '--dry-run'])
    assert result.exit_code != 0 and "Missing option '--outdir'" in result.output and 'bundled demo' in result.output
    result = CliRunner().invoke(train.main, ['--dry-run'])
    assert result.exit_code != 0 and "Missing option '--outdir'" in result.output
    result = CliRunner().invoke(train.main, ['--outdir', 'o', '--cfg', 'synthetic', '--dry-run'])
    assert result.exit_code != 0 and "Missing option '--data'" in result.output


def test_demo_dataset_is_rendered_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('EG3D_RLHF_CACHE', str(tmp_path))
    monkeypatch.setitem(demo.DATASET, 'count', 3)
    monkeypatch.setitem(demo.DATASET, 'resolution', 16)
    path = demo.ensure_dataset(log=lambda *a: None)
    assert path == demo.dataset_path() and os.path.isfile(path)
    stamp = os.stat(path).st_mtime_ns
    assert demo.ensure_dataset(log=lambda *a: None) == path and os.stat(path).st_mtime_ns == stamp

#----------------------------------------------------------------------------
# A short fine-tuning run: the reward phase trains, the panel writes its evidence, the snapshot loads.

@pytest.mark.slow
def test_reward_run_writes_panel_evidence_and_a_loadable_snapshot(data, rewards, start_pkl, tmp_path):
    args = base_args(data, tmp_path, *TRAIN_ARGS, '--kimg', '0.004', '--tick', '0.002', '--resume', start_pkl, '--trust-pickle',
        '--reward', 'sigma', '--reward-model', rewards['sigma'], '--reward-batch', '3', '--lambda-image', '0.1', '--sigma-box-points', '16',
        '--panel-seeds', '3-5')
    output = run_train(args)
    run_dir = only_run_dir(tmp_path)
    assert 'panel of 3 seeds: mean reward' in output                            # RewardPanel.record's line, every tick.
    assert 'seeds rose, mean change' in output and 'see reward_report.html' in output    # RewardPanel.finish's line.
    assert f'Last snapshot: {os.path.join(run_dir, "network-snapshot-000000.pkl")}' in output
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        stats = [json.loads(line) for line in f]
    for key in ('Loss/G/reward', 'Reward/raw', 'Loss/G/density_consistency', 'Loss/G/image_consistency', 'Timing/Greward'):
        assert np.isfinite(stats[-1][key]['mean']), key
    with open(os.path.join(run_dir, 'reward_trajectories.csv')) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['kimg', 'seed000003', 'seed000004', 'seed000005']
    assert [float(r[0]) for r in rows[1:]] == [0, 0.002, 0.004]                # The start, then every tick.
    for name in ('reward_trajectories.png', 'reward_histograms.png', 'reward_deltas.png', 'reward_scatter.png'):
        with PIL.Image.open(os.path.join(run_dir, name)) as im:
            assert im.size[0] > 100, name
    with PIL.Image.open(os.path.join(run_dir, 'before_after.png')) as im:   # 3 seeds x (before, after) x 2 views + moved.
        assert im.size == (preview.LABEL_LEFT + 5 * panel.PREVIEW_RES,
            preview.LABEL_TOP + 3 * panel.PREVIEW_RES + collateral.BAR_HEIGHT)    # The colour bar below.
    page = open(os.path.join(run_dir, 'reward_report.html')).read()
    assert 'src="before_after.png"' in page and 'Collateral: every taste at temperature 0' in page
    report = json.load(open(os.path.join(run_dir, 'reward_report.json')))
    # The collateral seeds (the first 64 panel seeds: all 3 here) measured at the start and the end.
    assert report['collateral_seeds'] == 3 and report['collateral_kimg'] == [0, 0.004]
    assert set(report['collateral']['tastes']) == set(annotators.TASTES) and 'alarm' in report
    assert 'collateral (tuned preferred, temperature 0): nose ' in output and 'nose prominence: ' in output
    first, last = np.array(rows[1][1:], dtype=float), np.array(rows[-1][1:], dtype=float)
    assert report['seeds'] == 3 and report['mean_delta'] == pytest.approx((last - first).mean(), rel=1e-4, abs=1e-6)
    options = json.load(open(os.path.join(run_dir, 'training_options.json')))
    assert options['loss_kwargs']['reward_kwargs']['reward_batch'] == 3 and options['panel_kwargs']['seeds'] == '3-5'
    snap = legacy.load_network_pkl(os.path.join(run_dir, 'network-snapshot-000000.pkl'), trust=True)
    assert set(snap) == {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', 'progress', 'reward_anchor',
        'resume_state'}
    assert type(snap['G_ema']).__name__ == 'TriPlaneGenerator'
    G = snap['G_ema']                                                           # EG3D's call: G(z, c) -> images.
    out = G(torch.zeros([1, G.z_dim]), orbit_camera_label(G.rendering_kwargs))
    assert out['image'].shape == (1, 3, 64, 64) and torch.isfinite(out['image']).all()


@pytest.mark.slow
def test_the_panel_skips_tick_0_and_a_gold_taste_on_it_leaves_the_weights_the_same(data, rewards, start_pkl, tmp_path):
    # EG3D's loop ends tick 0 after one step; with ticks of two steps its record would sit next to the start's.
    # Online rounds pass --gold-taste whenever the gold is known; a run with it must train exactly as one without.
    snaps, reports = {}, {}
    for gold in ((), ('--gold-taste', 'nose')):
        outdir = tmp_path / ('gold' if gold else 'plain')
        output = run_train(base_args(data, outdir, *TRAIN_ARGS, '--kimg', '0.006', '--tick', '0.004', '--resume',
            start_pkl, '--trust-pickle', '--reward', 'sigma', '--reward-model', rewards['sigma'], '--panel-seeds', '3-5',
            '--collateral-seeds', '0', *gold))
        with open(os.path.join(only_run_dir(outdir), 'reward_trajectories.csv')) as f:
            kimg = [float(row[0]) for row in list(csv.reader(f))[1:]]
        assert kimg == [0, 0.006]                               # The start, then tick 1 (steps 2 and 3, the end).
        assert output.count('panel of 3 seeds: ') == 2 and 'tick 0 ' in output and 'tick 1 ' in output
        snaps[bool(gold)] = legacy.load_network_pkl(os.path.join(only_run_dir(outdir), 'network-snapshot-000000.pkl'),
            trust=True)
        reports[bool(gold)] = json.load(open(os.path.join(only_run_dir(outdir), 'reward_report.json')))['proxy_gold']
    for name in ('G', 'G_ema', 'D'):
        a, b = (snaps[g][name].state_dict() for g in (False, True))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert reports[False]['rows']['gold'] == [None, None] and 'gold_gain' not in reports[False]
    assert all(np.isfinite(reports[True]['rows']['gold'])) and reports[True]['gold_taste'] == 'nose'
    assert reports[True]['proxy_gain'] == reports[False]['proxy_gain']

#----------------------------------------------------------------------------

def test_the_panel_report_shows_the_starting_and_the_final_g_ema(rewards, tmp_path, monkeypatch):
    monkeypatch.setattr(panel, 'PREVIEW_RES', 48)
    G = tiny_generator().eval()
    with torch.no_grad():
        G.decoder.net[-1].bias[0] += 10                                 # Sigma straddles the previews' level 10.
    panels = {name: panel.RewardPanel(str(tmp_path / name), rewards['sigma'], '3-8', collateral_seeds=0)
        for name in ('same', 'tuned')}
    for name, p in panels.items():
        (tmp_path / name).mkdir()
        p.record(G, 0)
    panels['same'].record(G, 0.002)
    panels['same'].finish()
    with torch.no_grad():
        G.decoder.net[-1].bias[0] += 0.2                                        # Training changes G_ema in place.
    panels['tuned'].record(G, 0.002)
    panels['tuned'].finish()
    res = panel.PREVIEW_RES
    same = before_after_halves(tmp_path / 'same' / 'before_after.png', rows=4, res=res)     # 4 of the 6 seeds.
    tuned = before_after_halves(tmp_path / 'tuned' / 'before_after.png', rows=4, res=res)
    np.testing.assert_array_equal(*same)
    np.testing.assert_array_equal(tuned[0], same[0])                            # Before: G_ema as the run started.
    for row in range(4):
        assert not np.array_equal(tuned[0][row * res:(row + 1) * res], tuned[1][row * res:(row + 1) * res]), row
    assert 'src="before_after.png"' in (tmp_path / 'tuned' / 'reward_report.html').read_text()

#----------------------------------------------------------------------------
