"""The label server under hostile but ordinary use: bad request bodies, an --out it cannot append to, one server per
file and annotator, and what a crash or two servers leave in a label file."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from eg3d_rlhf.data import label_server
from eg3d_rlhf.data import labeling as L
from eg3d_rlhf.data import preferences as P
from tests.conftest import REPO
from tests.helpers.cli import digest, refused_in_one_line
from tests.helpers.label import Running, fake_bank, judge, ok, request, session, start_process
from tools import label

#----------------------------------------------------------------------------

@pytest.fixture
def labelled(tmp_path):
    """A server of alice over a label file that holds one judgement already."""
    out = tmp_path / 'l.jsonl'
    with Running(fake_bank(tmp_path / 'bank'), out) as s:
        judge(s.port, json.loads(request(s.port, 'GET', '/api/state')[1]), 'a')
        yield s, out


def post_raw(port, path, body, lengths):
    """(status, error) of a JSON POST whose Content-Length headers are `lengths` exactly (None: the body's length)."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    conn.putrequest('POST', path)
    conn.putheader('Content-Type', 'application/json')
    for value in [str(len(body))] if lengths is None else lengths:
        conn.putheader('Content-Length', value)
    conn.endheaders(body)
    response = conn.getresponse()
    error = json.loads(response.read())['error']
    conn.close()
    return response.status, error


@pytest.mark.parametrize('path, lengths, body, status, message', [
    ('/api/judge', [], b'', 411, 'a Content-Length is required'),
    ('/api/undo', [], b'', 411, 'a Content-Length is required'),            # Before: undone, as if {} were sent.
    ('/api/judge', ['-1'], b'', 400, 'a whole number of bytes'),            # Before: 413.
    ('/api/judge', ['12abc'], b'', 400, 'a whole number of bytes'),
    ('/api/judge', ['\xb2'], b'', 400, 'a whole number of bytes'),          # Before: no answer (int('\xb2') raised).
    ('/api/judge', ['2', '3'], b'', 400, 'expected one Content-Length'),
    ('/api/judge', ['4097'], b'', 413, 'at most 4096'),                     # Refused before reading a byte.
    ('/api/judge', ['9' * 40], b'', 413, 'at most 4096'),
    ('/api/judge', None, b'[' * 3000, 400, 'nested too deeply'),            # Before: no answer (RecursionError).
    ('/api/undo', None, b'[' * 2000 + b']' * 2000, 400, 'nested too deeply'),            # Valid JSON, too deep.
    ('/api/judge', None, b'{"a": "\xff", "b": "x", "choice": "a"}', 400, 'not JSON'),     # Before: 409.
    ('/api/judge', None, b'', 400, 'not JSON'),
    ('/api/judge', None, b'[1]', 400, 'expected {"a": ID'),
    ('/api/judge', None, b'{"a": null, "b": null, "choice": "a"}', 400, 'all strings'),      # Before: 409 'None vs None'.
    ('/api/judge', None, b'{"a": "x", "b": "y", "choice": "a", "c": {"d": []}}', 400, 'expected {"a": ID'),
    ('/api/judge', None, b'{"a": "x", "b": "y", "choice": "left"}', 400, 'choice must be one of a, b, tie, skip'),
    ('/api/undo', None, b'[]', 400, 'an undo takes an empty JSON object'),  # Before: undone.
    ('/api/undo', None, b'{"id": "x"}', 400, 'an undo takes an empty JSON object'),
])
def test_bad_bodies_are_refused_and_nothing_is_written(labelled, path, lengths, body, status, message):
    s, out = labelled
    before, state = digest(out), request(s.port, 'GET', '/api/state')
    got = post_raw(s.port, path, body, lengths)
    assert got[0] == status and message in got[1], got
    assert digest(out) == before and request(s.port, 'GET', '/api/state') == state    # Still serving the same pair.


@pytest.mark.parametrize('client', ['stalls', 'hangs up'])
def test_a_body_shorter_than_its_length_is_refused(labelled, monkeypatch, client):
    monkeypatch.setattr(label_server.Handler, 'timeout', 1)
    s, out = labelled
    before = digest(out)
    with socket.create_connection(('127.0.0.1', s.port), timeout=10) as conn:
        conn.sendall(b'POST /api/undo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
            b'Content-Length: 50\r\n\r\n{}')
        if client == 'hangs up':
            conn.shutdown(socket.SHUT_WR)
        answer = conn.makefile('rb').read()
    expected = b'408' if client == 'stalls' else b'400'                    # Before: 500 'not saved: timed out'.
    assert answer.split(b' ')[1] == expected, answer
    assert digest(out) == before and request(s.port, 'GET', '/api/state')[0] == 200


def snapshot(folder):
    """{relative path: sha256 of a regular file, or what else it is} of everything under `folder`."""
    return {str(p.relative_to(folder)): digest(p) if p.is_file() and not p.is_symlink() else p.stat().st_mode
        for p in folder.rglob('*')}


def deny_writes_like_a_user(monkeypatch):
    """Root may write anywhere: make os.access answer as the owner of a file would, by its mode bits."""
    if os.geteuid() == 0:
        access = os.access
        monkeypatch.setattr(os, 'access', lambda path, mode: access(path, mode) and (not mode & os.W_OK
            or bool(os.stat(path).st_mode & 0o200)))


LINE = json.dumps(dict(a='seed000001', b='seed000002', choice='a', annotator='x', time='2026-11-22T10:00:00+00:00'))


@pytest.mark.parametrize('kind, message', [
    ('a folder', 'l.jsonl: not a regular file'),                           # Before: served, then 500 on every judgement.
    ('a fifo', 'l.jsonl: not a regular file'),                             # Before: served; the first judgement hung.
    ('a read-only file', 'l.jsonl: this user cannot read and append to it; fix its permissions'),
    ('in a read-only folder', 'is not writable; fix its permissions, or choose another --out'),
    ('a corrupt line', 'l.jsonl:2: not JSON (Expecting value at line 1 column 1) (fix the file, or choose another --out)'),
    ('not UTF-8', 'l.jsonl: not UTF-8 text'),
])
def test_serve_refuses_an_out_it_cannot_append_to(served, tmp_path, monkeypatch, kind, message):
    bank_dir = fake_bank(tmp_path / 'bank')
    work = tmp_path / 'work'
    work.mkdir()
    out = work / 'l.jsonl'
    if kind == 'a folder':
        out.mkdir()
    elif kind == 'a fifo':
        os.mkfifo(out)
    elif kind == 'in a read-only folder':
        out = work / 'ro' / 'l.jsonl'
        out.parent.mkdir()
        out.parent.chmod(0o555)
    else:
        out.write_bytes({'a read-only file': LINE + '\n', 'a corrupt line': f'{LINE}\nnot json\n{LINE}\n',
            'not UTF-8': f'{LINE}\n\xff\n'}[kind].encode('latin-1'))
        out.chmod(0o444 if kind == 'a read-only file' else 0o644)
    deny_writes_like_a_user(monkeypatch)
    before = snapshot(work)
    for dry_run in ([], ['--dry-run']):
        result, seen = served('--bank', bank_dir, '--out', out, '--annotator', 'dave', *dry_run)
        refused_in_one_line(result, message)
        assert seen == {} and snapshot(work) == before                      # No lock file either.
    out.parent.chmod(0o755)


def test_one_server_per_file_and_annotator(served, tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank')
    out = tmp_path / 'l.jsonl'
    out.write_text(LINE.replace('"x"', '"erin"') + '\n')
    os.symlink(out, tmp_path / 'link.jsonl')
    before = digest(out)
    base = ['--bank', bank_dir, '--annotator', 'dave', '--out']
    held = L.lock_annotator(str(out), 'dave')                               # Another server of dave, as far as flock sees.
    try:
        for path in (out, tmp_path / 'link.jsonl'):                         # By any name.
            result, seen = served(*base, path)
            refused_in_one_line(result, f'{path}: dave is labeling it already in another server (pid {os.getpid()}); '
                'stop that one first, or label as another --annotator')
            assert seen == {} and digest(out) == before
        ok(served(*base, out, '--annotator', 'fay')[0])                     # Others may label the same file.
        ok(served(*base, out, '--dry-run')[0])                              # A dry run serves nothing: no lock.
    finally:
        held.close()
    assert ok(served(*base, out)[0]) and ok(served(*base, out)[0])         # The lock file left behind binds no one.
    assert (tmp_path / 'l.jsonl.dave.lock').read_text() == f'{os.getpid()}\n' and digest(out) == before


@pytest.mark.parametrize('kind', ['a symlink to a file', 'a symlink to nowhere', 'a fifo'])
def test_a_planted_lock_file_is_refused_and_what_it_points_to_is_untouched(served, tmp_path, kind):
    bank_dir = fake_bank(tmp_path / 'bank')
    out = tmp_path / 'l.jsonl'
    out.write_text(LINE + '\n')
    victim = tmp_path / 'thesis.txt'
    victim.write_text('a week of work\n')
    before = snapshot(tmp_path)
    lock = f'{os.path.realpath(out)}.dave.lock'
    if kind == 'a fifo':
        os.mkfifo(lock)
    else:
        os.symlink(victim if kind == 'a symlink to a file' else tmp_path / 'made.txt', lock)
    result, seen = served('--bank', bank_dir, '--out', out, '--annotator', 'dave')
    refused_in_one_line(result, f'{lock}: ' + ('not a regular file where a lock file goes; remove it' if kind == 'a fifo'
        else 'a symbolic link where a lock file goes; remove it'))          # Before: the file it named was emptied.
    os.unlink(lock)
    assert seen == {} and snapshot(tmp_path) == before                     # thesis.txt as it was, no made.txt.


def test_serve_resumes_after_what_the_last_server_of_its_annotator_saved(served, tmp_path, monkeypatch):
    lock = L.lock_annotator
    def saved_just_before_letting_go(path, annotator):                      # Between loading the file and locking.
        L.append_record(path, dict(a='seed000000', b='seed000001', choice='a', annotator=annotator, time=P.now(), id='x'))
        return lock(path, annotator)
    monkeypatch.setattr(L, 'lock_annotator', saved_just_before_letting_go)
    result, seen = served('--bank', fake_bank(tmp_path / 'bank'), '--out', tmp_path / 'l.jsonl', '--annotator', 'dave')
    assert ok(result) and seen['state']['done'] == 1 and seen['state']['last']['id'] == 'x'


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_killed_one_binds_no_one(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank')
    args = ['--bank', bank_dir, '--out', str(tmp_path / 'l.jsonl'), '--annotator', 'alice']
    proc, port, _ = start_process(*args)
    try:
        judge(port, json.loads(request(port, 'GET', '/api/state')[1]), 'a')
        second = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'label.py'), 'serve', '--port', '0', *args],
            capture_output=True, text=True, cwd=REPO, timeout=120)
        assert second.returncode == 1 and 'Traceback' not in second.stderr
        assert f'alice is labeling it already in another server (pid {proc.pid})' in second.stderr
        other, _, _ = start_process(*args[:-1], 'bob')                     # Another annotator is welcome.
        other.kill()
        other.wait()
    finally:
        proc.send_signal(signal.SIGKILL)                                    # No clean exit: the lock file stays.
        proc.wait()
    again, port, output = start_process(*args)                              # ... and binds no one.
    again.kill()
    again.wait()
    assert '1/10 judged' in output


