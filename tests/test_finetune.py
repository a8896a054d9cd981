"""Reward fine-tuning terms: the slab reward with gradients, clip and standardised losses, density consistency."""

import pytest
import torch

from eg3d_rlhf import finetune
from eg3d_rlhf.generators.eg3d import EG3DGenerator, TriPlaneField
from eg3d_rlhf.geometry.sigma import normalise_sigma_self, slab_grid
from tests.helpers.eg3d import tiny_generator
from tests.helpers.rewards import contract, latents, phase_options

pytestmark = pytest.mark.usefixtures('one_thread')


def field_of(G, z, c):
    """G's differentiable field of latents z conditioned on c (no truncation), as the reward phase builds it."""
    return EG3DGenerator(G).latent_field(z, c, requires_grad=True)

#----------------------------------------------------------------------------

def test_rewards_score_the_slab_as_the_reward_model_was_trained_and_carry_gradients():
    G = tiny_generator().requires_grad_(True)
    term = finetune.RewardTerm(contract())
    z, c = latents(G)
    ws = G.mapping(z, c)
    r = term.rewards(TriPlaneField(G, ws, requires_grad=True))
    with torch.no_grad():
        sigma = TriPlaneField(G, ws).sample_grid(slab_grid(24))
        expected = term.reward.model.score(normalise_sigma_self(sigma))
    assert r.shape == (2,) and torch.allclose(r, expected, atol=1e-5)
    term.loss(r).backward()
    grads = [p.grad.abs().sum() for p in G.backbone.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0
    assert all(p.grad is None for p in term.reward.model.parameters())                 # The reward stays frozen.


def test_gradient_steps_on_the_reward_loss_raise_the_reward():
    G = tiny_generator().requires_grad_(True)
    term = finetune.RewardTerm(contract(seed=3), clip=1e6)
    z, c = latents(G, n=2, seed=1)
    opt = torch.optim.Adam(G.parameters(), lr=2e-3)
    history = []
    for _ in range(6):
        r = term.rewards(field_of(G, z, c))
        history.append(float(r.detach().mean()))
        opt.zero_grad()
        term.loss(r).backward()
        opt.step()
    assert history[-1] > history[0]


def test_clip_and_standardised_losses():
    term = finetune.RewardTerm(contract(), clip=10)
    r = torch.tensor([20.0, -30.0, 1.0])
    assert float(term.loss(r)) == pytest.approx(-(10 - 10 + 1) / 3)
    std = finetune.RewardTerm(contract(), mode='standardised', clip=10, momentum=0.5)
    first = torch.tensor([1.0, 2.0, 3.0])
    assert float(std.loss(first)) == pytest.approx(0.0, abs=1e-6)                      # Standardised by itself.
    assert (std.mean, std.var, std.count) == (pytest.approx(2.0), pytest.approx(2 / 3), 1)
    second = torch.tensor([5.0, 5.0])
    loss = float(std.loss(second))
    assert (std.mean, std.var) == (pytest.approx(3.5), pytest.approx(1 / 3))          # Halfway at momentum 0.5.
    assert loss == pytest.approx(-(5 - 3.5) / (1 / 3) ** 0.5)
    with pytest.raises(ValueError, match='unknown reward loss'):
        finetune.RewardTerm(contract(), mode='pairwise-ish')


def test_reward_term_refuses_a_generator_of_another_box():
    term = finetune.RewardTerm(contract(cube_length=0.5))
    with pytest.raises(ValueError, match='box has side 1.0'):
        term.check_box(EG3DGenerator(tiny_generator()))

#----------------------------------------------------------------------------

def test_density_consistency_is_zero_for_the_same_generator_and_grows_with_change():
    G = tiny_generator()
    reference = EG3DGenerator(G).reference()
    term = finetune.DensityConsistency(reference, slab_grid(24), num_points=512, box_points=64)
    z, c = latents(G)
    assert float(term.loss(field_of(G, z, c), z, c, generator=torch.Generator().manual_seed(0))) == pytest.approx(0.0, abs=1e-6)
    G.requires_grad_(True)
    with torch.no_grad():
        for p in G.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss = term.loss(field_of(G, z, c), z, c, generator=torch.Generator().manual_seed(0))
    assert float(loss.detach()) > 1e-3
    given = term.loss(TriPlaneField(G, G.mapping(z, c), requires_grad=True), z, c, generator=torch.Generator().manual_seed(0))
    assert float(given.detach()) == pytest.approx(float(loss.detach()))              # Any field of G's own ws: the same.
    loss.backward()
    assert sum(p.grad.abs().sum() for p in G.decoder.parameters() if p.grad is not None) > 0
    assert reference.G is not G and all(p.grad is None for p in reference.G.parameters())


def test_density_consistency_points_lie_in_the_slab_then_the_box():
    term = finetune.DensityConsistency(EG3DGenerator(tiny_generator()), slab_grid(24), num_points=300, box_points=200)
    points = term.points(torch.Generator().manual_seed(1))
    grid = slab_grid(24)
    lo, hi = grid.index_to_world([0, 0, 0]), grid.index_to_world([s - 1 for s in grid.shape])
    slab, box = points[:300].numpy(), points[300:].numpy()
    assert points.shape == (500, 3)
    assert (slab >= lo - 1e-6).all() and (slab <= hi + 1e-6).all()
    assert (box.min(axis=0) < lo).any() or (box.max(axis=0) > hi).any()                # Box points reach past the slab.
    assert abs(box).max() <= 0.5

#----------------------------------------------------------------------------
# The 'Greward' phase of EG3D's loss and its place among the training phases.

def test_greward_phase_follows_the_reward_and_keeps_the_reference_frozen(reward_checkpoint):
    from training.loss import StyleGAN2Loss
    G = tiny_generator()
    reward_kwargs = dict(class_name='eg3d_rlhf.finetune.RewardPhase', **phase_options(reward_checkpoint, lambda_r=1.0,
        lambda_sigma=0.01, clip=1e6, sigma_points=256))
    loss = StyleGAN2Loss('cpu', G, None, reward_kwargs=reward_kwargs)
    assert isinstance(loss.reward, finetune.RewardPhase)                                # Built by class name.
    assert 'Greward' in loss.phases and 'Greward' not in StyleGAN2Loss('cpu', G, None).phases
    z, c = latents(G, n=2, seed=1)
    opt = torch.optim.Adam(G.parameters(), lr=2e-3)
    history = []
    for _ in range(5):
        G.requires_grad_(True)
        opt.zero_grad()
        loss.accumulate_gradients('Greward', real_img=None, real_c=None, gen_z=z, gen_c=c, gain=1, cur_nimg=0)
        assert sum(p.grad.abs().sum() for p in G.backbone.parameters() if p.grad is not None) > 0
        opt.step()
        G.requires_grad_(False)
        with torch.no_grad():
            history.append(float(loss.reward.reward.rewards(loss.reward.generator.latent_field(z, torch.zeros_like(c))).mean()))
    assert history[-1] > history[0]
    assert all(p.grad is None for p in loss.reward.reference.G.parameters())
    consistency = loss.reward.consistency.loss(loss.reward.generator.latent_field(z, torch.zeros_like(c)), z, torch.zeros_like(c))
    assert float(consistency.detach()) > 0                                              # G moved away from its copy.


class MeanLogits(torch.nn.Module):
    """A stand-in discriminator: logits [N, 1] = the mean of the image, so G's GAN loss has a gradient everywhere."""

    def forward(self, img, c, update_emas=False):
        return img['image'].flatten(1).mean(dim=1, keepdim=True)


def gradients(G, run):
    """Every gradient of G's parameters after run() (None-free: zeros where no gradient reached)."""
    G.requires_grad_(True)
    for p in G.parameters():
        p.grad = None
    run()
    G.requires_grad_(False)
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in G.parameters()]


