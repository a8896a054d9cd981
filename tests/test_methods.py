"""The method registry and train.py's dispatch over it: choosing a method, foreign flags, YAML run files."""

import copy
import json
import os

import pytest
import torch
from click.testing import CliRunner

import dnnlib
import train
from eg3d_rlhf.finetune import config as reward_config
from eg3d_rlhf.finetune import gan_run, methods, options
from eg3d_rlhf.finetune.circular_config import CircularDPOConfig
from eg3d_rlhf.rewards import checkpoint
from eg3d_rlhf.synthetic import demo
from training import legacy


def invoke(args, expect=0):
    result = CliRunner().invoke(train.main, list(args))
    assert result.exit_code == expect, result.output[-2000:]
    return result


def printed_options(output):
    """The JSON options a dry run prints first (EG3D's after 'Training options:', Circular-DPO's at the start)."""
    start = output.index('{')
    return json.loads(output[start:output.index('\n}', start) + 2])

#----------------------------------------------------------------------------

def test_generator_and_method_are_inferred_from_each_other():
    assert (methods.choose().family, methods.choose().name) == ('eg3d', 'gan')
    assert methods.choose(name='circular-dpo').family == 'flow'
    assert methods.choose('flow').name == 'circular-dpo'
    with pytest.raises(options.ConfigError, match='--method=circular-dpo does not apply to --generator=eg3d; use gan'):
        methods.choose('eg3d', 'circular-dpo')
    with pytest.raises(ValueError, match='registered already'):
        methods.register(methods.METHODS[('flow', 'circular-dpo')])


def test_every_method_config_field_is_a_train_flag_once():
    params = [p.name for p in train.main.params]
    assert len(params) == len(set(params))
    for method in methods.METHODS.values():
        assert method.fields() <= set(params), method.name


def test_a_flag_of_another_method_names_its_owner():
    method = methods.choose('eg3d')
    with pytest.raises(options.ConfigError, match='--rounds is a Circular-DPO option: add --generator=flow'):
        methods.check_given(method, {'rounds'}, [p.name for p in train.main.params])
    with pytest.raises(options.ConfigError, match='--lambda-r is an EG3D option: add --generator=eg3d; --generator=flow takes'):
        methods.check_given(methods.choose('flow'), {'lambda_r', 'seed'}, [p.name for p in train.main.params])
    methods.check_given(methods.choose('flow'), {'seed', 'reward_model', 'beta'}, [p.name for p in train.main.params])

#----------------------------------------------------------------------------
# `eg3d-rlhf train METHOD`: one method's options alone; the old spellings still work.

def method_help(command):
    """The option names `eg3d-rlhf train COMMAND --help` lists (through the console script's dispatch)."""
    from tools import __main__ as console
    with pytest.raises(SystemExit) as stop:
        console.main(['train', command, '--help'])
    assert stop.value.code == 0
    return {p.name for p in train.method_command(methods.by_command(command)).params if not p.hidden}


SHARED = {'reward_model', 'reward_aggregate', 'aggregate_lambda', 'gold_taste', 'stop_at_peak', 'peak_margin',
    'disagreement_stop', 'peak_noise', 'peak_patience'}                      # Fields both methods declare.


def test_a_method_command_lists_only_its_own_options(capsys):
    circular = method_help('circular-dpo')
    listed = capsys.readouterr().out
    assert 'eg3d-rlhf train circular-dpo' in listed and '--variant' in listed and '--lambda-r' not in listed
    assert methods.by_command('circular-dpo').fields() <= circular
    assert not circular & (methods.by_command('eg3d').fields() - SHARED)
    assert not circular & {'cfg', 'gamma', 'glr', 'kimg', 'data'}
    eg3d = method_help('eg3d')
    assert '--lambda-r' in capsys.readouterr().out
    assert methods.by_command('eg3d').fields() | {'cfg', 'gamma', 'glr', 'kimg', 'data'} <= eg3d
    assert not eg3d & (methods.by_command('circular-dpo').fields() - SHARED)
    assert methods.by_command('eg3d').fields() & methods.by_command('circular-dpo').fields() == SHARED


def test_a_method_command_refuses_another_methods_flag():
    result = CliRunner().invoke(train.method_command(methods.by_command('circular-dpo')), ['--lambda-r', '3'])
    assert result.exit_code == 2 and "No such option '--lambda-r'" in result.output


