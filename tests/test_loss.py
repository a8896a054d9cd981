"""Tests for training/loss.py: EG3D's StyleGAN2Loss against independent computations on a tiny tri-plane GAN."""

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import training_stats
from training.camera_utils import orbit_camera_label
from training.dual_discriminator import DualDiscriminator
from training.dual_discriminator import filtered_resizing
from training.loss import StyleGAN2Loss
from training.loss import blur
from training.triplane import TriPlaneGenerator

#----------------------------------------------------------------------------
# A tiny ShapeNet-like GAN: 128x128 output (SuperresolutionHybrid2X is the smallest real head), 4+4 depth samples.

RENDERING_KWARGS = dict(image_resolution=128, disparity_space_sampling=False, clamp_mode='softplus',
    superresolution_module='training.superresolution.SuperresolutionHybrid2X', c_gen_conditioning_zero=False,
    gpc_reg_prob=None, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004,
    reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=4, depth_resolution_importance=4,
    ray_start='auto', ray_end='auto', box_warp=1.6, avg_camera_radius=1.7, avg_camera_pivot=[0, 0, 0], white_back=True)
Z_DIM = 32
NRR = 16 # Neural rendering resolution used throughout.


@pytest.fixture(scope='module')
def nets():
    torch.manual_seed(0)
    G = TriPlaneGenerator(z_dim=Z_DIM, c_dim=25, w_dim=512, img_resolution=128, img_channels=3,
        mapping_kwargs=dict(num_layers=2), rendering_kwargs=dict(RENDERING_KWARGS), sr_kwargs=dict(channel_base=1024, channel_max=32),
        channel_base=1024, channel_max=32, num_fp16_res=0, conv_clamp=None)
    D = DualDiscriminator(c_dim=25, img_resolution=128, img_channels=3, channel_base=1024, channel_max=32, num_fp16_res=0, conv_clamp=None)
    return G, D


@pytest.fixture(scope='module')
def batch():
    """(real_img, c, z): two real images, two cameras on the orbit, two latents."""
    gen = torch.Generator().manual_seed(1)
    c = torch.cat([orbit_camera_label(RENDERING_KWARGS, yaw=math.pi/2 + d) for d in (-0.3, 0.4)])
    return torch.rand([2, 3, 128, 128], generator=gen) * 2 - 1, c, torch.randn([2, Z_DIM], generator=gen)


def train_only(module, *others):
    """The training loop's protocol: only the phase's network requires grad; all grads start empty."""
    for m in (module, *others):
        m.requires_grad_(m is module)
        m.zero_grad(set_to_none=True)
    return [p for p in module.parameters()]


def stats_of(fn):
    """Run fn and return a Collector holding only the Loss/* statistics it reported."""
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    fn()
    collector.update()
    return collector


def assert_grads_equal(params, expected, rtol=1e-4, atol=1e-7):
    """p.grad == expected (None = not in the graph: no grad or zeros)."""
    assert any(g is not None and g.abs().max() > 0 for g in expected)
    for p, g in zip(params, expected):
        if g is None:
            assert p.grad is None or p.grad.abs().max() == 0
        else:
            torch.testing.assert_close(p.grad, g, rtol=rtol, atol=atol)


def blur_reference(x, sigma):
    """EG3D's blur as one dense 2D convolution: weights 2^-(t/sigma)^2 for |t| <= floor(3 sigma), zero padding."""
    r = int(np.floor(3 * sigma))
    t = np.arange(-r, r + 1)
    k = np.exp2(-np.square(t / sigma))
    k2 = torch.tensor(np.outer(k, k) / k.sum() ** 2, dtype=torch.float32)
    C = x.shape[1]
    return F.conv2d(x, k2[None, None].repeat(C, 1, 1, 1), padding=r, groups=C)


def stub_G(**rendering_kwargs):
    return types.SimpleNamespace(rendering_kwargs=dict(RENDERING_KWARGS, **rendering_kwargs))

