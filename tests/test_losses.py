"""The preference-loss registry: each loss against a hand computation, and a new loss run by every method that takes pairs."""


import numpy as np
import pytest
import torch

from eg3d_rlhf import finetune
from eg3d_rlhf.finetune import losses
from eg3d_rlhf.finetune.circular_config import CircularDPOConfig
from eg3d_rlhf.finetune.config import RewardFinetuneConfig
from eg3d_rlhf.finetune.flow_dpo import PairData, train_stage
from eg3d_rlhf.finetune.options import ConfigError
from eg3d_rlhf.generators import flow_heads
from tests.helpers import toy_loss
from tests.helpers.eg3d import tiny_generator
from tests.helpers.rewards import latents, phase_options

pytestmark = pytest.mark.usefixtures('one_thread')


def batch(**extra):
    """Three pairs with known policy and reference quantities."""
    t = lambda *v: torch.tensor(v, dtype=torch.float64)
    return losses.PairBatch(chosen=t(-1.0, -2.0, -0.5), rejected=t(-1.5, -1.0, -0.5), ref_chosen=t(-1.2, -1.8, -0.5),
        ref_rejected=t(-1.2, -1.2, -0.5), **extra)

#----------------------------------------------------------------------------

def test_each_loss_matches_its_formula():
    b, beta, eps = batch(), 2.0, 0.1
    # Implicit rewards: beta * (policy - reference) per side; margins (0.2 - -0.3) * 2 = 1.0, (-0.2 - 0.2) * 2 = -0.8, 0.
    margin = np.array([1.0, -0.8, 0.0])
    ls = lambda x: -np.log1p(np.exp(-x))
    expected = {
        'sigmoid': -ls(margin),
        'ipo': (margin / beta - 1 / (2 * beta)) ** 2,
        'hinge': np.maximum(0, 1 - margin),
        'sft': np.array([1.0, 2.0, 0.5]),
    }
    for name, want in expected.items():
        loss, stats = losses.get(name)(b, losses.LossOptions(beta=beta))
        assert np.allclose(loss.numpy(), want), name
    loss, stats = losses.get('sigmoid')(b, losses.LossOptions(beta=beta, label_smoothing=eps))
    assert np.allclose(loss.numpy(), -(1 - eps) * ls(margin) - eps * ls(-margin))
    assert np.allclose(stats['rewards/margins'].numpy(), margin) and stats['rewards/accuracies'].tolist() == [1, 0, 0]
    loss, _ = losses.get('robust')(b, losses.LossOptions(beta=beta, label_smoothing=eps))
    assert np.allclose(loss.numpy(), (-(1 - eps) * ls(margin) + eps * ls(-margin)) / (1 - 2 * eps))
    loss, _ = losses.get('sigmoid')(batch(weight=torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)), losses.LossOptions(beta=beta))
    assert float(loss[0]) == pytest.approx(float(-ls(2.0)))                     # w2 scales the margin.


def test_dreamdpo_pushes_only_pairs_whose_reward_gap_exceeds_tau():
    b = batch(gap=torch.tensor([0.05, 0.5, 0.2], dtype=torch.float64))
    loss, stats = losses.get('dreamdpo')(b, losses.LossOptions(tau=0.1))
    assert stats['pushed'].tolist() == [0, 1, 1]
    assert np.allclose(loss.numpy(), [1.0, 2.0 - 1.0, 0.5 - 0.5])
    with pytest.raises(ValueError, match='needs gap'):
        losses.get('dreamdpo')(batch(), losses.LossOptions())


def test_unknown_and_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="unknown preference loss 'nope'; use one of sigmoid"):
        losses.get('nope')
    with pytest.raises(ValueError, match='registered already'):
        losses.register('sigmoid', 'again')(lambda b, o: None)
    assert 'dreamdpo' not in losses.names(needs_gap=False) and 'dreamdpo' in losses.names()

#----------------------------------------------------------------------------
# A loss added in one file (tests/helpers/toy_loss.py) with one register line is offered by both methods' configs and
# runs in the flow trainer and in the EG3D reward phase.

def test_a_new_loss_is_a_choice_of_every_method():
    assert losses.get('toy-square').fn is toy_loss.toy_square
    assert CircularDPOConfig(loss_type='toy-square').loss_type == 'toy-square'
    cfg = RewardFinetuneConfig(reward='sigma', reward_loss='pairwise', pair_loss='toy-square')
    assert cfg.phase_options()['pair_loss'] == 'toy-square'
    with pytest.raises(ConfigError, match='--pair-loss is for --reward-loss=pairwise'):
        RewardFinetuneConfig(reward='sigma', pair_loss='toy-square')
    with pytest.raises(ConfigError, match="--detail-loss-type=dreamdpo: choose one of"):
        CircularDPOConfig(loss_type='dreamdpo')                                 # Flow pairs carry no reward gap.


