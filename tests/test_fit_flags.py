"""tools/train_reward.py's flags that set rewards.fitting.FitOptions come from its fields: one default, one help, one range."""

import dataclasses

import click
from click.testing import CliRunner

from eg3d_rlhf import cli
from eg3d_rlhf.data import annotators, preferences
from eg3d_rlhf.rewards import fitting
from tests.helpers.banks import ball_bank
from tools import train_reward

DERIVED = ('ties', 'epochs', 'l2', 'patience', 'batch', 'lr', 'mirror', 'objective', 'reg_weight', 'cs_lambda',
    'seed')                                                                              # FitOptions' flags.


def flag(name):
    return '--' + name.replace('_', '-')


def shown(field, default):
    """What click's --help shows as the default of a derived flag."""
    if field.type is bool and default is None:
        return f'({field.metadata["default_shown"]})'                               # Neither form passed.
    if field.type is bool:
        return field.name if default else f'no-{field.name}'
    return ','.join(f'{v:g}' for v in default) if field.type is tuple else str(default)


def help_rows(command):
    """{flag: its --help row} of a command, unwrapped (a wide terminal)."""
    text = CliRunner().invoke(command, ['--help'], terminal_width=1000, max_content_width=1000).output
    return {line.split()[0]: line for line in text.splitlines() if line.strip().startswith('--')}


def test_train_reward_help_shows_each_fit_option_with_its_default_and_help():
    rows = help_rows(train_reward.main)
    fields = {f.name: f for f in dataclasses.fields(fitting.FitOptions)}
    for name in DERIVED:
        f, row = fields[name], rows[flag(name)]
        assert f.metadata['help'] in row, name
        assert f'[default: {shown(f, f.default)}' in row, (name, row)
    assert '[default: 20; x>=1]' in rows['--epochs'] and '[default: 0.001; x>0]' in rows['--lr']      # Ranges too.
    assert '[default: 16; x>=2]' in rows['--batch'] and '0<=x<=4294967295' in rows['--seed']
    assert '[default: (auto)]' in rows['--mirror']


def test_a_changed_default_or_limit_shows_up_in_the_flag():
    """The flags are read off the fields, not restated: another config with other defaults gets other flags."""
    changed = {'ties': 'model', 'epochs': 7, 'l2': (0.5, 2.0), 'patience': 9, 'batch': 32, 'lr': 0.25, 'mirror': False,
        'objective': 'dreamcs', 'reg_weight': 3.5, 'cs_lambda': 0.0, 'seed': 11}
    base = {f.name: f for f in dataclasses.fields(fitting.FitOptions)}
    Other = dataclasses.make_dataclass('Other', [(n, base[n].type, fitting.setting(v, f'{n} help', **{k: m for k, m in
        base[n].metadata.items() if k != 'help'})) for n, v in changed.items()])
    seen = {}

    @click.command()
    def command(**values):
        seen.update(values)
    for name in reversed(DERIVED):
        command = cli.field_option(Other, name)(command)
    rows = help_rows(command)
    for name, value in changed.items():
        assert f'{name} help' in rows[flag(name)] and f'[default: {shown(base[name], value)}' in rows[flag(name)], name
    result = CliRunner().invoke(command, [])
    assert result.exit_code == 0, result.output
    assert {**seen, 'l2': tuple(seen['l2'])} == changed
    assert CliRunner().invoke(command, ['--batch', '1']).exit_code != 0                  # min=2 from the metadata.
    assert CliRunner().invoke(command, ['--ties', 'drop']).exit_code == 0


def test_train_reward_fits_with_fit_options_defaults_unless_flags_say_otherwise(tmp_path, monkeypatch):
    root, radii = ball_bank(tmp_path / 'bank', 12)
    oracle = annotators.OracleAnnotator('nose', radii, temperature=0, seed=0)
    labels = str(tmp_path / 'labels.jsonl')
    preferences.write_judgements(labels, oracle.judgements(oracle.draw_pairs(radii, 40)))
    asked = []

    def fit_reward(kind, bank, labels, spec, options, **kwargs):
        asked.append(options)
        raise FloatingPointError('stopped here by the test')
    monkeypatch.setattr(fitting, 'fit_reward', fit_reward)
    run = lambda *args: CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', root, '--labels', labels,
        '--out', str(tmp_path / 'r.pt'), *args])
    assert 'stopped here by the test' in run().output
    assert asked[-1] == fitting.FitOptions() and asked[-1].mirror is None                  # Auto: chosen on validation.
    assert 'stopped here by the test' in run('--epochs', '3', '--l2', '1,2', '--no-mirror', '--ties', 'model').output
    assert asked[-1] == fitting.FitOptions(epochs=3, l2=(1.0, 2.0), mirror=False, ties='model')
    assert 'stopped here by the test' in run('--mirror').output and asked[-1].mirror is True
