"""Labeling by people: eg3d_rlhf.data.labeling (pair order, shared writer, sessions, kappa), data.label_server and tools/label.py."""

import itertools
import json
import multiprocessing
import os
import re
import signal
import socket
import threading

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from eg3d_rlhf.data import label_server
from eg3d_rlhf.data import labeling as L
from eg3d_rlhf.data import preferences as P
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.scores import score_bank
from eg3d_rlhf.rewards.checkpoint import load_reward, save_reward
from tests.helpers.browser import chromium_driver
from tests.helpers.label import PICTURES, Running, fake_bank, judge, ok, read_lines, request, session, start_process
from tools import label

#----------------------------------------------------------------------------
# Pair order.

def test_random_pairs_are_every_pair_once_seeded():
    ids = [P.seed_id(i) for i in range(6)]
    first = list(L.random_pairs(ids, np.random.RandomState(3)))
    assert len(first) == 15 and len({L.pair_key(a, b) for a, b in first}) == 15 and all(a != b for a, b in first)
    assert first == list(L.random_pairs(list(reversed(ids)), np.random.RandomState(3)))
    assert first != list(L.random_pairs(ids, np.random.RandomState(4)))
    assert {a for a, b in first} != set(ids[:1])                    # Sides are drawn, not always the smaller id left.
    skip = {L.pair_key(*p) for p in first[::3]}
    assert list(L.random_pairs(ids, np.random.RandomState(3), skip=skip)) == [p for i, p in enumerate(first) if i % 3]


def test_random_pairs_of_a_big_bank_are_drawn_lazily_without_repeats():
    ids = [f's{i}' for i in range(1000)]                            # 499,500 pairs: drawn, not enumerated.
    pairs = list(itertools.islice(L.random_pairs(ids, np.random.RandomState(0)), 5000))
    assert len({L.pair_key(a, b) for a, b in pairs}) == 5000


def test_active_pairs_come_closest_scores_first():
    scores = dict(a=0.0, b=0.9, c=1.0, d=3.0, e=3.05, f=-2.0)
    pairs = list(L.active_pairs(scores, np.random.RandomState(0)))
    gaps = [abs(scores[a] - scores[b]) for a, b in pairs]
    assert len(pairs) == 15 and len({L.pair_key(a, b) for a, b in pairs}) == 15
    assert gaps == sorted(gaps) and L.pair_key(*pairs[0]) == L.pair_key('d', 'e') and L.pair_key(*pairs[1]) == L.pair_key('b', 'c')
    assert pairs[-1] in (('d', 'f'), ('f', 'e'), ('e', 'f'))          # The widest gap last: e (3.05) vs f (-2).


def test_expected_information_is_disagreement_not_closeness():
    agree_coin = L.expected_information([[0.0, 0.0, 0.0, 0.0]])        # Every member expects a coin flip: nothing to learn.
    agree_sure = L.expected_information([[4.0, 4.0, 4.0, 4.0]])
    disagree = L.expected_information([[-4.0, 4.0, -4.0, 4.0]])       # Members sure, but of opposite outcomes.
    assert abs(agree_coin[0]) < 1e-12 and abs(agree_sure[0]) < 1e-12
    p = 1 / (1 + np.exp(-4.0))
    h = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert disagree[0] == pytest.approx(np.log(2) - h)                  # H(1/2) - H(sigmoid(4)).
    assert L.expected_information(np.array([[1.0, -1.0], [2.0, -2.0]])).tolist() == sorted(
        L.expected_information(np.array([[1.0, -1.0], [2.0, -2.0]])).tolist())   # More disagreement, more gain.


def test_informative_pairs_rank_by_gain_and_spread_each_round_over_samples():
    # a and b: the members disagree about them; c, d, e, f: the members agree everywhere.
    scores = dict(a=[3.0, -3.0, 3.0], b=[-3.0, 3.0, -3.0], c=[0.0, 0.0, 0.0], d=[5.0, 5.0, 5.0], e=[0.1, 0.1, 0.1],
        f=[-5.0, -5.0, -5.0])
    pairs = list(L.informative_pairs(scores, np.random.RandomState(0)))
    keys = [L.pair_key(*p) for p in pairs]
    assert len(pairs) == 15 and len(set(keys)) == 15
    assert keys[0] == L.pair_key('a', 'b')                              # The most disputed pair first.
    first_round = keys[:3]                                              # Six samples: a matching of three pairs.
    assert len(set().union(*first_round)) == 6
    done = list(L.informative_pairs(scores, np.random.RandomState(0), exclude=[('b', 'a')]))
    assert L.pair_key('a', 'b') not in {L.pair_key(*p) for p in done} and len(done) == 14


