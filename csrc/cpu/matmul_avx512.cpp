// AVX-512 sparse matmul. Per row, each block of 16 kept values (float32), 32 (bfloat16) or 64
// (int8) names its columns with 2-bit indices; we turn them into a register of permute indices and
// pick the matching X elements out of registers (permutex2var) instead of gathering from memory.
// A tile of R rows x C columns keeps R*C accumulators in registers, so each decoded block is used
// C times and each X block R times.
#include <immintrin.h>

#include <vector>

// This file, the shared helpers it inlines included, may also use AVX-512 VBMI (byte permutes);
// run() sends work here only when the CPU has it (avx512_vbmi_supported()).
#pragma GCC target("avx512vbmi")
#include "cpu/matmul.h"
#include "cpu/matmul_axpy.h"

namespace ps24::cpu::matmul {
namespace {

// Note: no namespace-scope vector constants; their initialisers would run AVX-512 code at import
// on CPUs without it.

// The lane tree of the summation contract (matmul.h: reduce16), in registers.
inline float reduce_lanes(__m512 s) {
  const __m256 t = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  const __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  const __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));
}

// ---- float32: one FMA per 16 values ----------------------------------------------------------

// Permute indices for 16 values whose 2-bit fields are packed in meta32 (value p at bit 2p):
// value p sits in group p/2, i.e. X element 4*(p/2) + field of the 32-element block.
inline __m512i f32_index(uint32_t meta32) {
  const __m512i shift = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i group = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i fields = _mm512_srlv_epi32(_mm512_set1_epi32(int(meta32)), shift);
  return _mm512_ternarylogic_epi32(fields, _mm512_set1_epi32(3), group, 0xEA);  // (f & 3) | group
}

template <int R, int C>
void f32_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const float* xs = static_cast<const float*>(x.data) + c0 * x.stride;
  __m512 acc[R][C], w[R];
  __m512i idx[R];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for_each_block<float, R, 16>(
      p, r0,
      [&](int r, const float* values, const uint8_t* meta) PS24_INLINE {
        w[r] = _mm512_loadu_ps(values);
        idx[r] = f32_index(load_u32(meta));
      },
      [&](int64_t block) PS24_INLINE {
        for (int c = 0; c < C; ++c) {
          const float* xb = xs + c * x.stride + 32 * block;
          const __m512 lo = _mm512_loadu_ps(xb), hi = _mm512_loadu_ps(xb + 16);
          for (int r = 0; r < R; ++r)
            acc[r][c] = _mm512_fmadd_ps(w[r], _mm512_permutex2var_ps(lo, idx[r], hi), acc[r][c]);
        }
      },
      c0 == 0);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) store_float(p, r0 + r, c0 + c, reduce_lanes(acc[r][c]));
}

// ---- bfloat16 ---------------------------------------------------------------------------------

// Byte permute indices for the 32 bfloat16 values of 8 meta bytes: value p = byte pair (2p, 2p+1)
// picks X element e = 4*(p/2) + field, i.e. bytes 2e and 2e+1. (A byte permute, because word
// permutes are slow on Zen 4.) Shifting by 2p-1 (the shift wraps within the qword) lands the
// field at bits 1-2, i.e. already doubled.
inline __m512i bf16_index(uint64_t meta64) {
  alignas(64) static constexpr uint8_t kShift[64] = {
      63, 63, 1,  1,  3,  3,  5,  5,  7,  7,  9,  9,  11, 11, 13, 13,
      15, 15, 17, 17, 19, 19, 21, 21, 23, 23, 25, 25, 27, 27, 29, 29,
      31, 31, 33, 33, 35, 35, 37, 37, 39, 39, 41, 41, 43, 43, 45, 45,
      47, 47, 49, 49, 51, 51, 53, 53, 55, 55, 57, 57, 59, 59, 61, 61};
  alignas(64) static constexpr uint8_t kBase[64] = {  // 8*(byte/4) + (byte & 1)
      0,  1,  0,  1,  8,  9,  8,  9,  16, 17, 16, 17, 24, 25, 24, 25,
      32, 33, 32, 33, 40, 41, 40, 41, 48, 49, 48, 49, 56, 57, 56, 57,
      64, 65, 64, 65, 72, 73, 72, 73, 80, 81, 80, 81, 88, 89, 88, 89,
      96, 97, 96, 97, 104, 105, 104, 105, 112, 113, 112, 113, 120, 121, 120, 121};
  const __m512i fields = _mm512_multishift_epi64_epi8(_mm512_load_si512(kShift),
                                                      _mm512_set1_epi64(int64_t(meta64)));
  return _mm512_ternarylogic_epi32(fields, _mm512_set1_epi8(6), _mm512_load_si512(kBase), 0xEA);
}

