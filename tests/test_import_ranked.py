"""tools/import_ranked.py: the paper's rankedseedsall.csv into JSONL judgements; broken CSVs are one-line errors."""

import itertools
import json
import os

import pytest

from eg3d_rlhf.data import preferences as P
from tests.conftest import shared_file
from tests.helpers.cli import digest, refused_in_one_line, tool
from tools import import_ranked


run = tool(import_ranked.main)


def test_the_paper_csv_becomes_4346_judgements(tmp_path):
    csv_path = shared_file('anchor_data', 'rankedseedsall.csv')
    out = tmp_path / 'labels' / 'paper.jsonl'
    result = run('--csv', csv_path, '--out', out, '--dry-run')
    assert result.exit_code == 0 and 'would write 4346 judgements' in result.output and not out.parent.exists()
    result = run('--csv', csv_path, '--out', out)
    assert result.exit_code == 0, result.output
    assert 'wrote 4346 judgements' in result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 4346
    rows = [line.split(',') for line in open(csv_path).read().splitlines()[1:]]
    for line, (index, rank1, rank2) in zip(lines, rows):          # Every row, in order, rank1 preferred.
        d = json.loads(line)
        assert (d['a'], d['b'], d['choice'], d['source_index']) == (f'seed{int(rank1):06d}', f'seed{int(rank2):06d}', 'a', index)
        assert d['annotator'] == 'paper'
    judgements = P.load_judgements(str(out))
    pairs, ties = P.to_pairs(judgements)
    assert len(pairs) == 4346 and not ties and pairs[0] == ('seed035539', 'seed023763')
    before = out.read_bytes()
    result = run('--csv', csv_path, '--out', out, '--annotator', 'other')
    assert result.exit_code == 1 and 'exists; pass --force' in result.output and out.read_bytes() == before
    result = run('--csv', csv_path, '--out', out, '--annotator', 'study', '--time', '2024-05-01T12:00:00+00:00', '--force')
    assert result.exit_code == 0
    d = json.loads(out.read_text().splitlines()[0])
    assert d['annotator'] == 'study' and d['time'] == '2024-05-01T12:00:00+00:00'


@pytest.mark.parametrize('text, message', [
    ('x,y,z\n0,1,2\n', 'r.csv:1: expected a header ",rank1,rank2"'),
    ('', 'r.csv:1: expected a header'),
    (',rank1,rank2\n0,1,2\n1,5,oops\n', 'r.csv:3: expected two integer seeds'),
    (',rank1,rank2\n0,1,2\n1,5\n', 'r.csv:3: expected 3 columns like the header'),
    (',rank1,rank2\n0,1,2,7\n', 'r.csv:2: expected 3 columns'),
    (',rank1,rank2\n0,-4,2\n', 'r.csv:2: seeds must lie in [0, 4294967295]'),
    (',rank1,rank2\n0,4294967296,2\n', 'r.csv:2: seeds must lie in'),
    (',rank1,rank2\n0,4,4\n', 'r.csv:2: a seed is compared with itself'),
    (',rank1,rank2\n0,4,5\n\n1,6,7\n2,5,4\n', 'r.csv:5: seeds 5 and 4 were already ranked on line 2'),
    (',rank1,rank2\n0,"4\n', 'r.csv:2: not CSV (unexpected end of data)'),
    (',rank1,rank2\n0,"4"x,5\n', 'r.csv:2: not CSV'),
    (b',rank1,rank2\n0,4,5\n\xff\xfe,1,2\n', 'r.csv: not UTF-8 text'),
    (',rank1,rank2\n\n', 'r.csv: no ranked pairs below the header'),
])
def test_broken_csvs_are_one_line_errors_and_write_nothing(tmp_path, text, message):
    path = tmp_path / 'r.csv'
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    out = tmp_path / 'out.jsonl'
    result = run('--csv', path, '--out', out)
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_arguments(tmp_path):
    result = run('--csv', tmp_path / 'missing.csv', '--out', tmp_path / 'o.jsonl')
    assert result.exit_code == 1 and 'missing.csv: cannot be read' in result.output
    path = tmp_path / 'r.csv'
    path.write_text(',rank1,rank2\n0,1,2\n')
    result = run('--csv', path, '--out', tmp_path / 'o.jsonl', '--time', 'yesterday')
    assert result.exit_code == 2 and 'not an ISO-8601 time' in result.output
    result = run('--csv', path, '--out', tmp_path / 'o.jsonl', '--annotator', ' ')
    assert result.exit_code == 2 and 'non-empty' in result.output
    result = run('--csv', path, '--out', tmp_path)                      # A folder is no output file.
    assert result.exit_code == 2 and 'is a folder' in result.output


