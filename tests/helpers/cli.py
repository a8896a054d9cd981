"""Checks on what a command did: ran, or refused in one line with no traceback; files unchanged by digest."""

import hashlib
import os

from click.testing import CliRunner

#----------------------------------------------------------------------------

def digest(path):
    """SHA-256 hex digest of the file at `path` (a pathlib.Path)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder):
    """{relative path: sha256} of every file under `folder`."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob('*')) if p.is_file()}


def sentinel(folder):
    """A file someone keeps in the folder a tool runs in; returns a check that it alone is there, unchanged."""
    path = folder / 'notes.txt'
    path.write_text('work that must survive a refused command\n')
    before = digest(path)
    return lambda: os.listdir(folder) == ['notes.txt'] and digest(path) == before


def invoke(command, args, expect=None, **kwargs):
    """CliRunner's result of click `command` on args (each made a string); with `expect`, its exit code must be that."""
    result = CliRunner().invoke(command, [str(a) for a in args], **kwargs)
    assert expect is None or result.exit_code == expect, result.output[-3000:] + repr(result.exception)
    return result


def tool(command, *prefix):
    """A function running click `command` on (*prefix, *args): `run = tool(replicate.main)`; `run('--seeds', 3)`."""
    return lambda *args, **kwargs: invoke(command, [*prefix, *args], **kwargs)


def ran(command, args):
    """CliRunner's result of click `command` on args (each made a string), which must have exited with 0."""
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def refused_in_one_line(result, message):
    """The command failed with a one-line error naming `message`, and no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert message in result.output and 'Traceback' not in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.startswith('Error')]) == 1, result.output

#----------------------------------------------------------------------------