def test_two_servers_of_one_annotator_leave_a_file_everyone_can_load(tmp_path, capsys):
    """The issue's failure: two sessions of alice judge the same pairs; before, the loader refused the whole file
    ('alice already judged ...'), so no one could start a server, train or count agreement."""
    bank_dir = fake_bank(tmp_path / 'bank')
    out = tmp_path / 'l.jsonl'
    one, two = session(bank_dir, out), session(bank_dir, out)              # Same seed: the same pairs in order.
    first, second = [], []
    for choice_one, choice_two in (('a', 'b'), ('tie', 'a')):
        for s, choice, shown in ((one, choice_one, first), (two, choice_two, second)):
            cur = s.state()['current']
            shown.append((cur['a'], cur['b']))
            s.judge(cur['a'], cur['b'], choice)
    assert first == second
    with pytest.warns(P.LabelWarning, match=r'l.jsonl: 2 judgement\(s\) dropped, made again later by the same '
            r'annotator \(two label servers at once\?\), the first on line 1; the latest of each pair counts'):
        assert [(j.a, j.b, j.choice) for j in P.load_judgements(str(out))] == [(*first[0], 'b'), (*first[1], 'a')]
    one.undo()                                                              # Takes back one's own judgement only.
    with pytest.warns(P.LabelWarning, match=r'1 judgement\(s\) dropped, .* on line 1;'):
        assert [j.choice for j in P.load_judgements(str(out))] == ['b', 'a']
    assert session(bank_dir, out, annotator='bob').state()['done'] == 0
    assert session(bank_dir, out).state()['done'] == 2
    assert capsys.readouterr().err.count('l.jsonl: 1 judgement(s) dropped') == 2           # One line per start.
    before = digest(out)
    result = ok(CliRunner().invoke(label.main, ['stats', str(out)]))
    assert result.output.count('warning: ') == 1 and 'alice' in result.output and digest(out) == before


