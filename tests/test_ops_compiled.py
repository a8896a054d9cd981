"""Compiled CPU kernels (impl='cpp') against the reference ops: forward, gradients, gradcheck, fallback and off switch."""

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act
from torch_utils.ops import filtered_lrelu
from torch_utils.ops import upfirdn2d

OPS = [bias_act, upfirdn2d, filtered_lrelu]
ACTS = list(bias_act.activation_funcs)

pytestmark = pytest.mark.usefixtures('one_thread')   # Small tensors: one thread is fastest (tests.conftest).

#----------------------------------------------------------------------------
# Helpers.

def _have_compiler():
    return shutil.which(os.environ.get('CXX', 'c++')) is not None


@pytest.fixture(scope='session')
def plugins():
    """Build (or load from the default cache) all three plugins once per session; skip only without a compiler."""
    if not _have_compiler():
        pytest.skip(f'no C++ compiler ({os.environ.get("CXX", "c++")}) to build the CPU kernels with')
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv('EG3D_RLHF_CUSTOM_OPS', raising=False)
        mp.setattr(custom_ops, 'verbosity', 'none')
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter('always')
            loaded = {op.__name__: op._init() for op in OPS}        # pylint: disable=protected-access
    assert all(loaded.values()), f'plugin build failed with a compiler present: {[str(w.message) for w in record]}'
    return {op.__name__: op._plugin for op in OPS}                  # pylint: disable=protected-access


def _assert_close(actual, expected, dtype):
    """Close within the dtype's precision; the absolute part scales with the tensor's largest value (cancellation)."""
    rtol, atol = (1e-6, 1e-8) if dtype == torch.float64 else (1e-4, 1e-5)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * max(1.0, expected.abs().max().item()))


def _grads(run, inputs, seed=0):
    """Output of run(*inputs) and the gradients of a random projection of it with respect to `inputs`."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = run(*leaves)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    return y.detach(), torch.autograd.grad((y * g).sum(), leaves)


def _compare(run, inputs, dtype):
    """Compiled vs reference: same shape, forward and every gradient within the dtype's tolerance."""
    y_ref, g_ref = _grads(lambda *t: run(*t, impl='ref'), inputs)
    y_cpp, g_cpp = _grads(lambda *t: run(*t, impl='cpp'), inputs)
    assert y_cpp.shape == y_ref.shape and y_cpp.dtype == y_ref.dtype
    _assert_close(y_cpp, y_ref, dtype)
    for a, b in zip(g_cpp, g_ref):
        _assert_close(a, b, dtype)


def _rand(shape, seed, dtype=torch.float64, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale

#----------------------------------------------------------------------------
# bias_act

@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('act', ACTS)
def test_bias_act_matches_reference(plugins, act, dtype):
    rng = np.random.default_rng(ACTS.index(act))
    for case in range(4):
        shape = [int(rng.integers(2, 4)), int(rng.integers(1, 7)) * 2 + 1, int(rng.integers(1, 9)), int(rng.integers(1, 9))]
        dim = [1, 1, 2, 3][case]
        x = _rand(shape, case, dtype, scale=2)
        if case == 1:
            x = x.contiguous(memory_format=torch.channels_last)      # Bias dim innermost in memory.
        b = _rand([shape[dim]], 10 + case, dtype)
        kwargs = [dict(), dict(clamp=0.5), dict(alpha=0.3, gain=1.7), dict(gain=0.8, clamp=1.1)][case]
        _compare(lambda x, b, impl: bias_act.bias_act(x, b, dim=dim, act=act, impl=impl, **kwargs), [x, b], dtype)
        _compare(lambda x, impl: bias_act.bias_act(x, act=act, impl=impl, **kwargs), [x], dtype)


@pytest.mark.slow
def test_bias_act_long_rows_match_reference(plugins):
    # Rows longer than the kernel's 4096-element pieces: bias along a long innermost dim, along the outer dim, none.
    x = _rand([3, 9001], 0, torch.float32)
    for dim, n in [(1, 9001), (0, 3)]:
        _compare(lambda x, b, impl: bias_act.bias_act(x, b, dim=dim, act='lrelu', clamp=1.5, impl=impl), [x, _rand([n], dim, torch.float32)], torch.float32)
    _compare(lambda x, impl: bias_act.bias_act(x, act='swish', impl=impl), [x], torch.float32)


@pytest.mark.slow
def test_two_threads_match_one(plugins):
    # at::parallel_for splits rows / planes between threads: the result must not depend on the split.
    x = _rand([2, 7, 37, 41], 0, torch.float32)
    b = _rand([7], 1, torch.float32)
    f = FILTERS['4x4']()
    runs = [lambda: bias_act.bias_act(x, b, act='lrelu', impl='cpp'), lambda: bias_act.bias_act(x.reshape(-1), act='tanh', impl='cpp'),
        lambda: upfirdn2d.upfirdn2d(x, f, up=2, down=1, padding=[2, 1, 1, 2], impl='cpp'),
        lambda: filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=3, impl='cpp')]
    one = [run() for run in runs]
    torch.set_num_threads(2)                                         # The one_thread fixture restores the count.
    for run, expected in zip(runs, one):
        assert torch.equal(run(), expected)


