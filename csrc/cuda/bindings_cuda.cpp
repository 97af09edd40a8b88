// pysparse24._C.cuda: the GPU kernels and the cuSPARSELt wrapper. Arrays cross as raw addresses
// (Python reads them off torch / cupy arrays and allocates the outputs of the same kind), streams
// as raw cudaStream_t handles; `on_host=True` runs a kernel's body over host (numpy) addresses.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/gemm_spec.h"
#include "cuda/kernels.h"
#ifdef PYSPARSE24_WITH_CUSPARSELT
#include "cuda/cusparselt.h"
#endif

namespace py = pybind11;
using namespace ps24::cuda;

namespace {

ps24::Kind kind_from_name(const std::string& name) {
  if (name == "float32") return ps24::Kind::F32;
  if (name == "float16") return ps24::Kind::F16;
  if (name == "bfloat16") return ps24::Kind::BF16;
  if (name == "int8") return ps24::Kind::I8;
  if (name == "float8_e4m3fn") return ps24::Kind::F8E4M3;
  if (name == "float8_e5m2") return ps24::Kind::F8E5M2;
  throw std::invalid_argument("unsupported dtype '" + name +
                              "' (float32, float16, bfloat16, int8, float8_e4m3fn, float8_e5m2)");
}

Format format_from_name(const std::string& name) {
  if (name == "packed") return Format::Packed;
  if (name == "cutlass") return Format::Cutlass;
  throw std::invalid_argument("unknown format '" + name + "' (packed, cutlass)");
}

Target target(uintptr_t stream, int device, bool on_host, uintptr_t errors = 0) {
  return Target{on_host, reinterpret_cast<cudaStream_t>(stream), device,
                reinterpret_cast<unsigned long long*>(errors)};
}

template <typename T>
T* address(uintptr_t a) { return reinterpret_cast<T*>(a); }

// (first non-finite element, first over-full group, first corrupt-metadata group); -1: none.
py::tuple as_tuple(const FirstErrors& e) { return py::make_tuple(e.nonfinite, e.overfull, e.bad_meta); }

void bind_kernels(py::module_& m) {
  m.def("device_count", [] { return device_count(); }, "Number of usable CUDA devices (0 without a driver).");
  m.def("unavailable_reason", [] {
        std::string why;
        return device_count(&why) > 0 ? std::string() : "no CUDA device (" + why + ")";
      }, "Why no CUDA device can be used, or '' when one can.");
  m.def("compute_capability", [](int device) {
        require_device();
        int major = 0, minor = 0;
        check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
        check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
        return py::make_tuple(major, minor);
      }, py::arg("device"));
  m.def("meta_layout", [](int64_t rows, int64_t cols, const std::string& dtype, const std::string& format) {
        const ps24::Kind kind = kind_from_name(dtype);
        const Format f = format_from_name(format);
        const int word = meta_word_bytes(kind, f);
        const int64_t total = meta_bytes(Matrix2D{rows, cols, cols}, kind, f);
        return py::make_tuple(rows, rows ? total / word / rows : 0, word);
      }, py::arg("rows"), py::arg("cols"), py::arg("dtype"), py::arg("format"),
      "(rows, columns, bytes per word) of the metadata compress writes.");

  m.def("mask", [](uintptr_t in, uintptr_t out, int64_t rows, int64_t cols, int64_t row_stride,
                   const std::string& dtype, int n, int mm, uintptr_t stream, int device, bool on_host) {
        FirstErrors e;
        {
          py::gil_scoped_release unlocked;
          e = mask_nm(address<const void>(in), address<uint8_t>(out), Matrix2D{rows, cols, row_stride},
                      kind_from_name(dtype), n, mm, target(stream, device, on_host));
        }
        return as_tuple(e);
      }, py::arg("input"), py::arg("out"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("dtype"), py::arg("n"), py::arg("m"), py::arg("stream") = 0, py::arg("device") = -1,
      py::arg("on_host") = false);
  m.def("find_overfull", [](uintptr_t in, int64_t rows, int64_t cols, int64_t row_stride, const std::string& dtype,
                            int n, int mm, uintptr_t stream, int device, bool on_host) {
        FirstErrors e;
        {
          py::gil_scoped_release unlocked;
          e = find_overfull(address<const void>(in), Matrix2D{rows, cols, row_stride}, kind_from_name(dtype), n, mm,
                            target(stream, device, on_host));
        }
        return as_tuple(e);
      }, py::arg("input"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"), py::arg("dtype"), py::arg("n"),
      py::arg("m"), py::arg("stream") = 0, py::arg("device") = -1, py::arg("on_host") = false);
  m.def("compress", [](uintptr_t in, uintptr_t values, uintptr_t meta, int64_t rows, int64_t cols,
                       int64_t row_stride, const std::string& dtype, const std::string& format, bool prune,
                       uintptr_t stream, int device, bool on_host, uintptr_t errors) {
        FirstErrors e;
        {
          py::gil_scoped_release unlocked;
          e = compress(address<const void>(in), address<void>(values), address<void>(meta),
                       Matrix2D{rows, cols, row_stride}, kind_from_name(dtype), format_from_name(format), prune,
                       target(stream, device, on_host, errors));
        }
        return as_tuple(e);
      }, py::arg("input"), py::arg("values"), py::arg("meta"), py::arg("rows"), py::arg("cols"),
      py::arg("row_stride"), py::arg("dtype"), py::arg("format"), py::arg("prune"), py::arg("stream") = 0,
      py::arg("device") = -1, py::arg("on_host") = false, py::arg("errors") = 0,
      "errors: address of three device uint64 (all ones) to record into without waiting (timing).");
  m.def("decompress", [](uintptr_t values, uintptr_t meta, uintptr_t out, int64_t rows, int64_t cols,
                         const std::string& dtype, const std::string& format, uintptr_t stream, int device,
                         bool on_host) {
        FirstErrors e;
        {
          py::gil_scoped_release unlocked;
          e = decompress(address<const void>(values), address<const void>(meta), address<void>(out),
                         Matrix2D{rows, cols, cols}, kind_from_name(dtype), format_from_name(format),
                         target(stream, device, on_host));
        }
        return as_tuple(e);
      }, py::arg("values"), py::arg("meta"), py::arg("out"), py::arg("rows"), py::arg("cols"), py::arg("dtype"),
      py::arg("format"), py::arg("stream") = 0, py::arg("device") = -1, py::arg("on_host") = false);
}

void bind_gemm_spec(py::module_& m) {
  py::class_<GemmSpec>(m, "GemmSpec")
      .def(py::init([](int64_t m_, int64_t n, int64_t k, const std::string& input, const std::string& output,
                       bool transpose_a, bool transpose_b, bool row_major, bool has_bias) {
             GemmSpec s;
             s.m = m_, s.n = n, s.k = k;
             s.input = dtype_from_name(input);
             s.output = dtype_from_name(output);
             s.transpose_a = transpose_a, s.transpose_b = transpose_b, s.row_major = row_major;
             s.has_bias = has_bias;
             return s;
           }),
           py::arg("m"), py::arg("n"), py::arg("k"), py::arg("input"), py::arg("output"),
           py::arg("transpose_a") = false, py::arg("transpose_b") = false, py::arg("row_major") = true,
           py::arg("has_bias") = false)
      .def_readonly("m", &GemmSpec::m)
      .def_readonly("n", &GemmSpec::n)
      .def_readonly("k", &GemmSpec::k)
      .def_readonly("transpose_a", &GemmSpec::transpose_a)
      .def_readonly("transpose_b", &GemmSpec::transpose_b)
      .def_readonly("row_major", &GemmSpec::row_major)
      .def_readonly("has_bias", &GemmSpec::has_bias)
      .def_property_readonly("input", [](const GemmSpec& s) { return dtype_name(s.input); })
      .def_property_readonly("output", [](const GemmSpec& s) { return dtype_name(s.output); })
      .def_property_readonly("key", &GemmSpec::key)
      .def("validate", &validate_gemm, "Raise ValueError naming the first cuSPARSELt constraint it breaks.")
      .def("validate_arch", &validate_arch, py::arg("major"), py::arg("minor"))
      .def("__repr__", [](const GemmSpec& s) { return "GemmSpec(" + s.key() + ")"; });
  m.def("validate_alignment", &validate_alignment, py::arg("address"), py::arg("what"));
}

#ifdef PYSPARSE24_WITH_CUSPARSELT
void bind_cusparselt(py::module_& m) {
  m.attr("has_cusparselt_build") = true;
  m.def("load_cusparselt", &load_cusparselt, py::arg("candidates"),
        "dlopen the first loadable libcusparseLt among the candidates; returns its path.");
  m.def("cusparselt_loaded", &cusparselt_loaded);
  m.def("cusparselt_version", &cusparselt_version);
  auto stream_of = [](uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); };

  py::class_<StructuredMatrix, std::shared_ptr<StructuredMatrix>>(m, "StructuredMatrix")
      .def(py::init([](int64_t rows, int64_t cols, const std::string& dtype, bool row_major, bool transposed) {
             return std::make_shared<StructuredMatrix>(rows, cols, dtype_from_name(dtype), row_major, transposed);
           }),
           py::arg("rows"), py::arg("cols"), py::arg("dtype"), py::arg("row_major") = true,
           py::arg("transposed") = false)
      .def("prune", [=](StructuredMatrix& s, uintptr_t dense, uintptr_t out, uintptr_t stream) {
             s.prune(dense, out, stream_of(stream));
           }, py::arg("dense"), py::arg("out"), py::arg("stream") = 0)
      .def("is_pruned", [=](StructuredMatrix& s, uintptr_t dense, uintptr_t stream) {
             return s.is_pruned(dense, stream_of(stream));
           }, py::arg("dense"), py::arg("stream") = 0)
      .def("compressed_size", &StructuredMatrix::compressed_size)
      .def("compress", [=](StructuredMatrix& s, uintptr_t dense, uintptr_t out, uintptr_t buffer, uintptr_t stream) {
             s.compress(dense, out, buffer, stream_of(stream));
           }, py::arg("dense"), py::arg("out"), py::arg("buffer"), py::arg("stream") = 0);

  py::class_<GemmPlan, std::shared_ptr<GemmPlan>>(m, "GemmPlan")
      .def(py::init<const GemmSpec&>(), py::arg("spec"))
      .def_property_readonly("spec", &GemmPlan::spec)
      .def_property_readonly("workspace_size", &GemmPlan::workspace_size)
      .def("matmul", [=](GemmPlan& p, uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, float alpha, float beta,
                         uintptr_t bias, uintptr_t workspace, uintptr_t stream) {
             p.matmul(a, b, c, d, alpha, beta, bias, workspace, stream_of(stream));
           }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("d"), py::arg("alpha") = 1.0f,
           py::arg("beta") = 0.0f, py::arg("bias") = 0, py::arg("workspace") = 0, py::arg("stream") = 0)
      .def("search", [=](GemmPlan& p, uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, float alpha, float beta,
                         uintptr_t bias, uintptr_t workspace, uintptr_t stream, int iterations) {
             p.search(a, b, c, d, alpha, beta, bias, workspace, stream_of(stream), iterations);
           }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("d"), py::arg("alpha") = 1.0f,
           py::arg("beta") = 0.0f, py::arg("bias") = 0, py::arg("workspace") = 0, py::arg("stream") = 0,
           py::arg("iterations") = 5)
      .def_property("algorithm", &GemmPlan::algorithm, &GemmPlan::set_algorithm)
      .def_property_readonly("max_algorithm", &GemmPlan::max_algorithm)
      .def_property_readonly("split_k", &GemmPlan::split_k)
      .def("set_split_k", &GemmPlan::set_split_k, py::arg("factor"), py::arg("mode") = 1, py::arg("buffers") = 1);
  m.def("cached_plan", &cached_plan, py::arg("spec"),
        "The calling thread's plan for this spec on the current device (built on first use).");
  m.def("plan_cache_size", &plan_cache_size);
}
#else
void bind_cusparselt(py::module_& m) {
  m.attr("has_cusparselt_build") = false;
  m.def("load_cusparselt", [](py::object) -> std::string {
        throw Unavailable("cuSPARSELt not available: pysparse24 was compiled without the cuSPARSELt header "
                          "(install the nvidia-cusparselt-cu13 wheel, then rebuild)");
      }, py::arg("candidates"));
}
#endif

}  // namespace

void bind_cuda(py::module_& root) {
  py::module_ m = root.def_submodule("cuda", "CUDA kernels and the cuSPARSELt wrapper");
  py::register_exception<Unavailable>(m, "UnavailableError", PyExc_RuntimeError);
  py::register_exception<CudaFailure>(m, "CudaError", PyExc_RuntimeError);
  bind_kernels(m);
  bind_gemm_spec(m);
  bind_cusparselt(m);
}
