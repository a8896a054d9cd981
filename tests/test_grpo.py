"""Flow-GRPO (finetune/grpo.py): the SDE step and its log-probability by hand, the SDE's marginals against the ODE's,
the ratio on-policy, group normalisation, clipping and the KL against formulas, windows, and training across stages."""

import dataclasses
import itertools
import json
import math
import os

import numpy as np
import pytest
import torch

import dnnlib
from eg3d_rlhf.finetune import grpo
from eg3d_rlhf.generators import flow_heads
from eg3d_rlhf.generators.flow import FlowPipeline, FlowStage
from tests.helpers.flow import save_tiny, tiny_pipeline
from tests.helpers.train import train_script as train

pytestmark = pytest.mark.usefixtures('one_thread')


class GaussianVelocity(torch.nn.Module):
    """The exact velocity of data x1 ~ N(m, s^2) (per element) from x0 ~ N(0, 1): E[x1 - x0 | x_t = x]."""

    def __init__(self, m, s):
        super().__init__()
        self.m, self.s = m, s
        self.bias = torch.nn.Parameter(torch.zeros(()))            # Something to train.

    def forward(self, x, t, cond, context):
        t = t.view(-1, *[1] * (x.ndim - 1))
        var = t.square() * self.s ** 2 + (1 - t).square()
        return self.m + (t * self.s ** 2 - (1 - t)) * (x - t * self.m) / var + self.bias


class Values(FlowStage):
    """A stage of `size` values whose last decode spreads each sample's mean over a 2^3 raw sigma."""

    def __init__(self, velocity, size=1):
        super().__init__(velocity)
        self.size = size

    def data_shape(self, context):
        return (self.size,)

    def decode(self, x1, context):
        return x1.mean(dim=1).view(-1, 1, 1, 1).expand(-1, 2, 2, 2).contiguous()


def test_one_sde_step_and_its_log_probability_by_hand():
    velocity = GaussianVelocity(2.0, 0.5)
    pipeline = FlowPipeline([Values(velocity, size=3)])
    steps, a = 4, 0.7
    drawn = grpo.rollout(pipeline, [5, 6], None, steps, a, trained=(0,), window=1, window_start=2)
    trajectory = drawn.stages[0]
    assert trajectory.sde == [False, False, True, False] and trajectory.sigmas[0] == 0
    x, x_next = trajectory.states[:, 2].double(), trajectory.states[:, 3].double()
    t, dt = 0.5, 0.25
    sigma = a * math.sqrt((1 - t) / t)
    v = velocity(x.float(), torch.full([2], t), None, None).double()
    mean = x + dt * (v - sigma ** 2 / (2 * (1 - t)) * (x - t * v))
    std = sigma * math.sqrt(dt)
    by_hand = (-(x_next - mean) ** 2 / (2 * std ** 2) - math.log(std * math.sqrt(2 * math.pi))).mean(dim=1)
    assert torch.allclose(trajectory.log_probs[:, 2].double(), by_hand, atol=1e-5)
    assert (trajectory.log_probs[:, [0, 1, 3]] == 0).all()
    log_prob, _, _ = grpo.step_log_prob(velocity, trajectory, 2, None, steps)
    assert torch.equal(log_prob, trajectory.log_probs[:, 2])                 # Recomputed: the same bits.
    with pytest.raises(AssertionError, match='ODE step'):
        grpo.step_log_prob(velocity, trajectory, 1, None, steps)
    assert grpo.sde_sigma(0.0, a, 0.25) == grpo.sde_sigma(0.25, a, 0.25) == pytest.approx(a * math.sqrt(3))


