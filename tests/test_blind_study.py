"""Blind studies under hostile but ordinary use (data.blind_study, tools/label.py study and score-study): --force that
moves nothing until it can start, one server's study never replaced under it, attention checks a script cannot pick
out by bytes, and keys that are FIFOs, devices or huge."""

import json
import os
import signal
import socket

import pytest

from eg3d_rlhf.data import blind_study as BS
from eg3d_rlhf.data import labeling as L
from eg3d_rlhf.data.bank import Bank
from tests.helpers.cli import refused_in_one_line
from tests.helpers.label import fake_bank, ok
from tests.helpers.mutations import run_within
from tests.helpers.study import Recorded, call, files_beside, nose_bank, run_label, start_page
from tools import label

#----------------------------------------------------------------------------

@pytest.fixture
def labelled_study(tmp_path):
    """(original, tuned, out): a study of two fake banks whose labels file holds one judgement."""
    original, tuned = fake_bank(tmp_path / 'bankO'), fake_bank(tmp_path / 'bankT')
    out = str(tmp_path / 's.jsonl')
    study = BS.open_study(out, Bank(original), Bank(tuned))
    session = BS.StudySession(out, 'alice', study)
    current = session.state()['current']
    session.judge(current['a'], current['b'], 'a')
    del session, study                                  # Nothing serves it now.
    return original, tuned, out


def test_a_refused_force_start_moves_nothing(labelled_study, tmp_path, monkeypatch):
    original, tuned, out = labelled_study
    monkeypatch.setattr(label.LabelServer, 'serve_forever', lambda self: None)
    before = files_beside(tmp_path)
    busy = socket.create_server(('127.0.0.1', 0))
    try:
        args = ['study', '--original', original, '--tuned', tuned, '--out', out, '--annotator', 'bob', '--force']
        refused_in_one_line(run_label(*args, '--pairs', 9), '9 pairs asked for, but the banks hold 5 samples')
        refused_in_one_line(run_label(*args, '--port', busy.getsockname()[1]), 'cannot listen on 127.0.0.1:')
        refused_in_one_line(run_label(*args, '--attention-rate', 0.5), 'cannot make an attention check of it')
        assert files_beside(tmp_path) == before          # Before: labels and key moved aside by each refused start.
    finally:
        busy.close()
    ok(run_label(*args, '--port', 0))                         # Once it can start, the old files go aside, none deleted.
    moved = {p.split('.replaced-')[0] for p in files_beside(tmp_path) if '.replaced-' in p}
    assert moved == {out, BS.key_path(out)}


@pytest.mark.slow
def test_force_is_refused_while_another_process_serves_the_study(labelled_study, tmp_path, monkeypatch):
    original, tuned, out = labelled_study
    monkeypatch.setattr(label.LabelServer, 'serve_forever', lambda self: None)
    args = ['--original', original, '--tuned', tuned, '--out', out]
    proc, port = start_page('study', *args, '--annotator', 'carol')
    try:
        before = files_beside(tmp_path)
        result = run_label('study', *args, '--annotator', 'bob', '--port', 0, '--force')
        refused_in_one_line(result, f'{out} is being served by another process (pid {proc.pid}); stop it first')
        assert files_beside(tmp_path) == before          # Before: moved aside under the running server.
        state = call(port, 'GET', '/api/state')[1]
        status, _, _ = call(port, 'POST', '/api/judge', dict(a=state['current']['a'], b=state['current']['b'], choice='b'))
        assert status == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ok(run_label('study', *args, '--annotator', 'bob', '--port', 0, '--force'))      # Its server gone, the lock is free.
    assert BS.Study.load(BS.key_path(out)) and not os.path.exists(out)


def test_a_server_never_writes_into_a_study_replaced_under_it(tmp_path):
    original, tuned = Bank(fake_bank(tmp_path / 'bankO')), Bank(fake_bank(tmp_path / 'bankT'))
    out = str(tmp_path / 's.jsonl')
    study = BS.open_study(out, original, tuned)
    with Recorded(BS.StudySession(out, 'alice', study), study.sample_of) as s:
        state = call(s.port, 'GET', '/api/state')[1]
        status, data, _ = call(s.port, 'POST', '/api/judge', dict(a=state['current']['a'], b=state['current']['b'],
            choice='a'))
        assert status == 200
        for path in (out, BS.key_path(out)):            # Replaced by hand (or by a --force that took no lock).
            os.rename(path, path + '.old')
        new = BS.make_study(out, original, tuned, original.ids, 0)
        current = data['state']['current']
        status, data, _ = call(s.port, 'POST', '/api/judge', dict(a=current['a'], b=current['b'], choice='a'))
        assert status == 500 and 'replaced since this server started' in data['error']
        assert call(s.port, 'POST', '/api/undo', {})[0] == 500
    assert not os.path.exists(out)                      # Before: the old key's tokens went into the new study's file.
    assert BS.study_judgements(out, new) == []
    study.close()


