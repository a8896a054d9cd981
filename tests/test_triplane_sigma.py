"""The fused tri-plane decode op against the reference path: values, gradients, fallbacks, and the fields that use it."""

import shutil
import warnings

import pytest
import torch

from eg3d_rlhf.geometry.sigma import CubeGrid
from torch_utils.ops import triplane_sigma
from training.triplane import OSGDecoder
from training.volumetric_rendering.renderer import ImportanceRenderer

pytestmark = pytest.mark.skipif(shutil.which('c++') is None, reason='no C++ compiler (c++) on PATH to build the op')

#----------------------------------------------------------------------------

@pytest.fixture
def compiled():
    """The op built (default cache, once per machine) and switched on; skip-free: a build failure fails the test."""
    assert triplane_sigma._init(), 'the triplane_sigma plugin did not build'   # pylint: disable=protected-access
    triplane_sigma.enabled = True
    yield
    triplane_sigma.enabled = True


def make(seed, batch, channels, height, width, outputs, dtype=torch.float32):
    """A decoder with EG3D's layers (random biases too) and planes; weights scaled so softplus sees both signs."""
    gen = torch.Generator().manual_seed(seed)
    dec = OSGDecoder(channels, {'decoder_lr_mul': 1, 'decoder_output_dim': outputs - 1}).to(dtype)
    with torch.no_grad():
        for layer in (dec.net[0], dec.net[2]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen, dtype=dtype) * 2)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen, dtype=dtype))
    planes = torch.randn([batch, 3, channels, height, width], generator=gen, dtype=dtype)
    return dec, planes, gen


def points(gen, batch, count, spread=1.2, dtype=torch.float32):
    """Points [batch, count, 3] in a box of side `spread` (> 1 puts some outside the planes)."""
    return (torch.rand([batch, count, 3], generator=gen, dtype=dtype) - 0.5) * spread


def run(renderer, planes, dec, pts, fused, box_warp=1.0, **kwargs):
    triplane_sigma.enabled = fused
    return renderer.run_model(planes, dec, pts, torch.zeros_like(pts), {'box_warp': box_warp}, **kwargs)

#----------------------------------------------------------------------------

# (batch, channels, height, width, decoder outputs, box_warp): EG3D's 32 features / 64 hidden units take the vector
# path, other sizes the generic one; odd plane sizes, batch > 1, sigma alone (1 output) or with colour.
SHAPES = [
    (1, 32, 16, 16, 33, 1.0),
    (2, 32, 7, 11, 33, 0.7),
    (3, 8, 5, 9, 4, 1.0),
    (2, 5, 13, 3, 1, 2.0),
]

@pytest.mark.parametrize('batch,channels,height,width,outputs,box_warp', SHAPES)
def test_forward_matches_reference(compiled, batch, channels, height, width, outputs, box_warp):
    dec, planes, gen = make(0, batch, channels, height, width, outputs)
    pts = points(gen, batch, 257, spread=1.3 * box_warp)
    renderer = ImportanceRenderer()
    with torch.no_grad():
        ref = run(renderer, planes, dec, pts, fused=False, box_warp=box_warp)
        out = run(renderer, planes, dec, pts, fused=True, box_warp=box_warp)
        sigma = run(renderer, planes, dec, pts, fused=True, box_warp=box_warp, sigma_only=True)
    assert set(sigma) == {'sigma'}
    scale = ref['sigma'].abs().max().item()
    for key in ('sigma', 'rgb'):
        assert out[key].shape == ref[key].shape
        assert torch.allclose(out[key], ref[key], rtol=1e-5, atol=1e-5 * max(1, scale)), key
    assert torch.allclose(sigma['sigma'], out['sigma'], rtol=1e-6, atol=1e-6 * max(1, scale))   # Another summation order.


@pytest.mark.parametrize('batch,channels,height,width,outputs,box_warp', SHAPES)
def test_gradients_match_reference(compiled, batch, channels, height, width, outputs, box_warp):
    dec, planes, gen = make(1, batch, channels, height, width, outputs)
    pts = points(gen, batch, 129, spread=1.2 * box_warp)
    renderer = ImportanceRenderer()
    upstream = torch.randn([batch, 129, outputs], generator=gen)
    grads = []
    for fused in (False, True):
        leaves = [planes.clone().requires_grad_(), pts.clone().requires_grad_()]
        out = run(renderer, leaves[0], dec, leaves[1], fused=fused, box_warp=box_warp)
        y = torch.cat([out['sigma'], out['rgb']], dim=-1)
        grads.append(torch.autograd.grad((y * upstream).sum(), leaves + list(dec.parameters())))
    for name, ref, got in zip(['planes', 'points', 'w1', 'b1', 'w2', 'b2'], *grads):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), name