def test_active_order_uses_disagreement_for_an_ensemble_and_closeness_for_one_model():
    rng = lambda: np.random.RandomState(1)
    single = dict(a=[0.0], b=[0.9], c=[1.0], d=[3.0])
    assert [L.pair_key(*p) for p in L.active_order(single, rng())] == [L.pair_key(*p) for p in
        L.active_pairs(dict(a=0.0, b=0.9, c=1.0, d=3.0), rng())]
    assert L.pair_key('b', 'c') not in {L.pair_key(*p) for p in L.active_order(single, rng(), exclude=[('c', 'b')])}
    ensemble = dict(a=[3.0, -3.0], b=[-3.0, 3.0], c=[0.0, 0.0], d=[0.05, 0.05])
    assert L.pair_key(*next(L.active_order(ensemble, rng()))) == L.pair_key('a', 'b')   # Not c-d, the closest scores.

#----------------------------------------------------------------------------
# The shared writer.

def _hammer(path, who, count):
    threads = [threading.Thread(target=lambda t=t: [L.append_record(path, dict(a=f'{who}{t}', b=str(k), choice='a',
        annotator=who, time=P.now(), id=f'{who}-{t}-{k}', pad='x' * 3000)) for k in range(count)]) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_two_writers_at_once_lose_and_corrupt_nothing(tmp_path):
    """Two processes of three threads each append 100 long lines apiece to one file."""
    path = str(tmp_path / 'l.jsonl')
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_hammer, args=(path, who, 100)) for who in ('alice', 'bob')]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    records = read_lines(path)                                      # Every line parses ...
    assert len(records) == 600 and len({r['id'] for r in records}) == 600   # ... and none is missing.
    assert all(len(r['pad']) == 3000 for r in records)


def test_a_torn_last_line_does_not_swallow_the_next(tmp_path):
    path = tmp_path / 'l.jsonl'
    path.write_text('{"a": "seed0')                                 # What a crash mid-write elsewhere could leave.
    L.append_record(str(path), dict(x=1))
    assert path.read_text().splitlines() == ['{"a": "seed0', '{"x": 1, "after_torn_line": true}']
    L.append_record(str(path), dict(x=2))                           # Only the record that closed it says so.
    assert path.read_text().splitlines()[2:] == ['{"x": 2}']