// bfloat16: one vdpbf16ps per 32 values; its lane i is group i (values 2i and 2i+1). Weights stay
// bfloat16, X is packed as bfloat16 bits.
template <int R, int C>
void bf16_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const uint16_t* xs = static_cast<const uint16_t*>(x.data) + c0 * x.stride;
  __m512 acc[R][C];
  __m512i w[R], idx[R];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for_each_block<uint16_t, R, 32>(
      p, r0,
      [&](int r, const uint16_t* values, const uint8_t* meta) PS24_INLINE {
        w[r] = _mm512_loadu_si512(values);
        idx[r] = bf16_index(load_u64(meta));
      },
      [&](int64_t block) PS24_INLINE {
        for (int c = 0; c < C; ++c) {
          const uint16_t* xb = xs + c * x.stride + 64 * block;
          const __m512i lo = _mm512_loadu_si512(xb), hi = _mm512_loadu_si512(xb + 32);
          for (int r = 0; r < R; ++r) {
            const __m512i picked = _mm512_permutex2var_epi8(lo, idx[r], hi);
            acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)w[r], (__m512bh)picked);
          }
        }
      },
      c0 == 0);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) store_float(p, r0 + r, c0 + c, reduce_lanes(acc[r][c]));
}

// ---- int8 ----------------------------------------------------------------------------------

// Byte permute indices for 64 values (16 meta bytes).
inline __m512i int8_index(const uint8_t* meta16) {
  // Qword q gets the 16 meta bits of values 8q .. 8q+7; byte j of it then takes bits 2j.. of q.
  const __m512i words = _mm512_cvtepu16_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(meta16)));
  const __m512i shift = _mm512_set1_epi64(0x0e0c0a0806040200LL);
  alignas(64) static constexpr uint8_t kGroup[64] = {
      0,  0,  4,  4,  8,  8,  12, 12, 16, 16, 20, 20, 24, 24, 28, 28,
      32, 32, 36, 36, 40, 40, 44, 44, 48, 48, 52, 52, 56, 56, 60, 60,
      64, 64, 68, 68, 72, 72, 76, 76, 80, 80, 84, 84, 88, 88, 92, 92,
      96, 96, 100, 100, 104, 104, 108, 108, 112, 112, 116, 116, 120, 120, 124, 124};
  const __m512i fields = _mm512_multishift_epi64_epi8(shift, words);
  return _mm512_ternarylogic_epi32(fields, _mm512_set1_epi8(3), _mm512_load_si512(kGroup), 0xEA);
}

// int8: X is packed as u8 = x + 128, so vpdpbusd (u8 * s8) gives sum(w * x) + 128 * sum(w); a
// second vpdpbusd against ones accumulates sum(w) for the correction.
template <int R, int C>
void int8_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const uint8_t* xs = static_cast<const uint8_t*>(x.data) + c0 * x.stride;
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc[R][C], weight_sum[R], w[R], idx[R];
  for (int r = 0; r < R; ++r) {
    weight_sum[r] = _mm512_setzero_si512();
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
  }
  for_each_block<int8_t, R, 64>(
      p, r0,
      [&](int r, const int8_t* values, const uint8_t* meta) PS24_INLINE {
        w[r] = _mm512_loadu_si512(values);
        idx[r] = int8_index(meta);
        weight_sum[r] = _mm512_dpbusd_epi32(weight_sum[r], ones, w[r]);
      },
      [&](int64_t block) PS24_INLINE {
        for (int c = 0; c < C; ++c) {
          const uint8_t* xb = xs + c * x.stride + 128 * block;
          const __m512i lo = _mm512_loadu_si512(xb), hi = _mm512_loadu_si512(xb + 64);
          for (int r = 0; r < R; ++r)
            acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], _mm512_permutex2var_epi8(lo, idx[r], hi), w[r]);
        }
      },
      c0 == 0);
  for (int r = 0; r < R; ++r) {
    const uint32_t correction = 128u * uint32_t(_mm512_reduce_add_epi32(weight_sum[r]));
    for (int c = 0; c < C; ++c)
      store_int(p, r0 + r, c0 + c, uint32_t(_mm512_reduce_add_epi32(acc[r][c])) - correction);
  }
}

// ---- more than two columns: each row block decoded once --------------------------------------

// int8 with N > 2: a weight block meets several column tiles, and decoding its permute indices
// inside every tile took about 40% of the time at N = 128 (measured). So a block of kPanelRows
// rows is decoded once, on the thread that owns it, into a panel (indices and zero-padded weights,
// 64-byte aligned, block-major) that each of its column tiles then streams from L1. (bfloat16
// decodes with two cheap instructions per block; a panel made it slower: 32 KB of panel plus the X
// stream overflow L1.)
constexpr int kPanelRows = 4;
struct PanelEntry {
  __m512i index, weights;
};
struct Panel {
  std::vector<PanelEntry> entries;  // block b of row r at b * kPanelRows + r
  uint32_t weight_sums[kPanelRows] = {};  // each row's sum of weights (the u8 correction)
};
thread_local Panel panel;

// Blocks of 64 kept values per row, the last one zero-padded.
inline int64_t panel_blocks(const Problem& p) { return (p.K / 2 + 63) / 64; }