@pytest.mark.parametrize('args, expected', [
    (['--ablation', 'a,d'], dict(ablation='a,d')),
    (['--variant', 'circular,final-only'], dict(ablation='a,d')),
    (['--variant', 'placebo,circular', '--beta', '5', '--dpo-lr', '0.001'], dict(ablation='k,a', beta=5.0, dpo_lr=0.001)),
    (['--variant', 'front-to-back', '--detail-beta', '5', '--detail-lr', '0.001', '--detail-batch', '4'],
        dict(ablation='j', beta=5.0, dpo_lr=0.001, dpo_batch=4)),
])
def test_variants_by_name_or_letter_and_detail_flags_by_either_name(args, expected):
    for command, prefix in ((train.main, ['--generator=flow']), (train.method_command(methods.by_command('circular-dpo')), [])):
        result = CliRunner().invoke(command, prefix + args + ['--dry-run'])
        assert result.exit_code == 0, result.output[-2000:]
        shown = printed_options(result.output)
        assert {k: shown[k] for k in expected} == expected


def test_a_variant_list_is_checked():
    result = invoke(['--generator=flow', '--variant', 'circular,a', '--dry-run'], 2)
    assert 'one each' in result.output and 'front-to-back' in result.output
    result = invoke(['--generator=flow', '--variant', 'loop', '--dry-run'], 2)
    assert '--variant=loop' in result.output


def test_a_saved_method_run_reads_back_and_yaml_takes_aliases(tmp_path):
    command = train.method_command(methods.by_command('circular-dpo'))
    path = tmp_path / 'run.yaml'
    assert CliRunner().invoke(command, ['--variant', 'final-only', '--save-config', str(path)]).exit_code == 0
    assert printed_options(CliRunner().invoke(command, ['--config', str(path), '--dry-run']).output)['ablation'] == 'd'
    path.write_text('variant: independent\ndetail-beta: 7\n')
    shown = printed_options(CliRunner().invoke(command, ['--config', str(path), '--dry-run']).output)
    assert (shown['ablation'], shown['beta']) == ('b', 7.0)
    path.write_text('variant: independent\nablation: a\n')
    assert 'the same option' in CliRunner().invoke(command, ['--config', str(path), '--dry-run']).output

def test_a_resumed_run_takes_its_own_options_unless_a_flag_changes_one(tmp_path):
    command = train.method_command(methods.by_command('grpo'))
    first = printed_options(CliRunner().invoke(command, ['--grpo-stages', 'final', '--grpo-iterations', '7', '--seed',
        '104', '--eval-seeds', '5000-5031', '--outdir', str(tmp_path), '--dry-run']).output)
    run_dir = tmp_path / 'the-run'
    run_dir.mkdir()
    (run_dir / 'options.json').write_text(json.dumps(dict(first, run_dir=str(run_dir))))
    result = CliRunner().invoke(command, ['--resume-run', str(run_dir), '--dry-run'])
    assert result.exit_code == 0, result.output[-2000:]
    shown = printed_options(result.output)
    assert (shown['grpo_stages'], shown['grpo_iterations'], shown['seed'], shown['eval_seeds']) == \
        ('final', 7, 104, '5000-5031')
    result = CliRunner().invoke(command, ['--resume-run', str(run_dir), '--grpo-iterations', '9', '--dry-run'])
    assert result.exit_code == 1 and 'ran with other options (grpo_iterations=7, now 9)' in result.output
    (run_dir / 'options.json').write_text(json.dumps(dict(first, run_dir=str(run_dir), seed='x', grpo_lr=float('nan'))))
    result = CliRunner().invoke(command, ['--resume-run', str(run_dir), '--dry-run'])  # Its values are checked too.
    assert result.exit_code == 2 and '--grpo-lr' in result.output

#----------------------------------------------------------------------------
# YAML run files: the same names as the flags; flags given win.