@pytest.mark.slow
@pytest.mark.parametrize('act', [a for a in ACTS if bias_act.activation_funcs[a].has_2nd_grad])
def test_bias_act_second_derivative_matches_reference(plugins, act):
    x = _rand([2, 5, 3, 7], 0, scale=2)
    b = _rand([5], 1)
    v = _rand([2, 5, 3, 7], 2)
    def second(impl):
        xl, bl = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = bias_act.bias_act(xl, bl, act=act, clamp=3.0, impl=impl)
        dx, = torch.autograd.grad((y * v).sum(), [xl], create_graph=True)
        return torch.autograd.grad((dx * v.flip(3)).sum(), [xl, bl])
    for a, r in zip(second('cpp'), second('ref')):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize('act', ACTS)
def test_bias_act_gradcheck(plugins, act):
    g = torch.Generator().manual_seed(3)
    x = (torch.rand([2, 3, 2, 3], generator=g, dtype=torch.float64) + 0.1) * (torch.randint(0, 2, [2, 3, 2, 3], generator=g) * 2 - 1)
    x.requires_grad_(True)
    b = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64, requires_grad=True)
    run = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=5.0, impl='cpp')
    assert torch.autograd.gradcheck(run, [x, b])
    assert torch.autograd.gradgradcheck(run, [x, b])       # Double backward (R1) for every activation.

#----------------------------------------------------------------------------
# upfirdn2d

FILTERS = {
    '4x4':      lambda: upfirdn2d.setup_filter([1, 3, 3, 1]),
    'sep8':     lambda: upfirdn2d.setup_filter([1, 2, 4, 6, 6, 4, 2, 1]),
    'odd3x5':   lambda: _rand([3, 5], 7, torch.float32).abs() + 0.1,
    'none':     lambda: None,
}

RESAMPLE = [
    dict(up=1, down=1, padding=0),
    dict(up=2, down=1, padding=[2, 1]),
    dict(up=1, down=2, padding=[1, 2, 0, 3]),
    dict(up=[2, 1], down=[1, 3], padding=[1, -1, 3, 0], flip_filter=True, gain=3),
    dict(up=3, down=2, padding=[-1, 2, 2, -2], gain=0.5),
    dict(up=2, down=2, padding=[3, 2, 3, 2], flip_filter=True),
]


@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('fname', list(FILTERS))
@pytest.mark.parametrize('case', range(len(RESAMPLE)))
def test_upfirdn2d_matches_reference(plugins, case, fname, dtype):
    f = FILTERS[fname]()
    rng = np.random.default_rng(case)
    shape = [int(rng.integers(2, 4)), int(rng.integers(1, 4)), int(rng.integers(8, 14)), int(rng.integers(8, 14))]
    x = _rand(shape, case, dtype)
    _compare(lambda x, impl: upfirdn2d.upfirdn2d(x, f, impl=impl, **RESAMPLE[case]), [x], dtype)


