"""Reward-guided EG3D inversion: pinned renders, ws fit to a target, the reward's pull, pivotal tuning on a copy."""

import math
import os

import pytest
import torch

from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.guidance import inversion
from eg3d_rlhf.rewards.checkpoint import load_reward
from eg3d_rlhf.synthetic import demo
from tests.helpers.eg3d import tiny_generator
from tests.helpers.rewards import contract

pytestmark = pytest.mark.usefixtures('one_thread')

SIGMA_REWARD = os.path.join(demo.ROOT, 'checkpoints', 'reward-sigma-nose.safetensors')


@pytest.fixture(scope='module')
def tiny():
    return EG3DGenerator(tiny_generator().eval())


def moved_start(generator, seeds=(0, 1), scale=0.5):
    """(target, cameras, ws of the targets, ws_init): seeds' own renders and their ws moved by fixed noise."""
    target, cameras, ws = inversion.seed_target(generator, seeds)
    noise = torch.randn(ws[:, :1].shape, generator=torch.Generator().manual_seed(7))
    return target, cameras, ws, ws + scale * noise


def state(G):
    return {k: v.clone() for k, v in G.state_dict().items()}

#----------------------------------------------------------------------------

def test_render_is_pinned_per_sample_and_is_the_synthesis_raw_image(tiny):
    G = tiny.G
    ws, c = tiny.seed_ws([0, 1]), tiny.camera(2)
    torch.manual_seed(123)
    images = inversion.render(tiny, ws, c)
    after = torch.rand(4)                                       # The caller's stream is left as it was.
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(4))
    assert images.shape == (2, 3, 32, 32) and images.requires_grad is False and images.std() > 0
    assert torch.equal(images, inversion.render(tiny, ws, c))
    assert torch.allclose(images[1:], inversion.render(tiny, ws[1:], c[1:]), atol=1e-6)   # Alone as in a batch.
    with torch.no_grad():
        torch.manual_seed(inversion.RENDER_SEED)
        raw = G.synthesis(ws[:1], c[:1], noise_mode='const')['image_raw']
        torch.manual_seed(inversion.RENDER_SEED + 1)
        other = G.synthesis(ws[:1], c[:1], noise_mode='const')['image_raw']
    assert torch.allclose(images[:1], raw, atol=1e-6)
    assert not torch.allclose(raw, other, atol=1e-6)            # The renderer does draw: pinning it matters.
    small = inversion.render(tiny, ws, c, resolution=16)
    assert small.shape == (2, 3, 16, 16) and G.neural_rendering_resolution == 32     # G keeps its own default.
    w = ws.clone().requires_grad_(True)
    assert inversion.render(tiny, w, c).requires_grad


def test_seed_target_renders_the_seeds_from_the_frontal_camera_or_a_given_one(tiny):
    target, cameras, ws = inversion.seed_target(tiny, [3, 4], resolution=16)
    assert target.shape == (2, 3, 16, 16) and cameras.shape == (2, 25) and torch.equal(ws, tiny.seed_ws([3, 4]))
    assert torch.equal(cameras, tiny.camera(2))
    assert torch.equal(target, inversion.render(tiny, ws, cameras, 16))
    side = cameras[0].clone()
    side[3] += 0.3                                              # The camera moved along x.
    moved, moved_cameras, _ws = inversion.seed_target(tiny, [3, 4], camera=side, resolution=16)
    assert torch.equal(moved_cameras, side.expand(2, -1)) and not torch.allclose(moved, target)
    with pytest.raises(ValueError, match='at least one seed'):
        inversion.seed_target(tiny, [])

#----------------------------------------------------------------------------

def test_from_its_own_target_the_ws_stay_and_from_elsewhere_they_approach_it(tiny):
    target, cameras, ws, start = moved_start(tiny)
    stay = inversion.invert(tiny, target, cameras, ws, reward=contract(), steps=4)
    assert [h['image_loss'] for h in stay.history] == [0.0] * 4
    assert (stay.ws - ws).abs().max() < 1e-6 and stay.generator is tiny
    fit = inversion.invert(tiny, target, cameras, start, steps=12, lr=0.02)
    losses = [h['image_loss'] for h in fit.history]
    assert fit.final['image_loss'] < 0.5 * losses[0]
    assert (fit.ws - ws).norm() < (start - ws).norm()


def test_reward_weight_zero_is_the_same_trajectory_as_no_reward(tiny):
    target, cameras, _ws, start = moved_start(tiny)
    plain = inversion.invert(tiny, target, cameras, start, steps=4, lr=0.02)
    logged = inversion.invert(tiny, target, cameras, start, reward=contract(), reward_weight=0.0, steps=4, lr=0.02)
    assert torch.equal(plain.ws, logged.ws)
    assert [h['image_loss'] for h in plain.history] == [h['image_loss'] for h in logged.history]
    assert all(h['reward'] is None for h in plain.history) and all(math.isfinite(h['reward']) for h in logged.history)
    pulled = inversion.invert(tiny, target, cameras, start, reward=contract(), reward_weight=1.0, steps=4, lr=0.02)
    assert not torch.allclose(pulled.ws, plain.ws)


def test_a_reward_weight_raises_the_reward(tiny):
    target, cameras, ws = inversion.seed_target(tiny, [0, 1])
    result = inversion.invert(tiny, target, cameras, ws, reward=contract(seed=3), reward_weight=10.0, steps=6, lr=0.01,
        clip=1e6)
    rewards = [h['reward'] for h in result.history]
    assert result.final['reward'] > rewards[0] and result.history[0]['image_loss'] == 0.0


