"""Reward training on banks of analytic balls: held-out measures, RewardFitter, checkpoints, train_reward.py, score_bank.py."""

import copy
import json
import math
import os
import statistics

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.data import annotators, preferences
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.scores import read_scores
from eg3d_rlhf.geometry.sigma import normalise_sigma_self
from eg3d_rlhf.rewards import build_reward, losses
from eg3d_rlhf.rewards import fitting as R
from eg3d_rlhf.rewards.checkpoint import FORMAT, RewardCheckpointError, load_reward, save_reward
from eg3d_rlhf.rewards.contract import InputSpec
from eg3d_rlhf.rewards.sigma_cnn import SigmaReward
from tests.helpers.banks import RES, ball_bank, slab_description
from tests.helpers.cli import digest, files_under, refused_in_one_line, tool
from tests.helpers.rewards import TINY, tiny_sigma
from tools import score_bank, train_reward

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------
# Held-out measures.

@pytest.mark.parametrize('correct, total, confidence', [(8, 10, 0.95), (0, 5, 0.95), (10, 10, 0.95), (37, 60, 0.9)])
def test_wilson_interval_matches_the_formula(correct, total, confidence):
    z = statistics.NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    lo, hi = R.wilson_interval(correct, total, confidence)
    assert lo == pytest.approx(max(centre - half, 0), abs=1e-9) and hi == pytest.approx(min(centre + half, 1), abs=1e-9)


def test_wilson_interval_of_nothing_and_of_eight_in_ten():
    assert R.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = R.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)   # By hand, z = 1.96.


def test_pairwise_accuracy_counts_model_ties_as_wrong():
    scores = dict(a=1.0, b=1.0, c=2.0, d=0.5)
    assert R.pairwise_accuracy(scores, [('c', 'a'), ('a', 'b'), ('b', 'c'), ('a', 'd')]) == (2, 4)
    assert R.pairwise_accuracy(scores, []) == (0, 0)


def test_all_pairs_by_truth():
    truth = dict(a=1.0, b=3.0, c=3.0, d=0.0, e=2.0)
    pairs = R.all_pairs_by_truth(truth, ['d', 'c', 'b', 'a'])
    assert sorted(pairs) == sorted([('b', 'a'), ('c', 'a'), ('a', 'd'), ('b', 'd'), ('c', 'd')])   # b = c: no pair.
    assert all(truth[w] > truth[l] for w, l in pairs)


def test_trl_metrics():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, -1.0])
    m = R.trl_metrics(torch.tensor(0.25), chosen, rejected)
    assert m == pytest.approx({'loss': 0.25, 'rewards/chosen': 1.0, 'rewards/rejected': 1 / 3,
        'rewards/accuracies': 2 / 3, 'rewards/margins': 2 / 3})
    m = R.trl_metrics(torch.tensor(1.0), chosen, rejected[1:])             # Unpaired: no accuracies.
    assert set(m) == {'loss', 'rewards/chosen', 'rewards/rejected', 'rewards/margins'}
    assert m['rewards/rejected'] == 0 and m['rewards/margins'] == pytest.approx(1.0)
    assert R.trl_metrics(torch.tensor(0.5), chosen[:0], rejected[:0]) == {'loss': 0.5}

#----------------------------------------------------------------------------
# RewardFitter on 24 balls whose liked property is the radius.

@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root, radii = ball_bank(tmp_path_factory.mktemp('toy') / 'bank', 24)
    bank = Bank(root)
    return bank, radii, R.prepared_inputs(bank, bank.ids, InputSpec(slab=bank.meta(bank.ids[0])['slab']), progress=False)


def test_prepared_inputs_of_the_default_spec_are_self_normalised(toy):
    bank, _, inputs = toy
    assert inputs.data.shape == (24, 20, 22, 20) and inputs.data.dtype == torch.float16 and list(inputs.index) == bank.ids
    x = inputs.batch(['ball05'])[0]
    assert x.dtype == torch.float32 and x.min() == 0 and x.max() == 100 and inputs.x_axis == 1
    assert torch.allclose(x, torch.from_numpy(normalise_sigma_self(bank.slab('ball05'))), atol=0.05)
    assert torch.allclose(inputs.mean(['ball05', 'ball06']), inputs.batch(['ball05', 'ball06']).mean(0), atol=1e-4)


def test_fit_learns_the_preference_and_logs_trl_metrics(toy):
    bank, radii, inputs = toy
    train_ids, val_ids = bank.ids[:16], bank.ids[16:]
    records = []
    fitter = R.RewardFitter(tiny_sigma(), inputs, R.FitOptions(epochs=6, lr=3e-3), log=records.append)
    truth = dict(radii)
    before = R.pairwise_accuracy(fitter.scores(val_ids), R.all_pairs_by_truth(truth, val_ids))
    if before[0] > before[1] / 2:                   # Prefer whichever size the untrained model ranks lower.
        truth = {k: -v for k, v in truth.items()}
    val_pairs = R.all_pairs_by_truth(truth, val_ids)
    before = R.pairwise_accuracy(fitter.scores(val_ids), val_pairs)
    history = fitter.fit(dict(pairs=R.all_pairs_by_truth(truth, train_ids), ties=[]), val_pairs, progress=False)
    after = R.pairwise_accuracy(fitter.scores(val_ids), val_pairs)
    assert before[0] / before[1] <= 0.5 and after[0] / after[1] >= 0.9 and after[0] / after[1] == max(history)
    assert len(records) == 2 * len(history)
    keys = {'loss', 'rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins'}
    assert set(records[0]) == {'epoch', 'step'} | keys and records[0]['step'] == math.ceil(120 / 16)
    assert set(records[1]) == {'epoch', 'step'} | {'eval_' + k for k in keys}
    assert [r['eval_rewards/accuracies'] for r in records[1::2]] == pytest.approx(history)


