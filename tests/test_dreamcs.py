"""DreamCS fidelity: its reward objective against a hand computation, banded good/bad labels, the reward-weight schedule."""

import json
import math

import numpy as np
import pytest
import torch

from eg3d_rlhf import finetune
from eg3d_rlhf.data import annotators as A
from eg3d_rlhf.data import preferences
from eg3d_rlhf.data.bank import Bank
from eg3d_rlhf.data.scores import read_scores, write_scores
from eg3d_rlhf.finetune.schedules import Progress, Schedule
from eg3d_rlhf.rewards import losses
from tests.helpers.banks import NOSES
from tests.helpers.cli import tool
from tests.helpers.eg3d import tiny_generator
from tests.helpers.rewards import latents, phase_options
from tools import annotate, train_reward

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------
# The objective on six samples, from the definitions in plain numpy: DreamCS's "Loss & Training" states
# L_RewardCS = L_MSE + lambda L_div with L_div = -D_CS, and D_CS(p || q) = -log((int p q)^2 / (int p^2 int q^2)),
# estimated with Parzen windows: the mean Gaussian kernel over all pairs of each pair of sets (diagonals included),
# bandwidth the median distance between distinct samples.

FEATURES = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, 1.0], [1.0, 0.0, 0.5],       # good
                     [2.0, 2.0, 0.0], [3.0, 1.0, -1.0], [2.5, 3.0, 0.5]])     # bad
GOOD = np.array([True, True, True, False, False, False])
REWARDS = np.array([0.3, -0.2, 1.1, -0.7, 0.4, -1.5])
SCORES = np.array([1.0, 0.5, 0.8, -1.2, -0.3, -0.9])                           # Each sample's own score: the MSE targets.


def hand_cs_divergence(x, y):
    union = np.concatenate([x, y])
    distances = [np.linalg.norm(union[i] - union[j]) for i in range(len(union)) for j in range(i + 1, len(union))]
    h = np.median(distances)                                   # 15 distinct pairs: the middle one, no averaging.
    kernel = lambda a, b: np.mean([np.exp(-np.sum((p - q) ** 2) / (2 * h ** 2)) for p in a for q in b])
    return -np.log(kernel(x, y) ** 2 / (kernel(x, x) * kernel(y, y)))


@pytest.mark.parametrize('cs_lambda', [0.0, 1.0])
def test_dreamcs_loss_is_mse_plus_lambda_times_minus_d_cs(cs_lambda):
    mse = np.mean((REWARDS - SCORES) ** 2)
    d_cs = hand_cs_divergence(FEATURES[GOOD], FEATURES[~GOOD])
    expected = mse + cs_lambda * -d_cs
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    got = losses.dreamcs_loss(t(REWARDS), t(FEATURES), torch.tensor(GOOD), t(SCORES), cs_lambda=cs_lambda)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert d_cs > 0.5 and (got.item() < mse if cs_lambda else got.item() == pytest.approx(mse, rel=1e-12))


def test_the_repositorys_cs_bce_form_is_kept_and_both_need_two_classes():
    bce = np.mean(np.logaddexp(0, REWARDS) - GOOD * REWARDS)                   # BCE with logits, by its definition.
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    got = losses.unpaired_cs_loss(t(REWARDS), t(FEATURES), torch.tensor(GOOD), reg_weight=2.0)
    assert got.item() == pytest.approx(-hand_cs_divergence(FEATURES[GOOD], FEATURES[~GOOD]) + 2 * bce, rel=1e-12)
    one_class = torch.ones(6, dtype=torch.bool)
    with pytest.raises(ValueError, match='dreamcs_loss needs good and bad samples'):
        losses.dreamcs_loss(t(REWARDS), t(FEATURES), one_class, t(SCORES), cs_lambda=1.0)
    assert losses.dreamcs_loss(t(REWARDS), t(FEATURES), one_class, t(SCORES), cs_lambda=0.0).item() == \
        pytest.approx(np.mean((REWARDS - SCORES) ** 2))                          # lambda 0: no D_CS, no classes needed.

#----------------------------------------------------------------------------
# train_reward --objective (the `balls` bank of tests/conftest.py: 40 balls, truth.csv, a median good/bad split).

train = tool(train_reward.main, '--device', 'cpu')


