// One cuSPARSELt problem, D = alpha * op(A) @ op(B) + beta * C (+ bias), with A the 2:4
// structured matrix, and the rules cuSPARSELt imposes on it. The rules are checked here, before
// any library call, so that a violation is a ValueError that names the broken constraint (and so
// the checks run, and are tested, on machines without a GPU or the library).
#pragma once
#include <cstdint>
#include <string>

namespace ps24::cuda {

enum class DType { F32, F16, BF16, I8, I32, F8E4M3 };

DType dtype_from_name(const std::string& name);  // "float16", ...; throws std::invalid_argument
const char* dtype_name(DType t);
int dtype_bytes(DType t);

struct GemmSpec {
  int64_t m = 0, n = 0, k = 0;       // D is (m, n); the reduction dimension is k
  DType input = DType::F16;          // A and B
  DType output = DType::F16;         // C and D
  bool transpose_a = false;          // A is stored (k, m) instead of (m, k)
  bool transpose_b = false;          // B is stored (n, k) instead of (k, n)
  bool row_major = true;             // storage order of A, B, C and D
  bool has_bias = false;             // a bias vector of length m added to every column of D

  // Stored shapes (rows, cols) of A and B; C and D are (m, n).
  int64_t a_rows() const { return transpose_a ? k : m; }
  int64_t a_cols() const { return transpose_a ? m : k; }
  int64_t b_rows() const { return transpose_b ? n : k; }
  int64_t b_cols() const { return transpose_b ? k : n; }
  std::string key() const;  // plan-cache key
};

// Throws std::invalid_argument naming the first violated constraint: supported dtype pair, and the
// shape multiples cuSPARSELt requires (structured A: 32 / 16 / 8 for 8- / 16- / 32-bit elements;
// dense B, C, D: 16 / 8 / 4).
void validate_gemm(const GemmSpec& spec);

// Throws std::invalid_argument when a GPU of compute capability major.minor cannot run it
// (sparse tensor cores need sm_80 or newer; float8 e4m3 needs sm_89 or newer).
void validate_arch(const GemmSpec& spec, int major, int minor);

// Throws std::invalid_argument unless `address` is 16-byte aligned (cuSPARSELt's requirement).
void validate_alignment(uintptr_t address, const char* what);

// Sizes of the structured (sparse) and dense operands in elements along each dimension.
int structured_multiple(DType t);
int dense_multiple(DType t);

}  // namespace ps24::cuda