def test_reward_in_the_gan_step_adds_its_loss_on_the_samples_g_renders_for_d(reward_checkpoint):
    # --reward-step=gan: G's GAN step's gradient is the GAN loss's plus the reward loss's on the very ws and tri-planes
    # the step rendered (same random draws), in one backward pass and without a 'Greward' phase of its own.
    from training.loss import StyleGAN2Loss
    G = tiny_generator()
    options = phase_options(reward_checkpoint, lambda_r=1.0, lambda_sigma=0.01, clip=1e6, sigma_points=256, reward_step='gan')
    merged = StyleGAN2Loss('cpu', G, MeanLogits(), reward_kwargs=dict(class_name='eg3d_rlhf.finetune.RewardPhase', **options),
        neural_rendering_resolution_initial=32)
    gan_only = StyleGAN2Loss('cpu', G, MeanLogits(), neural_rendering_resolution_initial=32)
    phase, s = merged.reward, merged.schedule(0)
    assert phase.in_gan_step
    z, c = latents(G, n=2, seed=1)
    step = lambda loss: loss.accumulate_gradients('Gmain', None, c, z, c, gain=1, cur_nimg=0)
    torch.manual_seed(7)
    both = gradients(G, lambda: step(merged))
    torch.manual_seed(7)
    gan = gradients(G, lambda: step(gan_only))
    def reward_alone():
        drawn = gan_only.draw_G(z, c, s.swapping_prob, s.neural_rendering_resolution, keep_planes=True)
        loss, _parts = phase.loss(G, z, drawn.c_cond, camera=c, drawn=(drawn.ws, drawn.planes))
        loss.backward()
    torch.manual_seed(7)
    reward = gradients(G, reward_alone)
    assert sum(float(r.abs().sum()) for r in reward) > 0 and G._last_planes is None
    for b, g, r in zip(both, gan, reward):        # Float32 sums in another order: within 1e-5 of each tensor's scale.
        assert float((b - g - r).abs().max()) <= 1e-5 * float(g.abs().max() + r.abs().max()) + 1e-7


