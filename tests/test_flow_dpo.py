"""Flow-DPO's loss against a hand computation, and Circular-DPO's w1 (worked example) and w2 (normalisation)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from eg3d_rlhf.finetune.flow_dpo import Side, flow_dpo_loss, quality_gaps, quality_scores, reliability_weights

#----------------------------------------------------------------------------

class Scale(nn.Module):
    """v(x, t) = a * x + b * t: a velocity model whose MSE_t is easy to write by hand."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(float(a))), nn.Parameter(torch.tensor(float(b)))

    def forward(self, x, t, cond, context):
        return self.a * x + self.b * t.view(-1, *[1] * (x.ndim - 1))


def sides(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Side(torch.randn([2, 3], generator=g), torch.randn([2, 3], generator=g), None) for _ in range(2)]


def hand_mse(a, b, x0, x1, t):
    xt = t * x1 + (1 - t) * x0
    return ((a * xt + b * t - (x1 - x0)) ** 2).mean(axis=1)


def test_loss_matches_a_hand_computation_and_is_log_2_at_the_reference():
    chosen, rejected = sides()
    policy, reference = Scale(0.7, -0.2), Scale(0.3, 0.1)
    t, beta, T, w2 = 0.4, 0.5, 3.0, torch.tensor([1.5, 0.5])
    loss, stats = flow_dpo_loss(policy, reference, chosen, rejected, t, beta=beta, T=T, weight=w2)
    n = lambda x: x.numpy().astype(np.float64)
    implicit = [beta * T * (hand_mse(0.3, 0.1, n(s.x0), n(s.x1), t) - hand_mse(0.7, -0.2, n(s.x0), n(s.x1), t))
        for s in (chosen, rejected)]
    logits = w2.numpy() * (implicit[0] - implicit[1])
    np.testing.assert_allclose(loss.detach().numpy(), np.log1p(np.exp(-logits)), rtol=1e-5)
    np.testing.assert_allclose(stats['rewards/chosen'].numpy(), implicit[0], rtol=1e-5)
    np.testing.assert_allclose(stats['rewards/margins'].numpy(), implicit[0] - implicit[1], rtol=1e-5)
    assert stats['rewards/accuracies'].tolist() == [float(m > 0) for m in implicit[0] - implicit[1]]

    same, same_stats = flow_dpo_loss(Scale(0.3, 0.1), reference, chosen, rejected, t, beta=beta, T=T)
    np.testing.assert_allclose(same.detach().numpy(), math.log(2), rtol=1e-6)            # Margins 0 at theta = theta_ref.
    assert same_stats['rewards/margins'].abs().max() == 0 and same_stats['rewards/chosen'].abs().max() == 0


def test_gradients_reach_the_policy_only_and_vanish_with_zero_weight():
    chosen, rejected = sides(1)
    policy, reference = Scale(0.7, -0.2), Scale(0.3, 0.1)
    loss, _ = flow_dpo_loss(policy, reference, chosen, rejected, torch.tensor([0.2, 0.9]), beta=2.0)
    loss.mean().backward()
    assert policy.a.grad.abs() > 0 and reference.a.grad is None and reference.b.grad is None
    policy.zero_grad()
    loss, _ = flow_dpo_loss(policy, reference, chosen, rejected, 0.5, weight=torch.zeros(2))   # A dropped pair.
    loss.sum().backward()
    assert policy.a.grad == 0 and policy.b.grad == 0

#----------------------------------------------------------------------------

def test_quality_gaps_of_a_worked_example():
    # Scores 3, 1 (tuned) and 2, 0 (reference): wins 3, 1, 2, 0 of 12 ordered pairs -> P = 1/2, 1/6, 1/3, 0.
    g = quality_scores([3.0, 1.0, 2.0, 0.0])
    np.testing.assert_allclose(g.numpy(), [2 ** 0.5 - 1, 2 ** (1 / 6) - 1, 2 ** (1 / 3) - 1, 0.0])
    w1 = quality_gaps([3.0, 1.0, 2.0, 0.0], k=2)
    np.testing.assert_allclose(w1.numpy(), [[2 ** 0.5 - 2 ** (1 / 3), 2 ** 0.5 - 1],
        [2 ** (1 / 6) - 2 ** (1 / 3), 2 ** (1 / 6) - 1]])
    assert (w1 > 0).tolist() == [[True, True], [False, True]]                        # Kept at tau = 0.
    np.testing.assert_allclose(quality_scores([1.0, 1.0]).numpy(), [2 ** 0.5 - 1] * 2)   # A tie counts half.
    for bad, k in (([1.0], 1), ([1.0, float('nan')], 1), ([1.0, 2.0], 2)):
        with pytest.raises(ValueError):
            quality_gaps(bad, k)


def test_reliability_weights_have_mean_one_and_favour_confident_pairs():
    w2 = reliability_weights([2.0, 0.0, -1.0], [0.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-np.array([2.0, 0.0, -2.0])))
    np.testing.assert_allclose(w2.numpy(), p / p.mean())
    assert w2.mean().item() == pytest.approx(1.0) and w2[0] > w2[1] > w2[2]
    with pytest.raises(ValueError):
        reliability_weights([float('inf')], [0.0])

#----------------------------------------------------------------------------


def test_pairs_come_from_a_flow_bank_with_their_kept_assets(tmp_path):
    from eg3d_rlhf.data.bank import Bank, BankWriter
    from eg3d_rlhf.data.preferences import Judgement
    from eg3d_rlhf.finetune.flow_dpo import PairData, bank_pairs, encode_stage
    from eg3d_rlhf.generators import flow_heads
    tiny = flow_heads.PRESETS['tiny']
    G = flow_heads.build_generator(flow_heads.build_pipeline(tiny, init_seed=0), tiny, image_res=16)
    writer = BankWriter(str(tmp_path / 'bank'), G, resolution=16, dtype='float32', preview_res=16)
    writer.open()
    for seed, condition in ((0, 0), (1, 0), (2, 1)):
        writer.write(seed, condition)
    bank = Bank(str(tmp_path / 'bank'))
    judge = lambda a, b, choice: Judgement(a, b, choice, 'oracle:nose', '2026-11-22T00:00:00')
    judgements = [judge('c00-seed000000', 'c00-seed000001', 'b'), judge('c00-seed000000', 'c00-seed000001', 'tie'),
        judge('c00-seed000001', 'c01-seed000002', 'a')]
    chosen, rejected, dropped = bank_pairs(bank, judgements)
    assert (chosen, rejected, dropped) == (['c00-seed000001'], ['c00-seed000000'], dict(undecided=1, across_conditions=1))
    data, _ = PairData.from_bank(bank, judgements)
    assert data.ids == ['c00-seed000000', 'c00-seed000001'] and data.chosen.tolist() == [1] and data.rejected.tolist() == [0]
    assert torch.equal(data.assets, G.volumes([0, 1], 0)) and data.conditions.tolist() == [0, 0]
    for stage in (0, 1):                                    # The kept assets encode as runs_from_asset does.
        x1, _ = encode_stage(G.pipeline, data.assets, stage)
        assert torch.equal(x1, G.pipeline.runs_from_asset([0, 1], G.volumes([0, 1], 0))[stage].x1)
    with pytest.raises(ValueError, match='no decided pair'):
        PairData.from_bank(bank, judgements[1:])
