// Launchers of the GPU mask / compress / decompress kernels: argument checks, dtype dispatch,
// one grid-stride kernel per operation, and the read-back of what the kernel found wrong.
#include <algorithm>
#include <type_traits>

#include "cuda/chunk_ops.cuh"
#include "cuda/kernels.h"

namespace ps24::cuda {

// ---- device presence and status checks ---------------------------------------------------------
int device_count(std::string* why) {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" status so later calls report afresh
    if (why) {
      *why = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
      if (status == cudaErrorInsufficientDriver)  // no driver at all reads the same
        *why += "; this build needs an NVIDIA driver for CUDA " + std::to_string(CUDART_VERSION / 1000) + "." +
                std::to_string(CUDART_VERSION % 1000 / 10) + " or newer";
    }
    return 0;
  }
  if (n == 0 && why) *why = "the CUDA driver reports 0 devices";
  return n;
}

int require_device() {
  std::string why;
  const int n = device_count(&why);
  if (n == 0) throw Unavailable("no CUDA device (" + why + ")");
  return n;
}

void check_cuda(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();
  throw CudaFailure(std::string(what) + " failed: " + cudaGetErrorName(status) + " (" +
                    cudaGetErrorString(status) + ")");
}

namespace {

// ---- execution: the same functor on the GPU or, for tests, on the host -------------------------
template <class Op>
__global__ void __launch_bounds__(256) run_chunks(Op op, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) op(i);
}

template <class Op>
void execute(const Op& op, const Target& t) {
  const int64_t n = op.count();
  if (t.on_host) {
    for (int64_t i = 0; i < n; ++i) op(i);
    return;
  }
  if (n == 0) return;
  constexpr int kThreads = 256;
  // Enough blocks to fill any current GPU several times over; the loop covers the rest.
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 16);
  run_chunks<<<unsigned(blocks), kThreads, 0, t.stream>>>(op, n);
  check_cuda(cudaGetLastError(), "kernel launch");
}

// The per-kind "first bad index" slots, in host memory for host runs and device memory for GPU runs.
class ErrorSlots {
 public:
  explicit ErrorSlots(const Target& t) : t_(t) {
    if (t_.on_host || t_.errors) return;
    check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&device_), sizeof(host_), t_.stream), "cudaMallocAsync");
    check_cuda(cudaMemsetAsync(device_, 0xff, sizeof(host_), t_.stream), "cudaMemsetAsync");
  }
  ~ErrorSlots() {
    if (device_) cudaFreeAsync(device_, t_.stream);
  }
  ErrorSlots(const ErrorSlots&) = delete;
  ErrorSlots& operator=(const ErrorSlots&) = delete;

  unsigned long long* ptr() { return t_.on_host ? host_ : t_.errors ? t_.errors : device_; }

  // Waits for the kernel (the caller's stream only) and returns what it recorded.
  FirstErrors read() {
    if (!t_.on_host && t_.errors) return FirstErrors{};  // the caller reads its own slots
    if (!t_.on_host) {
      check_cuda(cudaMemcpyAsync(host_, device_, sizeof(host_), cudaMemcpyDeviceToHost, t_.stream), "cudaMemcpyAsync");
      check_cuda(cudaStreamSynchronize(t_.stream), "kernel execution");
    }
    auto index = [](unsigned long long v) { return v == kNoError ? int64_t(-1) : int64_t(v); };
    return FirstErrors{index(host_[kErrNonfinite]), index(host_[kErrOverfull]), index(host_[kErrBadMeta])};
  }

 private:
  Target t_;
  unsigned long long host_[kErrorKinds] = {kNoError, kNoError, kNoError};
  unsigned long long* device_ = nullptr;
};

// Makes the array's device current for the duration of a call and restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(const Target& t) {
    if (t.on_host) return;
    require_device();
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (t.device >= 0 && t.device != previous_) {
      check_cuda(cudaSetDevice(t.device), "cudaSetDevice");
      restore_ = true;
    }
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