def test_two_force_starts_in_one_second_keep_every_key(tmp_path, monkeypatch):
    original, tuned = Bank(fake_bank(tmp_path / 'bankO')), Bank(fake_bank(tmp_path / 'bankT'))
    out = str(tmp_path / 's.jsonl')
    for module in (BS, L):
        monkeypatch.setattr(module, 'now', lambda: '2030-01-02T03:04:05+00:00')
    keys = [BS.open_study(out, original, tuned, force=k > 0).key for k in range(3)]
    aside = sorted(p for p in os.listdir(tmp_path) if p.startswith('s.jsonl.key.json.replaced-'))
    assert aside == ['s.jsonl.key.json.replaced-2030-01-02T030405+0000',
        's.jsonl.key.json.replaced-2030-01-02T030405+0000-2']      # Before: one name, the first key written over.
    assert [json.load(open(tmp_path / p))['samples'] for p in aside] == [k['samples'] for k in keys[:2]]
    assert BS.Study.load(BS.key_path(out)).key['samples'] == keys[2]['samples']

#----------------------------------------------------------------------------
# Attention checks.

def served_files(port, tokens):
    """{token: {name: bytes}} of every file the page fetches for a side (its previews, RGB render and mesh)."""
    names = ('preview_front.png', 'preview_three_quarter.png', 'preview_profile.png', 'image.png', 'mesh.bin')
    files = {}
    for token in tokens:
        for name in names:
            status, data, _ = call(port, 'GET', f'/bank/{token}/{name}', headers={'Accept-Encoding': 'identity'})
            if status == 200:
                files.setdefault(token, {})[name] = data
    return files


def test_attention_checks_serve_no_file_another_token_serves(tmp_path):
    noses = {f'seed{i:06d}': 0.03 + 0.004 * i for i in range(4)}
    original = nose_bank(tmp_path / 'bankO', noses)
    tuned = nose_bank(tmp_path / 'bankT', {k: v + 0.002 for k, v in noses.items()})
    out = str(tmp_path / 's.jsonl')
    study = BS.make_study(out, Bank(original), Bank(tuned), list(noses), attention=3)
    with Recorded(BS.StudySession(out, 'alice', study), study.sample_of) as s:
        files = served_files(s.port, study.samples)
    checked = {t for pair in study.checks for t in pair}
    assert len(checked) == 6 and set(files) == set(study.samples)
    kinds = {frozenset(f) for f in files.values()}
    assert len(kinds) == 1 and len(next(iter(kinds))) == 5      # Every side serves the same five files.
    owner = {}
    for token, named in files.items():
        for data in named.values():
            owner.setdefault(data, set()).add(token)
    shared = {t for tokens in owner.values() if len(tokens) > 1 for t in tokens}
    assert not shared & checked                         # Before: a check's clean side served its sample's files.


def test_attention_check_sides_are_alike_but_for_the_floaters(tmp_path):
    import numpy as np
    import PIL.Image
    banks = [Bank(nose_bank(tmp_path / name, {'seed000000': nose})) for name, nose in (('bankO', 0.04), ('bankT', 0.03))]
    study = BS.make_study(str(tmp_path / 's.jsonl'), *banks, ['seed000000'], attention=1)
    (a, b), = study.checks
    clean = study.clean[L.pair_key(a, b)]
    sides = dict(clean=study.sample_of(clean), flawed=study.sample_of(b if clean == a else a))
    picture = lambda bank, i, name: np.asarray(PIL.Image.open(bank.path(i, name)), dtype=np.float32)
    off = lambda side, name: min(np.abs(picture(*sides[side], name) - picture(bank, 'seed000000', name)).mean()
        for bank in banks)                              # From the sample the check was made of.
    assert off('clean', 'image.png') < 1 and off('flawed', 'image.png') < 1
    assert off('clean', 'preview_front.png') < 0.5     # The clean side looks like its sample ...
    assert off('flawed', 'preview_front.png') > 10 * off('clean', 'preview_front.png')   # ... the flawed has floaters.
    slabs = {side: bank.slab(i) for side, (bank, i) in sides.items()}
    assert ((slabs['flawed'] >= 10) & ~(slabs['clean'] >= 10)).sum() > 0

#----------------------------------------------------------------------------
# Keys that are no key: a FIFO, a device, a huge file.

@pytest.mark.parametrize('kind', ['a FIFO', 'a character device', 'huge'])
def test_a_key_that_is_no_regular_file_is_refused_without_hanging(labelled_study, tmp_path, kind):
    original, tuned, out = labelled_study
    key = BS.key_path(out)
    os.remove(key)
    if kind == 'a FIFO':
        os.mkfifo(key)
    elif kind == 'huge':
        with open(key, 'wb') as f:
            f.truncate(128 << 20)                       # Twice the limit; sparse: no disk used.
    else:
        os.symlink(os.devnull, key)
    message = f'{key}: larger than 64 MiB' if kind == 'huge' else f'{key}: not a regular file ({kind})'
    args = ['--original', original, '--tuned', tuned, '--out', out, '--annotator', 'bob', '--dry-run']
    for command in (['study', *args], ['score-study', '--out', out]):
        result = run_within(20, lambda: run_label(*command))  # Before: waited for a writer (or read the whole file).
        refused_in_one_line(result, message)


def test_score_study_refuses_a_report_path_that_is_a_folder(labelled_study):
    _, _, out = labelled_study
    os.mkdir(f'{out}.score.json')
    refused_in_one_line(run_label('score-study', '--out', out), f'{out}.score.json exists and is a folder')   # Before: traceback.
    os.rmdir(f'{out}.score.json')
    ok(run_label('score-study', '--out', out))

#----------------------------------------------------------------------------
