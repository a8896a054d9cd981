"""Reward-guided flow sampling: scale 0 is the unguided sample, the guided term is the reward's gradient times the
scale, guidance acts only in its window and stage, and on the bundled model it raises the reward."""

import pytest
import torch
from torch import nn

from eg3d_rlhf import cli
from eg3d_rlhf.analysis.evaluation import seed_rewards
from eg3d_rlhf.generators.flow import FlowStage
from eg3d_rlhf.guidance.flow_guidance import RewardGuidance, guided_generator, slab_scorer
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from tests.helpers.flow import tiny_generator

pytestmark = pytest.mark.usefixtures('one_thread')

#----------------------------------------------------------------------------
# A toy stage whose velocity is linear, v = A x, and whose decode is the identity on a [N, 1, 2, 2, 2] volume, under a
# linear reward r = <w, sigma>: d r / d x_t = (1 + (1 - t) A) w, and d r / d x1_hat = w.

class Linear(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x, t, cond, context):
        return self.a * x


class Identity(FlowStage):
    def data_shape(self, context):
        return (1, 2, 2, 2)

    def decode(self, x1, context):
        return x1[:, 0]


W = torch.arange(8.0).view(1, 2, 2, 2) - 3.5


def linear_score(sigma):
    return (sigma * W).flatten(1).sum(dim=1)


@pytest.mark.parametrize('t', [0.0, 0.25, 0.75])
@pytest.mark.parametrize('mode', ['gradient', 'cfg'])
def test_the_guided_term_is_the_rewards_gradient_times_the_scale(mode, t):
    a, scale = 0.6, 0.3
    stage = Identity(Linear(a))
    guidance = RewardGuidance(linear_score, scale=scale, mode=mode, stage=0, normalize='none')
    x = torch.randn([3, 1, 2, 2, 2], generator=torch.Generator().manual_seed(1))
    times = torch.full([3], t)
    extra = guidance.velocity(stage)(x, times, None, None) - stage.velocity(x, times, None, None)
    gradient = (1 + (1 - t) * a) * W if mode == 'gradient' else W / (1 - t)      # d r/d x_t, or the cfg direction.
    torch.testing.assert_close(extra, scale * gradient.expand(3, 1, 2, 2, 2)[:, 0].unsqueeze(1), rtol=1e-5, atol=1e-6)


def test_rms_normalisation_and_clipping_fix_the_size_of_the_term():
    stage = Identity(Linear(0.0))
    x, t = torch.zeros([2, 1, 2, 2, 2]), torch.zeros([2])
    rms = lambda g: g.flatten(1).square().mean(dim=1).sqrt()
    for normalize, max_rms, expected in [('rms', None, 1.0), ('none', 0.5, 0.5), ('none', None, float(rms(W[None])))]:
        g = RewardGuidance(linear_score, scale=1, mode='gradient', stage=0, normalize=normalize,
            max_rms=max_rms).velocity(stage)(x, t, None, None)
        torch.testing.assert_close(rms(g), torch.full([2], expected))


def test_guidance_acts_only_in_its_window_and_on_its_stage():
    stage = Identity(Linear(0.5))
    guidance = RewardGuidance(linear_score, scale=1, stage=1, t_start=0.25, t_end=0.5).for_stages(2)
    x = torch.randn([1, 1, 2, 2, 2])
    v = lambda t: guidance.velocity(stage)(x, torch.full([1], t), None, None)
    assert torch.equal(v(0.0), stage.velocity(x, None, None, None)) and torch.equal(v(0.5), v(0.75))
    assert not torch.equal(v(0.25), stage.velocity(x, None, None, None))
    assert guidance(0, stage) is None and guidance(1, stage) is not None
    assert RewardGuidance(linear_score, scale=0, stage=1).for_stages(2)(1, stage) is None      # Scale 0: untouched.

#----------------------------------------------------------------------------

