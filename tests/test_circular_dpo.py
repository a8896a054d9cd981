"""Circular-DPO: one stage trained at a time, dropped pairs count for nothing, the groups' recipes, train.py's flow runs."""

import dataclasses
import json
import os
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eg3d_rlhf.analysis.collateral import MESH_STATS
from eg3d_rlhf.data import annotators
from eg3d_rlhf.finetune import circular_dpo, circular_run
from eg3d_rlhf.finetune.circular_config import GROUPS, CircularDPOConfig
from eg3d_rlhf.finetune.circular_dpo import (RECIPES, CircularDPO, bridge_candidates, bridge_pairs, demo_preferences,
    forward_candidates)
from eg3d_rlhf.finetune.circular_run import resume_differences, run_ranks, versus_a, versus_rows
from eg3d_rlhf.finetune.flow_dpo import PairData, train_stage
from eg3d_rlhf.finetune.options import ConfigError, RunError
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.geometry.sigma import CubeGrid
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from tests.helpers.cli import refused_in_one_line
from tests.helpers.events import events, steps
from torch_utils import report_to
from tests.helpers.flow import save_tiny
from tests.helpers.train import train_script as train

TINY = flow_heads.PRESETS['tiny']

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tiny():
    """A tiny two-stage flow (8^3 volumes, 2 conditions), its demo preference data and the bundled flow reward."""
    G = flow_heads.build_generator(flow_heads.build_pipeline(TINY, init_seed=0), TINY, image_res=16)
    data, judgements = demo_preferences(G, list(range(6)), 'oracle:nose', 0.5, batch=4, res=32)
    return G, data, judgements, load_reward(demo.FLOW_REWARD)


def changed(pipeline, other):
    """Per velocity model: does any weight differ?"""
    return [any(not torch.equal(a, b) for a, b in zip(m.state_dict().values(), n.state_dict().values()))
        for m, n in zip(pipeline.modules(), other.modules())]


def test_demo_preferences_pair_samples_within_a_condition(tiny):
    G, data, judgements, _ = tiny
    assert len(judgements) == 2 * 15 and data.assets.shape == (12, 8, 8, 8)       # All pairs of 6, per condition.
    assert (data.conditions[data.chosen] == data.conditions[data.rejected]).all()
    assert len(data) == sum(j.choice in ('a', 'b') for j in judgements)
    assert torch.equal(data.assets[data.ids.index('c01-seed000003')], G.volumes([3], 1)[0])     # The ids' own samples.


def test_mirrored_pairs_add_each_pair_flipped_left_to_right_with_the_same_choice(tiny):
    G, data, _, _ = tiny
    counted = PairData(**{**data.__dict__, 'wins': torch.arange(12.0) % 6, 'pool': torch.full((12,), 6.0)})
    both = counted.mirrored()
    m, p = len(data.assets), len(data)
    assert len(both.assets) == 2 * m and len(both) == 2 * p and torch.equal(both.assets[:m], data.assets)
    assert torch.equal(both.assets[m:], data.assets.flip(1))                            # x, EG3D's left-right axis.
    assert torch.equal(both.chosen, torch.cat([data.chosen, data.chosen + m]))
    assert torch.equal(both.rejected, torch.cat([data.rejected, data.rejected + m]))
    assert torch.equal(both.conditions[m:], data.conditions) and torch.equal(both.weight[p:], data.weight)
    assert torch.equal(both.wins[m:], counted.wins) and both.ids[m + 3] == data.ids[3] + '-mirror'
    # The taste judges a head and its mirror image alike: the mirrored pairs are as true as the judged ones.
    cube = CubeGrid(8, G.cube_length)
    for taste in (annotators.head_size, annotators.mirror_mismatch):
        values = [taste(v, cube) for v in both.assets.numpy()]
        assert np.allclose(values[:m], values[m:], atol=1e-6) and len(set(np.round(values[:m], 6))) > 1, taste
    # Drawn stage data (step 2's) flips with its asset: each stage's x1 and context are the mirrored asset's encoding.
    drawn = dict(enumerate(flow_heads.encode_assets(G.pipeline, data.assets)))
    both = PairData(**{**data.__dict__, 'drawn': drawn}).mirrored()
    for index, (x1, context) in enumerate(flow_heads.encode_assets(G.pipeline, both.assets)):
        assert torch.equal(both.drawn[index][0], x1) and (context is None) == (both.drawn[index][1] is None)
        assert context is None or torch.equal(both.drawn[index][1], context)
    assert not torch.equal(drawn[0][0], drawn[0][0].flip(2))                            # The flip does change them.