def test_greward_phase_is_any_class_with_a_loss():
    # training/ knows the phase only by the class name in reward_kwargs: G, G_ref, then the options.
    from training.loss import StyleGAN2Loss
    G, G_ema = tiny_generator(), tiny_generator(seed=1)
    loss = StyleGAN2Loss('cpu', G, None, G_ema=G_ema, reward_kwargs=dict(class_name='tests.test_finetune.ConstantPhase', value=2.0))
    assert loss.reward.G is G and loss.reward.G_ref is G_ema and loss.reward.value == 2.0
    z, c = latents(G)
    G.requires_grad_(True)
    loss.accumulate_gradients('Greward', real_img=None, real_c=None, gen_z=z, gen_c=c, gain=1, cur_nimg=0)
    assert loss.reward.calls == [(2, 64)]                                               # z, and the schedule's resolution.


class ConstantPhase:
    """A stand-in extra phase: a loss of its value, through G's mapping so it has a graph."""

    def __init__(self, G, G_ref, value):
        self.G, self.G_ref, self.value, self.calls = G, G_ref, value, []

    def loss(self, G, z, c, camera=None, neural_rendering_resolution=None):
        self.calls.append((len(z), neural_rendering_resolution))
        loss = self.value + 0 * G.mapping(z, c).sum()
        return loss, dict(reward_loss=loss.detach(), reward=torch.full([len(z)], self.value), extra=loss.detach())


def test_greward_phase_needs_reward_kwargs():
    from training.loss import StyleGAN2Loss
    G = tiny_generator()
    z, c = latents(G)
    with pytest.raises(ValueError, match='reward_kwargs'):
        StyleGAN2Loss('cpu', G, None).accumulate_gradients('Greward', None, None, z, c, 1, 0)


def test_build_phases_adds_greward_on_g_optimizer():
    from training import training_loop
    G = tiny_generator()
    D = torch.nn.Linear(2, 2)
    opt = dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8)
    phases = training_loop.build_phases(G, D, opt, opt, G_reg_interval=4, D_reg_interval=16, reward_interval=2)
    assert [(p.name, p.interval) for p in phases] == [('Gmain', 1), ('Greg', 4), ('Greward', 2), ('Dmain', 1), ('Dreg', 16)]
    assert phases[2].opt is phases[0].opt and phases[2].module is G
    plain = training_loop.build_phases(G, D, opt, opt, G_reg_interval=None, D_reg_interval=16)
    assert 'Greward' not in [p.name for p in plain]

#----------------------------------------------------------------------------
# The pairwise (DreamDPO) loss, gradient checkpointing, image consistency and the phase's batch.

