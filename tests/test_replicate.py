"""tools/replicate.py: one evaluate report or blind study per training seed, tuned against original across the seeds."""

import json

import numpy as np
import pytest

from eg3d_rlhf.data import blind_study as BS
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.preferences import write_judgements
from tests.helpers.cli import refused_in_one_line, tool
from tests.helpers.replication import fake_measures
from tests.helpers.study import judgement, nose_bank
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


run = tool(replicate.main)


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
            ([f'x={good}'], 'expected [METHOD:]SEED=REPORT'), ([f'bad name:1={good}'], 'expected [METHOD:]SEED'), ([f'1={tmp_path}'], 'measures.json: cannot be read'),
            ([f'1={bad}'], 'not the per-sample measures tools/evaluate.py writes'),
            ([f'1={nan}'], 'a nose score that is not a finite number')):
        refused_in_one_line(run('--taste', 'nose', '--outdir', out, *args), message)
    assert not out.exists()


def test_methods_are_compared_id_by_id_per_seed_first_against_each_other(tmp_path):
    """grpo's tuned noses beat the original on 30 of 40 ids, dpo's on 10 and final's on 30 (the same ids and
    originals, report's rng seeded alike): grpo beats dpo on 20 ids and ties 20 (75%), ties final on all (50%)."""
    seeds = range(200, 205)
    given = [f'{m}:{s}={report(tmp_path / f"{m}-{s}", w, seed=s)}' for m, w in (('grpo', 30), ('dpo', 10),
        ('final', 30)) for s in seeds]
    result = run('--taste', 'nose', '--outdir', tmp_path / 'out', *given)
    assert result.exit_code == 0, result.output
    dpo, final = json.loads((tmp_path / 'out' / 'replication.json').read_text())['contrasts']
    assert dpo['contrast'] == 'grpo vs dpo' and final['contrast'] == 'grpo vs final'
    assert [(x['wins'], x['losses'], x['ties']) for x in dpo['seeds']] == [(20, 0, 20)] * 5
    assert [(x['wins'], x['losses'], x['ties']) for x in final['seeds']] == [(0, 0, 40)] * 5
    assert dpo['across']['wilcoxon_p'] == pytest.approx(0.0625) and [x['seed'] for x in dpo['seeds']] == list(seeds)
    other_ids = report(tmp_path / 'other-ids', 30, seeds=range(6000, 6040))
    out = tmp_path / 'refused'
    for args, message in ((given[:5] + given[5:9], 'dpo has training seeds [200, 201, 202, 203] and grpo [200, 201, '
            '202, 203, 204]'), (given[:5], 'two methods or more'), (given[:5] + [given[5].split(':', 1)[1]],
            'name the method of every report'), (given[:5] + [given[0]], 'give each training seed once per method'),
            (given[:5] + [f'dpo:{s}={other_ids}' for s in seeds], 'other held-out ids; evaluate both on the same')):
        refused_in_one_line(run('--taste', 'nose', '--outdir', out, *args), message)
    assert not out.exists()


def test_dev_held_out_seeds_are_warned_of(tmp_path):
    folders = [f'{s}={report(tmp_path / f"eval-{s}", 20, seeds=range(1000, 1040), seed=s)}' for s in (0, 1)]
    result = run('--taste', 'nose', '--outdir', tmp_path / 'out', *folders)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith('Warning: training seeds 0-1 and evaluation ids 1000-1039 are dev seeds')

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# Blind studies (tools/label.py study's labels file and key), one per training seed, written by hand.

def study(tmp_path, banks, seed, choices, annotators=('alice',)):
    """A study of the ids of `choices` ({id: 'tuned' | 'original' | 'tie'}), judged alike by each annotator."""
    out = str(tmp_path / f'study-{seed}.jsonl')
    key = BS.make_study(out, Bank(banks[0]), Bank(banks[1]), list(choices), attention=0)
    write_judgements(out, [judgement(key, who, x, c) for who in annotators for x, c in choices.items()])
    return f'{seed}={out}'


@pytest.fixture(scope='module')
def noses(tmp_path_factory):
    root, ids = tmp_path_factory.mktemp('noses'), [f'seed{s:06d}' for s in range(5000, 5005)]
    return ids, [nose_bank(root / name, dict(zip(ids, np.linspace(0.03, 0.06, 5)))) for name in ('orig', 'tuned')]


def test_blind_studies_are_replicated_per_pair_with_each_held_out_seed_one_unit(noses, tmp_path):
    ids, banks = noses
    won = [dict(zip(ids, ['tuned'] * k + ['original'] * (5 - k))) for k in (4, 4, 5, 3, 4, 4)]
    args = [study(tmp_path, banks, 100 + i, c, annotators=('alice', 'bob')) for i, c in enumerate(won)]
    result = run('--outdir', tmp_path / 'out', *args)
    assert result.exit_code == 0, result.output
    (c,) = json.loads((tmp_path / 'out' / 'replication.json').read_text())['contrasts']
    assert [s['wins'] for s in c['seeds']] == [8, 8, 10, 6, 8, 8] and c['seeds'][0]['ids'] == 10
    assert c['seeds'][0]['clusters'] == 5                       # Two people judging one pair: one unit.
    assert c['across']['effect'] == pytest.approx(np.mean([0.8, 0.8, 1.0, 0.6, 0.8, 0.8]))
    assert c['across']['wilcoxon_p'] == pytest.approx(2 / 64) and 'first side better across seeds' in c['result']


def test_studies_and_reports_are_not_mixed_and_reports_need_a_taste(noses, tmp_path):
    ids, banks = noses
    one = study(tmp_path, banks, 1, dict.fromkeys(ids, 'tuned'))
    folder = report(tmp_path / 'eval', 10)
    refused_in_one_line(run('--taste', 'nose', '--outdir', tmp_path / 'o1', one, f'2={folder}'), 'not both')
    refused_in_one_line(run('--outdir', tmp_path / 'o2', f'2={folder}'), '--taste is needed')
    empty = tmp_path / 'empty.jsonl'
    BS.make_study(str(empty), Bank(banks[0]), Bank(banks[1]), ids, attention=0)
    empty.write_text('')
    refused_in_one_line(run('--outdir', tmp_path / 'o3', f'3={empty}'), 'no judged pairs yet')
    (tmp_path / 'nokey.jsonl').write_text('')
    refused_in_one_line(run('--outdir', tmp_path / 'o4', f'4={tmp_path / "nokey.jsonl"}'), 'nokey.jsonl')
