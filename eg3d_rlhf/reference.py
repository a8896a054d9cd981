"""docs/reference/: pages generated from the code (click commands, method configs, registries), never by hand."""

import dataclasses

import click

from eg3d_rlhf.data.annotators import REGION, TASTE_HELP
from eg3d_rlhf.data.person_like import WORLD_TASTES
from eg3d_rlhf.finetune import circular_config, losses, methods
from eg3d_rlhf.generators import registry
from eg3d_rlhf.rewards import HELP as REWARD_HELP, REWARDS

#----------------------------------------------------------------------------
# A command's page is its --help as a table: each option's flags and metavar, then its help with click's own
# [default] and range notes, so the page says what --help says. A method's page adds its settings that are not flags.

def cell(text):
    """Text for one Markdown table cell."""
    return ' '.join(str(text).split()).replace('|', '\\|')


def summary(command, sentence=False):
    """The first paragraph (or its first sentence) of a command's help, on one line."""
    text = cell((command.help or '').split('\n\n')[0])
    return text.split('. ')[0].rstrip('.') + '.' if sentence and text else text


def options_table(command):
    """Markdown rows of a click command's options as --help lists them (hidden ones left out)."""
    ctx = click.Context(command, info_name=command.name)
    rows = ['| option | what it does |', '| --- | --- |']
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if isinstance(param, click.Argument):
            rows.append(f'| `{param.human_readable_name}` | (an argument{"" if param.required else ", optional"}) |')
        elif record is not None:
            rows.append(f'| `{cell(record[0])}` | {cell(record[1])} |')
    return rows


def command_page(command, usage):
    """The page of one command: its usage line, the first paragraph of its help and its options; a group's page has
    a section per subcommand."""
    lines = [f'# `{usage}`', '', summary(command), '']
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=command.name)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            lines += [f'## `{usage} {name}`', '', summary(sub), '', *options_table(sub), '']
        return '\n'.join(lines)
    return '\n'.join([*lines, *options_table(command), ''])


def method_page(method, command, usage):
    """A method's page (methods.Method): its command's page, then the settings its config holds without a flag."""
    fixed = [f for f in dataclasses.fields(method.config) if not f.metadata['flag']]
    lines = [command_page(command, usage)]
    if fixed:
        lines += ['## Settings without a flag', '', 'Fixed in this version; a Python caller may pass them to the config.',
            '', '| setting | default | what it is |', '| --- | --- | --- |']
        lines += [f'| `{f.name}` | `{f.default}` | {cell(f.metadata["help"])} |' for f in fixed]
        lines.append('')
    return '\n'.join(lines)

#----------------------------------------------------------------------------
# The registries: what names a flag can take, each with its one line of help.

def registries_page():
    """The registries as tables: methods, Circular-DPO's variants, preference losses, reward kinds, generator
    families and the simulated annotators' tastes."""
    def table(title, header, rows):
        return [f'## {title}', '', '| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header),
            *('| ' + ' | '.join(cell(c) for c in row) + ' |' for row in rows), '']

    lines = ['# Registries', '', 'The names that flags take, each registry read from the code.', '']
    lines += table('Methods (`eg3d-rlhf train COMMAND`)', ['command', 'generator family', '`--method`', 'what it does'],
        [(f'`{m.command_name}`', m.family, m.name, m.help) for m in methods.METHODS.values()])
    lines += table('Circular-DPO variants (`--variant`)', ['name', 'letter', 'what it trains'],
        [(f'`{name}`', letter, circular_config.GROUPS[letter]) for name, letter in circular_config.VARIANTS.items()])
    lines += table('Preference losses (`--detail-loss-type`, `--structure-loss-type`, `--pair-loss`)',
        ['name', 'needs the rejected side', 'needs a reward gap', 'what it is'],
        [(f'`{l.name}`', 'yes' if l.needs_rejected else 'no', 'yes' if l.needs_gap else 'no', l.help)
            for l in losses.LOSSES.values()])
    lines += table('Reward kinds (`--reward`, `tools/train_reward.py --kind`)', ['kind', 'model'],
        [(f'`{kind}`', REWARD_HELP[kind]) for kind in REWARDS])
    lines += table('Generator families (`--generator`)', ['name', 'files', 'loading runs code', 'bundled'],
        [(f'`{f.name}`', f.description, 'yes (needs --trust-pickle)' if f.needs_trust else 'no',
            ', '.join(f'`{n}`' for n in f.bundled) or '-') for f in registry.FAMILIES.values()])
    lines += table('Tastes of the simulated annotators', ['`oracle:NAME`', '`person:NAME` (world units, a JND)', 'prefers'],
        [(f'`{name}`', f'`{name}`' if name in WORLD_TASTES else '-', text) for name, text in TASTE_HELP.items()]
        + [(f'`{REGION}PART`', '-', 'one facial part alone')])
    return '\n'.join(lines)

#----------------------------------------------------------------------------
