// Fused tri-plane decoding on the CPU: EG3D's bilinear plane taps, their mean and the OSG decoder's MLP in one pass.
//
// Definitions (training/volumetric_rendering/renderer.py, training/triplane.py):
//   planes [N, 3, H, W, C] channels last; plane 0 is read at (x, y), plane 1 at (x, z), plane 2 at (z, x) (u, v),
//   u picks the column and v the row. A point's plane coordinate is u' = u * scale (scale = 2 / box_warp) and
//   grid_sample's align_corners=False pixel position is ix = ((u' + 1) * W - 1) / 2, taps outside the plane are zero.
//   f = mean of the three planes' bilinear samples; pre = W1 f + b1; h = softplus(pre) (beta 1, threshold 20);
//   out = W2 h + b2 (every row of W2 given: 1 for sigma alone, 1 + colour features for everything).
// Nothing is stored between forward and backward: the backward pass recomputes f, pre and h per block of points.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;      // Points per block: their features and hidden units stay in L1.

template <typename T>
struct Taps {                       // Where one point meets one plane.
    int64_t off[4];                 // Offsets of the four texels (in elements), -1 where outside the plane.
    T w[4];                         // Bilinear weights: (x0, y0), (x1, y0), (x0, y1), (x1, y1).
    T fx, fy;                       // Fractional position inside the texel square.
};

template <typename T>
inline void plane_uv(int plane, const T* p, T& u, T& v) {
    if (plane == 0) { u = p[0]; v = p[1]; }
    else if (plane == 1) { u = p[0]; v = p[2]; }
    else { u = p[2]; v = p[0]; }
}

template <typename T>
inline void find_taps(T u, T v, T scale, int64_t H, int64_t W, int64_t C, Taps<T>& t) {
    T ix = ((u * scale + 1) * W - 1) / 2;
    T iy = ((v * scale + 1) * H - 1) / 2;
    T x0f = std::floor(ix), y0f = std::floor(iy);
    t.fx = ix - x0f; t.fy = iy - y0f;
    // Clamped before the conversion: points far outside (even non-finite ones) give texels that are all outside.
    int64_t x0 = (int64_t)std::min(std::max(x0f, T(-2)), T(W)), y0 = (int64_t)std::min(std::max(y0f, T(-2)), T(H));
    t.w[0] = (1 - t.fx) * (1 - t.fy); t.w[1] = t.fx * (1 - t.fy);
    t.w[2] = (1 - t.fx) * t.fy;       t.w[3] = t.fx * t.fy;
    for (int k = 0; k < 4; ++k) {
        int64_t x = x0 + (k & 1), y = y0 + (k >> 1);
        t.off[k] = (x >= 0 && x < W && y >= 0 && y < H) ? (y * W + x) * C : -1;
    }
}

template <typename T>                  // max(x, 0) + log(1 + exp(-|x|)): no overflow; log1p would be slow.
inline T softplus(T x) { return std::max(x, T(0)) + std::log(T(1) + std::exp(-std::abs(x))); }

// sigmoid(x) through exp(-|x|) only: exp of a large argument is inf, and -ffast-math's reciprocal of 1 + inf is NaN.
template <typename T>
inline T softplus_grad(T x) {
    const T e = std::exp(-std::abs(x));
    return (x >= T(0) ? T(1) : e) / (T(1) + e);
}

// The network's constants for one call.
template <typename T>
struct Net {
    const T* planes; const T* points; const T* w1t; const T* b1; const T* w2; const T* w2t; const T* b2;
    int64_t M, H, W, C, Hd, O, Os; T scale;     // Os: row stride of w2t and length of b2, O rounded up to 8.
};

