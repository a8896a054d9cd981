"""The label server under a crowd and a hostile bank: eg3d_rlhf.data.label_server (its backlog, bounded threads and
headers, a link that meets another annotator's cookie) and mesh_file's cache (one build per mesh, slabs checked
before they are read)."""

import gzip
import http.server
import select
import socket
import struct
import threading
import time

import numpy as np
import pytest

import dnnlib
from eg3d_rlhf.data import invites as I
from eg3d_rlhf.data import label_server
from eg3d_rlhf.data import labeling as L
from eg3d_rlhf.data import mesh_file as M
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.label_pages import Sessions
from eg3d_rlhf.geometry.sigma import slab_grid
from tests.helpers.banks import RES, balls_volume, write_bank
from tests.helpers.browser import chromium_driver
from tests.helpers.label import Running, fake_bank, request
from tests.helpers.study import call

#----------------------------------------------------------------------------
# A crowd: the listen backlog holds it, and silent clients hold no threads.

TCP_ESTABLISHED = 1


def tcp_info(sock):
    """(state, SYN/data retransmissions so far) of a connected TCP socket (Linux's struct tcp_info)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return info[0], struct.unpack_from('I', info, 100)[0]


@pytest.mark.skipif(not hasattr(socket, 'TCP_INFO'), reason='needs Linux TCP_INFO')
def test_a_crowd_of_connections_is_queued_without_a_syn_retry(tmp_path):
    """Before: listen(5), so of 100 connections at once ~94 SYNs were dropped and retried 1, 3, 7 ... s later."""
    bank = Bank(fake_bank(tmp_path / 'bank'))
    server = label_server.LabelServer(('127.0.0.1', 0), bank, None)        # Listening, not yet accepting.
    port = server.server_address[1]
    clients = [socket.socket() for _ in range(100)]
    try:
        for c in clients:
            c.setblocking(False)
            c.connect_ex(('127.0.0.1', port))
        waiting = list(clients)
        for _ in range(100):                            # Until each is connected, or one retried (a dropped SYN, 1 s on).
            if not waiting or any(tcp_info(c)[1] for c in clients):
                break
            waiting = [c for c in waiting if c not in select.select([], waiting, [], 0.2)[1]]
        assert [tcp_info(c) for c in clients] == [(TCP_ESTABLISHED, 0)] * len(clients)
        assert server.request_queue_size >= 128                             # Where the kernel allows (somaxconn).
    finally:
        for c in clients:
            c.close()
        server.server_close()


def silent_clients(port, count):
    """`count` connections that send half a request head and then nothing."""
    clients = [socket.create_connection(('127.0.0.1', port), timeout=10) for _ in range(count)]
    for c in clients:
        c.sendall(b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n')
    return clients


def test_silent_clients_hold_no_threads_and_everyone_else_is_served(tmp_path):
    """Before: a thread per connection, so 200 slowloris clients held 200 threads (a crowd could exhaust memory)."""
    with Running(fake_bank(tmp_path / 'bank'), tmp_path / 'l.jsonl') as s:
        assert request(s.port, 'GET', '/api/state')[0] == 200
        before = threading.active_count()
        clients = silent_clients(s.port, 200)
        try:
            for _ in range(20):                                             # Answered behind them all.
                assert request(s.port, 'GET', '/bank/seed000001/image.png')[0] == 200
            assert threading.active_count() - before <= 16                  # The pool's workers at most.
            for c in clients:                                               # Still open, still unanswered.
                c.setblocking(False)
                with pytest.raises(BlockingIOError):
                    c.recv(1)
        finally:
            for c in clients:
                c.close()


def hung_up(sock):
    """Has the server closed this connection without a word (a FIN, or a reset where it had unread bytes)?"""
    try:
        return sock.recv(1024) == b''
    except ConnectionResetError:
        return True


def test_beyond_the_open_limit_the_longest_arriving_connection_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(label_server, 'MAX_OPEN', 10)
    with Running(fake_bank(tmp_path / 'bank'), tmp_path / 'l.jsonl') as s:
        clients = silent_clients(s.port, 15)
        try:
            assert request(s.port, 'GET', '/api/state')[0] == 200          # Room is made for it.
            for c in clients[:6]:                                           # The oldest five, then this request's.
                assert hung_up(c)
            for c in clients[6:]:
                c.setblocking(False)
                with pytest.raises(BlockingIOError):                        # Still waited for.
                    c.recv(1)
        finally:
            for c in clients:
                c.close()

def refused(port):
    """Does the port refuse connections (nothing listens there)?"""
    try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:                                        # Closed with this one in its backlog: ask again.
        return False


def test_at_shutdown_a_request_being_answered_gets_its_answer_and_one_arriving_is_dropped(tmp_path):
    """Before: shutdown cancelled answers being made, so the click that ended a round got no reply."""
    s = Running(fake_bank(tmp_path / 'bank'), tmp_path / 'l.jsonl')
    answering, release, answer, got = threading.Event(), threading.Event(), s.server.answer, {}

    def slow(*args):
        answering.set()
        release.wait(10)
        return answer(*args)
    s.server.answer = slow
    arriving = silent_clients(s.port, 1)
    asking = threading.Thread(target=lambda: got.update(reply=request(s.port, 'GET', '/api/state')))
    asking.start()
    assert answering.wait(10)
    stopping = threading.Thread(target=s.server.shutdown)
    stopping.start()
    end = time.monotonic() + 10
    while not refused(s.port) and time.monotonic() < end:               # No new connections taken ...
        pass
    release.set()                                                       # ... and then the answer is made.
    stopping.join(10)
    asking.join(10)
    s.server.server_close()
    assert not stopping.is_alive() and got['reply'][0] == 200 and hung_up(arriving[0])
    arriving[0].close()

#----------------------------------------------------------------------------
# Meshes: one build per sample however many ask at once; a slab is read only when its header fits meta.json.

def mesh_bank(root, count=2):
    grid = slab_grid(RES)
    return write_bank(root, {f'seed{i:06d}': balls_volume(grid, [((0.03, 0.02, 0.15), 0.08 + 0.02 * i)])
        for i in range(count)}, RES)


def test_concurrent_requests_for_one_mesh_build_it_once(tmp_path, monkeypatch):
    """Before: each of 8 cold requests built the mesh (12 of them peaked at 238-368 MB against 49 MB for one)."""
    crowd = 8
    asked, builds, lock = [], [], threading.Condition()
    get, build = M.MeshCache.get, M.sample_mesh

    def counted_get(self, bank, sample_id):
        with lock:
            asked.append(sample_id)
            lock.notify_all()
        return get(self, bank, sample_id)

    def slow_build(bank, sample_id):                                        # Finishes once all have asked.
        with lock:
            builds.append(sample_id)
            lock.wait_for(lambda: len(asked) >= crowd, timeout=20)
        return build(bank, sample_id)

    monkeypatch.setattr(M.MeshCache, 'get', counted_get)
    monkeypatch.setattr(M, 'sample_mesh', slow_build)
    with Running(mesh_bank(tmp_path / 'bank'), tmp_path / 'l.jsonl') as s:
        answers = [None] * crowd
        def fetch(i):
            answers[i] = request(s.port, 'GET', '/bank/seed000001/mesh.bin')
        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(crowd)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(asked) == crowd and builds == ['seed000001']
        assert {a[0] for a in answers} == {200} and len({a[1] for a in answers}) == 1
        want = M.encode(*build(s.bank, 'seed000001'))
        assert np.array_equal(M.decode(answers[0][1])[1], M.decode(want)[1])
        assert request(s.port, 'GET', '/bank/seed000001/mesh.bin')[0] == 200 and builds == ['seed000001']   # Cached.


def test_a_failed_build_answers_everyone_waiting_and_is_tried_again(tmp_path, monkeypatch):
    bank = Bank(mesh_bank(tmp_path / 'bank'))
    cache, calls, errors, release = M.MeshCache(), [], [], threading.Event()

    def failing(bank, sample_id):
        calls.append(sample_id)
        release.wait(10)
        raise M.BankError('broken')

    def ask():
        try:
            cache.get(bank, 'seed000000')
        except M.BankError as err:
            errors.append(str(err))

    monkeypatch.setattr(M, 'sample_mesh', failing)
    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join()
    assert errors == ['broken', 'broken'] and len(calls) <= 2
    triangle = (np.eye(3), np.array([[0, 1, 2]]), np.zeros(3), np.ones(3))
    monkeypatch.setattr(M, 'sample_mesh', lambda bank, sample_id: triangle)
    assert gzip.decompress(cache.get(bank, 'seed000000')) == M.encode(*triangle)                      # Tried again.


@pytest.mark.parametrize('shape, dtype', [((512, 512, 1024), '<f4'), ((20, 22, 20), '<c16'), ((20, 22, 20), '|V4096')])
def test_a_slab_that_does_not_fit_its_meta_is_refused_unread(tmp_path, monkeypatch, shape, dtype):
    """Before: a 1 GiB slab (a header of its size) behind a normal meta.json was read whole on every request, then 404."""
    bank_dir = mesh_bank(tmp_path / 'bank')
    path = tmp_path / 'bank' / 'seed000001' / 'sigma_slab.npy'
    header = {'descr': dtype, 'fortran_order': False, 'shape': shape}
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)      # Sparse: no disk used.
    read_whole = []
    read_npy = dnnlib.util.read_npy

    def spy(file, error=dnnlib.util.BadFile, mmap_mode=None):
        if mmap_mode is None and str(file) == str(path):
            read_whole.append(file)
            raise error('read whole')                                       # (Not really: 1 GiB is not allocated.)
        return read_npy(file, error=error, mmap_mode=mmap_mode)

    monkeypatch.setattr(dnnlib.util, 'read_npy', spy)
    with Running(bank_dir, tmp_path / 'l.jsonl') as s:
        for _ in range(2):
            assert request(s.port, 'GET', '/bank/seed000001/mesh.bin')[0] == 404
        assert request(s.port, 'GET', '/bank/seed000000/mesh.bin')[0] == 200
    assert read_whole == []
    with pytest.raises(M.BankError, match=rf'sigma_slab.npy: \[{", ".join(map(str, shape))}\] \w+, but meta.json says '
            r'\[20, 22, 20\] floats; redraw the sample'):
        M.sample_mesh(Bank(bank_dir), 'seed000001')

#----------------------------------------------------------------------------
# Headers every answer carries.

def test_every_answer_says_no_referrer(tmp_path):
    """Before: no Referrer-Policy, so the page's address (?token=, the invite) could leave in a Referer header."""
    with Running(fake_bank(tmp_path / 'bank'), tmp_path / 'l.jsonl') as s:
        cases = [('GET', '/', None, {}), ('GET', '/api/state', None, {}), ('GET', '/bank/seed000001/image.png', None, {}),
            ('GET', '/nope', None, {}), ('GET', '/', None, {'Host': 'evil.example'}), ('POST', '/api/undo', [], {}),
            ('PUT', '/', None, {})]                                         # The last: http.server's own 501.
        statuses = []
        for method, path, body, headers in cases:
            status, _, response = call(s.port, method, path, body, headers)
            statuses.append(status)
            assert response.getheader('Referrer-Policy') == 'no-referrer', (method, path)
            assert response.getheader('X-Content-Type-Options') == 'nosniff' and response.getheader('Cache-Control') == 'no-store'
        assert statuses == [200, 200, 200, 404, 421, 400, 501]

