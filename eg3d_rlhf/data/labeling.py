"""Pairwise labeling by people: pair order (random or active), a crash-safe shared JSONL writer, sessions and agreement."""

import collections
import fcntl
import heapq
import itertools
import os
import re
import socket
import stat
import threading
import time
import uuid

import numpy as np

import dnnlib
from eg3d_rlhf.data.preferences import TORN, Judgement, LabelError, is_repeat, load_judgements, now, record_line

#----------------------------------------------------------------------------
# Records (one JSON object per line, the preference format of eg3d_rlhf/data/preferences.py):
#   judgement   {"a", "b", "choice", "annotator", "time", "id": unique hex, "seconds": time on the pair}
#   repeat      the same plus "repeat": true; a and b are the original's b and a (sides swapped)
#   undo        {"undo_of": id of the judgement it takes back, "annotator", "time"}
# Either may carry "after_torn_line": true (preferences.TORN): the line before it is a write a crash cut short.

def append_record(path, record):
    """Append one JSON line so that it is on disk when this returns: O_APPEND, one write() under an exclusive
    flock (several processes may share the file), then fsync. A torn last line left by a crash elsewhere is
    closed with a newline first, so it never swallows this one, and this record says TORN so the loader skips it.
    OSError naming `path` when the disk refuses the record; the file is then cut back to what it held."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and _last_byte(path, size) != b'\n':
            line = b'\n' + _line(dict(record, **{TORN: True}))
        else:
            line = _line(record)
        try:
            written = os.write(fd, line)
            while written < len(line):                  # A regular file takes it all at once; be sure anyway.
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError as err:                          # A full disk: no part of the record stays; the file is named.
            _truncate(fd, size)
            raise OSError(err.errno, err.strerror, path) from None
        if size == 0:                                   # A new file: make its name durable too.
            _fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        os.close(fd)                                    # Closing releases the lock.


def _truncate(fd, size):
    try:
        os.ftruncate(fd, size)
    except OSError:                                     # The loader skips a torn last line; the caller says not saved.
        pass


def _line(record):
    return record_line(record).encode('utf-8')


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_byte(path, size):
    with open(path, 'rb') as f:
        f.seek(size - 1)
        return f.read(1)


def file_size(path):
    """Bytes in the file at `path`, -1 when there is none: taken before a session opens and again once its annotator's
    lock is held, it tells whether another server of that annotator wrote in between (then the session is reopened)."""
    return os.path.getsize(path) if os.path.exists(path) else -1


def check_appendable(path):
    """LabelError, before anything is served or written, unless judgements can be appended to `path` (a tool's --out):
    its folder exists and is writable (the lock file goes there too), and a file already there is a regular file this
    user may read and write (open_session then loads it)."""
    folder = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(folder):
        raise LabelError(f'{path}: the folder does not exist; create it, or choose another --out')
    if os.path.exists(path) and not os.path.isfile(path):
        raise LabelError(f'{path}: not a regular file; --out names the JSONL file judgements are appended to')
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise LabelError(f'{path}: this user cannot read and append to it; fix its permissions, or choose another --out')
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LabelError(f'{path}: its folder {folder} is not writable; fix its permissions, or choose another --out')


def open_lock(path):
    """The lock file at `path` opened for reading and appending, made if missing (0o644); never through a symlink (a
    planted 'labels.jsonl.NAME.lock' link would make the lock's truncate empty the file it points to) and never
    anything but a regular file: LabelError naming it otherwise."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if os.path.islink(path):
            raise LabelError(f'{path}: a symbolic link where a lock file goes; remove it (nothing was written through '
                'it)') from None
        raise LabelError(f'{path}: cannot open the lock file ({err.strerror or err}); fix its permissions') from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LabelError(f'{path}: not a regular file where a lock file goes; remove it')
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return os.fdopen(fd, 'a+', encoding='utf-8')


def lock_annotator(path, annotator):
    """The right to label `path` as `annotator` in this process alone (two sessions of one person would show the same
    pairs twice): an flock on '<file>.<annotator>.lock' beside the file, holding this pid, as the open lock file;
    closing it, or the end of the process however it ends, lets go. LabelError naming the holder when it is taken."""
    lock = open_lock(f'{os.path.realpath(path)}.{annotator}.lock')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read(20).strip()
        lock.close()
        pid = f' (pid {holder})' if holder.isdigit() else ''
        raise LabelError(f'{path}: {annotator} is labeling it already in another server{pid}; stop that one first, '
            'or label as another --annotator') from None
    lock.truncate(0)
    lock.write(f'{os.getpid()}\n')
    lock.flush()
    return lock


def hold_labels(path, exclusive=False):
    """The right to serve labels file `path` (a study's or ratings'), as the open lock file '<file>.lock': an flock
    shared by every server of the file for its whole life, exclusive for a start that replaces the file (--force),
    which then cannot begin while any server holds it. A shared hold waits for an exclusive one to end; an exclusive
    one is a LabelError naming the pids of the servers holding it. Each holder's pid is a line of the file."""
    lock = open_lock(f'{os.path.realpath(path)}.lock')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
    except BlockingIOError:
        if exclusive:
            holders = _live_pids(lock)
            lock.close()
            raise LabelError(f'{path} is being served by another process (pid {", ".join(holders) or "unknown"}); '
                'stop it first') from None
        fcntl.flock(lock, fcntl.LOCK_SH)
        alone = False
    if alone:                                           # Pids of servers gone since are dropped.
        lock.truncate(0)
    lock.write(f'{os.getpid()}\n')
    lock.flush()
    if alone and not exclusive:
        fcntl.flock(lock, fcntl.LOCK_SH)
    return lock


def share_hold(lock):
    """An exclusive hold_labels lock made shared, once the file it guards is in place: other servers may join."""
    fcntl.flock(lock, fcntl.LOCK_SH)


def _live_pids(lock):
    lock.seek(0)
    pids = dict.fromkeys(line.strip() for line in lock.read(1 << 16).splitlines())
    return [p for p in pids if p.isdigit() and dnnlib.util._process_alive(int(p))]  # pylint: disable=protected-access


def file_identity(path):
    """(device, inode) of the file at `path`, None when there is none: a file replaced under a server (moved aside,
    written anew) has another."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def move_aside(*paths):
    """Move the paths that exist (files or folders) to '<path>.replaced-<UTC time>', one suffix for all of them (with
    '-2', '-3', ... when a name is taken: starts in the same second), never over anything: each name is made
    exclusively before the move lands on it. Returns the new names; a move that fails puts the earlier ones back."""
    paths = [p for p in paths if os.path.lexists(p)]
    stamp = now().replace(':', '')
    for n in itertools.count(1):
        names = [f'{p}.replaced-{stamp}' + (f'-{n}' if n > 1 else '') for p in paths]
        made = []
        try:
            for path, name in zip(paths, names):
                _reserve(name, os.path.isdir(path) and not os.path.islink(path))
                made.append(name)
        except OSError as err:
            for name in made:
                _unreserve(name)
            if isinstance(err, FileExistsError):
                continue
            raise
        break
    moved = []
    try:
        for path, name in zip(paths, names):
            os.replace(path, name)                      # Onto its own empty reservation.
            moved.append((path, name))
    except OSError:
        for path, name in reversed(moved):
            os.replace(name, path)
        for name in names[len(moved):]:
            _unreserve(name)
        raise
    return names


def _reserve(name, folder):
    if folder:
        os.mkdir(name)
    else:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def _unreserve(name):
    (os.rmdir if os.path.isdir(name) else os.remove)(name)


def check_listen(host, port):
    """LabelError unless a page could listen on host:port now (bound as the server binds, with SO_REUSEADDR): a start
    that replaces files checks it before it moves any."""
    try:
        socket.create_server((host, port), family=socket.AF_INET6 if ':' in host else socket.AF_INET).close()
    except OSError as err:
        raise LabelError(f'cannot listen on {host}:{port}: {err.strerror or err}') from None


def read_companion(path, limit, fix):
    """The JSON object of a file kept beside a labels file (a study's or ratings' key, the invites), read through
    dnnlib.util.read_json_object: a regular file (never a FIFO or a device) of at most `limit` bytes. LabelError of
    one line naming it, what is wrong and `fix` otherwise."""
    try:
        return dnnlib.util.read_json_object(path, error=dnnlib.util.BadFile, limit=limit)
    except (dnnlib.util.BadFile, dnnlib.util.NotRegularFile) as err:
        problem = str(err)
    except OSError as err:
        problem = f'{path}: cannot be read ({err.strerror or err})'
    raise LabelError(f'{problem}; {fix}')

#----------------------------------------------------------------------------
# Pair order.

def pair_key(a, b):
    return frozenset((a, b))


def random_pairs(ids, rng, skip=()):
    """Every unordered pair of different ids once, in seeded random order, sides drawn at random (lazy); pairs
    whose pair_key is in `skip` are passed over (the order of the rest is unchanged)."""
    if skip:
        yield from (p for p in random_pairs(ids, rng) if pair_key(*p) not in skip)
        return
    ids = sorted(ids)
    n = len(ids)
    total = n * (n - 1) // 2
    if total <= 200_000:                                # Small enough to shuffle outright.
        pairs = list(itertools.combinations(range(n), 2))
        for k in rng.permutation(total):
            i, j = pairs[k]
            yield (ids[i], ids[j]) if rng.uniform() < 0.5 else (ids[j], ids[i])
        return
    seen = set()
    while len(seen) < total:                            # Rejection is cheap while few pairs are taken.
        i, j = (int(x) for x in rng.randint(n, size=2))
        if i != j and (min(i, j), max(i, j)) not in seen:
            seen.add((min(i, j), max(i, j)))
            yield ids[i], ids[j]


def active_pairs(scores, rng):
    """Every unordered pair once, closest reward scores first (ties by id), sides drawn at random (lazy): the
    pairs the reward model is least sure about. A heap over neighbours in score order, O(log n) per pair."""
    order = sorted(scores, key=lambda k: (scores[k], k))
    s = [float(scores[k]) for k in order]
    heap = [(s[i + 1] - s[i], i, i + 1) for i in range(len(order) - 1)]
    heapq.heapify(heap)
    while heap:
        _, i, j = heapq.heappop(heap)
        if j + 1 < len(order):
            heapq.heappush(heap, (s[j + 1] - s[i], i, j + 1))
        a, b = order[i], order[j]
        yield (a, b) if rng.uniform() < 0.5 else (b, a)


def expected_information(margins):
    """Expected information gain (BALD) of judging pairs whose score margins r_a - r_b are given per ensemble member
    [..., K]: H(mean_k p_k) - mean_k H(p_k), p_k = sigmoid(margin_k), in nats. High where the members disagree about
    the outcome, not merely where they all expect a coin flip (label noise no model can learn away)."""
    with np.errstate(over='ignore'):                    # exp(-margin) overflows to inf: p is 0 there, as it should.
        p = 1 / (1 + np.exp(-np.asarray(margins, dtype=np.float64)))
    entropy = lambda q: -(q * np.log(np.clip(q, 1e-12, 1)) + (1 - q) * np.log(np.clip(1 - q, 1e-12, 1)))
    return entropy(p.mean(axis=-1)) - entropy(p).mean(axis=-1)


MAX_CANDIDATES = 2_000_000      # informative_pairs ranks every pair up to this many, a random subset of them beyond.


def informative_pairs(member_scores, rng, exclude=()):
    """Pairs in decreasing expected information gain under an ensemble's scores {id: [K] member rewards}, sides drawn
    at random (lazy). Pairs are served in rounds in which no sample appears twice (a greedy matching of the ranking),
    so a batch spreads over many samples instead of the few the ensemble is least sure of; `exclude` holds pair_keys
    already judged. Banks whose pairs exceed MAX_CANDIDATES rank a seeded random subset of that many."""
    ids = sorted(member_scores)
    n = len(ids)
    if n < 2:
        return
    s = np.stack([np.asarray(member_scores[k], dtype=np.float64).reshape(-1) for k in ids])
    total = n * (n - 1) // 2
    if total <= MAX_CANDIDATES:
        i, j = np.triu_indices(n, k=1)
    else:
        i, j = rng.randint(n, size=MAX_CANDIDATES), rng.randint(n, size=MAX_CANDIDATES)
        keep = i != j
        i, j = np.minimum(i, j)[keep], np.maximum(i, j)[keep]
        i, j = np.unique(np.stack([i, j], 1), axis=0).T
    gain = np.concatenate([expected_information(s[i[k:k + 65536]] - s[j[k:k + 65536]]) for k in range(0, len(i), 65536)])
    order = np.lexsort((rng.uniform(size=len(gain)), -gain))      # Highest gain first, equal gains in random order.
    served = {pair_key(*p) for p in exclude}
    while True:
        used, left = set(), []
        for k in order:
            a, b = ids[i[k]], ids[j[k]]
            if pair_key(a, b) in served:
                continue
            if a in used or b in used:
                left.append(k)
                continue
            used.update((a, b))
            served.add(pair_key(a, b))
            yield (a, b) if rng.uniform() < 0.5 else (b, a)
        if not left:
            return
        order = left


def active_order(member_scores, rng, exclude=()):
    """The labeling page's --active order from a reward's scores {id: [K] member rewards}: informative_pairs for an
    ensemble (K > 1), closest scores first (active_pairs) for a single model; pairs in `exclude` are skipped."""
    members = len(np.atleast_1d(next(iter(member_scores.values())))) if member_scores else 1
    if members > 1:
        yield from informative_pairs(member_scores, rng, exclude)
        return
    skip = {pair_key(*p) for p in exclude}
    mean = {k: float(np.mean(v)) for k, v in member_scores.items()}
    yield from (p for p in active_pairs(mean, rng) if pair_key(*p) not in skip)

#----------------------------------------------------------------------------

class UndoStack:
    """A session's undo: its standing records (`_stack`, oldest first), what to serve before new items (`_pending`,
    last first), the item on show (`_current`) and `_state()`; `shown_again(record)` says which item an undone
    record puts back (a pair, a rated sample). `opaque`, where the records carry opaque tokens, is the key they
    belong to (blind_study.OpaqueSamples): a record is written only while that key is the one on disk."""
    opaque = None

    def _append(self, record):
        """Write a record of this session (append_record); OSError, nothing written, when the key of its tokens was
        replaced under it (a study started anew with --force): the tokens would mean nothing there."""
        if self.opaque is not None:
            self.opaque.check_current()
        append_record(self.path, record)

    def undo(self):
        """Take back this annotator's last standing record (an undo record, on disk when this returns); its item is
        shown again next. ValueError when there is nothing to undo."""
        with self._lock:
            if not self._stack:
                raise ValueError('nothing to undo')
            record = self._stack[-1]
            self._append(dict(undo_of=record['id'], annotator=self.annotator, time=now()))
            self._stack.pop()
            if self._current is not None:
                self._pending.append(self._current)
            self._pending.append(self.shown_again(record))
            self._current = None
            return self._state()


class LabelSession(UndoStack):
    """One annotator's labeling state over a JSONL file, resumed from what the file holds; thread-safe.

    `pairs` is an iterator of (a, b) (random_pairs, active_pairs). Pairs this annotator already judged are not
    served again, except as deliberate repeats: with probability `repeat_rate`, a judged (not skipped, not yet
    repeated) pair is served with sides swapped. `target` counts new pairs; repeats come on top."""

    def __init__(self, path, annotator, pairs, target, repeat_rate=0.0, seed=0, known_ids=None):
        self.path, self.annotator, self.target, self.repeat_rate = path, annotator, target, repeat_rate
        self._pairs = pairs
        self._rng = np.random.RandomState(seed + 1)     # Not the pair order's stream.
        self._lock = threading.Lock()
        self._stack = []                                # This annotator's standing judgements, oldest first.
        if os.path.isfile(path):
            self._stack = [j.to_dict() for j in load_judgements(path, known_ids, repeats=True) if j.annotator == annotator]
        self._pending = []                              # Pairs to serve before new ones (after an undo), last first.
        self._current = None
        self._shown_at = None

    def _judged(self):
        return {pair_key(r['a'], r['b']) for r in self._stack if not r.get('repeat')}

    def _repeat_candidates(self):
        repeated = {pair_key(r['a'], r['b']) for r in self._stack if r.get('repeat')}
        return [r for r in self._stack if not r.get('repeat') and r['choice'] != 'skip'
            and pair_key(r['a'], r['b']) not in repeated]

    def _done(self):
        return sum(not r.get('repeat') for r in self._stack)

    def _next_pair(self):
        if self._pending:
            return self._pending.pop()
        if self._done() >= self.target:
            return None
        candidates = self._repeat_candidates()
        if candidates and self._rng.uniform() < self.repeat_rate:
            r = candidates[self._rng.randint(len(candidates))]
            return dict(a=r['b'], b=r['a'], repeat=True)
        judged = self._judged()
        for a, b in self._pairs:
            if pair_key(a, b) not in judged:
                return dict(a=a, b=b, repeat=False)
        return None

    def _state(self):
        if self._current is None:
            self._current = self._next_pair()
            self._shown_at = time.monotonic()
        last = self._stack[-1] if self._stack else None
        return dict(annotator=self.annotator, done=self._done(), target=self.target, current=self._current,
            repeats=sum(bool(r.get('repeat')) for r in self._stack), last=last)

    def state(self):
        """{annotator, done, target, current: {a, b, repeat} or None when finished, repeats, last record}."""
        with self._lock:
            return self._state()

    def judge(self, a, b, choice):
        """Write a judgement of the current pair (on disk when this returns) and move on; ValueError when (a, b)
        is not the pair being shown (a stale page), so a judgement is never attached to the wrong pair."""
        with self._lock:
            current = self._state()['current']
            if current is None or (a, b) != (current['a'], current['b']):
                raise ValueError(f'{a} vs {b} is not the pair being shown')
            record = Judgement(a=a, b=b, choice=choice, annotator=self.annotator, time=now()).to_dict()
            record.update(id=uuid.uuid4().hex, seconds=round(time.monotonic() - self._shown_at, 2))
            if current['repeat']:
                record['repeat'] = True
            self._append(record)
            self._stack.append(record)
            self._current = None
            return self._state()

    def shown_again(self, record):
        """The pair an undone judgement puts back (UndoStack.undo)."""
        return dict(a=record['a'], b=record['b'], repeat=bool(record.get('repeat')))

ANNOTATOR = re.compile(r'[A-Za-z0-9_.@-]{1,64}')      # Names of people who label.


def open_session(path, annotator, ids, target, repeat_rate=0.0, seed=0, scores=None):
    """A LabelSession of `ids` resumed from `path`: pairs in seeded random order or, given reward scores {id: score or
    [member scores]}, the active order (active_order: the ensemble's most disputed pairs first, or one model's closest
    scores). LabelError or OSError when `path` cannot be resumed."""
    rng = np.random.RandomState(seed)
    pairs = random_pairs(ids, rng) if scores is None else active_order(scores, rng)
    return LabelSession(path, annotator, pairs, target, repeat_rate=repeat_rate, seed=seed, known_ids=ids)

#----------------------------------------------------------------------------
# Agreement.

def outcome(j):
    """'tie', or the id of the sample that won; None for a skip."""
    return {'a': j.a, 'b': j.b, 'tie': 'tie'}.get(j.choice)


def cohen_kappa(x, y):
    """Cohen's kappa of two equally long label lists: (p_o - p_e) / (1 - p_e), with p_e from each rater's own
    category frequencies. None when p_e = 1 (both always gave the one same category: kappa is undefined)."""
    assert len(x) == len(y) and len(x) > 0
    n = len(x)
    p_o = sum(u == v for u, v in zip(x, y)) / n
    cx, cy = collections.Counter(x), collections.Counter(y)
    p_e = sum(cx[k] * cy[k] for k in cx) / (n * n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def label_stats(judgements):
    """Counts per annotator, self-consistency on repeats and agreement between annotators, from judgements loaded
    with repeats (load_judgements(..., repeats=True): undone ones are already gone).

    Self-consistency: a repeat agrees when it names the same winner sample (or tie) as the original; skips on
    either side are left out. Agreement and kappa use each annotator's original judgement of the pairs both
    judged, categories = the winner of the pair (its first id in sorted order, or the second) or tie; skips out."""
    by = collections.defaultdict(list)
    for j in judgements:
        by[j.annotator].append(j)
    annotators, originals = {}, {}
    for name, js in by.items():
        counts = collections.Counter(j.choice for j in js if not is_repeat(j))
        originals[name] = {pair_key(j.a, j.b): j for j in js if not is_repeat(j)}
        agreed = total = 0
        for r in (j for j in js if is_repeat(j)):
            first = originals[name].get(pair_key(r.a, r.b))
            if first is not None and outcome(first) is not None and outcome(r) is not None:
                total += 1
                agreed += outcome(first) == outcome(r)
        annotators[name] = dict(judgements=sum(counts.values()), decided=counts['a'] + counts['b'], ties=counts['tie'],
            skips=counts['skip'], repeats=sum(map(is_repeat, js)),
            self_consistency=dict(pairs=total, agreed=agreed, rate=agreed / total if total else None))
    pairs = []
    for x, y in itertools.combinations(sorted(by), 2):
        shared = sorted(set(originals[x]) & set(originals[y]), key=sorted)
        shared = [k for k in shared if outcome(originals[x][k]) is not None and outcome(originals[y][k]) is not None]
        cx = [category(originals[x][k]) for k in shared]
        cy = [category(originals[y][k]) for k in shared]
        agree = sum(u == v for u, v in zip(cx, cy))
        pairs.append(dict(annotators=[x, y], shared=len(shared), agreed=agree,
            agreement=agree / len(shared) if shared else None, kappa=cohen_kappa(cx, cy) if shared else None))
    return dict(annotators=annotators, pairs=pairs)


def category(j):
    """'first' (the pair's first id in sorted order won), 'second', or 'tie': the same pair reads the same whichever
    side each annotator saw it on."""
    won = outcome(j)
    return won if won == 'tie' else ('first' if won == min(j.a, j.b) else 'second')


def percent(rate):
    return '(n/a)' if rate is None else f'({100 * rate:.1f}%)'


def describe_stats(path, judgements, stats):
    """Lines for the console: the file's judgements, a table of label_stats' annotators (judged, decided, ties, skips,
    repeats, self-consistency), then each two annotators' agreement and Cohen's kappa."""
    repeats = sum(a['repeats'] for a in stats['annotators'].values())
    lines = [f'{path}: {len(judgements)} judgements ({repeats} repeats) by {len(stats["annotators"])} annotators',
        f'{"annotator":<16} {"judged":>6} {"decided":>7} {"ties":>5} {"skips":>5} {"repeats":>7}  self-consistency']
    for name, a in stats['annotators'].items():
        sc = a['self_consistency']
        lines.append(f'{name:<16} {a["judgements"]:>6} {a["decided"]:>7} {a["ties"]:>5} {a["skips"]:>5} '
            f'{a["repeats"]:>7}  {sc["agreed"]}/{sc["pairs"]} {percent(sc["rate"])}')
    for p in stats['pairs']:
        kappa = 'n/a' if p['kappa'] is None else f'{p["kappa"]:.3f}'
        lines.append(f'{" vs ".join(p["annotators"])}: {p["shared"]} shared pairs, agreement {p["agreed"]}/{p["shared"]} '
            f'{percent(p["agreement"])}, Cohen\'s kappa {kappa}')
    return lines

#----------------------------------------------------------------------------
