// Python entry of the CPU sparse matmul: numpy arrays in (bfloat16 as uint16 bit views, which is
// how the Python layer hands over torch.bfloat16 and ml_dtypes arrays), result written into `out`.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/matmul.h"

namespace py = pybind11;
using ps24::Kind;

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("pysparse24 matmul: " + message);
}

Kind parse_kind(const std::string& dtype) {
  if (dtype == "float32") return Kind::F32;
  if (dtype == "bfloat16") return Kind::BF16;
  if (dtype == "int8") return Kind::I8;
  throw std::invalid_argument("pysparse24 matmul: unsupported dtype '" + dtype +
                              "' (float32, bfloat16 or int8)");
}

// The kernel reads raw element bits, so only the element size is checked (the Python layer
// passes float32 as uint32, bfloat16 as uint16 and int8 as uint8 bit views, or as themselves).
void require_elements(const py::array& a, Kind kind, const char* name) {
  require(a.itemsize() == ps24::kind_bytes(kind),
          std::string(name) + " has the wrong element size for this dtype");
}

int64_t element_stride(const py::array& a, int dim) {
  require(a.strides(dim) % a.itemsize() == 0, "unaligned strides");
  return a.strides(dim) / a.itemsize();
}

// Runs out[M, N] = W @ X (+ bias) once X's shape and location are set in p (p.K, p.N, p.x, and
// its strides or p.im2col): checks the weight, out and bias against them.
void run_problem(ps24::cpu::matmul::Problem& p, const py::array& values, const py::array& meta, py::array& out,
                 const py::object& bias, int threads) {
  require(values.ndim() == 2 && meta.ndim() == 2, "values and meta must be 2-D");
  require(out.ndim() == 2, "out must be 2-D (M, N)");
  require_elements(values, p.kind, "values");
  require(meta.itemsize() == 1, "meta must be uint8");
  require(values.flags() & py::array::c_style, "values must be C-contiguous");
  require(meta.flags() & py::array::c_style, "meta must be C-contiguous");
  p.M = values.shape(0);
  require(values.shape(1) * 2 == p.K, "x has " + std::to_string(p.K) +
                                          " rows but the weight has K = " +
                                          std::to_string(values.shape(1) * 2) + " columns");
  require(meta.shape(0) == p.M, "meta has " + std::to_string(meta.shape(0)) +
                                    " rows, values " + std::to_string(p.M));
  require(out.shape(0) == p.M && out.shape(1) == p.N,
          "out must have shape (" + std::to_string(p.M) + ", " + std::to_string(p.N) + ")");
  require(out.itemsize() == (p.kind == Kind::BF16 ? 2 : 4),
          "out has the wrong element size (float32, bfloat16 or int32 results)");
  require(out.writeable(), "out is read-only");
  p.values = values.data();
  p.meta = static_cast<const uint8_t*>(meta.data());
  p.meta_cols = meta.shape(1);
  p.out = out.mutable_data();
  p.out_stride_m = element_stride(out, 0);
  p.out_stride_n = element_stride(out, 1);
  p.threads = threads;
  py::array bias_array;
  if (!bias.is_none()) {
    bias_array = py::array::ensure(bias, py::array::c_style);
    require(bias_array && bias_array.ndim() == 1 && bias_array.shape(0) == p.M,
            "bias must have shape (" + std::to_string(p.M) + ",)");
    require(bias_array.itemsize() == 4, "bias must be int32 for int8, float32 otherwise");
    p.bias = bias_array.data();
  }
  py::gil_scoped_release release;
  ps24::cpu::matmul::run(p);
}

ps24::cpu::matmul::XPacking parse_x_packing(const std::string& name) {
  using ps24::cpu::matmul::XPacking;
  if (name == "auto") return XPacking::Auto;
  if (name == "whole") return XPacking::Whole;
  if (name == "panel") return XPacking::PerPanel;
  throw std::invalid_argument("x_packing must be 'auto', 'whole' or 'panel', not '" + name + "'");
}

void sparse_matmul(const py::array& values, const py::array& meta, const py::array& x,
                   py::array& out, const std::string& dtype, const py::object& bias, int threads,
                   const std::string& x_packing) {
  ps24::cpu::matmul::Problem p;
  p.kind = parse_kind(dtype);
  p.x_packing = parse_x_packing(x_packing);
  require(x.ndim() == 2, "x must be 2-D (K, N)");
  require_elements(x, p.kind, "x");
  p.K = x.shape(0);
  p.N = x.shape(1);
  p.x = x.data();
  p.x_stride_k = element_stride(x, 0);
  p.x_stride_n = element_stride(x, 1);
  run_problem(p, values, meta, out, bias, threads);
}

