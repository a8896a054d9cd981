"""Triton upfirdn2d: zero-insertion upsampling, padding (negative crops), FIR filtering and downsampling in one pass."""

import contextlib

import torch
import triton
import triton.language as tl

from ... import misc

#----------------------------------------------------------------------------
# One program computes a BLOCK_H x BLOCK_W tile of one output plane directly (polyphase): output pixel o reads the
# zero-inserted, padded input at o * down + t for taps t of the correlation filter, and only the taps with
# (o * down + t - pad0) divisible by `up` meet a real input pixel, so each pixel walks ceil(taps / up) of them per
# axis instead of all of them. Accumulation is float32 (float64 for float64 inputs), so float16 inputs are filtered
# in float32 and rounded once on store. The filter arrives correlation-ready (flipped unless flip_filter, gain folded
# in) from the host, exactly as the reference builds its conv2d weight.

DTYPES = (torch.float16, torch.float32, torch.float64)     # Input dtypes the kernel serves.
MAX_FACTOR = 8                  # Largest up / down factor served (per axis).
MAX_TAPS = 64                   # Largest filter size served (per axis).


@triton.jit
def _upfirdn2d_kernel(
    x_ptr, f_ptr, b_ptr, y_ptr,     # Input [P, IH, IW], filter [FH, FW] (float32), bias [C] or dummy, output [P, OH, OW].
    C, IH, IW, OH, OW,              # Channels (bias index = plane % C), input and output sizes.
    FH, FW, KH, KW,                 # Filter size; taps per output pixel along each axis (ceil(F / up)).
    PX0, PY0,                       # Leading padding of the upsampled image (negative crops).
    UPX: tl.constexpr, UPY: tl.constexpr, DOWNX: tl.constexpr, DOWNY: tl.constexpr,
    HAS_BIAS: tl.constexpr,         # Add b[c] to every real input pixel before resampling (filtered_lrelu's bias).
    ACC: tl.constexpr,              # Accumulator dtype.
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    tiles_x = (OW + BLOCK_W - 1) // BLOCK_W
    oy = (tile // tiles_x) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]         # [BLOCK_H, 1]
    ox = (tile % tiles_x) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]          # [1, BLOCK_W]
    out_mask = (oy < OH) & (ox < OW)

    # Position of tap 0 on the zero-inserted grid, and the first tap that lands on a real pixel. Triton's % keeps
    # the dividend's sign (as C does), hence the second modulo.
    jy = oy * DOWNY - PY0
    jx = ox * DOWNX - PX0
    ty0 = ((-jy) % UPY + UPY) % UPY
    tx0 = ((-jx) % UPX + UPX) % UPX

    x_plane = x_ptr + plane * IH * IW
    if HAS_BIAS:
        bias = tl.load(b_ptr + plane % C).to(ACC)
    acc = tl.zeros([BLOCK_H, BLOCK_W], dtype=ACC)
    for ky in range(KH):
        ty = ty0 + ky * UPY
        iy = (jy + ty) // UPY                   # Exact: jy + ty is a multiple of UPY.
        my = (ty < FH) & (iy >= 0) & (iy < IH)
        for kx in range(KW):
            tx = tx0 + kx * UPX
            ix = (jx + tx) // UPX
            m = my & (tx < FW) & (ix >= 0) & (ix < IW) & out_mask
            v = tl.load(x_plane + iy * IW + ix, mask=m, other=0.0).to(ACC)
            if HAS_BIAS:
                v = tl.where(m, v + bias, 0.0)
            w = tl.load(f_ptr + ty * FW + tx, mask=m, other=0.0).to(ACC)
            acc += v * w

    tl.store(y_ptr + plane * OH * OW + oy * OW + ox, acc.to(y_ptr.dtype.element_ty), mask=out_mask)

#----------------------------------------------------------------------------

def supports(x, f, up, down):
    """(supported, reason) for one call: the dtype, the factors and the filter size the kernel serves."""
    if x.dtype not in DTYPES:
        return False, f'dtype {x.dtype} (served: float16, float32, float64)'
    if max(up) > MAX_FACTOR or max(down) > MAX_FACTOR:
        return False, f'up {tuple(up)} / down {tuple(down)} above {MAX_FACTOR}'
    if f is not None and (f.dtype != torch.float32 or max(f.shape) > MAX_TAPS):
        return False, f'filter {f.dtype} {list(f.shape)} (served: float32, at most {MAX_TAPS} taps per axis)'
    return True, ''


def on_device(x):
    """Launch context: the tensor's own GPU current (Triton launches on the current device), nothing on CPU."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def acc_dtype(dtype):
    """Accumulator / intermediate dtype for inputs of `dtype`: float64 stays, everything else computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _blocks(oh, ow):
    """Tile shape: up to 16 x 32, shrunk (powers of two) for small outputs."""
    return min(16, triton.next_power_of_2(oh)), min(32, triton.next_power_of_2(ow))


def upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain, bias=None, out_dtype=None):
    """The C++ plugin's entry point on Triton (same arguments and meaning), plus filtered_lrelu's extras.

    Args:
        x:         [N, C, H, W] float16 / float32 / float64 tensor.
        f:         float32 2-D filter [fh, fw] (a separable filter comes as [1, fw] and [fh, 1] passes).
        upx, upy:  Upsampling factors.
        downx, downy: Downsampling factors.
        px0, px1, py0, py1: Padding of the upsampled image (negative = crop).
        flip:      False = convolution, True = correlation.
        gain:      Multiplies the filter taps.
        bias:      [C] added to x before resampling (zeros inserted or padded stay zero), or None.
        out_dtype: Output dtype; None = x's.

    Returns:
        [N, C, (H * upy + py0 + py1 - fh) // downy + 1, (W * upx + px0 + px1 - fw) // downx + 1].
    """
    assert isinstance(x, torch.Tensor) and x.ndim == 4 and x.dtype in DTYPES
    assert isinstance(f, torch.Tensor) and f.ndim == 2 and f.dtype == torch.float32
    n, c, ih, iw = x.shape
    fh, fw = f.shape
    assert iw * upx + px0 + px1 >= fw and ih * upy + py0 + py1 >= fh, 'upfirdn2d: output would be empty'
    oh = (ih * upy + py0 + py1 - fh) // downy + 1
    ow = (iw * upx + px0 + px1 - fw) // downx + 1
    acc = acc_dtype(x.dtype)
    y = torch.empty([n, c, oh, ow], dtype=(out_dtype or x.dtype), device=x.device)
    if y.numel() == 0:
        return y

    # Correlation taps with the gain folded in, in float32 as the reference's conv2d weight is.
    fk = (f * gain) if flip else (f * gain).flip([0, 1])
    fk = fk.to(device=x.device).contiguous()
    if bias is not None:
        misc.assert_shape(bias, [c])
    bh, bw = _blocks(oh, ow)
    grid = (n * c, triton.cdiv(oh, bh) * triton.cdiv(ow, bw))
    with on_device(x):
        _upfirdn2d_kernel[grid](
            x.contiguous(), fk, (bias.contiguous() if bias is not None else fk), y,
            c, ih, iw, oh, ow,
            fh, fw, triton.cdiv(fh, upy), triton.cdiv(fw, upx),
            px0, py0,
            UPX=upx, UPY=upy, DOWNX=downx, DOWNY=downy,
            HAS_BIAS=(bias is not None),
            ACC=(tl.float64 if acc == torch.float64 else tl.float32),
            BLOCK_H=bh, BLOCK_W=bw,
        )
    return y


def resample(x, f, up, down, padding, flip, gain, bias=None, out_dtype=None):
    """One upfirdn2d with a 2-D filter, or two passes (horizontal, vertical) with a separable one, sqrt(gain) each;
    the image between the passes keeps the accumulator dtype. up, down: (x, y); padding: (x0, x1, y0, y1)."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    if f.ndim == 2:
        return upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain, bias, out_dtype)
    g = gain ** 0.5
    t = upfirdn2d(x, f.unsqueeze(0), upx, 1, downx, 1, px0, px1, 0, 0, flip, g, bias, acc_dtype(x.dtype))
    return upfirdn2d(t, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, py0, py1, flip, g, None, out_dtype or x.dtype)

#----------------------------------------------------------------------------
