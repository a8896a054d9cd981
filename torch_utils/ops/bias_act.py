"""Fused bias + activation + gain + clamp, with the activation table EG3D/StyleGAN3 networks use."""

import os

import numpy as np
import torch

import dnnlib
from .. import custom_ops
from .. import misc
from . import triton_kernels

#----------------------------------------------------------------------------
# Activation table. `func` is the reference formula; `def_alpha`/`def_gain` are the defaults used when the
# caller passes None; `cuda_idx` selects the function inside the CUDA kernel; `ref` names what the kernel's
# backward pass needs to see ('x' = the pre-activation, 'y' = the output); `has_2nd_grad` says whether the
# second derivative is nonzero, i.e. whether the kernel must support double backward.

def _entry(func, def_alpha, def_gain, cuda_idx, ref, has_2nd_grad):
    return dnnlib.EasyDict(func=func, def_alpha=def_alpha, def_gain=def_gain, cuda_idx=cuda_idx, ref=ref, has_2nd_grad=has_2nd_grad)

activation_funcs = {
    'linear':   _entry(lambda x, **_:         x,                                          0,   1,          1, '',  False),
    'relu':     _entry(lambda x, **_:         torch.nn.functional.relu(x),                0,   np.sqrt(2), 2, 'y', False),
    'lrelu':    _entry(lambda x, alpha, **_:  torch.nn.functional.leaky_relu(x, alpha),   0.2, np.sqrt(2), 3, 'y', False),
    'tanh':     _entry(lambda x, **_:         torch.tanh(x),                              0,   1,          4, 'y', True),
    'sigmoid':  _entry(lambda x, **_:         torch.sigmoid(x),                           0,   1,          5, 'y', True),
    'elu':      _entry(lambda x, **_:         torch.nn.functional.elu(x),                 0,   1,          6, 'y', True),
    'selu':     _entry(lambda x, **_:         torch.nn.functional.selu(x),                0,   1,          7, 'y', True),
    'softplus': _entry(lambda x, **_:         torch.nn.functional.softplus(x),            0,   1,          8, 'y', True),
    'swish':    _entry(lambda x, **_:         torch.sigmoid(x) * x,                       0,   np.sqrt(2), 9, 'x', True),
}

#----------------------------------------------------------------------------
# Optional compiled plugin: C++ kernels for CPU tensors (bias_act.cpp). CUDA tensors with impl='cuda' take the Triton
# kernel (triton_kernels/bias_act.py; float16 is computed in float32) where triton_kernels.wants_triton says
# so, else the reference path. `cpu_default` says whether impl='cuda' (the default) uses the compiled kernel for
# CPU tensors; impl='cpp' asks for it regardless. Measured with benchmarks/bench_ops.py: see CPU_DEFAULT_NOTE.

cpu_default = True
CPU_DEFAULT_NOTE = ('compiled is faster: lrelu + bias [4, 512, 64, 64] float32, 2 threads, forward 120 -> 48 ms (2.5x), '
    'forward+backward 391 -> 280 ms (1.4x); 1 thread 94 -> 26 ms and 276 -> 241 ms; [4, 512, 8, 8] 1.5x / 2.0x. Taken on a '
    'shared 2-core CPU; re-time alone with python benchmarks/bench_ops.py --only bias_act')

PLUGIN = dict(                          # get_plugin's arguments (custom_ops.building_in_background takes them too).
    module_name         = 'bias_act_plugin',
    sources             = ['bias_act.cpp'],
    source_dir          = os.path.dirname(__file__),
    **custom_ops.cpu_build_kwargs,
)

_plugin = None
_null_tensor = torch.empty([0])

def _init():
    """Load the plugin on first use; True when it is available."""
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin(**PLUGIN)
    return _plugin is not None

#----------------------------------------------------------------------------

def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
    r"""Compute `clamp(act(x + b, alpha) * gain, -clamp, +clamp)`; every step is optional.

    Args:
        x:      Input tensor of any shape.
        b:      1-D bias of length `x.shape[dim]`, same dtype as `x`, or None.
        dim:    Dimension of `x` that `b` runs along (ignored without `b`).
        act:    Key of `activation_funcs` ('linear' disables the activation).
        alpha:  Shape parameter of the activation (lrelu slope), None = table default.
        gain:   Output scale, None = table default (e.g. sqrt(2) for lrelu). Pass 1 for no scaling.
        clamp:  Clamp the result to [-clamp, +clamp], None = no clamping.
        impl:   'cuda' (compiled kernel where it loads and `cpu_default` allows; CUDA tensors: the Triton kernel where
                triton imports), 'cpp' (compiled CPU kernel whenever it loads) or 'ref'.

    Returns:
        Tensor with the shape and dtype of `x`.
    """
    assert isinstance(x, torch.Tensor)
    assert impl in ['ref', 'cuda', 'cpp']
    if triton_kernels.is_cuda(x) and _wants_triton(x, b, impl):
        from .triton_kernels import bias_act as kernels # pylint: disable=import-outside-toplevel
        _, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
        return kernels.function(dim, act, alpha, gain, clamp).apply(x, b)
    if custom_ops.wants_cpu_plugin(x, impl, cpu_default) and _init():
        return _bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(x, b)
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


