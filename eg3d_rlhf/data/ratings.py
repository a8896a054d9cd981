"""Ratings by people: one sample at a time scored 1-5 on named criteria, hidden behind opaque tokens, crash-safe."""

import os
import random
import re
import threading
import time
import uuid
import warnings
import zlib

import numpy as np

from eg3d_rlhf.data.bank import BankError, write_json
from eg3d_rlhf.data.blind_study import KEY_LIMIT, OpaqueSamples, hold_key
from eg3d_rlhf.data.labeling import UndoStack, check_listen, move_aside, read_companion
from eg3d_rlhf.data.preferences import LabelError, LabelWarning, _records, now, parse_undo

#----------------------------------------------------------------------------
# Records in the ratings file FILE (one JSON object per line, appended by labeling.append_record):
#   rating  {"sample": TOKEN, "ratings": {CRITERION: 1..5, ...}, "annotator", "time", "id": hex, "seconds"}
#   skip    {"sample": TOKEN, "skip": true, "annotator", "time", "id", "seconds"}
#   undo    {"undo_of": ID, "annotator", "time"}
# FILE.key.json (never served) maps each opaque token to its bank and sample id and names the criteria.

FORMAT = 'eg3d_rlhf.ratings/1'
SCALE = (1, 5)
CRITERION = re.compile(r'[A-Za-z][A-Za-z0-9_-]{0,31}')


def key_path(out):
    return f'{out}.key.json'


# Named sets of criteria `rate --criteria` takes; the page shows each criterion's description beside it. paper5: the
# Circular-DPO paper's five-criterion study (text consistency, 3D plausibility, texture detail, geometric detail,
# texture-geometry consistency) adapted to geometry alone, whose condition is the text's counterpart.
PRESETS = {'paper5': {
    'condition_consistency': 'Does the head match the condition it was drawn for (shown above; the bundled flow '
        'model\'s conditions are head families, 0 the narrowest faces and jaws, 7 the broadest)?',
    'plausibility': 'Is it a plausible head of that family: proportions and shape like a real one of them?',
    'geometric_detail': 'How much fine detail: a crisp nose, lips, eye sockets and brow rather than a blurred blob',
    'surface_quality': 'A clean surface: no dents, holes, floaters or rough, lumpy patches',
    'overall': 'Your overall judgement of the shape',
}}


def preset_help():
    """The presets as --help names them: "paper5 (condition_consistency, plausibility, ...)"."""
    return '; '.join(f'{name} ({", ".join(criteria)})' for name, criteria in PRESETS.items())


def descriptions(criteria):
    """{criterion: description} of the criteria a preset describes (the page shows them)."""
    known = {c: text for preset in PRESETS.values() for c, text in preset.items()}
    return {c: known[c] for c in criteria if c in known}


def parse_criteria(text):
    """'geometry,detail,symmetry' -> ['geometry', 'detail', 'symmetry'], a preset's name -> its criteria; LabelError
    for a bad or repeated name."""
    if text.strip() in PRESETS:
        return list(PRESETS[text.strip()])
    names = [c.strip() for c in text.split(',')]
    bad = [c for c in names if not CRITERION.fullmatch(c)]
    if bad or not names:
        raise LabelError(f'criterion {bad[0] if bad else text!r}: use 1-32 letters, digits, _ and -, starting with a '
            f'letter, comma-separated, or a preset ({", ".join(PRESETS)})')
    if len(set(names)) < len(names):
        raise LabelError(f'criteria {text!r}: a criterion is named twice')
    return names


class RatingKey(OpaqueSamples):
    """A ratings key: tokens to (bank label, id), the criteria, the banks, each annotator's order."""

    def __init__(self, key, path):
        super().__init__(key, path)
        self.criteria = list(key['criteria'])

    @classmethod
    def load(cls, path):
        key = read_companion(path, KEY_LIMIT, 'restore the ratings key, or start anew with rate --force (the old files '
            'are moved aside)')
        try:
            assert key['format'] == FORMAT and all(CRITERION.fullmatch(c) for c in key['criteria'])
            assert all(s['bank'] in key['banks'] and isinstance(s['id'], str) for s in key['samples'].values())
            assert isinstance(key['seed'], int) and key['criteria']
        except (AssertionError, KeyError, TypeError):
            raise LabelError(f'{path}: not a ratings key of format {FORMAT} (damaged?); it cannot be used') from None
        return cls(key, path)


    def order(self, annotator):
        rng = np.random.RandomState((self.key['seed'] + zlib.crc32(annotator.encode('utf-8'))) % 2**32)
        tokens = sorted(self.samples)
        return [tokens[i] for i in rng.permutation(len(tokens))]


