// Polyphase row kernel of upfirdn2d on CPU, shared by the upfirdn2d and filtered_lrelu plugins.
//
// Output pixel o along one axis reads the zero-inserted, padded input at u = o * down + k for taps k in [0, taps);
// u holds input pixel i exactly when u - pad0 == i * up, so only taps k = i * up + pad0 - o * down touch real
// pixels. `Taps` lists, per output index, the first such input index, its tap and how many follow (step: i + 1, k + up).

#pragma once
#include <torch/extension.h>
#include <algorithm>
#include <vector>

namespace upfirdn2d_cpu {

inline int64_t floor_div(int64_t a, int64_t b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }

struct Taps
{
    std::vector<int64_t> i0;    // First input index.
    std::vector<int64_t> k0;    // Its filter tap.
    std::vector<int64_t> cnt;   // Number of (input, tap) pairs.
};

inline Taps make_taps(int64_t out_n, int64_t in_n, int64_t taps, int64_t up, int64_t down, int64_t pad0)
{
    Taps t;
    t.i0.resize(out_n); t.k0.resize(out_n); t.cnt.resize(out_n);
    for (int64_t o = 0; o < out_n; o++)
    {
        int64_t lo = std::max<int64_t>(0, -floor_div(-(o * down - pad0), up));            // ceil((o*down - pad0) / up)
        int64_t hi = std::min<int64_t>(in_n - 1, floor_div(o * down + taps - 1 - pad0, up));
        t.i0[o] = lo;
        t.k0[o] = lo * up + pad0 - o * down;
        t.cnt[o] = std::max<int64_t>(0, hi - lo + 1);
    }
    return t;
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
        for (int64_t ox = 0; ox < out_w; ox++)
        {
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
    }
}

// Effective filter in the dtype of the data: 2-D (a 1-D filter becomes its outer product), flipped unless `flip`
// (correlation) was asked for, times `gain`.
inline torch::Tensor effective_filter(const torch::Tensor& f, torch::ScalarType dtype, bool flip, double gain)
{
    TORCH_CHECK(f.dim() == 1 || f.dim() == 2, "filter must be 1-D or 2-D");
    TORCH_CHECK(f.numel() > 0, "filter must not be empty");
    torch::Tensor fe = f.to(dtype);
    if (fe.dim() == 1)
        fe = torch::outer(fe, fe);
    if (!flip)
        fe = fe.flip({0, 1});
    return (fe * gain).contiguous();
}

} // namespace upfirdn2d_cpu
