"""eg3d_rlhf.data.preferences: JSONL judgements, validation with line numbers, pairs, splits by sample, importers."""

import json

import numpy as np
import pytest

from eg3d_rlhf.data import preferences
from eg3d_rlhf.data import preferences as P
from eg3d_rlhf.data.preferences import LabelError
from tests.conftest import shared_file

LINE = dict(a='seed000001', b='seed000002', choice='a', annotator='ann', time='2026-11-21T10:00:00+00:00')


def write_lines(path, rows):
    path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in rows))
    return str(path)


def test_round_trip_keeps_extra_keys(tmp_path):
    rows = [dict(LINE, seconds=3.5), dict(LINE, a='seed000003', choice='tie'), '', dict(LINE, b='seed000004', choice='skip')]
    judgements = P.load_judgements(write_lines(tmp_path / 'l.jsonl', rows))
    assert [j.choice for j in judgements] == ['a', 'tie', 'skip'] and judgements[0].extra == dict(seconds=3.5)
    out = str(tmp_path / 'copy.jsonl')
    P.write_judgements(out, judgements)
    assert [j.to_dict() for j in P.load_judgements(out)] == [j.to_dict() for j in judgements]


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf')])
def test_no_label_writer_writes_nan_or_inf(tmp_path, value):
    from eg3d_rlhf.data import labeling
    out = tmp_path / 'l.jsonl'
    out.write_text(json.dumps(LINE) + '\n')
    judgements = P.load_judgements(str(out)) + [P.Judgement(**dict(LINE, a='seed000003'), extra=dict(ls_task=value))]
    with pytest.raises(P.LabelError, match=f'{out}: the judgement of seed000003 vs seed000002 holds nan or inf'):
        P.write_judgements(str(out), judgements)                        # Before: "ls_task": NaN, which is no JSON.
    with pytest.raises(ValueError, match='not JSON compliant'):
        labeling.append_record(str(out), dict(LINE, a='seed000004', seconds=value))
    assert out.read_text() == json.dumps(LINE) + '\n'                  # Neither touched the file.


@pytest.mark.parametrize('bad, message', [
    ('{"a": ', 'not JSON'),
    ('[1, 2]', 'expected a JSON object'),
    (json.dumps({k: v for k, v in LINE.items() if k != 'annotator'}), 'missing annotator'),
    (json.dumps(dict(LINE, choice='left')), '"choice" must be one of'),
    (json.dumps(dict(LINE, b='seed000001')), 'compared with itself'),
    (json.dumps(dict(LINE, time='yesterday')), 'not ISO-8601'),
    (json.dumps(dict(LINE, a=7)), '"a" must be a non-empty string'),
    (json.dumps(dict(LINE, a='seed000009')), 'unknown sample id seed000009'),
    (json.dumps(dict(LINE, a='seed000002', b='seed000001', choice='b')), 'already judged seed000002 vs seed000001 on line 1'),
])
def test_bad_lines_are_named_by_line_number(tmp_path, bad, message):
    path = write_lines(tmp_path / 'l.jsonl', [LINE, '', bad])
    with pytest.raises(P.LabelError) as info:
        P.load_judgements(path, known_ids=['seed000001', 'seed000002'])
    assert str(info.value).startswith(f'{path}:3: ') and message in str(info.value)


def test_another_annotator_may_judge_the_same_pair(tmp_path):
    path = write_lines(tmp_path / 'l.jsonl', [LINE, dict(LINE, annotator='other', choice='b')])
    pairs, ties = P.to_pairs(P.load_judgements(path))
    assert pairs == [('seed000001', 'seed000002'), ('seed000002', 'seed000001')] and ties == []


def test_splits_are_by_sample_and_never_leak():
    ids = [P.seed_id(i) for i in range(100)]
    assignment = P.split_samples(ids, fractions=(0.8, 0.1, 0.1), seed=3)
    assert [sum(v == s for v in assignment.values()) for s in ('train', 'val', 'test')] == [80, 10, 10]
    assert assignment == P.split_samples(list(reversed(ids)), seed=3)           # Order of the input does not matter.
    assert assignment != P.split_samples(ids, seed=4)
    judgements = [P.Judgement(a=ids[i], b=ids[(i * 7 + 1) % 100], choice='a', annotator='x', time=P.now()) for i in range(100)]
    split = P.split_judgements(judgements, assignment)
    assert sum(len(v) for v in split.values()) == 100
    for name in ('train', 'val', 'test'):
        assert all(assignment[j.a] == assignment[j.b] == name for j in split[name])
    members = {name: {x for j in split[name] for x in (j.a, j.b)} for name in ('train', 'val', 'test')}
    assert not (members['train'] & members['val']) and not (members['train'] & members['test']) and not (members['val'] & members['test'])
    assert all(assignment[j.a] != assignment[j.b] for j in split['dropped'])


