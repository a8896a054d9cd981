"""Online rounds (finetune/rounds.py, tools/rounds.py): each round's bank, pairs by disagreement, labels on one
scale, the drift before refitting, the refit on every label, the fine-tuning and the gold; a second call resumes."""

import itertools
import json
import os
import pathlib
import pickle
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from eg3d_rlhf.data import annotators, preferences
from eg3d_rlhf.data.labeling import informative_pairs, random_pairs
from eg3d_rlhf.finetune import label_efficiency, rounds
from eg3d_rlhf.finetune.options import RunError
from eg3d_rlhf.generators import flow_heads, registry
from eg3d_rlhf.geometry.sigma import slab_grid
from tests.helpers.banks import ball_bank, write_bank
from tests.helpers.collateral import bump, true_slabs
from tests.helpers.flow import save_tiny
from tests.helpers.train import TRAIN_ARGS
from tools import rounds as tool
from training import legacy

pytestmark = pytest.mark.usefixtures('one_thread')

SUMMARY = ('rounds.json', 'rounds.md', 'rounds.png', 'rounds-proxy-gold.png')  # Written again by every call.


def test_an_annotator_can_keep_another_sets_scale():
    own = annotators.OracleAnnotator('nose', {'a': 1.0, 'b': 3.0})
    kept = annotators.OracleAnnotator('nose', {'a': 1.0, 'b': 3.0}, standard=(0.0, 2.0))
    assert own.z == {'a': -1.0, 'b': 1.0} and kept.z == {'a': 0.5, 'b': 1.5}


