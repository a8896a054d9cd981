// Polyphase row kernel of upfirdn2d on CPU, shared by the upfirdn2d and filtered_lrelu plugins.
//
// Output pixel o along one axis reads the zero-inserted, padded input at u = o * down + k for taps k in [0, taps);
// u holds input pixel i exactly when u - pad0 == i * up, so only taps k = i * up + pad0 - o * down touch real
// pixels. `Taps` lists, per output index, the first such input index, its tap and how many follow (step: i + 1, k + up).

#pragma once
#include <ATen/ATen.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace upfirdn2d_cpu {

inline int64_t floor_div(int64_t a, int64_t b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }

struct Taps
{
    std::vector<int64_t> i0;    // First input index.
    std::vector<int64_t> k0;    // Its filter tap.
    std::vector<int64_t> cnt;   // Number of (input, tap) pairs.
    int64_t a = 0, b = 0;       // Interior [a, b): outputs whose taps all fall inside the input.
    int64_t up = 1, down = 1;
};

inline Taps make_taps(int64_t out_n, int64_t in_n, int64_t taps, int64_t up, int64_t down, int64_t pad0)
{
    Taps t;
    t.i0.resize(out_n); t.k0.resize(out_n); t.cnt.resize(out_n);
    t.up = up; t.down = down; t.a = out_n; t.b = out_n;
    for (int64_t o = 0; o < out_n; o++)
    {
        int64_t lo = -floor_div(-(o * down - pad0), up);                                    // ceil((o*down - pad0) / up)
        int64_t hi = floor_div(o * down + taps - 1 - pad0, up);
        if (lo >= 0 && hi <= in_n - 1 && hi >= lo)
        {
            t.a = std::min(t.a, o);
            t.b = o + 1;
        }
        lo = std::max<int64_t>(0, lo);
        hi = std::min<int64_t>(in_n - 1, hi);
        t.i0[o] = lo;
        t.k0[o] = lo * up + pad0 - o * down;
        t.cnt[o] = std::max<int64_t>(0, hi - lo + 1);
    }
    return t;
}

// Interior of one output row from one input row, tap by tap so that the loops over outputs vectorise. Without
// upsampling every interior output uses all taps; without downsampling the outputs of one phase (ox mod up) share
// theirs.
template <class T>
inline void interior(T* __restrict out, const T* __restrict xr, T bias, const T* __restrict fr, const Taps& tx)
{
    const int64_t fw = (tx.up == 1) ? tx.cnt[tx.a] : 0;
    if (tx.up == 1)
    {
        const int64_t d = tx.down, n = tx.b - tx.a;
        T* o = out + tx.a;
        for (int64_t k = 0; k < fw; k++)
        {
            const T fk = fr[k];
            const T* xs = xr + tx.i0[tx.a] + k;
            if (d == 1)
                for (int64_t m = 0; m < n; m++) o[m] += fk * (xs[m] + bias);
            else
                for (int64_t m = 0; m < n; m++) o[m] += fk * (xs[m * d] + bias);
        }
        return;
    }
    const int64_t up = tx.up;
    for (int64_t ph = 0; ph < std::min(up, tx.b - tx.a); ph++)
    {
        const int64_t o0 = tx.a + ph, n = (tx.b - o0 + up - 1) / up;
        T* o = out + o0;
        for (int64_t t = 0; t < tx.cnt[o0]; t++)
        {
            const T fk = fr[tx.k0[o0] + t * up];
            const T* xs = xr + tx.i0[o0] + t;
            for (int64_t m = 0; m < n; m++) o[m * up] += fk * (xs[m] + bias);
        }
    }
}

// out[ox] = sum over taps of (x[iy, ix] + bias) * fe[ky, kx] for output row `oy` of one plane.
// `fe` is the effective [fh, fw] filter (already flipped for convolution and scaled by the gain).
template <class T>
inline void row(T* out, const T* x, int64_t in_w, T bias, const T* fe, int64_t fw,
    const Taps& tx, const Taps& ty, int64_t oy, int64_t upx, int64_t upy)
{
    const int64_t out_w = (int64_t)tx.cnt.size();
    std::fill(out, out + out_w, (T)0);
    for (int64_t r = 0; r < ty.cnt[oy]; r++)
    {
        const T* xr = x + (ty.i0[oy] + r) * in_w;
        const T* fr = fe + (ty.k0[oy] + r * upy) * fw;
        const bool fast = (tx.b > tx.a) && (tx.up == 1 || tx.down == 1);
        for (int64_t ox = 0; ox < out_w; ox++)
        {
            if (fast && ox == tx.a)
                ox = tx.b;                                      // The interior is done below.
            if (ox >= out_w)
                break;
            const T* xp = xr + tx.i0[ox];
            const T* fp = fr + tx.k0[ox];
            const int64_t n = tx.cnt[ox];
            T acc = 0;
            if (upx == 1)
                for (int64_t j = 0; j < n; j++) acc += (xp[j] + bias) * fp[j];
            else
                for (int64_t j = 0; j < n; j++) acc += (xp[j] + bias) * fp[j * upx];
            out[ox] += acc;
        }
        if (fast)
            interior(out, xr, bias, fr, tx);
    }
}

// Effective filter in the dtype of the data: 2-D (a 1-D filter becomes its outer product), flipped unless `flip`
// (correlation) was asked for, times `gain`. As in the reference, the gain is applied to the float32 taps before the
// cast (a 1-D filter takes sqrt(gain) per axis), so both paths filter with identical taps.
inline at::Tensor effective_filter(const at::Tensor& f, at::ScalarType dtype, bool flip, double gain)
{
    TORCH_CHECK(f.dim() == 1 || f.dim() == 2, "filter must be 1-D or 2-D");
    TORCH_CHECK(f.numel() > 0, "filter must not be empty");
    at::Tensor fe = (f * (f.dim() == 1 ? std::sqrt(gain) : gain)).to(dtype);
    if (fe.dim() == 1)
        fe = at::outer(fe, fe);
    if (!flip)
        fe = fe.flip({0, 1});
    return fe.contiguous();
}

} // namespace upfirdn2d_cpu