// Features f [n, C] (mean of the planes), pre-activations pre [n, Hd] and hidden units h [n, Hd] of points [i0, i0+n).
template <typename T>
void block_forward_generic(const Net<T>& net, int64_t i0, int64_t n, T* f, T* pre, T* h) {
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

// The same for float32 with C = 8 CV features and Hd = 8 HV hidden units (EG3D's 32 and 64): the features and the
// hidden units of a point are accumulated in vector registers (GCC vector extensions: AVX with -march=native).
typedef float v8f __attribute__((vector_size(32), aligned(4)));
inline v8f load8(const float* p) { return *reinterpret_cast<const v8f*>(p); }
inline void store8(float* p, v8f v) { *reinterpret_cast<v8f*>(p) = v; }

template <int CV, int HV>
void block_forward_fast(const Net<float>& net, int64_t i0, int64_t n, float* f, float* pre, float* h) {
    constexpr int64_t C = CV * 8, Hd = HV * 8;
    const int64_t plane_size = net.H * net.W * C;
    for (int64_t p = 0; p < n; ++p) {
        const int64_t i = i0 + p, sample = i / net.M;
        const float* pt = net.points + i * 3;
        v8f fa[CV] = {};
        for (int plane = 0; plane < 3; ++plane) {
            const float* P = net.planes + (sample * 3 + plane) * plane_size;
            float u, v; plane_uv(plane, pt, u, v);
            Taps<float> t; find_taps(u, v, net.scale, net.H, net.W, C, t);
            for (int k = 0; k < 4; ++k) {
                if (t.off[k] < 0) continue;
                const float* src = P + t.off[k]; const float w = t.w[k];
                for (int cv = 0; cv < CV; ++cv) fa[cv] += w * load8(src + 8 * cv);
            }
        }
        float* fp = f + p * C;
        for (int cv = 0; cv < CV; ++cv) store8(fp + 8 * cv, fa[cv] * (1.0f / 3.0f));
        v8f acc[HV];
        for (int hv = 0; hv < HV; ++hv) acc[hv] = load8(net.b1 + 8 * hv);
        for (int64_t c = 0; c < C; ++c) {
            const float fc = fp[c]; const float* wr = net.w1t + c * Hd;
            for (int hv = 0; hv < HV; ++hv) acc[hv] += fc * load8(wr + 8 * hv);
        }
        float* q = pre + p * Hd;
        for (int hv = 0; hv < HV; ++hv) store8(q + 8 * hv, acc[hv]);
        float* hp = h + p * Hd;
        #pragma omp simd simdlen(8)
        for (int64_t j = 0; j < Hd; ++j) hp[j] = softplus(q[j]);
    }
}

template <typename T>
void block_forward(const Net<T>& net, int64_t i0, int64_t n, T* f, T* pre, T* h) {
    block_forward_generic(net, i0, n, f, pre, h);
}

template <>
void block_forward<float>(const Net<float>& net, int64_t i0, int64_t n, float* f, float* pre, float* h) {
    if (net.C == 32 && net.Hd == 64) block_forward_fast<4, 8>(net, i0, n, f, pre, h);
    else block_forward_generic(net, i0, n, f, pre, h);
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

// The same for float32 with Hd = 8 HV and Os = 8 OV, the outputs accumulated in vector registers.
template <int HV, int OV>
void outputs_fast(const Net<float>& net, const float* hp, float* o) {
    v8f acc[OV];
    for (int ov = 0; ov < OV; ++ov) acc[ov] = load8(net.b2 + 8 * ov);
    for (int64_t j = 0; j < HV * 8; ++j) {
        const float hj = hp[j]; const float* wr = net.w2t + j * (OV * 8);
        for (int ov = 0; ov < OV; ++ov) acc[ov] += hj * load8(wr + 8 * ov);
    }
    float tmp[OV * 8];
    for (int ov = 0; ov < OV; ++ov) store8(tmp + 8 * ov, acc[ov]);
    std::copy(tmp, tmp + net.O, o);
}

template <typename T>
void outputs(const Net<T>& net, const T* hp, T* o) { outputs_generic(net, hp, o); }

template <>
void outputs<float>(const Net<float>& net, const float* hp, float* o) {
    if (net.Hd != 64) return outputs_generic(net, hp, o);
    switch (net.Os / 8) {       // EG3D's 33 outputs: 5.
        case 1: return outputs_fast<8, 1>(net, hp, o);
        case 2: return outputs_fast<8, 2>(net, hp, o);
        case 3: return outputs_fast<8, 3>(net, hp, o);
        case 4: return outputs_fast<8, 4>(net, hp, o);
        case 5: return outputs_fast<8, 5>(net, hp, o);
        default: return outputs_generic(net, hp, o);
    }
}

template <typename T>
void forward_kernel(const Net<T>& net, int64_t total, T* out) {
    at::parallel_for(0, (total + kBlock - 1) / kBlock, 4, [&](int64_t b0, int64_t b1) {
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
                outputs(net, hp, o);
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

void check_inputs(const torch::Tensor& planes, const torch::Tensor& points, const torch::Tensor& w1,
        const torch::Tensor& b1, const torch::Tensor& w2, const torch::Tensor& b2) {
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

// The decoder's weights as the kernels read them (inputs checked first): w1 transposed, w2 as it is and transposed
// [Hd, Os], b2 [Os], zero-padded to Os = O rounded up to 8.
struct Weights {
    torch::Tensor w1t, b1, w2, w2t, b2;

    Weights(const torch::Tensor& planes, const torch::Tensor& points, const torch::Tensor& w1, const torch::Tensor& b1_,
            const torch::Tensor& w2_, const torch::Tensor& b2_) {
        check_inputs(planes, points, w1, b1_, w2_, b2_);
        const int64_t O = w2_.size(0), Os = (O + 7) / 8 * 8;
        w1t = w1.t().contiguous(); b1 = b1_.contiguous(); w2 = w2_.contiguous();
        w2t = torch::zeros({w2_.size(1), Os}, w2_.options()); b2 = torch::zeros({Os}, b2_.options());
        w2t.narrow(1, 0, O).copy_(w2_.t());
        b2.narrow(0, 0, O).copy_(b2_);
    }

    template <typename T>
    Net<T> net(const torch::Tensor& planes, const torch::Tensor& points, double scale) const {
        Net<T> n;
        n.planes = planes.data_ptr<T>(); n.points = points.data_ptr<T>(); n.w1t = w1t.data_ptr<T>();
        n.b1 = b1.data_ptr<T>(); n.w2 = w2.data_ptr<T>(); n.w2t = w2t.data_ptr<T>(); n.b2 = b2.data_ptr<T>();
        n.M = points.size(1); n.H = planes.size(2); n.W = planes.size(3); n.C = planes.size(4);
        n.Hd = w2.size(1); n.O = w2.size(0); n.Os = w2t.size(1); n.scale = (T)scale;
        return n;
    }
};

torch::Tensor triplane_decode(torch::Tensor planes, torch::Tensor points, torch::Tensor w1, torch::Tensor b1,
        torch::Tensor w2, torch::Tensor b2, double scale) {
    const Weights weights(planes, points, w1, b1, w2, b2);
    auto out = torch::empty({points.size(0), points.size(1), w2.size(0)}, planes.options());
    AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "triplane_decode", [&] {
        auto net = weights.net<scalar_t>(planes, points, scale);
        forward_kernel(net, points.size(0) * points.size(1), out.data_ptr<scalar_t>());
    });
    return out;
}

// Returns {d planes (or empty), d points (or empty), d w1, d b1, d w2, d b2}. Each of `lanes` workers takes a
// contiguous run of points and owns its gradient buffers (no atomics); the buffers are summed at the end.
std::vector<torch::Tensor> triplane_decode_backward(torch::Tensor grad_out, torch::Tensor planes, torch::Tensor points,
        torch::Tensor w1, torch::Tensor b1, torch::Tensor w2, torch::Tensor b2, double scale, bool want_planes,
        bool want_points, int64_t lanes) {
    const Weights weights(planes, points, w1, b1, w2, b2);
    grad_out = grad_out.contiguous();
    TORCH_CHECK(grad_out.sizes() == torch::IntArrayRef({points.size(0), points.size(1), w2.size(0)}), "grad_out shape");
    const int64_t total = points.size(0) * points.size(1);
    lanes = std::max<int64_t>(1, std::min<int64_t>(lanes, (total + kBlock - 1) / kBlock));
    auto opts = planes.options();
    auto gplanes = want_planes ? torch::zeros({lanes, planes.numel()}, opts) : torch::Tensor();
    auto gpoints = want_points ? torch::zeros_like(points) : torch::Tensor();
    auto gw1t = torch::zeros({lanes, w1.size(1), w1.size(0)}, opts), gb1 = torch::zeros({lanes, b1.size(0)}, opts);
    auto gw2 = torch::zeros({lanes, w2.size(0), w2.size(1)}, opts), gb2 = torch::zeros({lanes, b2.size(0)}, opts);
    AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "triplane_decode_backward", [&] {
        auto net = weights.net<scalar_t>(planes, points, scale);
        const int64_t blocks = (total + kBlock - 1) / kBlock, per_lane = (blocks + lanes - 1) / lanes;
        at::parallel_for(0, lanes, 1, [&](int64_t l0, int64_t l1) {
            for (int64_t l = l0; l < l1; ++l) {
                const int64_t first = std::min(total, l * per_lane * kBlock), last = std::min(total, (l + 1) * per_lane * kBlock);
                backward_lane(net, grad_out.data_ptr<scalar_t>(), first, last,
                    want_planes ? gplanes[l].data_ptr<scalar_t>() : nullptr,
                    want_points ? gpoints.data_ptr<scalar_t>() : nullptr,
                    gw1t[l].data_ptr<scalar_t>(), gb1[l].data_ptr<scalar_t>(), gw2[l].data_ptr<scalar_t>(), gb2[l].data_ptr<scalar_t>());
            }
        });
    });
    auto gp = want_planes ? gplanes.sum(0).view(planes.sizes()) : torch::Tensor();
    return {gp, gpoints, gw1t.sum(0).t().contiguous(), gb1.sum(0), gw2.sum(0), gb2.sum(0)};
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("triplane_decode", &triplane_decode, "Decoder outputs [N, M, O] of points [N, M, 3] on channels-last planes");
    m.def("triplane_decode_backward", &triplane_decode_backward, "Gradients of triplane_decode");
}
