"""Triton kernels of the fused tri-plane decode (torch_utils/ops/triplane_sigma.py): forward and backward."""

import torch
import triton
import triton.language as tl

from ... import misc

#----------------------------------------------------------------------------
# The math is triplane_sigma.cpp's: planes [N, 3, H, W, C] channels last, plane 0 read at (x, y), 1 at (x, z), 2 at
# (z, x) of the points scaled by `scale` (2 / box_warp); grid_sample's align_corners=False position
# ix = ((u * scale + 1) * W - 1) / 2 and zero padding; f = mean of the three bilinear samples; out = W2 softplus(W1 f
# + b1) + b2. One program decodes BLOCK points: the taps are gathered as [BLOCK, C] tiles and both layers are tl.dot
# over tiles padded to 16 (tl.dot's least size). The backward pass recomputes f and the hidden units; each program
# walks a strided set of blocks and keeps its weight gradients in registers (one partial per program, summed after),
# so only the plane gradients use atomic adds. Softplus' derivative is a sigmoid written with exp(-|x|) alone: hidden
# units saturated either way (|pre| in the hundreds) give 0 or 1, never inf / inf.

# Launch settings, timed on an H100 (2^20 random points on 256^2 planes of 32 features, 64 hidden units; see
# docs/guides/benchmarks.md): the forward is fastest at 64 points a block (0.95 ms for sigma, 2.1 ms for all 33 outputs);
# the backward at 16 (5.8 / 6.9 ms; for sigma 31 ms at 32 and 29 ms at 64, a cliff not yet explained), with software
# pipelining off: Triton's default of 3 stages buffers the loop's tl.dot operands three deep, 290 KB of shared memory
# at these sizes, and an H100 allows 227 KB a block.
BLOCK = 64                      # Points per forward block.
BWD_BLOCK = 16                  # Points per backward block (tl.dot's least size).
BWD_STAGES = 1                  # The backward loop's pipelining stages.
PROGRAMS_PER_SM = 4             # Backward programs per streaming multiprocessor (each loops over blocks).


def _pad(n):
    return max(16, triton.next_power_of_2(int(n)))


@triton.jit
def _taps(pts, plane: tl.constexpr, scale, H, W):
    """Texel column x0, row y0 and fractions fx, fy of points pts [BLOCK, 3] on one plane; non-finite points and
    points far outside land on texels that are all outside (x0, y0 clamped to [-2, W] / [-2, H], NaN to -2)."""
    px = tl.sum(tl.where(tl.arange(0, 4)[None, :] == 0, pts, 0.0), 1)
    py = tl.sum(tl.where(tl.arange(0, 4)[None, :] == 1, pts, 0.0), 1)
    pz = tl.sum(tl.where(tl.arange(0, 4)[None, :] == 2, pts, 0.0), 1)
    if plane == 0:
        u, v = px, py
    elif plane == 1:
        u, v = px, pz
    else:
        u, v = pz, px
    ix = ((u * scale + 1) * W - 1) * 0.5
    iy = ((v * scale + 1) * H - 1) * 0.5
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    fx = ix - x0f
    fy = iy - y0f
    x0f = tl.where(x0f >= -2, x0f, -2.0)                    # NaN compares false: -2.
    y0f = tl.where(y0f >= -2, y0f, -2.0)
    x0 = tl.where(x0f <= W, x0f, W).to(tl.int32)
    y0 = tl.where(y0f <= H, y0f, H).to(tl.int32)
    return x0, y0, fx, fy