def test_resume_run_reads_a_setting_added_since_the_folder_ran_as_its_default():
    cfg = CircularDPOConfig()
    now = json.loads(json.dumps(dict(dataclasses.asdict(cfg), seed=0, processes=1, run_dir='/r', snap_steps=5)))
    before = {k: v for k, v in now.items() if k not in ('mirror_pairs', 'snap_steps')}   # Written before they existed.
    assert resume_differences(before, now, cfg) == []
    assert resume_differences(before, dict(now, mirror_pairs=True), cfg) == ['mirror_pairs']   # Not its default.
    assert resume_differences(before, dict(now, beta=10.0, run_dir='/s'), cfg) == ['beta']
    alone = {k: v for k, v in before.items() if k != 'processes'}     # Written before its method ran under torchrun:
    assert resume_differences(alone, now, cfg) == []                       # one process.
    assert resume_differences(alone, dict(now, processes=2), cfg) == ['processes']


@pytest.mark.parametrize('index', [0, 1])
@pytest.mark.parametrize('loss_type', ['sigmoid', 'sft'])
def test_only_the_trained_stage_changes(tiny, index, loss_type):
    G, data, _, _ = tiny
    policy, reference = G.pipeline.frozen_copy(), G.pipeline.frozen_copy()
    records = []
    train_stage(policy, reference, index, data, steps=3, batch=4, lr=1e-2, beta=100.0, loss_type=loss_type, log=records.append)
    assert changed(policy, G.pipeline) == [i == index for i in range(2)]
    assert changed(reference, G.pipeline) == [False, False]
    assert len(records) == 3 and all(np.isfinite(r['loss']) for r in records)
    if loss_type == 'sigmoid':
        assert records[0]['loss'] == pytest.approx(np.log(2), rel=1e-5)       # theta = theta_ref at the first step.
        assert {'rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins'} <= set(records[0])


def test_learning_rate_zero_changes_nothing(tiny):
    G, data, _, _ = tiny
    policy = G.pipeline.frozen_copy()
    train_stage(policy, G.pipeline.frozen_copy(), 1, data, steps=3, batch=4, lr=0.0, beta=100.0)
    assert changed(policy, G.pipeline) == [False, False]


def test_pairs_with_w1_at_or_below_tau_contribute_nothing(tiny):
    G, data, _, reward = tiny
    candidates = bridge_candidates(G, G.pipeline, G.pipeline.frozen_copy(), 0, reward, [0, 1, 2], batch=4)
    assert len(candidates['w1']) == 2 * 9 and len(candidates['data'].assets) == 2 * 6
    w1 = candidates['w1']
    assert (w1.abs() < 1).all() and len(set(w1.tolist())) > 1
    kept, record = bridge_pairs(candidates, tau=0.0)
    assert record['kept'] == int((w1 > 0).sum()) > 0 and record['dropped'] == int((w1 <= 0).sum()) > 0
    assert kept.weight.mean().item() == pytest.approx(1.0, rel=1e-5)              # w2 has mean 1 over the kept pairs.
    both, mirrored = bridge_pairs(candidates, tau=0.0, mirror=True)                  # Each kept pair and its mirror image.
    assert record['trained'] == len(kept) and mirrored['trained'] == len(both) == 2 * len(kept)
    assert torch.equal(both.weight, kept.weight.repeat(2)) and torch.equal(both.drawn[0][0][12:], kept.drawn[0][0].flip(2))
    # Garbage in every dropped pair's rejected asset (not used by a kept pair) leaves training exactly as it was.
    drawn = candidates['data'].drawn[0][0].clone()
    spoiled = dict(candidates, data=PairData(**{**candidates['data'].__dict__, 'assets': candidates['data'].assets.clone(),
        'drawn': {0: (drawn, None)}}))
    used = set(kept.chosen.tolist()) | set(kept.rejected.tolist())
    for j in set(candidates['data'].rejected[w1 <= 0].tolist()) - used:
        spoiled['data'].assets[j] = torch.randn_like(spoiled['data'].assets[j]) * 30
        drawn[j] = torch.randn_like(drawn[j]) * 30
    results = []
    for cands in (candidates, spoiled):
        policy = G.pipeline.frozen_copy()
        train_stage(policy, G.pipeline.frozen_copy(), 0, bridge_pairs(cands, tau=0.0)[0], 3, 4, 1e-2, 100.0)
        results.append(policy)
    assert changed(results[0], results[1]) == [False, False] and changed(results[0], G.pipeline)[0]
    everything, _ = bridge_pairs(candidates, tau=0.0, use_w1=False, use_w2=False)
    assert len(everything) == len(w1) and (everything.weight == 1).all()
    with pytest.raises(ValueError, match='kept no pair'):
        bridge_pairs(candidates, tau=1.0)


