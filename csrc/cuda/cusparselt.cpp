#include "cuda/cusparselt.h"

#include <dlfcn.h>

#include <atomic>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "cuda/kernels.h"

namespace ps24::cuda {

// ---- the function table, filled by dlsym ------------------------------------------------------
#define PS24_CUSPARSELT_FUNCTIONS(X)                                                              \
  X(cusparseLtInit) X(cusparseLtGetProperty) X(cusparseLtGetErrorName) X(cusparseLtGetErrorString) \
  X(cusparseLtDenseDescriptorInit) X(cusparseLtStructuredDescriptorInit)                          \
  X(cusparseLtMatDescriptorDestroy) X(cusparseLtMatmulDescriptorInit)                             \
  X(cusparseLtMatmulDescSetAttribute) X(cusparseLtMatmulAlgSelectionInit)                         \
  X(cusparseLtMatmulAlgSelectionDestroy) X(cusparseLtMatmulAlgSetAttribute)                       \
  X(cusparseLtMatmulAlgGetAttribute) X(cusparseLtMatmulGetWorkspace) X(cusparseLtMatmulPlanInit)  \
  X(cusparseLtMatmulPlanDestroy) X(cusparseLtMatmul) X(cusparseLtMatmulSearch)                    \
  X(cusparseLtSpMMAPrune2) X(cusparseLtSpMMAPruneCheck2) X(cusparseLtSpMMACompressedSize2)        \
  X(cusparseLtSpMMACompress2)

namespace {

struct Api {
#define PS24_DECLARE(name) decltype(&::name) name = nullptr;
  PS24_CUSPARSELT_FUNCTIONS(PS24_DECLARE)
#undef PS24_DECLARE
  std::string path;
  int version = 0;
};

std::mutex load_mutex;
std::atomic<Api*> loaded{nullptr};  // set once, never freed: the library stays loaded for the process

const Api& api() {
  const Api* table = loaded.load();
  if (!table) throw Unavailable("cuSPARSELt not available: it was not loaded (pysparse24.cuda.cusparselt loads it)");
  return *table;
}

// Throws naming the failed call, cuSPARSELt's status and what usually causes that status.
void check(cusparseStatus_t status, const char* call) {
  if (status == CUSPARSE_STATUS_SUCCESS) return;
  const char* hint = "";
  switch (status) {
    case CUSPARSE_STATUS_INVALID_VALUE:
      hint = "an argument breaks a cuSPARSELt constraint (shape multiples, 16-byte alignment, leading dimension)";
      break;
    case CUSPARSE_STATUS_ARCH_MISMATCH:
      hint = "this GPU architecture is not supported (sparse tensor cores need sm_80+, float8 sm_89+)";
      break;
    case CUSPARSE_STATUS_NOT_SUPPORTED:
      hint = "this combination of dtypes, storage orders and transposes is not supported by this cuSPARSELt";
      break;
    case CUSPARSE_STATUS_ALLOC_FAILED:
    case CUSPARSE_STATUS_INSUFFICIENT_RESOURCES:
      hint = "out of GPU memory or resources";
      break;
    case CUSPARSE_STATUS_NOT_INITIALIZED:
      hint = "the handle could not be initialized (is a GPU and driver present?)";
      break;
    case CUSPARSE_STATUS_EXECUTION_FAILED:
      hint = "a GPU kernel failed to run";
      break;
    default:
      break;
  }
  std::ostringstream msg;
  msg << call << " failed: " << api().cusparseLtGetErrorName(status) << " (" << api().cusparseLtGetErrorString(status)
      << ")";
  if (*hint) msg << ": " << hint;
  throw CudaFailure(msg.str());
}

cudaDataType to_cuda(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::I8: return CUDA_R_8I;
    case DType::I32: return CUDA_R_32I;
    case DType::F8E4M3: return CUDA_R_8F_E4M3;
  }
  throw std::invalid_argument("unknown dtype");
}

cusparseOrder_t order(bool row_major) { return row_major ? CUSPARSE_ORDER_ROW : CUSPARSE_ORDER_COL; }
cusparseOperation_t op(bool transposed) {
  return transposed ? CUSPARSE_OPERATION_TRANSPOSE : CUSPARSE_OPERATION_NON_TRANSPOSE;
}
int64_t leading_dim(int64_t rows, int64_t cols, bool row_major) { return row_major ? cols : rows; }
constexpr uint32_t kAlignment = 16;

}  // namespace

