"""A round of labels from people: one list of pairs that every invited annotator shares, served until N are judged."""

import os
import socket
import threading
import time
import warnings

import tqdm

from eg3d_rlhf.data import invites as invite_files
from eg3d_rlhf.data.label_pages import Sessions
from eg3d_rlhf.data.label_server import WILDCARDS, LabelServer, is_loopback
from eg3d_rlhf.data.labeling import LabelSession, check_appendable, pair_key
from eg3d_rlhf.data.preferences import LabelError, LabelWarning, load_judgements, write_judgements

#----------------------------------------------------------------------------
# The online-rounds runner (finetune/rounds.py) asks people about a round's chosen pairs, in order. Whoever opens the
# page next gets the first pair nobody has judged, nobody else is looking at and they have not skipped; a tie counts
# as a judgement, a skip puts the pair back for the others. Spare pairs follow the chosen ones and are served only
# once every chosen pair is judged, taken or skipped by that annotator, so a pair everyone skips does not stall the
# round. The round is done when `count` pairs are judged; its labels are the first `count` judged pairs in the list's
# order, each with its first standing judgement, whoever judged it and in whatever order: two runs whose people answer
# alike give the same labels file, so a round stopped while labelling and resumed ends as one that was not.

CLAIM_SECONDS = 600         # How long a pair shown to one annotator is kept from the others without an answer.


class PairPool:
    """The pairs of one labels file (`path`) that its annotators share; `count` of them are to be judged."""

    def __init__(self,
        path,                       # The labels file every annotator's page appends to.
        pairs,                      # [(a, b)] in the order they are served: the chosen pairs, then spares.
        count,                      # Judged pairs that complete the round (at most len(pairs)).
        claim_seconds = CLAIM_SECONDS, # See CLAIM_SECONDS.
    ):
        assert 0 < count <= len(pairs), (count, len(pairs))
        self.path, self.pairs, self.count, self.claim_seconds = path, [tuple(p) for p in pairs], count, claim_seconds
        self.keys = [pair_key(*p) for p in self.pairs]
        self._claims = {}                               # pair key -> (annotator, time.monotonic() when shown).
        self._lock = threading.Lock()

    def _judgements(self):
        if not os.path.isfile(self.path):
            return []
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', LabelWarning)  # The server that opened each session said it once.
            return load_judgements(self.path)

    def judged(self):
        """{pair key: its first standing judgement that is not a skip}, for the pool's pairs."""
        keys, first = set(self.keys), {}
        for j in self._judgements():
            key = pair_key(j.a, j.b)
            if j.choice != 'skip' and key in keys:
                first.setdefault(key, j)
        return first

    def done(self):
        """Pairs judged so far, at most `count`."""
        return min(len(self.judged()), self.count)

    def next_pair(self, annotator):
        """The pair to show `annotator` next, now kept from the others, or None when there is none for them."""
        with self._lock:
            now, judgements = time.monotonic(), self._judgements()
            judged = {pair_key(j.a, j.b) for j in judgements if j.choice != 'skip'}
            if len(judged & set(self.keys)) >= self.count:
                return None
            seen = {pair_key(j.a, j.b) for j in judgements if j.annotator == annotator}
            self._claims = {k: (who, t) for k, (who, t) in self._claims.items()
                if who != annotator and now - t < self.claim_seconds and k not in judged}
            for key, pair in zip(self.keys, self.pairs):
                if key not in judged and key not in seen and key not in self._claims:
                    self._claims[key] = (annotator, now)
                    return pair
            return None

    def view(self, annotator):
        """What a LabelSession of `annotator` iterates for its next pair: the pool's next pair for them, or nothing."""
        pool = self

        class View:
            def __iter__(self):
                pair = pool.next_pair(annotator)
                return iter([] if pair is None else [pair])
        return View()

    def labels(self):
        """The round's judgements: the first `count` judged pairs in the pool's order, each its first judgement."""
        judged = self.judged()
        return [judged[k] for k in self.keys if k in judged][:self.count]


def serve_round(pool, bank, host='127.0.0.1', port=8765, annotator=None, invites=None, allow_hosts=(), progress=None,
        poll=0.5):
    """Serve the pairs page of `pool` over `bank` until its pairs are judged, then stop; progress(done) as they come.
    On loopback the page is `annotator`'s; beyond it, each invited annotator's (invites: an invites.Invites). Returns
    the address served. LabelError for a labels file that cannot be appended to or an address not bound."""
    check_appendable(pool.path)
    remote = not is_loopback(host)
    if not remote and annotator is None:
        raise LabelError('on loopback the page labels as one person: name them (people:NAME), or serve beyond '
            'loopback to invited annotators')
    sessions = Sessions(pool.path, lambda name: LabelSession(pool.path, name, pool.view(name), pool.count,
        known_ids=bank.ids))
    try:
        try:
            server = LabelServer((host, port), bank, None if remote else sessions.get(annotator), sessions=sessions,
                invites=invites if remote else None, allow_hosts=allow_hosts)
        except OSError as err:
            raise LabelError(f'cannot listen on {host}:{port}: {err.strerror or err}') from None
        address = f'http://{host}:{server.server_address[1]}/'
        print(f'serving {address}: {pool.count} pairs of {bank.root} for ' + (f'{annotator}' if not remote else
            f'invited annotators ({invites.reload()} in {invites.path})'), flush=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            while True:
                done = pool.done()
                if progress is not None:
                    progress(done)
                if done >= pool.count:
                    return address
                time.sleep(poll)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        sessions.close()


def write_labels(pool, path):
    """The round's labels (PairPool.labels) as a judgements file, atomically; returns them."""
    labels = pool.labels()
    write_judgements(path, labels)
    return labels

#----------------------------------------------------------------------------

class Progress:
    """serve_round's progress: a bar of a round's judgements."""

    def __init__(self, total):
        self.total, self.bar = total, None

    def __call__(self, done):
        if self.bar is None:
            self.bar = tqdm.tqdm(total=self.total, desc='judgements', unit='pair')
        self.bar.update(done - self.bar.n)
        if done >= self.total:
            self.bar.close()
            self.bar = None


def invite(labels, names, host, port):
    """The run's invites (of `labels`, as label.py invite --out takes it), each of `names` not yet invited added and
    their link printed."""
    guests = invite_files.Invites(labels)
    known = set(invite_files.read_invites(guests.path).values())
    where = socket.gethostname() if host in WILDCARDS else host
    for name in names:
        if name in known:
            print(f'{name}: invited already (label.py invite {name} --out {labels} --force gives a new link)')
        else:
            print(f'{name}: http://{where}:{port}/?token={invite_files.invite(labels, name)}')
    return guests

#----------------------------------------------------------------------------
