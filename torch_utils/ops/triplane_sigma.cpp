// Fused tri-plane decoding on the CPU: EG3D's bilinear plane taps, their mean and the OSG decoder's MLP in one pass.
//
// Definitions (training/volumetric_rendering/renderer.py, training/triplane.py):
//   planes [N, 3, H, W, C] channels last; plane 0 is read at (x, y), plane 1 at (x, z), plane 2 at (z, x) (u, v),
//   u picks the column and v the row. A point's plane coordinate is u' = u * scale (scale = 2 / box_warp) and
//   grid_sample's align_corners=False pixel position is ix = ((u' + 1) * W - 1) / 2, taps outside the plane are zero.
//   f = mean of the three planes' bilinear samples; pre = W1 f + b1; h = softplus(pre) (beta 1, threshold 20);
//   out = W2 h + b2 (every row of W2 given: 1 for sigma alone, 1 + colour features for everything).
// Nothing is stored between forward and backward: the backward pass recomputes f, pre and h per block of points.
// float32 at EG3D's sizes (C = 32, 64 hidden units) runs the register-blocked tiles of triplane_sigma_tiled.h both
// ways; other sizes and float64 the generic loops here. planes_transpose makes and undoes the channels-last copy.

#include <ATen/ATen.h>
#include <torch/library.h>
#include <ATen/Parallel.h>
#include "triplane_sigma_cpu.h"
#include "triplane_sigma_tiled.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#ifdef __AVX__
#include <immintrin.h>
#endif

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace {

using namespace triplane_cpu;

constexpr int64_t kBlock = 64;      // Points per block: their features and hidden units stay in L1.

// at::empty for the op's big outputs and buffers (planes and their gradients, tens of MiB each, new every call):
// on Linux the 2 MiB-aligned interior is marked for transparent huge pages, so that first touching it takes one page
// fault per 2 MiB instead of one per 4 KiB (those faults were a quarter of the backward's time). Advice only.
at::Tensor empty_planes(at::IntArrayRef sizes, const at::TensorOptions& opts) {
    auto t = at::empty(sizes, opts);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr uintptr_t kHuge = uintptr_t(1) << 21;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr()), end = begin + t.nbytes();
    const uintptr_t a = (begin + kHuge - 1) & ~(kHuge - 1), b = end & ~(kHuge - 1);
    if (b >= a + kHuge) madvise(reinterpret_cast<void*>(a), b - a, MADV_HUGEPAGE);
#endif
    return t;
}

// Features f [n, C] (mean of the planes), pre-activations pre [n, Hd] and hidden units h [n, Hd] of points [i0, i0+n).
template <typename T>
void block_forward(const Net<T>& net, int64_t i0, int64_t n, T* f, T* pre, T* h) {
    const int64_t C = net.C, Hd = net.Hd, plane_size = net.H * net.W * C;
    const T third = T(1) / T(3);
    for (int64_t p = 0; p < n; ++p) {
        const int64_t i = i0 + p, sample = i / net.M;
        const T* pt = net.points + i * 3;
        T* fp = f + p * C;
        std::fill(fp, fp + C, T(0));
        for (int plane = 0; plane < 3; ++plane) {
            const T* P = net.planes + (sample * 3 + plane) * plane_size;
            T u, v; plane_uv(plane, pt, u, v);
            Taps<T> t; find_taps(u, v, net.scale, net.H, net.W, C, t);
            for (int k = 0; k < 4; ++k) {
                if (t.off[k] < 0) continue;
                const T* src = P + t.off[k]; const T w = t.w[k];
                #pragma omp simd
                for (int64_t c = 0; c < C; ++c) fp[c] += w * src[c];
            }
        }
        #pragma omp simd
        for (int64_t c = 0; c < C; ++c) fp[c] *= third;
        T* q = pre + p * Hd;
        std::copy(net.b1, net.b1 + Hd, q);
        for (int64_t c = 0; c < C; ++c) {
            const T fc = fp[c]; const T* wr = net.w1t + c * Hd;
            #pragma omp simd
            for (int64_t j = 0; j < Hd; ++j) q[j] += fc * wr[j];
        }
        T* hp = h + p * Hd;
        #pragma omp simd simdlen(8)
        for (int64_t j = 0; j < Hd; ++j) hp[j] = softplus(q[j]);
    }
}

