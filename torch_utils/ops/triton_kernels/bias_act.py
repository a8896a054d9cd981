"""Triton kernel of bias_act (torch_utils/ops/bias_act.py): forward, first and second derivatives, every activation."""

import torch
import triton
import triton.language as tl


#----------------------------------------------------------------------------
# One elementwise kernel in three modes, like NVIDIA's: 0 computes y = clamp(act(x + b) * gain), 1 the first
# derivative dx = dy * act'(x + b) * gain (0 where the clamp bites), 2 the second, d_x = d_dx * dy * act''(x + b) *
# gain (same mask). Every mode recomputes from x and b (no saved output). Arithmetic is float32 inside the kernel for
# float16 and float32 tensors (EG3D's num_fp16_res layers run bias_act in float16) and float64 for float64; results
# are stored in the tensor's dtype (bias_act.py sends bfloat16 to the reference: the interpreter cannot test it).
# Tensors keep their memory layout (contiguous or channels_last): the bias index of the element at storage offset i is
# (i // stride[dim]) % size[dim], true of any dense layout.
# Double backward: mode 2 makes the first derivative differentiable once more, for every activation (0 for the
# piecewise-linear ones), as R1 regularisation needs; a third derivative is not supported (once_differentiable).

BLOCK = 1024                    # Elements per program.
ACT_INDEX = {name: i for i, name in enumerate(      # bias_act.activation_funcs' order (tested).
    ['linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'])}
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))                                  # Never overflows.
    return tl.where(x >= 0, 1.0, e) / (1.0 + e)


@triton.jit
def _log1p(u):
    """log(1 + u) accurate for small u (no log1p in tl): log(w) * u / (w - 1) with w = 1 + u rounded."""
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * u / tl.where(w == 1.0, 1.0, w - 1.0))


@triton.jit
def _act(x, alpha, ACT: tl.constexpr, ORDER: tl.constexpr):
    """The activation (ORDER 0), its first (1) or second (2) derivative at x; ACT indexes bias_act.activation_funcs."""
    zero = tl.zeros_like(x)
    if ACT == 0:                                            # linear
        r = x if ORDER == 0 else (zero + 1.0 if ORDER == 1 else zero)
    elif ACT == 1:                                          # relu
        r = tl.maximum(x, 0.0) if ORDER == 0 else (tl.where(x > 0, 1.0, zero) if ORDER == 1 else zero)
    elif ACT == 2:                                          # lrelu (slope alpha)
        r = tl.where(x > 0, x, x * alpha) if ORDER == 0 else (tl.where(x > 0, 1.0, zero + alpha) if ORDER == 1 else zero)
    elif ACT == 3:                                          # tanh = 2 sigmoid(2x) - 1
        t = 2.0 * _sigmoid(2.0 * x) - 1.0
        r = t if ORDER == 0 else (1.0 - t * t if ORDER == 1 else -2.0 * t * (1.0 - t * t))
    elif ACT == 4:                                          # sigmoid
        s = _sigmoid(x)
        r = s if ORDER == 0 else (s * (1.0 - s) if ORDER == 1 else s * (1.0 - s) * (1.0 - 2.0 * s))
    elif ACT == 5 or ACT == 6:                              # elu (alpha 1); selu (alpha its alpha, scale in gain)
        e = tl.exp(tl.minimum(x, 0.0)) * (1.0 if ACT == 5 else alpha)
        if ORDER == 0:
            r = tl.where(x > 0, x, e - (1.0 if ACT == 5 else alpha))
        else:
            r = tl.where(x > 0, 1.0 if ORDER == 1 else 0.0, e)
    elif ACT == 7:                                          # softplus (torch's threshold 20: x itself above it)
        s = _sigmoid(x)
        if ORDER == 0:
            r = tl.where(x > 20.0, x, tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x))))
        else:
            r = tl.where(x > 20.0, 1.0 if ORDER == 1 else 0.0, s if ORDER == 1 else s * (1.0 - s))
    else:                                                   # swish = x sigmoid(x)
        s = _sigmoid(x)
        if ORDER == 0:
            r = x * s
        elif ORDER == 1:
            r = s + x * s * (1.0 - s)
        else:
            r = s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
    return r