@triton.jit
def _tap(base, x0, y0, fx, fy, k: tl.constexpr, rmask, cols, H, W, C):
    """Texel k (0: x0 y0, 1: x1 y0, 2: x0 y1, 3: x1 y1) of each point: offsets [BLOCK, CP], mask [BLOCK, CP],
    bilinear weight [BLOCK] (0 where outside) and the weight's derivatives by fx and fy."""
    x = x0 + (k % 2)
    y = y0 + (k // 2)
    inside = rmask & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    wx = fx if k % 2 == 1 else 1 - fx
    wy = fy if k // 2 == 1 else 1 - fy
    dwx = (1.0 if k % 2 == 1 else -1.0) * wy
    dwy = (1.0 if k // 2 == 1 else -1.0) * wx
    offs = base[:, None] + ((y * W + x) * C)[:, None] + cols[None, :]
    mask = inside[:, None] & (cols < C)[None, :]
    return offs, mask, tl.where(inside, wx * wy, 0.0), tl.where(inside, dwx, 0.0), tl.where(inside, dwy, 0.0)


@triton.jit
def _features(planes_ptr, pts, rows, rmask, M, H, W, C, scale, CP: tl.constexpr, BLOCK_: tl.constexpr):
    """Mean [BLOCK, CP] of the three planes' bilinear samples at points pts [BLOCK, 3] (rows' samples rows // M)."""
    cols = tl.arange(0, CP)
    f = tl.zeros([BLOCK_, CP], dtype=pts.dtype)
    for plane in tl.static_range(3):
        base = ((rows // M) * 3 + plane) * H * W * C
        x0, y0, fx, fy = _taps(pts, plane, scale, H, W)
        for k in tl.static_range(4):
            offs, mask, w, _, _ = _tap(base, x0, y0, fx, fy, k, rmask, cols, H, W, C)
            f += w[:, None] * tl.load(planes_ptr + offs, mask=mask, other=0.0)
    return f / 3.0


@triton.jit
def _hidden(f, w1_ptr, b1_ptr, C, HD, CP: tl.constexpr, HP: tl.constexpr):
    """Pre-activations and hidden units [BLOCK, HP] of features f, and W1 as an [HP, CP] tile."""
    hr = tl.arange(0, HP)
    cols = tl.arange(0, CP)
    w1 = tl.load(w1_ptr + hr[:, None] * C + cols[None, :], mask=(hr < HD)[:, None] & (cols < C)[None, :], other=0.0)
    b1 = tl.load(b1_ptr + hr, mask=hr < HD, other=0.0)
    pre = tl.dot(f, tl.trans(w1), input_precision='ieee', out_dtype=f.dtype) + b1[None, :]
    h = tl.maximum(pre, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(pre)))
    return pre, h, w1


@triton.jit
def _decode_fwd(planes_ptr, points_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr, scale_ptr, total, M, H, W, C, HD, O,
        BLOCK_: tl.constexpr, CP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr):
    scale = tl.load(scale_ptr)                              # A tensor: float64 planes get a float64 scale.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ + tl.arange(0, BLOCK_)
    rmask = rows < total
    three = tl.arange(0, 4)
    pts = tl.load(points_ptr + rows[:, None] * 3 + three[None, :], mask=rmask[:, None] & (three < 3)[None, :], other=0.0)
    f = _features(planes_ptr, pts, rows, rmask, M, H, W, C, scale, CP, BLOCK_)
    _, h, _ = _hidden(f, w1_ptr, b1_ptr, C, HD, CP, HP)
    orow = tl.arange(0, OP)
    hr = tl.arange(0, HP)
    w2 = tl.load(w2_ptr + orow[:, None] * HD + hr[None, :], mask=(orow < O)[:, None] & (hr < HD)[None, :], other=0.0)
    b2 = tl.load(b2_ptr + orow, mask=orow < O, other=0.0)
    out = tl.dot(h, tl.trans(w2), input_precision='ieee', out_dtype=h.dtype) + b2[None, :]
    tl.store(out_ptr + rows[:, None] * O + orow[None, :], out, mask=rmask[:, None] & (orow < O)[None, :])


@triton.jit
def _decode_bwd(gout_ptr, planes_ptr, points_ptr, w1_ptr, b1_ptr, w2_ptr, gplanes_ptr, gpoints_ptr, gw1_ptr, gb1_ptr,
        gw2_ptr, gb2_ptr, scale_ptr, total, blocks, M, H, W, C, HD, O, WANT_PLANES: tl.constexpr,
        WANT_POINTS: tl.constexpr, BLOCK_: tl.constexpr, CP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr):
    pid = tl.program_id(0)
    scale = tl.load(scale_ptr)
    three = tl.arange(0, 4)
    cols = tl.arange(0, CP)
    hr = tl.arange(0, HP)
    orow = tl.arange(0, OP)
    w2 = tl.load(w2_ptr + orow[:, None] * HD + hr[None, :], mask=(orow < O)[:, None] & (hr < HD)[None, :], other=0.0)
    dt = w2.dtype
    acc_w1 = tl.zeros([HP, CP], dtype=dt)
    acc_b1 = tl.zeros([HP], dtype=dt)
    acc_w2 = tl.zeros([OP, HP], dtype=dt)
    acc_b2 = tl.zeros([OP], dtype=dt)
    for blk in range(pid, blocks, tl.num_programs(0)):
        rows = (tl.zeros([BLOCK_], dtype=tl.int64) + blk) * BLOCK_ + tl.arange(0, BLOCK_)    # int64 rows.
        rmask = rows < total
        pts = tl.load(points_ptr + rows[:, None] * 3 + three[None, :], mask=rmask[:, None] & (three < 3)[None, :],
            other=0.0)
        f = _features(planes_ptr, pts, rows, rmask, M, H, W, C, scale, CP, BLOCK_)
        pre, h, w1 = _hidden(f, w1_ptr, b1_ptr, C, HD, CP, HP)
        g = tl.load(gout_ptr + rows[:, None] * O + orow[None, :], mask=rmask[:, None] & (orow < O)[None, :], other=0.0)
        # Second layer: dW2 += g^T h, db2 += sum g, dh = g W2; softplus' = sigmoid(pre) through exp(-|pre|).
        acc_b2 += tl.sum(g, 0)
        acc_w2 += tl.dot(tl.trans(g), h, input_precision='ieee', out_dtype=dt)
        e = tl.exp(-tl.abs(pre))
        dpre = tl.dot(g, w2, input_precision='ieee', out_dtype=dt) * tl.where(pre >= 0, 1.0, e) / (1.0 + e)
        # First layer: dW1 += dpre^T f, db1 += sum dpre, df = dpre W1 / 3 (the planes' mean).
        acc_b1 += tl.sum(dpre, 0)
        acc_w1 += tl.dot(tl.trans(dpre), f, input_precision='ieee', out_dtype=dt)
        df = tl.dot(dpre, w1, input_precision='ieee', out_dtype=dt) / 3.0
        if WANT_PLANES or WANT_POINTS:
            gx = tl.zeros([BLOCK_], dtype=dt)
            gy = tl.zeros([BLOCK_], dtype=dt)
            gz = tl.zeros([BLOCK_], dtype=dt)
            for plane in tl.static_range(3):
                base = ((rows // M) * 3 + plane) * H * W * C
                x0, y0, fx, fy = _taps(pts, plane, scale, H, W)
                dfx = tl.zeros([BLOCK_], dtype=dt)
                dfy = tl.zeros([BLOCK_], dtype=dt)
                for k in tl.static_range(4):
                    offs, mask, w, dwx, dwy = _tap(base, x0, y0, fx, fy, k, rmask, cols, H, W, C)
                    if WANT_PLANES:
                        tl.atomic_add(gplanes_ptr + offs, w[:, None] * df, mask=mask)
                    if WANT_POINTS:
                        s = tl.sum(df * tl.load(planes_ptr + offs, mask=mask, other=0.0), 1)
                        dfx += dwx * s
                        dfy += dwy * s
                if WANT_POINTS:                     # d ix / d u = scale W / 2, likewise v.
                    du = dfx * scale * W * 0.5
                    dv = dfy * scale * H * 0.5
                    if plane == 0:
                        gx += du
                        gy += dv
                    elif plane == 1:
                        gx += du
                        gz += dv
                    else:
                        gz += du
                        gx += dv
            if WANT_POINTS:
                gp = tl.where(three[None, :] == 0, gx[:, None], tl.where(three[None, :] == 1, gy[:, None], gz[:, None]))
                tl.store(gpoints_ptr + rows[:, None] * 3 + three[None, :], gp, mask=rmask[:, None] & (three < 3)[None, :])
    tl.store(gw1_ptr + pid * HP * CP + hr[:, None] * CP + cols[None, :], acc_w1)
    tl.store(gb1_ptr + pid * HP + hr, acc_b1)
    tl.store(gw2_ptr + pid * OP * HP + orow[:, None] * HP + hr[None, :], acc_w2)
    tl.store(gb2_ptr + pid * OP + orow, acc_b2)

#----------------------------------------------------------------------------

def _sizes(planes, w1, w2):
    _, _, H, W, C = planes.shape
    return H, W, C, w1.shape[0], w2.shape[0], _pad(C), _pad(w1.shape[0]), _pad(w2.shape[0])


def _programs(device, blocks):
    """Backward programs: a few per multiprocessor on a GPU, 4 under the interpreter (CPU tensors)."""
    if device.type == 'cuda':
        return max(1, min(blocks, PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count))
    return max(1, min(blocks, 4))


def decode(planes, points, w1, b1, w2, b2, scale):
    """Decoder outputs [N, M, O] (differentiable once): the arguments of triplane_sigma.decode, all of one dtype
    (float32 or float64) and device, planes [N, 3, H, W, C] and points [N, M, 3] contiguous; scale = 2 / box_warp."""
    N = planes.shape[0]
    misc.assert_shape(planes, [N, 3, None, None, None])
    misc.assert_shape(points, [N, None, 3])
    misc.assert_shape(w1, [None, planes.shape[4]])
    misc.assert_shape(b1, [w1.shape[0]])
    misc.assert_shape(w2, [None, w1.shape[0]])
    misc.assert_shape(b2, [w2.shape[0]])
    return _Decode.apply(planes, points, w1.contiguous(), b1.contiguous(), w2.contiguous(), b2.contiguous(), float(scale))


class _Decode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes, points, w1, b1, w2, b2, scale): # pylint: disable=arguments-differ
        H, W, C, HD, O, CP, HP, OP = _sizes(planes, w1, w2)
        N, M = points.shape[:2]
        ctx.scale = torch.tensor([scale], dtype=planes.dtype).to(planes.device)
        out = torch.empty([N, M, O], dtype=planes.dtype, device=planes.device)
        total = N * M
        if total > 0:
            _decode_fwd[(triton.cdiv(total, BLOCK),)](planes, points, w1, b1, w2, b2, out, ctx.scale, total, M, H, W, C,
                HD, O, BLOCK_=BLOCK, CP=CP, HP=HP, OP=OP)
        ctx.save_for_backward(planes, points, w1, b1, w2)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad): # pylint: disable=arguments-differ
        planes, points, w1, b1, w2 = ctx.saved_tensors
        H, W, C, HD, O, CP, HP, OP = _sizes(planes, w1, w2)
        N, M = points.shape[:2]
        total, need = N * M, ctx.needs_input_grad
        blocks = triton.cdiv(total, BWD_BLOCK)
        programs = _programs(planes.device, blocks)
        new = lambda *shape: torch.zeros(shape, dtype=planes.dtype, device=planes.device)
        gplanes = new(*planes.shape) if need[0] else planes.new_empty([0])
        gpoints = new(*points.shape) if need[1] else points.new_empty([0])
        gw1, gb1, gw2, gb2 = new(programs, HP, CP), new(programs, HP), new(programs, OP, HP), new(programs, OP)
        if total > 0:
            _decode_bwd[(programs,)](grad.to(planes.dtype).contiguous(), planes, points, w1, b1, w2, gplanes, gpoints,
                gw1, gb1, gw2, gb2, ctx.scale, total, blocks, M, H, W, C, HD, O, WANT_PLANES=bool(need[0]),
                WANT_POINTS=bool(need[1]), BLOCK_=BWD_BLOCK, CP=CP, HP=HP, OP=OP, num_stages=BWD_STAGES)
        grads = (gplanes, gpoints, gw1.sum(0)[:HD, :C], gb1.sum(0)[:HD], gw2.sum(0)[:O, :HD], gb2.sum(0)[:O])
        return tuple(g if n else None for g, n in zip(grads, need[:6])) + (None,)

#----------------------------------------------------------------------------
