"""The label server under a crowd: how long each of many concurrent GETs of the page and its pictures waits, against
the server as it was (http.server's thread per request and listen backlog of 5)."""

import http.client
import multiprocessing
import os
import socketserver
import statistics
import tempfile
import threading
import time

import click
import numpy as np
import PIL.Image

from eg3d_rlhf.data import label_server, labeling
from eg3d_rlhf.data.bank import IMAGE_FILE, META_FILE, Bank, preview_file, write_json
from eg3d_rlhf.geometry.preview import VIEWS

#----------------------------------------------------------------------------
# Each server runs in a process of its own, the clients in this one: a thread and a connection per request, all let go
# at once; a request's wait runs from its thread's start to the last byte of its answer. The baseline is the same
# handler on http.server's ThreadingHTTPServer with its listen backlog of 5: a connection beyond the backlog has its
# SYN dropped and retried 1, 3, 7 ... s later. Servers take turns round by round, so a drift of the machine hits both.

class OldHandler(label_server.Handler):
    """The handler reading and writing its socket itself, as before the server read requests whole."""
    setup = socketserver.StreamRequestHandler.setup
    finish = socketserver.StreamRequestHandler.finish


class OldServer(socketserver.ThreadingMixIn, label_server.LabelServer):
    """The baseline: a thread per connection, listen backlog 5 (http.server.ThreadingHTTPServer's)."""
    request_queue_size = 5
    daemon_threads = True
    serve_forever = socketserver.BaseServer.serve_forever
    shutdown = socketserver.BaseServer.shutdown


SERVERS = {'old': (OldServer, 'thread per request, backlog 5 (baseline)'),
    'new': (label_server.LabelServer, f'pool of {label_server.WORKERS}, backlog {label_server.BACKLOG}')}


def serve(kind, bank_dir, out, ports):
    """Serve `bank_dir` on loopback with server `kind` until killed; put its port in `ports`."""
    bank = Bank(bank_dir)
    server_class, _ = SERVERS[kind]
    server = server_class(('127.0.0.1', 0), bank, labeling.open_session(out, 'bench', bank.ids, 10))
    if kind == 'old':
        server.RequestHandlerClass = OldHandler
    ports.put(server.server_address[1])
    server.serve_forever()