@pytest.mark.parametrize('flag, text', [
    ('--csv', ',rank1,rank2\n0,1,2\n1,3,4\n'),
    ('--ranking', 'condition,r1,r2,r3\nchair,1,2,3\n'),
])
def test_out_never_writes_over_the_file_it_reads_force_or_not(tmp_path, flag, text):
    source = tmp_path / 'r.csv'
    source.write_text(text)
    (tmp_path / 'sub').mkdir()
    os.symlink(source, tmp_path / 'link.jsonl')
    os.link(source, tmp_path / 'hard.jsonl')
    before = digest(source)
    for out in (source, tmp_path / 'link.jsonl', tmp_path / 'sub' / '..' / 'r.csv', tmp_path / 'hard.jsonl'):
        for force in ([], ['--force']):                                 # Before: --force replaced the rankings.
            refused_in_one_line(run(flag, source, '--out', out, *force), f'{out} would write over {flag} {source}, '
                'which this command reads')
    assert digest(source) == before and sorted(os.listdir(tmp_path)) == ['hard.jsonl', 'link.jsonl', 'r.csv', 'sub']
    assert run(flag, source, '--out', tmp_path / 'out.jsonl').exit_code == 0

#----------------------------------------------------------------------------
# Rankings are bounded: a ranking of k ids becomes k(k-1)/2 judgements, so k and a file's pairs have limits.

def ranked_lines(path, rows):
    """A --ranking CSV of `rows` rankings of distinct seed ids, the first of k ids, the rest of MAX_RANKING."""
    ids = (f'seed{i:06d}' for i in itertools.count())
    path.write_text('condition,rank1,rank2\n' + ''.join(f'c{n},' + ','.join(itertools.islice(ids, k)) + '\n'
        for n, k in enumerate(rows)))
    return path


def test_a_ranking_of_more_than_max_ranking_ids_is_refused_before_it_expands(tmp_path):
    out = tmp_path / 'out.jsonl'
    path = ranked_lines(tmp_path / 'r.csv', [3, P.MAX_RANKING])
    assert len(P.import_ranking(str(path))) == 3 + P.MAX_RANKING * (P.MAX_RANKING - 1) // 2
    path = ranked_lines(tmp_path / 'r.csv', [3, P.MAX_RANKING + 1])
    refused_in_one_line(run('--ranking', path, '--out', out), f'{path}:3: a ranking of {P.MAX_RANKING + 1} ids; one '
        f'ranking may hold at most {P.MAX_RANKING}')                    # Before: 5,050 judgements written.
    path = ranked_lines(tmp_path / 'r.csv', [20_000])                   # The 220 kB line that made 2e8 judgements.
    assert path.stat().st_size > 200_000
    refused_in_one_line(run('--ranking', path, '--out', out), f'{path}:2: a ranking of 20000 ids')
    assert not out.exists()


def test_rankings_of_more_than_max_ranked_pairs_in_one_file_are_refused(tmp_path, monkeypatch):
    per = P.MAX_RANKING * (P.MAX_RANKING - 1) // 2
    rows = P.MAX_RANKED_PAIRS // per + 1                               # Each ranking within the limit, the file not.
    path, out = ranked_lines(tmp_path / 'r.csv', [P.MAX_RANKING] * rows), tmp_path / 'out.jsonl'
    refused_in_one_line(run('--ranking', path, '--out', out), f'{path}:{rows + 1}: the rankings up to this line make '
        f'{rows * per} pairs; one file may make at most {P.MAX_RANKED_PAIRS}: split it')
    assert not out.exists()
    monkeypatch.setattr(P, 'MAX_RANKED_PAIRS', 2 * 36)                  # The bound is inclusive: two rankings of nine.
    path = ranked_lines(tmp_path / 'r.csv', [9, 9])
    assert len(P.import_ranking(str(path))) == 2 * 36
    with pytest.raises(P.LabelError, match=r'r.csv:4: the rankings up to this line make 108 pairs'):
        P.import_ranking(str(ranked_lines(tmp_path / 'r.csv', [9, 9, 9])))