def test_step_two_trains_a_stage_on_what_it_drew(tiny):
    G, _, _, reward = tiny
    policy = G.pipeline.frozen_copy()
    candidates = bridge_candidates(G, policy, G.pipeline.frozen_copy(), 0, reward, [0, 1, 2], batch=4)
    data = candidates['data']
    x1, context = data.drawn[0]
    assert context is None and len(x1) == len(data.assets) == 12
    run = G.pipeline.run_stage(0, [0, 1, 2], G.pipeline.condition_tensor(1, 3), None, G.steps, G.sampler)
    assert torch.equal(x1[6:9], run.x1) and torch.equal(x1[9:12], run.x1)   # Both sides keep the structure drawn.
    pairs, _ = bridge_pairs(candidates, tau=-1.0)
    results = []
    for drawn in (data.drawn, {0: (-x1, None)}):                         # Training reads what was drawn.
        tuned = G.pipeline.frozen_copy()
        train_stage(tuned, G.pipeline.frozen_copy(), 0, PairData(**{**pairs.__dict__, 'drawn': drawn}), 3, 4, 1e-2, 100.0)
        results.append(tuned)
    assert changed(results[0], results[1]) == [True, False]
    with pytest.raises(ValueError, match='drawn data must cover'):
        PairData(**{**data.__dict__, 'drawn': {0: (x1[:5], None)}})


def test_each_group_trains_the_stages_its_recipe_names_and_shared_phases_run_once(tiny):
    G, data, _, reward = tiny
    cfg = CircularDPOConfig(ablation='all', dpo_steps=2, dpo_batch=4, bridge_seeds='0-2', eval_seeds='none')
    records = []
    trainer = CircularDPO(cfg, G, data, reward, log=records.append)
    for group in GROUPS:
        recipe = RECIPES[group]
        assert changed(trainer.tuned(group), G.pipeline) == [recipe.first is not None, recipe.last is not None], group
    phases = [r['phase'] for r in records if r['kind'] == 'phase']
    assert len(phases) == len(set(phases))                              # Nothing trained or drawn twice.
    trained = [p for p in phases if not p.endswith('candidates-0')]
    assert trained.count('last-dpo-0') == 1 and len([p for p in trained if p.startswith('last-dpo-0')]) == 6
    assert phases.count('last-dpo-0/candidates-0') == 1                 # a, g, h and k share step 2's candidates.
    bridges = [r for r in records if r['kind'] == 'bridge' and 'order' not in r]
    assert [(r['use_w1'], r['use_w2'], 'swapped' in r) for r in bridges] == [(True, True, False), (False, True, False),
        (True, False, False), (True, True, True)]
    assert len([k for k in trainer.bridges if k[-1][0] != 'forward']) == 1  # a, g, h and k share step 2's candidates.
    assert bridges[3]['kept'] == bridges[0]['kept'] and bridges[3]['w2'] == bridges[0]['w2']    # k: a's pairs.
    assert bridges[1]['kept'] == bridges[1]['pairs'] and bridges[2]['w2'] == [1.0] * bridges[2]['kept']


def test_the_placebo_swaps_chosen_and_rejected_in_a_random_half_of_the_kept_pairs_and_keeps_their_weights(tiny):
    G, data, _, reward = tiny
    candidates = bridge_candidates(G, G.pipeline.frozen_copy(), G.pipeline.frozen_copy(), 0, reward, list(range(8)), 8)
    real, record = bridge_pairs(candidates, tau=-1.0)
    placebo, placebo_record = bridge_pairs(candidates, tau=-1.0, placebo_seed=3)
    swapped = placebo.chosen != real.chosen
    assert placebo_record['swapped'] == int(swapped.sum()) and 0.3 * len(real) < int(swapped.sum()) < 0.7 * len(real)
    assert torch.equal(placebo.chosen[swapped], real.rejected[swapped]) and torch.equal(placebo.rejected[swapped],
        real.chosen[swapped]) and torch.equal(placebo.rejected[~swapped], real.rejected[~swapped])
    assert torch.equal(placebo.weight, real.weight) and 'swapped' not in record
    assert torch.equal(bridge_pairs(candidates, tau=-1.0, placebo_seed=3)[0].chosen, placebo.chosen)     # Seeded.
    mirrored, _ = bridge_pairs(candidates, tau=-1.0, mirror=True, placebo_seed=3)                       # Then mirrored.
    assert torch.equal(mirrored.chosen[:len(placebo)], placebo.chosen)


