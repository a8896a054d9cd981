// Filtered leaky ReLU for CPU tensors, one plane at a time: bias, upsample with fu, gain, lrelu, clamp, downsample
// with fd. Signs of the activation are kept 2 bits per pixel (1 = negative side, 2 = clamped) so that the backward
// pass (the same op with the filters swapped) applies the forward pass's slopes instead of recomputing them.

#include <ATen/ATen.h>
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <tuple>
#include "upfirdn2d_cpu.h"

namespace {

//----------------------------------------------------------------------------
// Sign tensors are uint8 [N, C, H, ceil(W / 4)] over the intermediate (upsampled) image; pixel x of a row lives in
// byte x / 4 at bit 2 * (x % 4). A pass that reads signs looks pixel (x, y) up at (x + sx, y + sy); pixels outside the
// tensor read as 0 (their gradient is zero anyway).

template <class T> struct Act
{
    T gain, slope, clamp;
    uint8_t* so;            // Signs to write (one plane), or null.
    const uint8_t* si;      // Signs to read (one plane), or null.
    int64_t sh, sw;         // Read tensor's height and width in pixels.
    int64_t sx, sy;         // Read offset.
};

template <class T>
void act_plane(T* v, int64_t h, int64_t w, const Act<T>& a)
{
    const int64_t so_w = (w + 3) / 4;
    const int64_t si_w = a.sw / 4;
    for (int64_t y = 0; y < h; y++)
    {
        T* row = v + y * w;
        if (a.so)
        {
            uint8_t* srow = a.so + y * so_w;
            for (int64_t x = 0; x < w; x++)
            {
                T val = row[x] * a.gain;
                uint8_t s = 0;
                if (!(val > 0)) { val *= a.slope; s = 1; }      // Zero counts as negative, as in torch's leaky_relu gradient.
                if (std::abs(val) > a.clamp) { val = (val > 0) ? a.clamp : -a.clamp; s = 2; }
                row[x] = val;
                srow[x >> 2] |= (uint8_t)(s << ((x & 3) * 2));
            }
        }
        else if (a.si)
        {
            const int64_t yy = y + a.sy;
            const bool row_in = (yy >= 0 && yy < a.sh);
            const uint8_t* srow = a.si + (row_in ? yy : 0) * si_w;
            for (int64_t x = 0; x < w; x++)
            {
                const int64_t xx = x + a.sx;
                const int s = (row_in && xx >= 0 && xx < a.sw) ? (srow[xx >> 2] >> ((xx & 3) * 2)) & 3 : 0;
                T val = row[x] * a.gain;
                row[x] = (s & 2) ? (T)0 : (s & 1) ? val * a.slope : val;
            }
        }
        else
        {
            for (int64_t x = 0; x < w; x++)
            {
                T val = row[x] * a.gain;
                val = (val > 0) ? val : val * a.slope;
                row[x] = (val > a.clamp) ? a.clamp : (val < -a.clamp) ? -a.clamp : val;
            }
        }
    }
}

//----------------------------------------------------------------------------
// Shared checks of the sign arguments; returns the tensor to write signs into (empty when not writing).

at::Tensor sign_tensors(const at::Tensor& si, int64_t n, int64_t c, int64_t h, int64_t w, bool write_signs)
{
    TORCH_CHECK(!(write_signs && si.numel() > 0), "filtered_lrelu: cannot read and write signs in one call");
    if (si.numel() > 0)
    {
        TORCH_CHECK(si.device().is_cpu() && si.scalar_type() == at::kByte && si.dim() == 4, "filtered_lrelu: si must be a 4-D uint8 CPU tensor");
        TORCH_CHECK(si.size(0) == n && si.size(1) == c, "filtered_lrelu: si must match x in batch and channels");
        TORCH_CHECK(si.is_contiguous(), "filtered_lrelu: si must be contiguous");
    }
    if (!write_signs)
        return at::empty({0}, at::dtype(at::kByte));
    return at::zeros({n, c, h, (w + 3) / 4}, at::dtype(at::kByte));
}

template <class T>
Act<T> make_act(double gain, double slope, double clamp, const at::Tensor& so, const at::Tensor& si, int64_t sx, int64_t sy)
{
    Act<T> a;
    a.gain = (T)gain; a.slope = (T)slope; a.clamp = (T)clamp;
    a.so = so.numel() ? so.data_ptr<uint8_t>() : nullptr;
    a.si = si.numel() ? si.data_ptr<uint8_t>() : nullptr;
    a.sh = si.numel() ? si.size(2) : 0;
    a.sw = si.numel() ? si.size(3) * 4 : 0;
    a.sx = sx; a.sy = sy;
    return a;
}

//----------------------------------------------------------------------------
// Fused op. Returns (y, signs written, 0); the return code is negative only when no kernel fits (never on CPU).

std::tuple<at::Tensor, at::Tensor, int64_t> filtered_lrelu(at::Tensor x, at::Tensor fu, at::Tensor fd,
    at::Tensor b, at::Tensor si, int64_t up, int64_t down, int64_t px0, int64_t px1, int64_t py0, int64_t py1,
    int64_t sx, int64_t sy, double gain, double slope, double clamp, bool flip, bool write_signs)
{
    TORCH_CHECK(x.device().is_cpu(), "filtered_lrelu: this build has CPU kernels only");
    TORCH_CHECK(x.dim() == 4, "filtered_lrelu: x must be 4-D [N, C, H, W]");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "filtered_lrelu: x must be float32 or float64");
    TORCH_CHECK(fu.scalar_type() == at::kFloat && fd.scalar_type() == at::kFloat, "filtered_lrelu: filters must be float32");
    TORCH_CHECK(b.dim() == 1 && b.numel() == x.size(1) && b.scalar_type() == x.scalar_type(), "filtered_lrelu: b must be [C] with the dtype of x");
    TORCH_CHECK(up >= 1 && down >= 1, "filtered_lrelu: up and down must be >= 1");
    TORCH_CHECK(gain > 0 && slope >= 0 && clamp >= 0, "filtered_lrelu: gain must be > 0, slope and clamp >= 0");

