"""Reference ops checked against independent maths: explicit formulas, numpy/scipy resampling, autograd checks."""

import warnings

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import conv2d_resample
from torch_utils.ops import filtered_lrelu
from torch_utils.ops import fma
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import upfirdn2d

SQRT2 = float(np.sqrt(2))


pytestmark = pytest.mark.usefixtures('one_thread')   # Tiny tensors: one thread is fastest (tests.conftest).

#----------------------------------------------------------------------------
# bias_act

def _expected_act(name, x):
    """Each activation written out from its textbook definition, times the documented default gain."""
    sig = 1 / (1 + torch.exp(-x))
    return {
        'linear':   x,
        'relu':     torch.where(x > 0, x, torch.zeros_like(x)) * SQRT2,
        'lrelu':    torch.where(x > 0, x, 0.2 * x) * SQRT2,
        'tanh':     (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
        'sigmoid':  sig,
        'elu':      torch.where(x > 0, x, torch.exp(x) - 1),
        'selu':     1.0507009873554805 * torch.where(x > 0, x, 1.6732632423543772 * (torch.exp(x) - 1)),
        'softplus': torch.log(1 + torch.exp(x)),
        'swish':    x * sig * SQRT2,
    }[name]


def _away_from_zero(shape, seed=0):
    """float64 values with |v| >= 0.1 so finite differences never straddle a kink."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(shape, generator=g, dtype=torch.float64) * 2.9 + 0.1
    sign = torch.randint(0, 2, shape, generator=g).to(torch.float64) * 2 - 1
    return v * sign


def test_activation_table_keys_and_defaults():
    assert set(bias_act.activation_funcs) == {'linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'}
    for name, spec in bias_act.activation_funcs.items():
        assert set(spec) >= {'func', 'def_alpha', 'def_gain', 'cuda_idx', 'ref', 'has_2nd_grad'}
        assert spec.def_gain == pytest.approx(SQRT2 if name in ('relu', 'lrelu', 'swish') else 1)
    assert bias_act.activation_funcs['lrelu'].def_alpha == pytest.approx(0.2)


@pytest.mark.parametrize('act', list(bias_act.activation_funcs))
def test_bias_act_matches_formula(act):
    x = _away_from_zero([2, 3, 4, 5])
    b = torch.tensor([0.05, -0.3, 0.2], dtype=torch.float64)
    y = bias_act.bias_act(x, b, act=act)
    expected = _expected_act(act, x + b.reshape(1, 3, 1, 1))
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    assert y.dtype == x.dtype and y.shape == x.shape


def test_bias_act_alpha_gain_clamp_dim():
    x = _away_from_zero([4, 6, 3], seed=1) * 3
    b = torch.linspace(-1, 1, 6, dtype=torch.float64)
    y = bias_act.bias_act(x.transpose(0, 1), b, dim=0, act='lrelu', alpha=0.1, gain=3.0, clamp=2.5)
    z = x.transpose(0, 1) + b.reshape(6, 1, 1)
    expected = torch.minimum(torch.maximum(torch.where(z > 0, z, 0.1 * z) * 3.0, torch.tensor(-2.5, dtype=z.dtype)), torch.tensor(2.5, dtype=z.dtype))
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    assert y.abs().max() <= 2.5 and (y.abs() == 2.5).any()

    # dim selects which axis the bias runs along.
    y2 = bias_act.bias_act(torch.zeros(2, 3, 4), torch.tensor([1.0, 2.0, 3.0, 4.0]), dim=2)
    assert torch.equal(y2[1, 2], torch.tensor([1.0, 2.0, 3.0, 4.0]))


@pytest.mark.parametrize('act', list(bias_act.activation_funcs))
def test_bias_act_gradients(act):
    x = _away_from_zero([2, 3, 4], seed=2).requires_grad_()
    b = (torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)).requires_grad_()
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=2.0)
    assert torch.autograd.gradcheck(fn, (x, b))
    if bias_act.activation_funcs[act].has_2nd_grad:
        assert torch.autograd.gradgradcheck(lambda x, b: bias_act.bias_act(x, b, act=act), (x, b))


@pytest.mark.parametrize('cpu_default', [False, True])
def test_bias_act_cuda_impl_on_cpu_follows_cpu_default(monkeypatch, cpu_default):
    # impl='cuda' asks for the compiled CPU kernel only where the op's measured default says so (here it cannot
    # load, so the reference runs either way); tests/test_ops_compiled.py checks the kernels themselves.
    asked = []
    monkeypatch.setattr(bias_act, 'cpu_default', cpu_default)
    monkeypatch.setattr(bias_act, '_init', lambda: asked.append(True) and False)
    x = torch.randn(2, 3, 4)
    b = torch.randn(3)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        y = bias_act.bias_act(x, b, act='lrelu', impl='cuda')
    torch.testing.assert_close(y, bias_act.bias_act(x, b, act='lrelu', impl='ref'), rtol=0, atol=0)
    assert asked == ([True] if cpu_default else [])

#----------------------------------------------------------------------------
# upfirdn2d against an explicit numpy/scipy construction

def _naive_upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    """Zero-insert, zero-pad or crop, scipy 'valid' convolution (or correlation), then decimate; channel by channel."""
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    px0, px1, py0, py1 = padding
    f2 = np.outer(f, f) if f.ndim == 1 else f
    x = x.detach().cpu().numpy().astype(np.float64)
    n, c, h, w = x.shape
    out = []
    for img in x.reshape(n * c, h, w):
        big = np.zeros([h * upy, w * upx])
        big[::upy, ::upx] = img
        big = np.pad(big, [[max(py0, 0), max(py1, 0)], [max(px0, 0), max(px1, 0)]])
        big = big[max(-py0, 0) : big.shape[0] - max(-py1, 0), max(-px0, 0) : big.shape[1] - max(-px1, 0)]
        filt = scipy.signal.correlate2d if flip_filter else scipy.signal.convolve2d
        out.append(filt(big, f2, mode='valid')[::downy, ::downx] * gain)
    out = np.stack(out)
    return torch.from_numpy(out.reshape(n, c, *out.shape[1:]))


_FILTERS = {
    'sep4':     np.array([1, 3, 3, 1], dtype=np.float64) / 8,
    'sep8':     np.array([1, 2, 5, 7, 7, 5, 2, 1], dtype=np.float64) / 30,
    'asym2d':   np.array([[1, 2, 0.5], [0.3, -1, 4]], dtype=np.float64),
}

@pytest.mark.parametrize('fname', list(_FILTERS))
@pytest.mark.parametrize('up,down,padding,flip,gain', [
    (1, 1, [0, 0, 0, 0], False, 1),
    (2, 1, [2, 1, 2, 1], False, 4),
    (1, 2, [1, 2, 0, 3], True, 1),
    (2, 2, [3, 3, 3, 3], True, 2.5),
    ([3, 2], [1, 2], [4, -1, 1, 2], False, 1),
    (2, 1, [-1, 0, 0, -2], True, 1),
])
def test_upfirdn2d_matches_naive(fname, up, down, padding, flip, gain):
    fnp = _FILTERS[fname]
    f = torch.tensor(fnp, dtype=torch.float32)
    x = torch.randn([2, 3, 9, 10], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    expected = _naive_upfirdn2d(x, f.double().numpy(), up, down, padding, flip, gain)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)  # f is stored in float32 with gain folded in.


def test_setup_filter():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.tensor(np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64, dtype=torch.float32))
    f8 = upfirdn2d.setup_filter(np.arange(1, 9), gain=4)
    assert f8.shape == (8,)
    torch.testing.assert_close(f8.sum(), torch.tensor(2.0))                    # gain spread as gain**(1/2) per axis.
    fl = upfirdn2d.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True)
    assert torch.equal(fl, torch.tensor([[4.0, 3.0], [2.0, 1.0]]))
    assert torch.equal(upfirdn2d.setup_filter(None), torch.ones([1, 1]))


@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [1, 2, 1], [1, 7, 21, 35, 35, 21, 7, 1]])   # Binomial: every polyphase part sums equally.
def test_resample_wrappers_sizes_and_constant(taps):
    f = upfirdn2d.setup_filter(taps)
    x = torch.full([1, 2, 12, 10], 0.7)
    up = upfirdn2d.upsample2d(x, f)
    down = upfirdn2d.downsample2d(x, f)
    same = upfirdn2d.filter2d(x, f)
    assert up.shape == (1, 2, 24, 20) and down.shape == (1, 2, 6, 5) and same.shape == (1, 2, 12, 10)
    assert upfirdn2d.upsample2d(x, f, padding=[1, 0, 2, 3]).shape == (1, 2, 29, 21)
    assert upfirdn2d.filter2d(x, f, padding=-1).shape == (1, 2, 10, 8)
    m = len(taps)   # Pixels whose footprint stays inside the image keep the constant value.
    torch.testing.assert_close(up[..., m:-m, m:-m], torch.full_like(up[..., m:-m, m:-m], 0.7))
    torch.testing.assert_close(down[..., m // 2 + 1:-(m // 2 + 1), m // 2 + 1:-(m // 2 + 1)], torch.full_like(down[..., m // 2 + 1:-(m // 2 + 1), m // 2 + 1:-(m // 2 + 1)], 0.7))
    torch.testing.assert_close(same[..., m:-m, m:-m], torch.full_like(same[..., m:-m, m:-m], 0.7))
    assert not torch.allclose(up[..., 0, 0], torch.tensor(0.7))                # Borders see the zero padding.


def test_upfirdn2d_gradients():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 5, 6], dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=2, down=1, padding=[2, 1, 1, 2], gain=4)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))

#----------------------------------------------------------------------------
# conv2d_resample against "naive upfirdn, then F.conv2d"

@pytest.mark.parametrize('up,down,k,groups,flip_weight,pad', [
    (1, 1, 3, 1, True, 1),
    (1, 1, 3, 1, False, [2, 0, 1, 1]),
    (2, 1, 3, 1, True, 1),
    (2, 1, 3, 2, False, 1),
    (2, 1, 1, 1, True, 0),
    (1, 2, 3, 1, True, 1),
    (1, 2, 3, 2, False, 0),
    (1, 2, 1, 1, True, 0),
    (2, 2, 3, 1, True, 1),
])
def test_conv2d_resample_matches_naive(up, down, k, groups, flip_weight, pad):
    g = torch.Generator().manual_seed(4)
    x = torch.randn([2, 4, 8, 7], generator=g, dtype=torch.float64)
    w = torch.randn([6, 4 // groups, k, k], generator=g, dtype=torch.float64)
    taps = np.array([1, 3, 3, 1], dtype=np.float64)
    f = upfirdn2d.setup_filter(taps)
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=pad, groups=groups, flip_weight=flip_weight)

    # Padding relative to the upsampled image, plus StyleGAN's centring of the resampling filter.
    px0, px1, py0, py1 = upfirdn2d._parse_padding(pad)     # pylint: disable=protected-access
    fw = len(taps)
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fw + up - 1) // 2, py1 + (fw - up) // 2
    if down > 1:
        px0, px1, py0, py1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fw - down + 1) // 2, py1 + (fw - down) // 2
    f2 = np.outer(taps, taps) / 64
    if up > 1:
        z = _naive_upfirdn2d(x, f2, up, 1, [px0, px1, py0, py1], False, up * up)
    else:
        z = _naive_upfirdn2d(x, np.ones([1, 1]), 1, 1, [px0, px1, py0, py1], False, 1)
    z = torch.nn.functional.conv2d(z, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        z = _naive_upfirdn2d(z, f2, 1, down, [0, 0, 0, 0], False, 1)
    assert y.shape == z.shape
    torch.testing.assert_close(y, z, rtol=1e-6, atol=1e-6)

#----------------------------------------------------------------------------
# fma

def test_fma_values_and_broadcast_gradients():
    g = torch.Generator().manual_seed(5)
    a = torch.randn([4, 1, 3], generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn([2, 1], generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn([3], generator=g, dtype=torch.float64, requires_grad=True)
    y = fma.fma(a, b, c)
    assert y.shape == (4, 2, 3)
    torch.testing.assert_close(y, a * b + c, rtol=1e-14, atol=1e-14)
    assert torch.autograd.gradcheck(fma.fma, (a, b, c))

    # Explicit unbroadcast sums for a weighted loss.
    wgt = torch.randn([4, 2, 3], generator=g, dtype=torch.float64)
    da, db, dc = torch.autograd.grad((fma.fma(a, b, c) * wgt).sum(), (a, b, c))
    torch.testing.assert_close(da, (wgt * b).sum(1, keepdim=True))
    torch.testing.assert_close(db, (wgt * a).sum([0, 2]).reshape(2, 1))
    torch.testing.assert_close(dc, wgt.sum([0, 1]))

#----------------------------------------------------------------------------
# conv2d_gradfix

@pytest.mark.parametrize('transpose,kwargs', [
    (False, dict(stride=1, padding=1)),
    (False, dict(stride=2, padding=0, groups=2)),
    (False, dict(stride=1, padding=2, dilation=2)),
    (True, dict(stride=2, padding=1, output_padding=1)),
    (True, dict(stride=1, padding=0, groups=2)),
])
def test_conv2d_gradfix_matches_torch(monkeypatch, transpose, kwargs):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    g = torch.Generator().manual_seed(6)
    x = torch.randn([1, 4, 6, 5], generator=g, dtype=torch.float64, requires_grad=True)
    groups = kwargs.get('groups', 1)
    w = torch.randn([4, 4 // groups, 3, 3], generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn([4], generator=g, dtype=torch.float64, requires_grad=True)
    ours = (conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d)
    theirs = (torch.nn.functional.conv_transpose2d if transpose else torch.nn.functional.conv2d)
    y = ours(x, w, b, **kwargs)
    torch.testing.assert_close(y, theirs(x, w, b, **kwargs), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, w, b: ours(x, w, b, **kwargs), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda x, w: ours(x, w, None, **kwargs), (x, w))


@pytest.mark.parametrize('transpose', [False, True])
def test_no_weight_gradients(monkeypatch, transpose):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    g = torch.Generator().manual_seed(7)
    x = torch.randn([2, 3, 6, 6], generator=g, requires_grad=True)
    w = torch.randn([3, 5, 3, 3] if transpose else [5, 3, 3, 3], generator=g, requires_grad=True)
    op(x, w, padding=1).square().sum().backward()
    x_grad, w_grad = x.grad.clone(), w.grad.clone()
    assert w_grad.abs().sum() > 0
    x.grad = w.grad = None

    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled
        op(x, w, padding=1).square().sum().backward()
    assert not conv2d_gradfix.weight_gradients_disabled                         # Restored on exit.
    assert w.grad is None
    torch.testing.assert_close(x.grad, x_grad, rtol=0, atol=0)

    with conv2d_gradfix.no_weight_gradients(disable=False):                    # disable=False is a no-op.
        dw, = torch.autograd.grad(op(x, w, padding=1).square().sum(), [w])
    torch.testing.assert_close(dw, w_grad)


@pytest.mark.parametrize('transpose,kwargs', [
    (False, dict(stride=1, padding=1)),
    (False, dict(stride=2, padding=0, groups=2)),
    (True, dict(stride=2, padding=1, output_padding=1)),
])
def test_conv2d_gradfix_bfloat16_on_cpu(monkeypatch, transpose, kwargs):
    # Inside bfloat16_on_cpu the op convolves in bfloat16: float32 results within bfloat16's rounding of the float32
    # op's, first and second derivatives included (R1's double backward runs there), and not bit-equal to them; float64
    # stays exact, and leaving the block restores float32.
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
    g = torch.Generator().manual_seed(10)
    groups = kwargs.get('groups', 1)
    x = torch.randn([2, 8, 9, 8], generator=g, requires_grad=True)
    w = torch.randn([8, 8 // groups, 3, 3], generator=g, requires_grad=True)
    b = torch.randn([8], generator=g, requires_grad=True)

    def run():
        y = op(x, w, b, **kwargs)
        dx, = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
        dw, db = torch.autograd.grad(dx.square().sum() + y.sum(), [w, b])
        return y, dx, dw, db

    full = run()
    with conv2d_gradfix.bfloat16_on_cpu():
        assert conv2d_gradfix.cpu_bfloat16
        low = run()
        exact = op(x.double(), w.double(), b.double(), **kwargs)
    assert not conv2d_gradfix.cpu_bfloat16
    for a, c in zip(full, low):
        assert c.dtype == torch.float32
        assert not torch.equal(a, c)
        assert float((a - c).abs().max() / a.abs().max()) < 0.03
    torch.testing.assert_close(exact, op(x.double(), w.double(), b.double(), **kwargs), rtol=0, atol=0)
    torch.testing.assert_close(run()[0], full[0], rtol=0, atol=0)


def test_native_bfloat16_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cpu, 'get_capabilities', lambda: {'avx512_bf16': False, 'amx_bf16': False})
    assert conv2d_gradfix.native_bfloat16() is False
    monkeypatch.setattr(torch.cpu, 'get_capabilities', lambda: {'avx512_bf16': True})
    assert conv2d_gradfix.native_bfloat16() is True
    monkeypatch.setattr(torch.cpu, 'get_capabilities', lambda: {'amx_bf16': True})
    assert conv2d_gradfix.native_bfloat16() is True

#----------------------------------------------------------------------------
# grid_sample_gradfix

@pytest.mark.parametrize('enabled', [False, True])
def test_grid_sample_values_and_double_backward(monkeypatch, enabled):
    monkeypatch.setattr(grid_sample_gradfix, 'enabled', enabled)
    g = torch.Generator().manual_seed(8)
    x = torch.randn([2, 3, 5, 6], generator=g, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand([2, 4, 3, 2], generator=g, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()  # Some samples fall outside.
    y = grid_sample_gradfix.grid_sample(x, grid)
    expected = torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (x, grid))
    assert torch.autograd.gradgradcheck(grid_sample_gradfix.grid_sample, (x, grid))

    # d/dgrid of a gradient w.r.t. the input is a genuine second-order term (the R1/path-length case): not zero.
    dx, = torch.autograd.grad(grid_sample_gradfix.grid_sample(x, grid).sum(), [x], create_graph=True)
    dgrid, = torch.autograd.grad(dx.square().sum(), [grid])
    assert dgrid.abs().sum() > 0

#----------------------------------------------------------------------------
# filtered_lrelu

@pytest.mark.parametrize('up,down,padding,clamp,flip', [
    (1, 1, 0, None, False),
    (2, 1, [3, 2, 3, 2], None, False),
    (1, 2, [1, 2, 0, 1], 0.5, True),
    (2, 2, [5, 4, 5, 4], 0.8, False),
])
def test_filtered_lrelu_ref_matches_composition(up, down, padding, clamp, flip):
    g = torch.Generator().manual_seed(9)
    x = torch.randn([2, 3, 8, 9], generator=g, dtype=torch.float64)
    b = torch.randn([3], generator=g, dtype=torch.float64)
    fu_np = np.array([1, 4, 6, 4, 1], dtype=np.float64)
    fd_np = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64)
    fu = upfirdn2d.setup_filter(fu_np, separable=True)
    fd = upfirdn2d.setup_filter(fd_np)
    slope, gain = 0.3, 1.7
    y = filtered_lrelu.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip)

    pad = [padding] * 4 if isinstance(padding, int) else padding
    z = _naive_upfirdn2d(x + b.reshape(1, 3, 1, 1), fu.double().numpy(), up, 1, pad, flip, up * up)
    z = torch.where(z > 0, z, slope * z) * gain
    if clamp is not None:
        z = z.clamp(-clamp, clamp)
    z = _naive_upfirdn2d(z, fd.double().numpy(), 1, down, [0, 0, 0, 0], flip, 1)
    assert y.shape == z.shape
    torch.testing.assert_close(y, z, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(filtered_lrelu.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain,
        slope=slope, clamp=clamp, flip_filter=flip, impl='cuda'), y, rtol=0, atol=0)    # CPU tensor: same reference path.

#----------------------------------------------------------------------------