// Decodes rows r0 .. r0+rows-1 into this thread's panel (the short last block zero-padded by
// for_each_block) and sums each row's weights.
void decode_int8_panel(const Problem& p, int64_t r0, int rows) {
  const int64_t blocks = panel_blocks(p);
  if (int64_t(panel.entries.size()) < blocks * kPanelRows)
    panel.entries.resize(size_t(blocks * kPanelRows));
  PanelEntry* entries = panel.entries.data();
  const __m512i ones = _mm512_set1_epi8(1);
  for (int r = 0; r < rows; ++r) {
    PanelEntry entry;
    __m512i weight_sum = _mm512_setzero_si512();
    for_each_block<int8_t, 1, 64>(
        p, r0 + r,
        [&](int, const int8_t* values, const uint8_t* meta) PS24_INLINE {
          entry = {int8_index(meta), _mm512_loadu_si512(values)};
          weight_sum = _mm512_dpbusd_epi32(weight_sum, ones, entry.weights);
        },
        [&](int64_t block) PS24_INLINE { entries[block * kPanelRows + r] = entry; });
    panel.weight_sums[r] = uint32_t(_mm512_reduce_add_epi32(weight_sum));
  }
}

// int8_tile's arithmetic with the decoding hoisted out. Plain loops rather than for_each_block's
// lambdas: with those, GCC 12 copied accumulators to the stack in every block (seen in the asm).
template <int R, int C>
void int8_panel_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const uint8_t* xs = static_cast<const uint8_t*>(x.data) + c0 * x.stride;
  const PanelEntry* entry = panel.entries.data();
  __m512i acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
  const int64_t blocks = panel_blocks(p);
  for (int64_t b = 0; b < blocks; ++b, entry += kPanelRows) {
    __m512i w[R], idx[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      idx[r] = _mm512_load_si512(&entry[r].index);
      w[r] = _mm512_load_si512(&entry[r].weights);
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const uint8_t* xb = xs + c * x.stride + 128 * b;
      const __m512i lo = _mm512_loadu_si512(xb), hi = _mm512_loadu_si512(xb + 64);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], _mm512_permutex2var_epi8(lo, idx[r], hi), w[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    const uint32_t correction = 128u * panel.weight_sums[r];
    for (int c = 0; c < C; ++c)
      store_int(p, r0 + r, c0 + c, uint32_t(_mm512_reduce_add_epi32(acc[r][c])) - correction);
  }
}

// ---- the tile kernels by dtype -------------------------------------------------------------

template <int R, int C> struct F32Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { f32_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct BF16Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { bf16_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct I8Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { int8_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct I8PanelTile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { int8_panel_tile<R, C>(p, x, r0, c0); } };

// Tile shapes. GEMV (N <= 2, memory-bound): one row at a time, so each thread streams a single run
// of weight lines (measured 10-35% faster than 4 interleaved rows). Otherwise 4 rows x 4 columns:
// 16 accumulators + 4 weights + 4 indices + 2 X registers fit in 32, and each X load serves 4 rows.
// (int8 with N > 2 runs the panel tiles in the same 4 x 4 shape.)
template <template <int, int> class Kernel>
void run_kernel(const Problem& p, const PackedX& x, int64_t column_bytes) {
  if (p.N <= 2) run_tiles<Kernel, 1, 2>(p, x, column_bytes);
  else run_tiles<Kernel, 4, 4>(p, x, column_bytes);
}

// ---- the large-N regime (matmul_axpy.h): broadcast value, X row loads, FMA ------------------

struct Avx512Ops {
  using Vec = __m512;
  static constexpr int kWidth = 16;
  static __m512 zero() { return _mm512_setzero_ps(); }
  static __m512 load(const float* x) { return _mm512_loadu_ps(x); }
  static __m512 broadcast(float v) { return _mm512_set1_ps(v); }
  static __m512 fma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* dst, __m512 v) { _mm512_storeu_ps(dst, v); }
};

}  // namespace

// 6 rows x up to 4 vectors: 24 accumulators; each broadcast value serves the panel's vectors.
void run_axpy_avx512(const Problem& p, const PackedX& x, int width) {
  run_axpy<Avx512Ops, 6>(p, x, width);
}

bool avx512_vbmi_supported() { return __builtin_cpu_supports("avx512vbmi"); }

void run_avx512(const Problem& p, const PackedX& x) {
  switch (p.kind) {
    case Kind::BF16: run_kernel<BF16Tile>(p, x, x.stride * 2); break;
    case Kind::I8:
      if (p.N <= 2) run_tiles<I8Tile, 1, 2>(p, x, x.stride);
      else run_tiles<I8PanelTile, kPanelRows, 4>(p, x, x.stride, [&](int64_t r0, int rows) {
          decode_int8_panel(p, r0, rows);
        });
      break;
    default: run_kernel<F32Tile>(p, x, x.stride * 4); break;
  }
}

}  // namespace ps24::cpu::matmul
