"""StyleGAN2 backbone, super-resolution and dual discriminator against EG3D's goldens, plus unit behaviour."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import dnnlib
from tests.conftest import REPO, load_golden, shared_file
from training import dual_discriminator
from training import networks_stylegan2
from training import superresolution

#----------------------------------------------------------------------------
# Helpers.

def rel_err(a, b):
    """Max absolute difference relative to the largest reference magnitude."""
    return ((a - b).abs().max() / b.abs().max()).item()


def build_backbone(G_kwargs):
    """The tri-plane backbone exactly as EG3D's TriPlaneGenerator builds it."""
    return networks_stylegan2.Generator(G_kwargs['z_dim'], G_kwargs['c_dim'], G_kwargs['w_dim'],
        img_resolution=256, img_channels=96, mapping_kwargs=G_kwargs['mapping_kwargs'],
        channel_base=G_kwargs['channel_base'], channel_max=G_kwargs['channel_max'],
        fused_modconv_default=G_kwargs['fused_modconv_default'], num_fp16_res=G_kwargs['num_fp16_res'],
        conv_clamp=G_kwargs['conv_clamp'])


def build_superresolution(G_kwargs):
    """The SR module as TriPlaneGenerator builds it (by class name, with sr_kwargs)."""
    rk = G_kwargs['rendering_kwargs']
    return dnnlib.util.construct_class_by_name(class_name=rk['superresolution_module'], channels=32,
        img_resolution=G_kwargs['img_resolution'], sr_num_fp16_res=G_kwargs['sr_num_fp16_res'],
        sr_antialias=rk['sr_antialias'], **G_kwargs['sr_kwargs'])


def sub_state(state, prefix):
    return {name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)}


def effective_c(golden):
    """The label the tri-plane wrapper hands to the backbone mapping: zeroed if configured, times c_scale."""
    rk = golden['G_init_kwargs']['rendering_kwargs']
    c = golden['inputs']['c']
    if rk['c_gen_conditioning_zero']:
        c = torch.zeros_like(c)
    return c * rk.get('c_scale', 0)


_backbones = {}

def golden_backbone(golden):
    key = id(golden)
    if key not in _backbones:
        G = build_backbone(golden['G_init_kwargs']).eval().requires_grad_(False)
        G.load_state_dict(sub_state(golden['G_state'], 'backbone.'), strict=True)
        _backbones[key] = G
    return _backbones[key]


def tiny_generator(**kwargs):
    torch.manual_seed(0)
    return networks_stylegan2.Generator(z_dim=8, c_dim=4, w_dim=8, img_resolution=16, img_channels=3,
        mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=16, num_fp16_res=0, **kwargs)

#----------------------------------------------------------------------------
# Goldens.

def test_backbone_mapping_matches_golden(golden):
    G = golden_backbone(golden)
    z, c = golden['inputs']['z'], effective_c(golden)
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=1)
        ws_psi07 = G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=golden['inputs']['truncation_cutoff'])
    assert rel_err(ws, golden['outputs']['ws']) < 1e-5
    assert rel_err(ws_psi07, golden['outputs']['ws_psi07']) < 1e-5
    assert not torch.allclose(ws, ws_psi07) # truncation was exercised


def test_backbone_planes_match_golden(golden):
    G = golden_backbone(golden)
    out = golden['outputs']
    with torch.no_grad():
        planes = G.synthesis(out['ws'], noise_mode='const')
    assert planes.shape == (2, 96, 256, 256) and planes.dtype == torch.float32
    assert rel_err(planes[:, :, ::8, ::8], out['planes_sub8']) < 1e-5
    assert abs(planes.mean().item() - out['planes_mean'].item()) < 1e-5 * out['planes_std'].item()
    assert abs(planes.std().item() - out['planes_std'].item()) < 1e-5 * out['planes_std'].item()


@pytest.mark.parametrize('name', [
    pytest.param('golden_ffhq512_small.pt', id='ffhq512', marks=pytest.mark.slow), # 512x512 output, ~20 s on 2 cores
    pytest.param('golden_shapenet128_small.pt', id='shapenet128'),
])
def test_superresolution_matches_golden(name):
    golden = load_golden(name)
    sr = build_superresolution(golden['G_init_kwargs']).eval()
    sr.load_state_dict(sub_state(golden['G_state'], 'superresolution.'), strict=True)
    out = golden['outputs']
    with torch.no_grad():
        img = sr(out['sr_in_rgb'], out['sr_in_feat'], out['ws'], noise_mode='const')
    assert img.shape == out['sr_out'].shape
    assert (img - out['sr_out']).abs().max().item() < 1e-4


