"""The `eg3d-rlhf` command (also `python -m tools`): every tool and train.py as one click group, each loaded when named."""

import ast
import importlib
import importlib.util
import os
import pkgutil
import sys

import click

#----------------------------------------------------------------------------
# The commands: every module of this package (tools/sample_bank.py is `sample-bank`) and train.py (`train`). The list
# and its one-line helps come from the files themselves, read without importing them (a tool imports torch), so
# `eg3d-rlhf --help` stays fast and a new tool needs no entry here; a tool's module is imported only when it runs.

def commands():
    """{command name: (module name, source path)} of every tool and train.py, sorted by name."""
    here, found = os.path.dirname(os.path.abspath(__file__)), {}
    for info in pkgutil.iter_modules([here]):
        if not info.name.startswith('_') and not info.ispkg:
            found[info.name.replace('_', '-')] = (f'tools.{info.name}', os.path.join(here, f'{info.name}.py'))
    spec = importlib.util.find_spec('train')
    if spec is not None and spec.origin is not None:
        found['train'] = ('train', spec.origin)
    return dict(sorted(found.items()))


def summary(path):
    """A file's module docstring on one line, read without importing the file ('' when it has none)."""
    try:
        with open(path, encoding='utf-8') as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ''
    except (OSError, SyntaxError, ValueError):
        return ''
    return ' '.join(doc.split())


class Tools(click.Group):
    """A group whose commands are the tools' own click commands, imported on demand."""

    def list_commands(self, ctx):
        return list(commands())

    def get_command(self, ctx, cmd_name):
        found = commands().get(cmd_name)
        return None if found is None else importlib.import_module(found[0]).main

    def format_commands(self, ctx, formatter):
        found = commands()
        limit = formatter.width - 6 - max(len(name) for name in found)
        with formatter.section('Commands'):
            formatter.write_dl([(name, click.Command(name, help=summary(path)).get_short_help_str(limit))
                for name, (_module, path) in found.items()])


@click.command(cls=Tools)
def group():
    """eg3d-rlhf's tools and train.py as one command: `eg3d-rlhf TOOL ARGS` runs `python tools/TOOL.py ARGS`
    (sample-bank is tools/sample_bank.py, train is train.py) with the same flags, help and exit codes.

    \b
    Examples:
    eg3d-rlhf sample-bank --help
    eg3d-rlhf train --reward=sigma --lambda-r=10
    eg3d-rlhf train circular-dpo --help          (one method's options alone: eg3d, circular-dpo)
    """

#----------------------------------------------------------------------------

def main(args=None):
    """The console script. A named tool runs as its script does, under the script's name, so its usage line and help
    are byte for byte those of `python tools/TOOL.py --help`; anything else goes to the group (help, unknown names)."""
    args = sys.argv[1:] if args is None else list(args)
    found = commands()
    if args[:1] == ['train'] and len(args) > 1:                 # `train eg3d ...`: one method's options alone.
        train = importlib.import_module('train')
        method = train.methods.by_command(args[1])
        if method is not None:
            return train.method_command(method).main(args[2:], prog_name=f'eg3d-rlhf train {args[1]}')
    if args and args[0] in found:
        module, path = found[args[0]]
        return importlib.import_module(module).main.main(args[1:], prog_name=os.path.basename(path))
    return group.main(args, prog_name='eg3d-rlhf')


if __name__ == '__main__':
    main()

#----------------------------------------------------------------------------