#----------------------------------------------------------------------------
# A link of another annotator never signs a browser out silently.

@pytest.fixture
def invited(tmp_path):
    """A server beyond loopback (0.0.0.0) with alice and bob invited: (port, {name: token}, the page's own Origin)."""
    bank = Bank(fake_bank(tmp_path / 'bank', count=6))
    out = str(tmp_path / 'l.jsonl')
    tokens = {name: I.invite(out, name) for name in ('alice', 'bob')}
    sessions = Sessions(out, lambda name: L.open_session(out, name, bank.ids, 5))
    server = label_server.LabelServer(('0.0.0.0', 0), bank, None, sessions=sessions, invites=I.Invites(out))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        yield port, tokens, f'http://127.0.0.1:{port}', out
    finally:
        server.shutdown()
        server.server_close()
        sessions.close()


def signed_in(port, cookie):
    """Whose state a request carrying `cookie` gets."""
    return call(port, 'GET', '/api/state', headers={'Cookie': cookie})[1]['annotator']


def test_a_link_of_another_annotator_asks_before_it_switches(invited):
    """Before: alice's browser opening bob's link got bob's cookie in silence, and labelled as bob from then on."""
    port, tokens, own, out = invited
    status, _, response = call(port, 'GET', f'/?token={tokens["alice"]}')
    set_cookie = response.getheader('Set-Cookie')
    alice = set_cookie.split(';')[0]
    assert status == 200 and alice == f'label_token_{port}={tokens["alice"]}'
    status, page, response = call(port, 'GET', f'/?token={tokens["bob"]}', headers={'Cookie': alice})
    assert status == 409 and response.getheader('Set-Cookie') is None
    assert b'This browser labels as <b>alice</b>, but the link you opened is <b>bob</b>' in page
    assert b'Which shape' not in page and signed_in(port, alice) == 'alice'
    assert 'SameSite=Lax' in set_cookie                                     # So a link from another site sends it.
    for headers in ({}, {'Origin': 'http://evil.example'}):                 # The switch is the page's own POST only.
        status, _, response = call(port, 'POST', f'/api/switch?token={tokens["bob"]}', {}, dict(headers, Cookie=alice))
        assert status == 403 and response.getheader('Set-Cookie') is None
    status, data, response = call(port, 'POST', f'/api/switch?token={tokens["bob"]}', [], {'Cookie': alice, 'Origin': own})
    assert status == 400 and response.getheader('Set-Cookie') is None
    status, data, response = call(port, 'POST', f'/api/switch?token={tokens["bob"]}', {}, {'Cookie': alice, 'Origin': own})
    bob = response.getheader('Set-Cookie').split(';')[0]
    assert status == 200 and data['state']['annotator'] == 'bob' and bob == f'label_token_{port}={tokens["bob"]}'
    assert signed_in(port, bob) == 'bob'
    assert call(port, 'POST', '/api/switch', {}, {'Cookie': bob, 'Origin': own})[0] == 200    # Its own token: no-op.


