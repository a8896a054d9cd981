"""A simulated annotator playing a blind study through its page: each pair judged from the pictures it is served."""

import hashlib
import http.client
import io
import json
import urllib.parse

import numpy as np
import PIL.Image

from eg3d_rlhf.data import bank as B
from eg3d_rlhf.data.person_like import JND_PIXELS, PersonLikeAnnotator, pixel_size

#----------------------------------------------------------------------------
# The player asks the page what a browser asks (GET /api/state, GET /bank/<token>/preview_front.png, POST /api/judge)
# and nothing else: it never reads the study's key. It knows a served picture as a person knows a face, by having
# seen it: an index from the sha256 of every front preview of some bank folders to that sample's slab, with no bank
# name kept, so what it judges is the geometry behind the picture and nothing that says which side is tuned. A picture
# of no known sample is one side of an attention check (a copy with floaters, redrawn): the player takes the side that
# looks most like a sample it has seen, as a person picks the clean head.


class SeenSamples:
    """The front previews of some bank folders, known by their bytes; each leads to its slab's taste score."""

    def __init__(self, folders, score):
        self.score, self.found, self.pictures = score, {}, []
        for root in folders:
            bank = B.Bank(root)
            bank.level = float(B.Bank.read_settings(root).get('preview_level', 10.0))
            for sample_id in bank.ids:
                with open(bank.path(sample_id, B.preview_file('front')), 'rb') as f:
                    data = f.read()
                self.found[hashlib.sha256(data).hexdigest()] = (bank, sample_id)
                self.pictures.append(_grey(data))
        self.scores = {}

    def taste(self, data):
        """The taste score of the sample whose front preview is `data`, or None for a picture never seen."""
        hit = self.found.get(hashlib.sha256(data).hexdigest())
        if hit is None:
            return None
        key = (hit[0].root, hit[1])
        if key not in self.scores:
            bank, sample_id = hit
            self.scores[key] = float(self.score(bank.slab(sample_id), bank.grid(sample_id), bank.level))
        return self.scores[key]

    def distance(self, data):
        """Mean absolute grey-level difference of a picture from the nearest seen one of its size."""
        x = _grey(data)
        return min((float(np.abs(x - p).mean()) for p in self.pictures if p.shape == x.shape), default=np.inf)


def _grey(data):
    with PIL.Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert('L'), dtype=np.float32)


def default_jnd(folder, pixels=JND_PIXELS):
    """The JND in world units for a bank: `pixels` pixels of its previews (person_like.pixel_size)."""
    bank = B.Bank(folder)
    return pixels * pixel_size(bank.grid(bank.ids[0]), int(B.Bank.read_settings(folder)['preview_res']))

#----------------------------------------------------------------------------

class Page:
    """The study page at http://host:port/, asked what a browser asks; `token` an invite's secret, when one is needed."""

    def __init__(self, url, token=None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != 'http' or not parts.hostname:
            raise ValueError(f'{url}: give the page\'s address, e.g. http://127.0.0.1:8765/')
        self.host, self.port, self.token = parts.hostname, parts.port or 80, token
        self.origin = f'http://{parts.netloc}'

    def request(self, method, path, body=None):
        if self.token:
            path += ('&' if '?' in path else '?') + 'token=' + urllib.parse.quote(self.token)
        headers = {'Origin': self.origin}
        if body is not None:
            headers['Content-Type'] = 'application/json'
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f'{method} {path.split("?")[0]}: {response.status} {data[:200].decode("utf-8", "replace")}')
        return json.loads(data) if response.getheader('Content-Type', '').startswith('application/json') else data


def play(page, seen, annotator, limit=None, progress=None):
    """Judge the pairs the page shows until it has none (or `limit` of them); returns what was sent, as
    [{a, b, choice, visible}] (visible None for an attention check). progress(1) after each."""
    state, sent = page.request('GET', '/api/state'), []
    while state.get('current') and (limit is None or len(sent) < limit):
        a, b = state['current']['a'], state['current']['b']
        pictures = [page.request('GET', f'/bank/{t}/preview_front.png') for t in (a, b)]
        scores = [seen.taste(p) for p in pictures]
        if None in scores:                              # An attention check: the side most like a face seen.
            far = [seen.distance(p) for p in pictures]
            choice, visible = ('a' if far[0] <= far[1] else 'b'), None
        else:
            choice, visible = annotator.judge(*scores), annotator.visible(*scores)
        state = page.request('POST', '/api/judge', dict(a=a, b=b, choice=choice))['state']
        sent.append(dict(a=a, b=b, choice=choice, visible=visible))
        if progress is not None:
            progress(1)
    return sent


def person(taste, folders, jnd=None, jnd_pixels=JND_PIXELS, **kwargs):
    """(PersonLikeAnnotator, SeenSamples) for a study of bank `folders`; the JND `jnd` world units, or `jnd_pixels`
    pixels of the first bank's previews."""
    jnd = default_jnd(folders[0], jnd_pixels) if jnd is None else jnd
    annotator = PersonLikeAnnotator(taste, jnd, **kwargs)
    return annotator, SeenSamples(folders, annotator.score)

#----------------------------------------------------------------------------