template <class F>
void with_kind(Kind kind, F&& f) {
  switch (kind) {
    case Kind::F32: return f(std::integral_constant<Kind, Kind::F32>{});
    case Kind::F16: return f(std::integral_constant<Kind, Kind::F16>{});
    case Kind::BF16: return f(std::integral_constant<Kind, Kind::BF16>{});
    case Kind::I8: return f(std::integral_constant<Kind, Kind::I8>{});
    case Kind::F8E4M3: return f(std::integral_constant<Kind, Kind::F8E4M3>{});
    case Kind::F8E5M2: return f(std::integral_constant<Kind, Kind::F8E5M2>{});
  }
  throw std::invalid_argument("unknown element kind " + std::to_string(int(kind)));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// True when every chunk of the launch is whole and every 16-byte access is aligned.
bool can_vectorize(Matrix2D s, int elem_bytes, std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (!aligned16(p)) return false;
  return (s.cols * elem_bytes) % kChunkBytes == 0 && (s.row_stride * elem_bytes) % 16 == 0;
}

void check_shape(Matrix2D s) {
  if (s.rows < 0 || s.cols < 0) throw std::invalid_argument("negative matrix shape");
  if (s.row_stride < s.cols)
    throw std::invalid_argument("row stride " + std::to_string(s.row_stride) + " is smaller than the row length " +
                                std::to_string(s.cols) + " (rows must not overlap)");
}

void check_pattern(Matrix2D s, int n, int m) {
  check_shape(s);
  if (m < 1 || m > 32 || n < 0 || n > m)
    throw std::invalid_argument("n:m must satisfy 0 <= n <= m <= 32, got " + std::to_string(n) + ":" + std::to_string(m));
  if (s.cols % m != 0)
    throw std::invalid_argument("row length " + std::to_string(s.cols) + " is not a multiple of m = " + std::to_string(m));
}

// Chunk width N (elements per 32 bytes) of the CUTLASS metadata word for this kind.
int cutlass_chunk(Kind kind) { return kChunkBytes / kind_bytes(kind); }

void check_format_shape(Matrix2D s, Kind kind, Format format) {
  check_shape(s);
  if (format == Format::Packed) {
    if (s.cols % 8 != 0)
      throw std::invalid_argument("packed format needs the row length (" + std::to_string(s.cols) +
                                  ") to be a multiple of 8 (two groups of four per metadata byte)");
    return;
  }
  const int word = meta_word_bytes(kind, format), row_block = word == 2 ? 32 : 16;
  const int col_block = 2 * cutlass_chunk(kind);  // CUTLASS interleaves metadata words in column pairs
  if (s.rows % row_block != 0 || s.cols % col_block != 0)
    throw std::invalid_argument("cutlass format for " + std::to_string(8 * kind_bytes(kind)) +
                                "-bit elements needs rows % " + std::to_string(row_block) + " == 0 and columns % " +
                                std::to_string(col_block) + " == 0, got (" + std::to_string(s.rows) + ", " +
                                std::to_string(s.cols) + ")");
}

}  // namespace

int meta_word_bytes(Kind kind, Format format) {
  if (format == Format::Packed) return 1;
  return kind_bytes(kind) == 1 ? 4 : 2;
}

int64_t meta_bytes(Matrix2D s, Kind kind, Format format) {
  if (format == Format::Packed) return s.rows * (s.cols / 8);
  return s.rows * (s.cols / cutlass_chunk(kind)) * meta_word_bytes(kind, format);
}

FirstErrors mask_nm(const void* in, uint8_t* keep, Matrix2D s, Kind kind, int n, int m, Target t) {
  check_pattern(s, n, m);
  DeviceGuard guard(t);
  ErrorSlots error(t);
  with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    constexpr int N = kChunkBytes / int(sizeof(typename Elem<K>::Bits));
    if (N % m != 0) {
      execute(MaskGroupOp<K>{static_cast<const typename Elem<K>::Bits*>(in), keep, s, n, m, error.ptr()}, t);
    } else if (can_vectorize(s, kind_bytes(kind), {in, keep}) && n == 2 && m == 4) {
      execute(MaskChunkOp<K, true, true>{static_cast<const typename Elem<K>::Bits*>(in), keep, s, n, m, error.ptr()}, t);
    } else if (n == 2 && m == 4) {
      execute(MaskChunkOp<K, false, true>{static_cast<const typename Elem<K>::Bits*>(in), keep, s, n, m, error.ptr()}, t);
    } else {
      execute(MaskChunkOp<K, false, false>{static_cast<const typename Elem<K>::Bits*>(in), keep, s, n, m, error.ptr()}, t);
    }
  });
  return error.read();
}

