"""Drop-in conv2d / conv_transpose2d whose gradients are convolutions again (any order) and can skip weight grads."""

import contextlib

import torch

# pylint: disable=redefined-builtin,arguments-differ

#----------------------------------------------------------------------------
# Global switches (EG3D's training loop sets `enabled = True` and wraps path-length regularisation in
# `no_weight_gradients()`).

enabled = False                     # Route conv2d / conv_transpose2d through the custom autograd op?
weight_gradients_disabled = False   # While True, the custom op returns no gradient for the weights.
cpu_bfloat16 = False                # While True, the custom op convolves float32 CPU tensors in bfloat16 (float32 out).

@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Within the block, the custom op computes input gradients only (weight.grad stays untouched)."""
    global weight_gradients_disabled
    previous = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = previous


@contextlib.contextmanager
def bfloat16_on_cpu(enable=True):
    """Within the block, the custom op runs float32 CPU convolutions in bfloat16 with float32 results."""
    global cpu_bfloat16
    previous = cpu_bfloat16
    cpu_bfloat16 = enable
    try:
        yield
    finally:
        cpu_bfloat16 = previous


def native_bfloat16():
    """Does this CPU have bfloat16 instructions (AVX512-BF16 or AMX-BF16)? Elsewhere bfloat16 convolutions are
    emulated and slower than float32."""
    caps = getattr(torch.cpu, 'get_capabilities', dict)()
    return bool(caps.get('avx512_bf16') or caps.get('amx_bf16'))


def _low(*tensors):
    """The tensors in bfloat16 when cpu_bfloat16 is on and they are float32 on the CPU (else as they are), and whether."""
    if cpu_bfloat16 and tensors[0].device.type == 'cpu' and tensors[0].dtype == torch.float32:
        return [t.to(torch.bfloat16) for t in tensors], True
    return list(tensors), False

#----------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same arguments and result as torch.nn.functional.conv2d."""
    if _should_use_custom_op(input):
        return _conv2d_gradfix(transpose=False, weight_shape=weight.shape, stride=stride, padding=padding,
            output_padding=0, dilation=dilation, groups=groups).apply(input, weight, bias)
    return torch.nn.functional.conv2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Same arguments and result as torch.nn.functional.conv_transpose2d."""
    if _should_use_custom_op(input):
        return _conv2d_gradfix(transpose=True, weight_shape=weight.shape, stride=stride, padding=padding,
            output_padding=output_padding, dilation=dilation, groups=groups).apply(input, weight, bias)
    return torch.nn.functional.conv_transpose2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding,
        output_padding=output_padding, groups=groups, dilation=dilation)


def _should_use_custom_op(input):
    """The custom op runs on any device once enabled (on CUDA only while cuDNN is on, as in StyleGAN)."""
    assert isinstance(input, torch.Tensor)
    if not enabled:
        return False
    return input.device.type != 'cuda' or torch.backends.cudnn.enabled


def _tuple_of_ints(xs, ndim):
    xs = tuple(xs) if isinstance(xs, (tuple, list)) else (xs,) * ndim
    assert len(xs) == ndim
    assert all(isinstance(x, int) for x in xs)
    return xs

#----------------------------------------------------------------------------
# The op: forward is torch's own convolution; backward is expressed through the same op with `transpose`
# flipped (input gradient) and through a second Function for the weight gradient, so every derivative is
# again differentiable.

_conv2d_gradfix_cache = dict()
_null_tensor = torch.empty([0])

def _conv2d_gradfix(transpose, weight_shape, stride, padding, output_padding, dilation, groups):
    """autograd.Function class for one convolution configuration (cached)."""
    ndim = 2
    weight_shape = tuple(weight_shape)
    stride = _tuple_of_ints(stride, ndim)
    padding = _tuple_of_ints(padding, ndim)
    output_padding = _tuple_of_ints(output_padding, ndim)
    dilation = _tuple_of_ints(dilation, ndim)
    key = (transpose, weight_shape, stride, padding, output_padding, dilation, groups)
    if key in _conv2d_gradfix_cache:
        return _conv2d_gradfix_cache[key]

    assert groups >= 1
    assert len(weight_shape) == ndim + 2
    assert all(stride[i] >= 1 for i in range(ndim))
    assert all(padding[i] >= 0 for i in range(ndim))
    assert all(dilation[i] >= 0 for i in range(ndim))
    if transpose:
        assert all(0 <= output_padding[i] < max(stride[i], dilation[i]) for i in range(ndim))
    else:
        assert all(output_padding[i] == 0 for i in range(ndim))
    common = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    def adjoint_output_padding(input_shape, output_shape):
        """output_padding the adjoint transposed conv needs to reproduce `input_shape` exactly."""
        if transpose:
            return [0, 0]
        return [input_shape[i + 2] - (output_shape[i + 2] - 1) * stride[i] - (1 - 2 * padding[i])
            - dilation[i] * (weight_shape[i + 2] - 1) for i in range(ndim)]

    def adjoint(input_shape, output_shape):
        return _conv2d_gradfix(transpose=(not transpose), weight_shape=weight_shape,
            output_padding=adjoint_output_padding(input_shape, output_shape), **common)

    class Conv2d(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, weight, bias):
            assert weight.shape == weight_shape
            ctx.save_for_backward(input if weight.requires_grad else _null_tensor, weight if input.requires_grad else _null_tensor)
            ctx.input_shape = input.shape
            (x, w), low = _low(input, weight)
            b = None if low else bias                   # (bfloat16 adds the float32 bias after.)
            if transpose:
                y = torch.nn.functional.conv_transpose2d(input=x, weight=w, bias=b, output_padding=output_padding, **common)
            else:
                y = torch.nn.functional.conv2d(input=x, weight=w, bias=b, **common)
            if not low:
                return y
            return y.float() if bias is None else y.float() + bias.reshape(1, -1, 1, 1)

        @staticmethod
        def backward(ctx, grad_output):
            input, weight = ctx.saved_tensors
            grad_input = grad_weight = grad_bias = None
            if ctx.needs_input_grad[0]:
                grad_input = adjoint(ctx.input_shape, grad_output.shape).apply(grad_output, weight, None)
                assert grad_input.shape == ctx.input_shape
            if ctx.needs_input_grad[1] and not weight_gradients_disabled:
                grad_weight = Conv2dGradWeight.apply(grad_output, input)
                assert grad_weight.shape == weight_shape
            if ctx.needs_input_grad[2]:
                grad_bias = grad_output.sum([0, 2, 3])
            return grad_input, grad_weight, grad_bias

    class Conv2dGradWeight(torch.autograd.Function):
        @staticmethod
        def forward(ctx, grad_output, input):
            ctx.save_for_backward(grad_output if input.requires_grad else _null_tensor, input if grad_output.requires_grad else _null_tensor)
            ctx.grad_output_shape = grad_output.shape
            ctx.input_shape = input.shape
            # Only the weight's shape matters here (the saved weight is empty when the input needs no gradient).
            (go, x), low = _low(grad_output, input)
            shape_only = torch.zeros([], dtype=x.dtype, device=x.device).expand(weight_shape)
            grad_weight = torch.ops.aten.convolution_backward(go, x, shape_only, None, stride, padding, dilation,
                transpose, output_padding, groups, [False, True, False])[1]
            return grad_weight.float() if low else grad_weight

        @staticmethod
        def backward(ctx, grad2_grad_weight):
            grad_output, input = ctx.saved_tensors
            grad2_grad_output = grad2_input = None
            if ctx.needs_input_grad[0]:
                grad2_grad_output = Conv2d.apply(input, grad2_grad_weight, None)
                assert grad2_grad_output.shape == ctx.grad_output_shape
            if ctx.needs_input_grad[1]:
                grad2_input = adjoint(ctx.input_shape, ctx.grad_output_shape).apply(grad_output, grad2_grad_weight, None)
                assert grad2_input.shape == ctx.input_shape
            return grad2_grad_output, grad2_input

    _conv2d_gradfix_cache[key] = Conv2d
    return Conv2d

#----------------------------------------------------------------------------