def test_a_link_signs_in_where_no_other_annotator_is(invited):
    port, tokens, own, out = invited
    cookie = lambda name: f'label_token_{port}={tokens[name]}'
    for held in ('', cookie('bob'), f'label_token_{port}=revoked', f'label_token_{port + 1}={tokens["alice"]}'):
        status, page, response = call(port, 'GET', f'/?token={tokens["bob"]}', headers={'Cookie': held})
        assert status == 200 and b'Which shape' in page and response.getheader('Set-Cookie').startswith(cookie('bob'))
    new = I.invite(out, 'alice', force=True)                                # alice's old link (and cookie) revoked.
    status, _, response = call(port, 'GET', f'/?token={new}', headers={'Cookie': cookie('alice')})
    assert status == 200 and response.getheader('Set-Cookie').startswith(f'label_token_{port}={new}')
    assert call(port, 'GET', f'/?token={tokens["bob"]}', headers={'Cookie': f'label_token_{port}={new}'})[0] == 409
    status, _, response = call(port, 'GET', '/', headers={'Cookie': cookie('bob')})                # No link: no question.
    assert status == 200 and response.getheader('Set-Cookie').startswith(cookie('bob'))


class LinkPage(http.server.BaseHTTPRequestHandler):
    """Another site's page (a webmail, say) holding one link: the server's `link`."""
    link = None

    def do_GET(self):
        body = f'<a id="link" href="{self.link}">your invite</a>'.encode()
        self.send_response(200)
        self.send_header('Content-Type', 'text/html')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.mark.slow
