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

// Throws std::invalid_argument naming the first violated constraint: a dtype pair of the support
// table, the layout 8-bit inputs need (k contiguous in A and B), and the shape multiples cuSPARSELt
// requires (structured A: 32 / 16 / 8 for 8- / 16- / 32-bit elements; dense B, C, D: 16 / 8 / 4).
void validate_gemm(const GemmSpec& spec);

// The dtype of the bias vector cuSPARSELt reads: float32 for int8 inputs (whatever the output),
// the output dtype otherwise (NVIDIA's matmul_advanced sample: Bias_t = float for INT8, C_t else).
DType bias_dtype(const GemmSpec& spec);

// cuSPARSELt's support table (docs of cusparseLtMatmulDescriptorInit, 0.8 - 0.10): the input ->
// output dtype pairs, and the compute capabilities and library versions that run each. The one home
// of these rules; an unsupported combination is a ValueError naming it, before any library call.
struct Capability {
  DType input, output;
  int min_cc;          // major * 10 + minor
  int below_cc;        // first compute capability it no longer runs on (0: none)
  int min_version;     // cuSPARSELt major * 10000 + minor * 100 + patch
  const char* source;  // where the row comes from
};
const Capability* capabilities(int* count);

// The oldest cuSPARSELt the wrapper works with: it calls cusparseLtGetErrorName/String and
// cusparseLtMatmulAlgSelectionDestroy, which 0.8.0 introduced.
constexpr int kMinimumCusparseLtVersion = 800;
std::string version_name(int version);  // 800 -> "0.8.0"

// Throws std::invalid_argument naming (dtypes, compute capability, cuSPARSELt version) when the
// support table has no row for it. version 0: any supported version (checks the GPU only).
void validate_support(const GemmSpec& spec, int major, int minor, int version);
// The same for a structured matrix of this dtype alone (prune / compress): some row must run.
void validate_structured(DType input, int major, int minor, int version);

// Throws std::invalid_argument unless `address` is 16-byte aligned (cuSPARSELt's requirement).
void validate_alignment(uintptr_t address, const char* what);

// Sizes of the structured (sparse) and dense operands in elements along each dimension.
int structured_multiple(DType t);
int dense_multiple(DType t);

}  // namespace ps24::cuda
