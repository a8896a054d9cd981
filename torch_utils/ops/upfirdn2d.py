"""Upsample, pad, FIR-filter and downsample batches of 2-D images (StyleGAN3's upfirdn2d conventions)."""

import os

import numpy as np
import torch

from .. import custom_ops
from .. import misc
from . import conv2d_gradfix
from . import triton_kernels

#----------------------------------------------------------------------------
# Optional compiled plugin: C++ kernels for CPU tensors (upfirdn2d.cpp). CUDA tensors take the Triton kernel
# (triton_kernels/upfirdn2d.py) where triton_kernels.wants_triton allows, else the reference path. `cpu_default` says
# whether impl='cuda' (the default) uses the compiled kernel for CPU tensors; impl='cpp' asks for it regardless.
# Measured with benchmarks/bench_ops.py: see CPU_DEFAULT_NOTE.

cpu_default = True
CPU_DEFAULT_NOTE = ('compiled is faster: [1, 3, 3, 1] filter, float32, 2 threads, up 2 on [4, 256, 64, 64] forward 471 -> 152 ms '
    '(3.1x), forward+backward 1213 -> 466 ms (2.6x); down 2 on [4, 256, 128, 128] 301 -> 40 ms (7.5x), 741 -> 184 ms (4.0x); '
    'only tiny maps lose (down 2 on 16x16: forward 0.7x, forward+backward 1.1x). Taken on a shared 2-core CPU; re-time alone '
    'with python benchmarks/bench_ops.py --only upfirdn2d')

PLUGIN = dict(                          # get_plugin's arguments (custom_ops.building_in_background takes them too).
    module_name         = 'upfirdn2d_plugin',
    sources             = ['upfirdn2d.cpp'],
    headers             = ['upfirdn2d_cpu.h'],
    source_dir          = os.path.dirname(__file__),
    **custom_ops.cpu_build_kwargs,
)

_plugin = None

def _init():
    """Load the plugin on first use; True when it is available."""
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin(**PLUGIN)
    return _plugin is not None


def _triton():
    """The Triton kernels module (imported on first use: it needs triton)."""
    from .triton_kernels import upfirdn2d as kernels # pylint: disable=import-outside-toplevel
    return kernels


def _triton_case(x, f, up, down):
    """(supported, reason) of the Triton kernel for this call; only asked about CUDA tensors with triton present."""
    if not (triton_kernels.is_cuda(x) and triton_kernels.available()):
        return False, ''
    return _triton().supports(x, f, _parse_scaling(up), _parse_scaling(down))

#----------------------------------------------------------------------------
# Argument parsing shared with conv2d_resample.

def _parse_scaling(scaling):
    """int or [x, y] -> (sx, sy)."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    assert isinstance(scaling, (list, tuple))
    assert all(isinstance(s, int) for s in scaling)
    sx, sy = scaling
    assert sx >= 1 and sy >= 1
    return sx, sy


def _parse_padding(padding):
    """int, [x, y] or [x0, x1, y0, y1] -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        padding = [padding, padding]
    assert isinstance(padding, (list, tuple))
    assert all(isinstance(p, int) for p in padding)
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def _get_filter_size(f):
    """(width, height) of a 2-D or separable filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
    fw = f.shape[-1]
    fh = f.shape[0]
    with misc.suppress_tracer_warnings():
        fw = int(fw)
        fh = int(fh)
    misc.assert_shape(f, [fh, fw][:f.ndim])
    assert fw >= 1 and fh >= 1
    return fw, fh

#----------------------------------------------------------------------------

def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    r"""Turn a list / array / tensor into the float32 FIR filter that `upfirdn2d()` expects.

    Args:
        f:           [fh, fw] (2-D), [taps] (1-D), scalar (impulse) or None (identity).
        device:      Device of the result.
        normalize:   Scale so the taps sum to 1 (constant signals keep their level).
        flip_filter: Flip the taps.
        gain:        Overall signal gain (spread as gain**(ndim/2) over the filter's dimensions).
        separable:   Keep a 1-D filter separable? None = only when it has 8 or more taps.

    Returns:
        float32 tensor [taps] (separable) or [fh, fw].
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in [0, 1, 2]
    assert f.numel() > 0
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None:
        separable = (f.ndim == 1 and f.numel() >= 8)
    if f.ndim == 1 and not separable:
        f = f.ger(f)
    assert f.ndim == (1 if separable else 2)

    if normalize:
        f /= f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)

#----------------------------------------------------------------------------

