// AVX-512 sparse matmul. Per row, each block of 16 kept values (float) or 64 (int8) names its
// columns with 2-bit indices; we turn them into a register of permute indices and pick the
// matching X elements out of registers (permutex2var) instead of gathering from memory. A tile of
// R rows x C columns keeps R*C accumulators in registers, so each decoded block is used C times
// and each X block R times.
#include <immintrin.h>

#include <type_traits>

#include "cpu/matmul.h"

namespace ps24::cpu::matmul {
namespace {

// Note: no namespace-scope vector constants; their initialisers would run AVX-512 code at import
// on CPUs without it.

// ---- float32 / bfloat16 --------------------------------------------------------------------

// Permute indices for 16 values whose 2-bit fields are packed in meta32 (value p at bit 2p):
// value p sits in group p/2, i.e. X element 4*(p/2) + field of the 32-element block.
inline __m512i float_index(uint32_t meta32) {
  const __m512i shift = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i group = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i fields = _mm512_srlv_epi32(_mm512_set1_epi32(int(meta32)), shift);
  return _mm512_ternarylogic_epi32(fields, _mm512_set1_epi32(3), group, 0xEA);  // (f & 3) | group
}

template <bool BF16>
inline __m512 load_values16(const void* src) {
  if constexpr (BF16) {
    const __m256i bits = _mm256_loadu_si256(static_cast<const __m256i*>(src));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  } else {
    return _mm512_loadu_ps(src);
  }
}

inline uint32_t load_u32(const uint8_t* src) {
  uint32_t v;
  std::memcpy(&v, src, 4);
  return v;
}

// The lane tree of the summation contract (matmul.h: reduce16), in registers.
inline float reduce_lanes(__m512 s) {
  const __m256 t = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  const __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  const __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));
}

template <int R, int C, bool BF16>
void float_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  using Value = std::conditional_t<BF16, uint16_t, float>;
  const int64_t nv = p.K / 2, full_blocks = nv / 16;
  const Value* values = static_cast<const Value*>(p.values) + r0 * nv;
  const uint8_t* meta = p.meta + r0 * p.meta_cols;
  const float* xs = static_cast<const float*>(x.data) + c0 * x.stride;

  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();

  auto accumulate = [&](const __m512 (&w)[R], const __m512i (&idx)[R], int64_t block) {
    for (int c = 0; c < C; ++c) {
      const float* xb = xs + c * x.stride + 32 * block;
      const __m512 lo = _mm512_loadu_ps(xb), hi = _mm512_loadu_ps(xb + 16);
      for (int r = 0; r < R; ++r)
        acc[r][c] = _mm512_fmadd_ps(w[r], _mm512_permutex2var_ps(lo, idx[r], hi), acc[r][c]);
    }
  };

  for (int64_t b = 0; b < full_blocks; ++b) {
    __m512 w[R];
    __m512i idx[R];
    for (int r = 0; r < R; ++r) {
      w[r] = load_values16<BF16>(values + r * nv + 16 * b);
      idx[r] = float_index(load_u32(meta + r * p.meta_cols + 4 * b));
    }
    accumulate(w, idx, b);
  }
  if (nv % 16) {  // short last block: zero-padded copies (zero weights add nothing)
    __m512 w[R];
    __m512i idx[R];
    for (int r = 0; r < R; ++r) {
      Value tail_values[16];
      uint32_t tail_meta;
      load_value_block(p, r0 + r, 16 * full_blocks, 16, tail_values);
      load_meta_bytes(p, r0 + r, 16 * full_blocks, 4, reinterpret_cast<uint8_t*>(&tail_meta));
      w[r] = load_values16<BF16>(tail_values);
      idx[r] = float_index(tail_meta);
    }
    accumulate(w, idx, full_blocks);
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) store_float(p, r0 + r, c0 + c, reduce_lanes(acc[r][c]));
}

