// cuSPARSELt, loaded at first use with dlopen (never linked), so that importing pysparse24 works on
// machines without the library, a driver or a GPU; and the objects pysparse24 builds on it:
//   StructuredMatrix - the descriptor of a 2:4 matrix A: prune, prune-check, compress (the opaque
//                      compressed layout depends only on A, so one compressed weight serves all N);
//   GemmPlan         - descriptors, algorithm selection and plan of one GemmSpec: matmul (alpha,
//                      beta, bias), algorithm search, split-k.
// Handles are one per (thread, device); each holds that thread's plan cache.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <cuda_runtime_api.h>
#include <cusparseLt.h>

#include "cuda/gemm_spec.h"

namespace ps24::cuda {

// Tries each candidate path with dlopen (the last ones may be bare sonames for the loader path),
// keeps the first that has every function. Returns its path; throws Unavailable("cuSPARSELt not
// available: ...") listing every attempt. Loading again after a success returns the same path.
std::string load_cusparselt(const std::vector<std::string>& candidates);
bool cusparselt_loaded();
int cusparselt_version();  // major * 10000 + minor * 100 + patch, of the loaded library

class Handle;

class StructuredMatrix {
 public:
  // rows x cols stored in the given order; the 2:4 groups run along the reduction dimension, which
  // is the rows' direction unless `transposed` (A stored as (k, m)). check_support=false skips the
  // support table (the GPU tests compare it with the library).
  StructuredMatrix(int64_t rows, int64_t cols, DType dtype, bool row_major, bool transposed, bool check_support = true);
  ~StructuredMatrix();
  StructuredMatrix(const StructuredMatrix&) = delete;
  StructuredMatrix& operator=(const StructuredMatrix&) = delete;

  void prune(uintptr_t dense, uintptr_t out, cudaStream_t stream);         // 2:4 by magnitude (1:2 for float32)
  bool is_pruned(uintptr_t dense, cudaStream_t stream);                   // prune-check on device
  std::pair<size_t, size_t> compressed_size();                            // (compressed, temporary buffer) bytes
  void compress(uintptr_t dense, uintptr_t compressed, uintptr_t buffer, cudaStream_t stream);

 private:
  std::shared_ptr<Handle> handle_;
  cusparseLtMatDescriptor_t descriptor_;
  bool transposed_;
};

class GemmPlan {
 public:
  // Validates (check_support=false skips the support table: the GPU tests compare it with the
  // library), then builds the descriptors and, without a bias, the selection and plan (no GPU work).
  explicit GemmPlan(const GemmSpec& spec, bool check_support = true);
  ~GemmPlan();
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;

  const GemmSpec& spec() const { return spec_; }
  // Binds the bias vector (length m, bias_dtype(spec); 0 without a bias term): when it changes, the
  // selection and plan are rebuilt with it, keeping the algorithm id and split-k chosen so far.
  void set_bias(uintptr_t bias);
  size_t workspace_size();
  // D = alpha * op(A) @ op(B) + beta * C (+ bias). `a` is A compressed by StructuredMatrix::compress;
  // c may equal d; bias only if spec.has_bias (see set_bias).
  void matmul(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, float alpha, float beta, uintptr_t bias,
              uintptr_t workspace, cudaStream_t stream);
  // Times the candidate algorithms on these operands (D is overwritten) and keeps the fastest.
  void search(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, float alpha, float beta, uintptr_t bias,
              uintptr_t workspace, cudaStream_t stream, int iterations);
  int algorithm() const;
  int max_algorithm() const;
  void set_algorithm(int id);
  std::tuple<int, int, int> split_k() const;  // (split-k factor, mode, buffers)
  void set_split_k(int factor, int mode, int buffers);

 private:
  int get_alg_int(int attribute) const;
  void set_alg_int(int attribute, int value);
  void configure(uintptr_t bias);
  void release_selection();
  void require_configured() const;
  void init_plan();
  void check_operands(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, uintptr_t bias, uintptr_t workspace);

  GemmSpec spec_;
  std::shared_ptr<Handle> handle_;
  cusparseLtMatDescriptor_t a_, b_, c_;
  cusparseLtMatmulDescriptor_t matmul_;
  cusparseLtMatmulAlgSelection_t alg_;
  cusparseLtMatmulPlan_t plan_;
  bool selection_ready_ = false, plan_ready_ = false;
  uintptr_t bias_ = 0;
  int algorithm_ = -1;                   // chosen by set_algorithm or search (-1: the default)
  std::array<int, 3> split_k_{0, 0, 0};  // chosen by set_split_k or search (factor 0: the default)
};

// The calling thread's plan for this spec on the current device, built on first use.
std::shared_ptr<GemmPlan> cached_plan(const GemmSpec& spec);
// Number of plans in the calling thread's cache for the current device.
size_t plan_cache_size();

}  // namespace ps24::cuda
