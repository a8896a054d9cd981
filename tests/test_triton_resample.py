"""Triton upfirdn2d and filtered_lrelu under Triton's CPU interpreter against the reference ops, and their dispatch."""

import importlib
import os
import subprocess
import sys
import warnings

# Triton reads TRITON_INTERPRET when `import triton` decorates its own library and when a kernel is decorated: set it
# before anything imports triton, so kernels run on CPU tensors (numpy underneath).
os.environ['TRITON_INTERPRET'] = '1'

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act
from torch_utils.ops import filtered_lrelu
from torch_utils.ops import triton_kernels
from torch_utils.ops import upfirdn2d

pytestmark = pytest.mark.usefixtures('one_thread')   # Small tensors: one thread is fastest (tests.conftest).

KERNEL_MODULES = ['torch_utils.ops.triton_kernels.upfirdn2d', 'torch_utils.ops.triton_kernels.filtered_lrelu']

#----------------------------------------------------------------------------
# Helpers.

@pytest.fixture(scope='module')
def kernels():
    """The Triton kernel modules with their kernels interpreted on CPU (a module imported while TRITON_INTERPRET was
    unset is reloaded); skip when triton is not installed."""
    pytest.importorskip('triton', reason='triton is not installed (pip install triton): the Triton kernel tests need it')
    mods = []
    for name in KERNEL_MODULES:
        mod = importlib.import_module(name)
        if not all(type(k).__name__ == 'InterpretedFunction' for k in _jitted(mod)):
            mod = importlib.reload(mod)
        assert all(type(k).__name__ == 'InterpretedFunction' for k in _jitted(mod))
        mods.append(mod)
    return dict(zip(['upfirdn2d', 'filtered_lrelu'], mods))


def _jitted(mod):
    return [v for k, v in vars(mod).items() if k.startswith('_') and k.endswith('_kernel')]