def open_ratings(out, banks, criteria, seed=None, force=False, dry_run=False, address=None):
    """The RatingKey of ratings file `out`, holding the right to serve it until key.close() or the end of the process
    (blind_study.hold_key): made when there is none (one token per sample of each bank; `banks` is [(label, Bank)],
    labels are how reports name the banks), else read and checked against the banks and criteria. LabelError before
    any write for another key, ratings without a key, a bank given twice, or a page that cannot listen on `address`
    (host, port) where a key would be made; `force` makes a new key once all is checked, and then moves the old files
    aside (labeling.move_aside). With dry_run, None where a new key would be made (nothing is written)."""
    path = key_path(out)
    roots = {label: os.path.realpath(bank.root) for label, bank in banks}
    if len(set(roots.values())) < len(banks):
        raise LabelError(f'{banks[-1][1].root}: a bank is given twice')
    new = force or not os.path.exists(path)
    if dry_run and new:
        return None
    return hold_key(out, force, lambda: _open_ratings(out, banks, roots, criteria, seed, force, address if new else None))


def _open_ratings(out, banks, roots, criteria, seed, force, address):
    path = key_path(out)
    if os.path.exists(path) and not force:
        key = RatingKey.load(path)
        same_banks = sorted(key.key['banks'].values()) == sorted(roots.values())
        if not same_banks or key.criteria != criteria or (seed is not None and seed != key.key['seed']):
            raise LabelError(f'{path}: made for banks {sorted(key.key["banks"].values())}, criteria '
                f'{",".join(key.criteria)}, seed {key.key["seed"]}; pass the same, or --force to start anew (the old '
                'files are moved aside)')
        return key
    if not force and os.path.exists(out) and os.path.getsize(out) > 0:
        raise LabelError(f'{out}: holds ratings but there is no key {path}; choose another --out (or --force)')
    if address is not None:
        check_listen(*address)
    draw = random.SystemRandom()
    samples = {}
    for label, bank in banks:
        samples.update({'%016x' % draw.getrandbits(64): dict(bank=label, id=x) for x in bank.ids})
    key = dict(format=FORMAT, time=now(), seed=seed or 0, criteria=list(criteria), banks=roots, samples=samples)
    if force:
        move_aside(out, path)
    write_json(path, key)
    return RatingKey(key, path)

#----------------------------------------------------------------------------

def load_ratings(path, key=None):
    """The standing rating and skip records of a ratings file (undone ones gone), validated: LabelError naming
    file:line for a bad record, a token `key` does not know, a rating outside 1-5 or of other criteria. One annotator
    rating one sample twice (two servers at once): the later counts, with a LabelWarning."""
    live, by_id, seen, dropped = {}, {}, {}, []
    for lineno, d in _records(path):
        where = f'{path}:{lineno}'
        if 'undo_of' in d:
            target, annotator = parse_undo(d, where)
            line = by_id.pop((target, annotator), None)
            if line is None or line not in live:
                raise LabelError(f'{where}: undoes {target}, which is no standing rating of {annotator}')
            r = live.pop(line)
            seen.pop((r['sample'], annotator), None)
            continue
        for k in ('sample', 'annotator', 'time', 'id'):
            if not isinstance(d.get(k), str) or not d[k]:
                raise LabelError(f'{where}: "{k}" must be a non-empty string')
        if key is not None and d['sample'] not in key.samples:
            raise LabelError(f'{where}: unknown sample token {d["sample"]}')
        if d.get('skip') is not True:
            ratings = d.get('ratings')
            criteria = None if key is None else key.criteria
            if not isinstance(ratings, dict) or (criteria is not None and sorted(ratings) != sorted(criteria)) or not all(
                    type(v) is int and SCALE[0] <= v <= SCALE[1] for v in ratings.values()):
                raise LabelError(f'{where}: "ratings" must rate each criterion ({", ".join(criteria or ["..."])}) with a '
                    f'whole number {SCALE[0]}-{SCALE[1]}')
        if (d['id'], d['annotator']) in by_id:
            raise LabelError(f'{where}: the id {d["id"]!r} is used twice by {d["annotator"]}')
        earlier = seen.get((d['sample'], d['annotator']))
        if earlier is not None:
            dropped.append(earlier)
            del live[earlier]
        by_id[(d['id'], d['annotator'])] = seen[(d['sample'], d['annotator'])] = lineno
        live[lineno] = d
    if dropped:
        warnings.warn(f'{path}: {len(dropped)} rating(s) dropped, made again later by the same annotator (two servers at '
            f'once?), the first on line {dropped[0]}; the latest counts', LabelWarning)
    return list(live.values())