def test_dual_discriminator_matches_golden(golden):
    D = dual_discriminator.DualDiscriminator(**golden['D_init_kwargs']).eval()
    D.load_state_dict(golden['D_state'], strict=True)
    out = golden['outputs']
    with torch.no_grad():
        logits = D({'image': out['d_in_image'], 'image_raw': out['d_in_image_raw']}, golden['inputs']['c'])
    assert logits.shape == (2, 1)
    assert rel_err(logits, out['d_logits']) < 1e-5


def _spec():
    with open(shared_file('eg3d_reference', 'ffhq512_param_spec.json')) as f:
        return json.load(f)['ffhq512']


def _shapes(module):
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def test_dual_discriminator_matches_released_spec():
    spec = _spec()
    D = dual_discriminator.DualDiscriminator(**spec['D_init_kwargs'])
    assert _shapes(D) == spec['D_params']


def test_backbone_and_superresolution_match_released_spec():
    spec = _spec()
    G_params = spec['G_params']
    backbone = build_backbone(spec['G_init_kwargs'])
    sr = build_superresolution(spec['G_init_kwargs'])
    assert _shapes(backbone) == sub_state(G_params, 'backbone.')
    assert _shapes(sr) == sub_state(G_params, 'superresolution.')

#----------------------------------------------------------------------------
# Unit behaviour.

def test_fused_and_unfused_modconv_agree():
    G = tiny_generator().eval()
    ws = G.mapping(torch.randn([3, 8]), torch.randn([3, 4]))
    with torch.no_grad():
        fused = G.synthesis(ws, noise_mode='const', fused_modconv=True)
        unfused = G.synthesis(ws, noise_mode='const', fused_modconv=False)
    assert fused.shape == (3, 3, 16, 16)
    assert torch.allclose(fused, unfused, rtol=1e-4, atol=1e-5)


def test_fused_modconv_inference_only_follows_training_flag(monkeypatch):
    G = tiny_generator(fused_modconv_default='inference_only')
    seen = []
    real = networks_stylegan2.modulated_conv2d
    monkeypatch.setattr(networks_stylegan2, 'modulated_conv2d', lambda **kw: seen.append(kw['fused_modconv']) or real(**kw))
    ws = G.mapping(torch.randn([2, 8]), torch.randn([2, 4]))
    G.train().synthesis(ws, noise_mode='const')
    assert seen and not any(seen)
    seen.clear()
    G.eval().synthesis(ws, noise_mode='const')
    assert seen and all(seen)


def test_modulated_conv2d_matches_direct_formula():
    torch.manual_seed(1)
    x, weight, styles = torch.randn([2, 5, 8, 8]), torch.randn([6, 5, 3, 3]), torch.randn([2, 5])
    got = networks_stylegan2.modulated_conv2d(x=x, weight=weight, styles=styles, padding=1)
    for n in range(2):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        ref = torch.nn.functional.conv2d(x[n:n + 1], w, padding=1)
        assert torch.allclose(got[n:n + 1], ref, atol=1e-5)


def test_noise_modes_differ_only_by_noise():
    G = tiny_generator().eval()
    with torch.no_grad():
        for name, module in G.synthesis.named_modules():
            if isinstance(module, networks_stylegan2.SynthesisLayer):
                module.noise_strength.fill_(0.3)
        ws = G.mapping(torch.randn([2, 8]), torch.randn([2, 4]))
        const = G.synthesis(ws, noise_mode='const')
        none = G.synthesis(ws, noise_mode='none')
        assert not torch.allclose(const, none)
        for name, module in G.synthesis.named_modules():
            if isinstance(module, networks_stylegan2.SynthesisLayer):
                module.noise_strength.zero_()
        const_off = G.synthesis(ws, noise_mode='const')
        random_off = G.synthesis(ws, noise_mode='random')
    assert torch.equal(const_off, none)
    assert torch.equal(random_off, none)


def test_update_emas_moves_w_avg_toward_batch_mean():
    G = tiny_generator()
    mapping = G.mapping
    with torch.no_grad():
        mapping.w_avg.copy_(torch.randn([8]))
        before = mapping.w_avg.clone()
        z, c = torch.randn([4, 8]), torch.randn([4, 4])
        ws = mapping(z, c, update_emas=True)
    batch_mean = ws[:, 0].mean(dim=0)
    beta = mapping.w_avg_beta
    assert torch.allclose(mapping.w_avg, before + (1 - beta) * (batch_mean - before), atol=1e-6)
    with torch.no_grad():
        mapping(z, c) # update_emas=False leaves it alone
    assert torch.allclose(mapping.w_avg, before + (1 - beta) * (batch_mean - before), atol=1e-6)