FirstErrors find_overfull(const void* in, Matrix2D s, Kind kind, int n, int m, Target t) {
  check_pattern(s, n, m);
  DeviceGuard guard(t);
  ErrorSlots error(t);
  with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    execute(OverfullOp<K>{static_cast<const typename Elem<K>::Bits*>(in), s, n, m, error.ptr()}, t);
  });
  return error.read();
}

FirstErrors compress(const void* in, void* values, void* meta, Matrix2D s, Kind kind, Format format, bool prune, Target t) {
  check_format_shape(s, kind, format);
  DeviceGuard guard(t);
  ErrorSlots error(t);
  const bool vec = can_vectorize(s, kind_bytes(kind), {in, values});
  with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    using Bits = typename Elem<K>::Bits;
    const auto* src = static_cast<const Bits*>(in);
    auto* dst = static_cast<Bits*>(values);
    auto* words = static_cast<typename CutlassWord<K>::type*>(meta);
    if constexpr (K == Kind::F32) {  // two groups (packed) or four pairs (cutlass) per chunk: element-wise
      if (format == Format::Packed) {
        auto* codes = static_cast<uint8_t*>(meta);
        if (vec) execute(CompressPackedOp<K, true>{src, dst, codes, s, prune, error.ptr()}, t);
        else execute(CompressPackedOp<K, false>{src, dst, codes, s, prune, error.ptr()}, t);
      } else {
        if (vec) execute(CompressCutlassOp<K, true>{src, dst, words, s, prune, error.ptr()}, t);
        else execute(CompressCutlassOp<K, false>{src, dst, words, s, prune, error.ptr()}, t);
      }
    } else {  // 8- and 16-bit kinds: word-wise, branch-free selection
      constexpr int N = kChunkBytes / int(sizeof(Bits));
      const Divider per_row = Divider::of(uint64_t((s.cols + N - 1) / N));
      if (format == Format::Packed) {
        auto* codes = static_cast<uint8_t*>(meta);
        // One metadata store of N / 8 bytes per chunk needs them aligned to their size.
        if (vec && reinterpret_cast<uintptr_t>(meta) % (N / 8) == 0)
          execute(CompressWordsOp<K, true, false>{src, dst, codes, s, prune, error.ptr(), per_row}, t);
        else execute(CompressWordsOp<K, false, false>{src, dst, codes, s, prune, error.ptr(), per_row}, t);
      } else {
        if (vec) execute(CompressWordsOp<K, true, true>{src, dst, words, s, prune, error.ptr(), per_row}, t);
        else execute(CompressWordsOp<K, false, true>{src, dst, words, s, prune, error.ptr(), per_row}, t);
      }
    }
  });
  return error.read();
}

FirstErrors decompress(const void* values, const void* meta, void* dense, Matrix2D s, Kind kind, Format format, Target t) {
  s.row_stride = s.cols;  // the output is contiguous
  check_format_shape(s, kind, format);
  DeviceGuard guard(t);
  ErrorSlots error(t);
  const bool vec = can_vectorize(s, kind_bytes(kind), {values, dense});
  with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    using Bits = typename Elem<K>::Bits;
    const auto* kept = static_cast<const Bits*>(values);
    auto* out = static_cast<Bits*>(dense);
    if (format == Format::Packed) {
      const auto* codes = static_cast<const uint8_t*>(meta);
      if (vec) execute(DecompressPackedOp<K, true>{kept, codes, out, s, error.ptr()}, t);
      else execute(DecompressPackedOp<K, false>{kept, codes, out, s, error.ptr()}, t);
    } else {
      const auto* words = static_cast<const typename CutlassWord<K>::type*>(meta);
      if (vec) execute(DecompressCutlassOp<K, true>{kept, words, out, s, error.ptr()}, t);
      else execute(DecompressCutlassOp<K, false>{kept, words, out, s, error.ptr()}, t);
    }
  });
  return error.read();
}

}  // namespace ps24::cuda
