"""The published recipe's reward-phase terms: the full-box grid anchor, its batch sum, its own truncation, the reward's."""

import pytest
import torch

from eg3d_rlhf import finetune
from eg3d_rlhf.generators.eg3d import EG3DGenerator
from eg3d_rlhf.geometry.sigma import CubeGrid, slab_grid
from tests.helpers.eg3d import tiny_generator
from tests.helpers.rewards import latents, phase_options

pytestmark = pytest.mark.usefixtures('one_thread')


def nudged(G, scale=0.05, seed=0):
    """G with its decoder's weights moved a little (a tuned generator against its starting point)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in G.decoder.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return G

#----------------------------------------------------------------------------

def test_grid_anchor_is_the_l1_over_the_whole_box_grid_per_sample_summed_or_averaged():
    G = tiny_generator()
    reference = EG3DGenerator(G).reference()
    tuned = EG3DGenerator(nudged(tiny_generator()).requires_grad_(True))
    z, c = latents(G, n=3)
    trunc = dict(truncation_psi=0.7, truncation_cutoff=14)
    terms = {reduce: finetune.DensityConsistency(reference, slab_grid(24), box_grid=8, reduce=reduce, truncation=trunc)
        for reduce in ('sum', 'mean')}
    field = tuned.latent_field(z, c, requires_grad=True, **trunc)
    per_sample = terms['sum'].per_sample(field, z, c)

    grid = CubeGrid(8, G.rendering_kwargs['box_warp'], exact_eg3d_grid=True)   # create_samples' points, whole box.
    points = grid.points(0, grid.num_points)
    assert points.shape == (512, 3) and float(points.min()) == pytest.approx(-0.5)
    assert float(points.max()) <= 0.5 + grid.voxel_size                 # (create_samples' float division overshoots.)
    with torch.no_grad():
        mine = tuned.latent_field(z, c, **trunc).sample(points)[..., 0]
        theirs = reference.latent_field(z, c, **trunc).sample(points)[..., 0]
    expected = (mine - theirs).abs().mean(dim=1)
    assert torch.allclose(per_sample.detach(), expected, rtol=1e-5) and float(expected.min()) > 0
    total = terms['sum'].loss(field, z, c)
    assert float(total) == pytest.approx(float(expected.sum()), rel=1e-5)
    assert float(terms['mean'].loss(field, z, c)) == pytest.approx(float(expected.mean()), rel=1e-5)
    total.backward()
    assert sum(p.grad.abs().sum() for p in tuned.G.decoder.parameters() if p.grad is not None) > 0


def test_anchor_with_its_own_truncation_compares_like_with_like(reward_checkpoint):
    G = tiny_generator()
    phase = finetune.RewardPhase(G, **phase_options(reward_checkpoint, lambda_r=0.0, lambda_sigma=1.0, sigma_grid=6,
        sigma_psi=0.5, sigma_cutoff=14, sigma_reduce='sum'))
    z, c = latents(G, n=2)
    G.requires_grad_(True)
    _, parts = phase.loss(G, z, c)
    assert float(parts['density_consistency']) == pytest.approx(0.0, abs=1e-6)     # G is still its reference.
    # The psi-1 reward field against the psi-0.5 reference: what comparing unlike samples would give.
    field = phase.generator.latent_field(z, c, requires_grad=True)
    assert float(phase.consistency.loss(field, z, c).detach()) > 1e-3
    nudged(G)
    total, parts = phase.loss(G, z, c)
    assert float(parts['density_consistency']) > 1e-4
    total.backward()
    assert sum(p.grad.abs().sum() for p in G.decoder.parameters() if p.grad is not None) > 0


def test_reward_scores_samples_at_the_reward_truncation(reward_checkpoint):
    G = tiny_generator()
    z, c = latents(G, n=2)
    rewards = {}
    for psi in (1.0, 0.5):
        phase = finetune.RewardPhase(G, **phase_options(reward_checkpoint, lambda_sigma=0.0, reward_psi=psi, reward_cutoff=14))
        _, parts = phase.loss(G, z, c)
        with torch.no_grad():
            expected = phase.reward.rewards(phase.generator.latent_field(z, c, truncation_psi=psi, truncation_cutoff=14))
        assert torch.allclose(parts['reward'], expected, atol=1e-5)
        rewards[psi] = parts['reward']
    assert not torch.allclose(rewards[1.0], rewards[0.5])


def test_own_reward_optimizer_steps_g_at_the_given_rate_apart_from_the_gan_phases():
    from training.training_loop import build_phases
    G, D = tiny_generator(), torch.nn.Linear(2, 2)
    adam = dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8)
    phases = {p.name: p for p in build_phases(G, D, adam, adam, 4, 16, reward_interval=1, reward_opt_kwargs=adam)}
    assert list(phases) == ['Gmain', 'Greg', 'Greward', 'Dmain', 'Dreg']
    assert phases['Greward'].opt is not phases['Gmain'].opt and phases['Greg'].opt is phases['Gmain'].opt
    assert phases['Greward'].opt.param_groups[0]['lr'] == 0.0025                     # Not rescaled for lazy reg.
    assert phases['Gmain'].opt.param_groups[0]['lr'] == pytest.approx(0.0025 * 4 / 5)
    shared = {p.name: p for p in build_phases(G, D, adam, adam, 4, 16, reward_interval=1)}
    assert shared['Greward'].opt is shared['Gmain'].opt


@pytest.mark.parametrize('options, message', [
    (dict(sigma_grid=1), '--sigma-grid=1'),
    (dict(sigma_grid=8, sigma_box_points=10), '--sigma-grid already covers the whole box'),
    (dict(sigma_cutoff=14), '--sigma-cutoff is the cutoff of --sigma-psi'),
    (dict(sigma_reduce='max'), '--sigma-reduce=max: choose one of mean, sum'),
    (dict(reward_psi=float('nan')), '--reward-psi=nan: expected a finite number'),
    (dict(panel_psi=-1.0), '--panel-psi=-1.0: must be at least 0'),
])
def test_bad_anchor_and_truncation_options_name_the_flag(options, message):
    with pytest.raises(finetune.config.ConfigError, match=message.replace('.', r'\.')):
        finetune.RewardFinetuneConfig(reward='sigma', **options)

#----------------------------------------------------------------------------
