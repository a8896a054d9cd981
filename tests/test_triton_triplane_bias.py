"""Triton kernels of the tri-plane decode and bias_act under Triton's CPU interpreter, and the dispatch to them."""

import importlib
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act
from torch_utils.ops import triplane_sigma
from torch_utils.ops import triton_kernels
from training.triplane import OSGDecoder
from training.volumetric_rendering.renderer import ImportanceRenderer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = ['torch_utils.ops.triton_kernels.triplane_sigma', 'torch_utils.ops.triton_kernels.bias_act']
ACTS = list(bias_act.activation_funcs)

#----------------------------------------------------------------------------
# Fixtures: the kernels under the interpreter, and CPU tensors that dispatch takes for CUDA ones.

@pytest.fixture(scope='module')
def kernels():
    """The two kernel modules under Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py before triton is
    imported): they run on CPU tensors. Skips naming the package where triton is not installed."""
    triton = pytest.importorskip('triton', reason='triton is not installed (pip install triton==3.9.0, the [gpu] extra)')
    from triton.runtime.interpreter import InterpretedFunction # pylint: disable=import-outside-toplevel
    if not isinstance(triton.language.sum, InterpretedFunction):
        pytest.fail('triton was imported without TRITON_INTERPRET=1 (tests/conftest.py sets it before any import)')
    return [importlib.import_module(name) for name in KERNELS]


@pytest.fixture
def as_cuda(kernels, monkeypatch):
    """Dispatch treats every tensor as a CUDA tensor (triton_kernels.is_cuda mocked), custom ops on, no warnings seen
    yet: CPU tensors take the Triton kernels, which the interpreter runs."""
    monkeypatch.setattr(triton_kernels, 'is_cuda', lambda x: True)
    monkeypatch.delenv('EG3D_RLHF_CUSTOM_OPS', raising=False)
    monkeypatch.setattr(triton_kernels, '_warned', set())
    monkeypatch.setattr(triplane_sigma, 'enabled', True)
    return kernels

#----------------------------------------------------------------------------
# The tri-plane decode.

def reference_decode(planes_cl, pts, w1, b1, w2, b2, box_warp):
    """EG3D's math in plain torch, in any dtype: grid_sample (align_corners=False, zeros) of planes [N, 3, H, W, C] at
    (x, y), (x, z), (z, x) of pts * 2 / box_warp, mean of the planes, then w2 softplus(w1 f + b1) + b2."""
    N, _, H, W, C = planes_cl.shape
    planes = planes_cl.permute(0, 1, 4, 2, 3).reshape(N * 3, C, H, W)
    p = pts * (2 / box_warp)
    uv = torch.stack([p[..., [0, 1]], p[..., [0, 2]], p[..., [2, 0]]], 1).reshape(N * 3, 1, -1, 2)
    f = torch.nn.functional.grid_sample(planes, uv, align_corners=False, padding_mode='zeros')
    f = f.reshape(N, 3, C, -1).mean(1).transpose(1, 2)
    return torch.nn.functional.softplus(f @ w1.T + b1) @ w2.T + b2


