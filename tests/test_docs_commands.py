"""Every command the README and docs show runs as written: it parses with its click command, and --dry-run runs it."""

import ast
import functools
import glob
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import click
from click.testing import CliRunner

from eg3d_rlhf.cli import Writable
from eg3d_rlhf.finetune import methods
from tests.conftest import REPO

SCRIPTS = re.compile(r'^(train\.py|tools/|benchmarks/)')   # Ours (a missing script fails); every other program is not.
SHELLS = ('bash', 'sh', 'shell', 'console')
FILE_KINDS = {'BANK', 'CSV', 'DIR', 'FILE', 'JSONL', 'MRC', 'NPY', 'PATH', 'PKL', 'PT', 'TXT', 'ZIP'}  # Metavars naming files.
CHECKED_TYPES = (click.Choice, click.types.IntParamType, click.types.FloatParamType, click.types.BoolParamType)

#----------------------------------------------------------------------------
# Commands in markdown.

def doc_paths():
    """README.md, docs/**/*.md and checkpoints/README.md (the commands that made the bundled files)."""
    return [os.path.join(REPO, 'README.md'), *sorted(glob.glob(os.path.join(REPO, 'docs', '**', '*.md'), recursive=True)),
        os.path.join(REPO, 'checkpoints', 'README.md')]


def shell_lines(text):
    """(line number, one shell line) of the fenced bash blocks (backslash continuations joined) and of the inline code
    spans outside them that start with `python `."""
    lines, out, fence, prose = text.split('\n'), [], None, []
    i = 0
    while i < len(lines):
        line = lines[i]
        if fence is None and line.startswith('```'):
            fence = line[3:].strip().lower()
        elif fence is not None and line.startswith('```'):
            fence = None
        elif fence in SHELLS:
            start = i
            while line.endswith('\\') and i + 1 < len(lines):
                i += 1
                line = line[:-1] + ' ' + lines[i].strip()
            out.append((start + 1, line))
        elif fence is None:
            prose.append((i + 1, line))
        i += 1
    joined = '\n'.join(line for _, line in prose)
    for m in re.finditer(r'`(python [^`]+)`', joined):
        out.append((prose[joined.count('\n', 0, m.start())][0], ' '.join(m.group(1).split())))
    return out


