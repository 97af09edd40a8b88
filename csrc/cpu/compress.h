// CPU masks, compression and decompression for n:m / 2:4 sparsity.
// All entry points take raw element bits (the Python layer reinterprets float16, bfloat16, float8 and
// int8 arrays as unsigned integers of the same width) in a C-contiguous (rows, cols) matrix whose
// groups run along the last dimension (the GEMM reduction dimension).
#pragma once
#include <cstdint>

#include "common/sparse24.h"

namespace ps24::cpu {

// What a kernel found wrong with its input; the bindings turn it into a ValueError naming the place.
// Waking threads costs more than it saves on small matrices (and much more on a busy machine).
inline bool worth_threads(int64_t rows, int64_t cols) { return rows > 1 && rows * cols >= (int64_t{1} << 18); }

struct Findings {
  int64_t first_nonfinite = -1;  // flat element index of the first NaN/Inf, or -1
  int64_t first_overfull = -1;   // flat group index of the first group with too many non-zeros, or -1
};

Findings mask_n_of_m(const void* x, int64_t rows, int64_t cols, Kind kind, int n, int m, uint8_t* mask);
Findings count_overfull(const void* x, int64_t rows, int64_t cols, Kind kind, int n, int m);

// 2-D masks: every 4x4 block is 2:4 along its rows and along its columns.
Findings mask_4x4_greedy(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask);
Findings mask_4x4_best(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask);

// "packed": values (rows, cols/2), meta (rows, cols/8) bytes. With prune=false a group holding more
// than two non-zeros is reported in Findings (and the output is not to be used).
Findings compress_packed(const void* x, int64_t rows, int64_t cols, Kind kind, bool prune, void* values,
                         uint8_t* meta);
// Returns the flat group index of the first invalid code (idx0 >= idx1), or -1.
int64_t decompress_packed(const void* values, const uint8_t* meta, int64_t rows, int64_t cols, Kind kind,
                          void* out);

// The flat group index of the first invalid code (code_valid) in `nbytes` bytes of packed metadata
// (two groups per byte, low nibble first), or -1. Vectorized: kernels that trust the codes (matmul)
// run it first.
int64_t first_bad_packed_code(const uint8_t* meta, int64_t nbytes);

// "cutlass": CUTLASS/PyTorch sm80 semi-structured layout. fp32 is 1:2 (pairs), others 2:4.
// Meta words are 16-bit (fp32, fp16, bf16) or 32-bit (8-bit kinds), reordered by cutlass_meta_offset.
Findings compress_cutlass(const void* x, int64_t rows, int64_t cols, Kind kind, bool prune, void* values,
                          void* meta);
int64_t decompress_cutlass(const void* values, const void* meta, int64_t rows, int64_t cols, Kind kind,
                           void* out);

// Per-ISA fast paths for 2:4 "packed" compression and masks; return false when they do not cover
// the kind, so the caller falls back to the scalar path (which gives identical results).
namespace avx512 {
bool compress_packed_2of4(const void* x, int64_t rows, int64_t cols, Kind kind, bool prune, void* values,
                          uint8_t* meta, bool* nonfinite, bool* overfull);
bool mask_2of4(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask, bool* nonfinite);
bool decompress_packed_2of4(const void* values, const uint8_t* meta, int64_t rows, int64_t cols, Kind kind,
                            void* out, bool* bad_code);
}  // namespace avx512
namespace avx2 {
bool compress_packed_2of4(const void* x, int64_t rows, int64_t cols, Kind kind, bool prune, void* values,
                          uint8_t* meta, bool* nonfinite, bool* overfull);
bool mask_2of4(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask, bool* nonfinite);
}  // namespace avx2

}  // namespace ps24::cpu