def test_the_sde_keeps_the_odes_marginals_and_no_noise_is_the_euler_sampler():
    velocity, steps = GaussianVelocity(2.0, 0.5), 100
    pipeline = FlowPipeline([Values(velocity)])
    seeds = list(range(1500))
    sde = grpo.rollout(pipeline, seeds, None, steps, 0.7, trained=(0,)).stages[0].states[:, -1, 0]
    ode = grpo.rollout(pipeline, seeds, None, steps, 0.7, trained=()).stages[0].states[:, -1, 0]
    for end in (sde, ode):                                     # N(2, 0.5^2): the data's, either way.
        assert abs(float(end.mean()) - 2.0) < 0.05 and abs(float(end.std()) - 0.5) < 0.05
    assert float((sde - ode).abs().mean()) > 0.1                            # Other samples: the noise did enter.
    euler = pipeline.run_stage(0, seeds[:8], None, None, steps=steps, sampler='euler').x1
    assert torch.allclose(grpo.rollout(pipeline, seeds[:8], None, steps, 0.0, trained=(0,)).stages[0].states[:, -1],
        euler, atol=1e-5)


def test_group_advantages_clipping_and_kl_against_formulas():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    adv = grpo.group_advantages(rewards, eps=1e-4)
    r = rewards[0]
    assert torch.allclose(adv[0], (r - 3.0) / (float(np.std(r.numpy())) + 1e-4)) and torch.equal(adv[1], torch.zeros(4))
    log_ratio = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.5]))
    loss, stats = grpo.clipped_surrogate(log_ratio, torch.zeros(4), torch.tensor([1.0, -1.0, 1.0, 1.0]), 0.2)
    # 1.5 x (+1): clipped to 1.2; 0.5 x (-1): clipped to -0.8 (the pessimistic side); 1.1: inside; 0.5 x (+1): 0.5.
    assert torch.allclose(loss, torch.tensor([-1.2, 0.8, -1.1, -0.5])) and float(stats['clipfrac']) == 0.5
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.5])
    assert float(stats['approx_kl']) == pytest.approx(float(((ratio - 1) - ratio.log()).mean()), rel=1e-6)
    mean, ref_mean, std = torch.randn(3, 5), torch.randn(3, 5), 0.3
    exact = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std), torch.distributions.Normal(ref_mean, std))
    assert torch.allclose(grpo.gaussian_kl(mean, ref_mean, std), exact.mean(dim=1), atol=1e-6)


def test_windows_slide_and_wrap():
    assert grpo.window_steps(8, None, 5) == set(range(8)) and grpo.window_steps(8, 3, 2) == {2, 3, 4}
    assert grpo.window_steps(8, 3, 7) == {5, 6, 7}                          # Kept inside the steps.
    trainer = grpo.FlowGRPO(tiny_pipeline(), lambda sigma, cond: sigma.mean(dim=(1, 2, 3)),
        grpo.GRPOSettings(steps=4, window=2, window_shift=2))
    starts = []
    for i in range(8):
        trainer.iteration = i
        starts.append(trainer.window_start())
    assert starts == [0, 0, 1, 1, 2, 2, 0, 0]


def test_on_policy_the_ratio_is_exactly_one_and_the_kl_zero_at_the_first_step():
    pipeline = tiny_pipeline()
    trainer = grpo.FlowGRPO(pipeline, lambda sigma, cond: sigma.mean(dim=(1, 2, 3)),
        grpo.GRPOSettings(group_size=3, steps=4, trained=(0, 1), inner_epochs=2, lr=1e-2))
    stats = trainer.step([0, 1], [[1, 2, 3], [4, 5, 6]])
    assert stats['ratio'] == 1.0 and stats['clipfrac'] == 0.0 and stats['approx_kl'] == 0.0 and stats['kl'] == 0.0
    assert stats['ratio/epoch1'] != 1.0 and stats['kl/epoch1'] > 0                 # The second pass is off-policy.
    assert trainer.iteration == 1 and np.isfinite(stats['loss'])