def test_earlier_stages_train_on_structure_batch_pairs_a_step_and_the_last_on_dpo_batch(tiny):
    G, data, _, reward = tiny
    seen = {0: [], 1: []}
    hooks = [G.pipeline.stages[i].velocity.register_forward_pre_hook(
        lambda module, args, i=i: seen[i].append(args[1].detach().clone())) for i in seen]
    try:
        for structure_batch in (None, 6):
            cfg = CircularDPOConfig(ablation='a', dpo_steps=2, dpo_batch=4, bridge_seeds='0-2', eval_seeds='none',
                structure_batch=structure_batch, structure_t_max=0.25)
            CircularDPO(cfg, G, data, reward).tuned('a')
            # Training passes: 2 steps x 2 sides x (policy, reference) of one batch each; the structure stage's at
            # t <= 0.25 (drawing calls it at ODE times 0, 1/steps, ... in batches of its own).
            first = [t for t in seen[0] if t.max() <= 0.25 and len(set(t.tolist())) > 1]
            assert [len(t) for t in first] == [structure_batch or 4] * 8, (structure_batch, [len(t) for t in first])
            assert sum(len(t) == 4 for t in seen[1]) >= 8
            seen[0].clear(), seen[1].clear()
    finally:
        for hook in hooks:
            hook.remove()
    assert CircularDPOConfig(dpo_batch=4).stage_batch(last=False) == 4 and \
        CircularDPOConfig(dpo_batch=4, structure_batch=6).stage_batch(last=True) == 4
    with pytest.raises(ConfigError, match='--structure-batch=0: must be at least 1'):
        CircularDPOConfig(structure_batch=0)
    ranks = types.SimpleNamespace(size=5, device=lambda device: device)    # Five processes share every step's pairs.
    for cfg, flag in ((CircularDPOConfig(dpo_batch=4), '--detail-batch=4'),
            (CircularDPOConfig(structure_batch=4), '--structure-batch=4')):
        with pytest.raises(RunError, match=f'{flag} pairs a step cannot be shared by 5 processes'):
            run_ranks(cfg, types.SimpleNamespace(device='cpu'), ranks, None, None, None, None)


def test_earlier_stages_train_with_their_own_loss_and_learning_rate_and_the_last_with_the_run_s(tiny, monkeypatch):
    G, data, _, reward = tiny
    calls, real = [], circular_dpo.train_stage
    def spy(policy, reference, index, data, steps, batch, lr, **kw):
        calls.append((index, lr, kw['loss_type']))
        return real(policy, reference, index, data, steps, batch, lr, **kw)
    monkeypatch.setattr(circular_dpo, 'train_stage', spy)
    common = dict(dpo_steps=1, dpo_batch=4, bridge_seeds='0-2', eval_seeds='none', loss_type='ipo', dpo_lr=2e-4)
    cfg = CircularDPOConfig(ablation='a,e', structure_loss_type='sigmoid', structure_lr=1e-5, **common)
    trainer = CircularDPO(cfg, G, data, reward)
    trainer.tuned('a'), trainer.tuned('e')
    assert calls == [(1, 2e-4, 'ipo'), (0, 1e-5, 'sigmoid'), (0, 1e-5, 'sft')]    # Group e's SFT keeps its loss.
    calls.clear()
    CircularDPO(CircularDPOConfig(ablation='a', **common), G, data, reward).tuned('a')  # Defaults: their own.
    assert calls == [(1, 2e-4, 'ipo'), (0, 2e-5, 'sigmoid')]
    calls.clear()
    cfg = CircularDPOConfig(ablation='a', structure_loss_type=None, structure_lr=None, **common)
    CircularDPO(cfg, G, data, reward).tuned('a')                                        # None: the run's.
    assert calls == [(1, 2e-4, 'ipo'), (0, 2e-4, 'ipo')]
    for kw, message in ((dict(structure_loss_type='nope'), '--structure-loss-type=nope: choose one of'),
            (dict(structure_loss_type='sft', sft_weight=0.1), '--structure-loss-type=sft is SFT already'),
            (dict(structure_lr=-1.0), '--structure-lr=-1.0: must be at least 0')):
        with pytest.raises(ConfigError, match=message):
            CircularDPOConfig(**kw)


def test_every_phase_trains_an_earlier_stage_at_early_flow_times_only(tiny):
    G, data, _, reward = tiny
    cfg = CircularDPOConfig(ablation='a,c', dpo_steps=2, dpo_batch=4, bridge_seeds='0-2', eval_seeds='none',
        structure_t_max=0.2)
    seen = {0: [], 1: []}
    hooks = [G.pipeline.stages[i].velocity.register_forward_pre_hook(
        lambda module, args, i=i: seen[i].append(args[1].detach().clone())) for i in seen]
    try:
        trainer = CircularDPO(cfg, G, data, reward)
        for group in ('a', 'c'):
            trainer.tuned(group)
    finally:
        for hook in hooks:
            hook.remove()
    # Drawing calls the velocities at ODE times too (up to 1 - 1/steps); the training calls are batches of 4 pairs.
    train = {i: torch.cat([t for t in seen[i] if t.numel() == 4]) for i in seen}
    assert train[0].max() <= 0.2 and train[1].max() > 0.2