def test_fit_keeps_the_best_epoch_and_stops_early(toy, monkeypatch):
    bank, radii, inputs = toy
    fitter = R.RewardFitter(tiny_sigma(), inputs, R.FitOptions(epochs=10, patience=2, lr=1e-2))
    scripted, states = iter([0.5, 0.9, 0.6, 0.9, 0.7]), []

    def evaluate(pairs, ids, epoch):
        states.append({k: v.clone() for k, v in fitter.model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(fitter, 'evaluate', evaluate)
    train = dict(pairs=R.all_pairs_by_truth(radii, bank.ids[:8]), ties=[])
    history = fitter.fit(train, [], progress=False)
    assert history == [0.5, 0.9, 0.6, 0.9]                                  # Two epochs without a better one: stop.
    assert not torch.equal(states[1]['head.2.weight'], states[3]['head.2.weight'])
    assert all(torch.equal(v, states[1][k]) for k, v in fitter.model.state_dict().items())   # The first 0.9.


def test_ties_are_modelled_or_dropped(toy):
    bank, radii, inputs = toy
    pairs = R.all_pairs_by_truth(radii, bank.ids[:6])                       # 15 pairs.
    ties = [(bank.ids[6], bank.ids[7]), (bank.ids[8], bank.ids[9])]
    train = dict(pairs=pairs, ties=ties)
    results = {}
    for mode in ('drop', 'model'):
        fitter = R.RewardFitter(tiny_sigma(), inputs, R.FitOptions(ties=mode, batch=4, mirror=False, epochs=2))
        batches = fitter.train_batches(train)
        kinds = [k for batch in batches for k, _ in batch]
        assert kinds.count('pair') == 15 and kinds.count('tie') == (2 if mode == 'model' else 0)
        assert len(batches) == math.ceil(len(kinds) / 4)
        fitter.model.eval()
        loss, metrics = fitter.pair_loss(pairs[:3], ties)
        results[mode] = loss.item()
        assert metrics['loss'] == pytest.approx(loss.item())
        history = fitter.fit(train, pairs[:5], progress=False)
        assert len(history) == 2
    r = tiny_sigma().eval().score(inputs.batch(bank.ids[:10]))
    at = {x: i for i, x in enumerate(bank.ids[:10])}
    rw = torch.stack([r[at[w]] for w, _ in pairs[:3]] + [r[at[a]] for a, _ in ties])
    rl = torch.stack([r[at[l]] for _, l in pairs[:3]] + [r[at[b]] for _, b in ties])
    assert results['model'] == pytest.approx(losses.bradley_terry_ties(rw, rl, torch.tensor([False] * 3 + [True] * 2)).item(), rel=1e-4)
    assert results['drop'] == pytest.approx(losses.bradley_terry(rw[:3], rl[:3]).item(), rel=1e-4)


def test_unpaired_labels_train_in_balanced_batches(toy):
    bank, radii, inputs = toy
    median = np.median(list(radii.values()))
    labels = {k: int(radii[k] > median) for k in bank.ids[:16]}
    records = []
    fitter = R.RewardFitter(tiny_sigma(), inputs, R.FitOptions(epochs=2, batch=6, lr=3e-3), log=records.append)
    batches = fitter.train_batches(dict(labels=labels))
    good = sum(labels.values())
    assert len(batches) == min(good, 16 - good) // 3
    assert all(len(b) == 6 and sum(labels[x] for x in b) == 3 for b in batches)
    val = bank.ids[16:]
    val_pairs = [(g, b) for g in val for b in val if radii[g] > median >= radii[b]]
    history = fitter.fit(dict(labels=labels), val_pairs, progress=False)
    assert len(history) == 2 and all(0 <= h <= 1 for h in history)
    assert np.isfinite(records[0]['loss']) and 'rewards/accuracies' in records[0]

#----------------------------------------------------------------------------
# Checkpoints.

class NotAReward:
    """Any pickled object that weights_only loading refuses."""


def test_checkpoint_round_trip_gives_identical_scores(toy, tmp_path):
    bank, _, inputs = toy
    model = tiny_sigma(seed=3).eval()
    path = str(tmp_path / 'r.pt')
    slab = bank.meta(bank.ids[0])['slab']
    save_reward(path, model, 'sigma', slab, training=dict(note='test', accuracy=0.5))
    reward = load_reward(path)
    x = inputs.batch(bank.ids[:5])
    with torch.no_grad():
        assert torch.equal(reward.model.score(x), model.score(x))
    info = reward.info
    assert not reward.model.training and reward.kind == info['kind'] == 'sigma' and info['config'] == model.config
    assert reward.spec == InputSpec(slab=slab) and info['input'] == reward.spec.to_dict() and info['training']['note'] == 'test'
    raw = torch.load(path, weights_only=True)
    assert raw['format'] == FORMAT and set(raw['state_dict']) == set(model.state_dict())


def test_not_a_checkpoint_is_a_one_line_error(tmp_path):
    cases = {'text.pt': 'not a reward checkpoint (', 'object.pt': 'not a reward checkpoint (', 'dict.pt': 'not a reward checkpoint of format',
        'missing.pt': 'no such reward checkpoint', 'odd.pt': "unknown input normalisation 'zscore'"}
    (tmp_path / 'text.pt').write_text('hello\nworld\n')
    torch.save(NotAReward(), tmp_path / 'object.pt')
    torch.save(dict(weights=torch.zeros(2)), tmp_path / 'dict.pt')
    save_reward(str(tmp_path / 'odd.pt'), tiny_sigma(), 'sigma', slab_description(RES))
    odd = torch.load(tmp_path / 'odd.pt', weights_only=True)
    odd['input']['normalisation'] = 'zscore'
    torch.save(odd, tmp_path / 'odd.pt')
    for name, message in cases.items():
        with pytest.raises(RewardCheckpointError) as info:
            load_reward(str(tmp_path / name))
        text = str(info.value)
        assert text.startswith(str(tmp_path / name) + ': ') and message in text and '\n' not in text, text

#----------------------------------------------------------------------------
# tools/train_reward.py on banks of balls (the `balls` and `tiny_models` fixtures, tests/conftest.py).

train = tool(train_reward.main, '--device', 'cpu')


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f]


def test_train_reward_end_to_end(balls, tmp_path):
    out = tmp_path / 'run' / 'reward.pt'
    result = ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--truth', balls['truth'], '--epochs', 2,
        '--model-config', json.dumps(TINY['sigma']), '--out', out))                     # The learned CNN: by epochs.
    for suffix in ('.pt', '.metrics.jsonl', '.report.json', '.curves.png'):
        assert os.path.isfile(tmp_path / 'run' / f'reward{suffix}'), suffix
    report = json.loads((tmp_path / 'run' / 'reward.report.json').read_text())
    assert report['mirror']['setting'] == 'auto' and set(report['mirror']['validation']) == {'mirrored', 'plain'}
    every = read_jsonl(tmp_path / 'run' / 'reward.metrics.jsonl')
    assert {r['mirror'] for r in every} == {True, False}                            # Trained both ways (auto),
    records = [r for r in every if r['mirror'] == report['mirror']['chosen']]       # the chosen run's records:
    keys = ['loss', 'rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins']
    train_records = [r for r in records if 'loss' in r]
    eval_records = [r for r in records if 'eval_loss' in r]
    assert len(train_records) == len(eval_records) >= 1 and len(records) == 2 * len(eval_records)
    assert all(set(keys) <= set(r) for r in train_records)
    assert all({'eval_' + k for k in keys} <= set(r) for r in eval_records)
    assert report['reward'] == 'sigma' and report['config'] == SigmaReward(**TINY['sigma'], reference_shape=[20, 22, 20]).config
    assert report['epochs_run'] == len(eval_records) <= 2
    assert report['val_accuracy'] == pytest.approx([r['eval_rewards/accuracies'] for r in eval_records])
    assignment = preferences.split_samples(balls['radii'], (0.7, 0.15, 0.15), seed=0)
    test_ids = [x for x in sorted(balls['radii']) if assignment[x] == 'test']
    truth_pairs = R.all_pairs_by_truth(balls['radii'], test_ids)
    for key, total in (('test_labels', report['counts']['test']), ('test_truth', len(truth_pairs))):
        held = report['held_out'][key]
        assert held['total'] == total and held['accuracy'] == pytest.approx(held['correct'] / total)
        lo, hi = R.wilson_interval(held['correct'], total)
        assert held['wilson95'] == pytest.approx([lo, hi])
    truth_line = (f"held-out accuracy against --truth (all test-sample pairs): {100 * report['held_out']['test_truth']['accuracy']:.1f}% "
        f'of {len(truth_pairs)} pairs (95% Wilson interval {100 * lo:.1f}-{100 * hi:.1f}%)')
    assert truth_line in result.output and 'held-out accuracy on test labels: ' in result.output
    reward, bank = load_reward(str(out)), Bank(balls['bank'])
    assert reward.kind == 'sigma' and reward.spec == InputSpec(slab=bank.meta('ball00')['slab'])
    assert reward.info['training']['held_out'] == report['held_out'] and report['input'] == reward.spec.to_dict()
    scores = dict(zip(test_ids, reward.score_slabs(bank.slab(i) for i in test_ids).tolist()))
    assert R.pairwise_accuracy(scores, truth_pairs)[0] == report['held_out']['test_truth']['correct']
    train_ids = [x for x in sorted(balls['radii']) if assignment[x] == 'train']       # Centred on these.
    assert abs(float(reward.score_slabs(bank.slab(i) for i in train_ids).mean())) < 1e-3
    assert len(report['centred_by']) == 1 and isinstance(report['centred_by'][0], float)
    with PIL.Image.open(tmp_path / 'run' / 'reward.curves.png') as im:
        assert im.format == 'PNG' and im.size[0] > 2 * im.size[1] > 500                 # Two plots side by side.