def test_truncation_psi_zero_returns_w_avg_up_to_cutoff():
    G = tiny_generator()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn([8]))
        z, c = torch.randn([2, 8]), torch.randn([2, 4])
        ws = G.mapping(z, c)
        cut = G.mapping(z, c, truncation_psi=0, truncation_cutoff=3)
        full = G.mapping(z, c, truncation_psi=0)
    assert G.num_ws == 6
    assert torch.equal(cut[:, :3], G.mapping.w_avg.expand(2, 3, 8))
    assert torch.equal(cut[:, 3:], ws[:, 3:])
    assert torch.equal(full, G.mapping.w_avg.expand(2, 6, 8))


def test_generator_forward_composes_mapping_and_synthesis():
    G = tiny_generator().eval()
    z, c = torch.randn([2, 8]), torch.randn([2, 4])
    with torch.no_grad():
        img = G(z, c, truncation_psi=0.5, truncation_cutoff=2, noise_mode='const')
        ref = G.synthesis(G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2), noise_mode='const')
    assert torch.equal(img, ref)


def test_fp16_blocks_run_fp32_on_cpu():
    torch.manual_seed(0)
    G = networks_stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
        channel_base=64, channel_max=16, num_fp16_res=4, conv_clamp=256)
    assert G.synthesis.b16.use_fp16
    img = G(torch.randn([2, 8]), None)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()


def test_superresolution_layouts():
    # Hybrid2X has a top-level resample_filter and a no-upsampling first block; Hybrid8XDC has neither.
    sr2 = superresolution.SuperresolutionHybrid2X(channels=8, img_resolution=128, sr_num_fp16_res=0, sr_antialias=True)
    assert 'resample_filter' in sr2.state_dict()
    assert isinstance(sr2.block0, superresolution.SynthesisBlockNoUp) and sr2.block0.conv0.up == 1
    assert sr2.block0.conv0.conv_clamp is None
    sr8 = superresolution.SuperresolutionHybrid8XDC(channels=8, img_resolution=512, sr_num_fp16_res=4, sr_antialias=True)
    assert 'resample_filter' not in sr8.state_dict()
    assert sr8.block0.conv0.up == 2 and sr8.block0.conv0.conv_clamp == 256
    sr4 = superresolution.SuperresolutionHybrid4X(channels=8, img_resolution=256, sr_num_fp16_res=0, sr_antialias=False)
    keys8x = set(superresolution.SuperresolutionHybrid8X(channels=8, img_resolution=512, sr_num_fp16_res=0,
        sr_antialias=False).state_dict())
    assert keys8x == set(sr8.state_dict()) | {'resample_filter'}
    deep = superresolution.SuperresolutionHybridDeepfp32(channels=8, img_resolution=256, sr_num_fp16_res=0)
    assert _shapes(deep) == _shapes(sr4)


def test_superresolution_resizes_inputs():
    torch.manual_seed(0)
    sr = superresolution.SuperresolutionHybrid2X(channels=8, img_resolution=128, sr_num_fp16_res=0, sr_antialias=True).eval()
    ws = torch.randn([1, 5, 512])
    with torch.no_grad():
        out = sr(torch.randn([1, 3, 32, 32]), torch.randn([1, 8, 32, 32]), ws, noise_mode='const')
    assert out.shape == (1, 3, 128, 128)


def test_superresolution_adds_into_rgb_in_place_at_input_resolution():
    # EG3D quirk kept for exactness: with no resize and no upsampling in block0, block0's RGB is added into the
    # caller's rgb tensor (TriPlaneGenerator's image_raw is a view of the features, so it sees this too).
    torch.manual_seed(0)
    sr = superresolution.SuperresolutionHybrid2X(channels=8, img_resolution=128, sr_num_fp16_res=0, sr_antialias=True).eval()
    feat = torch.randn([1, 8, 64, 64])
    feat_before = feat.clone()
    ws = torch.randn([1, 4, 512])
    with torch.no_grad():
        sr(feat[:, :3], feat, ws, noise_mode='const')
        _, block0_rgb = sr.block0(feat_before, None, ws[:, -1:].repeat(1, 3, 1), noise_mode='const')
    assert torch.allclose(feat[:, :3], feat_before[:, :3] + block0_rgb, atol=1e-6)
    assert torch.equal(feat[:, 3:], feat_before[:, 3:])