@triton.jit
def _bias_act_kernel(x_ptr, b_ptr, dy_ptr, g_ptr, out_ptr, params_ptr, n, stride, size, ACT: tl.constexpr,
        MODE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, BLOCK_: tl.constexpr):
    """MODE 0: out = y; 1: out = g * dy/dx; 2: out = g * dy_ptr * d2y/dx2 (g_ptr the incoming gradient).
    params: alpha, gain, clamp in the computing dtype (float32, or float64 for float64 tensors)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK_ + tl.arange(0, BLOCK_)
    mask = offs < n
    alpha = tl.load(params_ptr)
    gain = tl.load(params_ptr + 1)
    clamp = tl.load(params_ptr + 2)
    ct = params_ptr.dtype.element_ty
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ct)
    if HAS_BIAS:
        x += tl.load(b_ptr + (offs // stride) % size, mask=mask, other=0.0).to(ct)
    if HAS_CLAMP or MODE == 0:
        y = _act(x, alpha, ACT, 0) * gain
    if MODE == 0:
        r = y
        if HAS_CLAMP:
            r = tl.minimum(tl.maximum(r, -clamp), clamp)
    else:
        r = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ct) * _act(x, alpha, ACT, MODE) * gain
        if MODE == 2:
            r *= tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ct)
        if HAS_CLAMP:                                       # torch's clamp passes gradients at the bounds too.
            r = tl.where(tl.abs(y) <= clamp, r, 0.0)
    tl.store(out_ptr + offs, r.to(out_ptr.dtype.element_ty), mask=mask)

#----------------------------------------------------------------------------

def _dense(t):
    """t itself when its storage is dense (contiguous or channels_last), else a contiguous copy."""
    if t.is_contiguous() or (t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous()


def _like(t, x):
    """t with x's strides (a gradient arriving in another layout than the dense x it belongs to)."""
    return t if t.stride() == x.stride() else torch.empty_like(x).copy_(t)


_params = dict()

def _launch(x, b, dy, g, mode, dim, act, alpha, gain, clamp):
    """out = empty_like(x) (same strides) filled by the kernel in mode `mode`; x, dy, g share x's layout."""
    if act == 'selu':                                       # The kernel's constants are all parameters (float64 ones
        alpha, gain = SELU_ALPHA, gain * SELU_SCALE         # stay float64; a literal in a kernel is float32).
    key = (alpha, gain, clamp, x.device, x.dtype == torch.float64)
    if key not in _params:                                  # Scalars as a tensor: float64 ones stay float64.
        _params[key] = torch.tensor([alpha, gain, clamp], device=x.device, dtype=torch.float64 if key[-1] else torch.float32)
    params = _params[key]
    out = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return out
    has_bias = b is not None and b.numel() > 0
    stride, size = (x.stride(dim), x.shape[dim]) if has_bias else (1, 1)
    null = x                                                 # Pointer arguments the mode does not read.
    _bias_act_kernel[(triton.cdiv(n, BLOCK),)](x, b if has_bias else null, null if dy is None else dy,
        null if g is None else g, out, params, n, stride, size, ACT=ACT_INDEX[act], MODE=mode, HAS_BIAS=has_bias,
        HAS_CLAMP=clamp >= 0, BLOCK_=BLOCK)
    return out


_cache = dict()

def function(dim, act, alpha, gain, clamp):
    """autograd.Function class running the kernel for one setting of the constant arguments (cached); .apply(x, b).
    alpha, gain, clamp: floats as bias_act._resolve gives them (clamp < 0: no clamping)."""
    key = (dim, act, alpha, gain, clamp)
    if key in _cache:
        return _cache[key]
    consts = dict(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)

    def reduce_to_bias(t):
        return t.sum([i for i in range(t.ndim) if i != dim])

    class BiasActTriton(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b): # pylint: disable=arguments-differ
            x = _dense(x)
            b = b.contiguous() if b is not None else None
            ctx.save_for_backward(x, b)
            return _launch(x, b, None, None, 0, **consts)

        @staticmethod
        def backward(ctx, dy): # pylint: disable=arguments-differ
            x, b = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = BiasActTritonGrad.apply(dy, x, b)
            if ctx.needs_input_grad[1]:
                db = reduce_to_bias(dx)
            return dx, db

    class BiasActTritonGrad(torch.autograd.Function):
        """dx = dy * y'(x); its backward gives d_dy (this function again) and d_x, d_b (mode 2)."""
        @staticmethod
        def forward(ctx, dy, x, b): # pylint: disable=arguments-differ
            dy = _like(dy, x)
            ctx.save_for_backward(dy, x, b)
            return _launch(x, b, None, dy, 1, **consts)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, d_dx): # pylint: disable=arguments-differ
            dy, x, b = ctx.saved_tensors
            d_dx = _like(d_dx, x)
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = _launch(x, b, None, d_dx, 1, **consts)
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                d_x = _launch(x, b, dy, d_dx, 2, **consts)
            if ctx.needs_input_grad[2] and b is not None:
                d_b = reduce_to_bias(d_x)
            return d_dy, d_x, d_b

    _cache[key] = BiasActTriton
    return BiasActTriton

#----------------------------------------------------------------------------
