// 2:4 sparse matrix product on the CPU, straight from the "packed" layout:
//   out[m, n] = sum_k W[m, k] * X[k, n]  (+ bias[m])
// where W (M, K) is given as values (M, K/2) and meta (M, K/8) and is never decompressed.
//
// Summation order (the contract every SIMD path keeps, so that scalar, AVX2 and AVX-512 give
// bit-identical float results): the kept values of a row are numbered p = 0 .. K/2-1 and padded
// with zero weights to whole blocks; 16 partial sums ("lanes") each run a chain of fused
// multiply-adds, and the lanes are added as a tree: s[j] + s[j+8], then + 4, + 2, + 1; the bias
// is added last.
//   float32:  value p goes to lane p % 16, in increasing p.
//   bfloat16: blocks of 32 values; lane i takes value 2i+1 then 2i of each block (the order of
//             AVX-512 vdpbf16ps), with its denormals-are-zero inputs and flush-to-zero results.
// int8 sums are exact (int32, wrapping), so their order is free.
//
// Large-N regime (matmul_axpy.h): one running sum per output element instead of 16 lanes,
// fma(v_p, x, sum) over the kept values p in increasing order, then the bias (bfloat16: then one
// rounding). float32 from N = kAxpyMinN; bfloat16 from N = kAxpyMinNWidened, and only on CPUs
// without AVX-512 BF16 (Ice Lake: there the lane contract's dot product does not exist and the
// regime runs on float FMAs, inputs widened with denormals read as zero, running sums not flushed).
// So a result depends on which side of its threshold N is (and a bfloat16 one on that CPU feature),
// never on the path chosen: within a regime every path gives bit-identical results, and a column's
// result does not depend on the other columns (batch-invariant within each regime). int8 keeps the
// lane kernels at every N.
//
// The small-N kernels read X from a private copy ("packed X": one row of Kp elements per output column,
// zero-padded) whose element order within a block may be permuted for the ISA's shuffles; see
// x_layout(). Packing costs O(K*N), small next to the O(M*K*N) product.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include <omp.h>

#include "common/sparse24.h"
#include "cpu/isa.h"

// Kernel helpers and the lambdas handed to them must inline, or the accumulators leave registers.
#define PS24_INLINE __attribute__((always_inline))