def test_train_reward_default_solves_linear_heads_on_level_set_features(balls, tmp_path):
    out = tmp_path / 'reward.pt'
    result = ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--truth', balls['truth'], '--out', out))
    report = json.loads((tmp_path / 'reward.report.json').read_text())
    assert report['config'] == SigmaReward().config and report['centre'] is False
    assert report['input']['normalisation'] == 'affine' and report['input']['scale'] == 1.0      # Raw sigma levels.
    grid = report['heads']['grid']
    assert [g['l2'] for g in grid] == list(R.FitOptions().l2) and report['heads']['l2'] in R.FitOptions().l2
    assert report['heads']['chosen']['val_nll'] == min(g['val_nll'] for g in grid)
    assert 'epochs_run' not in report and len(report['centred_by']) == SigmaReward().members
    assert report['held_out']['test_truth']['accuracy'] >= 0.9                          # Bigger balls liked: learned.
    records = [r for r in read_jsonl(tmp_path / 'reward.metrics.jsonl') if r['mirror'] == report['mirror']['chosen']]
    assert [r['l2'] for r in records] == [g['l2'] for g in sorted(grid, key=lambda g: -g['l2'])]
    assert f"L2 {report['heads']['l2']:g} of {len(grid)} tried" in result.output
    reward, bank = load_reward(str(out)), Bank(balls['bank'])
    assignment = preferences.split_samples(balls['radii'], (0.7, 0.15, 0.15), seed=0)
    train_ids = [x for x in sorted(balls['radii']) if assignment[x] == 'train']
    assert abs(float(reward.score_slabs(bank.slab(i) for i in train_ids).mean())) < 1e-3    # Every member centred.
    with torch.no_grad():
        members = reward.model.member_scores(reward.features(torch.stack([torch.as_tensor(bank.slab(i)) for i in train_ids])))
    assert members.mean(dim=0).abs().max() < 1e-3 and members.std(dim=1).mean() > 0
    with PIL.Image.open(tmp_path / 'reward.curves.png') as im:
        assert im.format == 'PNG' and im.size[0] > 2 * im.size[1] > 500
    ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--l2', '0.5,5', '--out', tmp_path / 'l2.pt'))
    assert [g['l2'] for g in json.loads((tmp_path / 'l2.report.json').read_text())['heads']['grid']] == [0.5, 5.0]
    bad = train('--bank', balls['bank'], '--labels', balls['labels'], '--l2', '1,-1', '--out', tmp_path / 'bad.pt')
    assert bad.exit_code == 2 and '--l2' in bad.output and not os.path.exists(tmp_path / 'bad.pt')