def test_a_kill_mid_append_leaves_a_file_that_loads(tmp_path, capsys):
    bank_dir = fake_bank(tmp_path / 'bank')
    out = tmp_path / 'l.jsonl'
    s = session(bank_dir, out)
    for choice in ('a', 'b'):
        s.judge(s.state()['current']['a'], s.state()['current']['b'], choice)
    with open(out, 'a') as f:                                               # What a write cut short leaves.
        f.write(json.dumps(dict(a='seed000003', b='seed000004', choice='a', annotator='alice'))[:40])
    before = digest(out)
    again = session(bank_dir, out)                                          # Before: 'l.jsonl:3: not JSON'.
    assert capsys.readouterr().err == f'warning: {out}:3: skipped the last line: a crash cut it short (no newline)\n'
    assert again.state()['done'] == 2 and digest(out) == before
    again.judge(again.state()['current']['a'], again.state()['current']['b'], 'tie')    # Closes the torn line.
    with pytest.warns(P.LabelWarning, match=f'{out}:3: skipped a line a crash cut short'):
        assert [j.choice for j in P.load_judgements(str(out))] == ['a', 'b', 'tie']
    result = ok(CliRunner().invoke(label.main, ['stats', str(out)]))
    assert result.output.count('warning: ') == 1 and f'warning: {out}:3: skipped' in result.output


