"""Mirroring chosen on validation (rewards/fitting.py): plain for a taste about sides, mirrored where it helps, overrides."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.data import annotators, preferences
from eg3d_rlhf.data.scores import write_scores
from eg3d_rlhf.geometry.sigma import slab_grid
from eg3d_rlhf.rewards import fitting, linear_heads
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward
from tests.helpers.banks import RES, balls_volume, slab_description, write_bank
from tools import train_reward

pytestmark = pytest.mark.usefixtures('one_thread')

LIGHT = dict(levels=[10.0], cells=[2, 2, 2], mesh_levels=[], members=2)        # The levels trunk, small and quick.

#----------------------------------------------------------------------------
# A taste about sides: balls of one size along x, the further left (lower x) the better. A mirrored pair says the
# mirror image of the winner, now on the right, wins too, so mirrored copies contradict every judgement.

@pytest.fixture(scope='module')
def sides(tmp_path_factory):
    folder = tmp_path_factory.mktemp('sides')
    xs = np.random.RandomState(0).permutation(np.linspace(-0.12, 0.12, 60))
    leftness = {f'ball{i:02d}': float(-x) for i, x in enumerate(xs)}
    g = slab_grid(RES)
    root = write_bank(folder / 'bank', {k: balls_volume(g, [((-v, 0.02, 0.15), 0.07)]) for k, v in leftness.items()}, RES)
    oracle = annotators.OracleAnnotator('symmetric', leftness, temperature=0, seed=0)
    preferences.write_judgements(str(folder / 'labels.jsonl'), oracle.judgements(oracle.draw_pairs(leftness, 1200)))
    write_scores(str(folder / 'truth.csv'), leftness)
    return dict(bank=root, labels=str(folder / 'labels.jsonl'), truth=str(folder / 'truth.csv'), folder=folder)


def train(sides, out, *args):
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', sides['bank'], '--labels', sides['labels'],
        '--truth', sides['truth'], '--split', '0.5,0.25,0.25', '--out', str(out), *[str(a) for a in args]])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result, json.loads(out.with_suffix('.report.json').read_text())


def test_auto_fits_plain_pairs_for_a_taste_about_sides_and_records_why(sides, tmp_path):
    result, report = train(sides, tmp_path / 'auto.pt', '--model-config', json.dumps(LIGHT))
    choice = report['mirror']
    val = choice['validation']
    assert choice['setting'] == 'auto' and choice['chosen'] is False and report['options']['mirror'] is None
    assert val['plain']['accuracy'] >= 0.9 > 0.7 > val['mirrored']['accuracy']          # Mirroring forbids the answer.
    assert val['plain']['split_accuracy'] >= 0.9 > 0.7 > val['mirrored']['split_accuracy']
    assert val['plain']['split_pairs'] == val['mirrored']['split_pairs'] == report['counts']['val'] > 20
    oob = val['plain']['oob_pairs']                                 # Training pairs some bootstrap member left out.
    assert 0.2 * report['counts']['train'] < oob < report['counts']['train'] and val['plain']['pairs'] == oob + report['counts']['val']
    pooled = (val['plain']['split_accuracy'] * report['counts']['val'] + val['plain']['oob_accuracy'] * oob) / (oob + report['counts']['val'])
    assert val['plain']['accuracy'] == pytest.approx(pooled)
    line = (f'mirroring off (auto: accuracy {100 * val["mirrored"]["accuracy"]:.1f}% mirrored vs '
        f'{100 * val["plain"]["accuracy"]:.1f}% plain on {report["counts"]["val"]} validation + {oob} out-of-bag pairs)')
    assert line in result.output and 'trains the sigma reward twice' not in result.output    # Heads: no second training.
    assert load_reward(str(tmp_path / 'auto.pt')).info['training']['mirror'] == choice        # In the checkpoint too.
    records = [json.loads(r) for r in (tmp_path / 'auto.metrics.jsonl').read_text().splitlines()]
    grid = len(fitting.FitOptions().l2)
    assert [r['mirror'] for r in records] == [True] * grid + [False] * grid                 # Both ways, tagged.
    assert report['heads']['chosen']['val_accuracy'] == val['plain']['split_accuracy']     # The plain fit was kept.
    assert report['held_out']['test_truth']['accuracy'] >= 0.9

    _, plain = train(sides, tmp_path / 'plain.pt', '--model-config', json.dumps(LIGHT), '--no-mirror')
    _, mirrored = train(sides, tmp_path / 'mirrored.pt', '--model-config', json.dumps(LIGHT), '--mirror')
    assert plain['mirror']['setting'] == 'off' and plain['mirror']['why'] == 'set by --no-mirror'
    assert mirrored['mirror'] == dict(setting='on', chosen=True, why='set by --mirror',
        validation=dict(mirrored=val['mirrored']))                                          # One fit, the forced one.
    assert plain['held_out'] == report['held_out'] and plain['heads'] == report['heads']    # Auto is that fit.
    assert mirrored['held_out']['test_truth']['accuracy'] < 0.75
    assert 'mirror' not in json.loads((tmp_path / 'plain.metrics.jsonl').read_text().splitlines()[0])

#----------------------------------------------------------------------------
# Where mirroring helps: every training ball lies left of the middle, every validation and test ball right of it, the
# taste is size. A trunk of one cell per side (no whole-slab averages) sees right-hand balls only in mirrored copies.

class OneCellPerSide(SigmaReward):
    """The levels trunk without its whole-slab averages (zeroed): every feature belongs to one half of the slab."""

    def trunk_features(self, x):
        f = super().trunk_features(x)
        whole = len(self.level_sets.levels) * 10                     # The last columns: means over the whole slab.
        return torch.cat([f[:, :-whole], torch.zeros_like(f[:, -whole:])], dim=1)


@pytest.fixture(scope='module')
def halves():
    g, radii = slab_grid(RES), np.linspace(0.03, 0.06, 12)       # Density >= -10 within 0.05 of the surface: none
    slabs = {f'left{i:02d}': balls_volume(g, [((-0.14, 0.02, 0.15), r)]) for i, r in enumerate(radii)}    # on the
    slabs.update({f'right{i:02d}': balls_volume(g, [((0.14, 0.02, 0.15), r)]) for i, r in enumerate(radii)})  # other side.
    spec = SigmaReward.default_input(slab_description(RES), {})
    data = torch.stack([torch.as_tensor(spec.prepare(v[None])[0]) for v in slabs.values()]).half()
    inputs = fitting.PreparedInputs({k: i for i, k in enumerate(slabs)}, data, spec)
    size = {k: i for k in slabs for i in [int(k[-2:])]}
    by_size = lambda ids: [(a, b) if size[a] > size[b] else (b, a) for i, a in enumerate(ids) for b in ids[i + 1:]]
    left, right = sorted(k for k in slabs if k.startswith('left')), sorted(k for k in slabs if k.startswith('right'))
    return inputs, left, by_size(left), by_size(right)


def fit_halves(halves, mirror):
    inputs, left, train_pairs, val_pairs = halves
    model = OneCellPerSide(levels=(10.0,), cells=(2, 1, 1), mesh_levels=(), members=2)
    report = fitting.train_model(model, inputs, left, dict(pairs=train_pairs, ties=[]), val_pairs,
        fitting.FitOptions(mirror=mirror, l2=(1.0, 10.0)), progress=False)
    return model, report


def test_auto_keeps_mirroring_where_only_mirrored_copies_reach_the_validation_samples(halves):
    inputs, _, _, val_pairs = halves
    model, report = fit_halves(halves, None)
    val = report['mirror']['validation']
    assert report['mirror']['chosen'] is True and val['mirrored']['accuracy'] > val['plain']['accuracy']
    assert val['mirrored']['split_accuracy'] == 1.0 > 0.5 > val['plain']['split_accuracy']
    right = sorted({x for p in val_pairs for x in p})
    scores = dict(zip(right, fitting.member_scores(model, inputs, right).mean(axis=1)))
    assert fitting.pairwise_accuracy(scores, val_pairs) == (len(val_pairs), len(val_pairs))    # The mirrored fit kept.
    _, plain = fit_halves(halves, False)                                              # The override holds even here.
    assert plain['mirror'] == dict(setting='off', chosen=False, why='set by --no-mirror',
        validation=dict(plain=val['plain']))


def test_choose_mirror_breaks_ties_towards_mirroring_and_needs_validation_pairs():
    auto, v = fitting.FitOptions(), lambda a: dict(accuracy=a, nll=0.5, pairs=40)
    tie = fitting.choose_mirror(auto, {True: v(0.8), False: v(0.8)})
    assert tie['chosen'] is True and 'a tie goes to mirroring' in tie['why']
    assert fitting.choose_mirror(auto, {True: v(0.8), False: v(0.825)})['chosen'] is False
    assert fitting.choose_mirror(auto, {True: v(float('nan')), False: v(0.6)})['chosen'] is False
    assert fitting.mirror_candidates(auto, [('a', 'b')]) == [True, False] and fitting.mirror_candidates(auto, []) == [True]
    assert fitting.mirror_candidates(fitting.FitOptions(mirror=False), [('a', 'b')]) == [False]
    alone = fitting.choose_mirror(auto, {True: v(float('nan'))})
    assert alone['chosen'] is True and 'without validation pairs' in alone['why']

def test_out_of_bag_scores_each_pair_by_the_members_that_did_not_draw_it():
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])        # Three pairs' margins, two features.
    W = torch.tensor([[9.0, 9.0], [1.0, -2.0], [3.0, 1.0]])       # Member 0 (draws all), 1 and 2.
    counts = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    oob = linear_heads.out_of_bag(W, d, counts)                      # Pair 0: members 1, 2 -> (1 + 3) / 2 = 2 > 0;
    assert oob['pairs'] == 3 and oob['accuracy'] == pytest.approx(2 / 3)   # pair 1: 2 -> 1 > 0; pair 2: 1 -> -1.
    m = torch.tensor([2.0, 1.0, -1.0])
    assert oob['nll'] == pytest.approx(float(torch.nn.functional.softplus(-m).mean()))
    assert linear_heads.out_of_bag(W, d, torch.ones(3, 3))['pairs'] == 0

#----------------------------------------------------------------------------
# A model that learns by epochs trains twice under auto, says so, and keeps the fit it chose.

def test_auto_trains_an_epoch_model_twice_and_keeps_the_chosen_run(balls, tmp_path, tiny_models):
    def run(name, *args):
        result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', balls['bank'], '--labels',
            balls['labels'], '--truth', balls['truth'], '--epochs', 2, '--batch', 32, '--out', str(tmp_path / f'{name}.pt'),
            *[str(a) for a in args]])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output, json.loads((tmp_path / f'{name}.report.json').read_text())
    output, auto = run('auto')
    assert 'mirroring: auto trains the sigma reward twice' in output
    records = [json.loads(r) for r in (tmp_path / 'auto.metrics.jsonl').read_text().splitlines()]
    mirrored, plain = ([r for r in records if r['mirror'] is m and 'loss' in r] for m in (True, False))
    assert mirrored and plain and mirrored[-1]['step'] < plain[0]['step']            # One step count across both runs.
    chosen = auto['mirror']['chosen']
    _, fixed = run('fixed', '--mirror' if chosen else '--no-mirror')
    assert fixed['held_out'] == auto['held_out'] and fixed['val_accuracy'] == auto['val_accuracy']
    val = auto['mirror']['validation']
    assert val['mirrored' if chosen else 'plain']['accuracy'] == max(auto['val_accuracy'])
    assert (val['mirrored']['accuracy'] >= val['plain']['accuracy']) == chosen

#----------------------------------------------------------------------------
