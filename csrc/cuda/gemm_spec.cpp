#include "cuda/gemm_spec.h"

#include <sstream>
#include <stdexcept>

namespace ps24::cuda {

DType dtype_from_name(const std::string& name) {
  if (name == "float32") return DType::F32;
  if (name == "float16") return DType::F16;
  if (name == "bfloat16") return DType::BF16;
  if (name == "int8") return DType::I8;
  if (name == "int32") return DType::I32;
  if (name == "float8_e4m3fn") return DType::F8E4M3;
  throw std::invalid_argument("cuSPARSELt has no dtype '" + name +
                              "' (float32, float16, bfloat16, int8, int32, float8_e4m3fn)");
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I8: return "int8";
    case DType::I32: return "int32";
    case DType::F8E4M3: return "float8_e4m3fn";
  }
  return "?";
}

int dtype_bytes(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::I8: case DType::F8E4M3: return 1;
  }
  return 0;
}

int structured_multiple(DType t) { return 32 / dtype_bytes(t); }
int dense_multiple(DType t) { return 16 / dtype_bytes(t); }

std::string GemmSpec::key() const {
  std::ostringstream s;
  s << m << 'x' << n << 'x' << k << ':' << dtype_name(input) << "->" << dtype_name(output) << ':'
    << (transpose_a ? 'T' : 'N') << (transpose_b ? 'T' : 'N') << ':' << (row_major ? "row" : "col")
    << (has_bias ? ":bias" : "");
  return s.str();
}

namespace {

// Rows of cuSPARSELt's supported-types table. float32 runs as TF32 1:2, on sm_8x only: PyTorch
// found it failing on Hopper with 0.6.2 and dropped it from its cuSPARSELt backend (pytorch #134022,
// #132928); tests/test_cuda_gpu.py checks every row against the loaded library on a real GPU.
// float8 e4m3 needs fp8 tensor cores (sm_89+); sm_89 kernels arrived in 0.8.0 (release notes).
constexpr const char* kDocs = "cuSPARSELt docs, cusparseLtMatmulDescriptorInit";
constexpr Capability kCapabilities[] = {
    {DType::F16, DType::F16, 80, 0, 800, kDocs},
    {DType::BF16, DType::BF16, 80, 0, 800, kDocs},
    {DType::F32, DType::F32, 80, 90, 800, "cuSPARSELt docs (TF32); not on sm_90: pytorch #134022 / #132928"},
    {DType::I8, DType::I8, 80, 0, 800, kDocs},
    {DType::I8, DType::I32, 80, 0, 800, kDocs},
    {DType::I8, DType::F16, 80, 0, 800, kDocs},
    {DType::I8, DType::BF16, 80, 0, 800, kDocs},
    {DType::F8E4M3, DType::F16, 89, 0, 800, "cuSPARSELt docs; sm_89 kernels since 0.8.0"},
    {DType::F8E4M3, DType::BF16, 89, 0, 800, "cuSPARSELt docs; sm_89 kernels since 0.8.0"},
    {DType::F8E4M3, DType::F32, 89, 0, 800, "cuSPARSELt docs; sm_89 kernels since 0.8.0"},
};

bool runs_on(const Capability& c, int cc, int version) {
  return cc >= c.min_cc && (c.below_cc == 0 || cc < c.below_cc) && (version == 0 || version >= c.min_version);
}

std::string cc_name(int major, int minor) { return std::to_string(major) + "." + std::to_string(minor); }

// "float16->float16, ..." of the rows that run on this GPU and library (every row: cc = 0).
std::string supported_here(int cc, int version) {
  std::string out;
  for (const Capability& c : kCapabilities)
    if (cc == 0 || runs_on(c, cc, version))
      out += std::string(out.empty() ? "" : ", ") + dtype_name(c.input) + "->" + dtype_name(c.output);
  return out.empty() ? "nothing" : out;
}

bool supported_pair(DType in, DType out) {
  for (const Capability& c : kCapabilities)
    if (c.input == in && c.output == out) return true;
  return false;
}

void check_multiple(const char* matrix, const char* dim_name, int64_t dim, int multiple, DType t, bool structured) {
  if (dim > 0 && dim % multiple == 0) return;
  std::ostringstream msg;
  msg << "cuSPARSELt needs every dimension of the " << (structured ? "structured (sparse) " : "dense ") << matrix
      << " to be a positive multiple of " << multiple << " for " << dtype_name(t) << "; " << dim_name << " = " << dim;
  throw std::invalid_argument(msg.str());
}

}  // namespace