// Outputs o [O] of hidden units hp [Hd]: o = b2 + w2 hp.
template <typename T>
void outputs_generic(const Net<T>& net, const T* hp, T* o) {
    std::copy(net.b2, net.b2 + net.O, o);
    for (int64_t j = 0; j < net.Hd; ++j) {
        const T hj = hp[j]; const T* wr = net.w2t + j * net.Os;
        #pragma omp simd
        for (int64_t k = 0; k < net.O; ++k) o[k] += hj * wr[k];
    }
}

// Outputs out [n, O] of a tile's hidden units (float32, Hd = 64, Os = 8 OV), two points at a time in vector registers.
template <int OV>
void tile_outputs(const Net<float>& net, const Tile& t, int64_t n, float* out) {
    for (int64_t p = 0; p < n; p += 2) {
        v8f a0[OV], a1[OV];
        for (int ov = 0; ov < OV; ++ov) a0[ov] = a1[ov] = load8(net.b2 + 8 * ov);
        for (int64_t j = 0; j < kHd; ++j) {
            const float h0 = t.h[p * kHd + j], h1 = t.h[(p + 1) * kHd + j]; const float* wr = net.w2t + j * (OV * 8);
            for (int ov = 0; ov < OV; ++ov) { const v8f w = pin(load8(wr + 8 * ov)); a0[ov] += h0 * w; a1[ov] += h1 * w; }
        }
        float tmp[2][OV * 8];
        for (int ov = 0; ov < OV; ++ov) { store8(tmp[0] + 8 * ov, a0[ov]); store8(tmp[1] + 8 * ov, a1[ov]); }
        for (int64_t r = 0; r < std::min<int64_t>(2, n - p); ++r) std::copy(tmp[r], tmp[r] + net.O, out + (p + r) * net.O);
    }
}

// A tile's outputs with O = 1: one dot product per point.
inline void tile_sigma(const Net<float>& net, const Tile& t, int64_t n, float* out) {
    for (int64_t p = 0; p < n; ++p) {
        v8f a = load8(t.h + p * kHd) * load8(net.w2);
        for (int hv = 1; hv < kHV; ++hv) a += load8(t.h + p * kHd + 8 * hv) * load8(net.w2 + 8 * hv);
        float s = net.b2[0];
        for (int e = 0; e < 8; ++e) s += a[e];
        out[p] = s;
    }
}

// float32 at EG3D's sizes: kTile points at a time with the backward's register-blocked steps (triplane_sigma_tiled.h).
void forward_tiled(const Net<float>& net, int64_t total, float* out) {
    at::parallel_for(0, (total + kTile - 1) / kTile, 16, [&](int64_t b0, int64_t b1) {
        const FlushDenormals flush;
        Tile t;
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t i0 = b * kTile, n = std::min(kTile, total - i0);
            float* o = out + i0 * net.O;
            tile_features(net, i0, n, t);
            tile_hidden<false>(net, t);
            switch (net.O == 1 ? 0 : net.Os / 8) {     // EG3D's 33 outputs: 5.
                case 0: tile_sigma(net, t, n, o); break;
                case 1: tile_outputs<1>(net, t, n, o); break;
                case 2: tile_outputs<2>(net, t, n, o); break;
                case 3: tile_outputs<3>(net, t, n, o); break;
                case 4: tile_outputs<4>(net, t, n, o); break;
                case 5: tile_outputs<5>(net, t, n, o); break;
                default: for (int64_t p = 0; p < n; ++p) outputs_generic(net, t.h + p * kHd, o + p * net.O);
            }
        }
    });
}

template <typename T>
void forward_kernel(const Net<T>& net, int64_t total, T* out) {
    if constexpr (std::is_same<T, float>::value) {
        if (net.C == kC && net.Hd == kHd) return forward_tiled(net, total, out);
    }
    at::parallel_for(0, (total + kBlock - 1) / kBlock, 4, [&](int64_t b0, int64_t b1) {
        const FlushDenormals flush;
        std::vector<T> f(kBlock * net.C), pre(kBlock * net.Hd), h(kBlock * net.Hd);
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t i0 = b * kBlock, n = std::min(kBlock, total - i0);
            block_forward(net, i0, n, f.data(), pre.data(), h.data());
            for (int64_t p = 0; p < n; ++p) {
                const T* hp = h.data() + p * net.Hd;
                T* o = out + (i0 + p) * net.O;
                if (net.O == 1) {
                    T s = net.b2[0];
                    #pragma omp simd reduction(+:s)
                    for (int64_t j = 0; j < net.Hd; ++j) s += hp[j] * net.w2[j];
                    o[0] = s;
                    continue;
                }
                outputs_generic(net, hp, o);
            }
        }
    });
}

