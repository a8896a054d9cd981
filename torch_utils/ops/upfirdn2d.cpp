// upfirdn2d for CPU tensors: zero-insert by (upx, upy), pad, FIR-filter, keep every (downx, downy)-th pixel.

#include <ATen/ATen.h>
#include <torch/library.h>
#include <ATen/Parallel.h>
#include "upfirdn2d_cpu.h"

namespace {

at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
    int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip, double gain)
{
    TORCH_CHECK(x.device().is_cpu() && f.device().is_cpu(), "upfirdn2d: this build has CPU kernels only");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W]");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "upfirdn2d: x must be float32 or float64");
    TORCH_CHECK(f.dim() == 2 && f.scalar_type() == at::kFloat, "upfirdn2d: f must be a 2-D float32 tensor");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");

    const int64_t in_h = x.size(2), in_w = x.size(3);
    const int64_t fh = f.size(0), fw = f.size(1);
    const int64_t out_w = (in_w * upx + padx0 + padx1 - fw + downx) / downx;
    const int64_t out_h = (in_h * upy + pady0 + pady1 - fh + downy) / downy;
    TORCH_CHECK(out_w >= 1 && out_h >= 1, "upfirdn2d: output would be empty");

    at::Tensor xc = x.contiguous();
    at::Tensor fe = upfirdn2d_cpu::effective_filter(f, x.scalar_type(), flip, gain);
    at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
    const int64_t planes = x.size(0) * x.size(1);
    if (planes == 0)
        return y;

    const upfirdn2d_cpu::Taps tx = upfirdn2d_cpu::make_taps(out_w, in_w, fw, upx, downx, padx0);
    const upfirdn2d_cpu::Taps ty = upfirdn2d_cpu::make_taps(out_h, in_h, fh, upy, downy, pady0);
    const int64_t work = std::max<int64_t>(1, out_w * fw * fh / (upx * upy));
    const int64_t grain = std::max<int64_t>(1, 65536 / work);

    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "upfirdn2d_cpu", [&]
    {
        const scalar_t* xp = xc.data_ptr<scalar_t>();
        const scalar_t* fp = fe.data_ptr<scalar_t>();
        scalar_t* yp = y.data_ptr<scalar_t>();
        at::parallel_for(0, planes * out_h, grain, [&](int64_t r0, int64_t r1)
        {
            for (int64_t r = r0; r < r1; r++)
            {
                const int64_t plane = r / out_h, oy = r % out_h;
                upfirdn2d_cpu::row<scalar_t>(yp + r * out_w, xp + plane * in_h * in_w, in_w, 0, fp, fw, tx, ty, oy, upx, upy);
            }
        });
    });
    return y;
}

} // namespace

//----------------------------------------------------------------------------

// The operators of torch.ops.<TORCH_EXTENSION_NAME> (the indirection expands the name before TORCH_LIBRARY uses it).
#define REGISTER_OPERATORS(ns, m) TORCH_LIBRARY(ns, m)
REGISTER_OPERATORS(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d);
}

//----------------------------------------------------------------------------