def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Per channel: insert up-1 zeros after each pixel, pad (negative = crop), convolve with `f`, keep every down-th pixel.

    Args:
        x:           [N, C, H, W] float tensor.
        f:           float32 filter from `setup_filter()` ([fh, fw] or separable [taps]) or None (identity).
        up:          Upsampling factor, int or [x, y].
        down:        Downsampling factor, int or [x, y].
        padding:     Padding of the upsampled image: int, [x, y] or [x0, x1, y0, y1].
        flip_filter: False = convolution, True = correlation.
        gain:        Overall signal gain.
        impl:        'cuda' (CPU tensors: compiled kernel where it loads and `cpu_default` allows; CUDA tensors:
                     Triton kernel where triton imports), 'cpp' (compiled CPU kernel whenever it loads) or 'ref'.

    Returns:
        [N, C, out_h, out_w] tensor, where e.g. out_w = (W*up + px0 + px1 - fw + down) // down.
    """
    assert isinstance(x, torch.Tensor)
    assert impl in ['ref', 'cuda', 'cpp']
    if custom_ops.wants_cpu_plugin(x, impl, cpu_default) and _init():
        return _upfirdn2d_cuda(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain).apply(x, f)
    if impl == 'cuda' and triton_kernels.wants_triton('upfirdn2d', x, impl, *_triton_case(x, f, up, down)):
        return _upfirdn2d_cuda(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, backend='triton').apply(x, f)
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


@misc.profiled_function
def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Reference implementation with standard PyTorch ops (supports gradients of any order)."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
    assert f.dtype == torch.float32 and not f.requires_grad
    batch_size, num_channels, in_h, in_w = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    assert in_w * upx + px0 + px1 >= f.shape[-1] and in_h * upy + py0 + py1 >= f.shape[0]

    # Zero-insertion: give every pixel a (upy, upx) cell with the value in its top-left corner.
    x = x.reshape([batch_size, num_channels, in_h, 1, in_w, 1])
    x = torch.nn.functional.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([batch_size, num_channels, in_h * upy, in_w * upx])

    # Positive padding adds zeros, negative padding crops.
    x = torch.nn.functional.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    # conv2d correlates, so flip the taps unless correlation was asked for. Depthwise, one filter per channel.
    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[np.newaxis, np.newaxis].repeat([num_channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = conv2d_gradfix.conv2d(input=x, weight=f, groups=num_channels)
    else:
        x = conv2d_gradfix.conv2d(input=x, weight=f.unsqueeze(2), groups=num_channels)   # Horizontal pass.
        x = conv2d_gradfix.conv2d(input=x, weight=f.unsqueeze(3), groups=num_channels)   # Vertical pass.

    return x[:, :, ::downy, ::downx]

#----------------------------------------------------------------------------
# Autograd wrapper around the compiled or Triton kernel (`backend` 'cpp' or 'triton'). The kernel entry point is
#   upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain)
# with a 2-D filter; a separable filter runs as one horizontal and one vertical call. The backward pass is this op
# again, so second derivatives run on the same kernel.

_upfirdn2d_cuda_cache = dict()

def _upfirdn2d_cuda(up=1, down=1, padding=0, flip_filter=False, gain=1, backend='cpp'):
    """autograd.Function class for one setting of the op's constant arguments (cached)."""
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    assert backend in ['cpp', 'triton']
    key = (upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, backend)
    if key in _upfirdn2d_cuda_cache:
        return _upfirdn2d_cuda_cache[key]

    class Upfirdn2dCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f): # pylint: disable=arguments-differ
            assert isinstance(x, torch.Tensor) and x.ndim == 4
            if f is None:
                f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
            if f.ndim == 1 and f.shape[0] == 1:
                f = f.square().unsqueeze(0) # A 1-tap separable filter is a 1x1 2-D filter.
            assert isinstance(f, torch.Tensor) and f.ndim in [1, 2]
            kernels = _plugin if backend == 'cpp' else _triton()
            if backend == 'triton': # Same passes, but a float16 image stays float32 between them.
                y = kernels.resample(x, f, [upx, upy], [downx, downy], [px0, px1, py0, py1], flip_filter, gain)
            elif f.ndim == 2:
                y = kernels.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
            else:
                g = gain ** 0.5 # Each pass scales its taps by sqrt(gain), as the reference does.
                y = kernels.upfirdn2d(x, f.unsqueeze(0), upx, 1, downx, 1, px0, px1, 0, 0, flip_filter, g)
                y = kernels.upfirdn2d(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, py0, py1, flip_filter, g)
            ctx.save_for_backward(f)
            ctx.x_shape = x.shape
            return y

        @staticmethod
        def backward(ctx, dy): # pylint: disable=arguments-differ
            f, = ctx.saved_tensors
            _, _, ih, iw = ctx.x_shape
            _, _, oh, ow = dy.shape
            fw, fh = _get_filter_size(f)
            assert not ctx.needs_input_grad[1]
            dx = None
            if ctx.needs_input_grad[0]:
                # The adjoint swaps up/down, flips the filter and pads so the result lands on the input grid.
                p = [fw - px0 - 1, iw * upx - ow * downx + px0 - upx + 1, fh - py0 - 1, ih * upy - oh * downy + py0 - upy + 1]
                dx = _upfirdn2d_cuda(up=down, down=up, padding=p, flip_filter=(not flip_filter), gain=gain, backend=backend).apply(dy, f)
            return dx, None

    _upfirdn2d_cuda_cache[key] = Upfirdn2dCuda
    return Upfirdn2dCuda

#----------------------------------------------------------------------------
# Convenience wrappers that pick the padding for the common cases.

def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Filter with `f`, padded so the output has the input's size (plus `padding`, negative = crop)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Upsample by `up` with interpolation filter `f`; output size is `up` times the input (plus `padding`)."""
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    r"""Downsample by `down` with anti-aliasing filter `f`; output size is the input over `down` (padding is on the input)."""
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

#----------------------------------------------------------------------------
