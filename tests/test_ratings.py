"""Ratings under hostile but ordinary use (data.ratings, tools/label.py rate and score-ratings): --force that moves
nothing until it can start, a key never replaced under its server, keys that are FIFOs or huge."""

import json
import os
import re
import socket

import pytest

from eg3d_rlhf.data import labeling as L
from eg3d_rlhf.data import ratings as R
from eg3d_rlhf.data.bank import Bank
from tests.helpers.cli import refused_in_one_line
from tests.helpers.label import fake_bank, ok
from tests.helpers.mutations import run_within
from tests.helpers.study import files_beside, run_label
from tools import label

#----------------------------------------------------------------------------

@pytest.fixture
def rated(tmp_path):
    """(bank folders, out): a ratings file of two fake banks holding one rating."""
    banks = [fake_bank(tmp_path / 'bankA', count=3), fake_bank(tmp_path / 'bankB', count=3)]
    out = str(tmp_path / 'r.jsonl')
    key = R.open_ratings(out, [(b, Bank(b)) for b in banks], ['geometry'])
    session = R.RatingSession(out, 'alice', key)
    session.rate(session.state()['current']['sample'], dict(geometry=4))
    del session, key                                    # Nothing serves it now.
    return banks, out


def test_a_refused_rate_force_moves_nothing(rated, tmp_path, monkeypatch):
    banks, out = rated
    monkeypatch.setattr(label.LabelServer, 'serve_forever', lambda self: None)
    args = ['rate', '--criteria', 'geometry', '--out', out, '--annotator', 'bob', '--force']
    before = files_beside(tmp_path)
    refused_in_one_line(run_label(*args, '--bank', banks[0], '--bank', banks[0]), 'a bank is given twice')
    busy = socket.create_server(('127.0.0.1', 0))
    try:
        refused_in_one_line(run_label(*args, '--bank', banks[0], '--port', busy.getsockname()[1]), 'cannot listen on 127.0.0.1:')
    finally:
        busy.close()
    served = R.open_ratings(out, [(b, Bank(b)) for b in banks], ['geometry'])      # A server of it, in this process.
    refused_in_one_line(run_label(*args, '--bank', banks[0], '--port', 0),
        f'{out} is being served by another process (pid {os.getpid()}); stop it first')
    assert files_beside(tmp_path) == before            # Before: the ratings and key moved aside by each refused start.
    served.close()
    ok(run_label(*args, '--bank', banks[0], '--port', 0))
    assert {p.split('.replaced-')[0] for p in files_beside(tmp_path) if '.replaced-' in p} == {out, R.key_path(out)}
    assert sorted(set(b for b, _ in R.RatingKey.load(R.key_path(out)).samples.values())) == [banks[0]]


def test_two_rate_force_starts_in_one_second_keep_every_key(tmp_path, monkeypatch):
    bank = fake_bank(tmp_path / 'bank', count=3)
    out = str(tmp_path / 'r.jsonl')
    for module in (R, L):
        monkeypatch.setattr(module, 'now', lambda: '2030-01-02T03:04:05+00:00')
    keys = [R.open_ratings(out, [('b', Bank(bank))], ['geometry'], force=k > 0).key for k in range(3)]
    aside = sorted(p for p in os.listdir(tmp_path) if '.key.json.replaced-' in p)
    assert len(aside) == 2                              # Before: one name, the first key written over.
    assert [json.load(open(tmp_path / p))['samples'] for p in aside] == [k['samples'] for k in keys[:2]]


def test_a_rating_is_never_written_beside_a_key_replaced_under_its_server(tmp_path):
    bank = Bank(fake_bank(tmp_path / 'bank', count=3))
    out = str(tmp_path / 'r.jsonl')
    key = R.open_ratings(out, [('b', bank)], ['geometry'])
    session = R.RatingSession(out, 'alice', key)
    session.rate(session.state()['current']['sample'], dict(geometry=2))
    for path in (out, R.key_path(out)):                 # Replaced by hand (or by a --force that took no lock).
        os.rename(path, path + '.old')
    new = R.open_ratings(out, [('b', bank)], ['geometry'])
    with pytest.raises(OSError, match=re.escape(f'{R.key_path(out)}: replaced since this server started')):
        session.rate(session.state()['current']['sample'], dict(geometry=3))
    with pytest.raises(OSError, match='replaced since this server started'):
        session.undo()
    assert not os.path.exists(out)                      # Before: the old key's tokens went into the new file.
    key.close()
    new.close()


@pytest.mark.parametrize('kind', ['a FIFO', 'huge'])
def test_a_ratings_key_that_is_no_regular_file_is_refused_without_hanging(rated, kind):
    banks, out = rated
    key = R.key_path(out)
    os.remove(key)
    if kind == 'a FIFO':
        os.mkfifo(key)
    else:
        with open(key, 'wb') as f:
            f.truncate(128 << 20)                       # Twice the limit; sparse: no disk used.
    message = f'{key}: larger than 64 MiB' if kind == 'huge' else f'{key}: not a regular file (a FIFO)'
    for command in (['rate', '--bank', banks[0], '--bank', banks[1], '--criteria', 'geometry', '--out', out,
            '--annotator', 'bob', '--dry-run'], ['score-ratings', '--out', out]):
        refused_in_one_line(run_within(20, lambda: run_label(*command)), message)   # Before: waited for a writer.


def test_score_ratings_refuses_a_report_path_that_is_a_folder(rated):
    _, out = rated
    os.mkdir(f'{out}.score.html')
    refused_in_one_line(run_label('score-ratings', '--out', out), f'{out}.score.html exists and is a folder')
    assert not os.path.exists(f'{out}.score.json')      # Before: the JSON written, then a traceback on the HTML.

#----------------------------------------------------------------------------


def test_a_ratings_file_reads_as_each_samples_mean_rating_of_one_criterion(tmp_path):
    banks = [fake_bank(tmp_path / 'bankA', count=2), fake_bank(tmp_path / 'bankB', count=2)]
    out = str(tmp_path / 'r.jsonl')
    key = R.open_ratings(out, [(b, Bank(b)) for b in banks], ['geometry', 'detail'])
    given = {}
    for who, scores in (('alice', [5, 1, 3, 2]), ('bob', [4, 2, 3, 2])):
        session = R.RatingSession(out, who, key)
        for k, score in enumerate(scores):
            sample = session.state()['current']['sample']
            if who == 'bob' and k == 3:
                session.rate(sample, None)                                    # A skip.
            else:
                session.rate(sample, dict(geometry=score, detail=1))
                given.setdefault(key.samples[sample], []).append(score)
    del session, key
    rated = R.rated_samples(out, 'geometry')
    roots = {b: os.path.realpath(b) for b in banks}                        # Bank labels are the folders given.
    assert rated == {(roots[label], i): sum(v) / len(v) for (label, i), v in given.items()}
    assert len(rated) == 4 and any(len(v) == 1 for v in given.values())     # A skip does not count.
    with pytest.raises(L.LabelError, match=r"r.jsonl: rates geometry, detail, not 'symmetry'; pick one of those"):
        R.rated_samples(out, 'symmetry')
    with open(out, 'a') as f:
        f.write('{"sample": "nobody", "annotator": "carol", "time": "t", "id": "x", "ratings": {"geometry": 9}}\n')
    with pytest.raises(L.LabelError, match=r'r.jsonl:\d+: unknown sample token nobody'):
        R.rated_samples(out, 'geometry')