def test_refit_all_fits_every_judgement_with_the_settings_the_split_chose(balls, tmp_path):
    """The split fit chooses and estimates; the model written is fitted again on every judgement, the pairs across
    splits too, with that L2 (linear heads) or that many epochs (the best epoch's) and that mirroring."""
    judgements = preferences.load_judgements(balls['labels'])
    for name, extra in (('heads', []), ('epochs', ['--model-config', json.dumps(TINY['sigma']), '--epochs', 3])):
        split, every = tmp_path / f'{name}-split.pt', tmp_path / f'{name}-all.pt'
        ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--truth', balls['truth'], *extra, '--out', split))
        result = ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--truth', balls['truth'], *extra,
            '--refit-all', '--out', every))
        a, b = (json.loads(p.with_suffix('.report.json').read_text()) for p in (split, every))
        assert a['held_out'] == b['held_out'] and a['counts']['dropped'] > 0     # The estimate is the split fit's.
        refit = b['refit']
        assert refit['pairs'] + refit['ties'] == len(judgements) and refit['samples'] == len(balls['radii'])
        assert refit['settings']['mirror'] == a['mirror']['chosen']
        if name == 'heads':
            assert refit['settings']['l2'] == [a['heads']['l2']]
        else:
            assert refit['settings']['epochs'] == a['best_epoch'] + 1
        assert f'then fitted again on every judgement: {refit["pairs"]} pairs and {refit["ties"]} ties over ' \
            f'{refit["samples"]} samples' in result.output
        bank = Bank(balls['bank'])
        ids = sorted(balls['radii'])
        first, second = (load_reward(str(p)).score_slabs(bank.slab(i) for i in ids) for p in (split, every))
        assert not np.allclose(first, second)                                   # Another fit, on more pairs,
        truth = R.all_pairs_by_truth(balls['radii'], ids)                       # that still ranks the balls.
        assert R.pairwise_accuracy(dict(zip(ids, second.tolist())), truth)[0] >= 0.8 * len(truth)


def test_train_reward_good_bad_and_reg_weight(balls, tmp_path, tiny_models):
    assignment = preferences.split_samples(balls['radii'], (0.7, 0.15, 0.15), seed=0)
    sizes = {s: sum(v == s for v in assignment.values()) for s in ('train', 'val', 'test')}   # Every sample is labelled.
    runs = {}
    for weight in (1.0, 0.0):
        out = tmp_path / f'w{weight}.pt'
        ok(train('--bank', balls['bank'], '--good', balls['good'], '--bad', balls['bad'], '--epochs', 1, '--batch', 8,
            '--reg-weight', weight, '--out', out))
        report = json.loads((tmp_path / f'w{weight}.report.json').read_text())
        assert report['options']['reg_weight'] == weight and report['labels'] is None
        assert report['good'] == balls['good'] and report['counts'] == sizes
        runs[weight] = read_jsonl(tmp_path / f'w{weight}.metrics.jsonl')[0]
    assert runs[1.0]['loss'] != pytest.approx(runs[0.0]['loss'])
    median = np.median(list(balls['radii'].values()))
    test = [x for x in balls['radii'] if assignment[x] == 'test']
    good = sum(balls['radii'][x] > median for x in test)
    assert report['held_out']['test_labels']['total'] == good * (len(test) - good)   # Every good x bad test pair.
    result = train('--bank', balls['bank'], '--good', balls['good'], '--bad', balls['bad'], '--reg-weight', -1, '--out', out)
    assert result.exit_code == 2 and '--reg-weight' in result.output


@pytest.mark.parametrize('kind', ['depth', 'pointcloud', 'sigma'])
def test_train_reward_kinds(balls, tmp_path, tiny_models, kind):
    out = tmp_path / f'{kind}.pt'
    cnn = ['--model-config', json.dumps(dict(trunk='cnn'))] if kind == 'sigma' else []     # By epochs, as the others.
    ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--reward', kind, '--epochs', 1, '--batch', 32, *cnn, '--out', out))
    reward = load_reward(str(out))
    assert reward.kind == kind and type(reward.model) is type(build_reward(kind, **TINY[kind]))
    extra = dict(reference_shape=[20, 22, 20]) if reward.model.takes_reference else {}     # --centre is on for these.
    assert reward.info['config'] == build_reward(kind, **TINY[kind], **extra).config
    result = train('--bank', balls['bank'], '--labels', balls['labels'], '--reward', 'voxels', '--out', out)
    assert result.exit_code == 2 and "'voxels' is not one of 'depth', 'pointcloud', 'sigma'" in result.output


def test_train_reward_split_and_split_seed(balls, tmp_path):
    ids = sorted(balls['radii'])
    judgements = preferences.load_judgements(balls['labels'])
    for fractions, seed in (('0.5,0.25,0.25', 0), ('2,1,1', 3), ('0.7,0.15,0.15', 3)):
        args = ['--split', fractions] + (['--split-seed', seed] if seed else [])
        result = ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--out', tmp_path / 'r.pt', '--dry-run', *args))
        parts = [float(p) for p in fractions.split(',')]
        split = preferences.split_judgements(judgements, preferences.split_samples(ids, [p / sum(parts) for p in parts], seed=seed))
        counts = {s: len(split[s]) for s in ('train', 'val', 'test', 'dropped')}
        assert f'pairs per split: {counts}' in result.output, (result.output, counts)
    assert not os.listdir(tmp_path)
    for bad in ('0.5,0.5', '1,0,1', 'a,b,c', '1,-1,1', ''):
        result = train('--bank', balls['bank'], '--labels', balls['labels'], '--out', tmp_path / 'r.pt', '--split', bad)
        assert result.exit_code == 2 and 'expected three positive fractions train,val,test' in result.output, bad