def test_under_bf16_the_first_step_is_on_policy_too():
    trainer = grpo.FlowGRPO(tiny_pipeline(), lambda sigma, cond: sigma.mean(dim=(1, 2, 3)),
        grpo.GRPOSettings(group_size=2, steps=3, trained=(1,), bf16=True))
    stats = trainer.step([0, 1], [[1, 2], [3, 4]])
    assert stats['ratio'] == 1.0 and stats['kl'] == 0.0 and np.isfinite(stats['loss'])


def test_lora_trains_the_adapters_alone_and_finish_folds_them_in():
    pytest.importorskip('peft')
    pipeline = tiny_pipeline()
    before = {k: v.clone() for k, v in pipeline.stages[1].velocity.state_dict().items()}
    trainer = grpo.FlowGRPO(pipeline, lambda sigma, cond: (sigma > 10).float().mean(dim=(1, 2, 3)),
        grpo.GRPOSettings(group_size=4, steps=3, trained=(1,), lora_rank=2, lr=0.05, kl_beta=0.0))
    names = [n for n, p in pipeline.stages[1].velocity.named_parameters() if p.requires_grad]
    assert names and all('lora_' in n for n in names)
    for i in range(2):
        trainer.step([0, 1], [[4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4]] * 2)
    merged = trainer.finish().stages[1].velocity
    after = merged.state_dict()
    assert after.keys() == before.keys() and any(not torch.equal(after[k], before[k]) for k in after)


@pytest.mark.parametrize('trained', [(0,), (1,), (0, 1)])
def test_only_the_trained_stages_move_and_the_final_reward_credits_the_first(trained):
    pipeline = tiny_pipeline()
    before = [[p.detach().clone() for p in s.velocity.parameters()] for s in pipeline.stages]
    trainer = grpo.FlowGRPO(pipeline, lambda sigma, cond: (sigma > 10).float().mean(dim=(1, 2, 3)),
        grpo.GRPOSettings(group_size=4, steps=4, trained=trained, lr=1e-2, kl_beta=0.0))
    trainer.step([0, 1], [[1, 2, 3, 4], [5, 6, 7, 8]])
    for index, stage in enumerate(pipeline.stages):
        moved = any(not torch.equal(p, q) for p, q in zip(stage.velocity.parameters(), before[index]))
        assert moved == (index in trained), index
    assert all(not p.requires_grad for s in trainer.reference.stages for p in s.velocity.parameters())


def test_training_raises_the_reward_of_fresh_rollouts():
    torch.manual_seed(0)
    velocity = GaussianVelocity(2.0, 0.5)
    pipeline = FlowPipeline([Values(velocity, size=2)])
    reward = lambda sigma, cond: -(sigma.mean(dim=(1, 2, 3)) - 3.0).abs()     # Wants the mean at 3, not 2.
    mean_reward = lambda: float(reward(grpo.rollout(pipeline, list(range(100, 164)), None, 8, 0.7, trained=(0,)).sigma, None).mean())
    start = mean_reward()
    trainer = grpo.FlowGRPO(pipeline, reward, grpo.GRPOSettings(group_size=8, steps=8, trained=(0,), lr=0.05, kl_beta=0.0))
    for i in range(20):
        trainer.step([None] * 4, [list(range(8 * (4 * i + g), 8 * (4 * i + g) + 8)) for g in range(4)])
    assert mean_reward() > start + 0.2 and float(velocity.bias.detach()) > 0.2


