"""train.py --save-config: a run's resolved options written as the YAML file --config reads, and read back."""

import os

import pytest
import yaml
from click.testing import CliRunner

import train
from eg3d_rlhf.finetune import config_file, gan_run, methods, options
from eg3d_rlhf.synthetic import demo
from tests.helpers.train import base_args, make_zip_dataset

#----------------------------------------------------------------------------

def parsed(args):
    """(options, explicit names) train.py makes of a command line, its --config file read as main() reads it."""
    ctx = train.main.make_context('train.py', list(args))
    return options.with_yaml(ctx.params, train.explicit_options(ctx), ctx.params['config'], train.main)


def gan_config(args):
    """EG3D's training options, description and output folder for a command line (--config included)."""
    return gan_run.make_config(*parsed(args))


def save(args, path, expect=0):
    result = CliRunner().invoke(train.main, [*args, '--save-config', str(path)])
    assert result.exit_code == expect, result.output[-2000:]
    return result.output

#----------------------------------------------------------------------------

@pytest.mark.parametrize('demo', [True, False])
def test_a_saved_eg3d_run_reads_back_to_the_same_training_options(tmp_path, demo):
    if demo:        # The embedded demo, with a flag changed: the file holds the demo's values, the flag's too.
        args = ['--reward', 'sigma', '--lambda-r', '7', '--kimg', '0.2', '--outdir', str(tmp_path / 'runs')]
    else:           # Plain GAN training on a dataset of ours, with a "[default: varies]" option given.
        args = base_args(make_zip_dataset(tmp_path / 'data.zip'), tmp_path / 'runs', '--cbase', '2048', '--glr', '0.001')
    path = tmp_path / 'run.yaml'
    assert 'run them with: python train.py --config' in save(args, path)
    assert not (tmp_path / 'runs').exists(), 'saving the options trained'
    saved = yaml.safe_load(path.read_text())
    method = methods.choose('eg3d', 'gan')
    assert list(saved) == config_file.option_names(method, train.main, methods.METHODS.values())
    assert (saved['generator'], saved['method'], saved['cbase']) == ('eg3d', 'gan', 4096 if demo else 2048)
    assert not {'rounds', 'dry_run', *options.FLAGS_ONLY} & set(saved)       # No trust: the bundled G needs none.
    if demo:
        assert (saved['cfg'], saved['lambda_r'], saved['kimg']) == ('synthetic', 7.0, 0.2)
    original = gan_config([*args, '--dry-run'])
    assert gan_config(['--config', str(path), '--dry-run']) == original
    assert gan_config(['--config', str(path), '--glr', '0.0042', '--dry-run']) != original   # Flags still win.


def test_a_saved_circular_dpo_run_reads_back_to_the_same_config(tmp_path):
    args = ['--generator', 'flow', '--ablation', 'b', '--beta', '250', '--dpo-steps', '3', '--seed', '5',
        '--outdir', str(tmp_path / 'runs')]
    path = tmp_path / 'flow.yaml'
    save(args, path)
    assert not (tmp_path / 'runs').exists()
    saved = yaml.safe_load(path.read_text())
    assert (saved['generator'], saved['method'], saved['beta'], saved['seed']) == ('flow', 'circular-dpo', 250.0, 5)
    assert 'gamma' not in saved and 'lambda_r' not in saved       # EG3D's options are not this method's.
    method = methods.choose('flow')
    config, common = method.configure(*parsed(args))
    config2, common2 = method.configure(*parsed(['--config', str(path)]))
    assert config2 == config and config2.ablation == 'b'
    same = [k for k in method.reads if k not in ('config', 'method')]       # The file names the method; flags inferred it.
    assert {k: common2[k] for k in same} == {k: common[k] for k in same}


def test_flags_a_file_cannot_set_are_named_not_saved_and_given_again(tmp_path):
    pkl = tmp_path / 'g.pkl'
    pkl.write_bytes(open(demo.GENERATOR, 'rb').read())                  # Not the bundled file: it needs the flag.
    sr = 'training.superresolution.SuperresolutionHybrid2X'
    args = base_args(make_zip_dataset(tmp_path / 'data.zip'), tmp_path / 'runs', '--resume', str(pkl), '--trust-pickle',
        '--sr-module', sr)
    path = tmp_path / 'run.yaml'
    assert save(args, path).strip().endswith(f'--config {path} --trust-pickle --sr-module={sr}')
    saved = yaml.safe_load(path.read_text())
    assert saved['resume'] == str(pkl) and 'trust_pickle' not in saved and 'sr_module' not in saved   # Before: saved.
    assert f'#   python train.py --config {path} --trust-pickle --sr-module={sr}\n' in path.read_text()
    with pytest.raises(options.RunError, match='pass --trust-pickle if you trust this file'):
        gan_config(['--config', str(path), '--dry-run'])
    assert gan_config(['--config', str(path), '--trust-pickle', '--sr-module', sr, '--dry-run']) == \
        gan_config([*args, '--dry-run'])


def test_save_config_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('keep: me\n')
    output = save(['--generator', 'flow', '--beta', '100'], path, expect=1)
    assert output.strip().splitlines()[-1] == f'Error: --save-config: {path} exists; pass --force to overwrite it'
    assert path.read_text() == 'keep: me\n'
    save(['--generator', 'flow', '--beta', '100', '--force'], path)
    assert yaml.safe_load(path.read_text())['beta'] == 100.0
    result = CliRunner().invoke(train.main, ['--generator', 'flow', '--force'])
    assert result.exit_code == 2 and '--force is for --save-config' in result.output
    assert sorted(os.listdir(tmp_path)) == ['run.yaml']                # Atomic writes leave no temporary file.


def test_a_dry_run_prints_the_file_and_writes_nothing(tmp_path):
    path = tmp_path / 'run.yaml'
    output = save(['--reward', 'sigma', '--lambda-r', '7', '--dry-run'], path)
    assert f'Dry run; {path} not written.' in output and not path.exists()
    shown = yaml.safe_load(output[:output.index('Dry run;')])
    assert (shown['reward'], shown['lambda_r'], shown['kimg']) == ('sigma', 7.0, 0.4)


def test_a_bad_option_is_refused_before_anything_is_saved(tmp_path):
    path = tmp_path / 'run.yaml'
    save(['--generator', 'flow', '--dpo-steps', '0'], path, expect=2)
    assert not path.exists()

#----------------------------------------------------------------------------