std::string load_cusparselt(const std::vector<std::string>& candidates) {
  std::lock_guard<std::mutex> lock(load_mutex);
  if (loaded.load()) return loaded.load()->path;
  std::ostringstream tried;
  for (const std::string& path : candidates) {
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* err = dlerror();
      tried << "\n  " << path << ": " << (err ? err : "dlopen failed");
      continue;
    }
    auto table = std::make_unique<Api>();
    std::string missing;
#define PS24_RESOLVE(name)                                                          \
  table->name = reinterpret_cast<decltype(table->name)>(dlsym(lib, #name));         \
  if (!table->name) missing += std::string(missing.empty() ? "" : ", ") + #name;
    PS24_CUSPARSELT_FUNCTIONS(PS24_RESOLVE)
#undef PS24_RESOLVE
    if (!missing.empty()) {
      tried << "\n  " << path << ": too old, lacks " << missing;
      dlclose(lib);
      continue;
    }
    int major = 0, minor = 0, patch = 0;
    table->cusparseLtGetProperty(MAJOR_VERSION, &major);
    table->cusparseLtGetProperty(MINOR_VERSION, &minor);
    table->cusparseLtGetProperty(PATCH_LEVEL, &patch);
    table->version = major * 10000 + minor * 100 + patch;
    if (table->version < kMinimumCusparseLtVersion) {  // the symbols exist but not the behaviour we rely on
      tried << "\n  " << path << ": cuSPARSELt " << version_name(table->version) << " is older than the "
            << version_name(kMinimumCusparseLtVersion) << " pysparse24 needs";
      dlclose(lib);
      continue;
    }
    table->path = path;
    loaded.store(table.release());
    return loaded.load()->path;
  }
  throw Unavailable("cuSPARSELt not available: no loadable libcusparseLt (install the nvidia-cusparselt-cu13 "
                    "wheel); tried:" + tried.str());
}

bool cusparselt_loaded() { return loaded.load() != nullptr; }
int cusparselt_version() { return api().version; }

// ---- handles: one per thread and device, each with its plan cache ------------------------------
class Handle {
 public:
  explicit Handle(int device) : device(device) {
    check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
    check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
    check(api().cusparseLtInit(&handle), "cusparseLtInit");
  }
  // Never destroyed (see current()): destroying at interpreter exit can race CUDA's teardown.

  // The calling thread's handle for the current device.
  static std::shared_ptr<Handle> current() {
    api();  // "not loaded" before "no device": both are reasons, the library one is actionable first
    require_device();
    int device = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    // Leaked on purpose: no handle is destroyed at thread or process exit (see above).
    thread_local auto* handles = new std::map<int, std::shared_ptr<Handle>>();
    auto& slot = (*handles)[device];
    if (!slot) slot = std::make_shared<Handle>(device);
    return slot;
  }

  void require_current_device() const {
    int now = 0;
    check_cuda(cudaGetDevice(&now), "cudaGetDevice");
    if (now != device)
      throw std::invalid_argument("this cuSPARSELt object was built for device " + std::to_string(device) +
                                  " but the current device is " + std::to_string(now));
  }

  cusparseLtHandle_t handle;
  int device, major = 0, minor = 0;
  std::map<std::string, std::shared_ptr<GemmPlan>> plans;
};

// ---- StructuredMatrix --------------------------------------------------------------------------
StructuredMatrix::StructuredMatrix(int64_t rows, int64_t cols, DType dtype, bool row_major, bool transposed,
                                   bool check_support)
    : transposed_(transposed) {
  const int multiple = structured_multiple(dtype);
  if (dtype == DType::I32) throw std::invalid_argument("int32 cannot be a structured (sparse) matrix");
  if (rows <= 0 || cols <= 0 || rows % multiple || cols % multiple)
    throw std::invalid_argument("cuSPARSELt needs both dimensions of a structured " + std::string(dtype_name(dtype)) +
                                " matrix to be positive multiples of " + std::to_string(multiple) + ", got (" +
                                std::to_string(rows) + ", " + std::to_string(cols) + ")");
  handle_ = Handle::current();
  if (check_support) validate_structured(dtype, handle_->major, handle_->minor, api().version);
  check(api().cusparseLtStructuredDescriptorInit(&handle_->handle, &descriptor_, rows, cols,
                                                 leading_dim(rows, cols, row_major), kAlignment, to_cuda(dtype),
                                                 order(row_major), CUSPARSELT_SPARSITY_50_PERCENT),
        "cusparseLtStructuredDescriptorInit");
}

StructuredMatrix::~StructuredMatrix() { api().cusparseLtMatDescriptorDestroy(&descriptor_); }

void StructuredMatrix::prune(uintptr_t dense, uintptr_t out, cudaStream_t stream) {
  handle_->require_current_device();
  validate_alignment(dense, "the dense matrix");
  validate_alignment(out, "the pruned output");
  check(api().cusparseLtSpMMAPrune2(&handle_->handle, &descriptor_, 1, op(transposed_),
                                    reinterpret_cast<const void*>(dense), reinterpret_cast<void*>(out),
                                    CUSPARSELT_PRUNE_SPMMA_STRIP, stream),
        "cusparseLtSpMMAPrune2");
}

bool StructuredMatrix::is_pruned(uintptr_t dense, cudaStream_t stream) {
  handle_->require_current_device();
  validate_alignment(dense, "the dense matrix");
  int* valid = nullptr;
  check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&valid), sizeof(int), stream), "cudaMallocAsync");
  int host = 1;
  const cusparseStatus_t status = api().cusparseLtSpMMAPruneCheck2(
      &handle_->handle, &descriptor_, 1, op(transposed_), reinterpret_cast<const void*>(dense), valid, stream);
  cudaError_t copied = cudaSuccess;
  if (status == CUSPARSE_STATUS_SUCCESS) copied = cudaMemcpyAsync(&host, valid, sizeof(int), cudaMemcpyDeviceToHost, stream);
  cudaFreeAsync(valid, stream);
  check(status, "cusparseLtSpMMAPruneCheck2");
  check_cuda(copied, "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cusparseLtSpMMAPruneCheck2 (execution)");
  return host == 0;  // 0: the matrix satisfies 2:4
}