def test_a_yaml_file_gives_options_and_flags_override_it(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('generator: flow\nbeta: 250\ndpo-steps: 3\nloss_type: ipo\nablation: b\n')
    out = printed_options(invoke(['--config', str(path), '--dpo-steps', '5', '--dry-run'], 0).output)
    assert (out['beta'], out['dpo_steps'], out['loss_type'], out['ablation']) == (250.0, 5, 'ipo', 'b')
    path.write_text('reward: sigma\nlambda_r: 4\nreward_loss: pairwise\npair_loss: sigmoid\n')
    output = invoke(['--config', str(path), '--lambda-r', '6', '--outdir', str(tmp_path / 'runs'), '--dry-run']).output
    phase = printed_options(output[output.index('Training options:'):])['loss_kwargs']['reward_kwargs']
    assert (phase['lambda_r'], phase['reward_loss'], phase['pair_loss']) == (6.0, 'pairwise', 'sigmoid')
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('text, message', [
    ('nope: 1\n', 'run.yaml: nope is not an option'),
    ('- 1\n- 2\n', 'must hold a mapping'),
    ('beta: [1, 2]\n', 'beta: expected a single finite value'),
    ('generator: flow\nbeta: .nan\n', "beta: '.nan' is not a valid float"),       # As --beta=.nan.
    ('generator: flow\ndpo_steps: 0\n', '--dpo-steps=0: must be at least 1'),
    ('generator: flow\ndpo_steps: many\n', "dpo_steps: 'many' is not a valid integer"),
    ('generator: flow\ngamma: 1\n', '--gamma is an EG3D option'),
    ('beta: [1\n', 'not YAML ('),
])
def test_a_bad_yaml_file_is_refused_in_one_line(tmp_path, text, message):
    (tmp_path / 'run.yaml').write_text(text)
    last = invoke(['--config', str(tmp_path / 'run.yaml'), '--dry-run'], 2).output.strip().splitlines()[-1]
    assert message in last and last.startswith('Error: --')


def test_a_missing_yaml_file_is_named(tmp_path):
    result = invoke(['--config', str(tmp_path / 'none.yaml'), '--dry-run'], 2)
    assert 'none.yaml does not exist' in result.output


def test_configs_validate_like_their_flags():
    with pytest.raises(options.ConfigError, match='--label-smoothing=0.5: must be below 0.5'):
        CircularDPOConfig(label_smoothing=0.5)
    assert CircularDPOConfig.from_options({'beta': None, 'rounds': 2}).rounds == 2

#----------------------------------------------------------------------------
# One config and one reward load per process: the runner builds the config once; its kind check, the reward phase
# and the panel share one read of the checkpoint.

def test_the_reward_config_is_built_once_and_its_checkpoint_read_once(monkeypatch, tmp_path):
    path = os.path.abspath(demo.reward_model('sigma'))
    built, loads = [], []
    real_init, real_load = reward_config.RewardFinetuneConfig.__post_init__, checkpoint.read_reward
    monkeypatch.setattr(reward_config.RewardFinetuneConfig, '__post_init__', lambda self: (built.append(1), real_init(self)))
    monkeypatch.setattr(checkpoint, 'read_reward', lambda f, *a, **k: (loads.append(f), real_load(f, *a, **k))[1])
    checkpoint._SHARED.clear()
    ctx = train.main.make_context('train.py', ['--reward', 'sigma', '--outdir', str(tmp_path), '--dry-run'])
    c, _desc, _outdir = gan_run.make_config(ctx.params, train.explicit_options(ctx))
    assert len(built) == 1
    G = copy.deepcopy(legacy.load_network_pkl(demo.GENERATOR, trust=True)['G_ema'])
    dnnlib.util.construct_class_by_name(G=G, G_ref=G, **c.loss_kwargs.reward_kwargs)        # As training/loss.py does.
    dnnlib.util.construct_class_by_name(run_dir=str(tmp_path), **c.panel_kwargs)             # As the training loop does.
    assert [f for f in loads if f == path] == [path]



def test_reading_a_reward_leaves_the_random_stream_alone():
    # The run's random stream (latents, noise) must not depend on how often or where the reward file was read.
    path = demo.reward_model('sigma')
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    checkpoint.load_reward(path)
    assert torch.equal(torch.rand(3), expected)
    checkpoint._SHARED.clear()
    assert checkpoint.shared_reward(path) is checkpoint.shared_reward(os.path.join(os.path.dirname(path), '.',
        os.path.basename(path)))

#----------------------------------------------------------------------------