def test_a_new_loss_trains_a_flow_stage():
    config = flow_heads.PRESETS['tiny']
    G = flow_heads.build_generator(flow_heads.build_pipeline(config, init_seed=0), config, image_res=16)
    assets = G.volumes([0, 1, 2, 3], 0)
    data = PairData(assets=assets, conditions=torch.zeros(4, dtype=torch.long), chosen=torch.tensor([0, 2]),
        rejected=torch.tensor([1, 3]), weight=torch.ones(2), ids=[f'a{i}' for i in range(4)])
    runs = {}
    for name in ('toy-square', 'sigmoid'):
        policy, records = G.pipeline.frozen_copy(), []
        train_stage(policy, G.pipeline.frozen_copy(), 1, data, steps=3, batch=2, lr=1e-2, beta=100.0, loss_type=name,
            log=records.append)
        runs[name] = policy, records
    policy, records = runs['toy-square']
    assert records[0]['loss'] == pytest.approx(1.0)                             # (1 - 0)^2: policy = reference at first.
    assert runs['sigmoid'][1][0]['loss'] == pytest.approx(np.log(2), rel=1e-5)
    assert {'rewards/chosen', 'rewards/margins'} <= set(records[0])
    moved = [not torch.equal(a, b) for a, b in zip(policy.stages[1].velocity.state_dict().values(),
        runs['sigmoid'][0].stages[1].velocity.state_dict().values())]
    assert any(moved)                                                           # Another loss, another update.


def test_a_new_loss_runs_in_the_eg3d_reward_phase(reward_checkpoint):
    G = tiny_generator()
    z, c = latents(G, n=2)
    G.requires_grad_(True)
    phase = finetune.RewardPhase(G, **phase_options(reward_checkpoint, reward_loss='pairwise', pair_loss='toy-square',
        lambda_r=2.0, lambda_sigma=0.0, pair_beta=0.5))
    total, parts = phase.loss(G, z, c)
    assert float(total.detach()) == pytest.approx(2.0)                                   # G is its reference: margins 0, loss 1.
    assert float(parts['rewards/margins']) == pytest.approx(0.0, abs=1e-6) and parts['reward'].shape == (4,)
    total.backward()
    assert sum(float(p.grad.abs().sum()) for p in G.parameters() if p.grad is not None) > 0
    G.zero_grad(set_to_none=True)
    default = finetune.RewardPhase(G, **phase_options(reward_checkpoint, reward_loss='pairwise', lambda_sigma=0.0))
    torch.manual_seed(0)
    total_default, parts_default = default.loss(G, z, c)
    assert 'pushed' in parts_default and float(total_default.detach()) != pytest.approx(2.0)   # dreamdpo, the default, differs.

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# Unpaired losses (DRO, KTO) against their formulas.

def test_dro_regresses_the_implicit_reward_on_the_rating_above_its_baseline():
    policy = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    batch = losses.UnpairedBatch(policy, torch.tensor([-1.5, -1.0, -0.5]), torch.tensor([5.0, 0.0, 3.0]),
        value=torch.tensor([3.0, 3.0, 3.0]))
    loss, stats = losses.get_unpaired('dro')(batch, losses.UnpairedOptions(beta=2.0))
    implicit, target = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([2.0, -3.0, 0.0])        # beta (p - r); rating - V
    assert torch.allclose(stats['rewards'], implicit) and torch.allclose(loss, 0.5 * (target - implicit) ** 2)
    loss.sum().backward()
    # Rated above its baseline by more than its implicit reward says: pushed up; by less: pushed down; on target: left.
    assert policy.grad[0] < 0 and policy.grad[1] > 0 and policy.grad[2] == 0
    assert torch.allclose(policy.grad, -2.0 * (target - implicit))
    with pytest.raises(ValueError, match='baseline V'):
        losses.get_unpaired('dro')(losses.UnpairedBatch(policy, policy.detach(), policy.detach()), losses.UnpairedOptions())


def test_kto_pulls_good_samples_up_and_bad_ones_down_against_the_clamped_batch_mean():
    policy = torch.tensor([0.2, -0.1, 0.4, 0.0], requires_grad=True)
    reference = torch.zeros(4)
    label = torch.tensor([1.0, 0.0, 0.0, 1.0])
    options = losses.UnpairedOptions(beta=1.0, desirable_weight=1.0, undesirable_weight=2.0)
    loss, stats = losses.get_unpaired('kto')(losses.UnpairedBatch(policy, reference, label), options)
    z = 0.125                                                     # mean(0.2, -0.1, 0.4, 0) = 0.125 > 0
    r = policy.detach()
    expected = torch.where(label > 0.5, 1 - torch.sigmoid(r - z), 2.0 * (1 - torch.sigmoid(z - r)))
    assert torch.allclose(loss, expected) and torch.allclose(stats['kl'], torch.full([4], z))
    loss.sum().backward()
    assert (policy.grad[label > 0.5] < 0).all() and (policy.grad[label < 0.5] > 0).all()
    low, _ = losses.get_unpaired('kto')(losses.UnpairedBatch(-torch.ones(2), torch.zeros(2), torch.ones(2)), options)
    assert torch.allclose(low, 1 - torch.sigmoid(-torch.ones(2)))         # A negative mean clamps to z = 0.
    given = losses.UnpairedBatch(policy.detach(), reference, label, reference_point=torch.tensor(0.3))
    loss, stats = losses.get_unpaired('kto')(given, options)               # z given (every rank's mean): used as is.
    expected = torch.where(label > 0.5, 1 - torch.sigmoid(r - 0.3), 2.0 * (1 - torch.sigmoid(0.3 - r)))
    assert torch.allclose(loss, expected) and torch.allclose(stats['kl'], torch.full([4], 0.3))
    given.reference_point = torch.tensor(-0.5)                              # Clamped as the batch's own mean is.
    assert torch.allclose(losses.get_unpaired('kto')(given, options)[1]['kl'], torch.zeros(4))
    with pytest.raises(ValueError, match="unknown unpaired loss 'sigmoid'; use one of dro, kto"):
        losses.get_unpaired('sigmoid')