def test_paper_csv_imports_as_4346_judgements():
    judgements = P.import_ranked_csv(shared_file('anchor_data', 'rankedseedsall.csv'))
    assert len(judgements) == 4346
    first = judgements[0]
    assert (first.a, first.b, first.choice) == ('seed035539', 'seed023763', 'a')      # Row 0: 35539 over 23763.
    pairs, ties = P.to_pairs(judgements)
    assert len(pairs) == 4346 and not ties and all(w.startswith('seed') and len(w) == 10 for w, _ in pairs)


@pytest.mark.parametrize('text, message', [
    ('x,y,z\n0,1,2\n', ':1: expected a header'),
    (',rank1,rank2\n0,1,2\n1,5,oops\n', ':3: expected two integer seeds'),
    (',rank1,rank2\n0,4,4\n', ':2: a seed is compared with itself'),
])
def test_malformed_csv_names_the_line(tmp_path, text, message):
    path = tmp_path / 'r.csv'
    path.write_text(text)
    with pytest.raises(P.LabelError, match=message):
        P.import_ranked_csv(str(path))


def test_good_bad_lists(tmp_path):
    good, bad = tmp_path / 'good.txt', tmp_path / 'bad.txt'
    good.write_text('12\nseed000013  # nice nose\n\n')
    bad.write_text('seed000014\n')
    assert P.import_good_bad(str(good), str(bad)) == {'seed000012': 1, 'seed000013': 1, 'seed000014': 0}
    bad.write_text('seed000014\n12\n')
    with pytest.raises(P.LabelError, match='seed000012 is also listed'):
        P.import_good_bad(str(good), str(bad))
    bad.write_text('seed 14\n')
    with pytest.raises(P.LabelError, match=':1: not a sample id'):
        P.import_good_bad(str(good), str(bad))

    ids = [f'seed{i:06d}' for i in range(5)]
    P.write_id_list(str(good), ids[:2], comment='good samples by me')
    assert good.read_text().startswith('# good samples by me\n') and P.read_id_list(str(good)) == ids[:2]


def test_training_labels_by_sample(tmp_path):
    ids = [f'seed{i:06d}' for i in range(40)]
    rng = np.random.RandomState(0)
    pairs = sorted({(int(i), int(j)) for i, j in rng.randint(40, size=(300, 2)) if i < j})
    rows = [dict(LINE, a=ids[i], b=ids[j], choice=['a', 'b', 'tie'][i * j % 3]) for i, j in pairs]
    path = write_lines(tmp_path / 'l.jsonl', rows)
    labels = P.training_labels(ids, (0.6, 0.2, 0.2), seed=3, labels_path=path)
    assignment = P.split_samples(ids, (0.6, 0.2, 0.2), seed=3)
    splits = P.split_judgements(P.load_judgements(path), assignment)
    assert labels.mode == 'pairs' and labels.counts == {s: len(splits[s]) for s in ('train', 'val', 'test', 'dropped')}
    assert labels.ids == {s: sorted(x for x in ids if assignment[x] == s) for s in P.SPLITS}
    assert (labels.train['pairs'], labels.train['ties']) == P.to_pairs(splits['train'])
    assert labels.val_pairs == P.to_pairs(splits['val'])[0] and labels.test_pairs == P.to_pairs(splits['test'])[0]
    good, bad = tmp_path / 'good.txt', tmp_path / 'bad.txt'
    P.write_id_list(str(good), ids[::2])
    P.write_id_list(str(bad), ids[1::2])
    labels = P.training_labels(ids, (0.6, 0.2, 0.2), seed=3, good_path=str(good), bad_path=str(bad))
    assert labels.mode == 'good/bad' and labels.train == dict(labels={x: 1 - ids.index(x) % 2 for x in labels.ids['train']})
    val = labels.ids['val']
    assert sorted(labels.val_pairs) == sorted((g, b) for g in val for b in val if ids.index(g) % 2 == 0 < ids.index(b) % 2)
    assert labels.counts == {s: len(labels.ids[s]) for s in P.SPLITS}
    with pytest.raises(P.LabelError, match='not enough labels for a split by sample'):
        P.training_labels(ids, (0.6, 0.2, 0.2), labels_path=write_lines(tmp_path / 'one.jsonl', rows[:1]))
    P.write_id_list(str(bad), ['seed000099'])
    with pytest.raises(P.LabelError, match='unknown sample id seed000099'):
        P.training_labels(ids, (0.6, 0.2, 0.2), good_path=str(good), bad_path=str(bad))