def decode_args(seed, batch, channels, height, width, hidden, outputs, count, spread=1.3, dtype=torch.float64):
    """Channels-last planes, points (spread > 1 puts some outside the planes) and decoder weights; pre-activations of
    both signs."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape, scale=1.0: torch.randn(shape, generator=gen, dtype=dtype) * scale
    pts = (torch.rand([batch, count, 3], generator=gen, dtype=dtype) - 0.5) * spread
    return [rand(batch, 3, height, width, channels), pts, rand(hidden, channels, scale=2), rand(hidden),
        rand(outputs, hidden), rand(outputs)]


def _grads(fn, args, upstream, wanted=None):
    leaves = [a.detach().clone().requires_grad_(wanted is None or i in wanted) for i, a in enumerate(args)]
    out = fn(*leaves)
    grads = torch.autograd.grad((out * upstream).sum(), [leaf for leaf in leaves if leaf.requires_grad])
    return out.detach(), grads


# (batch, channels, height, width, hidden, outputs, points, box_warp): odd sizes, batch > 1, several blocks of 64
# points, sigma alone (1 output), EG3D's 32 features / 64 hidden units / 33 outputs.
DECODE_CASES = [
    (2, 5, 7, 6, 9, 4, 70, 0.9),
    (1, 3, 4, 5, 6, 1, 50, 2.0),
    (2, 32, 6, 5, 64, 33, 40, 1.0),
]

@pytest.mark.parametrize('case', DECODE_CASES, ids=['odd', 'sigma', 'eg3d'])
def test_triplane_values_and_gradients_match_reference(kernels, case):
    tk, _ = kernels
    *sizes, box_warp = case
    args = decode_args(0, *sizes)
    upstream = torch.randn([sizes[0], sizes[-1], sizes[5]], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref, ref_grads = _grads(lambda *a: reference_decode(*a, box_warp), args, upstream)
    out, grads = _grads(lambda *a: tk.decode(*a, 2 / box_warp), args, upstream)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for name, got, want in zip(['planes', 'points', 'w1', 'b1', 'w2', 'b2'], grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=name)
    _, (planes_only,) = _grads(lambda *a: tk.decode(*a, 2 / box_warp), args, upstream, wanted={0})
    torch.testing.assert_close(planes_only, ref_grads[0], rtol=1e-9, atol=1e-9)   # Without the points' gradient.


def test_triplane_gradcheck_float64(kernels):
    tk, _ = kernels
    args = [a.requires_grad_() for a in decode_args(2, 2, 3, 4, 5, 6, 2, 9, spread=1.2)]
    assert torch.autograd.gradcheck(lambda *a: tk.decode(*a, 2 / 0.9), args, eps=1e-6, atol=1e-5, fast_mode=True)


def test_triplane_saturated_hidden_units_give_finite_gradients(kernels):
    """Hidden units with |pre-activation| in the hundreds (exp overflows float32): finite gradients, the reference's."""
    tk, _ = kernels
    args = decode_args(3, 2, 8, 5, 5, 16, 3, 30, dtype=torch.float32)
    args[3][:6], args[3][6:12] = -300.0, 300.0
    upstream = torch.randn([2, 30, 3], generator=torch.Generator().manual_seed(4))
    ref, ref_grads = _grads(lambda *a: reference_decode(*a, 1.0), args, upstream)
    out, grads = _grads(lambda *a: tk.decode(*a, 2.0), args, upstream)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, ref_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')     # numpy, on the NaN point.
def test_triplane_far_and_non_finite_points_read_nothing_outside(kernels):
    """Far points read what the reference reads; a non-finite x misses all three planes: zero features, and nothing
    flows into the planes' gradient from it."""
    tk, _ = kernels
    planes, _, w1, b1, w2, b2 = decode_args(5, 1, 4, 6, 6, 8, 2, 1)
    far = torch.tensor([[[5.0, 0.1, 0.2], [0.1, -7.0, 0.3], [0.2, 0.1, 9.0], [1e30, 1e30, -1e30], [-0.3, 1e20, 0.0]]],
        dtype=torch.float64)
    torch.testing.assert_close(tk.decode(planes, far, w1, b1, w2, b2, 2.0), reference_decode(planes, far, w1, b1, w2, b2, 1.0))
    bad = torch.tensor([[[float('nan'), 0.1, 0.2], [float('inf'), 0.0, 0.0], [-float('inf'), 0.2, 0.1]]], dtype=torch.float64)
    leaf = planes.clone().requires_grad_()
    out = tk.decode(leaf, bad, w1, b1, w2, b2, 2.0)
    empty = torch.nn.functional.softplus(b1) @ w2.T + b2
    torch.testing.assert_close(out, empty.expand_as(out))
    grad, = torch.autograd.grad(out.sum(), [leaf])
    assert torch.equal(grad, torch.zeros_like(grad))


