"""train.py --config: a YAML run file reads as its flags would, and cannot set what only the person typing may."""

import pickle

import click
import pytest
from click.testing import CliRunner

import train
from eg3d_rlhf import cli
from eg3d_rlhf.finetune import options
from tests.helpers.cli import refused_in_one_line

#----------------------------------------------------------------------------

def parsed(tmp_path, text):
    """train.py's options (after --config) of a run file holding `text`."""
    path = tmp_path / 'run.yaml'
    path.write_text(text, encoding='utf-8')
    ctx = train.main.make_context('train.py', ['--config', str(path)])
    return options.with_yaml(ctx.params, train.explicit_options(ctx), str(path), train.main)[0]


def dry_run(tmp_path, text, *args, dry='--dry-run'):
    """train.py --config run.yaml --dry-run (the embedded demo, so that a file that passes runs) and the file's path."""
    path = tmp_path / 'run.yaml'
    path.write_text(text, encoding='utf-8')
    args = ['--config', str(path), '--outdir', str(tmp_path / 'runs'), *[dry][:bool(dry)], *args]
    return CliRunner().invoke(train.main, args), path


class Opens:
    """A pickle that, unpickled, runs code: it creates the file `path`."""
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')

#----------------------------------------------------------------------------
# Trust, overwriting and code: flags only.

def test_every_option_that_grants_trust_or_writes_a_file_is_a_flag_only():
    params = {p.name: p for p in train.main.params if isinstance(p, click.Option)}
    writes = {name for name, p in params.items() if isinstance(p.type, cli.Writable) and p.type.kind == 'file'}
    grants = {name for name in params if 'trust' in name or name == 'force'}
    assert writes | grants | {'config', 'resume_run', 'sr_module'} <= set(options.FLAGS_ONLY)
    for name in options.FLAGS_ONLY:                   # Each names an option, by the flag the refusal tells to pass.
        assert options.flag_name(name) in params[name].opts


VALUES = {'trust_pickle': 'true', 'force': 'true', 'save_config': 'saved.yaml', 'resume_run': 'runs/00000-flow',
    'sr_module': 'training.superresolution.SuperresolutionHybrid2X', 'config': 'other.yaml'}

@pytest.mark.parametrize('name', list(options.FLAGS_ONLY))
@pytest.mark.parametrize('dashes', [False, True])
def test_a_run_file_cannot_set_a_flag_only_option(tmp_path, name, dashes):
    key = name.replace('_', '-') if dashes else name
    result, path = dry_run(tmp_path, f'reward: sigma\nkimg: 0.1\n{key}: {tmp_path / VALUES[name]}\n')
    refused_in_one_line(result, f'--config: {path}: {key} may not be set by a file ({options.FLAGS_ONLY[name]}); pass '
        f'{options.flag_name(name)} on the command line')     # Before: taken (or another message), unless 'config'.
    assert not (tmp_path / 'saved.yaml').exists()


def test_a_run_file_cannot_trust_the_pickle_it_names(tmp_path):
    evil, ran = tmp_path / 'inception.pkl', tmp_path / 'code-ran'
    evil.write_bytes(pickle.dumps(Opens(ran)))
    result, path = dry_run(tmp_path, f'reward: sigma\nmetrics: fid50k_full\ninception: {evil}\ntrust_pickle: true\n')
    refused_in_one_line(result, f'--config: {path}: trust_pickle may not be set by a file')
    assert not ran.exists()                     # Before: the dry run unpickled inception.pkl, running its code.
    result, _ = dry_run(tmp_path, f'reward: sigma\nmetrics: fid50k_full\ninception: {evil}\n')
    refused_in_one_line(result, f'--inception: {evil}: a pickle; loading it can run code stored in it, so pass '
        '--trust-pickle if you trust it')       # Without the flag, the file's pickle is refused, not run.
    assert not ran.exists()


def test_a_run_file_cannot_overwrite_a_file(tmp_path):
    victim = tmp_path / 'labels.jsonl'
    victim.write_text('{"a": "x"}\n', encoding='utf-8')
    result, path = dry_run(tmp_path, f'reward: sigma\nsave_config: {victim}\nforce: true\n', dry=None)
    refused_in_one_line(result, f'--config: {path}: save_config may not be set by a file')
    assert victim.read_text(encoding='utf-8') == '{"a": "x"}\n'        # Before: overwritten by the run's options.
    assert not (tmp_path / 'runs').exists()

#----------------------------------------------------------------------------
# Keys given twice, values read as the flag's text would be.

@pytest.mark.parametrize('text, message', [
    ('lambda_r: 1\nlambda-r: 2\n', 'lambda_r and lambda-r are the same option; give it once'),
    ('seed: 1\nkimg: 0.1\nseed: 2\n', "key 'seed' is given twice (lines 2 and 4)"),
])
def test_a_key_given_twice_is_refused(tmp_path, text, message):
    result, path = dry_run(tmp_path, 'reward: sigma\n' + text)
    refused_in_one_line(result, f'--config: {path}: {message}')         # Before: the last one, silently.


def test_a_hex_number_past_float_range_is_refused_in_one_line(tmp_path):
    result, path = dry_run(tmp_path, 'reward: sigma\nglr: 0x' + 'f' * 300 + '\n')
    refused_in_one_line(result, f"--config: {path}: glr: '0xffff...(302 characters)' is not a valid")
    assert len(result.output) < 400                                     # Before: OverflowError's traceback.


@pytest.mark.parametrize('text, value', [
    ('seed: 017', 17),                          # YAML 1.1: octal 15.
    ('desc: no', 'no'),                         # YAML 1.1: false, then 'False'.
    ('desc: 2001-12-14', '2001-12-14'),         # YAML 1.1: a date, refused.
    ('gen_pose_cond: on', True),                # As --gen_pose_cond=on.
    ('kimg: 1e3', 1000.0),
    ('glr: 0.001', 0.001),
    ('seed: !!int 12', 12),
    ('resume: null', None),
])
def test_values_read_as_their_flags_would(tmp_path, text, value):
    name = text.split(':')[0]
    got = parsed(tmp_path, text + '\n')[name]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize('text, message', [
    ('seed: 1:30', "seed: '1:30' is not a valid integer"),           # YAML 1.1: 90.
    ('snap: 1.5', "snap: '1.5' is not a valid integer"),             # Before: 1.
    ('seed: 0x10', "seed: '0x10' is not a valid integer"),           # As --seed=0x10.
    ('glr: .inf', "glr: '.inf' is not a valid finite float"),
    ('glr: nan', "glr: 'nan' is not a finite number"),
    ('kimg: [1, 2]', 'kimg: expected a single finite value'),
])
def test_values_their_flags_would_refuse_are_refused(tmp_path, text, message):
    with pytest.raises(options.ConfigError, match='^--config: .*run.yaml: ' + message.replace('[', '\\[')):
        parsed(tmp_path, text + '\n')

#----------------------------------------------------------------------------
# YAML nested too deeply: refused in one line, not a RecursionError.

@pytest.mark.usefixtures('one_thread')
def test_a_deeply_nested_config_file_is_refused(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('kimg: ' + '[' * 100000 + ']' * 100000 + '\n')
    result = CliRunner().invoke(train.main, ['--config', str(path), '--outdir', str(tmp_path / 'runs'), '--dry-run'])
    refused_in_one_line(result, f'--config: {path}: YAML nested too deeply')     # Before: RecursionError.

#----------------------------------------------------------------------------
