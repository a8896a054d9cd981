"""Triton filtered_lrelu: Triton upfirdn2d passes around a fused gain / leaky ReLU / clamp kernel that keeps 2-bit signs."""

import torch
import triton
import triton.language as tl

from ... import misc
from . import upfirdn2d as _upfirdn2d

#----------------------------------------------------------------------------
# Same entry points and sign format as the C++ plugin (filtered_lrelu.cpp), so the op's autograd class runs either:
# signs are uint8 [N, C, H, ceil(W / 4)] over the intermediate (upsampled, filtered) image, pixel x of a row in byte
# x // 4 at bit 2 * (x % 4), 1 = negative side, 2 = clamped. A pass that reads signs looks pixel (x, y) up at
# (x + sx, y + sy); pixels outside the tensor read as 0. The intermediate is float32 (float64 for float64 inputs),
# so float16 inputs are resampled and activated in float32 and rounded once, at the output.

DTYPES = _upfirdn2d.DTYPES      # Input dtypes served.


@triton.jit
def _act_write_kernel(
    v_ptr, s_ptr,                   # Intermediate [P, H, W] (activated in place), signs to write [P, H, SW].
    total, W, SW,                   # Sign bytes (P * H * SW); intermediate width; sign bytes per row (ceil(W / 4)).
    p_ptr,                          # [gain, slope, clamp] in v's dtype: clamp(lrelu(v * gain, slope), +-clamp).
    BLOCK: tl.constexpr,            # Sign bytes per program (each covers 4 pixels).
):
    gain = tl.load(p_ptr)
    slope = tl.load(p_ptr + 1)
    clamp = tl.load(p_ptr + 2)
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)       # Byte index over P * H * SW.
    row = i // SW
    col0 = (i % SW) * 4
    in_range = i < total
    code = tl.zeros([BLOCK], dtype=tl.int32)
    for k in tl.static_range(4):
        col = col0 + k
        m = in_range & (col < W)
        ptr = v_ptr + row * W + col
        v = tl.load(ptr, mask=m, other=0.0)
        v = v * gain
        neg = ~(v > 0)                          # Zero (and NaN) take the negative side, as torch's lrelu gradient does.
        v = tl.where(neg, v * slope, v)
        clamped = tl.abs(v) > clamp
        v = tl.where(clamped, tl.where(v > 0, clamp, -clamp).to(v.dtype), v)
        s = tl.where(clamped, 2, tl.where(neg, 1, 0))
        code |= tl.where(m, s, 0) << (2 * k)
        tl.store(ptr, v, mask=m)
    tl.store(s_ptr + i, code.to(tl.uint8), mask=in_range & (col0 < W))


