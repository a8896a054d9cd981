"""Filtered leaky ReLU (StyleGAN3's alias-free nonlinearity): bias, upsample, lrelu, clamp, downsample."""

import os
import warnings

import numpy as np
import torch

from .. import custom_ops
from .. import misc
from . import bias_act
from . import triton_kernels
from . import upfirdn2d

#----------------------------------------------------------------------------
# Optional compiled plugin: C++ kernels for CPU tensors (filtered_lrelu.cpp). CUDA tensors take the Triton kernels
# (triton_kernels/filtered_lrelu.py) where triton_kernels.wants_triton allows, else the reference path. `cpu_default`
# says whether impl='cuda' (the default) uses the compiled kernel for CPU tensors; impl='cpp' asks for it regardless.
# Measured with benchmarks/bench_ops.py: see CPU_DEFAULT_NOTE.

cpu_default = True
CPU_DEFAULT_NOTE = ('compiled is faster: up 2, down 2, [1, 3, 3, 1] filters, [4, 256, 64, 64] float32, 2 threads, forward '
    '776 -> 174 ms (4.5x), forward+backward 1822 -> 558 ms (3.3x); 1 thread 3.3x / 3.5x; [4, 256, 8, 8] 1.2x / 1.5x. Taken on '
    'a shared 2-core CPU; re-time alone with python benchmarks/bench_ops.py --only filtered_lrelu')

PLUGIN = dict(                          # get_plugin's arguments (custom_ops.building_in_background takes them too).
    module_name         = 'filtered_lrelu_plugin',
    sources             = ['filtered_lrelu.cpp'],
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
    from .triton_kernels import filtered_lrelu as kernels # pylint: disable=import-outside-toplevel
    return kernels


def _triton_case(x, fu, fd, up, down):
    """(supported, reason) of the Triton kernels for this call; only asked about CUDA tensors with triton present."""
    if not (triton_kernels.is_cuda(x) and triton_kernels.available()):
        return False, ''
    from .triton_kernels import upfirdn2d as ufd_kernels # pylint: disable=import-outside-toplevel
    ok, why = ufd_kernels.supports(x, fu, [up, up], [1, 1])
    return (ok, why) if not ok else ufd_kernels.supports(x, fd, [1, 1], [down, down])


def _get_filter_size(f):
    """(width, height); (1, 1) for None."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and 1 <= f.ndim <= 2
    return f.shape[-1], f.shape[0]


def _parse_padding(padding):
    """int, [x, y] or [x0, x1, y0, y1] (numpy ints allowed) -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        padding = [padding, padding]
    assert isinstance(padding, (list, tuple))
    assert all(isinstance(p, (int, np.integer)) for p in padding)
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1

#----------------------------------------------------------------------------

def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False, impl='cuda'):
    r"""Per channel: add bias, upsample with `fu`, scale by `gain`, leaky ReLU, clamp, downsample with `fd`.

    Args:
        x:           [N, C, H, W] float tensor.
        fu:          float32 upsampling filter ([fh, fw] or separable [taps]) or None (identity).
        fd:          float32 downsampling filter ([fh, fw] or separable [taps]) or None (identity).
        b:           Bias [C] with the dtype of `x`, or None.
        up:          Integer upsampling factor.
        down:        Integer downsampling factor.
        padding:     Padding of the upsampled image: int, [x, y] or [x0, x1, y0, y1] (negative = crop).
        gain:        Scale applied before the activation's clamp.
        slope:       Slope of the negative side of the leaky ReLU.
        clamp:       Clamp the activation to [-clamp, +clamp], None = no clamping.
        flip_filter: False = convolution, True = correlation.
        impl:        'cuda' (CPU tensors: compiled kernel where it loads and `cpu_default` allows; CUDA tensors:
                     Triton kernels where triton imports), 'cpp' (compiled CPU kernel whenever it loads) or 'ref'.

    Returns:
        [N, C, out_h, out_w] with out_w = (W*up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down.
    """
    assert isinstance(x, torch.Tensor)
    assert impl in ['ref', 'cuda', 'cpp']
    if custom_ops.wants_cpu_plugin(x, impl, cpu_default) and _init():
        return _filtered_lrelu_cuda(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter).apply(x, fu, fd, b, None, 0, 0)
    if impl == 'cuda' and triton_kernels.wants_triton('filtered_lrelu', x, impl, *_triton_case(x, fu, fd, up, down)):
        return _filtered_lrelu_cuda(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter,
            backend='triton').apply(x, fu, fd, b, None, 0, 0)
    return _filtered_lrelu_ref(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter)