# float32 CUDA tensors take the reference path: PyTorch's own elementwise kernels beat the Triton kernel there (an H100,
# lrelu + bias [4, 512, 64, 64], forward + backward 0.78 against 1.09 ms, 0.72x in two runs of benchmarks/bench_gpu.py,
# which times the kernel with this set to True); float16 (1.15-1.34x there) and float64 take the kernel.
triton_float32 = False

def _wants_triton(x, b, impl):
    """The Triton kernel for CUDA tensor x with impl='cuda': float16 / float64, float32 where triton_float32 (bfloat16
    is untested: the interpreter has no bfloat16), b of x's dtype and device."""
    if x.dtype == torch.float32 and not triton_float32:
        return False
    ok = x.dtype in (torch.float16, torch.float32, torch.float64) and (b is None or (
        b.dtype == x.dtype and b.device == x.device))
    return triton_kernels.wants_triton('bias_act', x, impl if impl == 'cuda' else 'ref', supported=ok,
        reason=f'x {x.dtype} and bias {None if b is None else b.dtype} are not both float16, float32 or float64')

#----------------------------------------------------------------------------

def _resolve(act, alpha, gain, clamp):
    """Fill in table defaults; clamp < 0 means 'no clamping'."""
    assert clamp is None or clamp >= 0
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


@misc.profiled_function
def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """Reference implementation with standard PyTorch ops (supports gradients of any order)."""
    assert isinstance(x, torch.Tensor)
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)

    if b is not None:
        assert isinstance(b, torch.Tensor) and b.ndim == 1
        assert 0 <= dim < x.ndim
        assert b.shape[0] == x.shape[dim]
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x

#----------------------------------------------------------------------------
# Autograd wrappers around the compiled kernel. The kernel entry point is
#   _plugin.bias_act(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp)
# with grad = 0 (forward), 1 (first derivative applied to x) or 2 (second derivative applied to x).

_bias_act_cuda_cache = dict()

def _bias_act_cuda(dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """autograd.Function class for one setting of the op's constant arguments (cached)."""
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    key = (dim, act, alpha, gain, clamp)
    if key in _bias_act_cuda_cache:
        return _bias_act_cuda_cache[key]
    is_identity = (act == 'linear' and gain == 1 and clamp < 0)
    keep_x = ('x' in spec.ref or spec.has_2nd_grad)
    keep_y = ('y' in spec.ref or clamp >= 0)                # The clamp's gradient tests the output (also for 'linear').

    def memory_format_of(t):
        return torch.channels_last if t.ndim > 2 and t.stride(1) == 1 else torch.contiguous_format

    def reduce_to_bias(t):
        return t.sum([i for i in range(t.ndim) if i != dim])

    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b): # pylint: disable=arguments-differ
            ctx.memory_format = memory_format_of(x)
            x = x.contiguous(memory_format=ctx.memory_format)
            b = b.contiguous() if b is not None else _null_tensor
            y = x
            if not is_identity or b is not _null_tensor:
                y = _plugin.bias_act(x, b, _null_tensor, _null_tensor, _null_tensor, 0, dim, spec.cuda_idx, alpha, gain, clamp)
            ctx.save_for_backward(x if keep_x else _null_tensor, b if keep_x else _null_tensor, y if keep_y else _null_tensor)
            return y

        @staticmethod
        def backward(ctx, dy): # pylint: disable=arguments-differ
            dy = dy.contiguous(memory_format=ctx.memory_format)
            x, b, y = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = dy if is_identity else BiasActCudaGrad.apply(dy, x, b, y)
            if ctx.needs_input_grad[1]:
                db = reduce_to_bias(dx)
            return dx, db

    class BiasActCudaGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dy, x, b, y): # pylint: disable=arguments-differ
            ctx.memory_format = memory_format_of(dy)
            dx = _plugin.bias_act(dy, b, x, y, _null_tensor, 1, dim, spec.cuda_idx, alpha, gain, clamp)
            ctx.save_for_backward(dy if spec.has_2nd_grad else _null_tensor, x, b, y)
            return dx

        @staticmethod
        def backward(ctx, d_dx): # pylint: disable=arguments-differ
            d_dx = d_dx.contiguous(memory_format=ctx.memory_format)
            dy, x, b, y = ctx.saved_tensors
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActCudaGrad.apply(d_dx, x, b, y)
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_x = _plugin.bias_act(d_dx, b, x, y, dy, 2, dim, spec.cuda_idx, alpha, gain, clamp)
            if spec.has_2nd_grad and ctx.needs_input_grad[2]:
                d_b = reduce_to_bias(d_x)
            return d_dy, d_x, d_b, None

    _bias_act_cuda_cache[key] = BiasActCuda
    return BiasActCuda

#----------------------------------------------------------------------------