void validate_gemm(const GemmSpec& s) {
  if (!supported_pair(s.input, s.output))
    throw std::invalid_argument(std::string("cuSPARSELt does not multiply ") + dtype_name(s.input) + " into " +
                                dtype_name(s.output) + " (supported: " + supported_here(0, 0) + ")");
  // 8-bit tensor cores take both operands with k contiguous ("TN"): NVIDIA's samples use opB =
  // TRANSPOSE for INT8 / FP8 and other layouts are refused (CUDALibrarySamples #219).
  const bool k_contiguous = s.row_major ? (!s.transpose_a && s.transpose_b) : (s.transpose_a && !s.transpose_b);
  if (dtype_bytes(s.input) == 1 && !k_contiguous)
    throw std::invalid_argument(std::string("cuSPARSELt multiplies ") + dtype_name(s.input) +
                                " only with the reduction dimension k contiguous in both A and B: store B as (n, k) "
                                "and pass transpose_b=True (row-major A (m, k))");
  const int sa = structured_multiple(s.input), db = dense_multiple(s.input), dd = dense_multiple(s.output);
  check_multiple("A", s.transpose_a ? "k (rows of A^T)" : "m (rows of A)", s.a_rows(), sa, s.input, true);
  check_multiple("A", s.transpose_a ? "m (columns of A^T)" : "k (columns of A)", s.a_cols(), sa, s.input, true);
  check_multiple("B", "rows of B", s.b_rows(), db, s.input, false);
  check_multiple("B", "columns of B", s.b_cols(), db, s.input, false);
  check_multiple("D", "m", s.m, dd, s.output, false);
  check_multiple("D", "n", s.n, dd, s.output, false);
}

DType bias_dtype(const GemmSpec& s) { return s.input == DType::I8 ? DType::F32 : s.output; }

const Capability* capabilities(int* count) {
  *count = int(sizeof(kCapabilities) / sizeof(kCapabilities[0]));
  return kCapabilities;
}

std::string version_name(int v) {
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

void validate_support(const GemmSpec& s, int major, int minor, int version) {
  const int cc = major * 10 + minor;
  if (cc < 80)
    throw std::invalid_argument("cuSPARSELt needs sparse tensor cores (compute capability 8.0 or newer); this GPU is " +
                                cc_name(major, minor));
  for (const Capability& c : kCapabilities)
    if (c.input == s.input && c.output == s.output) {
      if (runs_on(c, cc, version)) return;
      std::ostringstream msg;
      msg << "cuSPARSELt" << (version ? " " + version_name(version) : std::string()) << " has no "
          << dtype_name(s.input) << "->" << dtype_name(s.output) << " sparse GEMM on compute capability "
          << cc_name(major, minor) << " (it needs compute capability " << cc_name(c.min_cc / 10, c.min_cc % 10)
          << (c.below_cc ? " up to below " + cc_name(c.below_cc / 10, c.below_cc % 10) : std::string(" or newer"))
          << " and cuSPARSELt " << version_name(c.min_version) << "+; " << c.source
          << "). Supported here: " << supported_here(cc, version);
      throw std::invalid_argument(msg.str());
    }
  validate_gemm(s);  // not in the table at all: the dtype-pair message
}

void validate_structured(DType input, int major, int minor, int version) {
  const Capability* last = nullptr;
  for (const Capability& c : kCapabilities)
    if (c.input == input) {
      if (major * 10 + minor >= 80 && runs_on(c, major * 10 + minor, version)) return;
      last = &c;
    }
  if (!last) throw std::invalid_argument(std::string("cuSPARSELt has no structured ") + dtype_name(input) + " matrices");
  GemmSpec probe;
  probe.input = last->input;
  probe.output = last->output;
  validate_support(probe, major, minor, version);  // throws, naming the combination
}

void validate_alignment(uintptr_t address, const char* what) {
  if (address % 16 != 0)
    throw std::invalid_argument(std::string("cuSPARSELt needs 16-byte aligned pointers; ") + what + " is at 0x" +
                                [&] { std::ostringstream h; h << std::hex << address; return h.str(); }());
}

}  // namespace ps24::cuda