def commands(line):
    """The commands of one shell line: argv lists split at &&, ||, ; and |, comments, redirections and VAR=value
    prefixes dropped, optional [--flag value] groups kept as if given."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    argv, out, optional, redirect = [], [], False, False
    for token in list(lex) + [';']:
        if redirect or token in ('>', '>>', '<'):         # A redirection and its file are the shell's, not ours.
            redirect = not redirect
            continue
        if token in ('&&', '||', ';', '|', '&'):
            while argv and re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', argv[0]):
                argv.pop(0)
            if argv:
                out.append(argv)
            argv = []
            continue
        if token.startswith('[-'):                     # [--flag value]: shown as optional, checked as given.
            token, optional = token[1:], True
        if optional and token.endswith(']'):
            token, optional = token[:-1], False
        argv.append(token)
    return out


def ours(argv):
    """(script, args) when argv runs one of this repository's scripts with python, or the `eg3d-rlhf` command (script
    'eg3d-rlhf NAME', or 'eg3d-rlhf train METHOD'), else None (pip, pytest, ...)."""
    if len(argv) >= 2 and argv[0] in ('python', 'python3') and SCRIPTS.match(argv[1]):
        return argv[1], argv[2:]
    if len(argv) >= 2 and argv[0] == 'eg3d-rlhf' and not argv[1].startswith('-'):
        if argv[1] == 'train' and len(argv) >= 3 and methods.by_command(argv[2]) is not None:
            return f'eg3d-rlhf train {argv[2]}', argv[3:]
        return f'eg3d-rlhf {argv[1]}', argv[2:]
    return None


def documented_commands():
    """[(where 'file:line', script, args)] of every command of ours in the docs."""
    found = []
    for path in doc_paths():
        for lineno, line in shell_lines(open(path, encoding='utf-8').read()):
            for argv in commands(line):
                cmd = ours(argv)
                if cmd is not None:
                    found.append((f'{os.path.relpath(path, REPO)}:{lineno}', *cmd))
    return found

#----------------------------------------------------------------------------
# The click commands and what they make of the arguments.

@functools.lru_cache(maxsize=None)
def click_command(script):
    """The click command a script's `if __name__ == '__main__':` block calls, or the one `eg3d-rlhf NAME` runs."""
    if script.startswith('eg3d-rlhf '):
        words = script.split()[1:]
        if len(words) == 2:                                            # eg3d-rlhf train METHOD
            return importlib.import_module('train').method_command(methods.by_command(words[1]))
        found = importlib.import_module('tools.__main__').commands()
        if words[0] not in found:
            raise click.UsageError(f'no such eg3d-rlhf command: {words[0]}')
        return importlib.import_module(found[words[0]][0]).main
    path = os.path.join(REPO, script)
    if not script.endswith('.py') or not os.path.isfile(path):
        raise click.UsageError(f'no such script: {script}')
    tree = ast.parse(open(path, encoding='utf-8').read())
    names = [n.func.id for node in tree.body if isinstance(node, ast.If) and '__main__' in ast.unparse(node.test)
        for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert names, f'{script} has no `if __name__ == "__main__": main()`'
    if script.startswith('benchmarks/'):
        spec = importlib.util.spec_from_file_location(f'docs_{os.path.basename(script)[:-3]}', path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(path))                   # As when it runs as a script: its folder first.
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(os.path.dirname(path))
    else:
        module = importlib.import_module(script[:-3].replace('/', '.'))
    cmd = getattr(module, names[0])
    assert isinstance(cmd, click.Command), f'{script}: {names[0]} is not a click command'
    return cmd


def parse(cmd, name, args, parent=None):
    """[(command, context, options given)] down the group chain; click.UsageError naming what is wrong. Parses like
    click (every option known, its arity, no stray arguments, required options given) and converts the values of
    choice, number and bool options; paths are not opened and callbacks do not run."""
    ctx = click.Context(cmd, info_name=name, parent=parent)
    opts, rest, _order = cmd.make_parser(ctx).parse_args(args=list(args))
    for param in cmd.params:
        if param.required and param.name not in opts and '--help' not in args:
            raise click.MissingParameter(ctx=ctx, param=param)
        if param.name in opts and isinstance(param.type, CHECKED_TYPES) and not getattr(param, 'is_flag', False):
            value = opts[param.name]
            for v in value if isinstance(value, (list, tuple)) else [value]:
                param.type.convert(v, param, ctx)
    chain = [(cmd, ctx, opts)]
    if isinstance(cmd, click.Group):
        if not rest:
            raise click.UsageError('Missing command.', ctx=ctx)
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            raise click.UsageError(f'No such command {rest[0]!r}.', ctx=ctx)
        return chain + parse(sub, rest[0], rest[1:], parent=ctx)
    if rest and not ctx.allow_extra_args:
        raise click.UsageError(f'Got unexpected extra argument{"s" if len(rest) > 1 else ""} ({" ".join(rest)})', ctx=ctx)
    return chain


def problem(script, args):
    """None when the command parses, else one line saying why not."""
    try:
        parse(click_command(script), script, args)
    except click.UsageError as err:
        return f'{err.format_message()}'
    return None


def is_input(param, value):
    """Whether an option's or argument's value names a file the command reads: not an output (cli.Writable); a
    click.Path, a value of a metavar that names a kind of file (PT, BANK, ...) other than a keyword the metavar lists
    (bundled, template, ...), or anything with a / or a file extension."""
    if isinstance(param.type, Writable) or not isinstance(value, str):
        return False
    if isinstance(param.type, click.Path):
        return True
    words = re.findall(r'[A-Za-z][\w.-]*', param.metavar or '')
    if value in words:
        return False
    return any(w in FILE_KINDS for w in words) or '/' in value or re.search(r'\.[A-Za-z][A-Za-z0-9]*$', value) is not None


@functools.lru_cache(maxsize=None)
def shipped(path):
    """Does the checkout ship `path` (a file or folder git tracks)? Not what a run left in an ignored folder."""
    listed = subprocess.run(['git', '-C', REPO, 'ls-files', '--', path], capture_output=True, text=True)
    return os.path.exists(os.path.join(REPO, path)) and (listed.returncode != 0 or bool(listed.stdout.strip()))


def runnable_dry(script, args):
    """True when the (sub)command takes --dry-run and every file it reads ships with the checkout (no $VARIABLE, no
    elided `...` path)."""
    try:
        chain = parse(click_command(script), script, args)
    except click.UsageError:                            # test_every_documented_command_parses names it.
        return False
    if not any(p.name == 'dry_run' for p in chain[-1][0].params):
        return False
    for cmd, _ctx, opts in chain:
        for param in cmd.params:
            values = opts.get(param.name)
            for v in values if isinstance(values, (list, tuple)) else [values]:
                if is_input(param, v) and ('$' in v or '...' in v or not shipped(v)):
                    return False
    return True

#----------------------------------------------------------------------------

DOCUMENTED = documented_commands()


def test_the_docs_show_both_demos_and_many_commands():
    shown = {' '.join([script, *args]) for _where, script, args in DOCUMENTED}
    assert 'train.py --reward=sigma --lambda-r=10' in shown and 'train.py --generator=flow --method=circular-dpo' in shown
    assert len({script for _where, script, _args in DOCUMENTED}) >= 20, sorted(shown)


def test_every_documented_command_parses():
    problems = [f'{where}: python {script} {shlex.join(args)}: {problem(script, args)}'
        for where, script, args in DOCUMENTED if problem(script, args) is not None]
    assert not problems, '\n'.join(problems)


def test_the_parser_fails_on_a_misspelt_flag_a_bad_value_or_a_stray_argument():
    text = '''Text with `python tools/score_bank.py --reward-model R.pt --bank b --out s.csv` inline.

```bash
# A comment, then two commands on one line and one over three
pip install -e . && python tools/extract_sigma.py --network bundled --seedz 0-3 --outdir out/x
python train.py --reward=sigma \\
    --lambda-r=10 [--reward-loss=pairwise] --tau=0.2   # a comment
T=x.pkl python tools/guide.py flow --reward-model r.pt --outdir o stray > log.txt
python train.py --reward=sigmaa
python -m pytest -q
```
'''
    found = [(ours(argv), lineno) for lineno, line in shell_lines(text) for argv in commands(line) if ours(argv)]
    assert [(script, lineno) for (script, _args), lineno in found] == [
        ('tools/extract_sigma.py', 5), ('train.py', 6), ('tools/guide.py', 8), ('train.py', 9), ('tools/score_bank.py', 1)]
    assert found[1][0][1] == ['--reward=sigma', '--lambda-r=10', '--reward-loss=pairwise', '--tau=0.2']
    said = [problem(*cmd) for cmd, _lineno in found]
    assert said[0].startswith("No such option '--seedz'") and said[1] is None and said[4] is None, said
    assert said[2] == 'Got unexpected extra argument (stray)' and "'sigmaa' is not one of" in said[3], said
    assert 'Missing option' in problem('tools/score_bank.py', ['--bank', 'b', '--out', 's.csv'])


def test_the_eg3d_rlhf_command_is_checked_as_well():
    assert ours(['eg3d-rlhf', 'train', 'circular-dpo', '--variant', 'circular']) == (
        'eg3d-rlhf train circular-dpo', ['--variant', 'circular'])
    assert problem('eg3d-rlhf train circular-dpo', ['--variant', 'circular']) is None
    assert "No such option '--lambda-r'" in problem('eg3d-rlhf train circular-dpo', ['--lambda-r', '3'])
    assert problem('eg3d-rlhf train', ['--reward=sigma']) is None and problem('eg3d-rlhf headline', ['--check']) is None
    assert 'no such eg3d-rlhf command: trian' in problem('eg3d-rlhf trian', [])


def test_documented_dry_runs_run_and_write_nothing(tmp_path, monkeypatch):
    """Every documented command whose inputs ship with the checkout, with --dry-run, from an empty folder holding only
    a link to checkpoints/: exit status 0 and nothing written."""
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.join(REPO, 'checkpoints'), tmp_path / 'checkpoints')
    runs = {}
    for where, script, args in DOCUMENTED:
        if runnable_dry(script, args) and not where.startswith('docs/results/'):   # Records of another machine's files.
            runs.setdefault((script, tuple(args)), where)
    assert ('train.py', ('--reward=sigma', '--lambda-r=10')) in runs
    assert ('train.py', ('--generator=flow', '--method=circular-dpo')) in runs
    failed = []
    for (script, args), where in sorted(runs.items(), key=lambda kv: kv[1]):
        result = CliRunner().invoke(click_command(script), [*args, '--dry-run'], prog_name=script)
        if result.exit_code != 0:
            failed.append(f'{where}: python {script} {shlex.join(args)} --dry-run: exit {result.exit_code}: '
                f'{result.output.strip().splitlines()[-1:] or result.exception!r}')
    assert not failed, '\n'.join(failed)
    assert sorted(os.listdir(tmp_path)) == ['checkpoints'], 'a dry run wrote files'


def test_every_relative_link_and_picture_of_the_docs_resolves():
    broken = []
    for path in doc_paths():
        text = re.sub(r'```.*?```', '', open(path, encoding='utf-8').read(), flags=re.S)
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            file, _, anchor = target.partition('#')
            if re.match(r'^[a-z]+:', file):
                continue
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            if not os.path.exists(resolved):
                broken.append(f'{os.path.relpath(path, REPO)}: {target}')
            elif anchor and resolved.endswith('.md'):
                slugs = {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-')
                    for h in re.findall(r'^#+ (.+)$', open(resolved, encoding='utf-8').read(), re.M)}
                if anchor not in slugs:
                    broken.append(f'{os.path.relpath(path, REPO)}: {target} (no such heading)')
    assert not broken, broken
