"""Invited annotators under hostile but ordinary use (data.invites, tools/label.py invite): an invites file that is a
FIFO, a device or huge is refused in one line, and a server whose invites file is damaged lets nobody in but serves on."""

import os
import re

import pytest
from click.testing import CliRunner

from eg3d_rlhf.data import invites as I
from eg3d_rlhf.data import labeling as L
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.label_pages import Sessions
from tests.helpers.cli import refused_in_one_line
from tests.helpers.label import fake_bank
from tests.helpers.mutations import run_within
from tests.helpers.study import Recorded, call
from tools import label

#----------------------------------------------------------------------------

def damage(path, kind):
    """Put `kind` where the invites file `path` is: a FIFO, a link to a character device, or a huge (sparse) file."""
    if os.path.lexists(path):
        os.remove(path)
    if kind == 'a FIFO':
        os.mkfifo(path)
    elif kind == 'a character device':
        os.symlink(os.devnull, path)
    else:
        with open(path, 'wb') as f:
            f.truncate(64 << 20)                        # Four times the limit; sparse: no disk used.
    return f'{path}: larger than 16 MiB' if kind == 'huge' else f'{path}: not a regular file ({kind})'


KINDS = ['a FIFO', 'a character device', 'huge']


@pytest.mark.parametrize('kind', KINDS)
def test_invite_refuses_an_invites_file_that_is_no_regular_file(tmp_path, kind):
    out = str(tmp_path / 'l.jsonl')
    message = damage(I.invites_path(out), kind)
    result = run_within(20, lambda: CliRunner().invoke(label.main, ['invite', 'bob', '--out', out]))
    refused_in_one_line(result, message)                # Before: waited for a writer of the FIFO.
    assert 'delete it and invite again' in result.output


@pytest.mark.parametrize('kind', KINDS)
def test_a_damaged_invites_file_lets_nobody_in_and_the_server_serves_on(tmp_path, kind):
    bank = Bank(fake_bank(tmp_path / 'bank', count=4))
    out = str(tmp_path / 'l.jsonl')
    token = I.invite(out, 'alice')
    sessions = Sessions(out, lambda name: L.open_session(out, name, bank.ids, 3))
    invites = I.Invites(out)
    with Recorded(None, lambda t: (bank, t) if t in bank else None, host='0.0.0.0', sessions=sessions,
            invites=invites) as s:
        assert call(s.port, 'GET', f'/api/state?token={token}')[0] == 200
        message = damage(invites.path, kind)
        for _ in range(2):                              # Before: each request waited for a writer, under the lock.
            assert run_within(20, lambda: call(s.port, 'GET', f'/api/state?token={token}'))[0] == 403
        with pytest.raises(I.LabelError, match=re.escape(message)):
            invites.reload()
        os.remove(invites.path)
        token = I.invite(out, 'alice')
        assert call(s.port, 'GET', f'/api/state?token={token}')[0] == 200     # Served on; the new link works.
    sessions.close()


def test_a_study_beyond_loopback_refuses_a_fifo_for_its_invites(tmp_path, monkeypatch):
    monkeypatch.setattr(label.LabelServer, 'serve_forever', lambda self: None)
    original, tuned = fake_bank(tmp_path / 'bankO'), fake_bank(tmp_path / 'bankT')
    out = str(tmp_path / 's.jsonl')
    message = damage(I.invites_path(out), 'a FIFO')
    result = run_within(20, lambda: CliRunner().invoke(label.main, ['study', '--original', original, '--tuned', tuned,
        '--out', out, '--host', '0.0.0.0', '--port', '0']))
    refused_in_one_line(result, message)                # Before: waited for a writer of the FIFO.

#----------------------------------------------------------------------------