def test_filtered_resizing_modes():
    img = torch.randn([1, 3, 8, 8])
    f = torch.ones([4, 4]) / 16
    same = dual_discriminator.filtered_resizing(img, 8, f)
    assert torch.allclose(same, img, atol=1e-6) # resizing to the same size is the identity
    up = dual_discriminator.filtered_resizing(img, 16, f, filter_mode='none')
    ref = torch.nn.functional.interpolate(img, size=(16, 16), mode='bilinear', align_corners=False)
    assert torch.equal(up, ref)
    down_aa = dual_discriminator.filtered_resizing(img, 4, f)
    down_plain = dual_discriminator.filtered_resizing(img, 4, f, filter_mode='none')
    blend = dual_discriminator.filtered_resizing(img, 4, f, filter_mode=0.25)
    assert torch.allclose(blend, 0.75 * down_plain + 0.25 * down_aa, atol=1e-6)
    assert dual_discriminator.filtered_resizing(img, 4, f, filter_mode='classic').shape == (1, 3, 4, 4)


def test_single_discriminator_reads_only_the_image():
    torch.manual_seed(0)
    D = dual_discriminator.SingleDiscriminator(c_dim=25, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    img = torch.randn([2, 3, 16, 16])
    c = torch.randn([2, 25])
    a = D({'image': img, 'image_raw': torch.randn([2, 3, 8, 8])}, c)
    b = networks_stylegan2.Discriminator.forward(D, img, c)
    assert a.shape == (2, 1) and torch.equal(a, b)


def test_pickle_roundtrip_preserves_outputs():
    torch.manual_seed(0)
    D = dual_discriminator.DualDiscriminator(c_dim=25, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    sr = superresolution.SuperresolutionHybrid2X(channels=8, img_resolution=128, sr_num_fp16_res=4, sr_antialias=True).eval()
    D2, sr2 = pickle.loads(pickle.dumps((D, sr)))
    img = {'image': torch.randn([2, 3, 16, 16]), 'image_raw': torch.randn([2, 3, 8, 8])}
    c = torch.randn([2, 25])
    assert torch.equal(D(img, c), D2(img, c))
    rgb, feat, ws = torch.randn([1, 3, 64, 64]), torch.randn([1, 8, 64, 64]), torch.randn([1, 4, 512])
    with torch.no_grad(): # clones: at the input resolution, EG3D's SR adds into the caller's rgb in place
        assert torch.equal(sr(rgb.clone(), feat, ws, noise_mode='const'), sr2(rgb.clone(), feat, ws, noise_mode='const'))
    assert D2.init_kwargs == D.init_kwargs and D2.img_channels == 6


def test_eg3d_import_names():
    # EG3D's embedded sources import these names from training.networks_stylegan2, which re-exports the shared layers
    # (training/layers.py) and the discriminator (training/discriminator_blocks.py): any import order works (fresh
    # interpreter, discriminator first), with plain imports and no import cycle.
    names = ['normalize_2nd_moment', 'modulated_conv2d', 'FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork',
             'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock', 'SynthesisNetwork', 'Generator', 'DiscriminatorBlock',
             'MinibatchStdLayer', 'DiscriminatorEpilogue', 'Discriminator']
    code = ('import training.discriminator_blocks, training.dual_discriminator\n'
            f'from training.networks_stylegan2 import {", ".join(names)}\n'
            'print("ok")')
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr
    with pytest.raises(AttributeError):
        networks_stylegan2.NoSuchThing
    assert not hasattr(networks_stylegan2, '__getattr__')
    from training import discriminator_blocks, layers
    assert networks_stylegan2.Discriminator is discriminator_blocks.Discriminator
    assert networks_stylegan2.MappingNetwork is layers.MappingNetwork is discriminator_blocks.MappingNetwork

#----------------------------------------------------------------------------
# StyleGAN3 SynthesisLayer (EG3D imports it as AFSynthesisLayer), against a direct re-derivation.

def _upfirdn_direct(x, f, up, down, pad, gain):
    """Zero-insert upsample, pad [x0, x1, y0, y1] (negative crops), convolve with outer(f, f) * gain, keep every down-th."""
    N, C, H, W = x.shape
    if up > 1:
        z = x.new_zeros([N, C, H * up, W * up])
        z[:, :, ::up, ::up] = x
        x = z
    x = torch.nn.functional.pad(x, pad)
    f2 = torch.outer(f, f).flip([0, 1]) * gain
    x = torch.nn.functional.conv2d(x.reshape(N * C, 1, *x.shape[2:]), f2[None, None])
    return x.reshape(N, C, *x.shape[2:])[:, :, ::down, ::down]


def _sg3_layer_direct(layer, x, w):
    """Modulate/demodulate (per sample), bias, upsample, scaled leaky ReLU, clamp, downsample."""
    styles = layer.affine(w)
    if layer.is_torgb:
        styles = styles / np.sqrt(layer.in_channels * layer.conv_kernel ** 2)
    outs = []
    for n in range(x.shape[0]):
        k = layer.weight * styles[n].reshape(1, -1, 1, 1)
        if not layer.is_torgb:
            k = k / k.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        k = k * layer.magnitude_ema.rsqrt()
        outs.append(torch.nn.functional.conv2d(x[n:n + 1], k, padding=layer.conv_kernel - 1))
    y = torch.cat(outs) + layer.bias.reshape(1, -1, 1, 1)
    if layer.up_filter is not None:
        y = _upfirdn_direct(y, layer.up_filter, layer.up_factor, 1, layer.padding, layer.up_factor ** 2)
    else:
        y = torch.nn.functional.pad(y, layer.padding)
    gain, slope = (1, 1) if layer.is_torgb else (np.sqrt(2), 0.2)
    y = torch.where(y >= 0, y, y * slope) * gain
    y = y.clamp(-layer.conv_clamp, layer.conv_clamp)
    if layer.down_filter is not None:
        y = _upfirdn_direct(y, layer.down_filter, 1, layer.down_factor, [0, 0, 0, 0], 1)
    return y


@pytest.mark.parametrize('is_torgb', [False, True], ids=['upsampling', 'torgb'])
def test_stylegan3_synthesis_layer_matches_direct_maths(is_torgb):
    from training.networks_stylegan3 import SynthesisLayer as AFSynthesisLayer
    torch.manual_seed(0)
    if is_torgb:
        spec = dict(in_channels=6, out_channels=3, in_size=16, out_size=16, in_sampling_rate=16, out_sampling_rate=16,
            in_cutoff=8, out_cutoff=8, in_half_width=3, out_half_width=3)
    else: # an SG3 layer that doubles the sampling rate, with a 10-pixel margin
        spec = dict(in_channels=6, out_channels=5, in_size=36, out_size=52, in_sampling_rate=16, out_sampling_rate=32,
            in_cutoff=4, out_cutoff=8, in_half_width=4, out_half_width=6)
    layer = AFSynthesisLayer(w_dim=8, is_torgb=is_torgb, is_critically_sampled=False, use_fp16=True, conv_clamp=0.5, **spec)
    with torch.no_grad():
        layer.bias.normal_()
        layer.magnitude_ema.fill_(1.7)
    if not is_torgb:
        assert (layer.up_factor, layer.down_factor) == (4, 2) and layer.up_filter.shape == (24,)
        assert torch.allclose(layer.up_filter.sum(), torch.tensor(1.0)) and torch.allclose(layer.down_filter.sum(), torch.tensor(1.0))
    x = torch.randn([2, 6, spec['in_size'], spec['in_size']])
    w = torch.randn([2, 8])
    with torch.no_grad():
        got = layer(x, w, noise_mode='const')
        ref = _sg3_layer_direct(layer, x, w)
    assert got.shape == (2, spec['out_channels'], spec['out_size'], spec['out_size']) and got.dtype == torch.float32
    assert ref.shape == got.shape
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
    layer.conv_clamp = 1e9
    with torch.no_grad():
        assert not torch.allclose(got, _sg3_layer_direct(layer, x, w), atol=1e-2) # the clamp was exercised
    layer(x, w, update_emas=True)
    assert torch.allclose(layer.magnitude_ema, torch.tensor(1.7).lerp(x.square().mean(), 1 - 0.999))

#----------------------------------------------------------------------------


def test_superresolution_at_input_resolution_trains_in_fp32():
    # The in-place add above must not break backward when rgb is a view of the features (TriPlaneGenerator's case).
    torch.manual_seed(0)
    sr = superresolution.SuperresolutionHybrid2X(channels=8, img_resolution=128, sr_num_fp16_res=0, sr_antialias=True)
    feat = torch.randn([1, 8, 64, 64], requires_grad=True)
    features = feat * 1.0
    out = sr(features[:, :3], features, torch.randn([1, 4, 512]), noise_mode='const')
    (out.square().mean() + features[:, :3].mean()).backward()
    assert feat.grad is not None and torch.isfinite(feat.grad).all()
    assert all(p.grad is not None for p in sr.block0.parameters() if p.requires_grad)
