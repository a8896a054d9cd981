"""k-way ranked assets per condition: all pairs by rank, win counts for Circular-DPO's w1, tools/import_ranked.py --ranking."""

import itertools
import json

import pytest
import torch

from eg3d_rlhf.data import preferences as P
from eg3d_rlhf.finetune.circular_dpo import with_win_counts
from eg3d_rlhf.finetune.flow_dpo import PairData, pair_quality_gaps
from tests.helpers.cli import tool
from tools import import_ranked

NINE = [f'c00-seed{s:06d}' for s in (7, 3, 12, 0, 5, 9, 1, 4, 8)]        # Best first.


run = tool(import_ranked.main)


def ranking_csv(path, rows, header='condition,rank1,rank2,rank3,rank4,rank5,rank6,rank7,rank8,rank9'):
    path.write_text(header + '\n' + ''.join(','.join(map(str, r)) + '\n' for r in rows))
    return str(path)

#----------------------------------------------------------------------------

def test_a_nine_asset_ranking_gives_36_pairs_by_rank_and_win_counts_8_to_0(tmp_path):
    judgements = P.import_ranking(ranking_csv(tmp_path / 'r.csv', [['chair', *NINE]]), annotator='study')
    assert len(judgements) == 36 == 9 * 8 // 2
    assert {frozenset((j.a, j.b)) for j in judgements} == {frozenset(p) for p in itertools.combinations(NINE, 2)}
    for j in judgements:                                                # The higher-ranked id is a, and chosen.
        assert j.choice == 'a' and NINE.index(j.a) < NINE.index(j.b)
        assert j.extra == dict(condition='chair', ranks=[NINE.index(j.a) + 1, NINE.index(j.b) + 1])
    counts = P.win_counts(judgements)
    assert [counts[x] for x in NINE] == [(float(c), 9) for c in range(8, -1, -1)]


def test_ties_share_a_rank_and_count_half(tmp_path):
    path = tmp_path / 'r.jsonl'
    path.write_text(json.dumps(dict(condition=1, ranking=['x', ['y', 'z'], 4])) + '\n'
        + json.dumps(dict(condition='other', ranking=[11, 10])) + '\n')
    judgements = P.import_ranking(str(path))
    by_pair = {(j.a, j.b): (j.choice, j.extra['ranks']) for j in judgements}
    assert by_pair == {('x', 'y'): ('a', [1, 2]), ('x', 'z'): ('a', [1, 2]), ('x', 'seed000004'): ('a', [1, 4]),
        ('y', 'z'): ('tie', [2, 2]), ('y', 'seed000004'): ('a', [2, 4]), ('z', 'seed000004'): ('a', [2, 4]),
        ('seed000011', 'seed000010'): ('a', [1, 2])}
    counts = P.win_counts(judgements)
    assert counts['x'] == (3.0, 4) and counts['y'] == counts['z'] == (1.5, 4) and counts['seed000004'] == (0.0, 4)
    csv_ties = P.import_ranking(ranking_csv(tmp_path / 'r.csv', [[1, 'x', 'y=z', 4]], header='condition,r1,r2,r3'))
    assert [(j.a, j.b, j.choice) for j in csv_ties] == [(j.a, j.b, j.choice) for j in judgements[:6]]


@pytest.mark.parametrize('name, text, message', [
    ('r.csv', 'cond,r1\n0,a,b\n', r'r.csv:1: expected a header "condition'),
    ('r.csv', 'condition,r1,r2\n0,a,b\n1,c\n', r'r.csv:3: a ranking needs at least 2 ids, got 1'),
    ('r.csv', 'condition,r1,r2,r3\n0,a,,b\n', r'r.csv:2: an empty cell between ranked ids'),
    ('r.csv', 'condition,r1,r2\n0,a,b c\n', r"r.csv:2: not a sample id: 'b c'"),
    ('r.csv', 'condition,r1,r2\n0,a,b\n1,c,a\n', r'r.csv:3: a is ranked twice \(also on line 2\)'),
    ('r.csv', 'condition,r1,r2\n0,a,a=b\n', r'r.csv:2: a is ranked twice'),
    ('r.csv', 'condition,r1,r2\n0,a,99999999999\n', r'r.csv:2: seed 99999999999 is not in'),
    ('r.jsonl', '{"condition": 0, "ranking": ["a", "b"]}\n[1]\n', r'r.jsonl:2: expected a JSON object'),
    ('r.jsonl', '{"condition": 0, "ranks": ["a", "b"]}\n', r'r.jsonl:1: expected \{"condition"'),
    ('r.jsonl', '{"condition": null, "ranking": ["a", "b"]}\n', r'r.jsonl:1: "condition" must be'),
    ('r.jsonl', '{"condition": 0, "ranking": ["a", []]}\n', r'r.jsonl:1: an empty tie group'),
    ('r.jsonl', '{"condition": 0, "ranking": ["a", 1.5]}\n', r'r.jsonl:1: not a sample id: 1.5'),
    ('r.jsonl', '{"condition": 0, "ranking": ["a", "b"]\n{}\n', r'r.jsonl:1: not JSON'),
    ('r.jsonl', '{"condition": 0, "ranking": ["a", "b"]}\n{"condition": 1, "ranking": ["c"', r'r.jsonl:2: not JSON'),
])
def test_malformed_rankings_are_refused_in_one_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(P.LabelError, match=message) as err:
        P.import_ranking(str(path))
    assert '\n' not in str(err.value)