@pytest.mark.parametrize('lines, message', [
    ([LINE, 'garbage', LINE.replace('"x"', '"y"')], ':2: not JSON'),                          # Mid-file: no crash did that.
    ([LINE, '{"a": "seed0', 'garbage', json.dumps(dict(json.loads(LINE), annotator='y', after_torn_line=True))],
        ':2: not JSON'),                                                                        # Only one line is vouched for.
    ([LINE, 'garbage', json.dumps(dict(json.loads(LINE), annotator='y', after_torn_line='yes'))], ':2: not JSON'),
    ([LINE, '{"a": "seed0'], ':2: not JSON'),                                                 # Whole, newline and all.
    ([json.dumps(dict(json.loads(LINE), id='1')), LINE], ':2: x already judged seed000001 vs seed000002 on line 1'),
])
def test_corrupt_lines_stay_errors_naming_file_and_line(tmp_path, lines, message):
    path = tmp_path / 'l.jsonl'
    path.write_text(''.join(line + '\n' for line in lines))
    before = digest(path)
    refused_in_one_line(CliRunner().invoke(label.main, ['stats', str(path)]), f'{path}{message}')
    assert digest(path) == before

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# stats --json: never over the labels it reads, nor over a file without --force.

def test_stats_never_writes_over_its_labels_nor_an_existing_file_without_force(tmp_path):
    labels = tmp_path / 'l.jsonl'
    labels.write_text(LINE + '\n')
    os.symlink(labels, tmp_path / 'link.json')
    existing = tmp_path / 'agreement.json'
    existing.write_text('{"kept": true}\n')
    before = snapshot(tmp_path)
    stats = lambda *args: CliRunner().invoke(label.main, ['stats', str(labels), *map(str, args)])
    for out in (labels, tmp_path / 'link.json'):
        for force in ([], ['--force']):                                     # Before: the judgements were replaced.
            refused_in_one_line(stats('--json', out, *force), f'{out} would write over LABELS {labels}, which this '
                'command reads')
    refused_in_one_line(stats('--json', existing), f'{existing} exists; pass --force to replace it')
    assert snapshot(tmp_path) == before
    ok(stats('--json', existing, '--force'))
    assert 'kept' not in json.loads(existing.read_text()) and digest(labels) == before['l.jsonl']

#----------------------------------------------------------------------------
# The Host check stays on when the server listens on every address (DNS rebinding reaches 0.0.0.0 too).