def test_scale_zero_draws_exactly_the_unguided_samples():
    G = tiny_generator()
    guided = guided_generator(G, RewardGuidance(linear_score, scale=0.0))
    seeds = [3, 4, 5]
    assert torch.equal(guided.volumes(seeds, 1), G.volumes(seeds, 1))
    assert guided.identity()['guidance'].startswith('cfg guidance, scale 0') and 'guidance' not in G.identity()


def test_a_guided_copy_changes_the_last_stage_only_and_leaves_the_original_alone():
    G = tiny_generator()
    before = G.volumes([7], 0).clone()
    score = lambda sigma: sigma.flatten(1).mean(dim=1)                              # Wants more density.
    guided = guided_generator(G, RewardGuidance(score, scale=0.5, mode='gradient'))
    sample, plain = guided.samples([7], 0)[0], G.samples([7], 0)[0]
    assert torch.equal(sample.runs[0].x1, plain.runs[0].x1)                         # The structure stage is unguided,
    assert score(sample.sigma) > score(plain.sigma)                                  # the detail stage is pulled up,
    assert torch.equal(G.volumes([7], 0), before)                                   # and G itself draws as before.


@pytest.mark.parametrize('kwargs, message', [
    (dict(scale=float('nan')), 'scale must be a finite number'),
    (dict(mode='classifier'), "unknown guidance mode 'classifier'"),
    (dict(normalize='l2'), "unknown normalisation 'l2'"),
    (dict(t_start=0.5, t_end=0.5), '0 <= t_start < t_end <= 1'),
    (dict(max_rms=0), 'max_rms must be a positive number'),
])
def test_bad_guidance_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardGuidance(linear_score, **kwargs)


def test_a_stage_the_pipeline_lacks_or_a_generator_that_is_no_flow_is_refused():
    with pytest.raises(ValueError, match='stage 2 does not exist in a pipeline of 2 stages'):
        guided_generator(tiny_generator(), RewardGuidance(linear_score, stage=2))
    with pytest.raises(ValueError, match='needs a flow generator'):
        guided_generator(object(), RewardGuidance(linear_score))

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_guidance_raises_the_bundled_flow_models_reward():
    G = cli.load_generator(cli.network_path('bundled-flow', False), torch.device('cpu'))
    reward = load_reward(f'{demo.CHECKPOINTS}/reward-sigma-flow-nose.safetensors')
    seeds = [1000, 1001]
    guided = guided_generator(G, RewardGuidance(slab_scorer(reward, G.cube_length, G.empty_sigma), scale=0.01))
    before, after = seed_rewards(G, reward, seeds, condition=0), seed_rewards(guided, reward, seeds, condition=0)
    assert (after > before + 0.5).all(), (before, after)


def test_smoothing_blurs_the_gradient_over_voxels_and_needs_a_volume():
    from eg3d_rlhf.guidance.flow_guidance import blur
    g = torch.zeros([1, 1, 9, 9, 9])
    g[0, 0, 4, 4, 4] = 1.0
    b = blur(g, 1.0)
    assert b.sum().item() == pytest.approx(1.0, abs=1e-5) and b.max() < 0.1             # Spread, mass kept,
    assert b[0, 0, 3, 4, 4] == b[0, 0, 4, 3, 4] == b[0, 0, 4, 4, 3] == b[0, 0, 5, 4, 4]    # alike along every axis.
    stage = Identity(Linear(0.0))
    x, t = torch.randn([1, 1, 2, 2, 2]), torch.zeros([1])
    rough = RewardGuidance(linear_score, scale=1, stage=0, normalize='none').velocity(stage)(x, t, None, None)
    smooth = RewardGuidance(linear_score, scale=1, stage=0, normalize='none', smooth=1.0).velocity(stage)(x, t, None, None)
    assert smooth.std() < rough.std()
    with pytest.raises(ValueError, match=r'smoothing needs a volume stage \(data \[N, C, D, H, W\]\), got shape \[1, 64, 8\]'):
        guided_generator(tiny_generator(), RewardGuidance(lambda s: s.mean(dim=(1, 2, 3)), scale=1, smooth=1.0)).volumes([1], 0)
