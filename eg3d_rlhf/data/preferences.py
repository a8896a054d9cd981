"""Preference judgements as JSON Lines: validated loading, (winner, loser) pairs, splits by sample, importers."""

import collections
import csv
import dataclasses
import datetime
import json
import re
import warnings

import numpy as np

import dnnlib
from eg3d_rlhf.generators.base import MAX_SEED

#----------------------------------------------------------------------------
# One judgement per line: {"a": ID, "b": ID, "choice": "a"|"b"|"tie"|"skip", "annotator": str, "time": ISO-8601}.
# Extra keys are allowed and kept. Sample ids are strings, e.g. "seed000123" (`seed%06d`, generators/base.py).

CHOICES = ('a', 'b', 'tie', 'skip')
REQUIRED = ('a', 'b', 'choice', 'annotator', 'time')
SPLITS = ('train', 'val', 'test')                  # split_samples' names, in order.
TORN = 'after_torn_line'                            # Marks a record written after closing a line a crash cut short.


class LabelError(ValueError):
    """A label file that cannot be used; the message names the file and line."""


class _NotJSON(LabelError):
    """A line that is not JSON at all: corrupt, or a write a crash cut short."""


class LabelWarning(UserWarning):
    """Something a crash or two servers at once left in a label file, tolerated; the message names the file."""


@dataclasses.dataclass
class Judgement:
    a:          str             # First sample shown.
    b:          str             # Second sample shown.
    choice:     str             # 'a', 'b', 'tie' or 'skip'.
    annotator:  str             # Who judged (a person, or 'oracle:NAME').
    time:       str             # ISO-8601 timestamp.
    extra:      dict = dataclasses.field(default_factory=dict)  # Any other keys, kept as they were.

    def to_dict(self):
        return dict(a=self.a, b=self.b, choice=self.choice, annotator=self.annotator, time=self.time, **self.extra)


SEED_TEXT = re.compile(r'[0-9]+')        # A bare seed: ASCII digits only (str.isdigit, re's \d and int() also take
                                        # other scripts' digits, so '\u0663' would read as seed 3).


def _seed(text, where):
    """The seed of a bare seed number's text (SEED_TEXT); LabelError naming `where` past [0, MAX_SEED]."""
    if len(text) > len(str(MAX_SEED)) or int(text) > MAX_SEED:         # (int() of 5000 digits would raise.)
        raise LabelError(f'{where}: seed {text[:20]}{"..." if len(text) > 20 else ""} is not in [0, {MAX_SEED}]')
    return int(text)


def seed_id(seed):
    """The sample id of a generator seed."""
    return f'seed{int(seed):06d}'