// ---- int8 (VNNI) ---------------------------------------------------------------------------
// X is packed as u8 = x + 128, so vpdpbusd (u8 * s8) gives sum(w * x) + 128 * sum(w); a second
// vpdpbusd against ones accumulates sum(w) for the correction. Byte permutes need AVX-512 VBMI
// (checked at run time by avx512_int8_supported()).
#pragma GCC push_options
#pragma GCC target("avx512vbmi")

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

template <int R, int C>
void int8_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const int64_t nv = p.K / 2, full_blocks = nv / 64;
  const int8_t* values = static_cast<const int8_t*>(p.values) + r0 * nv;
  const uint8_t* meta = p.meta + r0 * p.meta_cols;
  const uint8_t* xs = static_cast<const uint8_t*>(x.data) + c0 * x.stride;
  const __m512i ones = _mm512_set1_epi8(1);

  __m512i acc[R][C], weight_sum[R];
  for (int r = 0; r < R; ++r) {
    weight_sum[r] = _mm512_setzero_si512();
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
  }
  auto accumulate = [&](const __m512i (&w)[R], const __m512i (&idx)[R], int64_t block) {
    for (int r = 0; r < R; ++r) weight_sum[r] = _mm512_dpbusd_epi32(weight_sum[r], ones, w[r]);
    for (int c = 0; c < C; ++c) {
      const uint8_t* xb = xs + c * x.stride + 128 * block;
      const __m512i lo = _mm512_loadu_si512(xb), hi = _mm512_loadu_si512(xb + 64);
      for (int r = 0; r < R; ++r)
        acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], _mm512_permutex2var_epi8(lo, idx[r], hi), w[r]);
    }
  };
  for (int64_t b = 0; b < full_blocks; ++b) {
    __m512i w[R], idx[R];
    for (int r = 0; r < R; ++r) {
      w[r] = _mm512_loadu_si512(values + r * nv + 64 * b);
      idx[r] = int8_index(meta + r * p.meta_cols + 16 * b);
    }
    accumulate(w, idx, b);
  }
  if (nv % 64) {
    __m512i w[R], idx[R];
    for (int r = 0; r < R; ++r) {
      alignas(64) int8_t tail_values[64];
      uint8_t tail_meta[16];
      load_value_block(p, r0 + r, 64 * full_blocks, 64, tail_values);
      load_meta_bytes(p, r0 + r, 64 * full_blocks, 16, tail_meta);
      w[r] = _mm512_load_si512(tail_values);
      idx[r] = int8_index(tail_meta);
    }
    accumulate(w, idx, full_blocks);
  }
  for (int r = 0; r < R; ++r) {
    const uint32_t correction = 128u * uint32_t(_mm512_reduce_add_epi32(weight_sum[r]));
    for (int c = 0; c < C; ++c)
      store_int(p, r0 + r, c0 + c, uint32_t(_mm512_reduce_add_epi32(acc[r][c])) - correction);
  }
}

#pragma GCC pop_options

// ---- the tile kernels by dtype -------------------------------------------------------------

template <int R, int C> struct F32Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { float_tile<R, C, false>(p, x, r0, c0); } };
template <int R, int C> struct BF16Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { float_tile<R, C, true>(p, x, r0, c0); } };
template <int R, int C> struct I8Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { int8_tile<R, C>(p, x, r0, c0); } };

// 4 rows x 4 columns: 16 accumulators + 4 weights + 4 indices + 2 X registers fit in 32.
constexpr int kRows = 4, kCols = 4;

}  // namespace

bool avx512_int8_supported() { return __builtin_cpu_supports("avx512vbmi"); }

void run_avx512(const Problem& p, const PackedX& x) {
  switch (p.kind) {
    case Kind::BF16: run_tiles<BF16Tile, kRows, kCols>(p, x, x.stride * 4); break;
    case Kind::I8: run_tiles<I8Tile, kRows, kCols>(p, x, x.stride); break;
    default: run_tiles<F32Tile, kRows, kCols>(p, x, x.stride * 4); break;
  }
}

}  // namespace ps24::cpu::matmul
