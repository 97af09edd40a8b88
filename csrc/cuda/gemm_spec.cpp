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

// The input/output pairs of cuSPARSELt's supported-types table (float32 runs as 1:2 TF32).
bool supported_pair(DType in, DType out) {
  switch (in) {
    case DType::F32: return out == DType::F32;
    case DType::F16: return out == DType::F16;
    case DType::BF16: return out == DType::BF16;
    case DType::I8: return out == DType::I8 || out == DType::I32 || out == DType::F16 || out == DType::BF16;
    case DType::F8E4M3: return out == DType::F16 || out == DType::BF16 || out == DType::F32;
    case DType::I32: return false;
  }
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
                                dtype_name(s.output) +
                                " (supported: float32->float32, float16->float16, bfloat16->bfloat16, "
                                "int8->int8|int32|float16|bfloat16, float8_e4m3fn->float16|bfloat16|float32)");
  const int sa = structured_multiple(s.input), db = dense_multiple(s.input), dd = dense_multiple(s.output);
  check_multiple("A", s.transpose_a ? "k (rows of A^T)" : "m (rows of A)", s.a_rows(), sa, s.input, true);
  check_multiple("A", s.transpose_a ? "m (columns of A^T)" : "k (columns of A)", s.a_cols(), sa, s.input, true);
  check_multiple("B", "rows of B", s.b_rows(), db, s.input, false);
  check_multiple("B", "columns of B", s.b_cols(), db, s.input, false);
  check_multiple("D", "m", s.m, dd, s.output, false);
  check_multiple("D", "n", s.n, dd, s.output, false);
}

void validate_arch(const GemmSpec& s, int major, int minor) {
  const int cc = major * 10 + minor;
  if (cc < 80)
    throw std::invalid_argument("cuSPARSELt needs sparse tensor cores (compute capability 8.0 or newer); this GPU is " +
                                std::to_string(major) + "." + std::to_string(minor));
  if (s.input == DType::F8E4M3 && cc < 89)
    throw std::invalid_argument("float8_e4m3fn sparse GEMM needs compute capability 8.9 or newer; this GPU is " +
                                std::to_string(major) + "." + std::to_string(minor));
}

void validate_alignment(uintptr_t address, const char* what) {
  if (address % 16 != 0)
    throw std::invalid_argument(std::string("cuSPARSELt needs 16-byte aligned pointers; ") + what + " is at 0x" +
                                [&] { std::ostringstream h; h << std::hex << address; return h.str(); }());
}

}  // namespace ps24::cuda