def test_the_tool_writes_atomically_and_never_overwrites_without_force(tmp_path):
    source, out = ranking_csv(tmp_path / 'r.csv', [['chair', *NINE], ['table', *range(20, 29)]]), tmp_path / 'l.jsonl'
    result = run('--ranking', source, '--out', out, '--dry-run')
    assert result.exit_code == 0 and 'would write 72 judgements of 18 samples' in result.output and not out.exists()
    result = run('--ranking', source, '--out', out, '--annotator', 'study')
    assert result.exit_code == 0, result.output
    judgements = P.load_judgements(str(out))
    assert len(judgements) == 72 and {j.annotator for j in judgements} == {'study'}
    before = out.read_bytes()
    result = run('--ranking', source, '--out', out)
    assert result.exit_code == 1 and 'exists; pass --force' in result.output and out.read_bytes() == before
    (tmp_path / 'bad.csv').write_text('condition,r1,r2\n0,a,b\n1,c,a\n')
    result = run('--ranking', tmp_path / 'bad.csv', '--out', out, '--force')
    assert result.exit_code == 1 and 'bad.csv:3: a is ranked twice' in result.output and out.read_bytes() == before
    assert len(result.output.strip().splitlines()) == 1
    result = run('--ranking', source, '--csv', source, '--out', tmp_path / 'x.jsonl')
    assert result.exit_code == 2 and 'give one of --csv' in result.output

#----------------------------------------------------------------------------
# w1 from win counts: G = 2^P - 1, P = 2 C / (N (N - 1)) (Eq. 10-11), computed here by hand.

def pair_data(ids, pairs):
    index = {x: i for i, x in enumerate(ids)}
    return PairData(assets=torch.zeros([len(ids), 4, 4, 4]), conditions=None,
        chosen=torch.tensor([index[w] for w, _ in pairs]), rejected=torch.tensor([index[l] for _, l in pairs]),
        weight=torch.ones(len(pairs)), ids=list(ids))


def test_w1_from_a_rankings_win_counts_matches_a_hand_computation(tmp_path):
    judgements = P.import_ranking(ranking_csv(tmp_path / 'r.csv', [['chair', *NINE]]))
    data, record = with_win_counts(pair_data(NINE, [(j.a, j.b) for j in judgements]), judgements)
    assert data.wins.tolist() == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0] and data.pool.tolist() == [9] * 9
    w1 = pair_quality_gaps(data)
    first_last = (2 ** (2 * 8 / 72) - 1) - (2 ** 0 - 1)                  # Rank 1 (C = 8) over rank 9 (C = 0).
    second_third = (2 ** (2 * 7 / 72) - 1) - (2 ** (2 * 6 / 72) - 1)
    pairs = [(j.a, j.b) for j in judgements]
    assert w1[pairs.index((NINE[0], NINE[8]))].item() == pytest.approx(first_last, abs=1e-12)
    assert w1[pairs.index((NINE[1], NINE[2]))].item() == pytest.approx(second_third, abs=1e-12)
    assert (w1 > 0).all() and record['tau'] is None and record['pairs'] == 36


def test_labels_w1_tau_drops_a_choice_the_win_counts_contradict():
    mk = lambda a, b, choice, who: P.Judgement(a, b, choice, who, '2026-11-24T00:00:00+00:00')
    judgements = [mk('A', 'B', 'a', 'p'), mk('A', 'C', 'a', 'p'), mk('B', 'C', 'a', 'p'), mk('C', 'A', 'a', 'q')]
    assert P.win_counts(judgements) == {'A': (1.5, 3), 'B': (1.0, 3), 'C': (0.5, 3)}    # A-C judged twice: 0.5 each.
    data = pair_data(['A', 'B', 'C'], [('A', 'B'), ('A', 'C'), ('B', 'C'), ('C', 'A')])
    kept, record = with_win_counts(data, judgements, tau=0.0)
    g = {x: 2 ** (2 * c / 6) - 1 for x, c in dict(A=1.5, B=1.0, C=0.5).items()}
    assert pair_quality_gaps(kept).tolist() == pytest.approx([g['A'] - g['B'], g['A'] - g['C'], g['B'] - g['C']])
    assert (record['kept'], record['dropped']) == (3, 1) and kept.ids == data.ids
    with pytest.raises(ValueError, match='keeps none of the 4 labelled pairs'):
        with_win_counts(data, judgements, tau=0.5)
    with pytest.raises(ValueError, match='win counts must be given with their pools'):
        PairData(**{**data.__dict__, 'wins': torch.tensor([3.0, 0.0, 0.0]), 'pool': torch.tensor([3, 3, 3])})

#----------------------------------------------------------------------------