@pytest.mark.parametrize('args, message', [
    (['--annotator', 'oracle:wings'], "unknown annotator 'oracle:wings'"),
    (['--bank-size', '4', '--judgements', '7'], '7 judgements need more than a bank of 4 seeds gives'),
    (['--bank-size', '4', '--judgements', '6', '--rounds', '2', '--train-seeds', '1-2', '--upfront', '29'], '29 judgements need more than a bank of 8 seeds'),
    (['--train-seeds', '1-x'], '--train-seeds'),
    (['--annotator', 'people:ann', '--train-seeds', '1-2'], 'comparing label efficiency needs a simulated annotator'),
    (['--network', 'nowhere.pkl', '--trust-pickle'], 'nowhere.pkl'),
    (['--eval-seeds', '20005-20010'], "seed 20005 is also in a round's bank"),
    (['--check', '8', '--eval-seeds', '40010-40020'], 'seed 40010 is also in a check'),
    (['--check', '8', '--bank-seed', '39950'], "the banks reach the checks' seeds (40000-); lower --bank-seed"),
    (['--check', '150'], 'give fewer --check pairs than --judgements'),
    (['--keep-better'], '--keep-better needs --check pairs to decide by'),
    (['--random-share', 'nan'], "'nan' is not a finite number"),
    (['--train-seeds', '1-3,2'], '--train-seeds names 2 twice; give each once'),
    (['--train-seeds', '1-3', '--upfront', '450,450'], '--upfront names 450 twice'),
    (['--train-seeds', '1-3', '--upfront', '0,600'], '--upfront 0: an upfront run needs at least one judgement'),
])
def test_bad_settings_are_refused_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(tool.main, ['--outdir', str(tmp_path / 'r'), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not os.path.exists(tmp_path / 'r' / 'round-0')


@pytest.mark.parametrize('name, text, message', [
    ('pairs.json', '{"pairs": [["ball00", "ball00"]], "active": 0}', "pairs of two different samples of round 0's bank"),
    ('pairs.json', '{"pairs": [["ball00", "nobody"]], "active": 0}', "pairs of two different samples of round 0's bank"),
    ('pairs.json', '[1, 2]', 'holds a JSON array; expected an object'),
    ('taste.json', '{"ball00": NaN}', 'holds nan or inf where this tool writes finite numbers'),
    ('taste.json', '{"ball00": "tall"}', 'a finite taste score for each sample'),
    ('pairs.json', '{"pairs": [["ball00", "ball01"]], "active": 0, "x": [{"y": 1e999}]}', 'holds nan or inf where'),
])
def test_a_damaged_step_file_is_refused_in_one_line_naming_it(tmp_path, name, text, message):
    outdir = tmp_path / 'r'
    ball_bank(outdir / 'round-0' / 'bank', 6)                                 # Round 0's bank, drawn already.
    (outdir / 'round-0' / name).write_text(text)
    result = CliRunner().invoke(tool.main, ['--outdir', str(outdir), '--judgements', '5', '--bank-size', '6'])
    assert result.exit_code == 1 and message in result.output and str(outdir / 'round-0' / name) in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert (outdir / 'round-0' / name).read_text() == text                   # Left as it was.


class Planted:
    """A pickle whose loading touches a file: the code a hostile run folder could hold."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize('where', ['round-0', os.path.join('seed-1', 'rounds', 'round-0')])
def test_a_folder_holding_pickles_is_resumed_only_with_trust_pickle(tmp_path, where):
    """Before: a resumed run loaded its folder's generator.pkl as its own, so a shared folder could run any code."""
    outdir, marker = tmp_path / 'r', tmp_path / 'ran'
    (outdir / where).mkdir(parents=True)
    (outdir / where / 'generator.pkl').write_bytes(pickle.dumps(Planted(str(marker))))
    result = CliRunner().invoke(tool.main, ['--outdir', str(outdir), '--rounds', '2'])
    assert result.exit_code == 1 and str(outdir / where / 'generator.pkl') in result.output, result.output
    assert '--trust-pickle' in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not marker.exists() and sorted(os.listdir(outdir)) == [where.split(os.sep)[0]]       # Nothing ran.


@pytest.mark.slow
def test_two_rounds_run_end_to_end_and_a_second_call_redoes_nothing(data, start_pkl, tmp_path):
    outdir = tmp_path / 'rounds'
    args = ['--outdir', str(outdir), '--network', start_pkl, '--trust-pickle', '--rounds', '2', '--judgements', '60',
        '--check', '6', '--keep-better', '--bank-size', '12', '--res', '16', '--kimg', '0.004', '--refit-all',
        '--eval-seeds', '900-901', '--',
        '--cfg', 'synthetic', '--data', data, '--gpus', '1', '--batch', '4', '--gamma', '1', '--device', 'cpu',
        *TRAIN_ARGS, '--tick', '0.004', '--panel-seeds', '3-4']
    result = CliRunner().invoke(tool.main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((outdir / 'rounds.json').read_text())
    assert [r['round'] for r in summary['rounds']] == [0, 1] and [r['judgements'] for r in summary['rounds']] == [60, 120]
    before = summary['rounds'][1]['before_refit']
    assert summary['rounds'][0]['before_refit'] is None and before['pairs'] <= 60
    assert before['random']['pairs'] + before['active']['pairs'] == before['pairs'] and before['active']['pairs'] <= 40
    assert [r['active'] for r in summary['rounds']] == [0, 40]     # 54 pairs and 6 checked, a quarter of 54 random.
    run = rounds.Rounds(str(outdir), summary['settings'])
    members = run.member_scores(1, str(outdir / 'round-0' / 'reward.safetensors'))
    first = list(informative_pairs(members, np.random.RandomState(1)))[:40]
    assert [tuple(p) for p in json.loads((outdir / 'round-1' / 'pairs.json').read_text())['pairs'][:40]] == first
    # The check: seeds 40000-40005 of round 0's start (previous) and tuned generator under x/y ids, sides at random;
    # each seed's x against its y, the verdict by the tuned side. Round 1 refits on round 0's check too.
    sides = json.loads((outdir / 'round-0' / 'check' / 'sides.json').read_text())
    assert sorted(sides) == sorted(f'r0{c}-seed{s:06d}' for c in 'xy' for s in range(40000, 40006))
    assert sorted(sides.values()) == ['previous'] * 6 + ['tuned'] * 6 and 0 < sum(sides[f'r0x-seed{s:06d}'] ==
        'tuned' for s in range(40000, 40006)) < 6
    judged = preferences.load_judgements(str(outdir / 'round-0' / 'check.jsonl'))
    assert [(j.a, j.b) for j in judged] == [(f'r0x-seed{s:06d}', f'r0y-seed{s:06d}') for s in range(40000, 40006)]
    for k in (0, 1):
        check = json.loads((outdir / f'round-{k}' / 'check.json').read_text())
        side = json.loads((outdir / f'round-{k}' / 'check' / 'sides.json').read_text())
        chosen = [side[j.a if j.choice == 'a' else j.b] for j in
            preferences.load_judgements(str(outdir / f'round-{k}' / 'check.jsonl'))]
        wins = chosen.count('tuned')
        assert (check['labels']['wins'], check['labels']['losses']) == (wins, 6 - wins)
        assert check['kept'] == ('tuned' if wins > 3 else 'previous') == summary['rounds'][k]['check']['kept']
    assert run.generator(1) == str(outdir / 'round-0' / 'generator.pkl') if summary['rounds'][0]['check']['kept'] == \
        'tuned' else run.generator(1) == start_pkl
    assert sorted(os.listdir(outdir / 'round-1' / 'labelled')) == sorted([f'seed{s:06d}' for s in range(20000, 20024)]
        + list(sides) + ['bank.json', 'labels.jsonl'])
    assert len((outdir / 'round-1' / 'labelled' / 'labels.jsonl').read_text().splitlines()) == 114
    for k in (0, 1):
        gold = json.loads((outdir / f'round-{k}' / 'gold.json').read_text())
        assert gold['seeds'] == len(gold['scores']) == 2 and np.isfinite(gold['gain_sd'])
        assert (gold['versus_previous'] is None) == (k == 0)                   # Round 1 also meets round 0's.
        assert json.loads((outdir / f'round-{k}' / 'reward.report.json').read_text())['refit']['pairs'] > 0
    assert (outdir / 'rounds.png').stat().st_size > 1000 and '| 1 | 120 | 40 |' in (outdir / 'rounds.md').read_text()
    for k in (0, 1):                    # How the reward each round tuned on saw its check pairs, before the refit.
        seen, row = summary['rounds'][k]['check_reward'], summary['rounds'][k]
        members = run.member_scores(k, str(outdir / f'round-{k}' / 'reward.safetensors'), str(outdir / f'round-{k}' /
            'check'))
        side = json.loads((outdir / f'round-{k}' / 'check' / 'sides.json').read_text())
        mean = {i: np.mean(v) for i, v in members.items()}
        tuned = [mean[x] > mean[y] if side[x] == 'tuned' else mean[y] > mean[x] for x, y in
            rounds.check_pairs(list(side), k, 6)]
        assert seen['pairs'] == 6 and seen['prefers_tuned'] == pytest.approx(np.mean(tuned))
        assert seen['accuracy_vs_truth'] is not None and seen == json.loads((outdir / f'round-{k}' /
            'check-reward.json').read_text())
        assert f'- round {k}: {rounds.check_line(row["check"], seen)}' in (outdir / 'rounds.md').read_text()
        assert 'the reward it was tuned on scored it higher on' in rounds.check_line(row['check'], seen)
    assert (outdir / 'rounds-proxy-gold.png').stat().st_size > 1000          # The panel's proxy and gold, per round.
    for k in (0, 1):
        curves = summary['rounds'][k]['proxy_gold']
        assert curves['gold'] is not None and len(curves['gold']) == len(curves['kimg']) == len(curves['proxy_gain']) >= 2
        line = rounds.proxy_gold_line(curves, summary['rounds'][0]['proxy_gold'])
        assert f'- round {k}: {line}' in (outdir / 'rounds.md').read_text() and 'panel gold' in line
    assert all(r['collateral'].startswith('collateral (tuned preferred') for r in summary['rounds'])
    assert f'- round 1: {summary["rounds"][1]["collateral"]}' in (outdir / 'rounds.md').read_text()
    stamps = {p: os.path.getmtime(p) for p in outdir.rglob('*') if p.is_file()}
    again = CliRunner().invoke(tool.main, args)
    assert again.exit_code == 0 and json.loads((outdir / 'rounds.json').read_text())['rounds'] == summary['rounds']
    assert {p: os.path.getmtime(p) for p in stamps if p.name not in SUMMARY} == \
        {p: t for p, t in stamps.items() if p.name not in SUMMARY}
    # Killed while fine-tuning round 1 (its train/ half written, no generator.pkl yet): the call that resumes does it
    # again from the round's start and ends with the same networks and gold.
    before = legacy.load_network_pkl(str(outdir / 'round-1' / 'generator.pkl'), trust=True)['G_ema']
    gold = (outdir / 'round-1' / 'gold.json').read_text()
    for name in ('generator.pkl', 'gold.json'):
        (outdir / 'round-1' / name).unlink()
    (outdir / 'round-1' / 'train' / 'half-written').mkdir()                  # The stopped fine-tuning's leftovers.
    assert CliRunner().invoke(tool.main, args).exit_code == 0
    after = legacy.load_network_pkl(str(outdir / 'round-1' / 'generator.pkl'), trust=True)['G_ema']
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    assert (outdir / 'round-1' / 'gold.json').read_text() == gold
    assert len(os.listdir(outdir / 'round-1' / 'train')) == 1 and not (outdir / 'round-1' / 'train' / 'half-written').exists()
    # Killed while fitting round 1's reward (its metrics log begun, no report yet): before, train_reward refused to
    # write over the log and the run could not go on; now the fit starts again and ends with the same reward.
    fitted = load_file(str(outdir / 'round-1' / 'reward.safetensors'))
    for name in ('reward.safetensors', 'reward.report.json', 'generator.pkl', 'gold.json', 'collateral.json'):
        (outdir / 'round-1' / name).unlink()
    assert CliRunner().invoke(tool.main, args).exit_code == 0
    refitted = load_file(str(outdir / 'round-1' / 'reward.safetensors'))
    assert fitted.keys() == refitted.keys() and all(torch.equal(fitted[k], refitted[k]) for k in fitted)
    assert (outdir / 'round-1' / 'gold.json').read_text() == gold
    # A drift.json that does not hold what the run writes is refused in one line naming it, wherever the damage is.
    drift = (outdir / 'round-1' / 'drift.json').read_text()
    for damage in ({'accuracy_vs_labels': 'x'}, {'random': {'pairs': 3, 'accuracy_vs_labels': '0.5'}},
            {'active': {'pairs': 3, 'accuracy_vs_labels': 1.5}}, {'active': None}):
        (outdir / 'round-1' / 'drift.json').write_text(json.dumps({**json.loads(drift), **damage}))
        result = CliRunner().invoke(tool.main, args)
        assert result.exit_code == 1 and str(outdir / 'round-1' / 'drift.json') in result.output, (damage, result.output)
        assert 'the accuracy before the refit' in result.output


@pytest.mark.slow
def test_two_rounds_of_a_flow_ask_about_one_condition_and_tune_by_circular_dpo(tmp_path):
    start = save_tiny(tmp_path / 'tiny.pt')
    outdir = tmp_path / 'rounds'
    args = ['--outdir', str(outdir), '--network', start, '--rounds', '2', '--nproc', '2', '--judgements', '23',
        '--check', '3', '--bank-size', '6', '--res', '16', '--annotator', 'oracle:proportions', '--eval-seeds', '900-901',
        '--', '--dpo-steps=2',
        '--dpo-batch=4', '--bridge-seeds=0-1', '--draw-batch=4', '--device=cpu']
    result = CliRunner().invoke(tool.main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((outdir / 'rounds.json').read_text())
    assert [r['active'] for r in summary['rounds']] == [0, 15] and summary['rounds'][1]['before_refit']['pairs'] > 0
    checked = preferences.load_judgements(str(outdir / 'round-0' / 'check.jsonl'))   # 3 pairs: 2 seeds x 2 conditions
    assert [(j.a, j.b) for j in checked] == [(f'r0x-{i}', f'r0y-{i}') for i in ('c00-seed040000', 'c01-seed040000',
        'c00-seed040001')] and summary['rounds'][0]['check']['kept'] == 'tuned'       # drawn, 3 taken; no --keep-better.
    assert 'r0x-c01-seed040001' in os.listdir(outdir / 'round-1' / 'labelled')       # Round 1 refits on them too.
    for k in (0, 1):
        pairs = json.loads((outdir / f'round-{k}' / 'pairs.json').read_text())['pairs']
        assert len(pairs) == 20 and all(a[:3] == b[:3] for a, b in pairs)          # cCC-seed...: one condition each.
        assert {a[:3] for a, _ in pairs} == {'c00', 'c01'}
        gold = json.loads((outdir / f'round-{k}' / 'gold.json').read_text())
        assert gold['seeds'] == len(gold['scores']) == 4                           # 2 seeds under each of 2 conditions.
    first, second = (flow_heads.read_flow(str(outdir / f'round-{k}' / 'generator.pt')) for k in (0, 1))
    base = flow_heads.read_flow(start)
    moved = lambda a, b: any(not torch.equal(x[n], y[n]) for x, y in zip(a['state_dicts'], b['state_dicts']) for n in x)
    assert moved(base, first) and moved(first, second)                               # Each round tuned the last.
    meta = json.loads((outdir / 'round-1' / 'bank' / 'bank.json').read_text())
    assert 'round-0' in json.dumps(meta)                                              # Round 1 drew from round 0's.
    assert '(2 processes)' in (outdir / 'round-1' / 'bank.log').read_text()              # Banks and tuning: two
    options = next((outdir / 'round-1' / 'train').glob('*/options.json'))                # processes under torchrun.
    assert json.loads(options.read_text())['processes'] == 2
    stamps = {p: os.path.getmtime(p) for p in outdir.rglob('*') if p.is_file() and p.name not in SUMMARY}
    assert CliRunner().invoke(tool.main, args[:6] + args[8:]).exit_code == 0   # One process goes on: nothing redone.
    assert {p: os.path.getmtime(p) for p in stamps} == stamps


def test_the_upfront_run_draws_as_many_seeds_from_the_start_and_tunes_as_long(tmp_path, monkeypatch):
    settings = dict(rounds=4, judgements=150, bank_size=100, kimg=0.4, train_args=['--dpo-steps=30'])
    runs = label_efficiency.arms(settings, [600, 1200])
    assert runs['rounds'] == settings and sorted(runs) == ['rounds', 'upfront-1200', 'upfront-600']
    assert {k: runs['upfront-600'][k] for k in ('rounds', 'judgements', 'bank_size', 'tune_scale')} == \
        dict(rounds=1, judgements=600, bank_size=400, tune_scale=4)
    calls = []
    monkeypatch.setattr(rounds, 'child', lambda args, log: calls.append(args) or (_ for _ in ()).throw(RunError('stop')))
    for flow, scale in ((False, 1), (False, 4), (True, 1), (True, 4)):
        run = rounds.Rounds.__new__(rounds.Rounds)
        run.outdir, run.flow, run.ext, run.launch = str(tmp_path / f'{flow}-{scale}'), flow, '.pt', []
        run.gold_taste = None
        run.s = dict(settings, network='start', seed=0, lambda_r=10.0, tune_scale=scale)
        monkeypatch.setattr(run, 'reward', lambda k: 'reward.safetensors')
        monkeypatch.setattr(run, 'union', lambda k: 'labelled')
        with pytest.raises(RunError, match='stop'):
            run.tune(0)
        steps = [a for a in calls[-1] if a.startswith('--dpo-steps=' if flow else '--kimg=')]
        assert steps == (['--dpo-steps=30'] + [f'--dpo-steps={30 * scale}'] * (scale > 1) if flow else
            [f'--kimg={0.4 * scale:g}'])                          # The last --dpo-steps is the one train.py takes.
        assert flow or '--cpu-bf16=off' in calls[-1]          # EG3D tunes in float32 on any CPU, every session.
    assert rounds.dpo_steps([]) == 80 and rounds.dpo_steps(['--dpo-steps', '7', '--dpo-steps=9']) == 9


def test_runs_sharing_a_draw_cache_draw_the_starts_held_out_samples_once(tmp_path, monkeypatch):
    """label_efficiency's arms share one start: before, each arm drew its held-out samples again (a flow's 128 took
    minutes)."""
    start, other = save_tiny(tmp_path / 'start.pt'), save_tiny(tmp_path / 'other.pt')
    loads, family = [], registry.family_of_file(start)
    counted = types.SimpleNamespace(name=family.name,
        load=lambda path, device: loads.append(path) or family.load(path, device))
    monkeypatch.setattr(rounds.registry, 'family_of_file', lambda path: counted)
    settings, shared = dict(network=start, annotator='oracle:nose', eval_seeds='900-901', res=16), {}
    first = rounds.Rounds(str(tmp_path / 'a'), settings, drawn=shared)
    ids, slabs = first.held_out(start)[2:]
    first.held_out(other)
    second = rounds.Rounds(str(tmp_path / 'b'), settings, drawn=shared)
    again = second.held_out(start)
    assert loads == [start, other] and again[2] == ids and np.array_equal(again[3], slabs)
    rounds.Rounds(str(tmp_path / 'c'), dict(settings, res=24), drawn=shared).held_out(start)      # Another grid.
    assert loads == [start, other, start] and list(shared) == [(start, 24, '900-901')]   # Only what it draws is kept.


def test_each_round_reports_what_else_its_generator_changed_against_the_start(tmp_path):
    start = save_tiny(tmp_path / 'start.pt')
    G = registry.family_of_file(start).load(start, 'cpu')
    grid = slab_grid(32, cube_length=G.cube_length)
    heads, tips = true_slabs(4, grid)
    drawn = {start: heads.numpy(), 'same': heads.numpy(), 'nose': (heads + 40 * bump(grid, tips, 0.03)).numpy()}
    settings = dict(network=start, annotator='oracle:nose', eval_seeds='900-903', res=32)
    for tuned in ('same', 'nose'):                                          # The start itself; a longer nose.
        run = rounds.Rounds(str(tmp_path / tuned), settings)
        run.tune = lambda k, tuned=tuned: tuned
        run.held_out = lambda network: (G, grid, [f'seed{s:06d}' for s in range(900, 904)], drawn[network])
        os.makedirs(run.folder(0))
        found = run.collateral(0)
        assert found['samples'] == 4 and found['trained_taste'] == 'nose'
        assert json.loads((tmp_path / tuned / 'round-0' / 'collateral.json').read_text()) == found
        nose, size = found['tastes']['nose'], found['tastes']['size']
        if tuned == 'same':
            assert all(r['wins'] + r['losses'] == 0 for r in found['tastes'].values()) and found['dents']['deeper'] == 0
        else:                                                               # `nose` likes it less, `size` more.
            assert (nose['wins'], nose['losses'], size['wins'], size['losses']) == (0, 4, 4, 0)
            assert found['truth']['nose_prominence']['change'] > 0.03
        assert 'out of the training range' in rounds.collateral.summary_line(found)
    (tmp_path / 'same' / 'round-0' / 'collateral.json').write_text('{"tastes": 3}')
    with pytest.raises(RunError, match='collateral.json: not the collateral of this round'):
        rounds.Rounds(str(tmp_path / 'same'), settings).collateral(0)


@pytest.mark.parametrize('keep_better, choices, kept', [
    (True, 'aaa', 'previous'),                  # x is the tuned side of seed 0 only: it won 1, lost 2.
    (True, 'bbb', 'tuned'),                     # It won 2, lost 1.
    (True, 'ata', 'previous'),                  # 1 won, 1 lost, a tie: not better.
    (False, 'aaa', 'tuned'),                    # Without --keep-better the verdict is reported only.
])
def test_a_rounds_check_keeps_the_tuned_generator_only_when_it_wins_more_than_it_loses(tmp_path, keep_better, choices,
        kept):
    start = save_tiny(tmp_path / 'start.pt')
    run = rounds.Rounds(str(tmp_path / 'run'), dict(network=start, annotator='oracle:nose', check=3,
        keep_better=keep_better, seed=0))
    sides = {'r0x-seed040000': 'tuned', 'r0y-seed040000': 'previous', 'r0x-seed040001': 'previous',
        'r0y-seed040001': 'tuned', 'r0x-seed040002': 'previous', 'r0y-seed040002': 'tuned'}
    write_bank(run.folder(0, 'check'), {i: np.zeros(slab_grid(16).shape, np.float32) for i in sides}, 16)
    (tmp_path / 'run' / 'round-0' / 'check' / 'sides.json').write_text(json.dumps(sides))
    labels = str(tmp_path / 'run' / 'round-0' / 'check.jsonl')
    preferences.write_judgements(labels, [preferences.Judgement(f'r0x-seed04000{i}', f'r0y-seed04000{i}',
        dict(a='a', b='b', t='tie')[c], 'oracle:nose', '2026-11-29T00:00:00+00:00', dict(noise_free='a'))
        for i, c in enumerate(choices)])
    run.check_bank = lambda k: run.folder(k, 'check')
    run.check_labels = lambda k: labels
    run.tune = lambda k: 'tuned.pt'
    found = run.check(0)
    wins = sum(sides[f'r0{"x" if c == "a" else "y"}-seed04000{i}'] == 'tuned' for i, c in enumerate(choices)
        if c != 't')
    assert found['kept'] == kept and found['labels']['wins'] == wins and found['labels']['ties'] == choices.count('t')
    assert (found['truth']['wins'], found['truth']['losses']) == (1, 2)        # Noise-free: x every time.
    assert run.result(0) == (start if kept == 'previous' else 'tuned.pt') and run.generator(1) == run.result(0)
    assert json.loads((tmp_path / 'run' / 'round-0' / 'check.json').read_text()) == found
    for damage in ('{"kept": "both"}', json.dumps(dict(found, labels=dict(found['labels'], wins='2'))),
            json.dumps({k: v for k, v in found.items() if k != 'truth'})):
        (tmp_path / 'run' / 'round-0' / 'check.json').write_text(damage)
        with pytest.raises(RunError, match='check.json: not the check of this round'):
            run.check(0)
    (tmp_path / 'run' / 'round-0' / 'check.json').unlink()
    other = ball_bank(tmp_path / 'check', 6)[0]                            # Six samples whose sides are not known.
    run.check_bank = lambda k: other
    (tmp_path / 'check' / 'sides.json').write_text(json.dumps(sides))
    with pytest.raises(RunError, match='sides.json: not the side of each sample of the check'):
        run.check(0)
    run.check_bank = lambda k: run.folder(k, 'check')
    preferences.write_judgements(labels, [preferences.Judgement('r0x-seed040000', 'elsewhere', 'a', 'ann',
        preferences.now())])
    with pytest.raises(RunError, match="check.jsonl: not judgements of the check's pairs"):
        run.check(0)


def test_a_checks_reward_view_says_how_often_the_reward_tuned_on_preferred_the_tuned_side(tmp_path):
    start = save_tiny(tmp_path / 'start.pt')
    run = rounds.Rounds(str(tmp_path / 'run'), dict(network=start, annotator='oracle:nose', check=3, seed=0))
    sides = {'r0x-seed040000': 'tuned', 'r0y-seed040000': 'previous', 'r0x-seed040001': 'previous',
        'r0y-seed040001': 'tuned', 'r0x-seed040002': 'previous', 'r0y-seed040002': 'tuned'}
    write_bank(run.folder(0, 'check'), {i: np.zeros(slab_grid(16).shape, np.float32) for i in sides}, 16)
    (tmp_path / 'run' / 'round-0' / 'check' / 'sides.json').write_text(json.dumps(sides))
    labels = str(tmp_path / 'run' / 'round-0' / 'check.jsonl')
    # Labels: x, x, y; noise-free: x every time. Seed 0's tuned side is x, the others' y.
    preferences.write_judgements(labels, [preferences.Judgement(f'r0x-seed04000{i}', f'r0y-seed04000{i}', c,
        'oracle:nose', '2026-11-29T00:00:00+00:00', dict(noise_free='a')) for i, c in enumerate('aab')])
    run.check_bank, run.check_labels, run.tune = (lambda k: run.folder(k, 'check')), (lambda k: labels), \
        (lambda k: 'tuned.pt')
    run.reward = lambda k: 'reward.safetensors'
    # The reward scores the tuned side higher on seeds 0 and 1, the previous one on seed 2.
    scores = {'r0x-seed040000': 2.0, 'r0y-seed040000': 1.0, 'r0x-seed040001': 1.0, 'r0y-seed040001': 3.0,
        'r0x-seed040002': 5.0, 'r0y-seed040002': 4.0}
    asked = []
    run.member_scores = lambda k, path, bank: asked.append((k, path, bank)) or {i: [v] for i, v in scores.items()}
    found = run.check_reward(0)
    assert asked == [(0, 'reward.safetensors', run.folder(0, 'check'))]
    # Reward picks x, y, x; labels a, a, b: agrees on seed 0 only. Noise-free a: agrees on seeds 0 and 2.
    assert found['prefers_tuned'] == pytest.approx(2 / 3) and found['pairs'] == 3
    assert found['accuracy_vs_labels'] == pytest.approx(1 / 3) and found['accuracy_vs_truth'] == pytest.approx(2 / 3)
    assert json.loads((tmp_path / 'run' / 'round-0' / 'check-reward.json').read_text()) == found
    assert run.check_reward(0) == found and len(asked) == 1                  # Read back, not scored again.
    assert rounds.check_line(run.check(0), found).endswith('the reward it was tuned on scored it higher on 67% of the '
        'pairs and agreed with the labels on 33% (noise-free: 67%)')
    for damage in ({'prefers_tuned': 1.5}, {'prefers_tuned': '1'}, {'accuracy_vs_labels': -0.1}, {'pairs': None}):
        (tmp_path / 'run' / 'round-0' / 'check-reward.json').write_text(json.dumps(dict(found, **damage)))
        with pytest.raises(RunError, match="check-reward.json: not the reward's view of the check pairs"):
            run.check_reward(0)
    assert rounds.Rounds(str(tmp_path / 'other'), dict(network=start, annotator='oracle:nose', seed=0)).check_reward(
        0) is None                                                          # No check, no view of it.


def test_a_rounds_proxy_and_gold_come_from_its_fine_tunings_panel_and_chain_across_rounds(start_pkl, tmp_path):
    run = rounds.Rounds(str(tmp_path / 'run'), dict(network=start_pkl, annotator='oracle:nose'))
    scale = dict(proxy=0.5, gold=2.0, samples=3)
    reports = {0: dict(kimg=[0.0, 0.1, 0.2], gain=[0.0, 0.4, 0.9], gold=[1.0, 2.0, 3.0]),
        1: dict(kimg=[0.0, 0.1, 0.2], gain=[0.0, 0.3, 0.5], gold=[3.0, 2.0, 0.0])}
    for k, r in reports.items():
        folder = tmp_path / 'run' / f'round-{k}' / 'train' / '00000-run'
        folder.mkdir(parents=True)
        (folder / 'reward_report.json').write_text(json.dumps(dict(proxy_gold=dict(proxy_gain=r['gain'], rows=dict(
            kimg=r['kimg'], gold=r['gold'], proxy=[0.0] * 3, scale=scale)))))
    found = [run.proxy_gold(k) for k in (0, 1)]
    assert found[0] == dict(kimg=[0.0, 0.1, 0.2], proxy_gain=[0.0, 0.4, 0.9], gold=[1.0, 2.0, 3.0], gold_scale=2.0)
    # Gold since round 0's start, in its sd: round 1 starts where round 0 ended (+1.0) and falls to -0.5.
    assert rounds.gold_since(found[1], found[0]).tolist() == [1.0, 0.5, -0.5]
    assert rounds.proxy_gold_line(found[1], found[0]) == ('proxy +0.50 sd of the round\'s start; panel gold +1.00 -> '
        '-0.50 sd since round 0\'s start, its best +1.00 at 0 kimg')
    summary = dict(rounds=[dict(round=k, proxy_gold=found[k], check=dict(kept='previous', truth=None,
        labels=dict(wins=1, losses=2, ties=0, win_rate=1 / 3)) if k else None,
        before_refit=None, judgements=10, active=0, gold=None, collateral=None) for k in (0, 1)])
    rounds.plot_proxy_gold(summary, str(tmp_path / 'pg.png'), 'nose')
    assert (tmp_path / 'pg.png').stat().st_size > 1000
    assert '- round 1: proxy +0.50 sd of the round\'s start; panel gold' in rounds.describe(summary)
    # A run that scored no gold: the proxy alone. A report that is not what train.py writes: refused in one line.
    path = tmp_path / 'run' / 'round-1' / 'train' / '00000-run' / 'reward_report.json'
    path.write_text(json.dumps(dict(proxy_gold=dict(proxy_gain=[0.0, 0.2], rows=dict(kimg=[0.0, 0.1], gold=[None,
        None], scale=dict(proxy=1.0))))))
    assert run.proxy_gold(1) == dict(kimg=[0.0, 0.1], proxy_gain=[0.0, 0.2], gold=None, gold_scale=None)
    assert rounds.proxy_gold_line(run.proxy_gold(1), found[0]) == 'proxy +0.20 sd of the round\'s start'
    for damage in (dict(proxy_gain=[0.0], rows=dict(kimg=[0.0, 0.1], gold=[1.0, 2.0])),
            dict(proxy_gain=[0.0, 'x'], rows=dict(kimg=[0.0, 0.1], gold=[1.0, 2.0])), dict(proxy_gain=[], rows={}),
            dict(proxy_gain=[0.0], rows=[1]), [1, 2]):
        path.write_text(json.dumps(dict(proxy_gold=damage)))
        with pytest.raises(RunError, match="reward_report.json: not a fine-tuning report with the panel's proxy"):
            run.proxy_gold(1)
    path.write_text(json.dumps(dict(seeds=3)))                              # Run with no panel: nothing to show.
    assert run.proxy_gold(1) is None and run.proxy_gold(2) is None


def test_a_known_gold_taste_is_scored_on_the_panel_unless_the_panel_is_off(start_pkl, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(rounds, 'child', lambda args, log: calls.append(args))
    for train_args, want in (([], ['--gold-taste=nose']), (['--panel-seeds', 'none'], []),
            (['--panel-seeds=none'], []), (['--panel-seeds', ' None'], [])):
        run = rounds.Rounds(str(tmp_path / f'run{len(calls)}'), dict(network=start_pkl,
            annotator='oracle:nose', lambda_r=10.0, kimg=0.1, seed=0, train_args=train_args))
        run.reward = lambda k: 'reward.safetensors'
        with pytest.raises(FileNotFoundError):                              # No run folder: the child was faked.
            run.tune(0)
        assert [a for a in calls[-1] if a.startswith('--gold-taste')] == want


def test_a_checks_sides_do_not_follow_the_simulated_annotators_noise(tmp_path):
    """Before, the sides and the annotator's noise were drawn from one seed: the noise favoured x where x was the
    previous generator's side, so between equal samples the previous generator won every pair."""
    start = save_tiny(tmp_path / 'start.pt')
    run = rounds.Rounds(str(tmp_path / 'run'), dict(network=start, annotator='oracle:nose', check=40,
        keep_better=True, seed=3, temperature=0.5))
    ids = [f'seed{40000 + i:06d}' for i in range(40)]
    sides = run.sides(0, ids)
    assert 5 < sum(sides[f'r0x-{i}'] == 'tuned' for i in ids) < 35
    ball = ball_bank(tmp_path / 'ball', 1)[0]                               # One head: every pair is a tie of taste.
    slab = np.load(os.path.join(ball, 'ball00', 'sigma_slab.npy'))
    write_bank(run.folder(0, 'check'), {name: slab for name in sides}, 40)
    rounds.write_json(run.folder(0, 'check', 'sides.json'), sides)
    start_bank = ball_bank(tmp_path / 'start-bank', 6)[0]                  # Round 0's bank: the taste's scale.
    run.bank, run.check_bank = (lambda k: start_bank), (lambda k: run.folder(k, 'check'))
    found = run.check(0)
    assert found['truth']['ties'] == 40 and 8 < found['labels']['wins'] < 32, found['labels']


def test_a_flows_check_takes_its_pairs_seed_by_seed_under_every_condition():
    ids = [f'r2{side}-c{c:02d}-seed{s:06d}' for side in 'xy' for c in range(2) for s in (40006, 40007)]
    assert rounds.check_pairs(ids, 2, 3) == [('r2x-c00-seed040006', 'r2y-c00-seed040006'),
        ('r2x-c01-seed040006', 'r2y-c01-seed040006'), ('r2x-c00-seed040007', 'r2y-c00-seed040007')]
    assert rounds.check_pairs([f'r0{side}-seed{s:06d}' for side in 'yx' for s in (2, 1)], 0, 5) == \
        [('r0x-seed000001', 'r0y-seed000001'), ('r0x-seed000002', 'r0y-seed000002')]
    pairs = rounds.check_pairs(ids, 2, 4)                                  # People's spares: x and y, two seeds,
    spares = rounds.check_spares(ids, 2, pairs, np.random.RandomState(0))  # one condition.
    assert len(spares) == 4 and {tuple(sorted(p)) for p in spares} == {('r2x-c00-seed040006', 'r2y-c00-seed040007'),
        ('r2x-c00-seed040007', 'r2y-c00-seed040006'), ('r2x-c01-seed040006', 'r2y-c01-seed040007'),
        ('r2x-c01-seed040007', 'r2y-c01-seed040006')}                     # Every such pair, none twice.


@pytest.mark.parametrize('window, rounds_in', [(0, [0, 1, 2]), (2, [1, 2]), (1, [2])])
def test_a_window_refits_on_the_last_rounds_labels_and_checks_only(tmp_path, window, rounds_in):
    run = rounds.Rounds.__new__(rounds.Rounds)
    run.outdir, run.s = str(tmp_path / 'run'), dict(check=1, window=window)
    slab = lambda: np.zeros(slab_grid(16).shape, np.float32)
    for k in range(3):
        ids = [f'seed{20000 + 2 * k + i:06d}' for i in (0, 1)]
        write_bank(run.folder(k, 'bank'), {i: slab() for i in ids}, 16)
        write_bank(run.folder(k, 'check'), {f'r{k}{c}-seed{40000 + k:06d}': slab() for c in 'xy'}, 16)
        judge = lambda a, b: [preferences.Judgement(a, b, 'a', 'ann', preferences.now())]
        preferences.write_judgements(run.folder(k, 'labels.jsonl'), judge(*ids))
        preferences.write_judgements(run.folder(k, 'check.jsonl'), judge(f'r{k}x-seed{40000 + k:06d}',
            f'r{k}y-seed{40000 + k:06d}'))
    (tmp_path / 'run' / 'round-0' / 'bank' / 'bank.json').write_text('{}')
    run.bank, run.labels = (lambda k: run.folder(k, 'bank')), (lambda k: run.folder(k, 'labels.jsonl'))
    run.check_bank, run.check_labels = (lambda k: run.folder(k, 'check')), (lambda k: run.folder(k, 'check.jsonl'))
    union = run.union(2)
    want = [f'seed{20000 + 2 * k + i:06d}' for k in rounds_in for i in (0, 1)]
    want += [f'r{k}{c}-seed{40000 + k:06d}' for k in rounds_in[:-1] for c in 'xy']     # Round 2's check comes after.
    assert sorted(os.listdir(union)) == sorted(want + ['bank.json', 'labels.jsonl'])
    judged = [(j.a, j.b) for j in preferences.load_judgements(os.path.join(union, 'labels.jsonl'))]
    assert sorted(judged) == sorted([tuple(want[2 * i:2 * i + 2]) for i in range(len(want) // 2)])


def fake_gold(scores, ids):
    return dict(gain_sd=float(np.mean(scores)), win_rate=float(np.mean(np.array(scores) > 0)), ids=ids, scores=scores)


def test_the_comparison_pairs_each_held_out_id_and_tests_across_training_seeds(tmp_path, monkeypatch):
    ids = [f'c{c:02d}-seed{s:06d}' for c in range(2) for s in range(900, 904)]
    scores = {                                                  # (seed, run) -> gold scores of the last generator.
        (1, 'rounds'): [2.0] * 8, (1, 'upfront-60'): [1.0] * 6 + [3.0, 2.0],
        (2, 'rounds'): [1.5] * 8, (2, 'upfront-60'): [1.0] * 8,
        (3, 'rounds'): [1.0] * 8, (3, 'upfront-60'): [0.5] * 7 + [1.0]}
    for (seed, run), s in list(scores.items()):
        scores[seed, 'upfront-90'] = [x + 0.6 for x in s] if run == 'upfront-60' else None
    scores = {k: v for k, v in scores.items() if v is not None}

    banks, caches = [], []

    class FakeRounds:                                           # The runs' gold, and a start bank where none is.
        def __init__(self, folder, s, nproc, drawn):
            self.s, bank = s, os.path.join(folder, 'round-0', 'bank')
            caches.append(drawn)
            if not os.path.isdir(bank):
                os.makedirs(bank)
                with open(os.path.join(bank, 'bank.json'), 'w', encoding='utf-8') as f:
                    f.write(str(s['bank_size']))
                banks.append(s['bank_size'])
        def run(self):
            name = 'rounds' if self.s.get('tune_scale') is None else f'upfront-{self.s["judgements"]}'
            judged = self.s['rounds'] * self.s['judgements']
            last = dict(judgements=judged, gold=fake_gold(scores[self.s['seed'], name], ids))
            if name == 'rounds' and self.s['seed'] in (1, 2):   # Seed 2's runs were made before check-reward.json.
                last.update(check=dict(kept='previous', labels=dict(win_rate=0.25)), check_reward=None if
                    self.s['seed'] == 2 else dict(prefers_tuned=0.875))
            return dict(rounds=[last])
    monkeypatch.setattr(rounds, 'Rounds', FakeRounds)
    settings = dict(rounds=2, judgements=30, bank_size=6, kimg=0.4, annotator='oracle:nose', gold_taste=None,
        eval_seeds='900-903', train_args=[])
    lines = []
    summary = label_efficiency.run(str(tmp_path), settings, [1, 2, 3], [60, 90], progress=lines.append)
    first = summary['replication']['contrasts'][0]
    assert [c['contrast'] for c in summary['replication']['contrasts']] == ['rounds vs upfront-60', 'rounds vs upfront-90']
    assert [s['effect'] for s in first['seeds']] == [6.5 / 8, 1.0, 7.5 / 8]   # Seed 1: 6 wins, a loss, a tie.
    assert first['across']['above'] == 3 and summary['mean_gain_sd']['rounds'] == pytest.approx(1.5)
    assert summary['mean_gain_sd']['upfront-60'] < 1.5 <= summary['mean_gain_sd']['upfront-90'] and summary['matched'] == 90
    assert len(lines) == 9 and 'matched the rounds\' mean gold gain with 90 judgements (1.5x' in \
        (tmp_path / 'label-efficiency.md').read_text()
    assert (tmp_path / 'label-efficiency.png').stat().st_size > 1000
    md = (tmp_path / 'label-efficiency.md').read_text()
    assert '- seed 1, rounds: the rounds\' checks kept previous; the tuned side preferred by the reward it was tuned ' \
        'on / by the labels: 88% / 25%\n' in md and '- seed 2, rounds: the rounds\' checks kept previous\n' in md
    assert '- seed 3, rounds: the' not in md                    # No check.
    assert json.loads((tmp_path / 'label-efficiency.json').read_text())['matched'] == 90
    assert (tmp_path / 'label-efficiency-replication.md').is_file()
    assert banks == [6, 12]                                     # One start bank per size, linked into the other runs.
    assert len(caches) == 9 and all(c is caches[0] for c in caches)   # One held-out draw of the start for all runs.
    for seed in (1, 2, 3):
        for run, size in (('rounds', 6), ('upfront-60', 12), ('upfront-90', 12)):
            assert (tmp_path / f'seed-{seed}' / run / 'round-0' / 'bank' / 'bank.json').read_text() == str(size)
    with pytest.raises(RunError, match='other settings'):                # The folder keeps its comparison's settings.
        label_efficiency.run(str(tmp_path), dict(settings, judgements=40), [1, 2, 3], [60, 90], progress=lines.append)
    # More training seeds join the comparison: the runs of seeds 1-3 are kept, seed 4's are made.
    scores.update({(4, 'rounds'): [2.0] * 8, (4, 'upfront-60'): [1.0] * 8, (4, 'upfront-90'): [1.0] * 8})
    more = label_efficiency.run(str(tmp_path), settings, [1, 2, 3, 4], [60, 90], progress=lines.append)
    assert more['replication']['contrasts'][0]['across']['above'] == 4 and banks == [6, 12]
    assert json.loads((tmp_path / 'settings.json').read_text())['train_seeds'] == [1, 2, 3, 4]
    scores[2, 'upfront-60'] = scores[2, 'upfront-60'][:7]
    with pytest.raises(RunError, match='other held-out ids'):
        label_efficiency.run(str(tmp_path), settings, [1, 2, 3], [60, 90], progress=lines.append)


def test_the_refit_takes_the_first_split_seed_that_leaves_validation_pairs(tmp_path):
    folder, _ = ball_bank(tmp_path / 'union', 12)
    pairs = list(itertools.islice(random_pairs(sorted(os.listdir(folder))[:-1], np.random.RandomState(2)), 20))
    assert all(p[0].startswith('ball') for p in pairs)
    preferences.write_judgements(str(tmp_path / 'union' / 'labels.jsonl'),
        [preferences.Judgement(a, b, 'a', 'sim', preferences.now()) for a, b in pairs])
    usable = []
    for seed in range(5):
        try:
            preferences.training_labels(sorted(p for p in os.listdir(folder) if p.startswith('ball')), rounds.SPLIT,
                seed=seed, labels_path=str(tmp_path / 'union' / 'labels.jsonl'))
            usable.append(seed)
        except preferences.LabelError:
            pass
    assert usable[0] > 0 and rounds.split_seed(str(folder)) == usable[0]      # Seed 0 leaves no validation pair.