// The torch fast path (pysparse24.matmul.run_torch_linear): out (N, M) = x (N, K) @ W.T + bias for
// CPU tensors that the Python layer has already checked (dtypes, shapes, strided layout, alignment,
// metadata codes), passed by address to spare a numpy view per tensor (~2 us each; the whole call
// at N = 1 on small weights is ~10 us). values and meta C-contiguous, out C-contiguous (N, M), x
// with element strides; bias (M,) contiguous in the weight's result dtype (bfloat16 bits for
// bfloat16 weights, widened here exactly), or 0.
void sparse_linear_at(const std::string& dtype, int64_t M, int64_t K, int64_t N, uintptr_t values,
                      uintptr_t meta, uintptr_t x, int64_t x_stride_n, int64_t x_stride_k,
                      uintptr_t out, uintptr_t bias, int threads) {
  ps24::cpu::matmul::Problem p;
  p.kind = parse_kind(dtype);
  require(M >= 0 && K >= 0 && N >= 0, "negative dimension");
  require((values && meta && x && out) || M * N == 0 || K == 0, "missing input");
  p.M = M;
  p.K = K;
  p.N = N;
  p.values = reinterpret_cast<const void*>(values);
  p.meta = reinterpret_cast<const uint8_t*>(meta);
  p.meta_cols = K / 8;
  p.x = reinterpret_cast<const void*>(x);
  p.x_stride_k = x_stride_k;
  p.x_stride_n = x_stride_n;
  p.out = reinterpret_cast<void*>(out);
  p.out_stride_m = 1;
  p.out_stride_n = M;
  p.threads = threads;
  std::vector<float> widened;
  if (bias && p.kind == Kind::BF16) {
    const uint16_t* bits = reinterpret_cast<const uint16_t*>(bias);
    widened.resize(size_t(M));
    for (int64_t m = 0; m < M; ++m) widened[size_t(m)] = ps24::cpu::matmul::bf16_to_float(bits[m]);
    p.bias = widened.data();
  } else {
    p.bias = reinterpret_cast<const void*>(bias);
  }
  py::gil_scoped_release release;
  ps24::cpu::matmul::run(p);
}

// The conv by implicit im2col (matmul.h: Im2col): x is the NHWC input (any strides), out (M, N)
// with N = batch x output pixels; kernel, stride, padding and dilation as (height, width) pairs.
void sparse_conv2d(const py::array& values, const py::array& meta, const py::array& x, py::array& out,
                   const std::string& dtype, const py::object& bias, int threads, std::array<int64_t, 2> kernel,
                   std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                   std::array<int64_t, 2> dilation) {
  ps24::cpu::matmul::Problem p;
  p.kind = parse_kind(dtype);
  require(x.ndim() == 4, "x must be 4-D (batch, height, width, channels)");
  require_elements(x, p.kind, "x");
  ps24::cpu::matmul::Im2col g;
  g.height = x.shape(1);
  g.width = x.shape(2);
  g.channels = x.shape(3);
  g.kernel_h = kernel[0], g.kernel_w = kernel[1];
  g.stride_h = stride[0], g.stride_w = stride[1];
  g.pad_h = padding[0], g.pad_w = padding[1];
  g.dilation_h = dilation[0], g.dilation_w = dilation[1];
  // The output size rule (validate_im2col checks the geometry it comes from).
  auto out_size = [](int64_t size, int64_t k, int64_t st, int64_t pad, int64_t d) {
    return st > 0 ? (size + 2 * pad - d * (k - 1) - 1) / st + 1 : 0;
  };
  g.out_height = out_size(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h);
  g.out_width = out_size(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w);
  g.stride_b = element_stride(x, 0);
  g.stride_y = element_stride(x, 1);
  g.stride_x = element_stride(x, 2);
  g.stride_c = element_stride(x, 3);
  p.K = g.kernel_h * g.kernel_w * g.channels;
  p.N = x.shape(0) * g.out_height * g.out_width;
  p.x = x.data();
  p.im2col = &g;
  ps24::cpu::matmul::validate_im2col(p);  // before run_problem's checks of out against N
  run_problem(p, values, meta, out, bias, threads);
}

}  // namespace

void bind_matmul(py::module_& m) {
  m.def("sparse_matmul", &sparse_matmul, py::arg("values"), py::arg("meta"), py::arg("x"),
        py::arg("out"), py::arg("dtype"), py::arg("bias") = py::none(), py::arg("threads") = 0,
        py::arg("x_packing") = "auto",
        "out[M, N] = W @ x (+ bias[:, None]) for a 2:4 weight W in the packed layout "
        "(values (M, K/2), meta uint8 (M, K/8)); x (K, N) with any strides. "
        "bfloat16 arrays are passed as 16-bit integer views. threads=0: OpenMP default. "
        "x_packing: how the large-N kernels pack x, 'auto' (their rule), or forced 'whole' (first) or "
        "'panel' (per panel, fused with the compute); the same bits either way (for tests and A/B timing).");
  m.def("sparse_linear_at", &sparse_linear_at, py::arg("dtype"), py::arg("M"), py::arg("K"),
        py::arg("N"), py::arg("values"), py::arg("meta"), py::arg("x"), py::arg("x_stride_n"),
        py::arg("x_stride_k"), py::arg("out"), py::arg("bias"), py::arg("threads"),
        "out (N, M) = x (N, K) @ W.T + bias for buffers given by address, already checked by "
        "pysparse24.matmul.run_torch_linear (its only caller). bias: 0 for none.");
  m.def("sparse_conv2d", &sparse_conv2d, py::arg("values"), py::arg("meta"), py::arg("x"), py::arg("out"),
        py::arg("dtype"), py::arg("bias"), py::arg("threads"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"),
        "out[M, N] = W @ X (+ bias[:, None]) where X (R*S*C, N) is the patch matrix (im2col, C innermost) of "
        "a conv over the NHWC input x, never written out: packed straight from x. Large-N regime only "
        "(matmul_large_n, matmul_large_n_bfloat16).");
  // From this N on, float32 uses the large-N kernels and their summation order (matmul.h); bfloat16
  // from matmul_large_n_bfloat16 on, or never (0) on CPUs with AVX-512 BF16.
  m.attr("matmul_large_n") = ps24::cpu::matmul::kAxpyMinN;
  m.attr("matmul_large_n_bfloat16") =
      ps24::cpu::matmul::avx512_bf16_supported() ? int64_t(0) : ps24::cpu::matmul::kAxpyMinNWidened;
}