#----------------------------------------------------------------------------
# Schedules and small pieces (no networks).

def test_schedules_follow_eg3d_formulas():
    loss = StyleGAN2Loss('cpu', stub_G(), None, blur_init_sigma=10, blur_fade_kimg=200, r1_gamma=10, r1_gamma_init=2,
        r1_gamma_fade_kimg=100, neural_rendering_resolution_initial=64, neural_rendering_resolution_final=128,
        neural_rendering_resolution_fade_kimg=1000, gpc_reg_prob=0.5, gpc_reg_fade_kimg=1000)
    expected = { # cur_nimg: (blur_sigma, neural_rendering_resolution, swapping_prob, r1_gamma)
        0:       (10,  64, 1.0,   2),
        50_000:  (7.5, 67, 0.975, 6),
        100_000: (5,   70, 0.95,  10),
        250_000: (0,   80, 0.875, 10),
        500_000: (0,   96, 0.75,  10),
        5e6:     (0,  128, 0.5,   10),
    }
    for cur_nimg, (blur_sigma, res, prob, gamma) in expected.items():
        s = loss.schedule(cur_nimg)
        assert s.blur_sigma == pytest.approx(blur_sigma) and s.neural_rendering_resolution == res
        assert s.swapping_prob == pytest.approx(prob) and s.r1_gamma == pytest.approx(gamma)
    assert isinstance(loss.schedule(123).neural_rendering_resolution, int)

    # Defaults: no blur, constant resolution and gamma, no pose conditioning; np.rint rounds half to even.
    s = StyleGAN2Loss('cpu', stub_G(), None, neural_rendering_resolution_initial=32).schedule(10_000)
    assert (s.blur_sigma, s.neural_rendering_resolution, s.swapping_prob, s.r1_gamma) == (0, 32, None, 10)
    halfway = StyleGAN2Loss('cpu', stub_G(), None, neural_rendering_resolution_initial=64, neural_rendering_resolution_final=65,
        neural_rendering_resolution_fade_kimg=1).schedule(500)
    assert halfway.neural_rendering_resolution == 64
    assert StyleGAN2Loss('cpu', stub_G(), None, gpc_reg_prob=0.3, gpc_reg_fade_kimg=0).schedule(0).swapping_prob == 0.3


def test_dead_and_unknown_options_are_rejected():
    for reg_type in ('l1-alt', 'total-variation', 'tv'):
        with pytest.raises(ValueError, match='l1, monotonic-detach, monotonic-fixed'):
            StyleGAN2Loss('cpu', stub_G(reg_type=reg_type), None)
    StyleGAN2Loss('cpu', stub_G(reg_type='total-variation', density_reg=0), None) # Unused when density reg is off.
    with pytest.raises(ValueError, match='path-length'):
        StyleGAN2Loss('cpu', stub_G(), None, pl_weight=2)
    with pytest.raises(ValueError, match='gpc_reg_prob'):
        StyleGAN2Loss('cpu', stub_G(), None, gpc_reg_prob=1.5)
    with pytest.raises(ValueError, match="d_fakes must be one of fresh, reuse, got 'stale'"):
        StyleGAN2Loss('cpu', stub_G(), None, d_fakes='stale')


def test_blur_matches_dense_convolution():
    x = torch.randn([2, 3, 40, 40])
    for sigma in (0.5, 1.0, 2.7, 10.0):
        torch.testing.assert_close(blur(x, sigma), blur_reference(x, sigma), rtol=1e-5, atol=1e-6)
    assert blur(x, 0.3) is x and blur(x, 0) is x # Radius floor(3 sigma) = 0: no blur at all.