std::pair<size_t, size_t> StructuredMatrix::compressed_size() {
  size_t size = 0, buffer = 0;
  check(api().cusparseLtSpMMACompressedSize2(&handle_->handle, &descriptor_, &size, &buffer),
        "cusparseLtSpMMACompressedSize2");
  return {size, buffer};
}

void StructuredMatrix::compress(uintptr_t dense, uintptr_t compressed, uintptr_t buffer, cudaStream_t stream) {
  handle_->require_current_device();
  validate_alignment(dense, "the dense matrix");
  validate_alignment(compressed, "the compressed buffer");
  if (buffer) validate_alignment(buffer, "the temporary buffer");
  check(api().cusparseLtSpMMACompress2(&handle_->handle, &descriptor_, 1, op(transposed_),
                                       reinterpret_cast<const void*>(dense), reinterpret_cast<void*>(compressed),
                                       reinterpret_cast<void*>(buffer), stream),
        "cusparseLtSpMMACompress2");
}

// ---- GemmPlan ----------------------------------------------------------------------------------
GemmPlan::GemmPlan(const GemmSpec& spec, bool check_support) : spec_(spec) {
  validate_gemm(spec_);
  handle_ = Handle::current();
  if (check_support) validate_support(spec_, handle_->major, handle_->minor, api().version);
  const auto& lt = api();
  auto* h = &handle_->handle;
  const bool row = spec_.row_major;
  check(lt.cusparseLtStructuredDescriptorInit(h, &a_, spec_.a_rows(), spec_.a_cols(),
                                              leading_dim(spec_.a_rows(), spec_.a_cols(), row), kAlignment,
                                              to_cuda(spec_.input), order(row), CUSPARSELT_SPARSITY_50_PERCENT),
        "cusparseLtStructuredDescriptorInit (A)");
  check(lt.cusparseLtDenseDescriptorInit(h, &b_, spec_.b_rows(), spec_.b_cols(),
                                         leading_dim(spec_.b_rows(), spec_.b_cols(), row), kAlignment,
                                         to_cuda(spec_.input), order(row)),
        "cusparseLtDenseDescriptorInit (B)");
  check(lt.cusparseLtDenseDescriptorInit(h, &c_, spec_.m, spec_.n, leading_dim(spec_.m, spec_.n, row), kAlignment,
                                         to_cuda(spec_.output), order(row)),
        "cusparseLtDenseDescriptorInit (C, D)");
  const cusparseComputeType compute = spec_.input == DType::I8 ? CUSPARSE_COMPUTE_32I : CUSPARSE_COMPUTE_32F;
  check(lt.cusparseLtMatmulDescriptorInit(h, &matmul_, op(spec_.transpose_a), op(spec_.transpose_b), &a_, &b_, &c_,
                                          &c_, compute),
        "cusparseLtMatmulDescriptorInit");
  if (!spec_.has_bias) configure(0);  // a plan with a bias is configured with its first bias pointer
}