def stage_order(records, phase_prefix=''):
    """The stages of the step records in the order they were trained, one entry per phase."""
    order = []
    for r in records:
        if r['kind'] == 'step' and r['step'] == 0 and r['phase'].startswith(phase_prefix):
            order.append(r['stage'])
    return order


def test_front_to_back_trains_the_first_stage_first_and_leaves_the_other_groups_as_they_were(tiny):
    G, data, _, reward = tiny
    cfg = CircularDPOConfig(ablation='all', dpo_steps=2, dpo_batch=4, bridge_seeds='0-2', eval_seeds='none', rounds=2,
        w1_tau=-1.0)
    alone, after = [], []
    CircularDPO(cfg, G, data, reward, log=alone.append).tuned('a')
    trainer = CircularDPO(cfg, G, data, reward, log=after.append)
    tuned_j = trainer.tuned('j')
    j_records = list(after)
    trainer.tuned('a')
    assert stage_order(j_records) == ['structure', 'detail'] * 2         # Front to back, each round.
    assert stage_order(alone) == ['detail', 'structure'] * 2             # The loop: back to front.
    steps = lambda recs: [{k: v for k, v in r.items() if k != 'seconds'} for r in recs if r['kind'] in ('step', 'bridge')]
    assert steps(after[len(j_records):]) == steps(alone)                 # j beside a changes none of a's steps.
    forward = [r for r in j_records if r['kind'] == 'bridge']
    assert [r['order'] for r in forward] == ['front-to-back'] * 2 and all(r['stage'] == 'detail' for r in forward)
    assert all(r['pairs'] == 2 * 9 and r['kept'] == r['pairs'] for r in forward)    # tau = -1 keeps every pair.
    assert changed(tuned_j, G.pipeline) == [True, True]


def test_forward_candidates_pair_tuned_first_stages_with_the_reference(tiny):
    G, data, _, reward = tiny
    policy = G.pipeline.frozen_copy()
    train_stage(policy, G.pipeline.frozen_copy(), 0, data, steps=3, batch=4, lr=1e-2, beta=100.0)
    candidates = forward_candidates(G, policy, G.pipeline.frozen_copy(), 1, reward, [0, 1, 2], batch=2)
    d = candidates['data']
    assert len(d) == 2 * 9 and d.ids[:6] == [f'c00-seed00000{s}-{side}' for side in ('tuned', 'reference') for s in range(3)]
    tuned = G.with_pipeline(policy, keep=0).volumes([0, 1, 2], 0)
    assert torch.equal(d.assets[:3], tuned) and torch.equal(d.assets[3:6], G.volumes([0, 1, 2], 0))
    assert not torch.equal(tuned, G.volumes([0, 1, 2], 0))
    x1, context = d.drawn[1]                                # The detail stage's own draws, from either structure.
    own = policy.run_stage(0, [0, 1, 2], G.pipeline.condition_tensor(0, 3), None, G.steps, G.sampler)
    active = policy.stages[0].decode(own.x1, None)
    assert torch.equal(context[:3], active) and torch.equal(policy.stages[1].decode(x1[:3], context[:3]), tuned)
    with pytest.raises(ValueError, match='stages 1..1'):
        forward_candidates(G, policy, G.pipeline, 0, reward, [0], batch=2)

#----------------------------------------------------------------------------
# train.py --generator=flow: the demo's path and a bank's, on the tiny model.

@pytest.fixture(scope='module')
def tiny_pt(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp('flow') / 'tiny.pt')