// Gradients of one lane's points [first, last): weights into its own buffers, planes into its own plane buffer.
template <typename T>
void backward_lane(const Net<T>& net, const T* gout, int64_t first, int64_t last, T* gplanes, T* gpoints,
        T* gw1, T* gb1, T* gw2, T* gb2) {
    const int64_t C = net.C, Hd = net.Hd, O = net.O, plane_size = net.H * net.W * C;
    std::vector<T> f(kBlock * C), pre(kBlock * Hd), h(kBlock * Hd), dpre(Hd), df(C);
    for (int64_t i0 = first; i0 < last; i0 += kBlock) {
        const int64_t n = std::min(kBlock, last - i0);
        block_forward(net, i0, n, f.data(), pre.data(), h.data());
        for (int64_t p = 0; p < n; ++p) {
            const int64_t i = i0 + p, sample = i / net.M;
            const T* g = gout + i * O; const T* hp = h.data() + p * Hd; const T* q = pre.data() + p * Hd;
            const T* fp = f.data() + p * C;
            // Second layer: dW2 += g h^T, db2 += g, dh = W2^T g (kept in dpre).
            std::fill(dpre.begin(), dpre.end(), T(0));
            for (int64_t k = 0; k < O; ++k) {
                const T gk = g[k]; if (gk == T(0)) continue;
                gb2[k] += gk;
                T* gwr = gw2 + k * Hd; const T* wr = net.w2 + k * Hd;
                #pragma omp simd
                for (int64_t j = 0; j < Hd; ++j) { gwr[j] += gk * hp[j]; dpre[j] += gk * wr[j]; }
            }
            #pragma omp simd
            for (int64_t j = 0; j < Hd; ++j) dpre[j] *= softplus_grad(q[j]);
            // First layer: dW1 += dpre f^T, db1 += dpre, df = W1^T dpre / 3 (the planes' mean).
            std::fill(df.begin(), df.end(), T(0));
            for (int64_t c = 0; c < C; ++c) {
                const T fc = fp[c]; T* gwr = gw1 + c * Hd; const T* wr = net.w1t + c * Hd;
                T s = 0;
                #pragma omp simd reduction(+:s)
                for (int64_t j = 0; j < Hd; ++j) { gwr[j] += dpre[j] * fc; s += dpre[j] * wr[j]; }
                df[c] = s / T(3);
            }
            #pragma omp simd
            for (int64_t j = 0; j < Hd; ++j) gb1[j] += dpre[j];
            // Planes and points.
            const T* pt = net.points + i * 3;
            T gp[3] = {0, 0, 0};
            for (int plane = 0; plane < 3; ++plane) {
                const int64_t base = (sample * 3 + plane) * plane_size;
                T u, v; plane_uv(plane, pt, u, v);
                Taps<T> t; find_taps(u, v, net.scale, net.H, net.W, C, t);
                T dfx = 0, dfy = 0;                 // d out / d(fx), d(fy) through this plane's taps.
                const T dwx[4] = {-(1 - t.fy), (1 - t.fy), -t.fy, t.fy};
                const T dwy[4] = {-(1 - t.fx), -t.fx, (1 - t.fx), t.fx};
                for (int k = 0; k < 4; ++k) {
                    if (t.off[k] < 0) continue;
                    const T w = t.w[k];
                    if (gplanes) {
                        T* dst = gplanes + base + t.off[k];
                        #pragma omp simd
                        for (int64_t c = 0; c < C; ++c) dst[c] += w * df[c];
                    }
                    if (gpoints) {
                        const T* src = net.planes + base + t.off[k];
                        T s = 0;
                        #pragma omp simd reduction(+:s)
                        for (int64_t c = 0; c < C; ++c) s += df[c] * src[c];
                        dfx += dwx[k] * s; dfy += dwy[k] * s;
                    }
                }
                if (gpoints) {                      // ix = ((u * scale + 1) * W - 1) / 2, likewise iy.
                    const T du = dfx * net.scale * net.W / 2, dv = dfy * net.scale * net.H / 2;
                    if (plane == 0) { gp[0] += du; gp[1] += dv; }
                    else if (plane == 1) { gp[0] += du; gp[2] += dv; }
                    else { gp[2] += du; gp[0] += dv; }
                }
            }
            if (gpoints) for (int a = 0; a < 3; ++a) gpoints[i * 3 + a] = gp[a];
        }
    }
}