def test_undo_records_take_a_judgement_back(tmp_path):
    rows = [dict(LINE, id='j1'), dict(LINE, a='seed000003', id='j2'),
        dict(undo_of='j1', annotator='ann', time=LINE['time']),
        dict(LINE, a='seed000002', b='seed000001', choice='tie', id='j3')]          # Judged again after the undo.
    judgements = P.load_judgements(write_lines(tmp_path / 'l.jsonl', rows))
    assert [(j.a, j.b, j.choice) for j in judgements] == [('seed000003', 'seed000002', 'a'), ('seed000002', 'seed000001', 'tie')]


@pytest.mark.parametrize('rows, message', [
    ([dict(LINE, id='j1'), dict(undo_of='j9', annotator='ann', time=LINE['time'])], ':2: undoes j9, which is no standing'),
    ([dict(LINE, id='j1'), dict(undo_of='j1', annotator='other', time=LINE['time'])], ':2: undoes j1, which is no standing'),
    ([dict(LINE, id='j1'), dict(undo_of='j1', annotator='ann', time=LINE['time']),
        dict(undo_of='j1', annotator='ann', time=LINE['time'])], ':3: undoes j1'),
    ([dict(undo_of='', annotator='ann', time=LINE['time'])], ':1: "undo_of" of an undo record must be'),
    ([dict(undo_of='j1', annotator='ann', time='now')], ':1: "time" is not ISO-8601'),
    ([dict(LINE, repeat=True)], ':1: a repeat of seed000001 vs seed000002, which ann has not judged before'),
    ([dict(LINE, id='j1'), dict(LINE, a='seed000003', id='j1')], ":2: the id 'j1' is used twice by ann"),
    ([dict(LINE, id=5)], ':1: "id" must be a non-empty string'),
])
def test_bad_undo_and_repeat_records(tmp_path, rows, message):
    with pytest.raises(P.LabelError, match=message):
        P.load_judgements(write_lines(tmp_path / 'l.jsonl', rows))


def test_repeats_are_measured_not_trained_on(tmp_path):
    rows = [LINE, dict(LINE, a=LINE['b'], b=LINE['a'], choice='b', repeat=True), dict(LINE, annotator='other', repeat=False)]
    path = write_lines(tmp_path / 'l.jsonl', rows)
    assert [j.annotator for j in P.load_judgements(path)] == ['ann', 'other']                 # Training: each pair once.
    with_repeats = P.load_judgements(path, repeats=True)
    assert [P.is_repeat(j) for j in with_repeats] == [False, True, False]

#----------------------------------------------------------------------------
# Label files that are not text, or nested too deeply, are refused naming the file.

@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('content, message', [
    (b'\xff\xfe{"a": 1}\n', 'not UTF-8 text'),
    (b'[' * 100000 + b'\n', 'nested too deeply'),
    (b'{"a": "x", "b": "y"\n', 'not JSON'),
])
def test_label_files_that_are_not_text_or_too_deep_are_refused(tmp_path, content, message):
    from eg3d_rlhf.data import preferences
    path = tmp_path / 'labels.jsonl'
    path.write_bytes(content)
    with pytest.raises(preferences.LabelError, match=message) as err:
        preferences.load_judgements(str(path))
    assert str(path) in str(err.value) and path.read_bytes() == content

#----------------------------------------------------------------------------
# Id lists and ranked seeds: other scripts' digits are no seed.

@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('name, text', [('good.txt', '\u0663\n'), ('ranked.csv', ',rank1,rank2\n0,\u0663,5\n'),
    ('ranking.jsonl', '{"condition": "nose", "ranking": ["\u0663", "5"]}\n')])
def test_arabic_indic_digits_are_not_read_as_seeds(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    read = {'good.txt': preferences.read_id_list, 'ranked.csv': preferences.import_ranked_csv,
        'ranking.jsonl': preferences.import_ranking}[name]
    with pytest.raises(LabelError, match=f'{path}:[12]: '):
        read(str(path))                                 # Before: seed000003.
