// Shared by the triplane_sigma plugin's kernels: a point's taps on a plane, softplus, denormals, the network's constants.

#pragma once
#include <cstdint>

#include <algorithm>
#include <cmath>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace triplane_cpu {

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

// Denormal floats read and written as zero (DAZ and FTZ in MXCSR) while a worker runs, restored after. A -ffast-math
// executable sets these at start; a loaded extension cannot, so each parallel body sets them for its own thread.
// EG3D's decoder gives softplus derivatives below FLT_MIN for far-negative pre-activations, and every product with
// one takes the slow microcode path: the rendering's backward ran 2.9x slower on one core without this.
struct FlushDenormals {
#if defined(__SSE__)
    const unsigned saved = _mm_getcsr();
    FlushDenormals() { _mm_setcsr(saved | 0x8040u); }
    ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// The network's constants for one call.
template <typename T>
struct Net {
    const T* planes; const T* points; const T* w1; const T* w1t; const T* b1; const T* w2; const T* w2t; const T* b2;
    int64_t M, H, W, C, Hd, O, Os; T scale;     // Os: row stride of w2t and length of b2, O rounded up to 8.
};

// Eight floats in one register (GCC vector extensions: AVX with -march=native), loaded and stored unaligned.
typedef float v8f __attribute__((vector_size(32), aligned(4)));
inline v8f load8(const float* p) { return *reinterpret_cast<const v8f*>(p); }
inline void store8(float* p, v8f v) { *reinterpret_cast<v8f*>(p) = v; }

} // namespace triplane_cpu