@pytest.mark.slow
def test_upfirdn2d_helpers_match_reference(plugins):
    f = FILTERS['4x4']()
    x = _rand([2, 3, 7, 9], 0, torch.float32)
    for run in [upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d]:
        _compare(lambda x, impl: run(x, f, impl=impl), [x], torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize('case', [1, 3, 4])
def test_upfirdn2d_gradcheck(plugins, case):
    f = FILTERS['odd3x5']()
    x = _rand([2, 2, 5, 6], case).requires_grad_(True)
    run = lambda x: upfirdn2d.upfirdn2d(x, f, impl='cpp', **RESAMPLE[case])
    assert torch.autograd.gradcheck(run, [x])
    assert torch.autograd.gradgradcheck(run, [x])

#----------------------------------------------------------------------------
# filtered_lrelu

FLRELU = [
    dict(up=1, down=1, padding=0),
    dict(up=2, down=2, padding=[3, 2, 3, 2]),
    dict(up=2, down=1, padding=[-1, 2, 3, 1], flip_filter=True, slope=0.1, gain=1.3),
    dict(up=1, down=2, padding=[1, 2, 0, 3], clamp=0.5),
    dict(up=2, down=2, padding=5, clamp=1.0, gain=2.0),
    dict(up=4, down=2, padding=[2, 3, 4, 1], slope=0.0),
]


@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('filters', ['4x4', 'sep8', 'odd3x5', 'none'])
@pytest.mark.parametrize('case', range(len(FLRELU)))
def test_filtered_lrelu_matches_reference(plugins, case, filters, dtype):
    fu, fd = FILTERS[filters](), FILTERS[filters]()
    rng = np.random.default_rng(case)
    shape = [int(rng.integers(2, 4)), int(rng.integers(1, 5)), int(rng.integers(15, 20)), int(rng.integers(15, 20))]
    x = _rand(shape, case, dtype)
    b = _rand([shape[1]], 20 + case, dtype)
    run = lambda x, b, impl: filtered_lrelu.filtered_lrelu(x, fu, fd, b, impl=impl, **FLRELU[case])
    _compare(run, [x, b], dtype)
    _compare(lambda x, impl: filtered_lrelu.filtered_lrelu(x, fu, fd, impl=impl, **FLRELU[case]), [x], dtype)


@pytest.mark.slow
@pytest.mark.parametrize('case', [1, 2, 3])
def test_filtered_lrelu_gradcheck(plugins, case):
    fu, fd = FILTERS['4x4'](), FILTERS['odd3x5']()
    x = _rand([2, 2, 5, 6], case).requires_grad_(True)
    b = _rand([2], 9).requires_grad_(True)
    run = lambda x, b: filtered_lrelu.filtered_lrelu(x, fu, fd, b, impl='cpp', **FLRELU[case])
    assert torch.autograd.gradcheck(run, [x, b])
    assert torch.autograd.gradgradcheck(run, [x, b])


@pytest.mark.slow
def test_filtered_lrelu_act_writes_and_reads_signs(plugins):
    act_ = plugins['torch_utils.ops.filtered_lrelu'].filtered_lrelu_act_
    x = _rand([2, 3, 5, 7], 0) * 2
    y = x.clone()
    signs = act_(y, torch.empty([0]), 0, 0, 1.5, 0.25, 2.0, True)
    v = x * 1.5
    expected = torch.where(v > 0, v, v * 0.25).clamp(-2.0, 2.0)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=0)
    assert signs.dtype == torch.uint8 and list(signs.shape) == [2, 3, 5, 2]

    # Reading: each pixel takes the slope (negative) or zero (clamped) that its sign at (x + sx, y + sy) recorded;
    # pixels outside the sign tensor pass unchanged.
    codes = torch.stack([(signs >> (2 * k)) & 3 for k in range(4)], dim=-1).reshape(2, 3, 5, 8)[..., :7]
    w = torch.where(v > 0, v, v * 0.25)
    assert torch.equal(codes == 2, w.abs() > 2.0) and torch.equal(codes == 1, (v <= 0) & (w.abs() <= 2.0))
    dy = _rand([2, 3, 5, 7], 1)
    for sx, sy in [(0, 0), (2, 1), (-1, -2)]:
        out = dy.clone()
        assert act_(out, signs, sx, sy, 0.5, 0.25, float('inf'), False).numel() == 0
        expected = dy * 0.5
        for yy in range(5):
            for xx in range(7):
                if 0 <= yy + sy < 5 and 0 <= xx + sx < 7:
                    c = codes[:, :, yy + sy, xx + sx]
                    expected[:, :, yy, xx] = torch.where(c == 2, 0.0, torch.where(c == 1, expected[:, :, yy, xx] * 0.25, expected[:, :, yy, xx]))
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)