def test_sigma_alone_gradients_match_reference(compiled):
    """Sigma alone (1 output: the register-blocked backward's rank-1 path) at EG3D's 32 features: batch 2, a point
    count that leaves a partial tile, saturated hidden units, planes, points and weights."""
    dec, planes, gen = make(7, 2, 32, 11, 9, 33)
    with torch.no_grad():
        dec.net[0].bias[:4] = -300.0
        dec.net[0].bias[4:8] = 300.0
    pts = points(gen, 2, 203)
    upstream = torch.randn([2, 203, 1], generator=gen)
    grads = []
    for fused in (False, True):
        leaves = [planes.clone().requires_grad_(), pts.clone().requires_grad_()]
        sigma = run(ImportanceRenderer(), leaves[0], dec, leaves[1], fused=fused, sigma_only=fused)['sigma']
        grads.append(torch.autograd.grad((sigma * upstream).sum(), leaves + list(dec.parameters())))
    for name, ref, got in zip(['planes', 'points', 'w1', 'b1', 'w2', 'b2'], *grads):
        assert torch.isfinite(got).all(), name
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), name


@pytest.mark.parametrize('lanes', [1, 2, 3])
def test_backward_lanes_agree_with_float64(compiled, lanes):
    """The plugin's backward with 1-3 workers (their plane buffers summed into the result), float32's register-blocked
    kernel against float64's generic one, for 1 and 33 outputs and a partial last tile."""
    gen = torch.Generator().manual_seed(8)
    for outputs in (1, 33):
        args = [torch.randn([2, 3, 6, 5, 32], generator=gen), points(gen, 2, 1001),
            torch.randn([64, 32], generator=gen), torch.randn([64], generator=gen),
            torch.randn([outputs, 64], generator=gen), torch.randn([outputs], generator=gen)]
        grad = torch.randn([2, 1001, outputs], generator=gen)
        backward = triplane_sigma._plugin.triplane_decode_backward   # pylint: disable=protected-access
        got = backward(grad, *args, 1.3, True, True, lanes)
        ref = backward(grad.double(), *[a.double() for a in args], 1.3, True, True, lanes)
        for name, r, g in zip(['planes', 'points', 'w1', 'b1', 'w2', 'b2'], ref, got):
            assert g.dtype == torch.float32, name
            assert torch.allclose(g.double(), r, rtol=1e-4, atol=1e-5 * r.abs().max().item()), name