@misc.profiled_function
def _filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False):
    """Reference implementation composed from `bias_act()` and `upfirdn2d()` (memory hungry, any-order gradients)."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    fu_w, fu_h = _get_filter_size(fu)
    fd_w, fd_h = _get_filter_size(fd)
    if b is not None:
        assert isinstance(b, torch.Tensor) and b.dtype == x.dtype
        misc.assert_shape(b, [x.shape[1]])
    assert isinstance(up, int) and up >= 1
    assert isinstance(down, int) and down >= 1
    px0, px1, py0, py1 = _parse_padding(padding)
    assert gain == float(gain) and gain > 0
    assert slope == float(slope) and slope >= 0
    assert clamp is None or (clamp == float(clamp) and clamp >= 0)

    batch_size, channels, in_h, in_w = x.shape
    in_dtype = x.dtype
    out_w = (in_w * up + (px0 + px1) - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + (py0 + py1) - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down

    x = bias_act.bias_act(x=x, b=b)
    x = upfirdn2d.upfirdn2d(x=x, f=fu, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
    x = bias_act.bias_act(x=x, act='lrelu', alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d.upfirdn2d(x=x, f=fd, down=down, flip_filter=flip_filter)

    misc.assert_shape(x, [batch_size, channels, out_h, out_w])
    assert x.dtype == in_dtype
    return x

#----------------------------------------------------------------------------
# Autograd wrapper around the compiled or the Triton kernels (`backend` 'cpp' or 'triton', same entry points):
#   filtered_lrelu(x, fu, fd, b, si, up, down, px0, px1, py0, py1, sx, sy, gain, slope, clamp, flip, write_signs)
#       -> (y, signs, return_code); return_code < 0 means no specialised kernel fits these arguments.
#   filtered_lrelu_act_(x, si, sx, sy, gain, slope, clamp, write_signs) -> signs (activation in place).
# The forward pass stores a bit-packed sign tensor; the backward pass is the same op with up/down swapped,
# the filters swapped and flipped, reading those signs at offset (sx, sy) instead of recomputing them.

_filtered_lrelu_cuda_cache = dict()

def _filtered_lrelu_cuda(up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False, backend='cpp'):
    """autograd.Function class for one setting of the op's constant arguments (cached)."""
    assert isinstance(up, int) and up >= 1
    assert isinstance(down, int) and down >= 1
    px0, px1, py0, py1 = _parse_padding(padding)
    assert gain == float(gain) and gain > 0
    assert slope == float(slope) and slope >= 0
    assert clamp is None or (clamp == float(clamp) and clamp >= 0)
    gain = float(gain)
    slope = float(slope)
    clamp = float(clamp if clamp is not None else 'inf')
    assert backend in ['cpp', 'triton']
    key = (up, down, px0, px1, py0, py1, gain, slope, clamp, flip_filter, backend)
    if key in _filtered_lrelu_cuda_cache:
        return _filtered_lrelu_cuda_cache[key]

    class FilteredLReluCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, fu, fd, b, si, sx, sy): # pylint: disable=arguments-differ
            assert isinstance(x, torch.Tensor) and x.ndim == 4

            # The kernels want explicit filters; a 1-tap separable filter without resampling is a full 1x1 one.
            fu = torch.ones([1, 1], dtype=torch.float32, device=x.device) if fu is None else fu
            fd = torch.ones([1, 1], dtype=torch.float32, device=x.device) if fd is None else fd
            assert 1 <= fu.ndim <= 2 and 1 <= fd.ndim <= 2
            if up == 1 and fu.ndim == 1 and fu.shape[0] == 1:
                fu = fu.square()[None]
            if down == 1 and fd.ndim == 1 and fd.shape[0] == 1:
                fd = fd.square()[None]
            si = torch.empty([0]) if si is None else si
            b = torch.zeros([x.shape[1]], dtype=x.dtype, device=x.device) if b is None else b
            write_signs = (si.numel() == 0) and (x.requires_grad or b.requires_grad)

            strides = [x.stride(i) for i in range(x.ndim) if x.size(i) > 1]
            if any(s0 < s1 for s0, s1 in zip(strides[:-1], strides[1:])):
                warnings.warn('filtered_lrelu: input strides are not decreasing (e.g. channels-last); this layout is slow', RuntimeWarning)

            return_code = -1
            kernels = _plugin if backend == 'cpp' else _triton()
            if backend == 'triton' or x.dtype in [torch.float32, torch.float64]:
                y, so, return_code = kernels.filtered_lrelu(x, fu, fd, b, si, up, down, px0, px1, py0, py1, sx, sy, gain, slope, clamp, flip_filter, write_signs)

            # No specialised kernel: do the resampling with upfirdn2d and only the activation in the plugin,
            # which still keeps just the packed signs for the backward pass.
            if return_code < 0:
                warnings.warn('filtered_lrelu: no optimised kernel for these arguments; using the generic path', RuntimeWarning)
                y = x.add(b.unsqueeze(-1).unsqueeze(-1))
                y = upfirdn2d.upfirdn2d(x=y, f=fu, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
                so = kernels.filtered_lrelu_act_(y, si, sx, sy, gain, slope, clamp, write_signs)
                y = upfirdn2d.upfirdn2d(x=y, f=fd, down=down, flip_filter=flip_filter)

            ctx.save_for_backward(fu, fd, (si if si.numel() else so))
            ctx.x_shape = x.shape
            ctx.y_shape = y.shape
            ctx.s_ofs = sx, sy
            return y

        @staticmethod
        def backward(ctx, dy): # pylint: disable=arguments-differ
            fu, fd, si = ctx.saved_tensors
            _, _, xh, xw = ctx.x_shape
            _, _, yh, yw = ctx.y_shape
            sx, sy = ctx.s_ofs
            assert not any(ctx.needs_input_grad[i] for i in [1, 2, 4, 5, 6])
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[3]:
                pp = [
                    (fu.shape[-1] - 1) + (fd.shape[-1] - 1) - px0,
                    xw * up - yw * down + px0 - (up - 1),
                    (fu.shape[0] - 1) + (fd.shape[0] - 1) - py0,
                    xh * up - yh * down + py0 - (up - 1),
                ]
                gg = gain * (up ** 2) / (down ** 2)
                sx = sx - (fu.shape[-1] - 1) + px0
                sy = sy - (fu.shape[0] - 1) + py0
                op = _filtered_lrelu_cuda(up=down, down=up, padding=pp, gain=gg, slope=slope, clamp=None, flip_filter=(not flip_filter), backend=backend)
                dx = op.apply(dy, fd, fu, None, si, sx, sy)
            if ctx.needs_input_grad[3]:
                db = dx.sum([0, 2, 3])
            return dx, None, None, db, None, None, None

    _filtered_lrelu_cuda_cache[key] = FilteredLReluCuda
    return FilteredLReluCuda

#----------------------------------------------------------------------------