def test_train_reward_dreamcs_objective_reads_scores_and_refuses_without(balls, tmp_path, tiny_models):
    unpaired = ['--bank', balls['bank'], '--good', balls['good'], '--bad', balls['bad'], '--epochs', 1, '--batch', 8]
    losses_by_lambda = {}
    for cs_lambda in (0.0, 1.0):
        out = tmp_path / f'l{cs_lambda}.pt'
        result = train(*unpaired, '--objective', 'dreamcs', '--scores', balls['truth'], '--cs-lambda', cs_lambda, '--out', out)
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / f'l{cs_lambda}.report.json').read_text())
        assert report['options']['objective'] == 'dreamcs' and report['options']['cs_lambda'] == cs_lambda
        assert report['scores'] == balls['truth']
        losses_by_lambda[cs_lambda] = json.loads((tmp_path / f'l{cs_lambda}.metrics.jsonl').read_text().splitlines()[0])['loss']
    assert losses_by_lambda[0.0] != pytest.approx(losses_by_lambda[1.0])
    refusals = [
        (['--objective', 'dreamcs'], '--objective=dreamcs regresses the reward on each sample\'s score (L_MSE): give --scores'),
        (['--cs-lambda', 2], '--cs-lambda is for --objective=dreamcs'),
        (['--scores', balls['truth']], '--scores is for --objective=dreamcs'),
        (['--objective', 'dreamcs', '--scores', balls['truth'], '--reg-weight', 2], '--reg-weight is for --objective=cs-bce'),
        (['--objective', 'dreamcs', '--scores', balls['truth'], '--cs-lambda', -1], '--cs-lambda'),
        (['--objective', 'dreamcs', '--scores', balls['truth'], '--cs-lambda', 'nan'], '--cs-lambda'),
        (['--objective', 'mse'], "'mse' is not one of"),
    ]
    for extra, message in refusals:
        result = train(*unpaired, *extra, '--out', tmp_path / 'no.pt')
        errors = [line for line in result.output.splitlines() if line.startswith('Error')]
        assert result.exit_code == 2 and len(errors) == 1 and message in result.output, (extra, result.output)
    result = train('--bank', balls['bank'], '--labels', balls['labels'], '--objective', 'dreamcs', '--out', tmp_path / 'no.pt')
    assert result.exit_code == 2 and '--objective is for unpaired training (--good and --bad)' in result.output
    some = tmp_path / 'some.csv'
    write_scores(str(some), dict(list(read_scores(balls['truth']).items())[:5]))
    result = train(*unpaired, '--objective', 'dreamcs', '--scores', some, '--out', tmp_path / 'no.pt')
    assert result.exit_code == 1 and 'labelled training samples have none (first: ' in result.output
    assert not (tmp_path / 'no.pt').exists()

#----------------------------------------------------------------------------
# Banded labels: bad at most the low quantile, good at least the high one, the middle band left out.

def test_bands_drop_the_middle_and_equal_quantiles_drop_nothing():
    z = np.random.RandomState(0).permutation(np.arange(9.0)) ** 1.5             # Distinct, uneven scores.
    ids = {f's{i:02d}': v for i, v in enumerate(z)}
    rank = {k: r for r, k in enumerate(sorted(ids, key=ids.get))}
    exact = A.OracleAnnotator('nose', ids, temperature=0, seed=0)
    labels = exact.good_bad(ids, bad_quantile=0.25, good_quantile=0.75)      # 9 samples: quantiles are ranks 2 and 6.
    assert labels == {k: int(r >= 6) for k, r in rank.items() if r <= 2 or r >= 6} and len(ids) - len(labels) == 3
    assert exact.good_bad(ids) == {k: int(r > 4) for k, r in rank.items()}   # The median split: nothing left out.
    noisy = A.OracleAnnotator('nose', ids, temperature=1.0, seed=3)
    given = noisy.given_scores(ids)
    assert given != exact.z and all(np.isfinite(list(given.values())))
    lo, hi = np.quantile(list(noisy.z.values()), [0.3, 0.7])
    banded = noisy.good_bad(ids, 0.3, 0.7, given=given)
    assert banded == {k: int(s >= hi) for k, s in given.items() if s <= lo or s >= hi}
    with pytest.raises(ValueError, match='bad quantile <= good quantile'):
        exact.good_bad(ids, 0.8, 0.2)


annotate_cli = tool(annotate.main)