def test_channels_last_copy(compiled):
    """The plugin's transposes equal torch's permutation (8 x 8 register blocks and odd sizes, float32 and float64)
    and stay differentiable twice."""
    for shape in [(2, 3, 32, 8, 16), (1, 3, 5, 7, 9), (1, 3, 16, 3, 5)]:
        for dtype in (torch.float32, torch.float64):
            planes = torch.randn(shape, dtype=dtype)
            cl = triplane_sigma.channels_last(planes)
            assert torch.equal(cl, planes.permute(0, 1, 3, 4, 2))
            back = triplane_sigma._plugin.planes_transpose(cl, False)  # pylint: disable=protected-access
            assert torch.equal(back, planes)
    planes = torch.randn([1, 3, 4, 3, 5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda p: triplane_sigma.channels_last(p).square(), [planes])


def test_saturated_hidden_units_give_finite_gradients(compiled):
    """Hidden units far into softplus' flat or linear part (|pre-activation| in the hundreds, as a trained decoder's
    dead units have) keep gradients finite and equal to the reference's."""
    dec, planes, gen = make(6, 2, 32, 9, 9, 33)
    with torch.no_grad():
        dec.net[0].bias[:16] = -300.0                       # exp(300) overflows float32.
        dec.net[0].bias[16:24] = 300.0
    pts = points(gen, 2, 200)
    grads = []
    for fused in (False, True):
        leaf = planes.clone().requires_grad_()
        out = run(ImportanceRenderer(), leaf, dec, pts, fused=fused)
        loss = out['sigma'].square().sum() + out['rgb'].sum()
        grads.append(torch.autograd.grad(loss, [leaf] + list(dec.parameters())))
    for ref, got in zip(*grads):
        assert torch.isfinite(got).all()
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_denormal_derivatives_are_flushed_inside_the_op_only(compiled):
    """Units whose softplus derivative is a denormal float (pre-activation near -95: exp(-95) < FLT_MIN) give the
    reference's gradients; the op flushes denormals to zero only while its workers run, so the calling thread
    (which runs one of them) computes with denormals afterwards as before."""
    dec, planes, gen = make(7, 2, 32, 9, 9, 33)
    with torch.no_grad():
        dec.net[0].weight[:16] *= 0.01
        dec.net[0].bias[:16] = -95.0
    pts = points(gen, 2, 300)
    grads = []
    for fused in (False, True):
        leaf = planes.clone().requires_grad_()
        out = run(ImportanceRenderer(), leaf, dec, pts, fused=fused)
        grads.append(torch.autograd.grad(out['sigma'].sum() + out['rgb'].sum(), [leaf] + list(dec.parameters())))
    for ref, got in zip(*grads):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert (tiny * 2).item() > 1e-40                                    # Not flushed to zero in this thread.


def test_gradcheck_float64(compiled):
    gen = torch.Generator().manual_seed(2)
    args = [torch.randn([2, 3, 5, 4, 3], generator=gen, dtype=torch.float64),     # Channels-last planes [N, 3, H, W, C].
        points(gen, 2, 40, spread=1.2, dtype=torch.float64),
        torch.randn([6, 3], generator=gen, dtype=torch.float64), torch.randn([6], generator=gen, dtype=torch.float64),
        torch.randn([2, 6], generator=gen, dtype=torch.float64), torch.randn([2], generator=gen, dtype=torch.float64)]
    args = [a.requires_grad_() for a in args]
    op = lambda *a: triplane_sigma.decode(*a, box_warp=0.9)
    assert torch.autograd.gradcheck(op, args, eps=1e-6, atol=1e-5)


def test_points_far_outside_and_non_finite(compiled):
    """Far-away points read what the reference reads (a plane they miss gives zeros); a non-finite x misses all
    three planes (x is on each), so the decoder sees zero features: b2 + w2 softplus(b1), nothing read out of bounds."""
    dec, planes, _ = make(3, 1, 32, 8, 8, 33)
    far = torch.tensor([[[5.0, 0.1, 0.2], [0.1, -7.0, 0.3], [0.2, 0.1, 9.0], [1e30, 1e30, -1e30], [-0.3, 1e20, 0.0]]])
    bad = torch.tensor([[[float('nan'), 0.1, 0.2], [float('inf'), 0.0, 0.0], [-float('inf'), 0.2, 0.1]]])
    with torch.no_grad():
        ref = run(ImportanceRenderer(), planes, dec, far, fused=False)['sigma']
        out = run(ImportanceRenderer(), planes, dec, far, fused=True, sigma_only=True)['sigma']
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
        out = run(ImportanceRenderer(), planes, dec, bad, fused=True, sigma_only=True)['sigma']
        empty = dec(torch.zeros([1, 3, 1, 32]))['sigma']
    assert torch.allclose(out, empty.expand_as(out), rtol=1e-6, atol=1e-6)


def test_decoder_it_cannot_fuse_falls_back(compiled):
    """A decoder whose layers are not plain OSG layers (a changed softplus) keeps the reference path."""
    dec, planes, gen = make(4, 1, 32, 8, 8, 33)
    dec.net[1] = torch.nn.Softplus(beta=2)
    pts = points(gen, 1, 50)
    assert dec.fused(planes, pts, 1.0) is None
    with torch.no_grad():
        a = run(ImportanceRenderer(), planes, dec, pts, fused=True)['sigma']
        b = run(ImportanceRenderer(), planes, dec, pts, fused=False)['sigma']
    assert torch.equal(a, b)

#----------------------------------------------------------------------------

@pytest.fixture
def no_plugin(fresh_plugins, monkeypatch):
    """An empty cache and plugin table (conftest's fresh_plugins), the op holding no plugin and switched on."""
    monkeypatch.setattr(triplane_sigma, '_plugin', None)
    monkeypatch.setattr(triplane_sigma, 'enabled', True)
    return fresh_plugins


def test_broken_compiler_falls_back_with_one_warning(no_plugin, monkeypatch, tmp_path):
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-compiler'))
    dec, planes, gen = make(5, 1, 32, 8, 8, 33)
    pts = points(gen, 1, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with torch.no_grad():
            outs = [run(ImportanceRenderer(), planes, dec, pts, fused=True)['sigma'] for _ in range(3)]
    ours = [w for w in caught if 'triplane_sigma_plugin' in str(w.message)]
    assert len(ours) == 1 and 'reference implementation' in str(ours[0].message)
    assert not triplane_sigma.can_run(planes)
    with torch.no_grad():
        ref = run(ImportanceRenderer(), planes, dec, pts, fused=False)['sigma']
    assert all(torch.equal(o, ref) for o in outs)


def test_env_switch_forces_reference(no_plugin, monkeypatch, tmp_path):
    monkeypatch.setenv('EG3D_RLHF_CUSTOM_OPS', '0')
    with warnings.catch_warnings():
        warnings.simplefilter('error')                          # Silently: no warning, no build.
        assert not triplane_sigma.can_run(torch.zeros(1))
    assert not (tmp_path / 'cache').exists()

#----------------------------------------------------------------------------

def test_triplane_field_streams_the_same_sigma_and_gradients(compiled):
    """TriPlaneField (what banks, the panel and the reward phase stream) with the op and without it."""
    from eg3d_rlhf.generators.eg3d import TriPlaneField
    from tests.helpers.eg3d import tiny_generator
    G = tiny_generator().requires_grad_(True)
    z, c = torch.randn([2, G.z_dim]), torch.zeros([2, G.c_dim])
    grid = CubeGrid(9, start=(1, 0, 2), stop=(8, 9, 7))
    results = []
    for fused in (False, True):
        triplane_sigma.enabled = fused
        field = TriPlaneField.from_latents(G, z, c, requires_grad=True)
        sigma = field.sample_grid(grid, chunk=100)
        grads = torch.autograd.grad(sigma.square().mean(), list(G.parameters()), allow_unused=True)
        results.append((sigma.detach(), grads))
    (a, ga), (b, gb) = results
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.allclose(x, y, rtol=1e-3, atol=1e-4 * max(1e-12, y.abs().max().item()))

#----------------------------------------------------------------------------
