"""Labeling servers under test: fake banks of pictures, tools/label.py's server in a thread or a process, raw requests."""

import http.client
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import PIL.Image

from eg3d_rlhf.data import labeling as L
from eg3d_rlhf.data import preferences as P
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.label_pages import Sessions
from tests.conftest import REPO
from tools import label

#----------------------------------------------------------------------------
# Banks and files.

PICTURES = ('preview_front.png', 'preview_three_quarter.png', 'preview_profile.png', 'image.png')


def fake_bank(root, count=5):
    """A bank of `count` samples with distinct flat-colour pictures, plus files that must never be served."""
    os.makedirs(root)
    for i in range(count):
        folder = os.path.join(root, P.seed_id(i))
        os.makedirs(folder)
        for k, name in enumerate(PICTURES):
            PIL.Image.new('RGB', (32, 32), (40 * i % 256, 60 * k, 200)).save(os.path.join(folder, name))
        PIL.Image.new('RGB', (8, 8)).save(os.path.join(folder, 'notes.png'))   # A picture, but not one people see.
        np.save(os.path.join(folder, 'sigma_slab.npy'), np.zeros((2, 2, 2), np.float32))
        with open(os.path.join(folder, 'meta.json'), 'w') as f:
            json.dump(dict(id=P.seed_id(i)), f)
    os.makedirs(os.path.join(root, 'seed000099'))                       # Unfinished: pictures, no meta.json.
    PIL.Image.new('RGB', (8, 8)).save(os.path.join(root, 'seed000099', 'preview_front.png'))
    with open(os.path.join(root, 'bank.json'), 'w') as f:
        json.dump(dict(note='fake'), f)
    return str(root)


def read_lines(path):
    """The JSON records of a JSON-lines file."""
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f]


def ok(result):
    """Assert a CliRunner result succeeded (showing its output and exception if not); return it."""
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result

#----------------------------------------------------------------------------
# Sessions and servers.

def session(bank_dir, out, target=10, repeat_rate=0.0, annotator='alice', seed=0):
    """tools/label.py's labeling session on the bank at `bank_dir`, writing to `out`."""
    return opened(Bank(bank_dir), out, annotator, target, repeat_rate, seed)


def opened(bank, out, annotator, target, repeat_rate, seed):
    """The session tools/label.py serve opens (label_pages.Sessions: its errors and 'warning: ...' lines), unlocked."""
    return Sessions(str(out), lambda name: L.open_session(str(out), name, bank.ids, target, repeat_rate=repeat_rate,
        seed=seed)).open_session(annotator)


class Running:
    """tools/label.py's server for a session, in a thread of this process."""

    def __init__(self, bank_dir, out, annotator='alice', target=10, repeat_rate=0.0, seed=0):
        self.bank = Bank(bank_dir)
        session = opened(self.bank, out, annotator, target, repeat_rate, seed)
        self.server = label.LabelServer(('127.0.0.1', 0), self.bank, session)
        self.port = self.server.server_address[1]
        self.url = f'http://127.0.0.1:{self.port}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def request(port, method, path, body=None, content_type='application/json', host=None):
    """(status, body bytes) of one raw request: the path goes out exactly as written, nothing normalised; `host`
    replaces the Host header."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    headers = {} if body is None else {'Content-Type': content_type}
    if host is not None:
        headers['Host'] = host
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def judge(port, state, choice):
    """POST `choice` for `state`'s current pair; return the server's next state."""
    status, data = request(port, 'POST', '/api/judge', dict(a=state['current']['a'], b=state['current']['b'], choice=choice))
    assert status == 200, data
    return json.loads(data)['state']


def start_process(*args, env=None):
    """`tools/label.py serve ... --port 0` as a subprocess; (process, port) once it listens."""
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'tools', 'label.py'), 'serve', '--port', '0', *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r'serving http://([^/]+):(\d+)/', line)
        if m:
            return proc, int(m.group(2)), ''.join(lines)
    proc.wait()
    raise AssertionError('the server did not start: ' + ''.join(lines))

#----------------------------------------------------------------------------