def test_a_server_on_every_address_answers_only_its_own_names(tmp_path):
    from eg3d_rlhf.data import invites
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.data.label_pages import Sessions
    bank = Bank(fake_bank(tmp_path / 'bank'))
    out = str(tmp_path / 'l.jsonl')
    token = invites.invite(out, 'alice')
    sessions = Sessions(out, lambda name: L.open_session(out, name, bank.ids, 5))
    servers = [label_server.LabelServer(('0.0.0.0', 0), bank, None, sessions=sessions, invites=invites.Invites(out),
        allow_hosts=allow) for allow in ((), ('Labbox.Local:8765', 'evil.example'))]
    try:
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        plain, allowing = (s.server_address[1] for s in servers)
        get = lambda port, host: request(port, 'GET', f'/api/state?token={token}', host=host)[0]
        for host in ('evil.example', f'evil.example:{plain}', 'labbox.local', 'localhost.evil.example', ''):
            assert get(plain, host) == 421, host                             # Before: 200, with no Host check at all.
        for host in (f'127.0.0.1:{plain}', 'localhost', f'[::1]:{plain}', socket.gethostname(), socket.getfqdn()):
            assert get(plain, host) == 200, host
        for host in ('evil.example', 'LABBOX.local:8765', f'localhost:{allowing}'):
            assert get(allowing, host) == 200, host                          # --allow-host adds names, ...
        assert get(allowing, 'attacker.example') == 421                      # ... and only those.
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        sessions.close()


def test_allow_host_is_a_serve_option_and_the_accepted_names_are_printed(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(label.LabelServer, 'serve_forever', lambda self: seen.update(hosts=self.hosts))
    args = ['serve', '--port', '0', '--bank', fake_bank(tmp_path / 'bank'), '--out', str(tmp_path / 'l.jsonl'),
        '--host', '0.0.0.0', '--allow-host', 'labbox.local', '--allow-host', '192.168.1.5']
    result = ok(CliRunner().invoke(label.main, args))
    assert {'labbox.local', '192.168.1.5', 'localhost', '127.0.0.1', socket.gethostname().lower()} <= seen['hosts']
    assert 'evil.example' not in seen['hosts'] and 'answering Host names ' in result.output
    assert label_server.allowed_hosts('::') == seen['hosts'] - {'0.0.0.0', 'labbox.local', '192.168.1.5'} | {'::'}
    result = CliRunner().invoke(label.main, args[:-1] + ['http://evil.example/'])
    assert result.exit_code == 2 and "Invalid value for '--allow-host'" in result.output, result.output

#----------------------------------------------------------------------------
# Replacing a study or ratings file (--force): one holder at a time, old files aside under names never reused.

def test_move_aside_never_writes_over_a_name_and_moves_all_or_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(L, 'now', lambda: '2030-01-02T03:04:05+00:00')
    stamp = '2030-01-02T030405+0000'
    labels, checks = tmp_path / 'l.jsonl', tmp_path / 'l.jsonl.attention'
    labels.write_text('labels\n')
    checks.mkdir()
    (checks / 'x').write_text('x')
    taken = tmp_path / f'l.jsonl.attention.replaced-{stamp}'
    taken.mkdir()                                       # Empty: a plain rename would replace it.
    names = L.move_aside(str(labels), str(checks), str(tmp_path / 'missing'))
    assert names == [f'{labels}.replaced-{stamp}-2', f'{checks}.replaced-{stamp}-2']    # One suffix for all.
    assert open(names[0]).read() == 'labels\n' and os.listdir(names[1]) == ['x'] and os.listdir(taken) == []
    assert not labels.exists() and not checks.exists() and not (tmp_path / f'l.jsonl.replaced-{stamp}').exists()
    for name in names:
        os.rename(name, name.split('.replaced-')[0])
    real = os.replace

    def refuse_the_folder(src, dst):
        if src == str(checks):
            raise PermissionError(13, 'Permission denied', src)
        real(src, dst)
    monkeypatch.setattr(os, 'replace', refuse_the_folder)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(PermissionError):
        L.move_aside(str(labels), str(checks))
    assert sorted(os.listdir(tmp_path)) == before and labels.read_text() == 'labels\n'   # The first move undone.


def test_servers_share_a_labels_file_and_a_replacing_start_needs_it_alone(tmp_path):
    out = str(tmp_path / 's.jsonl')
    held = [L.hold_labels(out), L.hold_labels(out)]     # Two servers of one study.
    assert open(f'{out}.lock').read().split() == [str(os.getpid())] * 2
    while held:
        with pytest.raises(L.LabelError) as refused:
            L.hold_labels(out, exclusive=True)
        assert str(refused.value) == f'{out} is being served by another process (pid {os.getpid()}); stop it first'
        held.pop().close()
    alone = L.hold_labels(out, exclusive=True)
    with pytest.raises(L.LabelError, match='being served by another process'):
        L.hold_labels(out, exclusive=True)
    L.share_hold(alone)
    L.hold_labels(out).close()                          # Once shared, servers join.
    alone.close()

#----------------------------------------------------------------------------