GemmPlan::~GemmPlan() {
  const auto& lt = api();
  release_selection();
  lt.cusparseLtMatDescriptorDestroy(&a_);
  lt.cusparseLtMatDescriptorDestroy(&b_);
  lt.cusparseLtMatDescriptorDestroy(&c_);
}

void GemmPlan::release_selection() {
  const auto& lt = api();
  if (plan_ready_) lt.cusparseLtMatmulPlanDestroy(&plan_);
  if (selection_ready_) lt.cusparseLtMatmulAlgSelectionDestroy(&alg_);
  plan_ready_ = selection_ready_ = false;
}

// In the order NVIDIA's samples and PyTorch use: the bias pointer on the matmul descriptor, then the
// algorithm selection, then the configuration kept from earlier calls (algorithm id, split-k; a new
// selection starts from the defaults), then one plan.
void GemmPlan::configure(uintptr_t bias) {
  const auto& lt = api();
  release_selection();
  if (spec_.has_bias) {
    void* pointer = reinterpret_cast<void*>(bias);
    check(lt.cusparseLtMatmulDescSetAttribute(&handle_->handle, &matmul_, CUSPARSELT_MATMUL_BIAS_POINTER, &pointer,
                                              sizeof(pointer)),
          "cusparseLtMatmulDescSetAttribute(BIAS_POINTER)");
  }
  bias_ = bias;
  check(lt.cusparseLtMatmulAlgSelectionInit(&handle_->handle, &alg_, &matmul_, CUSPARSELT_MATMUL_ALG_DEFAULT),
        "cusparseLtMatmulAlgSelectionInit");
  selection_ready_ = true;
  if (algorithm_ >= 0) set_alg_int(CUSPARSELT_MATMUL_ALG_CONFIG_ID, algorithm_);
  if (split_k_[0] >= 1) {
    set_alg_int(CUSPARSELT_MATMUL_SPLIT_K, split_k_[0]);
    set_alg_int(CUSPARSELT_MATMUL_SPLIT_K_MODE, split_k_[1]);
    set_alg_int(CUSPARSELT_MATMUL_SPLIT_K_BUFFERS, split_k_[2]);
  }
  init_plan();
}

// The plan snapshots the matmul descriptor and the algorithm selection: rebuilt once after a change.
void GemmPlan::init_plan() {
  if (plan_ready_) api().cusparseLtMatmulPlanDestroy(&plan_);
  plan_ready_ = false;
  check(api().cusparseLtMatmulPlanInit(&handle_->handle, &plan_, &matmul_, &alg_), "cusparseLtMatmulPlanInit");
  plan_ready_ = true;
}

void GemmPlan::require_configured() const {
  if (!selection_ready_)
    throw std::invalid_argument("this plan adds a bias: bind one first (set_bias), since cuSPARSELt chooses the "
                                "algorithm with the bias pointer set");
}

size_t GemmPlan::workspace_size() {
  require_configured();
  size_t bytes = 0;
  check(api().cusparseLtMatmulGetWorkspace(&handle_->handle, &plan_, &bytes), "cusparseLtMatmulGetWorkspace");
  return bytes;
}

void GemmPlan::set_bias(uintptr_t bias) {
  if (spec_.has_bias != (bias != 0))
    throw std::invalid_argument(spec_.has_bias ? "this plan adds a bias: pass one" : "this plan has no bias term");
  if (bias) validate_alignment(bias, "the bias");
  if (selection_ready_ && bias == bias_) return;
  configure(bias);
}

void GemmPlan::check_operands(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, uintptr_t bias,
                              uintptr_t workspace) {
  handle_->require_current_device();
  validate_alignment(a, "compressed A");
  validate_alignment(b, "B");
  validate_alignment(c, "C");
  validate_alignment(d, "D");
  if (workspace) validate_alignment(workspace, "the workspace");
  set_bias(bias);
}

void GemmPlan::matmul(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, float alpha, float beta, uintptr_t bias,
                      uintptr_t workspace, cudaStream_t stream) {
  check_operands(a, b, c, d, bias, workspace);
  cudaStream_t streams[1] = {stream};
  check(api().cusparseLtMatmul(&handle_->handle, &plan_, &alpha, reinterpret_cast<const void*>(a),
                               reinterpret_cast<const void*>(b), &beta, reinterpret_cast<const void*>(c),
                               reinterpret_cast<void*>(d), reinterpret_cast<void*>(workspace), streams, 1),
        "cusparseLtMatmul");
}

