"""README's headline table: rendered from docs/results/headlines.json, each row read from a replication file."""

import json

import pytest
from click.testing import CliRunner

from eg3d_rlhf.analysis import headlines
from tests.helpers.cli import refused_in_one_line
from tools import headline

#----------------------------------------------------------------------------

def replication(path, effect=0.8, contrasts=('tuned vs original',)):
    """A replication.json of tools/replicate.py's shape with one across-seed result per contrast (Holm over five)."""
    across = dict(seeds=6, effect=effect, ci95=[0.7, 0.9], above=6, below=0, wilcoxon_p=0.03125, holm_p=0.15625)
    path.write_text(json.dumps(dict(kind='preference', contrasts=[dict(contrast=c, kind='preference', null=0.5,
        across=across) for c in contrasts])))
    return path


@pytest.fixture
def page(tmp_path):
    (tmp_path / 'entry.md').write_text('# an entry\n')
    readme = tmp_path / 'README.md'
    readme.write_text(f'# Title\n\nabove\n{headlines.START}\nold table\n{headlines.END}\nbelow\n')
    return tmp_path, readme


def run(tmp_path, readme, *args):
    return CliRunner().invoke(headline.main, ['--rows', str(tmp_path / 'rows.json'), '--readme', str(readme), *args])


def test_the_readme_table_is_the_rows_table():
    result = CliRunner().invoke(headline.main, ['--check'])
    assert result.exit_code == 0, f'{result.output}(run: eg3d-rlhf headline)'
    rows = headlines.load('docs/results/headlines.json')
    assert len(rows) >= 2 and all(r['entry'].startswith('docs/results/') for r in rows)


def test_a_row_is_added_from_a_replication_file_and_rendered(page):
    tmp_path, readme = page
    source = replication(tmp_path / 'rep.json')
    result = run(tmp_path, readme, '--add', 'A claim', '--replication', str(source), '--entry', str(tmp_path / 'entry.md'))
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert '| [A claim](entry.md) | 80.0% | 70.0% to 90.0% | 6 of 6 | 0.031 | 0.16 |' in text
    assert text.startswith('# Title\n\nabove\n') and text.endswith(f'{headlines.END}\nbelow\n') and 'old table' not in text
    replication(source, effect=0.9)                                         # The same claim again: replaced.
    run(tmp_path, readme, '--add', 'A claim', '--replication', str(source), '--entry', str(tmp_path / 'entry.md'))
    assert len(headlines.load(tmp_path / 'rows.json')) == 1 and '| 90.0% |' in readme.read_text()
    assert run(tmp_path, readme, '--check').exit_code == 0
    readme.write_text(readme.read_text().replace('90.0%', '95.0%'))        # Edited by hand: stale.
    refused_in_one_line(run(tmp_path, readme, '--check'), 'its headline table is not')


@pytest.mark.parametrize('change, message', [
    (lambda p: replication(p, effect=float('nan')), 'across.effect is nan, not a finite number'),
    (lambda p: replication(p, contrasts=('a vs b', 'a vs c')), "several contrasts (it has ['a vs b', 'a vs c'])"),
    (lambda p: p.write_text('[1, 2]'), 'expected a JSON object'),
    (lambda p: p.write_text('{"contrasts": '), 'not JSON'),
    (lambda p: None, 'cannot read it'),
])
def test_a_bad_replication_file_is_refused_in_one_line_and_nothing_changes(page, change, message):
    tmp_path, readme = page
    before = readme.read_text()
    change(tmp_path / 'rep.json')
    result = run(tmp_path, readme, '--add', 'A claim', '--replication', str(tmp_path / 'rep.json'), '--entry',
        str(tmp_path / 'entry.md'))
    refused_in_one_line(result, message)
    assert readme.read_text() == before and not (tmp_path / 'rows.json').exists()


def test_misuse_is_refused(page):
    tmp_path, readme = page
    refused_in_one_line(run(tmp_path, readme, '--add', 'A claim'), '--add needs --replication and --entry')
    refused_in_one_line(run(tmp_path, readme, '--add', 'A claim', '--replication', 'r.json', '--entry', 'none.md'),
        'none.md does not exist')
    refused_in_one_line(run(tmp_path, readme, '--entry', 'x.md'), 'go with --add')
    readme.write_text('# no markers\n')
    refused_in_one_line(run(tmp_path, readme), 'needs one <!-- headlines')

#----------------------------------------------------------------------------