def test_gen_conditioning_swaps_poses():
    loss = StyleGAN2Loss('cpu', stub_G(), None)
    c = torch.randn([400, 25])
    torch.testing.assert_close(loss.gen_conditioning(c, 1.0), torch.roll(c, 1, 0), rtol=0, atol=0)
    torch.testing.assert_close(loss.gen_conditioning(c, 0.0), c, rtol=0, atol=0)
    assert torch.equal(loss.gen_conditioning(c, None), torch.zeros_like(c))
    swapped = (loss.gen_conditioning(c, 0.5) != c).any(1).float().mean() # One coin per sample...
    assert 0.35 < swapped < 0.65
    for _ in range(5): # ... or one for the whole batch.
        assert (loss.gen_conditioning(c, 0.5, per_sample=False) != c).any(1).float().mean() in (0, 1)


def test_run_G_conditions_mapping_on_swapped_pose_and_renders_from_true_pose():
    calls = {}
    G = stub_G()
    def mapping(z, c, update_emas=False):
        calls['mapping'] = c
        return torch.zeros([len(z), 3, 4])
    G.mapping = mapping
    G.synthesis = lambda ws, c, neural_rendering_resolution, update_emas: calls.update(synthesis=(c, neural_rendering_resolution))
    c = torch.randn([3, 25])
    StyleGAN2Loss('cpu', G, None, gpc_reg_prob=1).run_G(torch.randn([3, 4]), c, swapping_prob=1.0, neural_rendering_resolution=24)
    assert torch.equal(calls['mapping'], torch.roll(c, 1, 0))
    assert torch.equal(calls['synthesis'][0], c) and calls['synthesis'][1] == 24


def test_style_mixing_takes_layers_from_cutoff_from_a_fresh_latent(nets, batch):
    G, _ = nets
    _, c, z = batch
    c_cond = torch.zeros_like(c)
    loss = StyleGAN2Loss('cpu', G, None, style_mixing_prob=1)
    torch.manual_seed(3)
    ws = loss.map_latents(z, c_cond, c)
    torch.manual_seed(3)
    base = G.mapping(z, c_cond)
    cutoff = int(torch.empty([], dtype=torch.int64).random_(1, base.shape[1]))
    torch.rand([])
    mixed = G.mapping(torch.randn_like(z), c)
    assert 1 <= cutoff < base.shape[1]
    torch.testing.assert_close(ws[:, :cutoff], base[:, :cutoff])
    torch.testing.assert_close(ws[:, cutoff:], mixed[:, cutoff:])
    assert not torch.allclose(base[:, -1], mixed[:, -1])
    torch.testing.assert_close(StyleGAN2Loss('cpu', G, None).map_latents(z, c_cond, c), base)


def test_run_D_blurs_image_only_and_augments_image_with_raw():
    seen = {}
    def D(img, c, update_emas=False):
        seen.update(img)
        return img['image'].sum([1, 2, 3])[:, None]
    def augment_pipe(x):
        seen['pipe_in'] = x
        return x.flip(3)
    image, raw, c = torch.randn([2, 3, 32, 32]), torch.randn([2, 3, 16, 16]), torch.randn([2, 25])

    loss = StyleGAN2Loss('cpu', stub_G(), D)
    loss.run_D({'image': image, 'image_raw': raw}, c, blur_sigma=1.0)
    torch.testing.assert_close(seen['image'], blur_reference(image, 1.0), rtol=1e-5, atol=1e-6)
    assert seen['image_raw'] is raw # EG3D blurs only the real raw target (see real_images), never in run_D.
    real = loss.real_images(image, blur_sigma=1.0, neural_rendering_resolution=16)
    torch.testing.assert_close(real['image_raw'], blur_reference(filtered_resizing(image, 16, None), 1.0), rtol=1e-5, atol=1e-6)
    assert real['image'] is image

    StyleGAN2Loss('cpu', stub_G(), D, augment_pipe=augment_pipe).run_D({'image': image, 'image_raw': raw}, c)
    raw_up = F.interpolate(raw, size=(32, 32), mode='bilinear', antialias=True)
    torch.testing.assert_close(seen['pipe_in'], torch.cat([image, raw_up], 1))
    torch.testing.assert_close(seen['image'], image.flip(3))
    torch.testing.assert_close(seen['image_raw'], F.interpolate(raw_up.flip(3), size=(16, 16), mode='bilinear', antialias=True))