    const int64_t n = x.size(0), c = x.size(1), in_h = x.size(2), in_w = x.size(3);
    const int64_t fuh = fu.size(0), fuw = fu.size(-1), fdh = fd.size(0), fdw = fd.size(-1);
    const int64_t tw = in_w * up + px0 + px1 - fuw + 1;          // Intermediate (upsampled, filtered) image.
    const int64_t th = in_h * up + py0 + py1 - fuh + 1;
    TORCH_CHECK(tw >= fdw && th >= fdh, "filtered_lrelu: output would be empty");
    const int64_t out_w = (tw - fdw + down) / down;
    const int64_t out_h = (th - fdh + down) / down;

    at::Tensor xc = x.contiguous(), bc = b.contiguous();
    at::Tensor feu = upfirdn2d_cpu::effective_filter(fu, x.scalar_type(), flip, (double)(up * up));
    at::Tensor fed = upfirdn2d_cpu::effective_filter(fd, x.scalar_type(), flip, 1.0);
    at::Tensor so = sign_tensors(si, n, c, th, tw, write_signs);
    at::Tensor y = at::empty({n, c, out_h, out_w}, x.options());
    if (n * c == 0)
        return std::make_tuple(y, so, (int64_t)0);

    const upfirdn2d_cpu::Taps tux = upfirdn2d_cpu::make_taps(tw, in_w, fuw, up, 1, px0);
    const upfirdn2d_cpu::Taps tuy = upfirdn2d_cpu::make_taps(th, in_h, fuh, up, 1, py0);
    const upfirdn2d_cpu::Taps tdx = upfirdn2d_cpu::make_taps(out_w, tw, fdw, 1, down, 0);
    const upfirdn2d_cpu::Taps tdy = upfirdn2d_cpu::make_taps(out_h, th, fdh, 1, down, 0);
    const int64_t so_plane = th * ((tw + 3) / 4);
    const int64_t si_plane = si.numel() ? si.size(2) * si.size(3) : 0;

    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "filtered_lrelu_cpu", [&]
    {
        const scalar_t* xp = xc.data_ptr<scalar_t>();
        const scalar_t* bp = bc.data_ptr<scalar_t>();
        const scalar_t* fup = feu.data_ptr<scalar_t>();
        const scalar_t* fdp = fed.data_ptr<scalar_t>();
        scalar_t* yp = y.data_ptr<scalar_t>();
        const Act<scalar_t> act = make_act<scalar_t>(gain, slope, clamp, so, si, sx, sy);
        at::parallel_for(0, n * c, 1, [&](int64_t p0, int64_t p1)
        {
            std::vector<scalar_t> tmp(th * tw);
            for (int64_t p = p0; p < p1; p++)
            {
                const scalar_t* xplane = xp + p * in_h * in_w;
                for (int64_t ty = 0; ty < th; ty++)
                    upfirdn2d_cpu::row<scalar_t>(tmp.data() + ty * tw, xplane, in_w, bp[p % c], fup, fuw, tux, tuy, ty, up, up);
                Act<scalar_t> a = act;
                a.so = act.so ? act.so + p * so_plane : nullptr;
                a.si = act.si ? act.si + p * si_plane : nullptr;
                act_plane<scalar_t>(tmp.data(), th, tw, a);
                for (int64_t oy = 0; oy < out_h; oy++)
                    upfirdn2d_cpu::row<scalar_t>(yp + (p * out_h + oy) * out_w, tmp.data(), tw, 0, fdp, fdw, tdx, tdy, oy, 1, 1);
            }
        });
    });
    return std::make_tuple(y, so, (int64_t)0);
}