def test_train_reward_ties_and_batch(balls, tmp_path, tiny_models):
    oracle = annotators.OracleAnnotator('nose', balls['radii'], temperature=0.3, theta=3.0, seed=1)
    labels = tmp_path / 'ties.jsonl'
    preferences.write_judgements(str(labels), oracle.judgements(oracle.draw_pairs(balls['radii'], 300)))
    assignment = preferences.split_samples(balls['radii'], (0.7, 0.15, 0.15), seed=0)
    pairs, ties = preferences.to_pairs(preferences.split_judgements(preferences.load_judgements(str(labels)), assignment)['train'])
    assert len(ties) >= 10
    for mode, batch in (('drop', 8), ('model', 8), ('model', 20)):
        out = tmp_path / f'{mode}{batch}.pt'
        ok(train('--bank', balls['bank'], '--labels', labels, '--ties', mode, '--batch', batch, '--epochs', 1, '--out', out))
        first = read_jsonl(tmp_path / f'{mode}{batch}.metrics.jsonl')[0]
        items = len(pairs) + (len(ties) if mode == 'model' else 0)
        assert first['step'] == math.ceil(items / batch), (mode, batch)
        assert json.loads((tmp_path / f'{mode}{batch}.report.json').read_text())['options']['ties'] == mode
    for bad in (['--ties', 'keep'], ['--batch', 1]):
        result = train('--bank', balls['bank'], '--labels', labels, '--out', tmp_path / 'x.pt', *bad)
        assert result.exit_code == 2 and bad[0] in result.output


def test_train_reward_patience_and_learning_rate(balls, tmp_path, tiny_models):
    # So small a learning rate that validation accuracy never improves: training stops `patience` epochs after the first.
    for patience in (1, 2):
        out = tmp_path / f'p{patience}.pt'
        ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--lr', 1e-12, '--epochs', 5, '--patience', patience,
            '--batch', 64, '--out', out))
        report = json.loads((tmp_path / f'p{patience}.report.json').read_text())
        assert report['epochs_run'] == patience + 1 and report['best_epoch'] == 0 and report['options']['lr'] == 1e-12
    for bad in (['--lr', 0], ['--patience', 0], ['--epochs', 0]):
        result = train('--bank', balls['bank'], '--labels', balls['labels'], '--out', tmp_path / 'x.pt', *bad)
        assert result.exit_code == 2 and bad[0] in result.output


def test_train_reward_seed_and_mirror(balls, tmp_path, tiny_models):
    def losses_of(name, *args):
        ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--epochs', 1, '--batch', 32, '--out', tmp_path / f'{name}.pt', *args))
        return read_jsonl(tmp_path / f'{name}.metrics.jsonl')

    first = losses_of('a', '--seed', 4)
    assert losses_of('b', '--seed', 4) == first
    assert losses_of('c', '--seed', 5)[0]['loss'] != pytest.approx(first[0]['loss'])
    assert losses_of('d', '--seed', 4, '--no-mirror')[0]['loss'] != pytest.approx(first[0]['loss'])
    assert json.loads((tmp_path / 'd.report.json').read_text())['options']['mirror'] is False
    assert json.loads((tmp_path / 'a.report.json').read_text())['options']['mirror'] is None        # Auto by default.
    assert json.loads((tmp_path / 'd.report.json').read_text())['mirror']['chosen'] is False


def test_train_reward_without_truth(balls, tmp_path, tiny_models):
    result = ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--epochs', 1, '--out', tmp_path / 'r.pt'))
    assert 'against --truth' not in result.output
    assert set(json.loads((tmp_path / 'r.report.json').read_text())['held_out']) == {'test_labels'}


def test_train_reward_dry_run_and_device(balls, tmp_path):
    result = ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--truth', balls['truth'], '--out', tmp_path / 'r.pt', '--dry-run'))
    assert '40 samples; pairs per split' in result.output and 'would train for at most 20 epochs' in result.output
    assert not os.listdir(tmp_path)
    if not torch.cuda.is_available():
        result = train('--bank', balls['bank'], '--labels', balls['labels'], '--out', tmp_path / 'r.pt', '--device', 'cuda')
        assert result.exit_code == 2 and 'CUDA is not available' in result.output
    assert not os.listdir(tmp_path)


def test_train_reward_errors(balls, tmp_path):
    base = ['--bank', balls['bank'], '--out', tmp_path / 'r.pt']
    for args in (['--labels', balls['labels'], '--good', balls['good'], '--bad', balls['bad']], ['--good', balls['good']], []):
        result = train(*base, *args)
        assert result.exit_code == 2 and 'give either --labels (pairs) or both --good and --bad' in result.output
    labels = tmp_path / 'l.jsonl'
    labels.write_text(open(balls['labels']).readlines()[0] + json.dumps(dict(a='ball01', b='ball77', choice='a',
        annotator='x', time='2026-01-01T00:00:00+00:00')) + '\n')
    result = train(*base, '--labels', labels)
    assert result.exit_code == 1 and f'{labels}:2: unknown sample id ball77' in result.output
    bad = tmp_path / 'bad.txt'
    bad.write_text(open(balls['bad']).read() + 'ball99\n')
    result = train(*base, '--good', balls['good'], '--bad', bad)
    assert result.exit_code == 1 and 'unknown sample id ball99' in result.output
    truth = tmp_path / 't.csv'
    truth.write_text('id,reward\nball01,0.5\nball88,1\n')
    result = train(*base, '--labels', balls['labels'], '--truth', truth)
    assert result.exit_code == 1 and f'{truth}:3: unknown sample id ball88' in result.output
    labels.write_text(open(balls['labels']).readlines()[0])                  # One pair: nothing to validate on.
    result = train(*base, '--labels', labels)
    assert result.exit_code == 1 and 'not enough labels for a split by sample' in result.output
    result = train('--bank', tmp_path / 'nowhere', '--labels', balls['labels'], '--out', tmp_path / 'r.pt')
    assert result.exit_code == 1 and 'no such bank folder' in result.output
    assert sorted(os.listdir(tmp_path)) == ['bad.txt', 'l.jsonl', 't.csv']

#----------------------------------------------------------------------------
# train_reward.py never replaces a checkpoint without --force; a bank with a nan slab, or a run that diverges,
# writes none.

