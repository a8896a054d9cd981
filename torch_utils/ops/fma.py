"""Fused multiply-add `a * b + c` with a hand-written, broadcast-aware backward pass."""

import torch

#----------------------------------------------------------------------------

def fma(a, b, c):
    """Return a * b + c (torch.addcmul) with broadcasting; gradients are summed back to each operand's shape."""
    return _FusedMultiplyAdd.apply(a, b, c)

#----------------------------------------------------------------------------

class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c): # pylint: disable=arguments-differ
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return torch.addcmul(c, a, b)

    @staticmethod
    def backward(ctx, dout): # pylint: disable=arguments-differ
        a, b = ctx.saved_tensors
        da = _unbroadcast(dout * b, a.shape) if ctx.needs_input_grad[0] else None
        db = _unbroadcast(dout * a, b.shape) if ctx.needs_input_grad[1] else None
        dc = _unbroadcast(dout, ctx.c_shape) if ctx.needs_input_grad[2] else None
        return da, db, dc

#----------------------------------------------------------------------------

def _unbroadcast(x, shape):
    """Sum `x` over the dimensions that broadcasting expanded, giving a tensor of `shape`."""
    extra_dims = x.ndim - len(shape)
    assert extra_dims >= 0
    expanded = [i for i in range(x.ndim) if x.shape[i] > 1 and (i < extra_dims or shape[i - extra_dims] == 1)]
    if expanded:
        x = x.sum(dim=expanded, keepdim=True)
    if extra_dims:
        x = x.reshape(-1, *x.shape[extra_dims + 1:])
    assert x.shape == shape
    return x

#----------------------------------------------------------------------------