def test_density_consistency_is_zero_at_the_start_and_holds_sigma_near_it(tiny):
    target, cameras, ws = inversion.seed_target(tiny, [0, 1])
    options = dict(reward=contract(seed=3), reward_weight=10.0, steps=6, lr=0.01, clip=1e6)
    free = inversion.invert(tiny, target, cameras, ws, sigma_weight=0.0, **options)
    held = inversion.invert(tiny, target, cameras, ws, sigma_weight=100.0, **options)
    assert all(h['sigma_loss'] is None for h in free.history)
    assert held.history[0]['sigma_loss'] == 0.0 and held.history[1]['sigma_loss'] > 0
    assert (held.ws - ws).norm() < (free.ws - ws).norm()


def test_samples_of_a_batch_are_independent(tiny):
    target, cameras, _ws, start = moved_start(tiny, seeds=(0, 1, 2))        # (The tiny reward scores pairs or more.)
    options = dict(reward=contract(), reward_weight=1.0, sigma_weight=1.0, steps=3, lr=0.02)
    both = inversion.invert(tiny, target, cameras, start, **options)
    alone = inversion.invert(tiny, target[1:], cameras[1:], start[1:], **options)
    assert torch.allclose(both.ws[1:], alone.ws, atol=1e-5)


def test_w_keeps_the_rows_equal_and_w_plus_does_not(tiny):
    target, cameras, _ws, start = moved_start(tiny)
    for space, equal in (('w', True), ('w+', False)):
        result = inversion.invert(tiny, target, cameras, start, reward=contract(), reward_weight=1.0, steps=2,
            space=space)
        rows_equal = torch.equal(result.ws, result.ws[:, :1].expand_as(result.ws))
        assert rows_equal == equal and not torch.equal(result.ws, start), space


def test_tuning_changes_a_copy_and_leaves_the_input_generator_as_it_was(tiny):
    target, cameras, _ws, start = moved_start(tiny)
    before, steps = state(tiny.G), []
    result = inversion.invert(tiny, target, cameras, start, steps=2, tune_steps=3, lr=0.02, tune_lr=1e-3,
        progress=steps.append)
    assert all(torch.equal(v, tiny.G.state_dict()[k]) for k, v in before.items())
    assert result.generator is not tiny and result.generator.G is not tiny.G
    tuned = result.generator.G.state_dict()
    assert any(not torch.equal(v, tuned[k]) for k, v in before.items())
    assert not any(p.requires_grad for p in result.generator.G.parameters())
    assert [h['phase'] for h in result.history] == ['ws'] * 2 + ['tune'] * 3 and len(steps) == 5
    # The ws stay as the first phase left them, and the tuned G renders them closer to the target.
    assert result.final['image_loss'] < result.history[2]['image_loss']
    again = inversion.invert(tiny, target, cameras, start, steps=2, lr=0.02)
    assert torch.equal(again.ws, result.ws)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('options, message', [
    (dict(steps=-1), 'steps must be a whole number >= 0'),
    (dict(steps=2.5), 'steps must be a whole number'),
    (dict(tune_steps=-3), 'tune_steps must be'),
    (dict(lr=0.0), 'lr must be a finite number > 0'),
    (dict(lr=float('nan')), 'lr must be a finite number'),
    (dict(tune_lr=-1e-3), 'tune_lr must be'),
    (dict(reward_weight=-1.0), 'reward_weight must be a finite number >= 0'),
    (dict(reward_weight=float('inf')), 'reward_weight must be'),
    (dict(sigma_weight=float('nan')), 'sigma_weight must be'),
    (dict(clip=0), 'clip must be'),
    (dict(space='z'), "unknown latent space 'z'"),
    (dict(resolution=0), 'resolution must be'),
    (dict(reward=None, reward_weight=1.0), 'need a reward'),
    (dict(reward=None, sigma_weight=1.0), 'need a reward'),
    (dict(reward='half box', reward_weight=1.0), 'box has side 1.0'),
    (dict(target=torch.zeros([2, 3, 16, 16])), r'target has shape \[2, 3, 16, 16\], expected \[2, 3, 32, 32\]'),
    (dict(target=torch.zeros([2, 3, 16, 16]), resolution=16, camera=torch.zeros([1, 25])), 'camera has shape'),
    (dict(ws_init=torch.zeros([2, 3, 512])), 'ws_init has shape'),
    (dict(ws_init=[[0.0]]), 'ws_init must be a tensor'),
])
def test_bad_arguments_raise_one_line_value_errors(tiny, options, message):
    target, cameras, ws = inversion.seed_target(tiny, [0, 1])
    arguments = dict(target=target, camera=cameras, ws_init=ws, reward=contract(), steps=1)
    arguments.update(options)
    if arguments['reward'] == 'half box':
        arguments['reward'] = contract(cube_length=0.5)
    with pytest.raises(ValueError, match=message) as err:
        inversion.invert(tiny, **arguments)
    assert '\n' not in str(err.value)

#----------------------------------------------------------------------------

@pytest.mark.slow
def test_the_bundled_sigma_reward_rises_while_the_render_stays_close():
    generator = EG3DGenerator.load(demo.GENERATOR, trust=True)
    reward = load_reward(SIGMA_REWARD)
    target, cameras, ws = inversion.seed_target(generator, [0])
    result = inversion.invert(generator, target, cameras, ws, reward=reward, reward_weight=1.0, steps=10)
    rewards = [h['reward'] for h in result.history] + [result.final['reward']]
    assert rewards[-1] > rewards[0] + 0.5
    assert result.final['image_loss'] < 1e-3 and result.generator is generator