void check_inputs(const at::Tensor& planes, const at::Tensor& points, const at::Tensor& w1,
        const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
    TORCH_CHECK(planes.device().is_cpu(), "triplane_sigma: CPU tensors only");
    TORCH_CHECK(planes.dim() == 5 && planes.size(1) == 3, "planes must be [N, 3, H, W, C]");
    TORCH_CHECK(points.dim() == 3 && points.size(0) == planes.size(0) && points.size(2) == 3, "points must be [N, M, 3]");
    TORCH_CHECK(w1.dim() == 2 && w1.size(1) == planes.size(4), "w1 must be [hidden, C]");
    TORCH_CHECK(b1.dim() == 1 && b1.size(0) == w1.size(0), "b1 must be [hidden]");
    TORCH_CHECK(w2.dim() == 2 && w2.size(1) == w1.size(0) && w2.size(0) >= 1, "w2 must be [outputs, hidden]");
    TORCH_CHECK(b2.dim() == 1 && b2.size(0) == w2.size(0), "b2 must be [outputs]");
    for (const auto* t : {&points, &w1, &b1, &w2, &b2})
        TORCH_CHECK(t->scalar_type() == planes.scalar_type() && t->device() == planes.device(), "dtypes and devices must match");
    TORCH_CHECK(planes.is_contiguous() && points.is_contiguous(), "planes and points must be contiguous");
}

// The decoder's weights as the kernels read them (inputs checked first): w1 as it is and transposed, w2 as it is and
// transposed [Hd, Os], b2 [Os], zero-padded to Os = O rounded up to 8.
struct Weights {
    at::Tensor w1, w1t, b1, w2, w2t, b2;

    Weights(const at::Tensor& planes, const at::Tensor& points, const at::Tensor& w1_, const at::Tensor& b1_,
            const at::Tensor& w2_, const at::Tensor& b2_) {
        check_inputs(planes, points, w1_, b1_, w2_, b2_);
        const int64_t O = w2_.size(0), Os = (O + 7) / 8 * 8;
        w1 = w1_.contiguous(); w1t = w1_.t().contiguous(); b1 = b1_.contiguous(); w2 = w2_.contiguous();
        w2t = at::zeros({w2_.size(1), Os}, w2_.options()); b2 = at::zeros({Os}, b2_.options());
        w2t.narrow(1, 0, O).copy_(w2_.t());
        b2.narrow(0, 0, O).copy_(b2_);
    }

    template <typename T>
    Net<T> net(const at::Tensor& planes, const at::Tensor& points, double scale) const {
        Net<T> n;
        n.planes = planes.data_ptr<T>(); n.points = points.data_ptr<T>();
        n.w1 = w1.data_ptr<T>(); n.w1t = w1t.data_ptr<T>();
        n.b1 = b1.data_ptr<T>(); n.w2 = w2.data_ptr<T>(); n.w2t = w2t.data_ptr<T>(); n.b2 = b2.data_ptr<T>();
        n.M = points.size(1); n.H = planes.size(2); n.W = planes.size(3); n.C = planes.size(4);
        n.Hd = w2.size(1); n.O = w2.size(0); n.Os = w2t.size(1); n.scale = (T)scale;
        return n;
    }
};

at::Tensor triplane_decode(at::Tensor planes, at::Tensor points, at::Tensor w1, at::Tensor b1,
        at::Tensor w2, at::Tensor b2, double scale) {
    const Weights weights(planes, points, w1, b1, w2, b2);
    auto out = at::empty({points.size(0), points.size(1), w2.size(0)}, planes.options());
    AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "triplane_decode", [&] {
        auto net = weights.net<scalar_t>(planes, points, scale);
        forward_kernel(net, points.size(0) * points.size(1), out.data_ptr<scalar_t>());
    });
    return out;
}