namespace ps24::cpu::matmul {

// Implicit im2col: X is the patch matrix of a conv (groups = 1, zero padding) over an NHWC input,
// read straight from the input when X is packed, never written out:
//   X[k, n] = input[b, oh * stride_h - pad_h + r * dilation_h, ow * stride_w - pad_w + s * dilation_w, c]
//   (zero outside the input), n = (b * out_height + oh) * out_width + ow, k = (r * kernel_w + s) * channels + c,
// the weight's column order (C innermost, so the groups of four run along the channels). Problem::x
// points at input[0, 0, 0, 0]; strides in elements. Only the large-N regime packs X this way (run()
// refuses the rest): the small-N kernels read the explicit patch matrix.
struct Im2col {
  int64_t height = 0, width = 0, channels = 0, out_height = 0, out_width = 0;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t stride_b = 0, stride_y = 0, stride_x = 0, stride_c = 1;  // of the input (b, y, x, c)
};

// How the large-N regime packs X (matmul_axpy.h): Auto follows axpy_pack_per_panel's rule; the others
// force one way (tests: both give the same bits). Implicit im2col always packs per panel.
enum class XPacking : uint8_t { Auto, Whole, PerPanel };

struct Problem {
  Kind kind = Kind::F32;   // F32, BF16 (float accumulate) or I8 (int32 accumulate)
  int64_t M = 0, N = 0, K = 0;
  const void* values = nullptr;  // (M, K/2), C-contiguous, element type of `kind`
  const uint8_t* meta = nullptr; // (M, meta_cols), C-contiguous
  int64_t meta_cols = 0;
  const void* x = nullptr;       // logical (K, N), element type of `kind`, any element strides
  int64_t x_stride_k = 0, x_stride_n = 0;
  const Im2col* im2col = nullptr;  // set: X is this conv's patch matrix of the input at x (strides unused)
  XPacking x_packing = XPacking::Auto;
  void* out = nullptr;           // logical (M, N): float for F32, bf16 bits for BF16, int32 for I8
  int64_t out_stride_m = 0, out_stride_n = 0;
  const void* bias = nullptr;    // (M,) float for F32/BF16, int32 for I8; or nullptr
  int threads = 0;               // 0: OpenMP's default
};

// Validates the problem (throws std::invalid_argument) and runs it on active_isa().
void run(const Problem& p);
// The part of that validation for p.im2col: its sizes against K, N and the output size rule, and the
// regime (the large-N one only).
void validate_im2col(const Problem& p);

// How the packed copy of X is laid out for one ISA.
//   block: number of elements permuted together; order[i] = source element of slot i in a block.
//   pad:   Kp is K rounded up to this.
//   flip_sign: int8 stored as uint8 x ^ 0x80 (VNNI multiplies unsigned by signed bytes).
//   bf16_bits: bfloat16 X kept as 16-bit patterns (else widened to float).
struct XLayout {
  int block = 1;
  const int* order = nullptr;  // nullptr: identity
  int pad = 1;
  bool flip_sign = false;
  bool bf16_bits = false;
};
XLayout x_layout(Isa isa, Kind kind);

// Packed X: float (F32, BF16 widened) or bf16 bits (XLayout::bf16_bits), int8 for I8; bfloat16
// denormals are flushed to zero when packing (the bfloat16 contract).
struct PackedX {
  const void* data;
  int64_t stride;  // elements between columns (= Kp)
};

// The large-N regime: X packed into panels of `width` columns (matmul_axpy.h; PackedX::stride is
// then the number of floats per panel); each path packs its own.
constexpr int64_t kAxpyMinN = 16;  // measured: the lane kernel is faster at N = 8, slower from 16
// bfloat16 without AVX-512 BF16: the lane kernels (bf16_widened_tile, 2 columns per tile) cost about
// N/2 times a 2-column GEMV, the regime about the same below its panel width (16). Ice Lake,
// 11008x4096, 1 thread CPU time: lane N = 1, 2, 3, 4: 4.1, 5.3, 8.2, 9.8 ms; regime N = 5 and 8: 21.1
// and 21.4 ms; so the lane kernels up to N = 7 (~20 ms at N = 8, even), the regime from 8.
constexpr int64_t kAxpyMinNWidened = 8;
bool avx512_bf16_supported();  // vdpbf16ps, which the AVX-512 bfloat16 kernels use (not Ice Lake)
inline bool axpy_regime(const Problem& p) {
  return p.kind == Kind::F32 ? p.N >= kAxpyMinN
                             : p.kind == Kind::BF16 && p.N >= kAxpyMinNWidened && !avx512_bf16_supported();
}
void run_axpy_scalar(const Problem& p, int width);
void run_axpy_avx2(const Problem& p, int width);
void run_axpy_avx512(const Problem& p, int width);

// Per-ISA kernels over a validated problem and its packed X.
void run_scalar(const Problem& p, const PackedX& x);
void run_avx2(const Problem& p, const PackedX& x);
void run_avx512(const Problem& p, const PackedX& x);
bool avx512_vbmi_supported();  // byte permutes, on top of the dispatch's AVX-512 set

// ---- helpers shared by every path (static: each ISA's translation unit keeps its own copy, so
// the linker can never hand AVX-512 code to the scalar path) ----------------------------------

static inline float bf16_to_float(uint16_t bits) {
  const uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// bfloat16 with denormals read as zero (vdpbf16ps's "DAZ"), keeping the sign.
static inline uint16_t bf16_daz(uint16_t bits) {
  return (bits & 0x7f80u) ? bits : uint16_t(bits & 0x8000u);
}

static inline float bf16_daz_to_float(uint16_t bits) { return bf16_to_float(bf16_daz(bits)); }

// The first 64-byte boundary at or after p: packed X is read with 64-byte vector loads, and one
// that straddles two cache lines costs two.
template <typename T>
static inline T* align_to_64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// Flush-to-zero of a float result, keeping its sign (vdpbf16ps's "FTZ").
static inline float flush_denormal(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays a (quiet) NaN.
static inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// The lane tree of the summation contract.
static inline float reduce16(const float* s) {
  float t[8], u[4];
  for (int j = 0; j < 8; ++j) t[j] = s[j] + s[j + 8];
  for (int j = 0; j < 4; ++j) u[j] = t[j] + t[j + 4];
  const float v0 = u[0] + u[2], v1 = u[1] + u[3];
  return v0 + v1;
}

// Writes one finished output element (bias last, then the output type's rounding).
static inline void store_float(const Problem& p, int64_t m, int64_t n, float sum) {
  if (p.bias) sum += static_cast<const float*>(p.bias)[m];
  const int64_t at = m * p.out_stride_m + n * p.out_stride_n;
  if (p.kind == Kind::BF16) static_cast<uint16_t*>(p.out)[at] = float_to_bf16(sum);
  else static_cast<float*>(p.out)[at] = sum;
}

static inline void store_int(const Problem& p, int64_t m, int64_t n, uint32_t sum) {
  if (p.bias) sum += uint32_t(static_cast<const int32_t*>(p.bias)[m]);  // wraps like int32 hardware
  static_cast<int32_t*>(p.out)[m * p.out_stride_m + n * p.out_stride_n] = int32_t(sum);
}

// Meta bits of values [first, first + 4*nbytes) of row m: 2 bits per value, value p at bit 2p
// (the packed nibble is idx0 | idx1 << 2, groups in ascending order). Bytes past the row end
// read as zero, so a short tail block never reads out of bounds.
static inline void load_meta_bytes(const Problem& p, int64_t m, int64_t first_value, int nbytes,
                                   uint8_t* dst) {
  const int64_t byte0 = first_value / 4;
  const int64_t avail = p.meta_cols - byte0;
  const int n = avail < nbytes ? int(avail < 0 ? 0 : avail) : nbytes;
  std::memset(dst, 0, nbytes);
  std::memcpy(dst, p.meta + m * p.meta_cols + byte0, n);
}

// Copies values [first, first + count) of row m into dst, zero-filling past the row end.
template <typename Value>
static inline void load_value_block(const Problem& p, int64_t m, int64_t first, int count,
                                    Value* dst) {
  const int64_t nv = p.K / 2;
  const int64_t have = nv - first < count ? nv - first : count;
  std::memset(dst, 0, size_t(count) * sizeof(Value));
  std::memcpy(dst, static_cast<const Value*>(p.values) + m * nv + first, size_t(have) * sizeof(Value));
}

// Runs tile(r0, rows, c0, cols) over the output in row blocks of R and column blocks of C, rows
// spread over the threads. Columns come in chunks whose packed X fits in L2, so each thread's
// weight rows are re-read from cache rather than memory for every column block.
// start_rows(r0, rows) runs on the same thread just before a row block's tiles (to decode its
// weights once for all of them).
// k_parts > 1 splits the reduction: a row block runs all its column tiles over the first part of
// the reduction, then all over the next, and so on, so that the tiles' share of decoded weights
// stays in L1 from one tile to the next. The tile is then called as tile(r0, rows, c0, cols, part)
// and carries its accumulators from part to part.
struct NoRowStart {
  void operator()(int64_t, int) const {}
};
template <class Tile, class RowStart = NoRowStart>
static void for_each_tile(const Problem& p, int R, int C, int64_t x_bytes_per_column,
                          const Tile& tile, const RowStart& start_rows = {}, int k_parts = 1) {
  const int64_t l2_budget = 512 * 1024;
  int64_t chunk = l2_budget / (x_bytes_per_column > 0 ? x_bytes_per_column : 1);
  chunk = chunk < C ? C : chunk / C * C;
  const int64_t row_blocks = (p.M + R - 1) / R;
  const int threads = p.threads > 0 ? p.threads : omp_get_max_threads();
  // Small products finish before a second thread would have woken up.
  const bool worth_threads = p.M * p.N * p.K > (int64_t(1) << 20);
  // Row blocks per grab: ~16 grabs per thread. Each grab is one run of consecutive weight rows,
  // which the prefetches (4 KB ahead) and the hardware follow; a thread hopping over small grabs
  // restarts its stream at every hop.
  const int64_t grab = row_blocks / (16 * threads) > 8 ? row_blocks / (16 * threads) : 8;
#pragma omp parallel num_threads(threads) if (worth_threads)
  for (int64_t c_begin = 0; c_begin < p.N; c_begin += chunk) {
    const int64_t c_end = c_begin + chunk < p.N ? c_begin + chunk : p.N;
    // Dynamic schedule: a thread that the OS parks (busy machine) does not hold up half of the
    // work. No barrier between chunks: they write disjoint outputs.
#pragma omp for schedule(dynamic, grab) nowait
    for (int64_t rb = 0; rb < row_blocks; ++rb) {
      const int64_t r0 = rb * R;
      const int rows = int(p.M - r0 < R ? p.M - r0 : R);
      start_rows(r0, rows);
      for (int part = 0; part < k_parts; ++part) {
        for (int64_t c0 = c_begin; c0 < c_end; c0 += C) {
          const int cols = int(c_end - c0 < C ? c_end - c0 : C);
          if constexpr (std::is_invocable_v<const Tile&, int64_t, int, int64_t, int, int>)
            tile(r0, rows, c0, cols, part);
          else
            tile(r0, rows, c0, cols);
        }
      }
    }
  }
}

// Walks the kept values of rows r0 .. r0+R-1 in blocks of BlockValues: decode(r, values, meta)
// for each row, then accumulate(block). The short last block is read from zero-padded copies
// (zero weights add nothing), so no kernel reads past a row.
// stream: prefetch each row's lines ahead. Tiles ask for it in their rows' first column tile,
// which brings the weights from memory; the later ones find them in cache (and the prefetches
// cost a bfloat16 4 x 4 tile ~9% at N = 128: measured).
template <typename Value, int R, int BlockValues, class Decode, class Accumulate>
PS24_INLINE static inline void for_each_block(const Problem& p, int64_t r0, Decode&& decode,
                                  Accumulate&& accumulate, bool stream = true) {
  constexpr int kMetaBytes = BlockValues / 4;
  const int64_t nv = p.K / 2, full_blocks = nv / BlockValues;
  const Value* values = static_cast<const Value*>(p.values) + r0 * nv;
  const uint8_t* meta = p.meta + r0 * p.meta_cols;
  // Every block is one 64-byte line of values. The R rows are R short interleaved streams, which
  // hardware prefetchers pick up late, so ask for the lines 4 KB ahead (harmless past the end; 4 KB
  // measured 5-10% faster than 1 KB for GEMV on every dtype, A/B interleaved on the quiet machine).
  constexpr int kAhead = 64;
  for (int64_t b = 0; b < full_blocks; ++b) {
    for (int r = 0; r < R; ++r) {
      if (stream) {
        __builtin_prefetch(values + r * nv + BlockValues * (b + kAhead));
        __builtin_prefetch(meta + r * p.meta_cols + kMetaBytes * (b + kAhead));
      }
      decode(r, values + r * nv + BlockValues * b, meta + r * p.meta_cols + kMetaBytes * b);
    }
    accumulate(b);
  }
  if (nv % BlockValues) {
    for (int r = 0; r < R; ++r) {
      alignas(64) Value tail_values[BlockValues];
      alignas(8) uint8_t tail_meta[kMetaBytes];
      load_value_block(p, r0 + r, BlockValues * full_blocks, BlockValues, tail_values);
      load_meta_bytes(p, r0 + r, BlockValues * full_blocks, kMetaBytes, tail_meta);
      decode(r, tail_values, tail_meta);
    }
    accumulate(full_blocks);
  }
}

static inline uint32_t load_u32(const uint8_t* src) {
  uint32_t v;
  std::memcpy(&v, src, 4);
  return v;
}

static inline uint64_t load_u64(const uint8_t* src) {
  uint64_t v;
  std::memcpy(&v, src, 8);
  return v;
}

// Tile kernels come as Kernel<rows, cols>::run(p, x, r0, c0) -- or run(p, x, r0, c0, part) for
// kernels that split the reduction (see for_each_tile) -- for every remainder up to R x C
// (templates, so that accumulators live in registers); run_tiles builds the table of them once and
// walks the output with for_each_tile. Each ISA's Kernel types are local to its translation unit.
template <template <int, int> class Kernel>
using TileFn = decltype(&Kernel<1, 1>::run);

template <template <int, int> class Kernel, int Rows, int... Cs>
constexpr std::array<TileFn<Kernel>, sizeof...(Cs)> tile_row(std::integer_sequence<int, Cs...>) {
  return {&Kernel<Rows, Cs + 1>::run...};
}

template <template <int, int> class Kernel, int MaxC, int... Rs>
constexpr auto tile_table(std::integer_sequence<int, Rs...>) {
  return std::array<std::array<TileFn<Kernel>, MaxC>, sizeof...(Rs)>{
      tile_row<Kernel, Rs + 1>(std::make_integer_sequence<int, MaxC>{})...};
}

template <template <int, int> class Kernel, int R, int C, class RowStart = NoRowStart>
static void run_tiles(const Problem& p, const PackedX& x, int64_t column_bytes,
                      const RowStart& start_rows = {}, int k_parts = 1) {
  static constexpr auto table = tile_table<Kernel, C>(std::make_integer_sequence<int, R>{});
  for_each_tile(
      p, R, C, column_bytes,
      [&](int64_t r0, int rows, int64_t c0, int cols, int part) {
        if constexpr (std::is_invocable_v<TileFn<Kernel>, const Problem&, const PackedX&, int64_t,
                                          int64_t, int>)
          table[rows - 1][cols - 1](p, x, r0, c0, part);
        else
          table[rows - 1][cols - 1](p, x, r0, c0);
      },
      start_rows, k_parts);
}

}  // namespace ps24::cpu::matmul
