// Fused bias + activation + gain + clamp for CPU tensors: forward (grad=0), first (1) and second (2) derivative.

#include <ATen/ATen.h>
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace {

//----------------------------------------------------------------------------
// Constant arguments of one call.

template <class T> struct Params
{
    T alpha;            // Activation shape (lrelu slope).
    T gain;             // Output scale.
    T inv_gain;         // 1 / gain, or 0 where gain is 0.
    T clamp;            // Clamp bound; +inf = no clamping.
};

//----------------------------------------------------------------------------
// One element. A = activation index of bias_act.activation_funcs, G = order of the derivative.
// For G == 0, `x` is the input (bias already added). For G >= 1, `x` is the incoming gradient, `xref`/`yref` are the
// forward pass's biased input / output, and `dy` is the first-order gradient (G == 2 only, else 1).

template <class T, int A, int G>
inline T act_one(T x, T xref, T yref, T dy, const Params<T>& p)
{
    const T one = 1, two = 2;
    const T y_ = (G == 0) ? 0 : yref * p.inv_gain;         // Forward output before the gain.
    const T selu_l = (T)1.0507009873554804934193349852946;
    const T selu_a = (T)1.6732632423543772848170429916717;
    T y = 0;

    if (A == 1) y = (G == 2) ? 0 : x;                                               // linear
    if (A == 2) y = (G == 2) ? 0 : x * ((G == 0 ? x : y_) > 0 ? one : 0);           // relu
    if (A == 3) y = (G == 2) ? 0 : x * ((G == 0 ? x : y_) > 0 ? one : p.alpha);     // lrelu
    if (A == 4)                                                                     // tanh: y' = 1 - y^2
    {
        if (G == 0) y = std::tanh(x);
        if (G == 1) y = x * (one - y_ * y_);
        if (G == 2) y = x * (one - y_ * y_) * (-two * y_);
    }
    if (A == 5)                                                                     // sigmoid: y' = y (1 - y)
    {
        if (G == 0) y = one / (one + std::exp(-x));
        if (G == 1) y = x * y_ * (one - y_);
        if (G == 2) y = x * y_ * (one - y_) * (one - two * y_);
    }
    if (A == 6)                                                                     // elu: y' = y + 1 below zero
    {
        if (G == 0) y = (x > 0) ? x : std::expm1(x);
        if (G == 1) y = (y_ > 0) ? x : x * (y_ + one);
        if (G == 2) y = (y_ > 0) ? 0 : x * (y_ + one);
    }
    if (A == 7)                                                                     // selu: y' = y + l*a below zero
    {
        if (G == 0) y = (x > 0) ? selu_l * x : selu_l * selu_a * std::expm1(x);
        if (G == 1) y = (y_ > 0) ? x * selu_l : x * (y_ + selu_l * selu_a);
        if (G == 2) y = (y_ > 0) ? 0 : x * (y_ + selu_l * selu_a);
    }
    if (A == 8)                                                                     // softplus: y' = 1 - exp(-y)
    {
        if (G == 0) y = (x > 20) ? x : std::log1p(std::exp(x));
        if (G == 1) y = x * (one - std::exp(-y_));
        if (G == 2) { T e = std::exp(-y_); y = x * e * (one - e); }
    }
    if (A == 9)                                                                     // swish: x * sigmoid(x)
    {
        if (G == 0)
            y = x / (one + std::exp(-x));
        else
        {
            T s = one / (one + std::exp(-xref));
            if (G == 1) y = x * s * (one + xref * (one - s));
            if (G == 2) y = x * s * (one - s) * (two + xref * (one - two * s));
            yref = xref * s * p.gain;                           // The clamp below tests the forward output.
        }
    }

    y *= p.gain * dy;
    if (G == 0)
        y = std::min(std::max(y, -p.clamp), p.clamp);           // Branch-free, so the loops vectorise.
    else
        y = ((yref > -p.clamp) & (yref < p.clamp)) ? y : 0;      // Clamped outputs pass no gradient.
    return y;
}

//----------------------------------------------------------------------------
// Whole tensor. Memory is cut into rows that either share one bias value (the bias dim is not innermost: rows of
// stride(dim) elements) or run over all bias values in order (the bias dim is innermost: rows of size(dim) elements);
// without a bias the whole tensor is one row.
// Missing operands read from small per-thread rows of zeros / ones, so the inner loop is plain unit-stride loads
// that the compiler vectorises.

template <class T, int A, int G>
inline void act_row(T* __restrict out, const T* __restrict x, const T* __restrict b, const T* __restrict xref,
    const T* __restrict yref, const T* __restrict dy, int64_t len, const Params<T> p)   // p by value: its loads can be hoisted.
{
    for (int64_t j = 0; j < len; j++)
    {
        T xv = x[j], xr = xref[j];
        if (G == 0) xv += b[j]; else xr += b[j];
        out[j] = act_one<T, A, G>(xv, xr, yref[j], dy[j], p);
    }
}

template <class T, int A, int G>
void bias_act_loop(T* out, const T* x, const T* b, const T* xref, const T* yref, const T* dy,
    int64_t n, int64_t step_b, int64_t size_b, const Params<T>& p)
{
    const bool b_inner = (b != nullptr && step_b == 1);
    const int64_t row = (b == nullptr) ? n : (b_inner ? size_b : step_b);
    const int64_t rows = (n + row - 1) / row;
    const int64_t piece = std::min<int64_t>(row, 4096);         // Long rows are done in pieces (bounded buffers).
    const int64_t pieces = (row + piece - 1) / piece;
    const int64_t grain = std::max<int64_t>(1, 32768 / piece);

    at::parallel_for(0, rows * pieces, grain, [&](int64_t q0, int64_t q1)
    {
        std::vector<T> zeros(piece, (T)0), ones(piece, (T)1), bias(piece, (T)0);
        for (int64_t q = q0; q < q1; q++)
        {
            const int64_t r = q / pieces, ofs = (q % pieces) * piece;
            const int64_t i0 = r * row + ofs;
            const int64_t len = std::min(std::min(piece, row - ofs), n - i0);
            if (len <= 0)
                continue;
            const T* br = zeros.data();
            if (b_inner)
                br = b + ofs;
            else if (b != nullptr)
            {
                std::fill(bias.begin(), bias.end(), b[r % size_b]);
                br = bias.data();
            }
            act_row<T, A, G>(out + i0, x + i0, br, xref ? xref + i0 : zeros.data(), yref ? yref + i0 : zeros.data(),
                dy ? dy + i0 : ones.data(), len, p);
        }
    });
}

template <class T, int G>
void dispatch_act(int act, T* out, const T* x, const T* b, const T* xref, const T* yref, const T* dy,
    int64_t n, int64_t step_b, int64_t size_b, const Params<T>& p)
{
    switch (act)
    {
        case 1: bias_act_loop<T, 1, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        case 2: bias_act_loop<T, 2, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        case 3: bias_act_loop<T, 3, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        case 4: bias_act_loop<T, 4, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        case 5: bias_act_loop<T, 5, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        case 6: bias_act_loop<T, 6, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        case 7: bias_act_loop<T, 7, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        case 8: bias_act_loop<T, 8, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        case 9: bias_act_loop<T, 9, G>(out, x, b, xref, yref, dy, n, step_b, size_b, p); break;
        default: TORCH_CHECK(false, "bias_act: unknown activation index ", act);
    }
}

//----------------------------------------------------------------------------

void check_like(const at::Tensor& t, const at::Tensor& x, const char* name)
{
    if (t.numel() == 0)
        return;
    TORCH_CHECK(t.device() == x.device() && t.scalar_type() == x.scalar_type(), "bias_act: ", name, " must match x in device and dtype");
    TORCH_CHECK(t.sizes() == x.sizes() && t.strides() == x.strides(), "bias_act: ", name, " must match x in shape and strides");
}

at::Tensor bias_act(at::Tensor x, at::Tensor b, at::Tensor xref, at::Tensor yref, at::Tensor dy,
    int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.device().is_cpu(), "bias_act: this build has CPU kernels only");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "bias_act: x must be float32 or float64");
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be non-overlapping and dense");
    TORCH_CHECK(x.numel() <= INT64_MAX / 2, "bias_act: x is too large");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    TORCH_CHECK(b.numel() == 0 || b.dim() == 1, "bias_act: b must be 1-D");
    TORCH_CHECK(b.numel() == 0 || (dim >= 0 && dim < x.dim()), "bias_act: dim is out of bounds");
    TORCH_CHECK(b.numel() == 0 || b.numel() == x.size(dim), "bias_act: b has the wrong number of elements");
    TORCH_CHECK(b.numel() == 0 || (b.device() == x.device() && b.scalar_type() == x.scalar_type()), "bias_act: b must match x in device and dtype");
    check_like(xref, x, "xref");
    check_like(yref, x, "yref");
    check_like(dy, x, "dy");

    at::Tensor bc = b.contiguous();
    at::Tensor y = at::empty_like(x);
    const int64_t n = x.numel();
    if (n == 0)
        return y;
    const int64_t step_b = (b.numel() > 0) ? x.stride(dim) : 1;
    const int64_t size_b = (b.numel() > 0) ? b.numel() : 1;

    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cpu", [&]
    {
        Params<scalar_t> p = {(scalar_t)alpha, (scalar_t)gain, (scalar_t)(gain != 0 ? 1 / gain : 0), (scalar_t)(clamp >= 0 ? clamp : INFINITY)};
        auto ptr = [](const at::Tensor& t) { return t.numel() ? t.data_ptr<scalar_t>() : (scalar_t*)nullptr; };
        scalar_t* out = y.data_ptr<scalar_t>();
        const scalar_t* xp = x.data_ptr<scalar_t>();
        if (grad == 0) dispatch_act<scalar_t, 0>((int)act, out, xp, ptr(bc), ptr(xref), ptr(yref), ptr(dy), n, step_b, size_b, p);
        if (grad == 1) dispatch_act<scalar_t, 1>((int)act, out, xp, ptr(bc), ptr(xref), ptr(yref), ptr(dy), n, step_b, size_b, p);
        if (grad == 2) dispatch_act<scalar_t, 2>((int)act, out, xp, ptr(bc), ptr(xref), ptr(yref), ptr(dy), n, step_b, size_b, p);
    });
    return y;
}

} // namespace

//----------------------------------------------------------------------------

// The operators of torch.ops.<TORCH_EXTENSION_NAME> (the indirection expands the name before TORCH_LIBRARY uses it).
#define REGISTER_OPERATORS(ns, m) TORCH_LIBRARY(ns, m)
REGISTER_OPERATORS(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act);
}

//----------------------------------------------------------------------------