def test_a_link_followed_from_another_site_asks_in_chromium(invited):
    """Before: the cookie was SameSite=Strict, so a link followed from another site came without it, and the server,
    seeing no one signed in, replaced alice's cookie with bob's."""
    from selenium.webdriver.support.ui import WebDriverWait
    port, tokens, own, out = invited
    LinkPage.link = f'{own}/?token={tokens["bob"]}'
    other = http.server.HTTPServer(('127.0.0.1', 0), LinkPage)                # localhost: another site than 127.0.0.1.
    threading.Thread(target=other.serve_forever, daemon=True).start()
    driver = chromium_driver()
    try:
        wait = WebDriverWait(driver, 10)
        driver.get(f'{own}/?token={tokens["alice"]}')
        wait.until(lambda d: d.find_element('id', 'annotator').text == 'alice')
        driver.get(f'http://localhost:{other.server_address[1]}/')
        driver.find_element('id', 'link').click()
        wait.until(lambda d: d.title == 'Signed in as alice')
        driver.find_element('id', 'stay').click()
        wait.until(lambda d: d.find_element('id', 'annotator').text == 'alice')
        driver.get(LinkPage.link)
        driver.find_element('id', 'switch').click()                         # A POST of the page's own: no null Origin.
        wait.until(lambda d: d.current_url == f'{own}/' and d.find_element('id', 'annotator').text == 'bob')
    finally:
        driver.quit()
        other.shutdown()
        other.server_close()

#----------------------------------------------------------------------------