def make_bank(root, samples, size):
    """A bank of `samples` samples whose previews and picture are `size`-pixel PNGs of smooth shading and noise."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size)
    for i in range(samples):
        folder = os.path.join(root, f'seed{i:06d}')
        os.makedirs(folder)
        for name in [preview_file(v) for v in VIEWS] + [IMAGE_FILE]:
            pixels = ramp[:, None, None] * np.ones((size, size, 3)) + rng.integers(0, 32, (size, size, 3))
            PIL.Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, name))
        write_json(os.path.join(folder, META_FILE), dict(id=f'seed{i:06d}'))
    return root


def fire(port, paths):
    """(seconds each GET of `paths` waited for its whole answer or its failure, the failures) of the GETs sent all at
    once (a thread and a connection each)."""
    start, waits, failed = threading.Barrier(len(paths)), [None] * len(paths), []

    def get(i, path):
        start.wait()
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
        try:
            conn.request('GET', path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failed.append(f'{path}: {response.status}')
        except OSError as err:
            failed.append(f'{path}: {err}')
        finally:
            conn.close()
        waits[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=get, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return waits, failed


def summary(waits):
    """p50, p90, p99, max (ms) and how many waited 1 s or more."""
    q = statistics.quantiles(waits, n=100, method='inclusive')
    return [1000 * x for x in (q[49], q[89], q[98], max(waits))], sum(w >= 1 for w in waits)


def row(name, waits, failed):
    (p50, p90, p99, top), slow = summary(waits)
    return f'  {name:<40} {p50:8.1f} {p90:8.1f} {p99:8.1f} {top:9.1f} {slow:7d} {len(failed):7d} of {len(waits)}'

#----------------------------------------------------------------------------

@click.command()
@click.option('--crowd', type=click.IntRange(min=2), default=200, show_default=True, help='GETs sent at once')
@click.option('--rounds', type=click.IntRange(min=1), default=3, show_default=True, help='Crowds per server')
@click.option('--bursts', type=click.IntRange(min=1), default=30, show_default=True, help='Page-sized bursts per server')
@click.option('--burst', type=click.IntRange(min=2), default=8, show_default=True, help='GETs in a burst (a pair\'s pictures)')
@click.option('--samples', type=click.IntRange(min=2), default=20, show_default=True, help='Samples in the bank')
@click.option('--picture', type=click.IntRange(min=8), default=256, show_default=True, help='Picture size in pixels')
def main(crowd, rounds, bursts, burst, samples, picture):
    """Fire `crowd` concurrent GETs of the page, its state, its viewer and the bank's pictures at each server, `rounds`
    times, then `bursts` bursts of `burst` pictures (a pair's previews and pictures), one after another; print each
    server's percentiles and maximum of the waits and whether none of the new server's waited 1 s or more."""
    with tempfile.TemporaryDirectory() as tmp:
        bank_dir = make_bank(os.path.join(tmp, 'bank'), samples, picture)
        ids = Bank(bank_dir).ids
        pictures = [f'/bank/{x}/{name}' for x in ids for name in [preview_file(v) for v in VIEWS] + [IMAGE_FILE]]
        pages = ['/', '/api/state', '/mesh_viewer.js']
        crowd_paths = [(pages + pictures)[i % (len(pages) + len(pictures))] for i in range(crowd)]
        size = os.path.getsize(os.path.join(bank_dir, ids[0], IMAGE_FILE))
        print(f'bank of {samples} samples, {len(pictures)} pictures of {picture} px ({size / 1024:.0f} KiB each); '
            f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (the machine may be shared)')
        context = multiprocessing.get_context('spawn')
        ports, servers, port = context.Queue(), {}, {}
        try:
            for kind in SERVERS:
                servers[kind] = context.Process(target=serve, args=(kind, bank_dir, os.path.join(tmp, f'{kind}.jsonl'),
                    ports), daemon=True)
                servers[kind].start()
                port[kind] = ports.get(timeout=120)
            runs = {(kind, test): ([], []) for kind in SERVERS for test in ('crowd', 'burst')}
            for _ in range(rounds):
                for kind in SERVERS:
                    add(runs[kind, 'crowd'], fire(port[kind], crowd_paths))
            for b in range(bursts):
                for kind in SERVERS:
                    add(runs[kind, 'burst'], fire(port[kind], [pictures[(b * burst + i) % len(pictures)]
                        for i in range(burst)]))
        finally:
            for process in servers.values():
                process.kill()
    print(f'  {"wait (ms)":<40} {"p50":>8} {"p90":>8} {"p99":>8} {"max":>9} {">= 1 s":>7} {"failed":>7}')
    for test, what in (('crowd', f'{crowd} GETs at once, {rounds} rounds'), ('burst', f'{bursts} bursts of {burst}')):
        print(what)
        for kind, (_, name) in SERVERS.items():
            print(row(name, *runs[kind, test]))
        (_, _, old_p99, old_max), _ = summary(runs['old', test][0])
        (_, _, new_p99, new_max), slow = summary(runs['new', test][0])
        failed = len(runs['new', test][1])
        print(f'  old/new: p99 {old_p99 / new_p99:.1f}x, max {old_max / new_max:.1f}x; none of the new server\'s waited '
            f'1 s or more, none failed: {"yes" if slow == failed == 0 else f"no, {slow} and {failed}"}')
    for kind, (_, name) in SERVERS.items():
        failures = [f for test in ('crowd', 'burst') for f in runs[kind, test][1]]
        if failures:
            print(f'{name}: {len(failures)} failed, e.g. {failures[0]}')


def add(run, result):
    """Append one fire()'s waits and failures to a run's."""
    for kept, new in zip(run, result):
        kept += new

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