@pytest.mark.parametrize('existing', ['reward.pt', 'reward.metrics.jsonl', 'reward.report.json', 'reward.curves.png'])
def test_train_reward_never_replaces_a_checkpoint_without_force(balls, tiny_models, tmp_path, existing):
    (tmp_path / existing).write_bytes(b'a checkpoint someone trained for a day')
    before = digest(tmp_path / existing)
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', balls['bank'], '--labels', balls['labels'],
        '--epochs', 1, '--out', str(tmp_path / 'reward.pt')])
    refused_in_one_line(result, f'{tmp_path / existing} exists; pass --force to replace it')
    assert digest(tmp_path / existing) == before and sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_train_reward_on_a_bank_with_a_nan_slab_stops_in_one_line(balls, tiny_models, tmp_path):
    import shutil
    import numpy as np
    bank = tmp_path / 'bank'
    shutil.copytree(balls['bank'], bank)
    first = sorted(p for p in bank.iterdir() if p.is_dir())[0]
    slab = np.load(first / 'sigma_slab.npy')
    slab[1, 1, 1] = np.nan
    np.save(first / 'sigma_slab.npy', slab)
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', str(bank), '--labels', balls['labels'],
        '--epochs', 1, '--out', str(tmp_path / 'r.pt')])
    refused_in_one_line(result, 'sigma_slab.npy: holds nan or inf')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bank']


def test_train_reward_that_diverges_writes_no_checkpoint(balls, tiny_models, tmp_path):
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', balls['bank'], '--labels', balls['labels'],
        '--epochs', 2, '--lr', '1e30', '--out', str(tmp_path / 'r.pt')])
    refused_in_one_line(result, 'reward training diverged at step')
    assert not list(tmp_path.iterdir())                         # No checkpoint, and nothing a rerun would trip on.

#----------------------------------------------------------------------------
# Score files (--truth, --scores): finite numbers, UTF-8, sane fields, every sample; refused before any training.

def write_truth(path, case, ids):
    rows = {
        'nan': [f'{i},nan' for i in ids],
        'inf': [f'{i},{"-inf" if n == 3 else n}' for n, i in enumerate(ids)],
        'not UTF-8': [f'{i},{n}' for n, i in enumerate(ids)] + ['\udcff,1'],
        'a huge field': [f'{ids[0]},{"1" * 200000}'],
        'a huge id': ['x' * 200000 + ',1'],
        'missing ids': [f'{i},{n}' for n, i in enumerate(ids[:2])],
        'an id twice': [f'{i},{n}' for n, i in enumerate(ids)] + [f'{ids[1]},7'],
    }[case]
    path.write_bytes('\n'.join(['id,reward'] + rows + ['']).encode('utf-8', 'surrogateescape'))


TRUTH = {
    'nan': ':2: reward nan is not a finite number; give each sample a finite score',
    'inf': ':5: reward -inf is not a finite number; give each sample a finite score',
    'not UTF-8': ': not UTF-8 text (invalid start byte at byte',
    'a huge field': ':2: field larger than field limit (131072)',
    'a huge id': ':2: field larger than field limit (131072)',
    'missing ids': ': no score for 38 of the 40 samples (first: ball02); give one row per sample',
    'an id twice': ':42: sample id ball01 is given twice (first on line 3)',
}


@pytest.mark.parametrize('case', list(TRUTH))
def test_a_truth_file_that_is_not_a_finite_score_per_sample_is_refused_before_training(balls, tiny_models, tmp_path,
        case):
    from eg3d_rlhf.data import scores
    truth = tmp_path / 'truth.csv'
    write_truth(truth, case, sorted(balls['radii']))
    before = digest(truth)
    with pytest.raises(scores.ScoresError, match='^' + str(truth).replace('.', r'\.')) as err:
        scores.read_scores(str(truth), sorted(balls['radii']), complete=True)
    assert TRUTH[case] in str(err.value) and '\n' not in str(err.value)
    result = CliRunner().invoke(train_reward.main, ['--device', 'cpu', '--bank', balls['bank'], '--labels',
        balls['labels'], '--epochs', 1, '--truth', str(truth), '--out', str(tmp_path / 'r.pt')])
    refused_in_one_line(result, f'{truth}{TRUTH[case]}')           # Before: "0.0%" and a checkpoint, or a traceback.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['truth.csv'] and digest(truth) == before

#----------------------------------------------------------------------------
# tools/score_bank.py.

@pytest.fixture(scope='module')
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp('scored')
    root, radii = ball_bank(folder / 'bank', 11, seed=2)
    model = tiny_sigma(seed=7).eval()
    save_reward(str(folder / 'r.pt'), model, 'sigma', Bank(root).meta('ball00')['slab'])
    return dict(bank=root, model=model, reward=str(folder / 'r.pt'))


score = tool(score_bank.main, '--device', 'cpu')


def test_score_bank_writes_every_sample_in_id_order(scored, tmp_path):
    bank = Bank(scored['bank'])
    x = torch.stack([torch.from_numpy(normalise_sigma_self(bank.slab(i))) for i in bank.ids])
    with torch.no_grad():
        want = dict(zip(bank.ids, scored['model'].score(x).tolist()))
    results = {}
    for batch in (8, 1, 4):
        out = tmp_path / f'b{batch}.csv'
        result = ok(score('--reward-model', scored['reward'], '--bank', scored['bank'], '--out', out, '--batch', batch))
        results[batch] = read_scores(str(out), known_ids=bank.ids)
        assert list(results[batch]) == bank.ids and results[batch] == pytest.approx(want, abs=1e-5)
        assert f'| {math.ceil(11 / batch)}/{math.ceil(11 / batch)} [' in result.output      # Progress: batches done.
    best = max(want, key=want.get)
    assert f'11 samples scored; highest {best}' in result.output
    assert results[1] == pytest.approx(results[4], abs=1e-5)
    result = score('--reward-model', scored['reward'], '--bank', scored['bank'], '--out', out, '--batch', 0)
    assert result.exit_code == 2 and '--batch' in result.output