def test_disabled_regularisers_skip_their_phases(monkeypatch):
    ran = []
    loss = StyleGAN2Loss('cpu', stub_G(density_reg=0), None, r1_gamma=0)
    monkeypatch.setattr(loss, 'accumulate_Gmain', lambda *a: ran.append('Gmain'))
    monkeypatch.setattr(loss, 'accumulate_density_reg', lambda *a: ran.append('Greg'))
    monkeypatch.setattr(loss, 'accumulate_D', lambda phase, *a: ran.append(phase))
    for phase in loss.phases:
        loss.accumulate_gradients(phase, None, None, None, None, 1, 0)
    assert ran == ['Gmain', 'Gmain', 'Dmain', 'Dmain'] # Gmain, Gboth->Gmain, Dmain, Dboth->Dmain; Greg and Dreg do nothing.
    with pytest.raises(AssertionError):
        loss.accumulate_gradients('Gall', None, None, None, None, 1, 0)

#----------------------------------------------------------------------------
# Density regularisation.

def test_density_reg_l1_matches_independent_computation(nets, batch):
    G, D = nets
    real, c, z = (x[:1] for x in batch)
    loss = StyleGAN2Loss('cpu', G, D)
    train_only(G, D)
    params = list(G.decoder.parameters()) # Checking these needs no backward pass through the backbone.
    torch.manual_seed(11)
    ws = G.mapping(z, torch.zeros_like(c))
    initial = torch.rand([1, 1000, 3]) * 2 - 1
    perturbed = initial + torch.randn_like(initial) * 0.004
    coords = torch.cat([initial, perturbed], 1)
    sigma = G.sample_mixed(coords, torch.randn_like(coords), ws)['sigma']
    expected = (sigma[:, :1000] - sigma[:, 1000:]).abs().mean() * 0.25
    expected_grads = torch.autograd.grad(expected * 3, params)

    torch.manual_seed(11)
    stats = stats_of(lambda: loss.accumulate_gradients('Greg', real, c, z, c, gain=3, cur_nimg=0))
    assert stats['Loss/G/density_reg'] == pytest.approx(expected.item(), rel=1e-5)
    assert_grads_equal(params, expected_grads)
    assert G.backbone.mapping.fc0.weight.grad.abs().max() > 0
    assert all(p.grad is None for p in D.parameters())