//----------------------------------------------------------------------------
// Activation only, in place on an already upsampled image x; returns the signs written (empty when not writing).

at::Tensor filtered_lrelu_act_(at::Tensor x, at::Tensor si, int64_t sx, int64_t sy, double gain, double slope,
    double clamp, bool write_signs)
{
    TORCH_CHECK(x.device().is_cpu(), "filtered_lrelu_act_: this build has CPU kernels only");
    TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "filtered_lrelu_act_: x must be a contiguous 4-D tensor");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "filtered_lrelu_act_: x must be float32 or float64");
    TORCH_CHECK(gain > 0 && slope >= 0 && clamp >= 0, "filtered_lrelu_act_: gain must be > 0, slope and clamp >= 0");
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    at::Tensor so = sign_tensors(si, n, c, h, w, write_signs);
    const int64_t so_plane = h * ((w + 3) / 4);
    const int64_t si_plane = si.numel() ? si.size(2) * si.size(3) : 0;

    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "filtered_lrelu_act_cpu", [&]
    {
        scalar_t* xp = x.data_ptr<scalar_t>();
        const Act<scalar_t> act = make_act<scalar_t>(gain, slope, clamp, so, si, sx, sy);
        at::parallel_for(0, n * c, 1, [&](int64_t p0, int64_t p1)
        {
            for (int64_t p = p0; p < p1; p++)
            {
                Act<scalar_t> a = act;
                a.so = act.so ? act.so + p * so_plane : nullptr;
                a.si = act.si ? act.si + p * si_plane : nullptr;
                act_plane<scalar_t>(xp + p * h * w, h, w, a);
            }
        });
    });
    return so;
}

} // namespace

//----------------------------------------------------------------------------

// The operators of torch.ops.<TORCH_EXTENSION_NAME> (the indirection expands the name before TORCH_LIBRARY uses it).
#define REGISTER_OPERATORS(ns, m) TORCH_LIBRARY(ns, m)
REGISTER_OPERATORS(TORCH_EXTENSION_NAME, m)
{
    m.def("filtered_lrelu", &filtered_lrelu);
    m.def("filtered_lrelu_act_", &filtered_lrelu_act_);
}

//----------------------------------------------------------------------------