def test_score_bank_refusals_and_dry_run(scored, tmp_path):
    other, _ = ball_bank(tmp_path / 'other', 3, resolution=32)
    out = tmp_path / 's.csv'
    result = score('--reward-model', scored['reward'], '--bank', other, '--out', out)
    assert result.exit_code == 1 and 'slabs of the 32^3 grid, shape [16, 18, 17]' in result.output
    assert 'was trained on the 40^3 grid, shape [20, 22, 20]' in result.output
    (tmp_path / 'junk.pt').write_text('not a checkpoint\n')
    result = score('--reward-model', tmp_path / 'junk.pt', '--bank', scored['bank'], '--out', out)
    assert result.exit_code == 1 and 'not a reward checkpoint' in result.output
    result = score('--reward-model', scored['reward'], '--bank', tmp_path / 'nowhere', '--out', out)
    assert result.exit_code == 1 and 'no such bank folder' in result.output
    result = ok(score('--reward-model', scored['reward'], '--bank', scored['bank'], '--out', out, '--dry-run'))
    assert 'would score 11 samples' in result.output and 'with the sigma reward' in result.output
    if not torch.cuda.is_available():
        result = score('--reward-model', scored['reward'], '--bank', scored['bank'], '--out', out, '--device', 'cuda')
        assert result.exit_code == 2 and 'CUDA is not available' in result.output
    assert sorted(os.listdir(tmp_path)) == ['junk.pt', 'other']


def test_score_bank_never_replaces_a_file_without_force_nor_ever_its_inputs(tmp_path):
    from eg3d_rlhf.data.bank import Bank
    from eg3d_rlhf.rewards.checkpoint import save_reward
    from tests.helpers.banks import ball_bank
    from tests.helpers.rewards import tiny_sigma
    from tools import score_bank
    bank_dir, _ = ball_bank(tmp_path / 'bank', 3, seed=2)
    reward = tmp_path / 'r.pt'
    save_reward(str(reward), tiny_sigma(seed=7).eval(), 'sigma', Bank(bank_dir).meta('ball00')['slab'])
    scores = tmp_path / 'scores.csv'
    scores.write_text('id,reward\nball00,1.0\n')
    before = {'bank': files_under(tmp_path / 'bank'), 'r.pt': digest(reward), 'scores.csv': digest(scores)}
    run = lambda out, *extra: CliRunner().invoke(score_bank.main, ['--device', 'cpu', '--reward-model', str(reward),
        '--bank', bank_dir, '--out', str(out), *extra])
    refused_in_one_line(run(scores), f'{scores} exists; pass --force to replace it')      # Before: replaced.
    meta = tmp_path / 'bank' / 'ball00' / 'meta.json'
    for out, flag, path in ((reward, '--reward-model', reward), (meta, '--bank', bank_dir)):
        for extra in ([], ['--force']):
            refused_in_one_line(run(out, *extra), f'{out} would write over {flag} {path}, which this command reads')
    assert {'bank': files_under(tmp_path / 'bank'), 'r.pt': digest(reward), 'scores.csv': digest(scores)} == before
    assert run(scores, '--force').exit_code == 0 and digest(scores) != before['scores.csv']

#----------------------------------------------------------------------------
# The sigma reward's reference slab (--centre).

def test_sigma_reference_is_subtracted_and_resampled_for_other_sizes():
    model = SigmaReward(trunk='cnn', members=1, channels=(4, 8, 8, 8, 16), hidden=16, reference_shape=[20, 22, 21])
    ref = torch.rand(20, 22, 21) * 100
    model.set_reference(ref)
    x = torch.rand(2, 20, 22, 21) * 100
    assert torch.equal(model.centred(x), x - ref)
    assert torch.allclose(model.centred(ref[None]), torch.zeros(1, 20, 22, 21))
    small = torch.nn.functional.interpolate(ref[None, None], size=(10, 11, 11), mode='trilinear', align_corners=True)[0]
    assert torch.allclose(model.centred(small), torch.zeros_like(small), atol=1e-4)
    plain = SigmaReward(trunk='cnn', members=1, channels=(4, 8, 8, 8, 16), hidden=16)
    assert plain.centred(x) is x and plain.config['reference_shape'] is None


def test_train_reward_centre(balls, tmp_path, tiny_models):
    cnn = ['--model-config', json.dumps(dict(trunk='cnn'))]                  # The learned trunk centres by default.
    ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--epochs', 1, *cnn, '--out', tmp_path / 'c.pt'))
    reward = load_reward(str(tmp_path / 'c.pt'))
    assert reward.info['training']['centre'] is True and reward.model.reference is not None
    bank = Bank(str(balls['bank']))
    inputs = R.prepared_inputs(bank, bank.ids, reward.spec, progress=False)
    train_ids = [x for x, s in preferences.split_samples(bank.ids, (0.7, 0.15, 0.15), seed=0).items() if s == 'train']
    assert torch.allclose(reward.model.reference, inputs.mean(train_ids), atol=1e-4)
    ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--epochs', 1, '--no-centre', *cnn, '--out', tmp_path / 'n.pt'))
    assert load_reward(str(tmp_path / 'n.pt')).model.reference is None
    refused = train('--bank', balls['bank'], '--labels', balls['labels'], '--centre', '--out', tmp_path / 'l.pt')
    assert refused.exit_code == 2 and 'this sigma reward takes no reference slab' in refused.output   # Levels trunk.
    ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--epochs', 1, '--reward', 'depth', '--out', tmp_path / 'd.pt'))
    refused = train('--bank', balls['bank'], '--labels', balls['labels'], '--reward', 'depth', '--centre', '--out', tmp_path / 'e.pt')
    assert refused.exit_code != 0 and 'sigma (with a learned trunk) only' in refused.output