@pytest.mark.parametrize('reg_type', ['l1', 'monotonic-detach', 'monotonic-fixed'])
@pytest.mark.parametrize('a', [2.0, -2.0])
def test_density_reg_on_hand_built_sigma(monkeypatch, nets, batch, reg_type, a):
    """sigma = a*z: with a > 0 density grows towards +z, i.e. falls from each point to the one behind it (-z)."""
    G, _ = nets
    real, c, z = batch
    a, b = torch.tensor(a, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    calls = []
    def sample_mixed(coords, directions, ws, update_emas=False):
        calls.append((coords.detach(), ws.detach()))
        weight = a if coords.shape[1] == 4000 else b # The monotonic term samples 2x2000 points, the l1 term 2x1000.
        return {'sigma': weight * coords[..., 2:3] + 0 * ws.sum()}
    monkeypatch.setattr(G, 'sample_mixed', sample_mixed)
    monkeypatch.setattr(G, 'rendering_kwargs', dict(RENDERING_KWARGS, reg_type=reg_type))
    train_only(G)

    loss = StyleGAN2Loss('cpu', G, None, gpc_reg_prob=1, gpc_reg_fade_kimg=0) # Always swap (one coin for the batch).
    stats = stats_of(lambda: loss.accumulate_gradients('Greg', real, c, z, c, gain=2, cur_nimg=0))
    for _coords, ws in calls:
        torch.testing.assert_close(ws, G.mapping(z, torch.roll(c, 1, 0)))

    voxel = 1.6 / 256
    (initial, _), = [k for k in calls if k[0].shape[1] == 2000]
    step = initial[:, 1000:] - initial[:, :1000]
    jitter = 0.004 if reg_type == 'l1' else voxel
    assert (step / jitter).std() == pytest.approx(1, abs=0.1)
    assert stats['Loss/G/density_reg'] == pytest.approx(0.25 * 0.5 * step[..., 2].abs().mean().item(), rel=1e-4)
    if reg_type == 'l1':
        assert len(calls) == 1 and a.grad is None
        return

    (front_behind, _), = [k for k in calls if k[0].shape[1] == 4000]
    front, behind = front_behind[:, :2000], front_behind[:, 2000:]
    torch.testing.assert_close(behind - front, torch.tensor([0, 0, -voxel]).expand_as(front), rtol=0, atol=1e-6)
    if a < 0: # Density falls towards +z: nothing to penalise.
        assert stats['Loss/G/monotonic'] == 0 and a.grad == 0
    elif reg_type == 'monotonic-fixed':
        assert stats['Loss/G/monotonic'] == pytest.approx(10 * a.item() * voxel, rel=1e-3)
        assert a.grad.item() == pytest.approx(2 * 10 * voxel, rel=1e-3)
    else: # Detached front: only the point behind is pushed up.
        assert stats['Loss/G/monotonic'] == pytest.approx(10 * a.item() * voxel, rel=1e-3)
        assert a.grad.item() == pytest.approx(-2 * 10 * (behind[..., 2]).mean().item(), rel=1e-4)

def test_density_reg_swaps_poses_for_the_whole_batch_at_once():
    """EG3D's density terms draw one swap coin per batch (run_G draws one per sample)."""
    seen = []
    G = stub_G(reg_type='monotonic-fixed')
    def mapping(z, c, update_emas=False):
        seen.append(c)
        return z[:, None, :].repeat(1, 3, 1)
    G.mapping = mapping
    G.sample_mixed = lambda coords, directions, ws, update_emas=False: {'sigma': coords[..., :1] * ws.mean()}
    loss = StyleGAN2Loss('cpu', G, None, gpc_reg_prob=0.5, gpc_reg_fade_kimg=0)
    c, z = torch.randn([8, 25]), torch.randn([8, 4], requires_grad=True)
    torch.manual_seed(0)
    for _ in range(10):
        loss.accumulate_gradients('Greg', None, c, z, c, gain=1, cur_nimg=0)
    assert len(seen) == 20 # The monotonic term and the l1 term each map (and draw a coin) once.
    swapped = [bool((s != c).any()) for s in seen]
    assert all(torch.equal(s, torch.roll(c, 1, 0) if w else c) for s, w in zip(seen, swapped))
    assert 0 < sum(swapped) < 20

#----------------------------------------------------------------------------
# Adversarial terms on the real networks.

def test_Gmain_loss_and_grads_at_scheduled_resolution(nets, batch):
    G, D = nets
    real, c, z = (x[:1] for x in batch)
    loss = StyleGAN2Loss('cpu', G, D, neural_rendering_resolution_initial=8, neural_rendering_resolution_final=24,
        neural_rendering_resolution_fade_kimg=1, blur_init_sigma=10, blur_fade_kimg=0.5)
    train_only(G, D)
    params = list(G.superresolution.block1.parameters()) # Checking these needs no backward pass through the whole G.
    torch.manual_seed(5)
    out = G.synthesis(G.mapping(z, torch.zeros_like(c)), c, neural_rendering_resolution=NRR)
    assert out['image_raw'].shape[-1] == NRR and out['image'].shape[-1] == 128
    expected = F.softplus(-D(out, c))
    expected_grads = torch.autograd.grad(expected.mean() * 0.5, params, allow_unused=True) # SR noise is off.

    torch.manual_seed(5)
    stats = stats_of(lambda: loss.accumulate_gradients('Gmain', real, c, z, c, gain=0.5, cur_nimg=500)) # Blur over.
    assert stats['Loss/G/loss'] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert stats.num('Loss/scores/fake') == 1 and stats.num('Loss/scores/real') == 0
    assert_grads_equal(params, expected_grads)
    assert G.backbone.mapping.fc0.weight.grad.abs().max() > 0 and G.decoder.net[0].weight.grad.abs().max() > 0
    assert all(p.grad is None for p in D.parameters())


def test_Dmain_loss_is_softplus_fake_plus_softplus_minus_real(nets, batch):
    G, D = nets
    real, c, z = (x[:1] for x in batch)
    loss = StyleGAN2Loss('cpu', G, D, neural_rendering_resolution_initial=NRR, dual_discrimination=True)
    params = train_only(D, G)
    torch.manual_seed(7)
    fake_logits = D(G.synthesis(G.mapping(z, torch.zeros_like(c)), c, neural_rendering_resolution=NRR), c)
    real_logits = D({'image': real, 'image_raw': F.interpolate(real, size=(NRR, NRR), mode='bilinear', antialias=True)}, c)
    expected = F.softplus(fake_logits) + F.softplus(-real_logits)
    expected_grads = torch.autograd.grad(expected.mean() * 2, params)

    torch.manual_seed(7)
    stats = stats_of(lambda: loss.accumulate_gradients('Dmain', real, c, z, c, gain=2, cur_nimg=0))
    assert stats['Loss/D/loss'] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert stats['Loss/scores/real'] == pytest.approx(real_logits.mean().item(), rel=1e-5)
    assert stats.num('Loss/r1_penalty') == 0
    assert_grads_equal(params, expected_grads)
    assert all(p.grad is None for p in G.parameters())


def test_Dmain_with_reused_fakes_scores_the_images_Gmain_rendered_this_step(nets, batch):
    G, D = nets
    real, c, z = batch
    loss = StyleGAN2Loss('cpu', G, D, neural_rendering_resolution_initial=NRR, dual_discrimination=True, d_fakes='reuse')
    w_avg = lambda: G.backbone.mapping.w_avg.clone()
    train_only(G, D)
    before = w_avg()
    torch.manual_seed(3)
    loss.accumulate_gradients('Gmain', real[:1], c[:1], z[:1], c[:1], gain=1, cur_nimg=8)
    assert not torch.equal(w_avg(), before)                 # Gmain moved w_avg, as Dmain's own rendering does in EG3D.
    params = train_only(D, G)
    torch.manual_seed(3)                                    # Gmain's stratified ray samples again: its very images.
    fake = G.synthesis(G.mapping(z[:1], torch.zeros_like(c[:1])), c[:1], neural_rendering_resolution=NRR)
    real_pair = {'image': real[1:], 'image_raw': F.interpolate(real[1:], size=(NRR, NRR), mode='bilinear', antialias=True)}
    expected = F.softplus(D(fake, c[:1])) + F.softplus(-D(real_pair, c[1:]))
    expected_grads = torch.autograd.grad(expected.mean(), params)

    params, before = train_only(D, G), w_avg()
    torch.manual_seed(11)                                   # Dmain's own latent and camera (z[1:], c[1:]) go unused.
    stats = stats_of(lambda: loss.accumulate_gradients('Dmain', real[1:], c[1:], z[1:], c[1:], gain=1, cur_nimg=8))
    assert stats['Loss/D/loss'] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert_grads_equal(params, expected_grads)
    assert torch.equal(w_avg(), before)                     # It rendered nothing.

    # A step whose Gmain did not run (another cur_nimg): Dmain renders its own fakes, and moves w_avg itself.
    loss.accumulate_gradients('Dmain', real[1:], c[1:], z[1:], c[1:], gain=1, cur_nimg=12)
    assert not torch.equal(w_avg(), before)

    # A batch in two rounds (--batch-gpu): Dmain's rounds take Gmain's images in the order Gmain made them.
    train_only(G, D)
    scores = []
    for i in range(2):
        torch.manual_seed(20 + i)
        stats = stats_of(lambda: loss.accumulate_gradients('Gmain', real[i:i + 1], c[i:i + 1], z[i:i + 1], c[i:i + 1],
            gain=1, cur_nimg=16))
        scores.append(stats['Loss/scores/fake'])
    train_only(D, G)
    for i in range(2):
        stats = stats_of(lambda: loss.accumulate_gradients('Dmain', real[:1], c[:1], z[:1], c[:1], gain=1, cur_nimg=16))
        assert stats['Loss/scores/fake'] == pytest.approx(scores[i], rel=1e-5)
    assert scores[0] != pytest.approx(scores[1], rel=1e-3)


@pytest.mark.parametrize('dual', [True, False])
def test_r1_penalty_matches_autograd_on_blurred_real_pair(nets, batch, dual):
    G, D = nets
    real, c, z = batch
    gamma, sigma = 3.0, 0.7 # Blur radius 2, at cur_nimg=0 of a 1 kimg fade.
    loss = StyleGAN2Loss('cpu', G, D, r1_gamma=gamma, neural_rendering_resolution_initial=NRR, dual_discrimination=dual,
        blur_init_sigma=sigma, blur_fade_kimg=1)
    params = train_only(D, G)
    image = real.detach().requires_grad_(True)
    image_raw = blur_reference(F.interpolate(real, size=(NRR, NRR), mode='bilinear', antialias=True), sigma).requires_grad_(True)
    logits = D({'image': blur_reference(image, sigma), 'image_raw': image_raw}, c)
    grads = torch.autograd.grad(logits.sum(), [image, image_raw], create_graph=True)
    penalty = grads[0].square().sum([1, 2, 3]) + (grads[1].square().sum([1, 2, 3]) if dual else 0)
    expected_grads = torch.autograd.grad((penalty * gamma / 2).mean() * 4, params, allow_unused=True) # The last bias has none.

    stats = stats_of(lambda: loss.accumulate_gradients('Dreg', real, c, z, c, gain=4, cur_nimg=0))
    assert stats.num('Loss/r1_penalty') == 2
    assert stats['Loss/r1_penalty'] == pytest.approx(penalty.mean().item(), rel=1e-4)
    assert stats['Loss/D/reg'] == pytest.approx(penalty.mean().item() * gamma / 2, rel=1e-4)
    assert stats.num('Loss/D/loss') == 0 and stats.num('Loss/scores/fake') == 0
    assert_grads_equal(params, expected_grads, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('reg_type', ['l1', 'monotonic-detach'])
def test_every_phase_trains_only_its_network(monkeypatch, nets, batch, reg_type):
    G, D = nets
    real, c, z = batch
    monkeypatch.setattr(G, 'rendering_kwargs', dict(RENDERING_KWARGS, reg_type=reg_type))
    loss = StyleGAN2Loss('cpu', G, D, r1_gamma=1, neural_rendering_resolution_initial=NRR, dual_discrimination=True,
        gpc_reg_prob=0.5, style_mixing_prob=0.9, blur_init_sigma=10, blur_fade_kimg=1)
    for phase in loss.phases:
        module, other = (G, D) if phase.startswith('G') else (D, G)
        train_only(module, other)
        loss.accumulate_gradients(phase, real, c, z, c, gain=1, cur_nimg=200)
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert len(grads) > 0 and all(torch.isfinite(g).all() for g in grads), phase
        assert sum(float(g.abs().sum()) for g in grads) > 0, phase
        assert all(p.grad is None for p in other.parameters()), phase

#----------------------------------------------------------------------------