// One lane's backward: the register-blocked kernel where `tiled` (float32 only), else the generic one.
template <typename T>
void run_lane(const Net<T>& net, bool, const T* gout, int64_t first, int64_t last, T* gp, T* gpts, T* const* w) {
    backward_lane(net, gout, first, last, gp, gpts, w[0], w[1], w[2], w[3]);
}

template <>
void run_lane<float>(const Net<float>& net, bool tiled, const float* gout, int64_t first, int64_t last, float* gp,
        float* gpts, float* const* w) {
    if (tiled) backward_lane_tiled(net, gout, first, last, gp, gpts, w[0], w[1], w[2], w[3]);
    else backward_lane(net, gout, first, last, gp, gpts, w[0], w[1], w[2], w[3]);
}

// dst [numel] += the sum of `count` buffers src [count, numel], in parallel spans.
template <typename T>
void add_lanes(T* dst, const T* src, int64_t count, int64_t numel) {
    at::parallel_for(0, numel, 1 << 16, [&](int64_t e0, int64_t e1) {
        for (int64_t l = 0; l < count; ++l) {
            const T* s = src + l * numel;
            #pragma omp simd
            for (int64_t e = e0; e < e1; ++e) dst[e] += s[e];
        }
    });
}

// Returns {d planes (or empty), d points (or empty), d w1, d b1, d w2, d b2}. Each of `lanes` workers takes a
// contiguous run of points and owns its gradient buffers (no atomics). Plane gradients: lane 0 writes the result,
// every other lane a buffer of its own; each is zeroed by the thread that fills it, and the others are added into the
// result at the end. float32 at EG3D's sizes takes the register-blocked kernel (triplane_sigma_tiled.h).
std::vector<at::Tensor> triplane_decode_backward(at::Tensor grad_out, at::Tensor planes, at::Tensor points,
        at::Tensor w1, at::Tensor b1, at::Tensor w2, at::Tensor b2, double scale, bool want_planes,
        bool want_points, int64_t lanes) {
    const Weights weights(planes, points, w1, b1, w2, b2);
    grad_out = grad_out.contiguous();
    TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({points.size(0), points.size(1), w2.size(0)}), "grad_out shape");
    const int64_t total = points.size(0) * points.size(1), numel = planes.numel();
    lanes = std::max<int64_t>(1, std::min<int64_t>(lanes, (total + kBlock - 1) / kBlock));
    auto opts = planes.options();
    auto gplanes = want_planes ? empty_planes(planes.sizes(), opts) : at::Tensor();
    auto extra = want_planes && lanes > 1 ? empty_planes({lanes - 1, numel}, opts) : at::Tensor();
    auto gpoints = want_points ? at::zeros_like(points) : at::Tensor();
    auto gw1t = at::zeros({lanes, w1.size(1), w1.size(0)}, opts), gb1 = at::zeros({lanes, b1.size(0)}, opts);
    auto gw2 = at::zeros({lanes, w2.size(0), w2.size(1)}, opts), gb2 = at::zeros({lanes, b2.size(0)}, opts);
    const bool tiled = planes.scalar_type() == at::kFloat && planes.size(4) == kC && w1.size(0) == kHd;
    AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "triplane_decode_backward", [&] {
        auto net = weights.net<scalar_t>(planes, points, scale);
        const int64_t blocks = (total + kBlock - 1) / kBlock, per_lane = (blocks + lanes - 1) / lanes;
        at::parallel_for(0, lanes, 1, [&](int64_t l0, int64_t l1) {
            const FlushDenormals flush;
            for (int64_t l = l0; l < l1; ++l) {
                const int64_t first = std::min(total, l * per_lane * kBlock), last = std::min(total, (l + 1) * per_lane * kBlock);
                scalar_t* gp = !want_planes ? nullptr : l == 0 ? gplanes.data_ptr<scalar_t>() : extra[l - 1].data_ptr<scalar_t>();
                if (gp) std::fill(gp, gp + numel, scalar_t(0));
                scalar_t* gpts = want_points ? gpoints.data_ptr<scalar_t>() : nullptr;
                scalar_t* lane_w[4] = {gw1t[l].data_ptr<scalar_t>(), gb1[l].data_ptr<scalar_t>(), gw2[l].data_ptr<scalar_t>(),
                    gb2[l].data_ptr<scalar_t>()};
                run_lane(net, tiled, grad_out.data_ptr<scalar_t>(), first, last, gp, gpts, lane_w);
            }
        });
        if (extra.defined()) add_lanes(gplanes.data_ptr<scalar_t>(), extra.data_ptr<scalar_t>(), lanes - 1, numel);
    });
    return {gplanes, gpoints, gw1t.sum(0).t().contiguous(), gb1.sum(0), gw2.sum(0), gb2.sum(0)};
}