def test_pairwise_loss_pulls_toward_the_winner_and_pushes_the_loser_only_past_tau():
    G = tiny_generator()
    generator = EG3DGenerator(G)
    reward = finetune.RewardTerm(contract(seed=3))
    z, c = latents(G, n=3, seed=2)
    ws = G.mapping(z, c)
    grid = slab_grid(24)
    torch.manual_seed(5)                                    # The pair offsets, drawn again by hand below.
    offsets = [0.3 * torch.randn_like(z) for _ in range(2)]
    slabs = [TriPlaneField(G, G.mapping(z + o, c)).sample_grid(grid) for o in offsets]
    with torch.no_grad():
        r = [reward.reward.score(x) for x in slabs]
    sigma = TriPlaneField(G, ws).sample_grid(grid)
    for tau, push_expected in ((0.0, True), (1e9, False)):
        torch.manual_seed(5)
        field = TriPlaneField(G, ws, requires_grad=True)
        loss, rewards, stats = finetune.PairwiseTerm(reward, tau=tau, pair_noise=0.3, construction='offsets').loss(generator, field, z, c)
        assert torch.allclose(rewards, torch.cat(r))
        expected = []
        for i in range(3):
            win, lose = (slabs[0][i], slabs[1][i]) if r[0][i] >= r[1][i] else (slabs[1][i], slabs[0][i])
            term = (sigma[i] - win).square().mean()
            if push_expected and abs(float(r[0][i] - r[1][i])) > tau:
                term = term - (sigma[i] - lose).square().mean()
            expected.append(term)
        assert float(loss) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-4, abs=1e-6)
        assert float(stats['pushed']) == (1.0 if push_expected else 0.0)


class Recording:
    """An EG3DGenerator that notes the latents and truncation of every latent_field() call."""

    def __init__(self, generator):
        self.generator, self.calls = generator, []

    def latent_field(self, z, c, **truncation):
        self.calls.append((z.clone(), dict(truncation)))
        return self.generator.latent_field(z, c, **truncation)


def pair_term(construction, psi=0.9, **kwargs):
    """A PairwiseTerm on the tiny reward whose samples are drawn at truncation psi."""
    return finetune.PairwiseTerm(finetune.RewardTerm(contract(seed=3)), truncation=dict(truncation_psi=psi,
        truncation_cutoff=None), construction=construction, **kwargs)


def test_offsets_pairs_are_bit_for_bit_the_two_offset_samples_the_term_always_drew():
    G = tiny_generator()
    generator, term = EG3DGenerator(G), pair_term('offsets', pair_noise=0.3)
    z, c = latents(G, n=3, seed=2)
    torch.manual_seed(5)
    slabs = term.sample_pair(generator, z, c)
    after = torch.randn(4)
    torch.manual_seed(5)                                    # The term's draws before pair constructions existed.
    expected = [generator.latent_field(z + 0.3 * torch.randn_like(z), c, **term.truncation).sample_grid(term.reward.grid)
        for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(slabs, expected)) and not torch.equal(*slabs)
    assert torch.equal(torch.randn(4), after)              # The same random draws, so runs continue alike.


def test_truncation_pairs_are_one_latent_at_two_psi_values():
    G = tiny_generator()
    generator, term = Recording(EG3DGenerator(G)), pair_term('truncation', psi=0.9, psi_step=0.25)
    z, c = latents(G, n=2, seed=2)
    state = torch.get_rng_state()
    slabs = term.sample_pair(generator, z, c)
    assert torch.equal(torch.get_rng_state(), state)        # No noise drawn.
    assert [torch.equal(zz, z) for zz, _ in generator.calls] == [True, True]
    assert [t['truncation_psi'] for _, t in generator.calls] == [0.9, pytest.approx(0.65)]
    low = generator.generator.latent_field(z, c, truncation_psi=0.65).sample_grid(term.reward.grid)
    assert torch.equal(slabs[1], low) and (slabs[0] - slabs[1]).abs().max() > 1e-4


def test_latents_pairs_are_two_independent_latents():
    G = tiny_generator()
    generator, term = Recording(EG3DGenerator(G)), pair_term('latents')
    z, c = latents(G, n=2, seed=2)
    torch.manual_seed(7)
    term.sample_pair(generator, z, c)
    torch.manual_seed(7)
    fresh = [torch.randn_like(z) for _ in range(2)]
    (za, ta), (zb, tb) = generator.calls
    assert torch.equal(za, fresh[0]) and torch.equal(zb, fresh[1]) and ta == tb == term.truncation
    assert (za - zb).abs().min() > 0 and (za - z).abs().min() > 0