def rated_samples(path, criterion):
    """{(bank folder, sample id): the mean of its `criterion` ratings over the annotators who rated it} of a ratings
    file (label.py rate's, read with its key; skips left out): the scalar labels an unpaired loss trains on. LabelError
    naming the file for a damaged file or key, or a criterion the file does not rate."""
    key = RatingKey.load(key_path(path))
    if criterion not in key.criteria:
        raise LabelError(f'{path}: rates {", ".join(key.criteria)}, not {criterion!r}; pick one of those')
    given = {}
    for r in load_ratings(path, key):
        if not r.get('skip'):
            label, sample_id = key.samples[r['sample']]
            given.setdefault((key.key['banks'][label], sample_id), []).append(r['ratings'][criterion])
    return {k: float(np.mean(v)) for k, v in given.items()}


class RatingSession(UndoStack):
    """One annotator's ratings over a file, resumed from it; thread-safe. Every sample of the key once (or `target`
    of them), in the annotator's order; undo takes back the last rating and shows its sample again."""

    def __init__(self, path, annotator, key, target=None):
        self.path, self.annotator, self.key, self.opaque = path, annotator, key, key
        self._order = key.order(annotator)
        self.target = len(self._order) if target is None else min(target, len(self._order))
        self._stack = [r for r in load_ratings(path, key) if r['annotator'] == annotator] if os.path.isfile(path) else []
        self._lock = threading.Lock()
        self._pending, self._current, self._shown_at = [], None, None

    def _next(self):
        if self._pending:
            return self._pending.pop()
        if len(self._stack) >= self.target:
            return None
        done = {r['sample'] for r in self._stack}
        return next((dict(sample=t) for t in self._order if t not in done), None)

    def _state(self):
        if self._current is None:
            self._current, self._shown_at = self._next(), time.monotonic()
            if self._current is not None:
                self._current.update(condition_shown(self.key, self._current['sample']))
        return dict(annotator=self.annotator, done=len(self._stack), target=self.target, criteria=self.key.criteria,
            descriptions=descriptions(self.key.criteria), scale=list(SCALE), current=self._current,
            last=self._stack[-1] if self._stack else None, blind=True)

    def state(self):
        """{annotator, done, target, criteria, descriptions, scale, current: {sample, condition, conditions} or None
        when finished, last record, blind}."""
        with self._lock:
            return self._state()

    def rate(self, sample, ratings):
        """Write the ratings {criterion: 1..5} of the sample being shown (None: a skip), on disk when this returns;
        ValueError for another sample (a stale page) or ratings that do not fit the criteria and scale."""
        with self._lock:
            current = self._state()['current']
            if current is None or sample != current['sample']:
                raise ValueError(f'{sample} is not the sample being shown')
            if ratings is not None and (not isinstance(ratings, dict) or sorted(ratings) != sorted(self.key.criteria)
                    or not all(type(v) is int and SCALE[0] <= v <= SCALE[1] for v in ratings.values())):
                raise ValueError(f'rate each of {", ".join(self.key.criteria)} with a whole number {SCALE[0]}-{SCALE[1]}')
            record = dict(sample=sample, annotator=self.annotator, time=now(), id=uuid.uuid4().hex,
                seconds=round(time.monotonic() - self._shown_at, 2))
            record.update(dict(skip=True) if ratings is None else dict(ratings={c: ratings[c] for c in self.key.criteria}))
            self._append(record)
            self._stack.append(record)
            self._current = None
            return self._state()

    def shown_again(self, record):
        """The sample an undone rating puts back (UndoStack.undo)."""
        return dict(sample=record['sample'])


def condition_shown(key, token):
    """{'condition': the condition the sample was drawn for, 'conditions': how many the generator has} from its
    meta.json (None each for an unconditional generator, or a sample whose meta.json cannot be read). People rating
    condition consistency need it; it names no bank (both banks of a study hold every id under the same condition)."""
    try:
        found = key.sample_of(token)
        meta = found[0].meta(found[1]) if found else {}
    except (BankError, LabelError):
        meta = {}
    fits = lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None
    return dict(condition=fits(meta.get('condition')), conditions=fits(meta.get('conditions')))


#----------------------------------------------------------------------------