def test_online_dpo_learns_from_each_groups_best_and_worst_of_the_policys_own_draws():
    torch.manual_seed(0)
    velocity = GaussianVelocity(2.0, 0.5)
    pipeline = FlowPipeline([Values(velocity, size=2)])
    reward = lambda sigma, cond: -(sigma.mean(dim=(1, 2, 3)) - 3.0).abs()
    trainer = grpo.OnlineDPO(pipeline, reward, grpo.GRPOSettings(group_size=4, steps=8, trained=(0,), lr=0.05), beta=5.0)
    stats = trainer.step([None] * 2, [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert stats['pairs'] == 2 and stats['reward_gap'] > 0 and 'rewards/accuracies' in stats
    for i in range(1, 20):
        trainer.step([None] * 4, [list(range(16 * i + 4 * g, 16 * i + 4 * g + 4)) for g in range(4)])
    assert float(velocity.bias.detach()) > 0.2                               # Toward the rewarded mean of 3.
    flat = grpo.OnlineDPO(tiny_pipeline(), lambda sigma, cond: torch.zeros(len(sigma)), grpo.GRPOSettings(steps=2))
    before = [p.detach().clone() for p in flat.pipeline.stages[1].velocity.parameters()]
    assert flat.step([0], [[1, 2, 3, 4]])['pairs'] == 0                      # Tied rewards: no pair, no step.
    assert all(torch.equal(p, q) for p, q in zip(flat.pipeline.stages[1].velocity.parameters(), before))


@pytest.mark.parametrize('loss_type, beta', [('dro', 1.0), ('kto', 5.0)])   # DRO's beta also sets how far it goes.
def test_online_unpaired_losses_learn_from_the_policys_own_draws_scored_within_their_group(loss_type, beta):
    torch.manual_seed(0)
    velocity = GaussianVelocity(2.0, 0.5)
    pipeline = FlowPipeline([Values(velocity, size=2)])
    reward = lambda sigma, cond: -(sigma.mean(dim=(1, 2, 3)) - 3.0).abs()
    trainer = grpo.OnlineUnpaired(pipeline, reward, grpo.GRPOSettings(group_size=4, steps=8, trained=(0,), lr=0.05),
        beta=beta, loss_type=loss_type)
    drawn, _, rewards = trainer.draw([None] * 2, [[1, 2, 3, 4], [5, 6, 7, 8]], sde=False)
    stats = trainer.step([None] * 2, [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert stats['reward_mean'] == pytest.approx(float(rewards.mean()))    # The same ODE draws the step scored.
    # At the start the policy is the reference: every implicit reward is 0, so DRO's loss is half the mean squared
    # advantage (each group's mean 0, sd 1: 0.5 up to the eps), and KTO's 1 - sigmoid(0) = 0.5 for every sample.
    assert stats['rewards'] == 0 and stats['loss'] == pytest.approx(0.5, abs=1e-3)
    assert set(stats) >= {'loss', 'rewards', 'residual' if loss_type == 'dro' else 'kl'}
    for i in range(1, 20):
        trainer.step([None] * 4, [list(range(16 * i + 4 * g, 16 * i + 4 * g + 4)) for g in range(4)])
    assert float(velocity.bias.detach()) > 0.2                               # Toward the rewarded mean of 3.
    with pytest.raises(ValueError, match="unknown unpaired loss 'ipo'"):
        grpo.OnlineUnpaired(pipeline, reward, grpo.GRPOSettings(trained=(0,)), loss_type='ipo')


def test_the_training_seed_sets_every_training_draw_and_seed_0_draws_each_seeds_own_noise():
    velocity = GaussianVelocity(2.0, 0.5)
    reward = lambda sigma, cond: -(sigma.mean(dim=(1, 2, 3)) - 3.0).abs()
    group = [11, 12, 13, 14]
    drawn = lambda seed, sde=True: grpo.FlowGRPO(FlowPipeline([Values(velocity, size=2)]), reward, grpo.GRPOSettings(
        trained=(0,), seed=seed)).draw([None], [group], sde)[0].sigma
    own = grpo.rollout(FlowPipeline([Values(velocity, size=2)]), group, None, 8, 0.7, trained=(0,)).sigma
    assert torch.equal(drawn(0), own)                                       # The default: as the seeds drew before.
    assert torch.equal(drawn(3), drawn(3)) and not torch.equal(drawn(3), own) and not torch.equal(drawn(3), drawn(4))
    assert not torch.equal(drawn(3, sde=False), drawn(0, sde=False))        # Online DPO's ODE draws too.
    seeds = {grpo.draw_seed(x, run) for x in range(50) for run in range(1, 5)}
    assert len(seeds) == 200 and min(seeds) >= 0 and grpo.draw_seed(7, 0) == 7
    moved = []
    for seed in (3, 3, 4):                                                  # Online DPO's step: its own randomness.
        trainer = grpo.OnlineDPO(tiny_pipeline(), lambda sigma, cond: sigma.mean(dim=(1, 2, 3)),
            grpo.GRPOSettings(steps=2, seed=seed))
        trainer.step([0], [group])
        moved.append(torch.cat([p.detach().flatten() for p in trainer.pipeline.stages[1].velocity.parameters()]))
    assert torch.equal(moved[0], moved[1]) and not torch.equal(moved[0], moved[2])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match='trained stages'):
        grpo.FlowGRPO(tiny_pipeline(), lambda s, c: s.mean(), grpo.GRPOSettings(trained=(2,)))
    trainer = grpo.FlowGRPO(tiny_pipeline(), lambda s, c: torch.full([len(s)], float('nan')), grpo.GRPOSettings(steps=2))
    with pytest.raises(ValueError, match='a group needs 4 seeds'):
        trainer.step([0], [[1, 2]])
    with pytest.raises(ValueError, match='nan or inf'):
        trainer.step([0], [[1, 2, 3, 4]])

#----------------------------------------------------------------------------
# train.py --generator=flow --method=grpo on the tiny model.

@pytest.fixture(scope='module')
def tiny_pt(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp('flow') / 'tiny.pt')


@pytest.mark.parametrize('args, message', [
    (['--sde-window=8'], '--sde-window=8 is not below --sde-steps=8'),
    (['--train-seeds=1000-'], '--train-seeds and --eval-seeds overlap'),
    (['--train-seeds=20000'], 'give the first seed followed by a dash'),
    (['--annotator=oracle:wings'], "unknown annotator 'oracle:wings'"),
    (['--dpo-steps=3'], '--dpo-steps is a Circular-DPO option: add --method=circular-dpo'),
    (['--objective=online-dpo', '--sde-window=2'], "are Flow-GRPO's; --objective=online-dpo draws with ODE steps"),
    (['--online-beta=5'], '--online-beta is for the online objectives'),
    (['--objective=online-kto', '--online-loss-type=ipo'], '--online-loss-type is for --objective=online-dpo'),
    (['--objective=online-dro', '--kl-beta=0'], "are Flow-GRPO's; --objective=online-dro draws with ODE steps"),
    (['--gold-taste=nose'], '--gold-taste is scored by the probe: give --probe-every'),
])
def test_bad_options_are_refused_in_one_line(tmp_path, args, message):
    result = train(['--generator=flow', '--method=grpo', '--outdir=runs', '--dry-run', *args], tmp_path, expect=2)
    assert message in result.stderr and not (tmp_path / 'runs').exists(), result.stderr


@pytest.mark.slow
def test_a_grpo_run_trains_both_stages_and_writes_its_run_directory(tiny_pt, tmp_path):
    result = train(['--generator=flow', '--method=grpo', f'--resume={tiny_pt}', '--outdir=runs', '--grpo-iterations=2',
        '--group-size=2', '--sde-steps=3', '--sde-window=2', '--grpo-lr=1e-2', '--eval-seeds=1000-1001', '--draw-batch=2',
        '--annotator=oracle:nose', '--seed=1', '--probe-every=1', '--probe-seeds=3000', '--gold-taste=nose'], tmp_path)
    run_dir = tmp_path / 'runs' / '00000-flow-grpo-both'
    assert 'tuned preferred to the base in' in result.stdout
    records = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    steps = [r for r in records if r['kind'] == 'grpo']
    assert [r['iteration'] for r in steps] == [0, 1] and [r['window_start'] for r in steps] == [0, 1]
    assert steps[0]['seeds'] == [20000, 20001] and steps[0]['ratio'] == 1.0
    assert {'loss', 'policy_loss', 'kl', 'clipfrac', 'approx_kl', 'reward_mean', 'reward_std'} <= set(steps[0])
    report = json.loads((run_dir / 'report.json').read_text())
    row = report['eval']
    assert row['group'] == 'grpo' and row['wins'] + row['losses'] + row['ties'] == 4     # 2 conditions x 2 seeds.
    assert 'collateral' in row and report['aggregate'] == 'mean'
    probes = [r for r in records if r['kind'] == 'probe']                     # The start, then after each iteration.
    assert [r['iteration'] for r in probes] == [0, 1, 2] and probes[0]['distance'] == 0 < probes[1]['distance']
    assert all(r['gold'] is not None and r['distance/structure'] >= 0 and r['distance/detail'] >= 0 for r in probes)
    assert all(len(r['gold_samples']) == r['samples'] == 2 and np.mean(r['gold_samples']) == pytest.approx(r['gold'])
        for r in probes)                                                      # Each sample's gold: the paired noise.
    curves = report['proxy_gold']
    assert curves['ticks'] == 3 and curves['gold_taste'] == 'nose' and curves['rows']['kimg'] == [0, 0.004, 0.008]
    for name in ('flow-grpo.pt', 'curves.png', 'proxy_gold.png', 'report.html', 'eval-grpo/report.json', 'options.json',
            'log.txt'):
        assert (run_dir / name).is_file(), name
    tuned, base = flow_heads.read_flow(str(run_dir / 'flow-grpo.pt')), flow_heads.read_flow(tiny_pt)
    assert tuned['training']['method'] == 'grpo'
    for a, b in zip(tuned['state_dicts'], base['state_dicts']):               # Both stages trained.
        assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_an_online_dpo_run_trains_the_final_stage_from_the_policys_own_pairs(tiny_pt, tmp_path):
    train(['--generator=flow', '--method=grpo', '--objective=online-dpo', '--grpo-stages=final', f'--resume={tiny_pt}',
        '--outdir=runs', '--grpo-iterations=2', '--group-size=3', '--sde-steps=3', '--grpo-lr=1e-2', '--online-beta=50',
        '--eval-seeds=none'], tmp_path)
    run_dir = tmp_path / 'runs' / '00000-flow-online-dpo-final'
    steps = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [r['iteration'] for r in steps] == [0, 1] and all(0 <= r['pairs'] <= 2 for r in steps)
    report = json.loads((run_dir / 'report.json').read_text())
    assert report['eval'] is None and (run_dir / 'curves.png').is_file()
    tuned, base = flow_heads.read_flow(str(run_dir / 'flow-grpo.pt')), flow_heads.read_flow(tiny_pt)
    assert all(torch.equal(tuned['state_dicts'][0][k], base['state_dicts'][0][k]) for k in base['state_dicts'][0])


@pytest.mark.slow
@pytest.mark.parametrize('objective, name', [('online-dro', 'residual'), ('online-kto', 'kl')])
def test_an_online_unpaired_run_trains_from_the_policys_own_scored_draws(tiny_pt, tmp_path, objective, name):
    train(['--generator=flow', '--method=grpo', f'--objective={objective}', '--grpo-stages=both', f'--resume={tiny_pt}',
        '--outdir=runs', '--grpo-iterations=2', '--group-size=3', '--sde-steps=3', '--grpo-lr=1e-2', '--online-beta=5',
        '--eval-seeds=none'], tmp_path)
    run_dir = tmp_path / 'runs' / f'00000-flow-{objective}-both'
    steps = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [r['iteration'] for r in steps] == [0, 1] and all({'loss', 'rewards', name} <= set(r) for r in steps)
    assert f'Online {objective[7:].upper()}' in (run_dir / 'report.html').read_text()
    tuned, base = flow_heads.read_flow(str(run_dir / 'flow-grpo.pt')), flow_heads.read_flow(tiny_pt)
    for a, b in zip(tuned['state_dicts'], base['state_dicts']):               # Both stages trained.
        assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_run_stopped_after_an_iteration_resumes_from_state_pt_as_one_never_stopped(tiny_pt, tmp_path, monkeypatch):
    from eg3d_rlhf.finetune import grpo_run
    from eg3d_rlhf.finetune.grpo_config import GRPOConfig
    from eg3d_rlhf.finetune.options import RunError
    cfg = GRPOConfig(grpo_iterations=3, group_size=2, sde_steps=3, sde_window=2, grpo_lr=1e-2, eval_seeds='none',
        snap_iterations=1, inner_epochs=2)
    common = lambda name: dnnlib.EasyDict(resume=tiny_pt, outdir=str(tmp_path / name), seed=1, device='cpu',
        dry_run=False, desc=None, report_to='none')
    grpo_run.run(cfg, common('whole'))
    step, calls = grpo.FlowGRPO.step, []
    def stopping(self, *args):
        if len(calls) == 2:                                           # After two iterations and their state.pt.
            raise KeyboardInterrupt
        calls.append(1)
        return step(self, *args)
    monkeypatch.setattr(grpo.FlowGRPO, 'step', stopping)
    with pytest.raises(KeyboardInterrupt):
        grpo_run.run(cfg, common('cut'))
    monkeypatch.setattr(grpo.FlowGRPO, 'step', step)
    cut = tmp_path / 'cut' / '00000-flow-grpo-both'
    grpo_run.run(dataclasses.replace(cfg, resume_run=str(cut)), common('cut'))
    whole = tmp_path / 'whole' / '00000-flow-grpo-both'
    a, b = (flow_heads.read_flow(str(d / 'flow-grpo.pt'))['state_dicts'] for d in (whole, cut))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)          # Bit-identical weights.
    stats = lambda d: [{k: v for k, v in json.loads(line).items() if k != 'time'}
        for line in (d / 'stats.jsonl').read_text().splitlines()]
    assert [r['iteration'] for r in stats(cut) if r['kind'] == 'grpo'] == [0, 1, 2] and stats(cut) == stats(whole)
    assert sorted(os.listdir(tmp_path / 'cut')) == ['00000-flow-grpo-both']       # No second run folder.
    (cut / 'state.pt').write_bytes(b'not a state')
    with pytest.raises(RunError, match='state.pt is not a state of this run'):
        grpo_run.run(dataclasses.replace(cfg, resume_run=str(cut)), common('cut'))
    with pytest.raises(RunError, match='ran with other options'):
        grpo_run.run(dataclasses.replace(cfg, resume_run=str(cut), grpo_lr=1e-3), common('cut'))


def test_the_stop_rule_reads_the_probes_as_circular_dpos_does():
    from eg3d_rlhf.finetune.grpo_config import GRPOConfig
    row = lambda gold, disagreement, distance: dict(gold=gold, disagreement=disagreement, distance=distance)
    cfg = GRPOConfig(probe_every=1, stop_at_peak=True, gold_taste='nose')
    rising = [row(0.0, 0.1, 0.0), row(1.0, 0.1, 0.1), row(2.0, 0.1, 0.2)]
    assert cfg.peak_reason(rising) is None
    assert cfg.peak_reason(rising + [row(1.5, 0.1, 0.3)]) is None          # Lost 25% of +2, once: patience is 2.
    fallen = rising + [row(1.5, 0.1, 0.3), row(1.4, 0.1, 0.4)]
    assert 'passed its peak at probe 2' in cfg.peak_reason(fallen)
    assert 'passed its peak at probe 2' in dataclasses.replace(cfg, peak_patience=1).peak_reason(fallen[:4])
    # The start's spread over its samples sets the noise: 2 x sd x sqrt(2 / 8) = sd; a fall of 0.6 is within it.
    fallen[0].update(gold_sd=1.0, samples=8)
    assert cfg.peak_reason(fallen) is None
    fallen[0].update(gold_sd=0.5)
    assert 'passed its peak at probe 2' in cfg.peak_reason(fallen)
    cfg = GRPOConfig(probe_every=1, stop_at_peak=True, disagreement_stop=1.5)
    assert cfg.peak_reason([row(None, 0.1, 0.0), row(None, 0.14, 0.1)]) is None
    assert '1.5x its start' in cfg.peak_reason([row(None, 0.1, 0.0), row(None, 0.14, 0.1), row(None, 0.16, 0.2)])


@pytest.mark.slow
def test_stop_at_peak_ends_a_grpo_run_at_the_probe_where_its_rule_fires(tiny_pt, tmp_path, monkeypatch):
    """The run ends with that iteration's policy as its snapshot, the stop in stats and report; resumed, it trains
    nothing more."""
    from eg3d_rlhf.finetune import grpo_run
    from eg3d_rlhf.finetune.grpo_config import GRPOConfig
    probes = []
    monkeypatch.setattr(GRPOConfig, 'peak_reason', lambda self, rows: probes.append(len(rows)) or
        ('a test rule fired' if len(rows) == 3 else None))
    cfg = GRPOConfig(grpo_iterations=5, group_size=2, sde_steps=3, grpo_lr=1e-2, eval_seeds='none', probe_every=1,
        probe_seeds='3000', stop_at_peak=True, snap_iterations=2, gold_taste='nose')
    golds, row = itertools.chain([0.0, 1.0, 0.5], itertools.repeat(0.0)), grpo_run.FlowProbe.row
    monkeypatch.setattr(grpo_run.FlowProbe, 'row', lambda self, *args: dict(row(self, *args), gold=next(golds)))
    common = dnnlib.EasyDict(resume=tiny_pt, outdir=str(tmp_path / 'runs'), seed=1, device='cpu', dry_run=False,
        desc=None, report_to='none')
    grpo_run.run(cfg, common)
    run_dir = tmp_path / 'runs' / '00000-flow-grpo-both'
    records = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [r['iteration'] for r in records if r['kind'] == 'grpo'] == [0, 1] and probes == [2, 3]
    # The best gold probe (iteration 1) keeps its policy in gold-peak.pt, not the stopped run's (iteration 2).
    assert grpo_run.peak_kept(records) == 1 and grpo_run.peak_kept(records[:2]) is None
    peak = flow_heads.read_flow(str(run_dir / 'gold-peak.pt'))
    assert peak['training']['gold_peak_iteration'] == 1 and not all(torch.equal(a[k], b[k]) for a, b in
        zip(peak['state_dicts'], flow_heads.read_flow(str(run_dir / 'flow-grpo.pt'))['state_dicts']) for k in a)
    assert 'gold-peak: the policy after iteration 1' in (run_dir / 'report.html').read_text()
    assert [(r['iteration'], r['reason']) for r in records if r['kind'] == 'stop'] == [(2, 'a test rule fired')]
    report = json.loads((run_dir / 'report.json').read_text())
    assert report['proxy_gold']['stopped']['iteration'] == 2 and 'stopped after iteration 2' in \
        (run_dir / 'report.html').read_text()
    weights = flow_heads.read_flow(str(run_dir / 'flow-grpo.pt'))['state_dicts']
    grpo_run.run(dataclasses.replace(cfg, resume_run=str(run_dir)), common)
    again = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [r['iteration'] for r in again if r['kind'] == 'grpo'] == [0, 1]
    assert all(torch.equal(a[k], b[k]) for a, b in zip(weights,
        flow_heads.read_flow(str(run_dir / 'flow-grpo.pt'))['state_dicts']) for k in a)
