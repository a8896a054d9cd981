"""Blind studies and ratings under test: two banks of faces whose noses differ by a known amount, a scripted annotator
that tells samples apart by hashing the pictures it is served, and a study server whose every answer is recorded."""

import hashlib
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import PIL.Image
from click.testing import CliRunner

from eg3d_rlhf.data import bank as B
from eg3d_rlhf.data import label_server
from eg3d_rlhf.data.preferences import Judgement, now
from eg3d_rlhf.geometry import preview
from eg3d_rlhf.geometry.sigma import slab_grid
from tests.conftest import REPO
from tests.helpers.banks import face_volume, slab_description
from tests.helpers.mutations import tree_digest
from tools import label

#----------------------------------------------------------------------------

RES = 40                    # Slabs of 20 x 22 x 20.
PREVIEW = 40                # Preview size in pixels.


def nose_bank(root, noses):
    """A bank laid out like sample_bank's: per id in `noses` ({id: nose radius}) a face slab with that nose, its three
    previews rendered at the preview level, an RGB picture, meta.json (slab grid) and bank.json. Returns the folder."""
    grid = slab_grid(RES)
    os.makedirs(root)
    B.write_json(os.path.join(root, B.BANK_FILE), dict(preview_level=10.0, preview_res=PREVIEW, mesh_convention='ours',
        slab=slab_description(RES)))
    for k, (sample_id, nose) in enumerate(sorted(noses.items())):
        folder = os.path.join(root, sample_id)
        os.makedirs(folder)
        volume = face_volume(grid, nose)
        np.save(os.path.join(folder, B.SLAB_FILE), volume.astype(np.float16))
        for view, picture in preview.render_views(volume, grid, level=10.0, resolution=PREVIEW).items():
            preview.save_picture(picture, os.path.join(folder, B.preview_file(view)))
        PIL.Image.new('RGB', (16, 16), (30 + 20 * k % 200, int(1000 * nose) % 256, 90)).save(os.path.join(folder, B.IMAGE_FILE))
        B.write_json(os.path.join(folder, B.META_FILE), dict(id=sample_id, slab=slab_description(RES)))
    return str(root)


def file_hash(data):
    return hashlib.sha256(data).hexdigest()


class PictureIndex(dict):
    """{sha256 of a front preview: (bank folder, id)} over some banks, and the pictures themselves (`pictures`)."""

    def distance(self, data):
        """Mean absolute difference of the PNG bytes `data` from the nearest front preview of the banks."""
        with PIL.Image.open(io.BytesIO(data)) as im:
            x = np.asarray(im, dtype=np.float32)
        return min(float(np.abs(x - p).mean()) for p in self.pictures if p.shape == x.shape)


def picture_index(banks):
    """The PictureIndex of `banks`' front previews; every picture must be distinct."""
    index = PictureIndex()
    index.pictures = []
    for root in banks:
        for sample_id in B.Bank(root).ids:
            with open(os.path.join(root, sample_id, B.preview_file('front')), 'rb') as f:
                data = f.read()
            index[file_hash(data)] = (root, sample_id)
            index.pictures.append(np.asarray(PIL.Image.open(io.BytesIO(data)), dtype=np.float32))
    assert len(index) == sum(len(B.Bank(r)) for r in banks), 'two samples share a picture'
    return index


def fetch(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
        return r.read()


def smaller_nose(url_a, url_b, index, noses):
    """'a' or 'b': the side whose front picture (fetched from its URL) shows the smaller nose. Pictures of no known
    sample are an attention check's two sides: as a person would, it takes the one that looks most like a sample it
    knows (the flawed one has floaters)."""
    data = [fetch(u) for u in (url_a, url_b)]
    found = [index.get(file_hash(d)) for d in data]
    if found[0] is None or found[1] is None:
        far = [index.distance(d) for d in data]
        return 'a' if far[0] < far[1] else 'b'
    return 'a' if noses[found[0]] < noses[found[1]] else 'b'

#----------------------------------------------------------------------------

class Recorded:
    """A label server for `session` in a thread of this process (samples: a Study's or ratings key's sample_of) that
    records every answer it sends: (path, content type, body)."""

    def __init__(self, session, samples, page=label_server.PAGE_FILE, host='127.0.0.1', sessions=None, invites=None):
        self.answers = []
        outer = self

        class Handler(label_server.Handler):
            def reply(self, status, body, content_type, headers=()):
                outer.answers.append((self.path, content_type, body))
                super().reply(status, body, content_type, headers)

        self.server = label_server.LabelServer((host, 0), None, session, samples=samples, sessions=sessions,
            invites=invites, page=page)
        self.server.RequestHandlerClass = Handler
        self.port = self.server.server_address[1]
        self.url = f'http://127.0.0.1:{self.port}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def call(port, method, path, body=None, headers=None):
    """(status, parsed JSON or raw bytes, response headers) of one request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault('Content-Type', 'application/json')
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    kind = response.getheader('Content-Type', '')
    return response.status, json.loads(data) if kind.startswith('application/json') else data, response


def run_label(*args):
    """CliRunner's result of tools/label.py on args (each made a string), in this process."""
    return CliRunner().invoke(label.main, [str(a) for a in args])


def files_beside(folder):
    """{path: sha256} of the files under `folder` but lock files and banks (folders named bank*): the labels, keys,
    checks and what was moved aside."""
    return {p: d for p, d in tree_digest(str(folder)).items() if not p.endswith('.lock') and '/bank' not in p}


def start_page(command, *args):
    """`tools/label.py COMMAND --port 0 ARGS` (study, rate) as a subprocess: (process, port) once it listens. Ctrl-C
    (SIGINT) stops it even where the test run ignores SIGINT (a shell's background job does, and children inherit it)."""
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'tools', 'label.py'), command, '--port', '0',
        *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r'serving http://[^/]+:(\d+)/', line)
        if m:
            return proc, int(m.group(1))
    proc.wait()
    raise AssertionError('the server did not start: ' + ''.join(lines))

#----------------------------------------------------------------------------


def judgement(study, annotator, id_, winner, repeat=False, swap=False):
    """A judgement of the study pair of `id_` with `winner` ('tuned', 'original', 'tie', 'skip')."""
    a, b = next(p for p in study.pairs if study.samples[p[0]][1] == id_)
    a, b = (b, a) if swap else (a, b)
    choice = winner if winner in ('tie', 'skip') else 'a' if study.role(a) == winner else 'b'
    extra = dict(repeat=True) if repeat else {}
    return Judgement(a=a, b=b, choice=choice, annotator=annotator, time=now(), extra=extra)