def test_annotate_good_bad_bands_count_the_middle_and_write_the_given_scores(faces, tmp_path):
    good, bad, given = tmp_path / 'good.txt', tmp_path / 'bad.txt', tmp_path / 'given.csv'
    base = ['good-bad', '--bank', faces, '--annotator', 'oracle:nose', '--good', good, '--bad', bad]
    result = annotate_cli(*base, '--temperature', 0, '--bad-quantile', 0.3, '--good-quantile', 0.7, '--given-scores-out', given)
    assert result.exit_code == 0, result.output
    assert '3 good and 3 bad samples' in result.output and '4 in the middle band left out' in result.output
    by_nose = sorted(NOSES, key=NOSES.get)                                     # The smallest nose is liked most.
    assert sorted(preferences.read_id_list(str(good))) == sorted(by_nose[:3])
    assert sorted(preferences.read_id_list(str(bad))) == sorted(by_nose[7:])
    assert list(read_scores(str(given))) == Bank(faces).ids
    result = annotate_cli(*base, '--temperature', 0, '--force')
    assert '5 good and 5 bad samples' in result.output and '0 in the middle band left out' in result.output
    for extra, message in [(['--bad-quantile', 0.8, '--good-quantile', 0.2], 'is above --good-quantile'),
            (['--good-quantile', 1.5], '--good-quantile'), (['--bad-quantile', 'nan'], '--bad-quantile')]:
        result = annotate_cli(*base, '--force', *extra)
        errors = [line for line in result.output.splitlines() if line.startswith('Error')]
        assert result.exit_code == 2 and len(errors) == 1 and message in result.output, (extra, result.output)

#----------------------------------------------------------------------------
# The reward weight's schedule: DreamCS's alpha(t) from alpha_min to alpha_max ("Progressive Reward Guidance").

def test_schedules_at_the_start_middle_and_end():
    expected = {   # progress: weight, for start 2 and end 10 (cosine at 1/4: 10 - 8 (1 + cos 45 deg) / 2).
        'constant': {0: 5, 0.25: 5, 0.5: 5, 1: 5},
        'linear':   {0: 2, 0.25: 4, 0.5: 6, 1: 10},
        'cosine':   {0: 2, 0.25: 10 - 4 * (1 + math.sqrt(0.5)), 0.5: 6, 1: 10},
    }
    for kind, weights in expected.items():
        schedule = Schedule(kind, 5.0, 5.0) if kind == 'constant' else Schedule(kind, 2.0, 10.0)
        for progress, weight in weights.items():
            assert schedule.at(progress) == pytest.approx(weight, abs=1e-12), (kind, progress)
        assert schedule.at(-1) == schedule.at(0) and schedule.at(2) == schedule.at(1)
    assert Schedule('linear', 10.0, 0.0).at(0.75) == pytest.approx(2.5)          # Down as well as up.
    for bad in [dict(kind='exp'), dict(start=float('nan')), dict(end=-1.0), dict(start=1.0, end=2.0)]:
        with pytest.raises(ValueError):
            Schedule(**bad)


def test_progress_counts_from_the_first_step_and_resumes_exactly():
    progress = Progress(end_nimg=2000)
    assert progress.share == 0
    for nimg, share in [(400, 0), (1200, 0.5), (2000, 1), (2400, 1)]:
        progress.update(nimg)
        assert progress.share == pytest.approx(share)
    resumed = Progress(end_nimg=2000)
    resumed.load_state(progress.state())
    resumed.update(800)
    assert resumed.share == pytest.approx(0.25)


def test_reward_phase_weighs_its_loss_by_the_schedule(reward_checkpoint):
    G = tiny_generator()
    options = phase_options(reward_checkpoint, lambda_r_schedule='linear', lambda_r_start=0.0, lambda_r_end=4.0,
        lambda_sigma=0.0, clip=1e6)
    with pytest.raises(ValueError, match='needs total_kimg'):
        finetune.RewardPhase(G, **options)
    phase = finetune.RewardPhase(G, total_kimg=1.0, **options)
    z, c = latents(G, n=2, seed=1)
    for nimg, weight in [(0, 0.0), (500, 2.0), (1000, 4.0)]:
        phase.set_progress(nimg)
        total, parts = phase.loss(G, z, c)
        assert phase.weight == pytest.approx(weight) and float(parts['lambda_r']) == pytest.approx(weight)
        assert total.item() == pytest.approx(weight * parts['reward_loss'].item(), abs=1e-9)
    constant = finetune.RewardPhase(G, **phase_options(reward_checkpoint, lambda_r=3.0, lambda_sigma=0.0))
    constant.set_progress(10**6)
    assert constant.weight == 3.0 and 'lambda_r' not in constant.loss(G, z, c)[1]
    assert phase.resume_state()['begin_nimg'] == 0

#----------------------------------------------------------------------------