def test_train_reward_model_config(balls, tmp_path):
    out = tmp_path / 'small.pt'
    config = dict(TINY['sigma'], hidden=12)
    ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--epochs', 1, '--model-config', json.dumps(config), '--out', out))
    assert load_reward(str(out)).info['config'] == build_reward('sigma', **config, reference_shape=[20, 22, 20]).config
    ok(train('--bank', balls['bank'], '--labels', balls['labels'], '--epochs', 1, '--model-config',
        json.dumps({k: v for k, v in config.items() if k != 'members'}), '--members', 3, '--out', tmp_path / 'three.pt', '--force'))
    assert load_reward(str(tmp_path / 'three.pt')).model.members == 3
    refused = train('--bank', balls['bank'], '--labels', balls['labels'], '--model-config', '{"members": 2}',
        '--members', 3, '--out', tmp_path / 'x.pt')
    assert refused.exit_code == 2 and '--members 3 and the model config\'s "members": 2 differ' in refused.output
    for bad, message in (('{"hidden": ', 'not JSON'), ('[1, 2]', 'JSON object'), ('{"reference_shape": [1, 1, 1]}', 'JSON object'),
            ('{"wings": 2}', "unexpected keyword argument 'wings'")):
        result = train('--bank', balls['bank'], '--labels', balls['labels'], '--model-config', bad, '--out', out)
        assert result.exit_code == 2 and '--model-config' in result.output and message in result.output, result.output


@pytest.mark.parametrize('kind', ['depth', 'pointcloud', 'sigma'])
def test_centre_scores_shifts_every_score_by_the_offset(kind):
    torch.manual_seed(0)
    model = build_reward(kind, **TINY[kind]).eval()
    x = torch.rand(3, 20, 22, 20) * 100
    with torch.no_grad():
        before = model.score(x)
        R.centre_scores(model, 2.5)
        assert torch.allclose(model.score(x), before - 2.5, atol=1e-5)


def test_unpaired_training_of_the_levels_trunk_scales_its_features_first(balls, tmp_path):
    out = tmp_path / 'cs.pt'
    ok(train('--bank', balls['bank'], '--good', balls['good'], '--bad', balls['bad'], '--epochs', 1, '--batch', 8,
        '--out', out))
    model = load_reward(str(out)).model
    assert model.frozen_trunk and float(model.feature_mean.abs().max()) > 0 and float((model.feature_std - 1).abs().max()) > 0
    report = json.loads((tmp_path / 'cs.report.json').read_text())
    assert report['epochs_run'] == 1 and 'heads' not in report                 # Good/bad labels train by epochs.


def test_learned_members_each_fit_their_own_bootstrap_draw(toy):
    bank, radii, inputs = toy
    pairs = [(a, b) if radii[a] > radii[b] else (b, a) for a, b in zip(bank.ids[:-1], bank.ids[1:]) if radii[a] != radii[b]]
    torch.manual_seed(0)
    model = SigmaReward(levels=(10.0,), cells=(2, 2, 2), members=3, hidden=4)
    fitter = R.RewardFitter(model, inputs, R.FitOptions(mirror=False, seed=3))
    keys = [('pair', *p) for p in pairs]
    counts = fitter.bootstrap(keys)
    assert counts.shape == (len(pairs), 3) and (counts[:, 0] == 1).all()    # Member 0 draws every pair once...
    assert (counts[:, 1:] == 0).any() and (counts[:, 1:] > 1).any()          # ...the others Poisson(1) draws...
    assert torch.equal(fitter.bootstrap(keys[::-1]), counts.flip(0))        # ...kept for every later epoch.
    fitter.counts = {k: torch.tensor([1.0, 0.0, 2.0]) for k in keys}         # Member 1 drew none of these pairs.
    loss, _ = fitter.pair_loss(pairs, [])
    loss.backward()
    grads = [max(float(p.grad.abs().max()) for p in h.parameters()) for h in model.member_heads()]
    assert grads[0] > 0 and grads[1] == 0 and grads[2] > 0
    with torch.no_grad():
        each, _ = fitter.forward(sorted({x for p in pairs for x in p}), train=False, members=True)
    at = {x: i for i, x in enumerate(sorted({x for p in pairs for x in p}))}
    margin = each[[at[w] for w, _ in pairs]] - each[[at[l] for _, l in pairs]]
    nll = torch.nn.functional.softplus(-margin)
    assert float(loss) == pytest.approx(float(nll[:, 0].mean() + 0 + nll[:, 2].mean()) / 3, rel=1e-5)


@pytest.mark.parametrize('mirror', [True, False])
def test_epochs_on_a_fixed_trunk_read_its_feature_table_as_the_trunk_would_give_them(toy, mirror):
    bank, radii, inputs = toy                       # The table's rows (mirrored ones for flips) stand for the trunk.
    median = np.median(list(radii.values()))
    labels = {k: int(radii[k] > median) for k in bank.ids[:16]}
    val = bank.ids[16:]
    val_pairs = [(g, b) for g in val for b in val if radii[g] > median >= radii[b]]
    options = R.FitOptions(epochs=3, batch=6, lr=0.05, mirror=mirror, objective='dreamcs')
    torch.manual_seed(0)
    model = SigmaReward(levels=(10.0,), cells=(2, 2, 2), members=2)
    table = R.linear_heads.feature_table(model, inputs, bank.ids, mirror=mirror, progress=False)
    R.linear_heads.set_feature_scale(model, table, bank.ids[:16])
    fitted = {}
    for name, given in (('trunk', None), ('table', table)):
        fitter = R.RewardFitter(copy.deepcopy(model), inputs, options, table=given)
        if given is not None:                                                   # Never the trunk: its features are read.
            fitter.model.trunk_features = lambda x: pytest.fail('the trunk ran although its table was given')
        history = fitter.fit(dict(labels=labels, scores=dict(radii)), val_pairs, progress=False)
        fitted[name] = history, fitter.scores(bank.ids), fitter.step
    assert fitted['table'][0] == fitted['trunk'][0] and fitted['table'][2] == fitted['trunk'][2] > 0
    trunk, via_table = (np.array([s[k] for k in bank.ids]) for s in (fitted['trunk'][1], fitted['table'][1]))
    assert np.abs(via_table - trunk).max() < 1e-4 * np.abs(trunk).max() and np.abs(trunk).max() > 0.1
    with pytest.raises(AssertionError, match='fixed trunk only'):
        R.RewardFitter(tiny_sigma(), inputs, options, table=table)