#----------------------------------------------------------------------------
# Fallback and the off switch (no build needed).

@pytest.fixture
def no_plugins(fresh_plugins, monkeypatch):
    """An empty cache and plugin table (conftest's fresh_plugins), and no op holding a loaded plugin."""
    for op in OPS:
        monkeypatch.setattr(op, '_plugin', None)
    return fresh_plugins


def _run_all(impl):
    x = _rand([2, 3, 9, 8], 0, torch.float32)
    b = _rand([3], 1, torch.float32)
    f = FILTERS['4x4']()
    return [bias_act.bias_act(x, b, act='lrelu', clamp=0.7, impl=impl),
        upfirdn2d.upfirdn2d(x, f, up=2, down=1, padding=[2, 1, 1, 2], impl=impl),
        filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=3, impl=impl)]


def test_broken_compiler_falls_back_with_one_warning_per_op(no_plugins, monkeypatch):
    monkeypatch.setenv('CXX', str(no_plugins / 'no-such-compiler'))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        first = _run_all('cpp')
        second = _run_all('cpp')
    ours = [str(w.message) for w in record if 'reference implementation' in str(w.message)]
    assert sorted(m.split('"')[1] for m in ours) == ['bias_act_plugin', 'filtered_lrelu_plugin', 'upfirdn2d_plugin']
    for a, b, r in zip(first, second, _run_all('ref')):
        assert torch.equal(a, r) and torch.equal(b, r)


def test_env_switch_means_reference(no_plugins, monkeypatch):
    monkeypatch.setenv('EG3D_RLHF_CUSTOM_OPS', '0')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        results = _run_all('cpp') + _run_all('cuda')
    for a, r in zip(results, _run_all('ref') * 2):
        assert torch.equal(a, r)
    assert all(op._plugin is None for op in OPS)                    # pylint: disable=protected-access
    assert not (no_plugins / 'cache').exists()


@pytest.mark.slow
def test_bench_ops_quick_run(plugins):
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks', 'bench_ops.py')
    env = {k: v for k, v in os.environ.items() if k != 'EG3D_RLHF_CUSTOM_OPS'}
    out = subprocess.run([sys.executable, bench, '--scale', '8', '--repeats', '1', '--threads', '1'], capture_output=True, text=True, env=env, check=True)
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(('bias_act', 'upfirdn2d', 'filtered_lrelu'))]
    assert len(rows) == 8 and all(float(r[-1]) > 0 and float(r[-3]) > 0 and float(r[-2]) > 0 for r in rows)
    dry = subprocess.run([sys.executable, bench, '--only', 'upfirdn2d', '--dry-run'], capture_output=True, text=True, env=env, check=True)
    assert dry.stdout.strip() == 'would run: upfirdn2d'


def test_only_cpu_float_tensors_ask_for_the_cpu_kernels():
    wants = custom_ops.wants_cpu_plugin
    for impl in ['ref', 'cuda', 'cpp']:
        assert not wants(torch.empty([2], device='meta'), impl, True)     # Not a CPU tensor (CUDA: no sources yet).
        assert not wants(torch.empty([2], dtype=torch.float16), impl, True)
        assert wants(torch.empty([2], dtype=torch.float64), impl, True) == (impl != 'ref')
    assert wants(torch.empty([2]), 'cpp', False) and not wants(torch.empty([2]), 'cuda', False)


def test_cpu_default_is_a_recorded_choice():
    for op in OPS:
        assert isinstance(op.cpu_default, bool)
        assert 'ms' in op.CPU_DEFAULT_NOTE and 'bench_ops.py' in op.CPU_DEFAULT_NOTE

#----------------------------------------------------------------------------
