"""On a CUDA machine: compiled Triton kernels against the reference ops on the same GPU, and G on GPU against CPU."""

import os

import numpy as np
import pytest
import torch

from eg3d_rlhf import cli
from eg3d_rlhf.generators.eg3d import EG3DGenerator, TriPlaneField
from eg3d_rlhf.geometry.sigma import CubeGrid
from torch_utils.ops import bias_act
from torch_utils.ops import filtered_lrelu
from torch_utils.ops import triplane_sigma
from torch_utils.ops import triton_kernels
from torch_utils.ops import upfirdn2d
from training.volumetric_rendering.renderer import generate_planes, project_onto_planes

# The rest of the suite runs the kernels in Triton's CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1 unless
# the environment says otherwise); these need them compiled: `TRITON_INTERPRET=0 python -m pytest tests/test_gpu.py`.
pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: tests/test_gpu.py checks GPU kernels'),
    pytest.mark.skipif(os.environ.get('TRITON_INTERPRET', '0') != '0',
        reason='TRITON_INTERPRET=1 interprets the kernels: run with TRITON_INTERPRET=0 for compiled ones'),
]

#----------------------------------------------------------------------------
# Helpers.

@pytest.fixture(autouse=True)
def exact_cuda_math():
    """No TF32 in the reference path's convolutions and matrix products (cuDNN allows it by default); custom ops on,
    bias_act's float32 kernel too (dispatch leaves it off: slower than PyTorch's there), so it is checked all the same."""
    pytest.importorskip('triton', reason='triton is not installed (pip install -e .[gpu]): the kernels need it')
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, triplane_sigma.enabled,
        bias_act.triton_float32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    triplane_sigma.enabled = bias_act.triton_float32 = True
    yield
    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, triplane_sigma.enabled,
        bias_act.triton_float32) = saved


@pytest.fixture
def took_triton(monkeypatch):
    """The ops for which dispatch chose a Triton kernel during the test (a silent fallback would pass otherwise)."""
    taken = set()
    real = triton_kernels.wants_triton
    def spy(op, x, impl, supported=True, reason=''):
        answer = real(op, x, impl, supported, reason)
        if answer:
            taken.add(op)
        return answer
    monkeypatch.setattr(triton_kernels, 'wants_triton', spy)
    return taken