@pytest.mark.slow
def test_train_runs_the_loop_and_writes_its_run_directory(tiny_pt, tmp_path):
    result = train(['--generator=flow', f'--resume={tiny_pt}', '--outdir=runs', '--dpo-steps=3', '--dpo-batch=4',
        '--bridge-seeds=0-2', '--eval-seeds=1000-1003', '--draw-batch=4', '--rounds=2', '--beta=50', '--dpo-lr=1e-3',
        '--w1-tau=-0.5', '--temperature=0.3', '--annotator=oracle:nose', '--seed=1', '--mirror-pairs'], tmp_path)
    run_dir = tmp_path / 'runs' / '00000-flow-circular-dpo-a-demo'
    assert '(a) preferred to the base in' in result.stdout
    options = json.loads((run_dir / 'options.json').read_text())
    assert options['rounds'] == 2 and options['seed'] == 1 and options['w1_tau'] == -0.5 and options['mirror_pairs']
    decided = [j for j in map(json.loads, (run_dir / 'labels.jsonl').read_text().splitlines()) if j['choice'] in ('a', 'b')]
    data = json.loads((run_dir / 'report.json').read_text())['data']
    assert data['mirrored'] and data['pairs'] == 2 * len(decided) and data['assets'] == 2 * 2 * 12   # 2 conditions x 12 seeds, and mirrored.
    records = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    step_records = [r for r in records if r['kind'] == 'step']
    assert len(step_records) == 4 * 3                      # 2 rounds x (final stage, first stage) x 3 steps.
    assert {'loss', 'rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins'} <= set(step_records[0])
    bridges = [r for r in records if r['kind'] == 'bridge']
    assert len(bridges) == 2 and all(r['tau'] == -0.5 and r['kept'] + r['dropped'] == 18 for r in bridges)
    assert all(r['trained'] == 2 * r['kept'] for r in bridges)   # Step 2's kept pairs, and each one's mirror image.
    report = json.loads((run_dir / 'report.json').read_text())
    row = report['groups']['a']
    assert 0 <= row['win_rate'] <= 1 and row['wins'] + row['losses'] + row['ties'] == 8
    assert [b['trained'] for b in report['bridges']] == [r['trained'] for r in bridges]
    assert 0 <= row['structure_iou'] <= 1 and report['timing']['seconds_per_step'].keys() == {'structure', 'detail'}
    for name in ('flow-a.pt', 'labels.jsonl', 'curves.png', 'weights.png', 'ablation.png', 'report.html', 'eval-a/report.json'):
        assert (run_dir / name).is_file(), name
    tuned = flow_heads.read_flow(str(run_dir / 'flow-a.pt'))          # A flow checkpoint every tool loads, as data.
    assert tuned['training']['group'] == 'a' and len(tuned['state_dicts']) == 2
    if report_to.installed('tensorboard'):                             # --report-to's default: TRL's names.
        accumulator = events(str(run_dir))
        for name in ('loss', 'rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins'):
            assert steps(accumulator, f'train/{name}') == list(range(1, len(step_records) + 1)), name
        assert {'bridge/kept', 'bridge/w1/mean', 'eval/a/win_rate', 'eval/a/reward_mean_delta', 'data/pairs'} <= set(
            accumulator.Tags()['scalars'])
        assert steps(accumulator, 'eval/a/win_rate') == [len(step_records)]
        assert {'report/curves', 'report/weights', 'report/eval-a/before_after'} <= set(accumulator.Tags()['images'])