def _rand(shape, seed, dtype=torch.float64, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def _taps(n, seed):
    return (np.random.default_rng(seed).random(n) + 0.2).tolist()


FILTERS = {
    '4x4':      lambda: upfirdn2d.setup_filter([1, 3, 3, 1]),                         # StyleGAN2 / EG3D resample filter (2-D).
    'sep1':     lambda: upfirdn2d.setup_filter([2.0], separable=True),                # A 1-tap separable filter.
    'sep12':    lambda: upfirdn2d.setup_filter(_taps(12, 1), separable=True),         # StyleGAN3 6 taps x 2.
    'sep24':    lambda: upfirdn2d.setup_filter(_taps(24, 2), separable=True),         # StyleGAN3 6 taps x 4.
    'rad12':    lambda: upfirdn2d.setup_filter(np.outer(_taps(12, 3), _taps(12, 4))), # StyleGAN3-R radial down filter (2-D).
    'odd3x5':   lambda: upfirdn2d.setup_filter(np.random.default_rng(5).random([3, 5]) + 0.1),
    'none':     lambda: None,
}


def _grads(run, inputs, seed=0):
    """Output of run(*inputs) and the gradients of a random projection of it with respect to `inputs`."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = run(*leaves)
    g = _rand(y.shape, seed).to(y.dtype)                                            # Same draws whatever the dtype.
    return y.detach(), torch.autograd.grad((y * g).sum(), leaves)


def _close(actual, expected, rtol):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(1.0, expected.abs().max().item()))


def _rounded_once(y16, y32):
    """A float16 result computed in float32 and rounded once, at the end: within half a float16 ulp of the float32
    result (plus float32 noise). Accumulating in float16 rounds every partial sum and misses this."""
    mag = y32.abs().half()
    ulp = (torch.nextafter(mag, torch.full_like(mag, float('inf'))) - mag).float()
    err = (y16.float() - y32).abs()
    assert y16.dtype == torch.float16 and (err <= 0.5 * ulp + 1e-6 * y32.abs()).all(), f'worst: {(err / ulp).max()} ulp'


def _compare(triton_run, ref_run, inputs, rtol=1e-6):
    """Triton vs reference: forward with and without autograd, and every gradient. Float64 data, but the filters are
    float32 (as the reference's are) and a separable filter's sqrt(gain) rounds in float32, hence rtol 1e-6."""
    y_tri, g_tri = _grads(triton_run, inputs)
    y_ref, g_ref = _grads(ref_run, inputs)
    _close(y_tri, y_ref, rtol)
    with torch.no_grad():
        _close(triton_run(*inputs), y_ref, rtol)
    for a, b in zip(g_tri, g_ref):
        _close(a, b, rtol)

#----------------------------------------------------------------------------
# upfirdn2d: (arguments, filter, input shape). EG3D's cases first, then odd factors, crops and flips.

UPFIRDN = [
    (dict(up=1, down=1, padding=0), '4x4', [2, 1, 7, 9]),
    (dict(up=2, down=1, padding=[2, 1, 2, 1], gain=4), '4x4', [2, 1, 10, 18]),        # upsample2d; 20 x 36 out: 2 x 2 tiles.
    (dict(up=1, down=2, padding=[1, -1, 2, -2], flip_filter=True), '4x4', [2, 1, 9, 8]),
    (dict(up=2, down=2, padding=[3, 2, 3, 2]), 'sep12', [1, 2, 5, 6]),
    (dict(up=4, down=1, padding=[12, 11, 12, 11]), 'sep24', [1, 1, 3, 4]),
    (dict(up=1, down=2, padding=[5, 5, 6, 4]), 'rad12', [2, 1, 8, 9]),
    (dict(up=[2, 1], down=[1, 3], padding=[1, -1, 3, 0], flip_filter=True, gain=3), 'odd3x5', [1, 2, 6, 7]),
    (dict(up=3, down=2, padding=[-1, 2, 2, -2], gain=0.5), 'sep1', [2, 1, 5, 4]),
    (dict(up=2, down=2, padding=[1, 0, 0, 1]), 'none', [2, 2, 5, 3]),
]


def _upfirdn2d_triton(args, f):
    return lambda x: upfirdn2d._upfirdn2d_cuda(backend='triton', **args).apply(x, f)   # pylint: disable=protected-access


@pytest.mark.parametrize('case', range(len(UPFIRDN)))
def test_upfirdn2d_matches_reference(kernels, case):
    args, fname, shape = UPFIRDN[case]
    f = FILTERS[fname]()
    ref = lambda x: upfirdn2d._upfirdn2d_ref(x, f, **args)                             # pylint: disable=protected-access
    _compare(_upfirdn2d_triton(args, f), ref, [_rand(shape, case)])


def test_upfirdn2d_separable_equals_2d(kernels):
    taps = [1, 3, 3, 1]
    x = _rand([2, 1, 6, 7], 0)
    for args in [dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=[1, 1, 1, 1], flip_filter=True, gain=2)]:
        sep = _upfirdn2d_triton(args, upfirdn2d.setup_filter(taps, separable=True))(x)
        full = _upfirdn2d_triton(args, upfirdn2d.setup_filter(taps, separable=False))(x)
        _close(sep, full, 1e-6)


@pytest.mark.parametrize('case', [3, 6])
def test_upfirdn2d_gradcheck(kernels, case):
    args, fname, _ = UPFIRDN[case]
    run = _upfirdn2d_triton(args, FILTERS[fname]())
    x = _rand([1, 1, 4, 5], case).requires_grad_(True)
    assert torch.autograd.gradcheck(run, [x], fast_mode=True)
    assert torch.autograd.gradgradcheck(run, [x], fast_mode=True)


@pytest.mark.parametrize('dtype', [torch.float16, torch.float32])
def test_upfirdn2d_low_precision_computes_in_float32(kernels, dtype):
    f = FILTERS['4x4']()
    args = dict(up=2, down=1, padding=[2, 1, 2, 1], gain=4)
    x = _rand([2, 2, 5, 6], 1, torch.float32, scale=3).to(dtype)
    y, (dx,) = _grads(_upfirdn2d_triton(args, f), [x])
    y32, (dx32,) = _grads(lambda x: upfirdn2d._upfirdn2d_ref(x.float(), f, **args), [x])  # pylint: disable=protected-access
    assert y.dtype == dtype and dx.dtype == dtype
    rtol = 1e-3 if dtype == torch.float16 else 1e-6
    _close(y.float(), y32, rtol)
    _close(dx.float(), dx32.float(), rtol)
    if dtype == torch.float16:
        x = (_rand([2, 2, 5, 6], 2, torch.float32) + 300).half()                    # Large partial sums.
        for f in [f, FILTERS['sep12']()]:                                            # Separable: float32 between passes.
            args = dict(up=2, down=1, padding=[6, 5, 6, 5], gain=4)
            _rounded_once(_upfirdn2d_triton(args, f)(x), upfirdn2d._upfirdn2d_ref(x.float(), f, **args))  # pylint: disable=protected-access

#----------------------------------------------------------------------------
# filtered_lrelu: (arguments, fu, fd, input shape).

FLRELU = [
    (dict(up=2, down=2, padding=[3, 2, 3, 2]), '4x4', '4x4', [2, 2, 7, 6]),
    (dict(up=2, down=2, padding=10, clamp=0.5), 'sep12', 'sep12', [1, 2, 6, 7]),       # StyleGAN3 layer, saturated.
    (dict(up=4, down=2, padding=17, slope=0.0, gain=1.0), 'sep24', 'rad12', [1, 1, 5, 6]),
    (dict(up=2, down=1, padding=[-1, 2, 3, 1], flip_filter=True, slope=0.1, gain=1.3), 'odd3x5', '4x4', [2, 1, 6, 5]),
    (dict(up=1, down=2, padding=[1, 2, 0, 3], clamp=0.5), '4x4', 'none', [2, 2, 7, 8]),
    (dict(up=1, down=1, padding=0, gain=2.0, clamp=1.0, slope=0.3), 'none', 'sep1', [2, 2, 5, 9]),
]


def _flrelu_triton(args, fu, fd):
    def run(x, b=None):
        return filtered_lrelu._filtered_lrelu_cuda(backend='triton', **args).apply(x, fu, fd, b, None, 0, 0)  # pylint: disable=protected-access
    return run


@pytest.mark.parametrize('case', range(len(FLRELU)))
def test_filtered_lrelu_matches_reference(kernels, case):
    args, fu_name, fd_name, shape = FLRELU[case]
    fu, fd = FILTERS[fu_name](), FILTERS[fd_name]()
    x = _rand(shape, case, scale=2)
    b = _rand([shape[1]], 20 + case)
    ref = lambda x, b=None: filtered_lrelu._filtered_lrelu_ref(x, fu, fd, b, **args)    # pylint: disable=protected-access
    _compare(_flrelu_triton(args, fu, fd), ref, [x, b])
    _compare(_flrelu_triton(args, fu, fd), ref, [x])


@pytest.mark.parametrize('case', [3, 4])
def test_filtered_lrelu_gradcheck(kernels, case):
    args, fu_name, fd_name, _ = FLRELU[case]
    run = _flrelu_triton(args, FILTERS[fu_name](), FILTERS[fd_name]())
    x = _rand([1, 1, 5, 6], case).requires_grad_(True)
    b = _rand([1], 9).requires_grad_(True)
    assert torch.autograd.gradcheck(run, [x, b], fast_mode=True)
    assert torch.autograd.gradgradcheck(run, [x, b], fast_mode=True)


def test_filtered_lrelu_float16_computes_in_float32(kernels):
    args, fu_name, fd_name, _ = FLRELU[0]
    fu, fd = FILTERS[fu_name](), FILTERS[fd_name]()
    x = _rand([2, 2, 6, 5], 3, torch.float32).half()
    b = _rand([2], 4, torch.float32).half()
    y, (dx, db) = _grads(_flrelu_triton(dict(args, clamp=1.0), fu, fd), [x, b])
    ref = lambda x, b: filtered_lrelu._filtered_lrelu_ref(x.float(), fu, fd, b.float(), clamp=1.0, **args)  # pylint: disable=protected-access
    y32, (dx32, db32) = _grads(ref, [x, b])
    assert y.dtype == dx.dtype == db.dtype == torch.float16
    _close(y.float(), y32, 2e-3)
    _close(dx.float(), dx32.float(), 2e-3)
    _close(db.float(), db32.float(), 2e-3)
    x = (_rand([2, 2, 6, 5], 5, torch.float32) * 8 + 100).half()                    # Large partial sums, no clamping.
    ref = filtered_lrelu._filtered_lrelu_ref(x.float(), fu, fd, b.float(), **args)   # pylint: disable=protected-access
    _rounded_once(_flrelu_triton(args, fu, fd)(x, b), ref)


def test_act_writes_and_reads_the_plugins_signs(kernels):
    act_ = kernels['filtered_lrelu'].filtered_lrelu_act_
    x = _rand([2, 3, 5, 7], 0) * 2
    x[:, :, 1, ::2] = 0                                                               # Zero takes the negative side.
    y = x.clone()
    signs = act_(y, torch.empty([0]), 0, 0, 1.5, 0.25, 2.0, True)
    v = x * 1.5
    w = torch.where(v > 0, v, v * 0.25)
    torch.testing.assert_close(y, w.clamp(-2.0, 2.0), rtol=1e-12, atol=0)
    assert signs.dtype == torch.uint8 and list(signs.shape) == [2, 3, 5, 2]
    codes = torch.stack([(signs >> (2 * k)) & 3 for k in range(4)], dim=-1).reshape(2, 3, 5, 8)
    assert torch.equal(codes[..., :7] == 2, w.abs() > 2.0)
    assert torch.equal(codes[..., :7] == 1, (v <= 0) & (w.abs() <= 2.0))
    assert not codes[..., 7:].any()

    # Reading: each pixel takes the slope (negative) or zero (clamped) recorded at (x + sx, y + sy); pixels outside
    # the sign tensor pass with the gain only. Without signs: plain activation.
    dy = _rand([2, 3, 5, 7], 1)
    for sx, sy in [(0, 0), (2, 1), (-1, -2)]:
        out = dy.clone()
        assert act_(out, signs, sx, sy, 0.5, 0.25, float('inf'), False).numel() == 0
        ys, xs = torch.arange(5) + sy, torch.arange(7) + sx
        inside = ((ys >= 0) & (ys < 5))[:, None] & ((xs >= 0) & (xs < 8))[None, :]
        c = codes[:, :, ys.clamp(0, 4)][:, :, :, xs.clamp(0, 7)] * inside
        expected = torch.where(c == 2, 0.0, torch.where(c == 1, dy * 0.5 * 0.25, dy * 0.5))
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    out = dy.clone()
    act_(out, torch.empty([0]), 0, 0, 1.5, 0.25, 1.0, False)
    torch.testing.assert_close(out, torch.where(dy > 0, dy * 1.5, dy * 1.5 * 0.25).clamp(-1.0, 1.0), rtol=1e-12, atol=0)

#----------------------------------------------------------------------------
# Dispatch, on CPU tensors with the device check mocked.

@pytest.fixture
def calls(monkeypatch):
    """Record (op, 'ref' / 'cpp' / 'triton') for each path an op call takes, backward passes included (they build the
    autograd class again); the reference filtered_lrelu calls upfirdn2d, which shows as well."""
    seen = []
    for op, name in [(upfirdn2d, 'upfirdn2d'), (filtered_lrelu, 'filtered_lrelu')]:
        ref = getattr(op, f'_{name}_ref')
        monkeypatch.setattr(op, f'_{name}_ref', lambda *a, _ref=ref, _name=name, **k: seen.append((_name, 'ref')) or _ref(*a, **k))
        cls = getattr(op, f'_{name}_cuda')
        monkeypatch.setattr(op, f'_{name}_cuda',
            lambda *a, _cls=cls, _name=name, **k: seen.append((_name, k.get('backend', 'cpp'))) or _cls(*a, **k))
    monkeypatch.setattr(triton_kernels, '_warned', set())
    return seen


@pytest.fixture
def as_cuda(monkeypatch):
    """Pretend CPU tensors are CUDA tensors: the device check says so and the CPU plugins are not the default."""
    monkeypatch.setattr(triton_kernels, 'is_cuda', lambda x: True)
    monkeypatch.delenv('EG3D_RLHF_CUSTOM_OPS', raising=False)
    for op in [bias_act, upfirdn2d, filtered_lrelu]:
        monkeypatch.setattr(op, 'cpu_default', False)


def _run_both(x, impl='cuda'):
    f = FILTERS['4x4']()
    b = _rand([x.shape[1]], 1, x.dtype)
    return [upfirdn2d.upsample2d(x, f, impl=impl),
        filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=3, impl=impl)]


def test_dispatch_takes_triton_for_cuda_tensors(kernels, calls, as_cuda):
    x = _rand([2, 2, 5, 6], 0, torch.float32).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ys = _run_both(x)
    assert set(calls) == {('upfirdn2d', 'triton'), ('filtered_lrelu', 'triton')}
    for y, r in zip(ys, _run_both(x, impl='ref')):
        _close(y.detach(), r.detach(), 1e-5)
    calls.clear()
    sum(y.sum() for y in ys).backward()                                              # The backward pass stays on Triton.
    assert set(calls) == {('upfirdn2d', 'triton'), ('filtered_lrelu', 'triton')}


def test_dispatch_refuses_unsupported_cases_with_one_warning(kernels, calls, as_cuda):
    x = _rand([1, 2, 5, 6], 0, torch.float32)
    with pytest.warns(RuntimeWarning, match=r'Triton upfirdn2d: dtype torch.bfloat16.*reference'):
        upfirdn2d.upsample2d(x.bfloat16(), FILTERS['4x4']())
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                                # One warning per op at most.
        upfirdn2d.upfirdn2d(x, FILTERS['4x4'](), up=9, padding=2)
    with pytest.warns(RuntimeWarning, match=r'Triton filtered_lrelu: up \(9, 9\).*reference'):
        filtered_lrelu.filtered_lrelu(x, FILTERS['4x4'](), None, up=9, padding=2)
    assert calls[:2] == [('upfirdn2d', 'ref')] * 2 and calls[2] == ('filtered_lrelu', 'ref')
    assert ('filtered_lrelu', 'triton') not in calls


def test_dispatch_takes_reference_without_triton(calls, as_cuda, monkeypatch):
    monkeypatch.setattr(triton_kernels, '_available', False)
    x = _rand([1, 2, 5, 6], 0, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _run_both(x)
    assert calls[:2] == [('upfirdn2d', 'ref'), ('filtered_lrelu', 'ref')] and {p for _, p in calls} == {'ref'}


def test_dispatch_takes_reference_when_custom_ops_are_off(calls, as_cuda, monkeypatch):
    monkeypatch.setenv('EG3D_RLHF_CUSTOM_OPS', '0')
    x = _rand([1, 2, 5, 6], 0, torch.float32)
    _run_both(x)
    assert calls[:2] == [('upfirdn2d', 'ref'), ('filtered_lrelu', 'ref')] and {p for _, p in calls} == {'ref'}


def test_cpu_tensors_still_take_the_cpp_plugin(calls, monkeypatch):
    monkeypatch.delenv('EG3D_RLHF_CUSTOM_OPS', raising=False)
    monkeypatch.setattr(triton_kernels, '_available', True)                       # As if triton were installed.
    seen = []

    class FakePlugin:
        @staticmethod
        def upfirdn2d(x, f, *args):
            seen.append('upfirdn2d')
            return torch.zeros([x.shape[0], x.shape[1], 1, 1], dtype=x.dtype)
        @staticmethod
        def filtered_lrelu(x, *args):
            seen.append('filtered_lrelu')
            return torch.zeros([x.shape[0], x.shape[1], 1, 1], dtype=x.dtype), torch.empty([0], dtype=torch.uint8), 0

    for op in [upfirdn2d, filtered_lrelu]:
        monkeypatch.setattr(op, 'cpu_default', True)
        monkeypatch.setattr(op, '_init', lambda: True)
        monkeypatch.setattr(op, '_plugin', FakePlugin)
    _run_both(_rand([1, 2, 5, 6], 0, torch.float32))
    assert seen == ['upfirdn2d', 'filtered_lrelu'] and calls == [('upfirdn2d', 'cpp'), ('filtered_lrelu', 'cpp')]

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# The interpreter runs code a GPU compiler may reject (see tests/test_triton_triplane_bias.py): compile each kernel for
# an NVIDIA target (sm_80; triton's wheel brings ptxas, no GPU needed) in the dtypes the dispatch serves.

COMPILE = '''
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from torch_utils.ops.triton_kernels import filtered_lrelu as fl, upfirdn2d as up

def build(fn, types, constexprs):
    sig = {n: 'constexpr' if n in constexprs else types.get(n, 'i32') for n in fn.arg_names}
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs), target=GPUTarget('cuda', 80, 32))
    print('compiled', fn.fn.__name__, types.get('x_ptr', types.get('v_ptr')), sorted(constexprs.items()))

for ptr, acc in [('fp16', tl.float32), ('fp32', tl.float32), ('fp64', tl.float64)]:
    for ups in [(1, 1, 2, 2), (2, 2, 1, 1), (4, 4, 2, 2)]:
        build(up._upfirdn2d_kernel, dict(x_ptr='*' + ptr, f_ptr='*fp32', b_ptr='*' + ptr, y_ptr='*' + ptr),
            dict(UPX=ups[0], UPY=ups[1], DOWNX=ups[2], DOWNY=ups[3], HAS_BIAS=True, ACC=acc, BLOCK_H=16, BLOCK_W=32))
for ptr in ['fp32', 'fp64']:
    build(fl._act_write_kernel, dict(v_ptr='*' + ptr, s_ptr='*u8', p_ptr='*' + ptr), dict(BLOCK=256))
    for read in (False, True):
        build(fl._act_kernel, dict(v_ptr='*' + ptr, s_ptr='*u8', p_ptr='*' + ptr), dict(READ=read, BLOCK=256))
'''


@pytest.mark.slow
def test_kernels_compile_for_an_nvidia_gpu(tmp_path):
    pytest.importorskip('triton', reason='triton is not installed (pip install triton==3.9.0, the [gpu] extra)')
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET='0', TRITON_CACHE_DIR=str(tmp_path), PYTHONPATH=repo)
    out = subprocess.run([sys.executable, '-c', COMPILE], capture_output=True, text=True, env=env, cwd=repo, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count('compiled ') == 9 + 2 * 3