void GemmPlan::search(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, float alpha, float beta, uintptr_t bias,
                      uintptr_t workspace, cudaStream_t stream, int iterations) {
  if (iterations < 1) throw std::invalid_argument("search needs at least one iteration");
  check_operands(a, b, c, d, bias, workspace);
  set_alg_int(CUSPARSELT_MATMUL_SEARCH_ITERATIONS, iterations);
  init_plan();
  cudaStream_t streams[1] = {stream};
  check(api().cusparseLtMatmulSearch(&handle_->handle, &plan_, &alpha, reinterpret_cast<const void*>(a),
                                     reinterpret_cast<const void*>(b), &beta, reinterpret_cast<const void*>(c),
                                     reinterpret_cast<void*>(d), reinterpret_cast<void*>(workspace), streams, 1),
        "cusparseLtMatmulSearch");
  // Search updates the selection and the plan in place; keep what it chose for later rebuilds (its
  // split-k only when it splits: the defaults of an unsplit selection need not be valid settings).
  algorithm_ = get_alg_int(CUSPARSELT_MATMUL_ALG_CONFIG_ID);
  const auto [factor, mode, buffers] = split_k();
  if (factor > 1) split_k_ = {factor, mode, buffers};
}

int GemmPlan::get_alg_int(int attribute) const {
  require_configured();
  int value = 0;
  check(api().cusparseLtMatmulAlgGetAttribute(&handle_->handle, &alg_, cusparseLtMatmulAlgAttribute_t(attribute),
                                              &value, sizeof(value)),
        "cusparseLtMatmulAlgGetAttribute");
  return value;
}

// Sets one attribute of the selection; the caller re-plans once after all of its settings.
void GemmPlan::set_alg_int(int attribute, int value) {
  check(api().cusparseLtMatmulAlgSetAttribute(&handle_->handle, &alg_, cusparseLtMatmulAlgAttribute_t(attribute),
                                              &value, sizeof(value)),
        "cusparseLtMatmulAlgSetAttribute");
}

int GemmPlan::algorithm() const { return get_alg_int(CUSPARSELT_MATMUL_ALG_CONFIG_ID); }
int GemmPlan::max_algorithm() const { return get_alg_int(CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID); }

void GemmPlan::set_algorithm(int id) {
  const int top = max_algorithm();
  if (id < 0 || id >= top)
    throw std::invalid_argument("algorithm id " + std::to_string(id) + " is outside [0, " + std::to_string(top) + ")");
  set_alg_int(CUSPARSELT_MATMUL_ALG_CONFIG_ID, id);
  algorithm_ = id;
  init_plan();
}

std::tuple<int, int, int> GemmPlan::split_k() const {
  return {get_alg_int(CUSPARSELT_MATMUL_SPLIT_K), get_alg_int(CUSPARSELT_MATMUL_SPLIT_K_MODE),
          get_alg_int(CUSPARSELT_MATMUL_SPLIT_K_BUFFERS)};
}

void GemmPlan::set_split_k(int factor, int mode, int buffers) {
  if (factor < 1) throw std::invalid_argument("split-k factor must be >= 1");
  if (mode != CUSPARSELT_SPLIT_K_MODE_ONE_KERNEL && mode != CUSPARSELT_SPLIT_K_MODE_TWO_KERNELS)
    throw std::invalid_argument("split-k mode must be 1 (one kernel) or 2 (two kernels)");
  if (buffers < 1 || buffers > factor)
    throw std::invalid_argument("split-k buffers must be in [1, split-k factor]");
  require_configured();
  // All three settings first, then one plan: an intermediate combination may be rejected.
  set_alg_int(CUSPARSELT_MATMUL_SPLIT_K, factor);
  set_alg_int(CUSPARSELT_MATMUL_SPLIT_K_MODE, mode);
  set_alg_int(CUSPARSELT_MATMUL_SPLIT_K_BUFFERS, buffers);
  split_k_ = {factor, mode, buffers};
  init_plan();
}

std::shared_ptr<GemmPlan> cached_plan(const GemmSpec& spec) {
  validate_gemm(spec);
  auto handle = Handle::current();
  auto& slot = handle->plans[spec.key()];
  if (!slot) slot = std::make_shared<GemmPlan>(spec);
  return slot;
}

size_t plan_cache_size() { return Handle::current()->plans.size(); }

}  // namespace ps24::cuda