// dst[k * ldd + r] = src[r * lds + k] for an 8 x 8 block of floats, transposed in AVX registers.
#ifdef __AVX__
inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
    __m256 r[8], t[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * lds);
    for (int k = 0; k < 8; k += 2) { t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]); t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]); }
    for (int k = 0; k < 8; k += 4) {
        r[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44); r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44); r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(dst + k * ldd, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
        _mm256_storeu_ps(dst + (k + 4) * ldd, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
    }
}
#endif

// Texels [s0, s1) of one plane [C, S] (S = H W texels) into [S, C] (to_last) or back: 8 x 8 blocks in registers where
// float32 sizes allow (AVX), else element by element (the span stays in L1).
template <typename T>
void transpose_span(const T* in, T* out, int64_t C, int64_t S, int64_t s0, int64_t s1, bool to_last) {
#ifdef __AVX__
    if (std::is_same<T, float>::value && C % 8 == 0 && (s1 - s0) % 8 == 0) {
        const float* fi = reinterpret_cast<const float*>(in); float* fo = reinterpret_cast<float*>(out);
        for (int64_t c = 0; c < C; c += 8)
            for (int64_t s = s0; s < s1; s += 8) {
                if (to_last) transpose8x8(fi + c * S + s, S, fo + s * C + c, C);
                else transpose8x8(fi + s * C + c, C, fo + c * S + s, S);
            }
        return;
    }
#endif
    for (int64_t c = 0; c < C; ++c)
        for (int64_t s = s0; s < s1; ++s) {
            if (to_last) out[s * C + c] = in[c * S + s];
            else out[c * S + s] = in[s * C + c];
        }
}

// Planes [P, C, S] into [P, S, C] (to_last) or back, spans of 64 texels in parallel (torch's strided copy of the
// same permutation runs several times slower).
template <typename T>
void transpose_planes(const T* src, T* dst, int64_t P, int64_t C, int64_t S, bool to_last) {
    constexpr int64_t kSpan = 64;
    const int64_t spans = (S + kSpan - 1) / kSpan;
    at::parallel_for(0, P * spans, 16, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t p = b / spans, s0 = (b % spans) * kSpan, s1 = std::min(S, s0 + kSpan);
            transpose_span(src + p * C * S, dst + p * C * S, C, S, s0, s1, to_last);
        }
    });
}

// planes [N, 3, C, H, W] as [N, 3, H, W, C] (to_last), or [N, 3, H, W, C] as [N, 3, C, H, W].
at::Tensor planes_transpose(at::Tensor planes, bool to_last) {
    TORCH_CHECK(planes.device().is_cpu() && planes.dim() == 5, "planes must be a 5-d CPU tensor");
    planes = planes.contiguous();
    const int64_t N = planes.size(0), P = N * planes.size(1);
    const int64_t C = to_last ? planes.size(2) : planes.size(4), H = to_last ? planes.size(3) : planes.size(2);
    const int64_t W = to_last ? planes.size(4) : planes.size(3);
    auto out = to_last ? empty_planes({N, planes.size(1), H, W, C}, planes.options())
                       : empty_planes({N, planes.size(1), C, H, W}, planes.options());
    AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "planes_transpose", [&] {
        transpose_planes(planes.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), P, C, H * W, to_last);
    });
    return out;
}

} // namespace

// The operators of torch.ops.<TORCH_EXTENSION_NAME> (the indirection expands the name before TORCH_LIBRARY uses it).
#define REGISTER_OPERATORS(ns, m) TORCH_LIBRARY(ns, m)
REGISTER_OPERATORS(TORCH_EXTENSION_NAME, m) {
    m.def("triplane_decode", &triplane_decode);
    m.def("triplane_decode_backward", &triplane_decode_backward);
    m.def("planes_transpose", &planes_transpose);
}