def now():
    """The current time as ISO-8601 (UTC, seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()

#----------------------------------------------------------------------------

def _json_object(text, where):
    d = dnnlib.util.decode_json(text, f'{where}:', LabelError, not_json=_NotJSON)
    if not isinstance(d, dict):
        raise LabelError(f'{where}: expected a JSON object, got {type(d).__name__}')
    return d


def parse_judgement(text, where):
    """One JSONL line -> Judgement; LabelError naming `where` (file:line) when it is not a valid judgement."""
    return _judgement(_json_object(text, where), where)


def _judgement(d, where):
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise LabelError(f'{where}: missing {", ".join(missing)}')
    for key in ('a', 'b', 'annotator', 'time'):
        if not isinstance(d[key], str) or not d[key]:
            raise LabelError(f'{where}: "{key}" must be a non-empty string')
    if d['choice'] not in CHOICES:
        raise LabelError(f'{where}: "choice" must be one of {", ".join(CHOICES)}, got {d["choice"]!r}')
    if d['a'] == d['b']:
        raise LabelError(f'{where}: a sample is compared with itself ({d["a"]})')
    try:
        datetime.datetime.fromisoformat(d['time'])
    except ValueError:
        raise LabelError(f'{where}: "time" is not ISO-8601: {d["time"]!r}') from None
    extra = {k: v for k, v in d.items() if k not in REQUIRED}
    return Judgement(a=d['a'], b=d['b'], choice=d['choice'], annotator=d['annotator'], time=d['time'], extra=extra)


def parse_undo(d, where):
    """An undo record {"undo_of": ID, "annotator": str, "time": ISO-8601} -> (id undone, annotator)."""
    for key in ('undo_of', 'annotator', 'time'):
        if not isinstance(d.get(key), str) or not d[key]:
            raise LabelError(f'{where}: "{key}" of an undo record must be a non-empty string')
    try:
        datetime.datetime.fromisoformat(d['time'])
    except ValueError:
        raise LabelError(f'{where}: "time" is not ISO-8601: {d["time"]!r}') from None
    return d['undo_of'], d['annotator']


def is_repeat(j):
    """A deliberate second showing of a pair the annotator judged before (tools/label.py --repeat-rate)."""
    return j.extra.get('repeat') is True


def _utf8_lines(f, path):
    """The lines of a text file opened as UTF-8; LabelError naming the file where it is not (the line is approximate:
    text is decoded in chunks)."""
    lineno = 0
    try:
        for lineno, text in enumerate(f, start=1):
            yield text
    except UnicodeDecodeError as err:
        raise LabelError(f'{path}: not UTF-8 text after line {lineno} ({err.reason}); save it as UTF-8') from None


def _open_text(path, **kwargs):
    """A label file opened as UTF-8 text; LabelError naming it when it is no regular file (a FIFO would block)."""
    return dnnlib.util.open_regular(path, 'r', error=LabelError, encoding='utf-8', **kwargs)


def _records(path):
    """(line number, JSON object) of each non-blank line. A line that is not JSON is a LabelError, unless a crash cut
    its write short: the last line, without its newline, or a line closed by the writer (its next record says TORN);
    those are skipped with a LabelWarning naming the line (no server said saved for them)."""
    cut = None                                          # (error, line number, newline?) of a line that is not JSON.
    with _open_text(path) as f:
        for lineno, text in enumerate(_utf8_lines(f, path), start=1):
            if not text.strip():
                continue
            try:
                d = _json_object(text, f'{path}:{lineno}')
            except _NotJSON as err:
                if cut is not None:
                    raise cut[0]
                cut = err, lineno, text.endswith('\n')
                continue
            if cut is not None:
                if d.get(TORN) is not True:
                    raise cut[0]
                warnings.warn(f'{path}:{cut[1]}: skipped a line a crash cut short (the next append closed it)', LabelWarning)
                cut = None
            yield lineno, d
    if cut is not None:
        if cut[2]:
            raise cut[0]
        warnings.warn(f'{path}:{cut[1]}: skipped the last line: a crash cut it short (no newline)', LabelWarning)


def load_judgements(path, known_ids=None, repeats=False):
    """Every judgement in a JSONL file, validated: bad lines, self-pairs, ids outside known_ids (when given) and
    the same annotator judging the same pair twice are LabelErrors with line numbers. Blank lines are skipped, and
    so are lines a crash cut short (see _records), with a LabelWarning.

    Undo records ({"undo_of": ID, ...}, written by tools/label.py) remove the earlier judgement whose "id" is ID;
    that judgement is gone, as if never written, and its pair may be judged again. Repeats ("repeat": true) are
    the same annotator's second look at a pair they judged before (sides swapped), kept to measure
    self-consistency; they are not judged twice by accident, so they are no error. They are left out unless
    `repeats` is true: training counts each pair once per annotator, and `tools/label.py stats` asks for them.

    One pair judged again by the same annotator in records that both carry an "id" (two label servers of one
    annotator at once, each saving what its page showed) is no error: the latest standing judgement counts, the
    earlier ones are dropped, and one LabelWarning says how many."""
    known = None if known_ids is None else set(known_ids)
    live, by_id = {}, {}                                # live: line number -> Judgement, in file order.
    originals = collections.defaultdict(list)           # (pair, annotator) -> lines of its standing non-repeats.
    for lineno, d in _records(path):
        where = f'{path}:{lineno}'
        if 'undo_of' in d:
            target, annotator = parse_undo(d, where)
            j = live.pop(by_id.get((target, annotator)), None)
            if j is None:
                raise LabelError(f'{where}: undoes {target}, which is no standing judgement of {annotator}')
            if not is_repeat(j):
                originals[(frozenset((j.a, j.b)), j.annotator)].remove(by_id[(target, annotator)])
            continue
        j = _judgement(d, where)
        if known is not None:
            unknown = [x for x in (j.a, j.b) if x not in known]
            if unknown:
                raise LabelError(f'{where}: unknown sample id {unknown[0]}')
        if 'id' in j.extra:
            if not isinstance(j.extra['id'], str) or not j.extra['id']:
                raise LabelError(f'{where}: "id" must be a non-empty string')
            if (j.extra['id'], j.annotator) in by_id:
                raise LabelError(f'{where}: the id {j.extra["id"]!r} is used twice by {j.annotator}')
            by_id[(j.extra['id'], j.annotator)] = lineno
        earlier = originals[(frozenset((j.a, j.b)), j.annotator)]
        if is_repeat(j):
            if not earlier:
                raise LabelError(f'{where}: a repeat of {j.a} vs {j.b}, which {j.annotator} has not judged before')
        elif earlier and not ('id' in j.extra and 'id' in live[earlier[-1]].extra):
            raise LabelError(f'{where}: {j.annotator} already judged {j.a} vs {j.b} on line {earlier[0]}')
        else:
            earlier.append(lineno)
        live[lineno] = j
    dropped = sorted(n for lines in originals.values() for n in lines[:-1])
    for n in dropped:
        del live[n]
    if dropped:
        warnings.warn(f'{path}: {len(dropped)} judgement(s) dropped, made again later by the same annotator (two label '
            f'servers at once?), the first on line {dropped[0]}; the latest of each pair counts', LabelWarning)
    return [j for j in live.values() if repeats or not is_repeat(j)]


def record_line(record):
    """One JSONL line of a label record. Every writer of label files goes through here: nan and inf have no JSON
    spelling (json.dumps would write NaN, which other readers refuse), so they are a ValueError, never written."""
    return json.dumps(record, allow_nan=False) + '\n'


def write_judgements(path, judgements):
    """Write judgements as JSONL, atomically (the old file stays whole if writing fails); LabelError naming the file
    and the pair for a judgement that holds nan or inf (nothing is written then)."""
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        for j in judgements:
            try:
                f.write(record_line(j.to_dict()))
            except ValueError:
                raise LabelError(f'{path}: the judgement of {j.a} vs {j.b} holds nan or inf, which JSON cannot hold; '
                    'nothing written') from None

#----------------------------------------------------------------------------

def to_pairs(judgements):
    """([(winner, loser)], [(a, b) ties]); skips are dropped."""
    pairs, ties = [], []
    for j in judgements:
        if j.choice == 'a':
            pairs.append((j.a, j.b))
        elif j.choice == 'b':
            pairs.append((j.b, j.a))
        elif j.choice == 'tie':
            ties.append((j.a, j.b))
    return pairs, ties


def split_samples(ids, fractions=(0.8, 0.1, 0.1), seed=0):
    """{sample id: 'train' | 'val' | 'test'}: a seeded shuffle of the sorted ids, cut by `fractions`."""
    ids = sorted(set(ids))
    order = np.random.RandomState(seed).permutation(len(ids))
    bounds = np.cumsum(np.asarray(fractions, dtype=np.float64) / np.sum(fractions)) * len(ids)
    assignment = {}
    for rank, i in enumerate(order):
        assignment[ids[i]] = SPLITS[int(np.searchsorted(bounds, rank, side='right'))]
    return assignment


def split_judgements(judgements, assignment):
    """{'train': [...], 'val': [...], 'test': [...]} keeping only judgements whose two samples share a split, so
    no sample appears in two splits; the rest are returned under 'dropped'."""
    result = dict(train=[], val=[], test=[], dropped=[])
    for j in judgements:
        sa, sb = assignment.get(j.a), assignment.get(j.b)
        result[sa if sa is not None and sa == sb else 'dropped'].append(j)
    return result

#----------------------------------------------------------------------------
# Training labels: a bank's samples split by sample, the labels of each split, validation and test pairs.

@dataclasses.dataclass
class TrainingLabels:
    mode:       str             # 'pairs' (Bradley-Terry) or 'good/bad' (unpaired).
    ids:        dict            # {'train' | 'val' | 'test': [sample ids, sorted]}.
    train:      dict            # dict(pairs=[(winner, loser)], ties=[(a, b)]) or dict(labels={id: 1 | 0}).
    val_pairs:  list            # [(winner, loser)] among validation samples.
    test_pairs: list            # [(winner, loser)] among test samples.
    counts:     dict            # Judgements (pairs: 'dropped' too) or labelled samples per split.
    every:      dict = None     # train's form over every label, the splits' and the dropped pairs alike (a refit's).


def training_labels(ids, fractions, seed=0, labels_path=None, good_path=None, bad_path=None):
    """TrainingLabels of a bank's sample `ids` from a judgement file (labels_path) or good and bad lists, split by
    sample (split_samples) so that no sample is in two splits. Good/bad validation and test pairs are every good x
    bad pair of the split. LabelError for an unknown id, or too few labels to train and validate on."""
    assignment = split_samples(ids, fractions, seed=seed)
    by_split = {s: sorted(x for x in assignment if assignment[x] == s) for s in SPLITS}
    if labels_path:
        judgements = load_judgements(labels_path, known_ids=ids)
        splits = split_judgements(judgements, assignment)
        pairs = {s: to_pairs(splits[s]) for s in SPLITS}
        every = to_pairs(judgements)
        result = TrainingLabels('pairs', by_split, dict(pairs=pairs['train'][0], ties=pairs['train'][1]),
            pairs['val'][0], pairs['test'][0], {s: len(splits[s]) for s in splits}, dict(pairs=every[0], ties=every[1]))
    else:
        labels = import_good_bad(good_path, bad_path)
        unknown = sorted(set(labels) - set(ids))
        if unknown:
            raise LabelError(f'{good_path}/{bad_path}: unknown sample id {unknown[0]}')
        split_labels = {s: {x: labels[x] for x in by_split[s] if x in labels} for s in SPLITS}
        good_bad = lambda d: [(g, b) for g, vg in d.items() if vg == 1 for b, vb in d.items() if vb == 0]
        result = TrainingLabels('good/bad', by_split, dict(labels=split_labels['train']), good_bad(split_labels['val']),
            good_bad(split_labels['test']), {s: len(split_labels[s]) for s in SPLITS}, dict(labels=labels))
    if not (result.train.get('pairs') or result.train.get('labels')) or not result.val_pairs:
        raise LabelError(f'not enough labels for a split by sample: {result.counts} (label more pairs, or change the split)')
    return result

#----------------------------------------------------------------------------
# Importers.

def import_ranked_csv(path, annotator='paper', time='2023-01-01T00:00:00+00:00'):
    """The published paper's rankedseedsall.csv (columns: index, rank1 = preferred seed, rank2 = other seed) as
    judgements with a = seedNNNNNN of rank1 and choice 'a', the index kept as "source_index". LabelError naming
    file:line for a missing header, a row of another length, a seed that is no integer in [0, 2^32 - 1], a seed
    compared with itself, or a pair ranked twice (load_judgements would refuse the file it makes)."""
    judgements, seen, reader = [], {}, None
    try:
        with _open_text(path, newline='') as f:
            reader = csv.reader(_utf8_lines(f, path), strict=True)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[1:3]] != ['rank1', 'rank2']:
                raise LabelError(f'{path}:1: expected a header ",rank1,rank2", got {header!r}')
            for row in reader:
                lineno = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise LabelError(f'{path}:{lineno}: expected {len(header)} columns like the header, got {row!r}')
                cells = [cell.strip() for cell in row[1:3]]
                if not all(re.fullmatch(r'[+-]?[0-9]+', cell) for cell in cells):      # ASCII digits only.
                    raise LabelError(f'{path}:{lineno}: expected two integer seeds (digits 0-9), got {row!r}'[:300])
                if any(len(cell.lstrip('+-')) > len(str(MAX_SEED)) for cell in cells) or \
                        not all(0 <= int(cell) <= MAX_SEED for cell in cells):
                    raise LabelError(f'{path}:{lineno}: seeds must lie in [0, {MAX_SEED}], got {", ".join(c[:20] for c in cells)}')
                winner, loser = (int(cell) for cell in cells)
                if winner == loser:
                    raise LabelError(f'{path}:{lineno}: a seed is compared with itself ({winner})')
                pair = frozenset((winner, loser))
                if pair in seen:
                    raise LabelError(f'{path}:{lineno}: seeds {winner} and {loser} were already ranked on line {seen[pair]}')
                seen[pair] = lineno
                judgements.append(Judgement(a=seed_id(winner), b=seed_id(loser), choice='a', annotator=annotator,
                    time=time, extra=dict(source_index=row[0])))
    except csv.Error as err:
        raise LabelError(f'{path}:{reader.line_num}: not CSV ({err})') from None
    except OSError as err:
        raise LabelError(f'{path}: cannot be read ({err.strerror or err})') from None
    return judgements


#----------------------------------------------------------------------------
# k-way rankings: per condition, k assets in rank order (best first), as the paper's data ranks nine per prompt. A
# ranking becomes all k(k-1)/2 pairs, the higher-ranked asset preferred (a tie where they share a rank); the win
# counts of Circular-DPO's w1 (Eq. 10) are each asset's wins in its ranking, a tie counting half (win_counts).
# CSV: a header whose first cell is "condition", then per row a condition and the ids, best first (empty trailing
# cells allowed; "x=y" in one cell ties x and y). JSONL: {"condition": str or int, "ranking": [id or [tied ids], ...]}.
# An id is a sample id or a bare seed number (-> seedNNNNNN). A ranking's pairs grow as k^2, so k and a file's pairs
# are bounded: a 200 kB line of 20,000 ids would otherwise become 2e8 judgements.

MAX_RANKING = 100               # Ids one ranking may hold (the paper ranks nine per prompt): 4,950 pairs.
MAX_RANKED_PAIRS = 500_000      # Pairs one file may expand to (~1 GB to write and read back; the paper's file: 4,346).


def _ranked_id(value, where):
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is not None and SEED_TEXT.fullmatch(text):
        return seed_id(_seed(text, where))
    if text is None or not re.fullmatch(r'[A-Za-z0-9_.-]+', text):
        raise LabelError(f'{where}: not a sample id: {value!r}')
    return text


def _ranking_rows(path):
    """(line number, condition, [[tied ids], ...] best first) of each ranking in a CSV or JSONL file."""
    if path.lower().endswith(('.jsonl', '.json')):
        with _open_text(path) as f:                  # Strict: a torn last line is an error here.
            lines = [(n, text) for n, text in enumerate(_utf8_lines(f, path), start=1) if text.strip()]
        for lineno, text in lines:
            where = f'{path}:{lineno}'
            d = _json_object(text, where)
            if set(d) - {'condition', 'ranking'} or not isinstance(d.get('ranking'), list):
                raise LabelError(f'{where}: expected {{"condition": ..., "ranking": [id or [tied ids], ...]}}, got keys {sorted(d)}')
            if not isinstance(d.get('condition'), (str, int)) or isinstance(d.get('condition'), bool):
                raise LabelError(f'{where}: "condition" must be a string or an integer')
            groups = [g if isinstance(g, list) else [g] for g in d['ranking']]
            yield lineno, str(d['condition']), [[_ranked_id(x, where) for x in g] for g in groups]
        return
    reader = None
    try:
        with _open_text(path, newline='') as f:
            reader = csv.reader(_utf8_lines(f, path), strict=True)
            header = next(reader, None)
            if not header or header[0].strip().lower() != 'condition':
                raise LabelError(f'{path}:1: expected a header "condition,rank1,rank2,...", got {header!r}')
            for row in reader:
                cells = [c.strip() for c in row]
                while cells and not cells[-1]:
                    cells.pop()
                if not cells:
                    continue
                where = f'{path}:{reader.line_num}'
                if not all(cells[1:]):
                    raise LabelError(f'{where}: an empty cell between ranked ids: {row!r}')
                yield reader.line_num, cells[0], [[_ranked_id(x, where) for x in c.split('=')] for c in cells[1:]]
    except csv.Error as err:
        raise LabelError(f'{path}:{reader.line_num if reader else 1}: not CSV ({err})') from None


def _checked_rankings(path):
    """[(condition, [(id, rank), ...] best first)] of a file of k-way rankings, every row checked (import_ranking's
    LabelErrors) before any pair is made."""
    rankings, seen, pairs = [], {}, 0
    try:
        for lineno, condition, groups in _ranking_rows(path):
            where = f'{path}:{lineno}'
            ranked, rank = [], 1
            for group in groups:
                if not group:
                    raise LabelError(f'{where}: an empty tie group')
                ranked += [(x, rank) for x in group]
                rank += len(group)
            if len(ranked) < 2:
                raise LabelError(f'{where}: a ranking needs at least 2 ids, got {len(ranked)}')
            if len(ranked) > MAX_RANKING:
                raise LabelError(f'{where}: a ranking of {len(ranked)} ids; one ranking may hold at most {MAX_RANKING} '
                    '(each pair of them becomes a judgement): split it')
            for x, _ in ranked:
                if x in seen:
                    raise LabelError(f'{where}: {x} is ranked twice (also on line {seen[x]})')
                seen[x] = lineno
            pairs += len(ranked) * (len(ranked) - 1) // 2
            if pairs > MAX_RANKED_PAIRS:
                raise LabelError(f'{where}: the rankings up to this line make {pairs} pairs; one file may make at '
                    f'most {MAX_RANKED_PAIRS}: split it into several')
            rankings.append((condition, ranked))
    except OSError as err:
        raise LabelError(f'{path}: cannot be read ({err.strerror or err})') from None
    return rankings


def import_ranking(path, annotator='ranking', time='2023-01-01T00:00:00+00:00'):
    """Judgements of every pair within each ranking of a CSV or JSONL file of k-way rankings (see above): a = the
    higher-ranked id, choice 'a', or 'tie' for two ids of one rank; extra keys "condition" and "ranks" (1-based,
    shared by a tie). LabelError naming file:line for a bad header or row, an id that is no sample id or seed, a
    ranking of fewer than 2 ids or more than MAX_RANKING, an id listed twice (in one ranking or two), or rankings of
    more than MAX_RANKED_PAIRS pairs in all."""
    judgements = []
    for condition, ranked in _checked_rankings(path):
        for i, (a, ra) in enumerate(ranked):
            for b, rb in ranked[i + 1:]:
                judgements.append(Judgement(a=a, b=b, choice='tie' if ra == rb else 'a', annotator=annotator,
                    time=time, extra=dict(condition=condition, ranks=[ra, rb])))
    return judgements


def win_counts(judgements):
    """{sample id: (C, N)} over decided and tied judgements: C its wins (a tie counts half; a pair judged more than
    once counts its mean outcome once), N = 1 + the number of samples it was compared with. For a full k-way
    ranking C = k-1 .. 0 and N = k, as in Eq. 10."""
    outcomes = collections.defaultdict(list)                # (x, y) sorted -> scores of x against y.
    for j in judgements:
        if j.choice in ('a', 'b', 'tie'):
            score = 0.5 if j.choice == 'tie' else float(j.choice == 'a')
            pair = (j.a, j.b) if j.a < j.b else (j.b, j.a)
            outcomes[pair].append(score if pair[0] == j.a else 1 - score)
    wins, rivals = collections.defaultdict(float), collections.defaultdict(int)
    for (x, y), scores in outcomes.items():
        mean = float(np.mean(scores))
        wins[x] += mean
        wins[y] += 1 - mean
        rivals[x] += 1
        rivals[y] += 1
    return {x: (wins[x], rivals[x] + 1) for x in rivals}


def read_id_list(path):
    """Sample ids in a plain list, one per line: an id, or a bare seed number (-> seedNNNNNN); '#' starts a comment."""
    ids = []
    with _open_text(path) as f:
        for lineno, text in enumerate(_utf8_lines(f, path), start=1):
            text = text.split('#', 1)[0].strip()
            if not text:
                continue
            if SEED_TEXT.fullmatch(text):
                text = seed_id(_seed(text, f'{path}:{lineno}'))
            elif not re.fullmatch(r'[A-Za-z0-9_.-]+', text):
                raise LabelError(f'{path}:{lineno}: not a sample id: {text!r}')
            ids.append(text)
    return ids


def write_id_list(path, ids, comment=None):
    """A plain list of ids (read_id_list reads it back), atomically; `comment` becomes a '#' line on top."""
    with dnnlib.util.atomic_write(path, 'w', encoding='utf-8') as f:
        if comment:
            f.write(f'# {comment}\n')
        f.writelines(f'{x}\n' for x in ids)


def import_good_bad(good_path, bad_path):
    """Unpaired labels {sample id: 1 (good) or 0 (bad)} from two plain lists; an id in both is a LabelError."""
    good, bad = read_id_list(good_path), read_id_list(bad_path)
    both = sorted(set(good) & set(bad))
    if both:
        raise LabelError(f'{bad_path}: {both[0]} is also listed in {good_path}')
    return {**{x: 1 for x in good}, **{x: 0 for x in bad}}

#----------------------------------------------------------------------------