def test_renderer_takes_triton_for_cuda_tensors(as_cuda, monkeypatch):
    """OSGDecoder.fused on 'CUDA' tensors goes through triplane_sigma.decode to the Triton kernel (float32), and gives
    the renderer's reference outputs and gradients."""
    tk, _ = as_cuda
    calls = []
    monkeypatch.setattr(tk, 'decode', lambda *a: calls.append(1) or tk._Decode.apply(*a))  # pylint: disable=protected-access
    gen = torch.Generator().manual_seed(6)
    dec = OSGDecoder(8, {'decoder_lr_mul': 1, 'decoder_output_dim': 3})
    planes = torch.randn([2, 3, 8, 5, 7], generator=gen).requires_grad_()
    pts = (torch.rand([2, 40, 3], generator=gen) - 0.5) * 1.2
    assert triplane_sigma.can_run(planes, pts)
    results = []
    for fused in (False, True):
        triplane_sigma.enabled = fused
        out = ImportanceRenderer().run_model(planes, dec, pts, torch.zeros_like(pts), {'box_warp': 0.9})
        y = torch.cat([out['sigma'], out['rgb']], -1)
        results.append((y.detach(), torch.autograd.grad(y.square().sum(), [planes] + list(dec.parameters()))))
    assert len(calls) == 1
    (ref, ref_grads), (got, grads) = results
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())

#----------------------------------------------------------------------------
# bias_act.

reference = bias_act._bias_act_ref                                          # pylint: disable=protected-access

def _bias_act_grads(fn, x, b, v, w, second):
    """y, (dx, db) of (y v).sum(), and where `second` (d/dx, d/db) of (dx w).sum() (R1's double backward)."""
    x, b = x.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    y = fn(x, b)
    dx, db = torch.autograd.grad((y * v).sum(), [x, b], create_graph=second)
    grads = [y, dx, db]
    if second:
        grads += list(torch.autograd.grad((dx * w).sum(), [x, b]))
    return [g.detach() for g in grads]


# (shape, dim, gain, clamp, channels_last): odd sizes, the bias along another dim, gain and clamp, a channels_last x.
BIAS_ACT_CASES = [
    ([3, 5, 7, 2], 1, None, None, False),
    ([2, 3, 4, 5], 2, 0.7, 0.9, False),
    ([2, 6, 3, 5], 1, 2.5, 2.0, True),
    ([37, 11], 1, 1.0, 0.5, False),
]

def triton_bias_act(tb, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """The Triton autograd function for bias_act's arguments, the table's defaults filled in as bias_act does."""
    _, alpha, gain, clamp = bias_act._resolve(act, alpha, gain, clamp) # pylint: disable=protected-access
    return tb.function(dim, act, alpha, gain, clamp)


@pytest.mark.parametrize('act', ACTS)
def test_bias_act_matches_reference(kernels, act):
    """Values, gradients and (activations with a second derivative) the double backward, float64."""
    _, tb = kernels
    second = bias_act.activation_funcs[act].has_2nd_grad
    for i, (shape, dim, gain, clamp, cl) in enumerate(BIAS_ACT_CASES):
        gen = torch.Generator().manual_seed(i)
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        b, v, w = torch.randn([shape[dim]], generator=gen, dtype=torch.float64), torch.randn_like(x), torch.randn_like(x)
        consts = dict(dim=dim, act=act, gain=gain, clamp=clamp)
        ref = _bias_act_grads(lambda x, b: reference(x, b, **consts), x, b, v, w, second)
        got = _bias_act_grads(lambda x, b: triton_bias_act(tb, **consts).apply(x, b), x, b, v, w, second)
        assert got[0].stride() == x.stride()
        for name, g, r in zip(['y', 'dx', 'db', 'd2x', 'd2b'], got, ref):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12, msg=f'{name} in case {i}')


