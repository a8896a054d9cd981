"""tools/replicate.py: one evaluate report per training seed, tuned against original across the seeds."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.helpers.cli import refused_in_one_line
from tests.helpers.replication import fake_measures
from tools import replicate

#----------------------------------------------------------------------------
# Report folders as tools/evaluate.py leaves them (measures.json: ids, original, tuned), written by hand: the tuned
# sample's nose score beats the original's on `wins` of the ids.

def report(folder, wins, seeds=range(5000, 5040), seed=0):
    rng = np.random.default_rng(seed)
    ids = [f'seed{s:06d}' for s in seeds]
    original = fake_measures(rng, len(ids))
    better = np.arange(len(ids)) < wins
    nose = np.where(better, np.array(original['tastes']['nose']) + 1, np.array(original['tastes']['nose']) - 1)
    folder.mkdir(parents=True)
    tuned = fake_measures(rng, len(ids), nose=nose)
    (folder / 'measures.json').write_text(json.dumps(dict(ids=ids, original=original, tuned=tuned)))
    return folder


def run(*args):
    return CliRunner().invoke(replicate.main, [str(a) for a in args])


def test_each_seed_is_tuned_against_original_and_the_result_is_across_seeds(tmp_path):
    wins = dict(zip(range(100, 105), (30, 29, 32, 31, 33)))            # Every seed prefers tuned: 5 of 5.
    folders = [f'{s}={report(tmp_path / f"eval-{s}", w, seed=s)}' for s, w in wins.items()]
    result = run('--taste', 'nose', '--outdir', tmp_path / 'out', *folders)
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / 'out' / 'replication.json').read_text())
    (c,) = table['contrasts']
    assert c['contrast'] == 'tuned vs original' and [s['wins'] for s in c['seeds']] == list(wins.values())
    assert [s['seed'] for s in c['seeds']] == list(wins) and c['seeds'][0]['clusters'] == 40
    assert c['across']['wilcoxon_p'] == pytest.approx(0.0625) and c['result'] in result.output    # 5 seeds: 2/32.
    assert 'dev seeds' not in result.output and (tmp_path / 'out' / c['forest']).is_file()
    again = run('--taste', 'nose', '--outdir', tmp_path / 'out', *folders)
    refused_in_one_line(again, 'is not empty; give another folder, or --force')


def test_bad_reports_are_refused_in_one_line(tmp_path):
    good = report(tmp_path / 'good', 10)
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'measures.json').write_text(json.dumps(dict(ids=['seed000001'], original={}, tuned={})))
    nan = report(tmp_path / 'nan', 10)
    data = json.loads((nan / 'measures.json').read_text())
    data['tuned']['tastes']['nose'][3] = float('nan')
    (nan / 'measures.json').write_text(json.dumps(data))
    out = tmp_path / 'out'
    for args, message in (([f'1={good}', f'1={good}'], 'give each training seed once'),
            ([f'x={good}'], 'expected SEED=REPORT'), ([f'1={tmp_path}'], 'measures.json: cannot be read'),
            ([f'1={bad}'], 'not the per-sample measures tools/evaluate.py writes'),
            ([f'1={nan}'], 'a nose score that is not a finite number')):
        refused_in_one_line(run('--taste', 'nose', '--outdir', out, *args), message)
    assert not out.exists()


def test_dev_held_out_seeds_are_warned_of(tmp_path):
    folders = [f'{s}={report(tmp_path / f"eval-{s}", 20, seeds=range(1000, 1040), seed=s)}' for s in (0, 1)]
    result = run('--taste', 'nose', '--outdir', tmp_path / 'out', *folders)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith('Warning: training seeds 0-1 and evaluation ids 1000-1039 are dev seeds')

#----------------------------------------------------------------------------