@triton.jit
def _act_kernel(
    v_ptr, s_ptr,                   # Intermediate [P, H, W] (in place), signs to read [P, SH, SW] or dummy.
    total, H, W, SH, SW,            # Pixels; intermediate size; sign tensor's height and bytes per row.
    sx, sy,                         # Read offset.
    p_ptr,                          # [gain, slope, clamp] in v's dtype (clamp only when not reading signs).
    READ: tl.constexpr,             # Read the forward pass's signs instead of recomputing them.
    BLOCK: tl.constexpr,
):
    gain = tl.load(p_ptr)
    slope = tl.load(p_ptr + 1)
    clamp = tl.load(p_ptr + 2)
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < total
    v = tl.load(v_ptr + i, mask=m, other=0.0) * gain
    if READ:
        plane = i // (H * W)
        yy = (i // W) % H + sy
        xx = i % W + sx
        ms = m & (yy >= 0) & (yy < SH) & (xx >= 0) & (xx < SW * 4)
        byte = tl.load(s_ptr + (plane * SH + yy) * SW + xx // 4, mask=ms, other=0).to(tl.int32)
        s = tl.where(ms, (byte >> (2 * (xx % 4))) & 3, 0)
        v = tl.where((s & 2) != 0, 0.0, tl.where((s & 1) != 0, v * slope, v))
    else:
        v = tl.where(v > 0, v, v * slope)
        v = tl.minimum(tl.maximum(v, -clamp), clamp)
    tl.store(v_ptr + i, v, mask=m)

#----------------------------------------------------------------------------

_params_cache = dict()          # (gain, slope, clamp, dtype, device) => the kernels' parameter tensor.

def _params(gain, slope, clamp, x):
    """[gain, slope, clamp] as a tensor in x's dtype on x's device (Triton would pass Python floats as float32)."""
    key = (float(gain), float(slope), float(clamp), x.dtype, x.device)
    if key not in _params_cache:
        if len(_params_cache) > 256:
            _params_cache.clear()
        _params_cache[key] = torch.tensor(key[:3], dtype=x.dtype, device=x.device)
    return _params_cache[key]


def filtered_lrelu_act_(x, si, sx, sy, gain, slope, clamp, write_signs):
    """The plugin's filtered_lrelu_act_ on Triton: activation in place on contiguous x; returns the signs written."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_contiguous()
    assert not (write_signs and si.numel() > 0), 'filtered_lrelu: cannot read and write signs in one call'
    n, c, h, w = x.shape
    so = torch.empty([0], dtype=torch.uint8, device=x.device)
    if x.numel() == 0:
        return torch.zeros([n, c, h, (w + 3) // 4], dtype=torch.uint8, device=x.device) if write_signs else so
    with _upfirdn2d.on_device(x):
        if write_signs:
            so = torch.empty([n, c, h, (w + 3) // 4], dtype=torch.uint8, device=x.device)
            block = min(256, triton.next_power_of_2(so.numel()))
            _act_write_kernel[(triton.cdiv(so.numel(), block),)](x, so, so.numel(), w, so.shape[3],
                _params(gain, slope, clamp, x), BLOCK=block)
        else:
            read = si.numel() > 0
            if read:
                assert si.dtype == torch.uint8 and si.ndim == 4 and si.is_contiguous()
                misc.assert_shape(si, [n, c, None, None])
            block = min(1024, triton.next_power_of_2(x.numel()))
            _act_kernel[(triton.cdiv(x.numel(), block),)](x, (si if read else x), x.numel(), h, w,
                (si.shape[2] if read else 0), (si.shape[3] if read else 0), int(sx), int(sy),
                _params(gain, slope, clamp, x), READ=read, BLOCK=block)
    return so


def filtered_lrelu(x, fu, fd, b, si, up, down, px0, px1, py0, py1, sx, sy, gain, slope, clamp, flip, write_signs):
    """The plugin's filtered_lrelu entry point on Triton: returns (y, signs written, 0).

    Bias and upsampling run in one upfirdn2d pass (the bias is added where real pixels are read), then the fused
    activation, then the downsampling pass; the intermediate stays in float32 (float64 for float64 inputs).
    """
    assert isinstance(x, torch.Tensor) and x.ndim == 4 and x.dtype in DTYPES
    assert fu.dtype == torch.float32 and fd.dtype == torch.float32
    misc.assert_shape(b, [x.shape[1]])
    acc = _upfirdn2d.acc_dtype(x.dtype)
    t = _upfirdn2d.resample(x, fu, [up, up], [1, 1], [px0, px1, py0, py1], flip, up ** 2, bias=b, out_dtype=acc)
    so = filtered_lrelu_act_(t, si, sx, sy, gain, slope, clamp, write_signs)
    fdw, fdh = fd.shape[-1], fd.shape[0]
    assert t.shape[3] >= fdw and t.shape[2] >= fdh, 'filtered_lrelu: output would be empty'
    y = _upfirdn2d.resample(t, fd, [1, 1], [down, down], [0, 0, 0, 0], flip, 1, out_dtype=x.dtype)
    return y, so, 0

#----------------------------------------------------------------------------