@pytest.mark.parametrize('act', ACTS)
def test_bias_act_gradcheck_float64(kernels, act):
    _, tb = kernels
    gen = torch.Generator().manual_seed(7)
    signs = torch.randint(0, 2, [2, 3, 2, 3], generator=gen) * 2 - 1                 # |x| >= 0.1: off the kinks.
    x = (torch.rand([2, 3, 2, 3], generator=gen, dtype=torch.float64) + 0.1) * signs
    b = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)
    run = lambda x, b: triton_bias_act(tb, act=act, gain=1.5, clamp=5.0).apply(x, b)
    args = [x.requires_grad_(), b.requires_grad_()]
    assert torch.autograd.gradcheck(run, args, fast_mode=True)              # Fast: the interpreter's launches are slow.
    assert torch.autograd.gradgradcheck(run, args, fast_mode=True)


def test_bias_act_float16_computes_in_float32(kernels):
    """float16 (EG3D's num_fp16_res layers): float16 results within one float16 rounding of the float32 reference."""
    _, tb = kernels
    gen = torch.Generator().manual_seed(8)
    x32, b32 = torch.randn([2, 5, 6, 3], generator=gen) * 4, torch.randn([5], generator=gen)
    v = torch.randn([2, 5, 6, 3], generator=gen)
    for act in ACTS:
        consts = dict(act=act, clamp=3.0)
        ref = _bias_act_grads(lambda x, b: reference(x, b, **consts), x32, b32, v, v, False)
        x16, b16, v16 = x32.half(), b32.half(), v.half()
        got = _bias_act_grads(lambda x, b: triton_bias_act(tb, **consts).apply(x, b), x16, b16, v16, v16, False)
        # The float32 reference of the float16 inputs: the kernel's one rounding is its result's.
        ref16 = _bias_act_grads(lambda x, b: reference(x, b, **consts), x16.float(), b16.float(), v16.float(), v16, False)
        assert all(g.dtype == torch.float16 for g in got)
        torch.testing.assert_close(got[0], ref16[0].half(), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(got[1], ref16[1].half(), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(got[0].float(), ref[0], rtol=1e-2, atol=1e-2)


def test_bias_act_without_bias_and_empty(kernels):
    _, tb = kernels
    x = torch.randn([4, 3, 5], dtype=torch.float64)
    torch.testing.assert_close(triton_bias_act(tb, act='swish', clamp=1.0).apply(x, None),
        reference(x, None, act='swish', clamp=1.0))
    assert triton_bias_act(tb, act='lrelu').apply(torch.zeros([0, 3]), torch.zeros([3])).shape == (0, 3)
    assert list(tb.ACT_INDEX) == list(bias_act.activation_funcs)          # The kernel's ACT numbers the table's rows.


def test_bias_act_takes_triton_for_cuda_tensors(as_cuda, monkeypatch):
    """impl='cuda' on a 'CUDA' tensor runs the Triton kernel (float64, float16); impl='ref' and impl='cpp' (a CPU
    kernel) do not. float32 takes it only with bias_act.triton_float32 (PyTorch's kernels are faster), silently."""
    _, tb = as_cuda
    calls = []
    real = tb.function
    monkeypatch.setattr(tb, 'function', lambda *a: calls.append(a) or real(*a))
    x, b = torch.randn([2, 3, 4, 4], dtype=torch.float64), torch.randn([3], dtype=torch.float64)
    y = bias_act.bias_act(x, b, act='lrelu', clamp=0.5)
    assert calls == [(1, 'lrelu', 0.2, float(np.sqrt(2)), 0.5)]
    torch.testing.assert_close(y, reference(x, b, act='lrelu', clamp=0.5))
    bias_act.bias_act(x, b, act='lrelu', impl='ref')
    bias_act.bias_act(x, b, act='lrelu', impl='cpp')
    assert len(calls) == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                      # A choice, not a fallback: no warning.
        y = bias_act.bias_act(x.float(), b.float(), act='lrelu', clamp=0.5)
    assert len(calls) == 1
    torch.testing.assert_close(y, reference(x.float(), b.float(), act='lrelu', clamp=0.5))
    monkeypatch.setattr(bias_act, 'triton_float32', True)
    bias_act.bias_act(x.float(), b.float(), act='lrelu', clamp=0.5)
    assert len(calls) == 2

#----------------------------------------------------------------------------
# Dispatch without the interpreter: the reference where triton is missing or custom ops are off, one warning for an
# unsupported case, CPU tensors untouched.

def _spy_reference(monkeypatch):
    calls = []
    real = bias_act._bias_act_ref                                           # pylint: disable=protected-access
    monkeypatch.setattr(bias_act, '_bias_act_ref', lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize('why', ['no-triton', 'env-off'])
def test_cuda_tensors_take_reference_without_triton(monkeypatch, why):
    monkeypatch.setattr(triton_kernels, 'is_cuda', lambda x: True)
    monkeypatch.setattr(triton_kernels, '_available', None)                 # Asked anew.
    monkeypatch.setattr(triplane_sigma, 'enabled', True)
    monkeypatch.setattr(bias_act, 'cpu_default', False)                     # These CPU tensors stand for CUDA ones.
    if why == 'no-triton':
        monkeypatch.delenv('EG3D_RLHF_CUSTOM_OPS', raising=False)
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'triton' else real(name, *a))
    else:
        monkeypatch.setenv('EG3D_RLHF_CUSTOM_OPS', '0')
    calls = _spy_reference(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                      # Silently.
        assert not triton_kernels.available()
        bias_act.bias_act(torch.randn([2, 3]), torch.randn([3]), act='lrelu')
        assert not triplane_sigma.can_run(torch.zeros([1, 3, 4, 4, 4]), torch.zeros([1, 5, 3]))
        with pytest.raises(RuntimeError, match='ask can_run'):
            triplane_sigma.decode(*decode_args(0, 1, 4, 4, 4, 8, 1, 5, dtype=torch.float32), 1.0)
    assert calls == [1]


def test_unsupported_case_warns_once_and_takes_reference(monkeypatch):
    monkeypatch.setattr(triton_kernels, 'is_cuda', lambda x: True)
    monkeypatch.setattr(triton_kernels, 'available', lambda: True)
    monkeypatch.setattr(triton_kernels, '_warned', set())
    monkeypatch.setattr(triplane_sigma, 'enabled', True)
    planes = torch.zeros([1, 3, 4, 4, 4], dtype=torch.float16)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        assert not triplane_sigma.can_run(planes)
        assert not triplane_sigma.can_run(planes)
        y = bias_act.bias_act(torch.ones([2, 3], dtype=torch.int32), None, act='linear', gain=2)
    ours = [str(w.message) for w in record if 'Triton' in str(w.message)]
    assert len(ours) == 2 and 'triplane_sigma' in ours[0] and 'bias_act' in ours[1]
    assert all('reference implementation' in m for m in ours)
    assert torch.equal(y, torch.full([2, 3], 2))


def test_cpu_tensors_never_ask_for_triton(monkeypatch):
    """CPU tensors keep the C++ plugins exactly as before (plugins stubbed here): the Triton rule is not consulted."""
    def refuse(*_args, **_kwargs):
        raise AssertionError('wants_triton asked for a CPU tensor')
    monkeypatch.setattr(triton_kernels, 'wants_triton', refuse)
    monkeypatch.setattr(triton_kernels, 'available', refuse)
    compiled = []
    monkeypatch.setattr(bias_act, '_init', lambda: True)
    monkeypatch.setattr(bias_act, 'cpu_default', True)
    monkeypatch.setattr(bias_act, '_bias_act_cuda', lambda **k: compiled.append(k) or type('F', (), {'apply': lambda *a: a[0]}))
    monkeypatch.setattr(triplane_sigma, '_init', lambda: True)
    monkeypatch.setattr(triplane_sigma, 'enabled', True)
    bias_act.bias_act(torch.randn([2, 3, 4]), torch.randn([3]), act='lrelu')
    assert compiled == [dict(dim=1, act='lrelu', alpha=None, gain=None, clamp=None)]
    assert triplane_sigma.can_run(torch.zeros([1, 3, 4, 4, 4]), torch.zeros([1, 5, 3]))

#----------------------------------------------------------------------------
# The interpreter runs Python, not Triton's compiler: a kernel it runs may still not compile (a global that is not a
# constexpr, a branch on a tensor), or may compile to a binary that asks for more shared memory than a GPU has (the
# tri-plane backward with Triton's default pipelining wanted 290 KB at EG3D's sizes: it failed at its first launch on
# an H100, which allows 227 KB a block). Compiling for NVIDIA targets needs no GPU: triton's wheel brings ptxas. The
# tri-plane kernels compile for an H100 (sm_90) with the launch settings and EG3D's sizes (32 features, 64 hidden
# units; sigma alone and all 33 outputs), and their shared memory is checked against its limit.

COMPILE = textwrap.dedent('''
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from torch_utils.ops.triton_kernels import bias_act as tb, triplane_sigma as tk

    def build(fn, ptr, constexprs, params=None, arch=80, **options):
        sig = {n: 'constexpr' if n in constexprs else ('*' + (params if n == 'params_ptr' else ptr) if n.endswith('_ptr')
            else 'i32') for n in fn.arg_names}
        kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs), target=GPUTarget('cuda', arch, 32),
            options=options)
        print('compiled', fn.fn.__name__, ptr, constexprs, 'shared', kernel.metadata.shared)

    for act in range(len(tb.ACT_INDEX)):
        for mode, ptr, params in [(0, 'fp16', 'fp32'), (1, 'fp32', 'fp32'), (2, 'fp64', 'fp64')]:
            build(tb._bias_act_kernel, ptr, dict(ACT=act, MODE=mode, HAS_BIAS=True, HAS_CLAMP=True, BLOCK_=1024), params)
    build(tk._decode_fwd, 'fp32', dict(BLOCK_=tk.BLOCK, CP=32, HP=64, OP=64), arch=90)
    for outputs in [16, 64]:
        build(tk._decode_bwd, 'fp32', dict(BLOCK_=tk.BWD_BLOCK, CP=32, HP=64, OP=outputs, WANT_PLANES=True,
            WANT_POINTS=True), arch=90, num_stages=tk.BWD_STAGES)
''')
H100_SHARED_PER_BLOCK = 232448      # Bytes (227 KB): cudaDevAttrMaxSharedMemoryPerBlockOptin of an H100.


@pytest.mark.slow
def test_kernels_compile_for_an_nvidia_gpu(tmp_path):
    """Every kernel variant the tests run through the interpreter also compiles to a GPU binary, within an H100's
    shared memory (about 35 s)."""
    pytest.importorskip('triton', reason='triton is not installed (pip install triton==3.9.0, the [gpu] extra)')
    env = dict(os.environ, TRITON_INTERPRET='0', TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION='1',
        PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, '-c', COMPILE], capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count('compiled ') == 3 * len(ACTS) + 3
    for line in out.stdout.splitlines():
        assert int(line.rsplit(' ', 1)[1]) <= H100_SHARED_PER_BLOCK, f'more shared memory than an H100 has: {line}'


@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA device is present: the benchmark would run')
@pytest.mark.parametrize('script,message', [
    ('bench_gpu.py', 'no CUDA device: bench_gpu.py times GPU kernels, nothing to measure on this machine'),
    ('tune_triplane_gpu.py', 'no CUDA device: tune_triplane_gpu.py times GPU kernels')])
def test_gpu_benchmarks_refuse_without_cuda(script, message):
    out = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', script)], capture_output=True,
        text=True, cwd=REPO, timeout=300, check=False, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 1 and out.stdout == ''
    assert out.stderr.strip().splitlines() == [f'Error: {message}']

#----------------------------------------------------------------------------
