"""Circular-DPO's loss choices on a flow stage: each loss by hand, w2, SFT mixing, LoRA, early stopping, precomputed reference, bf16."""

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

import dnnlib
from eg3d_rlhf.finetune import flow_dpo, lora, losses
from eg3d_rlhf.finetune.circular_config import CircularDPOConfig
from eg3d_rlhf.finetune.flow_dpo import EarlyStop, PairData, Side, flow_dpo_loss, split_pairs, train_stage
from eg3d_rlhf.finetune.options import ConfigError
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.generators.flow import velocity_at

pytestmark = pytest.mark.usefixtures('one_thread')
TINY = flow_heads.PRESETS['tiny']
needs_peft = pytest.mark.skipif(not lora.available(), reason='peft is not installed (pip install -e .[lora])')

#----------------------------------------------------------------------------

class Affine(nn.Module):
    """v(x, t) = a * x + b: MSE_t by hand is a mean of squares."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(float(a))), nn.Parameter(torch.tensor(float(b)))

    def forward(self, x, t, cond, context):
        return self.a * x + self.b


def pairs(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return [Side(torch.randn([n, 4], generator=g), torch.randn([n, 4], generator=g), None) for _ in range(2)]


def hand_mse(a, b, side, t):
    x0, x1 = side.x0.double().numpy(), side.x1.double().numpy()
    return ((a * (t * x1 + (1 - t) * x0) + b - (x1 - x0)) ** 2).mean(axis=1)


def hand_parts(chosen, rejected, t, beta):
    """(margin of implicit rewards, MSE_t of the policy's chosen side) by hand, policy (0.6, 0.1), reference (0.2, -0.3)."""
    r = [beta * (hand_mse(0.2, -0.3, s, t) - hand_mse(0.6, 0.1, s, t)) for s in (chosen, rejected)]
    return r[0] - r[1], hand_mse(0.6, 0.1, chosen, t)


def tiny_data():
    """A tiny preset's pipeline and 4 pairs over 6 of its samples (condition 0), weighted 1.5, 0.5, 1, 1."""
    G = flow_heads.build_generator(flow_heads.build_pipeline(TINY, init_seed=0), TINY, image_res=16)
    data = PairData(assets=G.volumes(list(range(6)), 0), conditions=torch.zeros(6, dtype=torch.long),
        chosen=torch.tensor([0, 2, 4, 1]), rejected=torch.tensor([1, 3, 5, 0]), weight=torch.tensor([1.5, 0.5, 1.0, 1.0]),
        ids=[f'a{i}' for i in range(6)])
    return G, data

#----------------------------------------------------------------------------

@pytest.mark.parametrize('loss_type', losses.names(needs_gap=False))
def test_each_loss_on_a_flow_stage_matches_a_hand_computation(loss_type):
    chosen, rejected = pairs()
    t, beta, eps = 0.3, 0.7, 0.2
    margin, sft = hand_parts(chosen, rejected, t, beta)
    ls = lambda x: -np.log1p(np.exp(-x))
    want = dict(sigmoid=-(1 - eps) * ls(margin) - eps * ls(-margin), robust=(-(1 - eps) * ls(margin) + eps * ls(-margin)) / (1 - 2 * eps),
        ipo=(margin / beta - 1 / (2 * beta)) ** 2, hinge=np.maximum(0, 1 - margin), sft=sft)
    if loss_type not in want:
        pytest.skip(f'{loss_type} is not one of the registry\'s built-in losses')
    loss, _ = flow_dpo_loss(Affine(0.6, 0.1), Affine(0.2, -0.3), chosen, rejected, t, beta=beta, loss_type=loss_type,
        label_smoothing=eps if loss_type in ('sigmoid', 'robust') else 0.0)
    np.testing.assert_allclose(loss.detach().numpy(), want[loss_type], rtol=1e-4, atol=1e-6)


def test_w2_inside_scales_the_logit_and_outside_the_loss():
    chosen, rejected = pairs(1)
    t, beta, w2 = 0.6, 1.3, torch.tensor([2.0, 0.5, 1.0])
    margin, _ = hand_parts(chosen, rejected, t, beta)
    softplus = lambda x: np.log1p(np.exp(-x))                      # -log sigmoid(x)
    run = lambda **kw: flow_dpo_loss(Affine(0.6, 0.1), Affine(0.2, -0.3), chosen, rejected, t, beta=beta, weight=w2, **kw)
    inside, stats = run()                                          # The default: Eq. 7.
    np.testing.assert_allclose(inside.detach().numpy(), softplus(w2.numpy() * margin), rtol=1e-4)
    outside, stats_out = run(w2_placement='outside')               # Algorithm 1, line 22.
    np.testing.assert_allclose(outside.detach().numpy(), w2.numpy() * softplus(margin), rtol=1e-4)
    assert not np.allclose(inside.detach().numpy(), outside.detach().numpy())
    assert torch.equal(stats['rewards/margins'], stats_out['rewards/margins'])          # The stats are unweighted.
    np.testing.assert_allclose(run(w2_placement='inside')[0].detach().numpy(), inside.detach().numpy())
    with pytest.raises(ValueError, match='w2 placement'):
        run(w2_placement='between')


def test_sft_mixing_adds_exactly_w_times_the_sft_loss():
    chosen, rejected = pairs(2)
    W, t = 0.25, torch.tensor([0.1, 0.5, 0.9])
    run = lambda loss_type, **kw: flow_dpo_loss(Affine(0.6, 0.1), Affine(0.2, -0.3), chosen, rejected, t, beta=2.0,
        weight=torch.tensor([1.0, 2.0, 0.5]), loss_type=loss_type, **kw)
    for loss_type in ('sigmoid', 'ipo', 'robust'):
        plain, _ = run(loss_type)
        mixed, stats = run(loss_type, sft_weight=W)
        sft, _ = run('sft')
        np.testing.assert_allclose((mixed - plain).detach().numpy(), W * sft.detach().numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(stats['nll_loss'].numpy(), hand_mse(0.6, 0.1, chosen, t.numpy()[:, None]), rtol=1e-4)
    with pytest.raises(ValueError, match='SFT mixing'):
        run('sft', sft_weight=W)
    with pytest.raises(ConfigError, match='--sft-weight'):
        CircularDPOConfig(loss_type='sft', sft_weight=0.5)
    assert CircularDPOConfig(sft_weight=0.5).stage_options('sft')['sft_weight'] == 0.0   # Groups e and f stay plain SFT.

#----------------------------------------------------------------------------
# The defaults are today's training, and the default config's stage options are the "off" values.

def test_the_default_config_trains_as_train_stage_does_without_options():
    G, data = tiny_data()
    options = CircularDPOConfig().stage_options('dpo')
    runs = []
    for kw in (dict(beta=1000.0), options):
        policy, records = G.pipeline.frozen_copy(), []
        train_stage(policy, G.pipeline.frozen_copy(), 1, data, 4, 3, 1e-2, seed=3, log=records.append, **kw)
        runs.append((policy, records))
    assert runs[0][1] == runs[1][1] and 'eval/rewards/accuracies' not in runs[0][1][-1]
    for a, b in zip(runs[0][0].modules(), runs[1][0].modules()):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_bad_option_values_are_refused_naming_the_flag():
    for kw, flag in ((dict(w2_placement='middle'), '--w2-placement'), (dict(early_stop_split=1.0), '--early-stop-split'),
            (dict(early_stop_patience=0), '--early-stop-patience'), (dict(lora_rank=-1), '--lora-rank')):
        with pytest.raises(ConfigError, match=flag):
            CircularDPOConfig(**kw)

#----------------------------------------------------------------------------

def test_early_stopping_counts_evaluations_since_the_best():
    stop = EarlyStop(patience=2)
    assert [stop.update(s) for s in (0.5, 0.6, 0.6, 0.7, 0.65, 0.7)] == [False, False, False, False, False, True]


def test_a_stage_stops_at_the_expected_evaluation_on_held_out_pairs():
    G, data = tiny_data()
    train, held = split_pairs(data, 0.5, seed=4)
    assert (len(train), len(held)) == (2, 2)
    both = sorted(zip(train.chosen.tolist() + held.chosen.tolist(), train.rejected.tolist() + held.rejected.tolist()))
    assert both == sorted(zip(data.chosen.tolist(), data.rejected.tolist()))       # A split, nothing lost or repeated.
    # lr 0: the policy stays the reference, every held-out margin is 0 and its accuracy 0 at every evaluation. The first
    # evaluation (step 1) is the best, so with patience 3 the evaluations at steps 3, 5, 7 do not improve: stop at 7.
    records = []
    train_stage(G.pipeline.frozen_copy(), G.pipeline.frozen_copy(), 1, data, 20, 2, 0.0, 1000.0, seed=4,
        log=records.append, early_stop_split=0.5, early_stop_patience=3, early_stop_every=2)
    assert [r['step'] for r in records] == list(range(8)) and records[-1].get('early_stop') is True
    evaluated = [r for r in records if 'eval/rewards/accuracies' in r]
    assert [r['step'] for r in evaluated] == [1, 3, 5, 7]
    assert all(r['eval/rewards/accuracies'] == 0 and r['eval/pairs'] == 2 for r in evaluated)
    assert evaluated[0]['eval/loss'] == pytest.approx(np.log(2), rel=1e-5)
    # The same held-out draws at every evaluation: a policy that learnt changes the measure, a repeated call does not.
    policy = G.pipeline.frozen_copy()
    train_stage(policy, G.pipeline.frozen_copy(), 1, train, 5, 2, 1e-2, 1000.0, seed=4)
    once = flow_dpo.held_out_accuracy(policy, G.pipeline, 1, held, 2, 1000.0, seed=4)
    assert once == flow_dpo.held_out_accuracy(policy, G.pipeline, 1, held, 2, 1000.0, seed=4)
    assert once[1] != pytest.approx(np.log(2), rel=1e-5)

#----------------------------------------------------------------------------

def test_lora_without_peft_is_one_line(monkeypatch):
    monkeypatch.setattr(lora, 'available', lambda: False)
    with pytest.raises(ConfigError, match=r'^--lora-rank needs `pip install peft`$'):
        CircularDPOConfig(lora_rank=4)
    with pytest.raises(RuntimeError, match='pip install peft'):
        lora.wrap(nn.Linear(2, 2), 2)


@needs_peft
@pytest.mark.parametrize('index', [0, 1])
def test_lora_trains_only_its_adapters_and_merges_into_the_same_outputs(index):
    G, data = tiny_data()
    base = G.pipeline.frozen_copy()
    before = {k: v.clone() for k, v in base.stages[index].velocity.state_dict().items()}
    policy = base.frozen_copy()
    train_stage(policy, base, index, data, 3, 2, 1e-2, 1000.0, seed=1, lora_rank=2, merge_lora=False)
    wrapped = policy.stages[index].velocity
    names = lora.target_layers(base.stages[index].velocity)
    assert names
    trained = {k: v for k, v in wrapped.named_parameters() if 'lora_' in k}
    assert len(trained) == 2 * len(names)                                           # A and B of every Linear and Conv.
    assert any(v.abs().sum() > 0 for k, v in trained.items() if 'lora_B' in k)        # B starts at zero; it moved.
    for name, value in wrapped.get_base_model().state_dict().items():               # The base weights did not.
        if 'lora_' not in name:
            assert torch.equal(value, before[name.replace('.base_layer', '')]), name
    for i, stage in enumerate(policy.stages):                                       # The other stage is untouched.
        if i != index:
            assert all(torch.equal(a, b) for a, b in zip(stage.velocity.state_dict().values(), base.stages[i].velocity.state_dict().values()))
    # The merged model: the velocity model's own class and keys, the same outputs as the wrapped one.
    x1, context = flow_dpo.encode_stage(base, data.assets[:3], index)
    x = torch.randn(x1.shape, generator=torch.Generator().manual_seed(0))
    t, cond = torch.tensor([0.2, 0.5, 0.8]), torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        want = velocity_at(wrapped, x, t, cond, context)
        merged = lora.merge(copy.deepcopy(wrapped))
        got = velocity_at(merged, x, t, cond, context)
        unchanged = velocity_at(base.stages[index].velocity, x, t, cond, context)
    assert type(merged) is type(base.stages[index].velocity) and list(merged.state_dict()) == list(before)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    assert not torch.allclose(got, unchanged, atol=1e-6)                            # The adapters did change the model.
    # train_stage merges by default: a plain velocity model, the same bits as merging by hand.
    plain = base.frozen_copy()
    train_stage(plain, base, index, data, 3, 2, 1e-2, 1000.0, seed=1, lora_rank=2)
    assert type(plain.stages[index].velocity) is type(merged)
    assert all(torch.equal(a, b) for a, b in zip(plain.stages[index].velocity.state_dict().values(), merged.state_dict().values()))

#----------------------------------------------------------------------------
# Earlier stages train at early flow times (structure_t_max): the times every velocity call sees, policy and reference.

@pytest.mark.parametrize('t_max', [0.25, 1.0])
def test_train_stage_draws_flow_times_below_t_max(t_max):
    G, data = tiny_data()
    policy, reference = G.pipeline.frozen_copy(), G.pipeline.frozen_copy()
    seen = []
    for pipe in (policy, reference):
        pipe.stages[0].velocity.register_forward_pre_hook(lambda module, args: seen.append(args[1].detach().clone()))
    train_stage(policy, reference, 0, data, 6, 4, 1e-2, 1000.0, seed=1, loss_type='ipo', t_max=t_max)
    t = torch.cat(seen)
    assert len(t) == 6 * 4 * 4 and t.min() >= 0 and t.max() <= t_max         # Steps x pairs x (2 sides, 2 models).
    assert t.max() > 0.8 * t_max and len(set(t.tolist())) >= 6 * 4             # The range used, one t per pair.


def test_the_config_gives_earlier_stages_their_t_max_and_beta_and_the_last_stage_every_t_and_beta():
    cfg = CircularDPOConfig(structure_t_max=0.4, beta=500.0, structure_beta=50.0)
    first, last = cfg.stage_options('dpo', last=False), cfg.stage_options('dpo', last=True)
    assert (first['t_max'], first['beta'], last['t_max'], last['beta']) == (0.4, 50.0, 1.0, 500.0)
    assert cfg.stage_options('sft', last=False)['t_max'] == 0.4                 # Group e's structure trains alike.
    assert CircularDPOConfig(beta=500.0).stage_options('dpo', last=False)['beta'] == 500.0    # Default: --beta.
    for kw, flag in ((dict(structure_t_max=0.0), '--structure-t-max=0.0: must be above 0'),
            (dict(structure_t_max=1.5), '--structure-t-max=1.5: must be at most 1'),
            (dict(structure_beta=0.0), '--structure-beta=0.0: must be above 0')):
        with pytest.raises(ConfigError, match=flag):
            CircularDPOConfig(**kw)

#----------------------------------------------------------------------------
# At the size of real generators (issue 35): a precomputed reference (the reference's numbers of every draw, run once
# before training) and bf16 autocast of the velocity passes.

def warm_data():
    """tiny_data() with both stages fitted 5 SFT steps first: the tiny preset's velocities start at zero (their output
    layers do), which would make the reference's numbers blind to its weights, precision and flow times."""
    G, data = tiny_data()
    for index in (0, 1):
        train_stage(G.pipeline, G.pipeline, index, data, 5, 4, 1e-2, 1.0, seed=9, loss_type='sft')
    return G, data


def trained(G, data, index, reference=None, steps=6, **kw):
    """(step records, the stage's weights) of train_stage on a copy of the pipeline (lr 1e-3, beta 1000, seed 2)."""
    policy, records = G.pipeline.frozen_copy(), []
    train_stage(policy, G.pipeline.frozen_copy() if reference is None else reference, index, data, steps, 3, 1e-3,
        1000.0, seed=2, log=records.append, **kw)
    return records, policy.stages[index].velocity.state_dict()


@pytest.mark.parametrize('index', [0, 1])
@pytest.mark.parametrize('options', [dict(loss_type='sigmoid'), dict(loss_type='ipo', early_stop_split=0.5,
    early_stop_every=2, early_stop_patience=5), dict(loss_type='sigmoid', t_max=0.3, w2_placement='outside')])
def test_a_precomputed_reference_trains_as_the_live_one(index, options):
    G, data = warm_data()
    live, weights = trained(G, data, index, **options)
    assert 'eval/loss' in live[-1] or 'early_stop_split' not in options
    # One step a reference pass, as in training: every loss, stat and weight bit for bit.
    records, cached = trained(G, data, index, precompute_ref=True, **options)
    assert records == live
    assert all(torch.equal(cached[k], weights[k]) for k in weights)
    # Steps joined into passes of 7 pairs (other matrix blocking): to float tolerance, a few float32 ulps of MSE_t
    # (about 1e-7) times beta 1000 in the rewards.
    cache = flow_dpo.reference_cache(G.pipeline, G.pipeline.frozen_copy(), index, data, 6, 3, seed=2, ref_batch=7,
        **{k: v for k, v in options.items() if k in ('loss_type', 'early_stop_split', 't_max')})
    records, cached = trained(G, data, index, reference=cache, **options)
    for got, want in zip(records, live):
        assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-3, abs=1e-3) for k in want)
    for k in weights:
        np.testing.assert_allclose(cached[k].numpy(), weights[k].numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('loss_type', ['ipo', 'sft'])
def test_with_a_precomputed_reference_the_reference_never_runs_during_training(loss_type):
    G, data = warm_data()
    def calls(precompute):
        policy, reference, seen = G.pipeline.frozen_copy(), G.pipeline.frozen_copy(), []
        policy.stages[1].velocity.register_forward_hook(lambda *a: seen.append('policy'))
        reference.stages[1].velocity.register_forward_hook(lambda *a: seen.append('reference'))
        train_stage(policy, reference, 1, data, 6, 3, 1e-3, 1000.0, seed=2, loss_type=loss_type, early_stop_split=0.5,
            early_stop_every=2, early_stop_patience=5, precompute_ref=precompute)
        return seen
    live = calls(False)                 # The check can fail: live, the reference runs between the policy's passes.
    assert 'reference' in live[live.index('policy'):]
    seen = calls(True)
    first = seen.index('policy')
    assert 'reference' not in seen[first:]
    # Before the first step: every step's two sides (SFT's steps read no reference) and the held-out pairs' (2 pairs,
    # one pass) once, however often early stopping evaluates.
    assert seen[:first] == ['reference'] * ((2 * 6 if loss_type == 'ipo' else 0) + 2)
    assert seen.count('policy') == (6 if loss_type == 'sft' else 2 * 6) + 3 * 2     # + 3 evaluations, 2 sides each.


def test_a_cache_trains_without_the_reference_and_one_of_other_settings_is_refused():
    G, data = warm_data()
    live, weights = trained(G, data, 1, early_stop_split=0.5, early_stop_every=2)
    reference = G.pipeline.frozen_copy()
    cache = flow_dpo.reference_cache(G.pipeline, reference, 1, data, 6, 3, seed=2, early_stop_split=0.5)
    for p in reference.stages[1].velocity.parameters():       # Gone: any pass of it now would give nan.
        p.data.fill_(float('nan'))
    records, cached = trained(G, data, 1, reference=cache, early_stop_split=0.5, early_stop_every=2)
    assert records == live and all(torch.equal(cached[k], weights[k]) for k in weights)
    # A policy that starts as the reference is its own: no copy at all, the same training (its mode kept).
    policy, records = G.pipeline.frozen_copy(), []
    policy.stages[1].velocity.train()
    own = flow_dpo.reference_cache(policy, policy, 1, data, 6, 3, seed=2, early_stop_split=0.5)
    assert policy.stages[1].velocity.training and torch.equal(own.chosen, cache.chosen) and torch.equal(own.held[1], cache.held[1])
    train_stage(policy, own, 1, data, 6, 3, 1e-3, 1000.0, seed=2, log=records.append, early_stop_split=0.5, early_stop_every=2)
    assert records == live
    for kw, message in ((dict(seed=3), 'seed=2 .train_stage: 3.'), (dict(steps=7), '6 steps .train_stage: 7.'),
            (dict(early_stop_split=0.0), 'early_stop_split=0.5 .train_stage: 0.0.'),
            (dict(data=data.select([True, True, False, True])), 'pairs='), (dict(bf16=True), 'bf16=False'),
            (dict(loss_type='sft'), 'reference=True .train_stage: False.')):
        args = dict(dict(data=data, steps=6, seed=2, early_stop_split=0.5), **kw)
        with pytest.raises(ValueError, match=rf'^the precomputed reference was drawn for {message}'):
            train_stage(G.pipeline.frozen_copy(), cache, 1, args.pop('data'), args.pop('steps'), 3, 1e-3, 1000.0, **args)


def bf16_and_float32(G, data, index, beta):
    """{precision: (loss [4], margin / beta [4], gradient)} of one draw of 4 pairs, the policy trained 5 steps away from
    the reference (in float32)."""
    policy, reference = G.pipeline.frozen_copy(), G.pipeline.frozen_copy()
    train_stage(policy, reference, index, data, 5, 3, 1e-3, 1000.0, seed=2, loss_type='ipo')
    velocity = policy.stages[index].velocity.requires_grad_(True)
    draw = flow_dpo.step_draw(policy, data, index, 7, 0, 4)
    out = {}
    for bf16 in (False, True):
        velocity.zero_grad()
        loss, stats = flow_dpo_loss(flow_dpo.in_precision(velocity, bf16), flow_dpo.in_precision(
            reference.stages[index].velocity, bf16), draw.chosen, draw.rejected, draw.t, draw.cond, beta=beta)
        loss.sum().backward()
        out[bf16] = loss.detach(), stats['rewards/margins'] / beta, torch.cat([p.grad.flatten() for p in velocity.parameters()])
    return out


BF16_MARGIN = 2e-3        # The stated tolerance of bf16's margin / beta (docs/guides/circular-dpo.md); measured up to 7.5e-4
                          # (docs/results/2026-11-27-circular-dpo-notebook.md).


@pytest.mark.parametrize('index', [0, 1])
def test_bf16_keeps_the_margins_within_its_tolerance_of_float32(index):
    # Measured on the tiny preset, both stages fitted briefly, the policy 5 steps from the reference, 20 draws of 4
    # pairs: margin / beta (the difference of the two sides' MSE_t differences) within 7.5e-4 of float32's (median
    # 1.3e-4 at the structure stage, 3.7e-5 at the detail stage; a side's MSE_t within 7.6e-4 relative), gradients
    # at cosine >= 0.9998; along 10 training steps the steps' mean margins / beta within 3.4e-4. Stated: 2e-3 and
    # cosine 0.999, so a sigmoid loss (1-Lipschitz in its margin) is within beta * 2e-3 (2 at beta 1000).
    G, data = warm_data()
    beta = 1000.0
    out = bf16_and_float32(G, data, index, beta)
    (loss, margin, grad), (loss16, margin16, grad16) = out[False], out[True]
    assert not torch.equal(margin16, margin)                                    # bf16 did run.
    assert (margin16 - margin).abs().max() < BF16_MARGIN and margin.abs().max() > 2 * BF16_MARGIN
    assert (loss16 - loss).abs().max() < beta * BF16_MARGIN
    assert torch.nn.functional.cosine_similarity(grad16, grad, dim=0) > 0.999
    # train_stage: float32 weights, the same first step (policy = reference), the margins within tolerance after.
    live, weights = trained(G, data, index)
    records, weights16 = trained(G, data, index, bf16=True)
    assert all(w.dtype == torch.float32 for w in weights16.values())
    assert records[0] == live[0] and records[1] != live[1]
    for got, want in zip(records, live):
        assert abs(got['rewards/margins'] - want['rewards/margins']) < beta * BF16_MARGIN
    assert trained(G, data, index, bf16=True, precompute_ref=True)[0] == records   # Its reference runs in bf16 too.


def test_bf16_is_refused_in_one_line_where_the_device_cannot_run_it(monkeypatch):
    from eg3d_rlhf.finetune import circular_run, options
    line = r'^--bf16: cuda cannot run bf16 autocast \(it needs the CPU or a CUDA device with native bf16'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: not including_emulation)
    assert flow_dpo.bf16_problem('cuda') is None and flow_dpo.bf16_problem('cpu') is None
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: including_emulation)
    assert re.match(line, flow_dpo.bf16_problem('cuda')) and '\n' not in flow_dpo.bf16_problem('cuda')
    with pytest.raises(options.RunError, match=line):
        circular_run.run(CircularDPOConfig(bf16=True), dnnlib.EasyDict(device='cuda'))
    assert flow_dpo.bf16_problem('mps') is not None
    monkeypatch.setattr(torch.amp, 'is_autocast_available', lambda device_type: False)
    G, data = warm_data()
    with pytest.raises(ValueError, match=r'^--bf16: cpu cannot run bf16 autocast'):
        train_stage(G.pipeline.frozen_copy(), G.pipeline.frozen_copy(), 1, data, 1, 2, 1e-3, 1000.0, bf16=True)
    cfg = CircularDPOConfig(precompute_ref=True, bf16=True)
    assert {k: cfg.stage_options('dpo')[k] for k in ('precompute_ref', 'bf16')} == dict(precompute_ref=True, bf16=True)
    assert not any(CircularDPOConfig().stage_options('dpo')[k] for k in ('precompute_ref', 'bf16'))