@pytest.mark.slow
def test_train_on_a_bank_and_labels_with_every_group(tiny_pt, tmp_path):
    from eg3d_rlhf.data.bank import BankWriter
    G = flow_heads.load_flow(tiny_pt, image_res=16)
    writer = BankWriter(str(tmp_path / 'bank'), G, resolution=16, dtype='float32', preview_res=16)
    writer.open()
    for seed in range(4):
        for condition in (0, 1):
            writer.write(seed, condition)
    lines = [dict(a=f'c0{c}-seed00000{a}', b=f'c0{c}-seed00000{b}', choice=ch, annotator='me', time='2026-11-22T00:00:00')
        for c in (0, 1) for a, b, ch in ((0, 1, 'a'), (1, 2, 'b'), (2, 3, 'a'), (0, 3, 'tie'))]
    (tmp_path / 'labels.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
    common = ['--generator=flow', '--method=circular-dpo', f'--resume={tiny_pt}', '--outdir=runs', '--bank=bank',
        '--labels=labels.jsonl', '--dpo-steps=2', '--bridge-seeds=0-1', '--w1-tau=-1']
    train(common + ['--ablation=all', '--eval-seeds=none'], tmp_path)
    run_dir = tmp_path / 'runs' / '00000-flow-circular-dpo-all'
    assert sorted(p.name for p in run_dir.glob('flow-*.pt')) == [f'flow-{g}.pt' for g in GROUPS]
    assert not list(run_dir.glob('eval-*')) and not (run_dir / 'labels.jsonl').exists()
    data = json.loads((run_dir / 'stats.jsonl').read_text().splitlines()[0])
    assert data['kind'] == 'data' and data['pairs'] == 6 and data['assets'] == 8
    assert data['label_w1']['pairs'] == 6 and data['label_w1']['tau'] is None           # Win counts, every pair kept.
    (tmp_path / 'bad.jsonl').write_text('{"a": "c00-seed000000", "b": "c00-seed000009", "choice": "a", '
        '"annotator": "me", "time": "2026-11-22T00:00:00"}\n')
    result = train(common[:4] + ['--bank=bank', '--labels=bad.jsonl'], tmp_path, expect=1)
    assert 'bad.jsonl:1: unknown sample id c00-seed000009' in result.stderr


@pytest.mark.parametrize('args, message, code', [
    (['--beta=nan'], '--detail-beta=nan: expected a finite number', 2),
    (['--dpo-lr=-1'], '--detail-lr=-1.0: must be at least 0', 2),
    (['--dpo-steps=0'], '--dpo-steps=0: must be at least 1', 2),
    (['--dpo-batch=0'], '--detail-batch=0: must be at least 1', 2),
    (['--rounds=0'], '--rounds=0: must be at least 1', 2),
    (['--draw-batch=0'], '--draw-batch=0: must be at least 1', 2),
    (['--temperature=-1'], '--temperature=-1.0: must be at least 0', 2),
    (['--w1-tau=-2'], '--w1-tau=-2.0: must be at least -1', 2),
    (['--bridge-seeds=x'], '--bridge-seeds: cannot parse', 2),
    (['--bridge-seeds=none'], 'step 2 needs at least one seed', 2),
    (['--eval-seeds=1-'], '--eval-seeds: cannot parse', 2),
    (['--annotator=me'], "--annotator: unknown annotator 'me'", 2),
    (['--ablation=z'], '--variant=z: give all, or variants circular, independent', 2),
    (['--variant=a,a'], '--variant=a,a: give all, or variants', 2),
    (['--labels=x.jsonl'], '--labels and --bank go together', 2),
    (['--labels-w1-tau=0'], '--labels-w1-tau filters the pairs of --labels', 2),
    (['--bank=b'], '--labels and --bank go together', 2),
    (['--gamma=1'], '--gamma is an EG3D option', 2),
    (['--generator=eg3d'], '--method=circular-dpo does not apply to --generator=eg3d', 2),
    (['--resume=nothing.pt'], 'nothing.pt: no such network file', 1),
    (['--reward-model=nothing.pt'], '--reward-model:', 1),
    (['--demo-annotator=oracle:smooth'], '--demo-annotator=oracle:smooth has no bundled flow reward', 1),
    (['--demo-annotator=me'], "--demo-annotator: unknown annotator 'me'", 2),
    (['--gold-taste=nose'], '--gold-taste is scored by the probe: give --probe-every', 2),
    (['--stop-at-peak'], '--stop-at-peak watches the probe: give --probe-every', 2),
    (['--probe-every=2', '--peak-margin=0.1'], '--peak-margin is for --stop-at-peak', 2),
    (['--probe-every=2', '--probe-seeds=none'], '--probe-every draws --probe-seeds: give at least one', 2),
    (['--reward-aggregate=min', '--aggregate-lambda=2'], '--aggregate-lambda weighs the spread of mean-std and uwo', 2),
])
def test_bad_flow_flags_are_refused_in_one_line(args, message, code, tmp_path, monkeypatch):
    # In this process (train.py's __main__ only calls main); test_dry_run_prints_the_demo_plan_and_writes_nothing and
    # the runs above start the script itself.
    import train as script
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(script.main, ['--method=circular-dpo', '--dry-run', *args])
    assert result.exit_code == code and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert message in result.stderr and len(result.stderr.strip().splitlines()[-1]) < 300, result.stderr
    assert not os.listdir(tmp_path)


def test_group_a_meets_every_other_group_on_the_same_ids(tmp_path):
    rng = np.random.RandomState(0)
    base = dict(size=rng.normal(0.3, 0.01, 12), nose=rng.normal(-0.05, 0.01, 12))
    def write(group, size_shift, ids):
        tastes = {name: list(values) for name, values in base.items()}
        tastes['size'] = [v + d for v, d in zip(base['size'], size_shift)]
        tastes.update({name: [0.0] * 12 for name in annotators.TASTES if name not in tastes})
        truth = dict(nose_prominence=[-v for v in tastes['nose']], asymmetry=[0.01] * 12, head_size=tastes['size'])
        measures = dict(tastes=tastes, mesh={name: [0.0] * 12 for name in MESH_STATS}, truth=truth, diversity=1.0)
        (tmp_path / f'eval-{group}').mkdir()
        (tmp_path / f'eval-{group}' / 'measures.json').write_text(json.dumps(dict(ids=ids, original=measures, tuned=measures)))
    ids = [f'c00-seed{i:06d}' for i in range(12)]
    write('a', [0.02] * 10 + [-0.02] * 2, ids)                      # (a) bigger on 10 ids, smaller on 2.
    write('d', [0.0] * 12, ids)
    write('c', [0.03] * 12, ids)                                    # (c) bigger than (a) everywhere.
    versus = versus_a(str(tmp_path), ['a', 'c', 'd'], 'size')
    assert set(versus) == {'c', 'd'}
    d, c = versus['d']['tastes']['size'], versus['c']['tastes']['size']
    assert (d['wins'], d['losses'], d['ties']) == (10, 2, 0) and d['binomial_p'] == pytest.approx(0.0386, abs=1e-3)
    assert (c['wins'], c['losses']) == (0, 12) and versus['d']['tastes']['nose']['ties'] == 12
    change = versus['d']['truth']['head_size']
    assert change['change'] == pytest.approx((10 * 0.02 - 2 * 0.02) / 12) and change['change_ci95'][0] > 0
    header, rows = versus_rows(versus, 'size')
    assert rows[1][0].startswith('(d)') and rows[1][1].startswith('10/12') and len(rows[1]) == len(header)
    assert versus_a(str(tmp_path), ['a'], 'size') == {} and versus_a(str(tmp_path), ['a', 'd'], None) == {}


def test_flow_flags_are_refused_without_the_flow_generator(tmp_path):
    result = train(['--outdir=x', '--rounds=2'], tmp_path, expect=2)
    assert '--rounds is a Circular-DPO option: add --generator=flow' in result.stderr


def test_dry_run_prints_the_demo_plan_and_writes_nothing(tmp_path):
    result = train(['--generator=flow', '--dry-run'], tmp_path)
    options = json.loads(result.stdout[:result.stdout.rindex('}') + 1])
    assert options['network'] == demo.FLOW_GENERATOR and options['reward_model'] == demo.FLOW_REWARD
    assert options['labels'] is None and options['ablation'] == 'a' and not (tmp_path / 'training-runs').exists()

#----------------------------------------------------------------------------


def test_a_run_flushes_cpu_denormals_from_its_start(tmp_path, monkeypatch):
    import train as script
    monkeypatch.chdir(tmp_path)
    flushed, seen, real = lambda: torch.tensor([1e-39]).mul(1.0).item() == 0, [], circular_run.run_ranks
    monkeypatch.setattr(circular_run, 'run_ranks', lambda *args: seen.append(flushed()) or real(*args))
    for before in (False, True):
        torch.set_flush_denormal(before)
        try:
            result = CliRunner().invoke(script.main, ['--generator=flow', '--method=circular-dpo', '--dry-run'])
            assert result.exit_code == 0, result.output
            assert seen.pop() and flushed() == before   # Flushed while it runs (step 3 met them), restored after.
        finally:
            torch.set_flush_denormal(False)

#----------------------------------------------------------------------------
# train.py --generator=flow: --bank and --labels checked before the run folder is made (and by --dry-run).

@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('labels, message', [
    ('not json\n', 'labels.jsonl:1: not JSON'),
    ('{"a": "ball00", "b": "ball09", "choice": "a", "annotator": "me", "time": "2026-11-25T00:00:00"}\n',
        'labels.jsonl:1: unknown sample id ball09'),
    ('{"a": "ball00", "b": "ball01", "choice": "a", "annotator": "me", "time": "2026-11-25T00:00:00"}\n',
        'ball00/asset.npz: no such file; redraw the sample'),
])
@pytest.mark.parametrize('dry_run', [[], ['--dry-run']])
def test_train_py_flow_refuses_bad_bank_or_labels_before_its_run_folder(tmp_path, labels, message, dry_run):
    import train                            # The script: this file's train() runs it as a subprocess.
    from eg3d_rlhf.generators import flow_heads
    from tests.helpers.banks import ball_bank
    from tests.helpers.flow import TINY
    bank, _ = ball_bank(tmp_path / 'bank', 2, seed=0)
    flow_heads.save_flow(str(tmp_path / 'flow.pt'), flow_heads.build_pipeline(TINY, init_seed=0), TINY)
    (tmp_path / 'labels.jsonl').write_text(labels, encoding='utf-8')
    result = CliRunner().invoke(train.main, ['--generator=flow', '--resume', str(tmp_path / 'flow.pt'), '--bank', bank,
        '--labels', str(tmp_path / 'labels.jsonl'), '--outdir', str(tmp_path / 'runs'), '--device', 'cpu', *dry_run])
    refused_in_one_line(result, message)                # Before: a dry run passed; a run left options.json and log.txt.
    assert not (tmp_path / 'runs').exists()