def test_two_servers_share_one_file(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank', count=8)
    out = tmp_path / 'l.jsonl'
    with Running(bank_dir, out, 'alice', target=20) as one, Running(bank_dir, out, 'bob', target=20) as two:
        def label_all(server):
            state = json.loads(request(server.port, 'GET', '/api/state')[1])
            while state['current'] is not None:
                state = judge(server.port, state, 'a')
        threads = [threading.Thread(target=label_all, args=(s,)) for s in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    records = read_lines(out)
    assert len(records) == 40 and sorted(r['annotator'] for r in records) == ['alice'] * 20 + ['bob'] * 20
    assert len(P.load_judgements(str(out), known_ids=Bank(bank_dir).ids)) == 40

#----------------------------------------------------------------------------
# Sessions.

def test_session_resumes_and_never_serves_a_judged_pair_again(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank', count=5)                # 10 pairs.
    out = tmp_path / 'l.jsonl'
    s = session(bank_dir, out)
    seen = []
    for choice in ('a', 'b', 'tie', 'skip'):
        cur = s.state()['current']
        seen.append(L.pair_key(cur['a'], cur['b']))
        s.judge(cur['a'], cur['b'], choice)
    again = session(bank_dir, out)                                  # A restart reads the file.
    assert again.state()['done'] == 4
    rest = []
    while again.state()['current'] is not None:
        cur = again.state()['current']
        rest.append(L.pair_key(cur['a'], cur['b']))
        again.judge(cur['a'], cur['b'], 'a')
    assert len(rest) == 6 and not set(rest) & set(seen) and again.state()['done'] == 10
    other = session(bank_dir, out, annotator='bob')                 # Another annotator starts from scratch.
    assert other.state()['done'] == 0 and other.state()['current'] is not None


def test_session_refuses_a_stale_pair_and_an_empty_undo(tmp_path):
    s = session(fake_bank(tmp_path / 'bank'), tmp_path / 'l.jsonl')
    cur = s.state()['current']
    with pytest.raises(ValueError, match='nothing to undo'):
        s.undo()
    with pytest.raises(ValueError, match='is not the pair being shown'):
        s.judge(cur['b'], cur['a'], 'a')
    assert not os.path.exists(tmp_path / 'l.jsonl')


def test_undo_serves_the_pair_again_and_the_loader_forgets_it(tmp_path):
    out = tmp_path / 'l.jsonl'
    s = session(fake_bank(tmp_path / 'bank'), out)
    first = s.state()['current']
    s.judge(first['a'], first['b'], 'tie')
    second = s.state()['current']
    state = s.undo()
    assert state['current'] == first and state['done'] == 0
    s.judge(first['a'], first['b'], 'b')
    assert s.state()['current'] == second                           # The pair shown before the undo comes back next.
    records = read_lines(out)
    assert [r.get('choice') for r in records] == ['tie', None, 'b'] and records[1]['undo_of'] == records[0]['id']
    assert [(j.a, j.b, j.choice) for j in P.load_judgements(str(out))] == [(first['a'], first['b'], 'b')]


def test_repeats_swap_sides_skip_skips_and_come_once_per_pair(tmp_path):
    out = tmp_path / 'l.jsonl'
    s = session(fake_bank(tmp_path / 'bank'), out, target=4, repeat_rate=1.0)
    shown = []
    while s.state()['current'] is not None:
        cur = s.state()['current']
        shown.append(cur)
        s.judge(cur['a'], cur['b'], 'skip' if len(shown) == 3 else 'a')
    # New, repeat, new (skipped: never repeated), new, repeat, new; then the target of 4 new pairs is met.
    assert [c['repeat'] for c in shown] == [False, True, False, False, True, False]
    assert (shown[1]['a'], shown[1]['b']) == (shown[0]['b'], shown[0]['a'])
    records = read_lines(out)
    assert [r.get('repeat', False) for r in records] == [c['repeat'] for c in shown]
    assert len(P.load_judgements(str(out))) == 4 and len(P.load_judgements(str(out), repeats=True)) == 6
    assert session(fake_bank(tmp_path / 'b0'), tmp_path / 'l0.jsonl', repeat_rate=0.0).state()['current']['repeat'] is False

#----------------------------------------------------------------------------
# Agreement.

def test_cohen_kappa_by_hand():
    x = ['first'] * 5 + ['second'] * 3 + ['tie'] * 2
    y = ['first', 'first', 'first', 'second', 'first', 'second', 'second', 'tie', 'tie', 'first']
    assert L.cohen_kappa(x, y) == pytest.approx(0.32 / 0.62)       # test_stats_reports_kappa_by_hand spells it out.
    assert L.cohen_kappa(x, x) == pytest.approx(1.0)
    assert L.cohen_kappa(['tie'] * 3, ['tie'] * 3) is None          # p_e = 1: undefined.
    assert L.cohen_kappa(['first', 'second'], ['second', 'first']) == pytest.approx(-1.0)


def stats_file(path):
    """Two annotators on 12 pairs of ids p0..p12 (written as judgements), with an undo and repeats.

    alice (X) and bob (Y) on the 10 pairs both decided (categories by the pair's sorted first id: F = first won,
    S = second won, T = tie):
        pair:  1  2  3  4  5  6  7  8  9  10
        X:     F  F  F  F  S  S  S  T  T  F
        Y:     F  F  F  S  S  S  T  T  F  F
    confusion (rows X, columns Y):
              F  S  T | sum
        F     4  1  0 |  5
        S     0  2  1 |  3
        T     1  0  1 |  2
        sum   5  3  2 | 10
    p_o = (4 + 2 + 1) / 10 = 0.7;  p_e = (5*5 + 3*3 + 2*2) / 100 = 0.38;  kappa = (0.7 - 0.38) / (1 - 0.38) = 0.516129.
    Not counted: pair 11 (bob skipped it), pair 12 (only alice), alice's undone first try at pair 1 (S), repeats."""
    X = 'FFFFSSSTTF'
    Y = 'FFFSSSTTFF'
    rows, t = [], '2026-11-21T10:00:00+00:00'

    def line(who, k, cat, swap=False, **extra):
        a, b = f'p{k:02d}a', f'p{k:02d}b'                           # a < b: F means a won.
        choice = dict(F='a', S='b', T='tie', K='skip')[cat]
        if swap:                                                    # Shown the other way round: same meaning.
            a, b, choice = b, a, dict(a='b', b='a').get(choice, choice)
        rows.append(dict(a=a, b=b, choice=choice, annotator=who, time=t, **extra))

    line('alice', 1, 'S', id='oops')
    rows.append(dict(undo_of='oops', annotator='alice', time=t))
    for k in range(10):
        line('alice', k + 1, X[k], id=f'x{k}')
        line('bob', k + 1, Y[k], swap=k % 2 == 1, id=f'y{k}')
    line('alice', 11, 'F')
    line('bob', 11, 'K')
    line('alice', 12, 'T')
    line('alice', 1, 'F', swap=True, repeat=True)                   # Agrees (F again, shown swapped).
    line('alice', 5, 'F', swap=True, repeat=True)                   # Disagrees (S before).
    line('alice', 8, 'T', swap=True, repeat=True)                   # Agrees.
    line('bob', 2, 'K', swap=True, repeat=True)                     # A skipped repeat: not counted.
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return str(path)


def test_stats_reports_kappa_by_hand(tmp_path):
    path = stats_file(tmp_path / 'l.jsonl')
    result = ok(CliRunner().invoke(label.main, ['stats', path, '--json', str(tmp_path / 's.json')]))
    numbers = json.loads((tmp_path / 's.json').read_text())
    (pair,) = numbers['pairs']
    assert pair['annotators'] == ['alice', 'bob'] and pair['shared'] == 10 and pair['agreed'] == 7
    assert pair['agreement'] == pytest.approx(0.7) and pair['kappa'] == pytest.approx(0.516129, abs=1e-6)
    alice, bob = numbers['annotators']['alice'], numbers['annotators']['bob']
    assert (alice['judgements'], alice['decided'], alice['ties'], alice['skips'], alice['repeats']) == (12, 9, 3, 0, 3)
    assert (bob['judgements'], bob['decided'], bob['ties'], bob['skips'], bob['repeats']) == (11, 8, 2, 1, 1)
    assert alice['self_consistency'] == dict(pairs=3, agreed=2, rate=pytest.approx(2 / 3))
    assert bob['self_consistency'] == dict(pairs=0, agreed=0, rate=None)
    assert "alice vs bob: 10 shared pairs, agreement 7/10 (70.0%), Cohen's kappa 0.516" in result.output
    assert re.search(r'alice +12 +9 +3 +0 +3  2/3 \(66\.7%\)', result.output)


def test_stats_refuses_bad_files(tmp_path):
    runner = CliRunner()
    result = runner.invoke(label.main, ['stats', str(tmp_path / 'nowhere.jsonl')])
    assert result.exit_code == 2 and 'does not exist' in result.output
    (tmp_path / 'empty.jsonl').write_text('\n')
    result = runner.invoke(label.main, ['stats', str(tmp_path / 'empty.jsonl')])
    assert result.exit_code == 1 and 'no judgements' in result.output
    (tmp_path / 'bad.jsonl').write_text('{"undo_of": "zz", "annotator": "a", "time": "2026-11-21T10:00:00+00:00"}\n')
    result = runner.invoke(label.main, ['stats', str(tmp_path / 'bad.jsonl'), '--json', str(tmp_path / 's.json')])
    assert result.exit_code == 1 and 'bad.jsonl:1: undoes zz' in result.output and not os.path.exists(tmp_path / 's.json')

#----------------------------------------------------------------------------
# The server: what it serves, what it refuses, and what survives a kill.

def test_serves_only_the_banks_pictures_and_its_page(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank')
    (tmp_path / 'secret.png').write_bytes(b'secret')
    with Running(bank_dir, tmp_path / 'l.jsonl') as s:
        status, page = request(s.port, 'GET', '/')
        assert status == 200 and b'Which shape is better?' in page
        for name in PICTURES:
            status, data = request(s.port, 'GET', f'/bank/seed000002/{name}')
            assert status == 200 and data == (tmp_path / 'bank' / 'seed000002' / name).read_bytes()
        for path in ['/bank/seed000002/meta.json', '/bank/seed000002/sigma_slab.npy', '/bank/seed000002/notes.png',
                '/bank/seed000099/preview_front.png', '/bank/seed000002/../seed000001/preview_front.png',
                '/bank/../secret.png', '/bank/seed000002/../../secret.png', '/bank/%2e%2e/secret.png',
                '/bank/seed000002/%2e%2e%2f%2e%2e%2fsecret.png', '/bank/seed000002%2fpreview_front.png',
                '/bank/seed000002/preview_front.png%00', '/bank/%2E%2E%2Fsecret.png', '/../secret.png',
                '/bank/' + str(tmp_path / 'secret.png'), str(tmp_path / 'secret.png'), '//etc/passwd', '/etc/passwd',
                '/bank.json', '/bank/bank.json', '/label_page.html', '/tools/label.py', '/bank/seed000002/',
                '/bank/seed000002/preview_front.png/', '/bank/seed000002//preview_front.png', '/api/judge']:
            status, data = request(s.port, 'GET', path)
            assert status == 404 and b'secret' not in data, path
        assert request(s.port, 'POST', '/api/state', {})[0] == 404
        status, data = request(s.port, 'POST', '/api/judge', dict(a='x', b='y', choice='a'), content_type='text/plain')
        assert status == 415                                        # A form on another site cannot post here.
        assert request(s.port, 'POST', '/api/judge', dict(a='x', b='y', choice='left'))[0] == 400
        status, data = request(s.port, 'POST', '/api/judge', dict(a='x', b='y', choice='a'))
        assert status == 409 and json.loads(data)['state']['current'] is not None
    assert not os.path.exists(tmp_path / 'l.jsonl')                 # Nothing was judged.


def test_symlinks_out_of_the_bank_are_never_followed(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank')
    outside = tmp_path / 'outside'
    os.makedirs(outside)
    PIL.Image.new('RGB', (8, 8), (1, 2, 3)).save(outside / 'secret.png')
    # A picture that is a symlink to a file outside, and a whole sample folder that is a symlink to a folder outside.
    os.remove(os.path.join(bank_dir, 'seed000001', 'preview_front.png'))
    os.symlink(outside / 'secret.png', os.path.join(bank_dir, 'seed000001', 'preview_front.png'))
    for name in PICTURES:
        os.symlink(outside / 'secret.png', outside / name)
    (outside / 'meta.json').write_text('{}')
    os.symlink(outside, os.path.join(bank_dir, 'seed000007'))
    # A symlink that stays inside the bank is fine.
    os.remove(os.path.join(bank_dir, 'seed000002', 'image.png'))
    os.symlink(os.path.join(bank_dir, 'seed000003', 'image.png'), os.path.join(bank_dir, 'seed000002', 'image.png'))
    secret = (outside / 'secret.png').read_bytes()
    with Running(bank_dir, tmp_path / 'l.jsonl') as s:
        for path in ['/bank/seed000001/preview_front.png'] + [f'/bank/seed000007/{name}' for name in PICTURES]:
            status, data = request(s.port, 'GET', path)
            assert status == 404 and data != secret, path
        status, data = request(s.port, 'GET', '/bank/seed000002/image.png')
        assert status == 200 and data == (tmp_path / 'bank' / 'seed000003' / 'image.png').read_bytes()


def test_a_silent_client_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(label_server.Handler, 'timeout', 1)
    bank_dir = fake_bank(tmp_path / 'bank')
    with Running(bank_dir, tmp_path / 'l.jsonl') as s:
        conn = socket.create_connection(('127.0.0.1', s.port), timeout=10)
        conn.sendall(b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n')          # Headers never finished.
        assert conn.recv(1024) == b''                                       # Closed by the server after 1 s.
        conn.close()
        assert request(s.port, 'GET', '/api/state')[0] == 200               # Still serving everyone else.


def test_only_its_own_host_names_are_answered(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank')
    with Running(bank_dir, tmp_path / 'l.jsonl') as s:
        for host in [f'127.0.0.1:{s.port}', f'localhost:{s.port}', 'LOCALHOST', f'[::1]:{s.port}']:
            assert request(s.port, 'GET', '/api/state', host=host)[0] == 200, host
        for host in ['evil.example', f'evil.example:{s.port}', 'localhost.evil.example', '127.0.0.2', '']:
            status, data = request(s.port, 'GET', '/', host=host)
            assert status == 421 and b'Which shape' not in data, host
            assert request(s.port, 'POST', '/api/undo', {}, host=host)[0] == 421
    everywhere = label_server.allowed_hosts('0.0.0.0')                      # Every address: still a Host check.
    assert {'localhost', '127.0.0.1', '::1', socket.gethostname().lower()} <= everywhere and 'evil.example' not in everywhere
    assert label_server.allowed_hosts('192.168.1.5') == {'localhost', '127.0.0.1', '::1', '192.168.1.5'}
    assert label_server.host_name('[::1]:8000') == '::1' and label_server.host_name('Box:80') == 'box'


@pytest.mark.slow
def test_sigkill_right_after_saved_loses_nothing(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank')
    out = tmp_path / 'l.jsonl'
    proc, port, _ = start_process('--bank', bank_dir, '--out', str(out), '--annotator', 'alice', '--pairs', '10',
        '--repeat-rate', '0')
    try:
        state = json.loads(request(port, 'GET', '/api/state')[1])
        sent = []
        for choice in ('a', 'tie', 'b'):
            sent.append((state['current']['a'], state['current']['b'], choice))
            state = judge(port, state, choice)
        status, data = request(port, 'POST', '/api/undo', {})
        assert status == 200
        state = json.loads(data)['state']
        sent.pop()
        sent.append((state['current']['a'], state['current']['b'], 'skip'))
        judge(port, state, 'skip')                                  # The page would now say "saved"; kill at once.
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [(j.a, j.b, j.choice) for j in P.load_judgements(str(out))] == sent
    assert len(read_lines(out)) == 5


def outside_address():
    """This machine's address toward other machines (a UDP connect sends nothing), or None without a network."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(('10.254.254.254', 1))
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith('127.') else ip


@pytest.mark.slow
def test_without_host_it_listens_on_loopback_only(tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank')
    env = dict(os.environ, HOST='0.0.0.0', LABEL_HOST='0.0.0.0')   # Nothing outside the command line opens it.
    proc, port, output = start_process('--bank', bank_dir, '--out', str(tmp_path / 'l.jsonl'), '--annotator', 'a', env=env)
    try:
        assert f'serving http://127.0.0.1:{port}/' in output and 'warning' not in output
        assert request(port, 'GET', '/')[0] == 200
        outside = outside_address()
        if outside is not None:                                     # The machine's own network address is closed.
            with pytest.raises(OSError):
                socket.create_connection((outside, port), timeout=2).close()
    finally:
        proc.kill()
        proc.wait()
    proc, port, output = start_process('--bank', bank_dir, '--out', str(tmp_path / 'l.jsonl'), '--annotator', 'a',
        '--host', '0.0.0.0')
    proc.kill()
    proc.wait()
    assert 'warning: listening on 0.0.0.0: other machines can reach this page' in output
    assert not label.is_loopback('0.0.0.0') and label.is_loopback('127.0.0.1') and label.is_loopback('::1')

#----------------------------------------------------------------------------
# The page in a real browser.

def browser_pair(driver):
    return tuple(driver.find_element('css selector', f'#{side} .id').text for side in ('left', 'right'))


@pytest.mark.slow
def test_page_judges_with_the_keyboard_in_chromium(tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    bank_dir = fake_bank(tmp_path / 'bank')
    out = tmp_path / 'l.jsonl'
    driver = chromium_driver()
    try:
        with Running(bank_dir, out, annotator='carol', target=8) as s:
            driver.get(s.url + '/')
            wait = WebDriverWait(driver, 10)
            wait.until(lambda d: d.find_element('id', 'status').text == 'ready')
            assert driver.find_element('id', 'annotator').text == 'carol'
            assert driver.find_element('id', 'progress').text == '0 / 8'
            body = driver.find_element('tag name', 'body')
            shown, saved = [], 0

            def press(key, expect_status):
                nonlocal saved
                shown.append(browser_pair(driver))
                body.send_keys(key)
                saved += 1
                wait.until(lambda d: d.find_element('tag name', 'body').get_attribute('data-saved') == str(saved))
                assert driver.find_element('id', 'status').text == f'saved \u2713 {expect_status}'

            press('1', 'left better')
            press(Keys.ARROW_RIGHT, 'right better')
            press('t', 'tie')
            press('u', 'undone')
            assert browser_pair(driver) == shown[2]                  # The undone pair is back.
            press('2', 'right better')
            press('s', 'skip')
            assert driver.find_element('id', 'progress').text == '4 / 8'
            records = read_lines(out)                               # Line by line, as the keys were pressed.
            assert [r.get('choice') for r in records] == ['a', 'b', 'tie', None, 'b', 'skip']
            for r, pair in zip(records, shown):
                if 'choice' in r:
                    assert (r['a'], r['b'], r['annotator']) == (*pair, 'carol')
            assert records[3] == dict(undo_of=records[2]['id'], annotator='carol', time=records[3]['time'])
            assert (records[4]['a'], records[4]['b']) == (records[2]['a'], records[2]['b'])
            assert [j.choice for j in P.load_judgements(str(out))] == ['a', 'b', 'b', 'skip']
            left = driver.find_element('id', 'left')                 # A click shows the RGB render instead.
            assert not left.find_element('css selector', '.rgb img').is_displayed()
            left.click()
            rgb = left.find_element('css selector', '.rgb img')
            assert rgb.is_displayed() and rgb.get_attribute('src').endswith(f'/bank/{browser_pair(driver)[0]}/image.png')
            body.send_keys('?')
            assert driver.find_element('id', 'help').is_displayed()
            body.send_keys('1')                                     # Keys do not judge under the help.
            body.send_keys(Keys.ESCAPE)
            assert not driver.find_element('id', 'help').is_displayed() and len(read_lines(out)) == 6
            current = browser_pair(driver)
            driver.refresh()                                        # A reload resumes on the same pair.
            wait.until(lambda d: d.find_element('id', 'status').text == 'ready')
            assert browser_pair(driver) == current and driver.find_element('id', 'progress').text == '4 / 8'
    finally:
        driver.quit()

#----------------------------------------------------------------------------
# tools/label.py serve: every flag (the `served` fixture, tests/conftest.py).

def test_serve_defaults_and_pairs_seed_repeat_rate(served, tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank', count=30)               # 435 pairs: the default --pairs 200 fits.
    out = tmp_path / 'l.jsonl'
    base = ['--bank', bank_dir, '--out', out, '--annotator', 'dave']
    result, seen = served(*base)
    ok(result)
    assert seen['address'][0] == '127.0.0.1' and seen['state']['target'] == 200 and seen['state']['done'] == 0
    assert 'serving http://127.0.0.1:' in result.output and 'annotator dave' in result.output
    assert seen['session'].repeat_rate == 0.05
    first = seen['state']['current']
    assert served(*base, '--seed', '0')[1]['state']['current'] == first
    assert served('--bank', fake_bank(tmp_path / 'small', count=4), '--out', tmp_path / 's.jsonl', '--annotator', 'x')[1][
        'state']['target'] == 6                                    # A bank of 4 has only 6 pairs.
    assert served(*base, '--seed', '5')[1]['state']['current'] != first
    result, seen = served(*base, '--pairs', '3', '--repeat-rate', '1', '--host', '127.0.0.1')
    s = seen['session']
    assert s.target == 3 and s.repeat_rate == 1.0
    cur = s.state()['current']
    s.judge(cur['a'], cur['b'], 'a')
    assert s.state()['current']['repeat'] is True                   # --repeat-rate 1: the judged pair comes back.
    result, seen = served(*base, '--port', '0')
    assert seen['state']['done'] == 1                               # Resumed from the file.


def test_serve_active_orders_by_reward(served, tmp_path):
    from tests.helpers.banks import ball_bank
    from tests.helpers.rewards import tiny_sigma
    bank_dir, _ = ball_bank(tmp_path / 'bank', 6, seed=1)
    bank = Bank(bank_dir)
    model = tiny_sigma(seed=3).eval()
    save_reward(str(tmp_path / 'r.pt'), model, 'sigma', bank.meta(bank.ids[0])['slab'])
    scores = score_bank(load_reward(str(tmp_path / 'r.pt')), bank)
    closest = min(itertools.combinations(bank.ids, 2), key=lambda p: abs(scores[p[0]] - scores[p[1]]))
    base = ['--bank', bank_dir, '--out', tmp_path / 'l.jsonl', '--annotator', 'eve', '--pairs', '15']
    result, seen = served(*base, '--active', '--reward-model', tmp_path / 'r.pt')
    ok(result)
    cur = seen['state']['current']
    assert L.pair_key(cur['a'], cur['b']) == L.pair_key(*closest) and 'order active by' in result.output
    result, _ = served(*base, '--active')
    assert result.exit_code == 2 and '--active orders pairs by reward scores: pass --reward-model PT' in result.output
    result, _ = served(*base, '--reward-model', tmp_path / 'r.pt')
    assert result.exit_code == 2 and '--reward-model is only used with --active' in result.output
    (tmp_path / 'junk.pt').write_text('junk\n')
    result, _ = served(*base, '--active', '--reward-model', tmp_path / 'junk.pt')
    assert result.exit_code == 1 and 'not a reward checkpoint' in result.output
    other, _ = ball_bank(tmp_path / 'other', 3, resolution=32)
    result, _ = served('--bank', other, '--out', tmp_path / 'l.jsonl', '--annotator', 'eve', '--pairs', '1',
        '--active', '--reward-model', tmp_path / 'r.pt')
    assert result.exit_code == 1 and 'slabs of the 32^3 grid' in result.output


def test_serve_dry_run_prints_settings_and_serves_nothing(served, tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank', count=5)
    out = tmp_path / 'l.jsonl'
    result, seen = served('--bank', bank_dir, '--out', out, '--annotator', 'dave', '--pairs', '7', '--repeat-rate', '0.2',
        '--seed', '3', '--host', '0.0.0.0', '--dry-run')
    ok(result)
    assert seen == {} and not out.exists()
    assert result.output == (f'would serve http://0.0.0.0:0/: bank {bank_dir} (5 samples), out {out}, annotator dave, '
        '0/7 judged, order random, seed 3, repeat rate 0.2\n')
    result = ok(CliRunner().invoke(label.main, ['serve', '--bank', bank_dir, '--out', str(out), '--annotator', 'x', '--dry-run']))
    assert result.output.startswith('would serve http://127.0.0.1:8765/: ') and 'repeat rate 0.05' in result.output


@pytest.mark.parametrize('args, code, message', [
    (['--pairs', '0'], 2, "Invalid value for '--pairs'"),
    (['--pairs', '-4'], 2, "Invalid value for '--pairs'"),
    (['--pairs', '11'], 2, '11 pairs asked for, but 5 samples give only 10'),
    (['--repeat-rate', '-0.1'], 2, "Invalid value for '--repeat-rate'"),
    (['--repeat-rate', '1.5'], 2, "Invalid value for '--repeat-rate'"),
    (['--port', '-1'], 2, "Invalid value for '--port'"),
    (['--port', '70000'], 2, "Invalid value for '--port'"),
    (['--seed', '-1'], 2, "Invalid value for '--seed'"),
    (['--host', ' '], 2, 'an empty address'),
    (['--annotator', 'a b'], 2, "'a b': use 1-64 letters"),
    (['--annotator', ''], 2, 'use 1-64 letters'),
])
def test_serve_rejects_bad_values(served, tmp_path, args, code, message):
    bank_dir = fake_bank(tmp_path / 'bank', count=5)
    result, seen = served('--bank', bank_dir, '--out', tmp_path / 'l.jsonl', '--annotator', 'dave', *args)
    assert result.exit_code == code and message in result.output and seen == {}


def test_serve_refuses_missing_bank_bad_file_and_busy_port(served, tmp_path):
    bank_dir = fake_bank(tmp_path / 'bank', count=5)
    result, _ = served('--bank', tmp_path / 'nowhere', '--out', tmp_path / 'l.jsonl', '--annotator', 'a')
    assert result.exit_code == 1 and 'no such bank folder' in result.output
    result, _ = served('--bank', bank_dir, '--out', tmp_path / 'no' / 'l.jsonl', '--annotator', 'a')
    assert result.exit_code == 1 and 'the folder does not exist' in result.output
    bad = tmp_path / 'bad.jsonl'
    bad.write_text(json.dumps(dict(a='seed000001', b='seed000077', choice='a', annotator='x', time=P.now())) + '\n')
    result, _ = served('--bank', bank_dir, '--out', bad, '--annotator', 'a')
    assert result.exit_code == 1 and 'bad.jsonl:1: unknown sample id seed000077' in result.output
    assert len(bad.read_text().splitlines()) == 1                   # Left as it was.
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        result = CliRunner().invoke(label.main, ['serve', '--bank', bank_dir, '--out', str(tmp_path / 'l.jsonl'),
            '--annotator', 'a', '--port', str(busy.getsockname()[1])])
    assert result.exit_code == 1 and 'cannot listen on 127.0.0.1:' in result.output