def _rand(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to('cuda', dtype)


def _grads(run, inputs, g_dtype, seed=1):
    """Output of run(*inputs) and the gradients of a random projection of it (weights drawn in g_dtype) with respect
    to every input."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = run(*leaves)
    g = _rand(y.shape, seed, g_dtype).to(y.dtype)
    return y.detach(), torch.autograd.grad((y * g).sum(), leaves)


def _compare(triton_run, ref_run, inputs, rtol):
    """Triton against the reference on the same GPU tensors: output and every gradient, within rtol of the largest.
    float16 kernels compute in float32 and round once, so their reference is the float32 one on the same (float16)
    inputs: the output within one float16 rounding, the gradients within rtol in all but 1 in 2,000 elements (values
    within a rounding of an activation's kink, 0 or +-clamp, may fall on its other side)."""
    half = inputs[0].dtype == torch.float16
    y_tri, g_tri = _grads(triton_run, inputs, inputs[0].dtype)
    y_ref, g_ref = _grads(ref_run, [t.float() for t in inputs] if half else inputs, inputs[0].dtype)
    for i, (a, b) in enumerate(zip((y_tri, *g_tri), (y_ref, *g_ref))):
        assert a.shape == b.shape and a.dtype == inputs[0].dtype
        a, b = a.float(), b.float()
        atol = rtol * max(1.0, b.abs().max().item())
        if not half:
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
        elif i == 0:
            mag = b.abs().half()
            ulp = (torch.nextafter(mag, torch.full_like(mag, float('inf'))) - mag).float()
            err = (a - b).abs() - 2**-24            # Less float16's least step: float32's noise near 0 (elu's exp - 1).
            assert (err <= ulp + 1e-5 * b.abs()).all(), f'output off by {(err / ulp).max():.2f} ulp'
        else:
            off = ((a - b).abs() > atol + rtol * b.abs()).float().mean().item()
            assert off <= 5e-4, f'gradient {i}: {off:.2e} of its elements differ from the float32 reference'


RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 4e-3}
FILTER = [1, 3, 3, 1]                                                   # StyleGAN2 / EG3D's resampling filter.

#----------------------------------------------------------------------------
# The ops at EG3D's sizes (float32, float16) and small ones (float64, where the two must agree to rounding).

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize('act,clamp', [('lrelu', None), ('lrelu', 256), ('linear', None), ('relu', 1.5),
    ('tanh', None), ('sigmoid', None), ('elu', None), ('selu', None), ('softplus', None), ('swish', None)])
def test_bias_act(took_triton, dtype, act, clamp):
    shape = [4, 512, 32, 32] if dtype != torch.float64 else [2, 16, 5, 7]
    x, b = _rand(shape, 0, dtype), _rand(shape[1:2], 2, dtype)
    run = lambda impl: (lambda x, b: bias_act.bias_act(x, b, act=act, clamp=clamp, impl=impl))
    _compare(run('cuda'), run('ref'), [x, b], RTOL[dtype])
    assert took_triton == {'bias_act'}


def test_bias_act_second_order(took_triton):
    """R1's gradient penalty differentiates bias_act twice: the Triton double backward against the reference's."""
    x, b = _rand([2, 64, 8, 8], 0, torch.float64), _rand([64], 1, torch.float64)
    def grad_norm(impl):
        xl = x.clone().requires_grad_(True)
        y = bias_act.bias_act(xl, b, act='lrelu', impl=impl)
        (g,) = torch.autograd.grad(y.square().sum(), xl, create_graph=True)
        return torch.autograd.grad(g.square().sum(), xl)[0]
    torch.testing.assert_close(grad_norm('cuda'), grad_norm('ref'), rtol=1e-10, atol=1e-10)
    assert 'bias_act' in took_triton


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize('up,down,padding', [(2, 1, [2, 1, 2, 1]), (1, 2, [1, 1, 1, 1]), (1, 1, [1, 2, 1, 2]),
    (2, 2, [3, 2, 3, 2])])
def test_upfirdn2d(took_triton, dtype, up, down, padding):
    f = upfirdn2d.setup_filter(FILTER, device='cuda')
    shape = [4, 128, 64, 64] if dtype != torch.float64 else [2, 3, 9, 11]
    run = lambda impl: (lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=up * up, impl=impl))
    _compare(run('cuda'), run('ref'), [_rand(shape, 0, dtype)], RTOL[dtype])
    assert took_triton == {'upfirdn2d'}


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize('up,down,clamp', [(2, 2, None), (2, 2, 256), (1, 2, None), (2, 1, 64)])
def test_filtered_lrelu(took_triton, dtype, up, down, clamp):
    f = upfirdn2d.setup_filter(FILTER, device='cuda')
    shape = [4, 128, 64, 64] if dtype != torch.float64 else [2, 3, 9, 11]
    x, b = _rand(shape, 0, dtype), _rand(shape[1:2], 2, dtype)
    run = lambda impl: (lambda x, b: filtered_lrelu.filtered_lrelu(x, f, f, b, up=up, down=down, padding=[3, 2, 3, 2],
        gain=np.sqrt(2), clamp=clamp, impl=impl))
    _compare(run('cuda'), run('ref'), [x, b], RTOL[dtype])
    assert 'filtered_lrelu' in took_triton


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('outputs', [1, 33])
def test_triplane_decode(took_triton, dtype, outputs):
    """The fused tri-plane decode (sigma alone, or sigma and 32 features) against grid_sample + the MLP, at EG3D's
    sizes in float32; its gradients for planes, points and every weight."""
    n, res, c, hidden, m = (1, 256, 32, 64, 2**16) if dtype == torch.float32 else (2, 9, 8, 5, 300)
    planes = _rand([n, 3, c, res, res], 0, dtype)
    points = torch.rand([n, m, 3], generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.2 - 0.6
    points = points.to('cuda', dtype)                                   # Some outside the box: zero padding.
    w1, b1 = _rand([hidden, c], 4, dtype) / np.sqrt(c), _rand([hidden], 5, dtype)
    w2, b2 = _rand([outputs, hidden], 6, dtype) / np.sqrt(hidden), _rand([outputs], 7, dtype)
    def fused(planes, points, w1, b1, w2, b2):
        return triplane_sigma.decode(triplane_sigma.channels_last(planes), points, w1, b1, w2, b2, box_warp=1.0)
    def reference(planes, points, w1, b1, w2, b2):
        grid = project_onto_planes(generate_planes().to(planes.device, planes.dtype), 2 * points).unsqueeze(1)
        f = torch.nn.functional.grid_sample(planes.flatten(0, 1), grid, padding_mode='zeros', align_corners=False)
        f = f.permute(0, 3, 2, 1).reshape(n, 3, m, c).mean(1)                  # EG3D's sample_from_planes, dtype kept.
        return torch.nn.functional.softplus(f @ w1.T + b1) @ w2.T + b2
    assert triplane_sigma.can_run(planes, points)
    _compare(fused, reference, [planes, points, w1, b1, w2, b2], RTOL[dtype] * 5)
    assert took_triton == {'triplane_sigma'}

#----------------------------------------------------------------------------
# End to end: the bundled generator on the GPU (Triton kernels) against the CPU (compiled C++ plugins).

def test_bundled_generator_on_gpu_matches_cpu(took_triton, pinned_rand):
    """Rendered views (ray samples unjittered: pinned_rand) and a sigma cube of a seed on both devices."""
    out = {}
    for dev in ['cpu', 'cuda']:
        gen = EG3DGenerator.load(cli.BUNDLED, device=dev, trust=True)      # The bundled file.
        views = gen.camera_views(5)
        z = torch.randn([1, gen.G.z_dim], generator=torch.Generator().manual_seed(5))
        field = TriPlaneField.from_latents(gen.G, z, gen.camera())
        sigma = field.sample_grid(CubeGrid(64, cube_length=gen.cube_length))
        out[dev] = {k: v.float().cpu() for k, v in views.items()} | {'sigma': sigma.float().cpu()}
    for key, cpu in out['cpu'].items():
        err = (out['cuda'][key] - cpu).abs().max().item() / max(1.0, cpu.abs().max().item())
        assert err < 1e-3, f'{key}: GPU differs from CPU by {err:.2e} of its largest value'
    assert {'bias_act', 'triplane_sigma'} <= took_triton
