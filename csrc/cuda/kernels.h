// Host-side interface of the GPU mask / compress / decompress kernels (compress_kernels.cu).
// Every entry point validates its arguments (std::invalid_argument), runs on the given stream,
// waits for it and returns the first bad element / group it found (FirstErrors). `on_host` runs the very same per-chunk code on the CPU over host
// pointers: the CPU-only test suite uses it to pin the GPU code to the CPU implementation.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime_api.h>

#include "common/sparse24.h"

namespace ps24::cuda {

// A row-major matrix whose rows may be padded (row_stride >= cols, in elements).
struct Matrix2D {
  int64_t rows = 0, cols = 0, row_stride = 0;
};

enum class Format { Packed, Cutlass };

struct Target {
  bool on_host = false;          // run the kernel body on the CPU over host pointers
  cudaStream_t stream = nullptr;  // the caller's stream (device runs)
  int device = -1;                // the arrays' device (-1: the current one)
  // Caller-owned device memory for the three FirstErrors slots (uint64, initialised to all ones).
  // When set, the call neither allocates nor waits: the kernel records into it and the returned
  // FirstErrors says nothing (used to time the kernels without a host round trip).
  unsigned long long* errors = nullptr;
};

// Raised when no usable CUDA device / driver / library is present ("not available" errors).
struct Unavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Raised when a CUDA call fails on a present device; names the CUDA status.
struct CudaFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws Unavailable unless a CUDA device can be used; returns the number of devices.
int require_device();
// Number of devices, 0 when there is no driver or device (never throws); `why` gets the reason.
int device_count(std::string* why = nullptr);
// Throws CudaFailure naming the status when `status` is not cudaSuccess.
void check_cuda(cudaError_t status, const char* what);

// What a kernel found wrong, as flat row-major indices into the (rows, cols) matrix (-1: nothing):
// the first NaN/Inf element, the first group with too many non-zeros, the first group whose
// metadata code is corrupt. The Python layer turns them into the CPU path's error messages.
struct FirstErrors {
  int64_t nonfinite = -1, overfull = -1, bad_meta = -1;
};

// keep (rows, cols) bytes: 1 where the element is among the n largest magnitudes of its group of
// m along the row (ties keep the lower index).
FirstErrors mask_nm(const void* in, uint8_t* keep, Matrix2D shape, Kind kind, int n, int m, Target t);

// First group of m along the rows with more than n non-zeros (FirstErrors::overfull).
FirstErrors find_overfull(const void* in, Matrix2D shape, Kind kind, int n, int m, Target t);

// values (rows, cols/2), meta: packed (rows, cols/8) bytes or cutlass words (see sparse24.h).
FirstErrors compress(const void* in, void* values, void* meta, Matrix2D shape, Kind kind, Format format,
                     bool prune, Target t);

// dense (rows, cols), contiguous, from compress's output.
FirstErrors decompress(const void* values, const void* meta, void* dense, Matrix2D shape, Kind kind,
                       Format format, Target t);

// Bytes of metadata compress writes for this shape (and the element size of one meta word).
int64_t meta_bytes(Matrix2D shape, Kind kind, Format format);
int meta_word_bytes(Kind kind, Format format);

}  // namespace ps24::cuda
