"""Fused tri-plane decoding: EG3D's bilinear plane taps, their mean and the OSG decoder's MLP as one op (CPU or Triton)."""

import os

import torch

from .. import custom_ops
from .. import misc
from . import triton_kernels

#----------------------------------------------------------------------------
# The op reads channels-last planes [N, 3, H, W, C] (a texel's C features side by side, where grid_sample on
# [N*3, C, H, W] gathers each feature from a different page) and keeps nothing for backward but its inputs: the
# backward pass recomputes features and hidden units block by block. float32 at EG3D's sizes (32 features, 64 hidden
# units) runs both passes as register-blocked tiles of 16 points (triplane_sigma_tiled.h: the hidden layer's forward
# and backward as small matrix products); the channels-last copy and its gradient are the plugin's blocked transposes.
# Measured on a 2-core CPU in benchmarks/bench_ops.py. CUDA tensors take the Triton kernels
# (triton_kernels/triplane_sigma.py) where triton_kernels.wants_triton says so (float32 / float64), else the reference
# path; on an H100 1.1-1.7x the reference (benchmarks/bench_gpu.py).

enabled = True                  # Module switch: False forces the reference path (tests and benchmarks compare both).
backward_buffer_bytes = 2**29   # Upper bound on the per-worker plane-gradient buffers of one backward pass.

PLUGIN = dict(                          # get_plugin's arguments (custom_ops.building_in_background takes them too).
    module_name     = 'triplane_sigma_plugin',
    sources         = ['triplane_sigma.cpp'],
    headers         = ['triplane_sigma_cpu.h', 'triplane_sigma_tiled.h'],
    source_dir      = os.path.dirname(__file__),
    extra_cflags    = ['-O3', '-march=native', '-ffast-math', '-fopenmp'],   # Cache key holds the CPU's flags.
    extra_ldflags   = ['-fopenmp'],                                         # at::parallel_for runs on OpenMP.
    is_python_module = False,                                               # torch.ops operators (TORCH_LIBRARY).
)

_plugin = None

def _init():
    """Build or load the plugin on first use; True when it is available."""
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin(**PLUGIN)
    return _plugin is not None


def _floats(tensors):
    return all(t.dtype in (torch.float32, torch.float64) for t in tensors)


def _triton(*tensors):
    """Do these tensors take the Triton kernels (CUDA, triton available, float32 / float64 on one device)?"""
    x = tensors[0]
    ok = _floats(tensors) and all(t.device == x.device for t in tensors)
    return triton_kernels.wants_triton('triplane_sigma', x, 'cuda' if enabled else 'ref', supported=ok,
        reason='float32 or float64 tensors on one device only')


def can_run(*tensors):
    """Will decode() take a fused path for these tensors: the compiled one (all on the CPU, float32 or float64, plugin
    built) or the Triton one (_triton)?"""
    if not enabled:
        return False
    if triton_kernels.is_cuda(tensors[0]):
        return _triton(*tensors)
    return all(t.device.type == 'cpu' for t in tensors) and _floats(tensors) and _init()


def channels_last(planes):
    """Tri-planes [N, 3, C, H, W] as the op reads them, [N, 3, H, W, C] contiguous (differentiable, also twice)."""
    misc.assert_shape(planes, [None, 3, None, None, None])
    if enabled and planes.device.type == 'cpu' and _floats([planes]) and _init():   # The C++ plugin's transposes.
        return _ToChannelsLast.apply(planes)
    return planes.permute(0, 1, 3, 4, 2).contiguous()


# The plugin's blocked transposes (several times faster than torch's strided copy of the permutation), each the
# other's backward.
class _ToChannelsLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes): # pylint: disable=arguments-differ
        return _plugin.planes_transpose(planes, True)

    @staticmethod
    def backward(ctx, grad): # pylint: disable=arguments-differ
        return _ToChannelsFirst.apply(grad)


class _ToChannelsFirst(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes_cl): # pylint: disable=arguments-differ
        return _plugin.planes_transpose(planes_cl, False)

    @staticmethod
    def backward(ctx, grad): # pylint: disable=arguments-differ
        return _ToChannelsLast.apply(grad)

#----------------------------------------------------------------------------

def decode(planes_cl, points, w1, b1, w2, b2, box_warp):
    """Decoder outputs [N, M, O] at points [N, M, 3] of channels-last planes [N, 3, H, W, C]; needs can_run().

    The decoder is EG3D's OSGDecoder with its gains applied: out = w2 softplus(w1 f + b1) + b2, f the mean of the three
    planes' bilinear samples (grid_sample's align_corners=False, zero padding; planes read at (x, y), (x, z), (z, x)
    of the points scaled by 2 / box_warp). w1 [hidden, C], b1 [hidden], w2 [O, hidden], b2 [O]: O = 1 gives sigma
    alone. Differentiable once with respect to planes, points and the weights.
    """
    N, _, H, W, C = planes_cl.shape
    misc.assert_shape(points, [N, None, 3])
    misc.assert_shape(w1, [None, C])
    misc.assert_shape(w2, [None, w1.shape[0]])
    dtype = planes_cl.dtype
    args = [t.to(dtype) for t in (points, w1, b1, w2, b2)]
    if triton_kernels.is_cuda(planes_cl):
        if not _triton(planes_cl, *args):
            raise RuntimeError('triplane_sigma: no Triton kernel for these tensors; ask can_run() first')
        from .triton_kernels import triplane_sigma as kernels # pylint: disable=import-outside-toplevel
        return kernels.decode(planes_cl.contiguous(), args[0].contiguous(), *args[1:], 2.0 / float(box_warp))
    if not _init():
        raise RuntimeError('the triplane_sigma plugin is unavailable; ask can_run() first')
    return _Decode.apply(planes_cl.contiguous(), args[0].contiguous(), *args[1:], 2.0 / float(box_warp))


class _Decode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes, points, w1, b1, w2, b2, scale): # pylint: disable=arguments-differ
        ctx.save_for_backward(planes, points, w1, b1, w2, b2)
        ctx.scale = scale
        return _plugin.triplane_decode(planes, points, w1, b1, w2, b2, scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad): # pylint: disable=arguments-differ
        planes, points, w1, b1, w2, b2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        # Workers own their plane-gradient buffers (no atomics): as many as threads, within the memory bound.
        lanes = max(1, min(torch.get_num_threads(), backward_buffer_bytes // max(1, planes.numel() * planes.element_size())))
        grads = _plugin.triplane_decode_backward(grad.to(planes.dtype), planes, points, w1, b1, w2, b2, ctx.scale,
            need[0], need[1], lanes)
        return tuple(g if n else None for g, n in zip(grads, need[:6])) + (None,)

#----------------------------------------------------------------------------