def test_pair_term_refuses_an_unknown_construction_or_a_step_below_psi_zero():
    with pytest.raises(ValueError, match="unknown pair construction 'noise'"):
        pair_term('noise')
    with pytest.raises(ValueError, match=r'psi_step 1 must lie in \(0, 0.9\]'):
        pair_term('truncation', psi=0.9, psi_step=1.0)


def test_recompute_gives_the_same_gradients_as_keeping_activations():
    grads = []
    for recompute in (False, True):
        G = tiny_generator().requires_grad_(True)
        term = finetune.RewardTerm(contract(), chunk=1000, recompute=recompute)
        z, c = latents(G)
        term.loss(term.rewards(field_of(G, z, c))).backward()
        grads.append(torch.cat([p.grad.flatten() for p in G.decoder.parameters()]))
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_reward_phase_image_consistency_reference_and_batch(reward_checkpoint):
    G = tiny_generator()
    G_ema = tiny_generator(seed=1)
    phase = finetune.RewardPhase(G, G_ref=G_ema, **phase_options(reward_checkpoint, lambda_r=0.0, lambda_sigma=0.0,
        lambda_image=1.0, reward_batch=3))
    assert all(torch.equal(p, q) for p, q in zip(phase.reference.G.parameters(), G_ema.parameters()))
    assert phase.reference.G is not G_ema                                     # A frozen copy.
    z, c = latents(G, n=2)
    zz, cc, cam = phase.latents(z, c, c)
    assert zz.shape == (3, G.z_dim) and torch.equal(zz[:2], z) and cc.shape == (3, 25) and cam.shape == (3, 25)
    assert phase.latents(z[:1], c[:1], c[:1])[0].shape[0] == 3
    G.requires_grad_(True)
    total, parts = phase.loss(G, z, torch.zeros_like(c), camera=c)
    assert float(parts['image_consistency']) > 0 and float(total.detach()) == pytest.approx(float(parts['image_consistency']))
    total.backward()
    assert sum(p.grad.abs().sum() for p in G.parameters() if p.grad is not None) > 0
    same = finetune.RewardPhase(G, **phase_options(reward_checkpoint, lambda_r=0.0, lambda_sigma=0.0, lambda_image=1.0))
    _, parts = same.loss(G, z, torch.zeros_like(c), camera=c)
    assert float(parts['image_consistency']) == pytest.approx(0.0, abs=1e-6)   # Reference = G as it starts.


def test_pairwise_reward_phase_reports_pushed_pairs(reward_checkpoint):
    G = tiny_generator()
    phase = finetune.RewardPhase(G, **phase_options(reward_checkpoint, reward_loss='pairwise', tau=0.0, lambda_sigma=0.0))
    G.requires_grad_(True)
    total, parts = phase.loss(G, *latents(G, n=2))
    assert parts['reward'].shape == (4,) and float(parts['pushed']) == 1.0
    total.backward()
    assert sum(p.grad.abs().sum() for p in G.backbone.parameters() if p.grad is not None) > 0


def test_reward_phase_keeps_the_truncation_centre(reward_checkpoint):
    G = tiny_generator()
    before = G.backbone.mapping.w_avg.clone()
    finetune.RewardPhase(G, **phase_options(reward_checkpoint))
    z, c = latents(G, n=4)
    G.mapping(z, c, update_emas=True)                       # What the GAN's D phase does every step.
    assert torch.equal(G.backbone.mapping.w_avg, before)
    H = tiny_generator()
    finetune.RewardPhase(H, **phase_options(reward_checkpoint, keep_w_avg=False))
    H.mapping(z, c, update_emas=True)
    assert not torch.equal(H.backbone.mapping.w_avg, before)


def test_reward_phase_takes_only_valid_config_options(reward_checkpoint):
    G = tiny_generator()
    with pytest.raises(ValueError, match='reward_model'):
        finetune.RewardPhase(G, reward='sigma')                                         # No checkpoint.
    with pytest.raises(ValueError, match='--lambda-r=nan'):
        finetune.RewardPhase(G, **phase_options(reward_checkpoint, lambda_r=float('nan')))
    with pytest.raises(TypeError):
        finetune.RewardPhase(G, **phase_options(reward_checkpoint, mode='clip'))       # Old option names are gone.
