// The triplane_sigma plugin's register-blocked tiles for float32 at EG3D's sizes (C = 32 features, 64 hidden units):
// the backward, and the forward's features and hidden layer.
//
// Points go in tiles of kTile. Per tile: the taps and features (kept for the scatter), then the hidden layer's
// forward and backward as small matrix products whose accumulators live in vector registers: pre = F W1^T
// (2 points x 64 units), dPre = (G W2) * sigmoid(pre) (a rank-1 update per point when O = 1), dW1^T += F^T dPre
// (2 features x 64 units, the tile's points summed in registers before one read-modify-write), dF = dPre W1 / 3
// (4 points x 32 features). softplus and its derivative share one exp (libmvec's, 16 lanes a call). A tile is always
// full: rows past the lane's last point hold zero features and zero upstream gradients, so they add nothing and need
// no remainder code.

#pragma once
#include "triplane_sigma_cpu.h"

#include <vector>

namespace triplane_cpu {

constexpr int64_t kTile = 16;       // Points per tile (even, a multiple of 4).
constexpr int kCV = 4, kHV = 8;     // 32 features and 64 hidden units in 8-float registers.
constexpr int64_t kC = kCV * 8, kHd = kHV * 8;

// v itself, in a register: stops GCC from folding a shared load into each FMA that reads it (a load per use instead
// of one per tile row makes the products load-bound: measured 1.7x slower on this CPU).
inline v8f pin(v8f v) {
#if defined(__GNUC__) && defined(__AVX__)
    asm("" : "+v"(v));
#endif
    return v;
}

// Per-lane scratch of one tile, 64-byte aligned, about 19 KiB: stays in L1 between the steps.
struct alignas(64) Tile {
    float f[kTile * kC];            // Features (mean of the planes), zero past the last point.
    float pre[kTile * kHd];         // Pre-activations, then d out / d pre.
    float h[kTile * kHd];           // softplus(pre).
    float s[kTile * kHd];           // sigmoid(pre), softplus' derivative.
    float df[kTile * kC];           // d out / d features, the 1/3 of the mean applied.
    Taps<float> taps[kTile][3];     // Where each point met each plane.
};

// Taps and features of points [i0, i0 + n); features of the rows past n are zero.
inline void tile_features(const Net<float>& net, int64_t i0, int64_t n, Tile& t) {
    const int64_t plane_size = net.H * net.W * kC;
    for (int64_t p = 0; p < kTile; ++p) {
        v8f fa[kCV] = {};
        if (p < n) {
            const int64_t i = i0 + p, sample = i / net.M;
            const float* pt = net.points + i * 3;
            for (int plane = 0; plane < 3; ++plane) {
                const float* P = net.planes + (sample * 3 + plane) * plane_size;
                float u, v; plane_uv(plane, pt, u, v);
                Taps<float>& tp = t.taps[p][plane];
                find_taps(u, v, net.scale, net.H, net.W, kC, tp);
                for (int k = 0; k < 4; ++k) {
                    if (tp.off[k] < 0) continue;
                    const float* src = P + tp.off[k]; const float w = tp.w[k];
                    for (int cv = 0; cv < kCV; ++cv) fa[cv] += w * load8(src + 8 * cv);
                }
            }
        }
        for (int cv = 0; cv < kCV; ++cv) store8(t.f + p * kC + 8 * cv, fa[cv] * (1.0f / 3.0f));
    }
}

// pre = b1 + F W1^T, then h = softplus(pre) and (kGrad) s = sigmoid(pre) from one exp(-|pre|) (finite for any pre).
template <bool kGrad>
inline void tile_hidden(const Net<float>& net, Tile& t) {
    for (int64_t p = 0; p < kTile; p += 2) {
        v8f a0[kHV], a1[kHV];
        for (int hv = 0; hv < kHV; ++hv) a0[hv] = a1[hv] = load8(net.b1 + 8 * hv);
        for (int64_t c = 0; c < kC; ++c) {
            const float f0 = t.f[p * kC + c], f1 = t.f[(p + 1) * kC + c];
            const float* wr = net.w1t + c * kHd;
            for (int hv = 0; hv < kHV; ++hv) {
                const v8f w = pin(load8(wr + 8 * hv));
                a0[hv] += f0 * w; a1[hv] += f1 * w;
            }
        }
        for (int hv = 0; hv < kHV; ++hv) {
            store8(t.pre + p * kHd + 8 * hv, a0[hv]); store8(t.pre + (p + 1) * kHd + 8 * hv, a1[hv]);
        }
    }
    #pragma omp simd simdlen(16)
    for (int64_t q = 0; q < kTile * kHd; ++q) {
        const float x = t.pre[q], e = std::exp(-std::abs(x));
        t.h[q] = std::max(x, 0.0f) + std::log(1.0f + e);
        if (kGrad) t.s[q] = (x >= 0.0f ? 1.0f : e) / (1.0f + e);
    }
}

// Rows k0, k0 + 1 (R = 2) or k0 alone (R = 1) of dW2 += G^T H and db2 += column sums of G; g [kTile, O].
template <int R>
inline void tile_grad_w2(const Tile& t, const float* g, int64_t O, int64_t k0, float* gw2, float* gb2) {
    v8f a[R][kHV];
    for (int r = 0; r < R; ++r) for (int hv = 0; hv < kHV; ++hv) a[r][hv] = load8(gw2 + (k0 + r) * kHd + 8 * hv);
    float sums[R] = {};
    for (int64_t p = 0; p < kTile; ++p) {
        for (int r = 0; r < R; ++r) sums[r] += g[p * O + k0 + r];
        for (int hv = 0; hv < kHV; ++hv) {
            const v8f hp = pin(load8(t.h + p * kHd + 8 * hv));
            for (int r = 0; r < R; ++r) a[r][hv] += g[p * O + k0 + r] * hp;
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int hv = 0; hv < kHV; ++hv) store8(gw2 + (k0 + r) * kHd + 8 * hv, a[r][hv]);
        gb2[k0 + r] += sums[r];
    }
}

// d out / d pre (into t.pre) from the upstream gradients g [kTile, O] (zero rows past the last point); dW2, db2.
inline void tile_output_grads(const Net<float>& net, const float* g, Tile& t, float* gw2, float* gb2) {
    const int64_t O = net.O;
    if (O == 1) {                   // dPre = g w2 * s: a rank-1 update per point; dW2 += sum_p g_p h_p.
        v8f w[kHV], a[kHV];
        float gsum = 0;
        for (int hv = 0; hv < kHV; ++hv) { w[hv] = load8(net.w2 + 8 * hv); a[hv] = load8(gw2 + 8 * hv); }
        for (int64_t p = 0; p < kTile; ++p) {
            const float gp = g[p];
            gsum += gp;
            for (int hv = 0; hv < kHV; ++hv) {
                const int64_t q = p * kHd + 8 * hv;
                a[hv] += gp * load8(t.h + q);
                store8(t.pre + q, gp * w[hv] * load8(t.s + q));
            }
        }
        for (int hv = 0; hv < kHV; ++hv) store8(gw2 + 8 * hv, a[hv]);
        gb2[0] += gsum;
        return;
    }
    for (int64_t p = 0; p < kTile; p += 2) {         // dH = G W2, two points at a time, then dPre = dH * s.
        v8f a0[kHV] = {}, a1[kHV] = {};
        for (int64_t k = 0; k < O; ++k) {
            const float g0 = g[p * O + k], g1 = g[(p + 1) * O + k];
            const float* wr = net.w2 + k * kHd;
            for (int hv = 0; hv < kHV; ++hv) {
                const v8f w = pin(load8(wr + 8 * hv));
                a0[hv] += g0 * w; a1[hv] += g1 * w;
            }
        }
        for (int hv = 0; hv < kHV; ++hv) {
            const int64_t q0 = p * kHd + 8 * hv, q1 = q0 + kHd;
            store8(t.pre + q0, a0[hv] * load8(t.s + q0));
            store8(t.pre + q1, a1[hv] * load8(t.s + q1));
        }
    }
    int64_t k = 0;
    for (; k + 2 <= O; k += 2) tile_grad_w2<2>(t, g, O, k, gw2, gb2);
    if (k < O) tile_grad_w2<1>(t, g, O, k, gw2, gb2);
}

// dW1^T += F^T dPre and db1 += column sums of dPre (two features at a time), then dF = dPre W1 / 3 (four points).
inline void tile_hidden_grads(const Net<float>& net, Tile& t, float* gw1t, float* gb1) {
    for (int64_t c = 0; c < kC; c += 2) {
        v8f a0[kHV], a1[kHV];
        for (int hv = 0; hv < kHV; ++hv) {
            a0[hv] = load8(gw1t + c * kHd + 8 * hv); a1[hv] = load8(gw1t + (c + 1) * kHd + 8 * hv);
        }
        for (int64_t p = 0; p < kTile; ++p) {
            const float f0 = t.f[p * kC + c], f1 = t.f[p * kC + c + 1];
            for (int hv = 0; hv < kHV; ++hv) {
                const v8f d = pin(load8(t.pre + p * kHd + 8 * hv));
                a0[hv] += f0 * d; a1[hv] += f1 * d;
            }
        }
        for (int hv = 0; hv < kHV; ++hv) {
            store8(gw1t + c * kHd + 8 * hv, a0[hv]); store8(gw1t + (c + 1) * kHd + 8 * hv, a1[hv]);
        }
    }
    v8f b[kHV];
    for (int hv = 0; hv < kHV; ++hv) b[hv] = load8(gb1 + 8 * hv);
    for (int64_t p = 0; p < kTile; ++p)
        for (int hv = 0; hv < kHV; ++hv) b[hv] += load8(t.pre + p * kHd + 8 * hv);
    for (int hv = 0; hv < kHV; ++hv) store8(gb1 + 8 * hv, b[hv]);
    for (int64_t p = 0; p < kTile; p += 4) {
        v8f a[4][kCV] = {};
        for (int64_t j = 0; j < kHd; ++j) {
            const float* wr = net.w1 + j * kC;
            const v8f w[kCV] = {pin(load8(wr)), pin(load8(wr + 8)), pin(load8(wr + 16)), pin(load8(wr + 24))};
            for (int r = 0; r < 4; ++r) {
                const float d = t.pre[(p + r) * kHd + j];
                for (int cv = 0; cv < kCV; ++cv) a[r][cv] += d * w[cv];
            }
        }
        for (int r = 0; r < 4; ++r)
            for (int cv = 0; cv < kCV; ++cv) store8(t.df + (p + r) * kC + 8 * cv, a[r][cv] * (1.0f / 3.0f));
    }
}

// Plane gradients (each point's four taps per plane, 32 features in four registers) and point gradients.
inline void tile_scatter(const Net<float>& net, const Tile& t, int64_t i0, int64_t n, float* gplanes, float* gpoints) {
    const int64_t plane_size = net.H * net.W * kC;
    for (int64_t p = 0; p < n; ++p) {
        const int64_t i = i0 + p, sample = i / net.M;
        v8f d[kCV];
        for (int cv = 0; cv < kCV; ++cv) d[cv] = load8(t.df + p * kC + 8 * cv);
        float gp[3] = {0, 0, 0};
        for (int plane = 0; plane < 3; ++plane) {
            const int64_t base = (sample * 3 + plane) * plane_size;
            const Taps<float>& tp = t.taps[p][plane];
            float dfx = 0, dfy = 0;                 // d out / d(fx), d(fy) through this plane's taps.
            const float dwx[4] = {-(1 - tp.fy), (1 - tp.fy), -tp.fy, tp.fy};
            const float dwy[4] = {-(1 - tp.fx), -tp.fx, (1 - tp.fx), tp.fx};
            for (int k = 0; k < 4; ++k) {
                if (tp.off[k] < 0) continue;
                if (gplanes) {
                    float* dst = gplanes + base + tp.off[k]; const float w = tp.w[k];
                    for (int cv = 0; cv < kCV; ++cv) store8(dst + 8 * cv, load8(dst + 8 * cv) + w * d[cv]);
                }
                if (gpoints) {
                    const float* src = net.planes + base + tp.off[k];
                    v8f acc = d[0] * load8(src);
                    for (int cv = 1; cv < kCV; ++cv) acc += d[cv] * load8(src + 8 * cv);
                    float s = 0;
                    for (int e = 0; e < 8; ++e) s += acc[e];
                    dfx += dwx[k] * s; dfy += dwy[k] * s;
                }
            }
            if (gpoints) {                          // ix = ((u * scale + 1) * W - 1) / 2, likewise iy.
                const float du = dfx * net.scale * net.W / 2, dv = dfy * net.scale * net.H / 2;
                if (plane == 0) { gp[0] += du; gp[1] += dv; }
                else if (plane == 1) { gp[0] += du; gp[2] += dv; }
                else { gp[2] += du; gp[0] += dv; }
            }
        }
        if (gpoints) for (int a = 0; a < 3; ++a) gpoints[i * 3 + a] = gp[a];
    }
}

// Gradients of one lane's points [first, last), as backward_lane's: weights into the lane's own buffers (gw1t [C, Hd],
// gb1, gw2 [O, Hd], gb2), planes into its own plane buffer (or none), points into gpoints (or none).
inline void backward_lane_tiled(const Net<float>& net, const float* gout, int64_t first, int64_t last, float* gplanes,
        float* gpoints, float* gw1t, float* gb1, float* gw2, float* gb2) {
    const int64_t O = net.O;
    Tile t;
    std::vector<float> g(kTile * O);
    for (int64_t i0 = first; i0 < last; i0 += kTile) {
        const int64_t n = std::min(kTile, last - i0);
        std::copy(gout + i0 * O, gout + (i0 + n) * O, g.begin());
        std::fill(g.begin() + n * O, g.end(), 0.0f);
        tile_features(net, i0, n, t);
        tile_hidden<true>(net, t);
        tile_output_grads(net, g.data(), t, gw2, gb2);
        tile_hidden_grads(net, t, gw1t, gb1);
        if (gplanes || gpoints) tile_scatter(net, t, i0, n, gplanes, gpoints);
    }
}

} // namespace triplane_cpu
