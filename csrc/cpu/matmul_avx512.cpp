// AVX-512 sparse matmul. Per row, each block of 16 kept values (float32), 32 (bfloat16) or 64
// (int8) names its columns with 2-bit indices; we turn them into a register of permute indices and
// pick the matching X elements out of registers (permutex2var) instead of gathering from memory.
// A tile of R rows x C columns keeps R*C accumulators in registers, so each decoded block is used
// C times and each X block R times. With more columns (int8 N >= 5, bfloat16 N >= 16), the "pair
// tiles" further down decode each row block once and let one single-register permute serve two
// rows.
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

// bfloat16 on CPUs without AVX-512 BF16 (Ice Lake): the vdpbf16ps order emulated on float FMAs, as
// the AVX2 kernel does, 16 lanes at once. X is packed as floats (denormals read as zero), in order:
// a block of 32 values spans 16 groups = 64 floats = 4 registers, and lane i (group i) picks element
// 4i + idx, which for lanes 0-7 lies in registers 0-1 and for lanes 8-15 in registers 2-3 at the
// same position mod 32: two two-register permutes with one index and a blend. Per block and row
// ~26 vector instructions (the AVX2 kernel: ~60 per 2 x 8 lanes), so a GEMV streams weights at
// about memory speed instead of a third of it.

// Clears the magnitude of lanes whose exponent is zero (denormals -> signed zero): DAZ of an input,
// FTZ of a result.
inline __m512 flush_denormals(__m512 v) {
  const __mmask16 tiny = _mm512_testn_epi32_mask(_mm512_castps_si512(v), _mm512_set1_epi32(0x7f800000));
  return _mm512_castsi512_ps(
      _mm512_mask_and_epi32(_mm512_castps_si512(v), tiny, _mm512_castps_si512(v), _mm512_set1_epi32(int(0x80000000u))));
}

struct Bf16Widened {
  __m512 even, odd;        // weights of values 2i and 2i+1 (lane i), as float, denormals zeroed
  __m512i pick_even, pick_odd;  // two-register permute indices: 4 * (i % 8) + idx0 / idx1
};

inline Bf16Widened decode_bf16_widened(const uint16_t* values, uint64_t meta64) {
  Bf16Widened d;
  const __m512i pairs = _mm512_loadu_si512(values);
  d.even = flush_denormals(_mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16)));
  d.odd = flush_denormals(_mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(int(0xffff0000u)))));
  // Lanes 0-7: the low 32 meta bits (group i's nibble at bit 4i), lanes 8-15 the high 32.
  const __m512i halves = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                                  _mm512_set1_epi64(int64_t(meta64)));
  const __m512i shift = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
  const __m512i group = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
  const __m512i three = _mm512_set1_epi32(3);
  d.pick_even = _mm512_ternarylogic_epi32(_mm512_srlv_epi32(halves, shift), three, group, 0xEA);  // (f & 3) | group
  d.pick_odd = _mm512_ternarylogic_epi32(_mm512_srlv_epi32(halves, _mm512_add_epi32(shift, _mm512_set1_epi32(2))),
                                         three, group, 0xEA);
  return d;
}

inline __m512 pick_widened(const __m512 (&t)[4], __m512i index) {
  return _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(t[0], index, t[1]), _mm512_permutex2var_ps(t[2], index, t[3]));
}

template <int R, int C>
void bf16_widened_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const float* xs = static_cast<const float*>(x.data) + c0 * x.stride;
  __m512 acc[R][C];
  Bf16Widened d[R];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for_each_block<uint16_t, R, 32>(
      p, r0,
      [&](int r, const uint16_t* values, const uint8_t* meta) PS24_INLINE {
        d[r] = decode_bf16_widened(values, load_u64(meta));
      },
      [&](int64_t block) PS24_INLINE {
        for (int c = 0; c < C; ++c) {
          const float* xb = xs + c * x.stride + 64 * block;
          const __m512 t[4] = {_mm512_loadu_ps(xb), _mm512_loadu_ps(xb + 16), _mm512_loadu_ps(xb + 32),
                               _mm512_loadu_ps(xb + 48)};
          for (int r = 0; r < R; ++r) {
            __m512 s = acc[r][c];
            s = flush_denormals(_mm512_fmadd_ps(d[r].odd, pick_widened(t, d[r].pick_odd), s));
            s = flush_denormals(_mm512_fmadd_ps(d[r].even, pick_widened(t, d[r].pick_even), s));
            acc[r][c] = s;
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

// ---- more than two columns: row pairs and one-register permutes --------------------------------
//
// A permute that picks from one register (vpermb) costs, with its dot product, 0.75-0.8 cycles
// where the two-register vpermt2b of the tiles above costs 1.05 (measured, 4 x 4 blocks in L1, for
// vpdpbusd and vdpbf16ps alike). One register holds a "window" of X (64 int8 or 32 bfloat16
// elements), of which a row keeps half: half a dot product. So one permute serves two rows: lanes
// 0-7 of the dot product take row A's kept values in the window, lanes 8-15 row B's.
//
// A block of kPairRows rows (4 pairs) is decoded once, on the thread that owns it, into a panel: per
// window and pair, the permute indices and weights of both rows' kept values (A in bytes 0-31, B in
// bytes 32-63). Its column tiles, 4 pairs x 4 columns of accumulators, then stream the panel from
// L1 (decoding inside every tile took about 40% of the int8 time at N = 128, measured in session 1),
// a "step" of 4 entries (one window, every pair) at a time.
//   int8:     the windows in order. (int8 sums are exact: which lane a product lands in is free.)
//   bfloat16: the summation contract gives lane i of a row group i of each block of 32 values.
//             Values 0-15 of a block (its first window) feed lanes 0-7, values 16-31 (its second)
//             lanes 8-15, and the two sets of lanes never meet before the final tree. So the tile
//             makes two passes, "halves": over the first windows of every block into one set of
//             accumulators, then over the second windows into another; each lane runs the same
//             chain of vdpbf16ps as in the contract.
constexpr int kPairRows = 8;
constexpr int kPairs = kPairRows / 2;
struct PairEntry {
  __m512i index, weights;
};
struct PairPanel {
  std::vector<PairEntry> entries;  // half h, step t, pair q at (h * steps + t) * kPairs + q
  int32_t weight_sums[kPairRows] = {};  // int8: each row's sum of weights (the u8 correction)
};
thread_local PairPanel pair_panel;

// The walk over a row block's panel. K is also split into parts (for_each_tile's k_parts) so that a
// part's share of the panel and the X that a full tile reads over it stay within kPartBytes: the
// panel then stays in L1 from one column tile to the next (whole, at K = 4096, a panel and a tile's
// X overflow L1's 48 KB).
constexpr int64_t kPartBytes = 24 * 1024;
struct PairPlan {
  int64_t steps;     // per half: int8 windows, bfloat16 blocks of 32 values; the last zero-padded
  int halves;        // bfloat16: 2, int8: 1
  int k_parts;       // per half
  int64_t x_stride;  // bytes from one step's window of X to the next's
  int parts() const { return halves * k_parts; }
};
inline PairPlan pair_plan(const Problem& p) {
  PairPlan plan;
  plan.steps = (p.K / 2 + 31) / 32;  // 32 kept values per row: an int8 window, a bfloat16 block
  plan.halves = p.kind == Kind::BF16 ? 2 : 1;
  plan.x_stride = 64 * plan.halves;
  const int64_t step_bytes = kPairs * int64_t(sizeof(PairEntry)) + 4 * 64;  // entries + 4 windows
  const int64_t parts = (plan.steps * step_bytes + kPartBytes - 1) / kPartBytes;
  plan.k_parts = int(parts < 1 ? 1 : parts > plan.steps ? plan.steps : parts);
  return plan;
}

// Permute indices (0..63 within the window) of 32 int8 kept values from their 8 meta bytes: value
// v = 8q + j (qword q, byte j) sits in group v/2 and picks element 4 * (v/2) + its 2-bit field.
inline __m256i int8_window_index(uint64_t meta64) {
  alignas(32) static constexpr uint8_t kShift[32] = {  // 2v: value v's field
      0,  2,  4,  6,  8,  10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
      32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62};
  alignas(32) static constexpr uint8_t kGroup[32] = {  // 4 * (v/2)
      0,  0,  4,  4,  8,  8,  12, 12, 16, 16, 20, 20, 24, 24, 28, 28,
      32, 32, 36, 36, 40, 40, 44, 44, 48, 48, 52, 52, 56, 56, 60, 60};
  const __m256i fields = _mm256_multishift_epi64_epi8(
      _mm256_load_si256(reinterpret_cast<const __m256i*>(kShift)), _mm256_set1_epi64x(int64_t(meta64)));
  return _mm256_ternarylogic_epi32(fields, _mm256_set1_epi8(3),
                                   _mm256_load_si256(reinterpret_cast<const __m256i*>(kGroup)), 0xEA);
}

// While a row block's tiles run, its thread brings the next block's weights into cache, a few lines
// per tile call (decoding from memory took ~20% of the bfloat16 time at 4096 x 128 x 4096,
// measured). The next block is usually this thread's too: it takes runs of consecutive blocks.
struct WeightPrefetch {
  const char* at[2] = {};   // values, meta
  const char* end[2] = {};
};
thread_local WeightPrefetch weight_prefetch;

void plan_prefetch(const Problem& p, int64_t next_r0, int64_t value_bytes) {
  const int64_t rows = next_r0 >= p.M ? 0 : p.M - next_r0 < kPairRows ? p.M - next_r0 : kPairRows;
  const int64_t row_bytes[2] = {p.K / 2 * value_bytes, p.meta_cols};
  const char* base[2] = {static_cast<const char*>(p.values), reinterpret_cast<const char*>(p.meta)};
  for (int i = 0; i < 2; ++i) {
    weight_prefetch.at[i] = base[i] + next_r0 * row_bytes[i];
    weight_prefetch.end[i] = weight_prefetch.at[i] + rows * row_bytes[i];
  }
}

inline void prefetch_some_weights() {
  constexpr int kLines = 16;  // a row block has 4 x 4 = 16 tile calls or more (N > 12, 2+ parts)
  for (int i = 0, n = 0; i < 2; ++i)
    for (; n < kLines && weight_prefetch.at[i] < weight_prefetch.end[i]; ++n, weight_prefetch.at[i] += 64)
      _mm_prefetch(weight_prefetch.at[i], _MM_HINT_T0);
}

// Decodes the pair of rows ra (and ra + 1 if `Rows` is 2; else the partner gets zero weights) into
// entries [0, steps) of `first` (and, bfloat16, of `second`: the blocks' second windows), one whole
// 64-byte entry at a time. int8 also sums each row's weights.
template <typename Value, int Rows>
void decode_pair(const Problem& p, int64_t ra, PairEntry* first, PairEntry* second, int32_t* weight_sums) {
  constexpr bool kInt8 = std::is_same_v<Value, int8_t>;
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i index[2] = {}, weights[2] = {}, weight_sum = _mm512_setzero_si512();
  for_each_block<Value, Rows, 32>(
      p, ra,
      [&](int r, const Value* values, const uint8_t* meta) PS24_INLINE {
        if constexpr (kInt8) {
          index[r] = _mm512_castsi256_si512(int8_window_index(load_u64(meta)));
          weights[r] = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(values)));
        } else {
          index[r] = bf16_index(load_u64(meta));
          weights[r] = _mm512_loadu_si512(values);
        }
      },
      [&](int64_t step) PS24_INLINE {
        if constexpr (kInt8) {  // A's 32 bytes, then B's
          const PairEntry entry{_mm512_inserti64x4(index[0], _mm512_castsi512_si256(index[1]), 1),
                                _mm512_inserti64x4(weights[0], _mm512_castsi512_si256(weights[1]), 1)};
          weight_sum = _mm512_dpbusd_epi32(weight_sum, ones, entry.weights);
          first[step * kPairs] = entry;
        } else {  // the first window: A's 32 low bytes, then B's; the second: their high bytes
          first[step * kPairs] = {_mm512_shuffle_i64x2(index[0], index[1], 0x44),
                                  _mm512_shuffle_i64x2(weights[0], weights[1], 0x44)};
          second[step * kPairs] = {_mm512_shuffle_i64x2(index[0], index[1], 0xEE),
                                   _mm512_shuffle_i64x2(weights[0], weights[1], 0xEE)};
        }
      });
  if constexpr (kInt8) {
    weight_sums[0] = _mm512_mask_reduce_add_epi32(0x00FF, weight_sum);
    weight_sums[1] = _mm512_mask_reduce_add_epi32(0xFF00, weight_sum);
  }
}

// Decodes rows r0 .. r0+rows-1 into this thread's panel (the short last step zero-padded by
// for_each_block). bfloat16 reuses bf16_index: vpermb reads only the low 6 bits of its byte
// indices, the position within the window.
template <typename Value>
void decode_pairs(const Problem& p, int64_t r0, int rows) {
  const PairPlan plan = pair_plan(p);
  plan_prefetch(p, r0 + kPairRows, sizeof(Value));
  const int64_t entries = plan.halves * plan.steps * kPairs;
  if (int64_t(pair_panel.entries.size()) < entries) pair_panel.entries.resize(size_t(entries));
  for (int q = 0; 2 * q < rows; ++q) {
    PairEntry* first = pair_panel.entries.data() + q;
    PairEntry* second = first + (plan.halves - 1) * plan.steps * kPairs;
    int32_t* weight_sums = pair_panel.weight_sums + 2 * q;
    if (2 * q + 1 < rows) decode_pair<Value, 2>(p, r0 + 2 * q, first, second, weight_sums);
    else decode_pair<Value, 1>(p, r0 + 2 * q, first, second, weight_sums);
  }
}

// acc[q][c] (in memory, 64-byte aligned) += the dot products of a full tile, 4 pairs x 4 columns,
// over `steps` steps, in assembly: from C++ loops GCC 12 copies every accumulator to another
// register and back in each step (seen in the asm), ~30% more instructions.
// zmm(4q + c): acc[q][c]; zmm16-19: the pairs' indices, zmm20-23: their weights; zmm24: a window
// of one column of X; zmm25-28: the picked elements.
#define PS24_PAIR_COLUMN(dot, x, a0, a1, a2, a3) \
  "vmovdqu64 " x ", %%zmm24\n\t"                 \
  "vpermb %%zmm24, %%zmm16, %%zmm25\n\t"         \
  dot " %%zmm20, %%zmm25, %%zmm" a0 "\n\t"       \
  "vpermb %%zmm24, %%zmm17, %%zmm26\n\t"         \
  dot " %%zmm21, %%zmm26, %%zmm" a1 "\n\t"       \
  "vpermb %%zmm24, %%zmm18, %%zmm27\n\t"         \
  dot " %%zmm22, %%zmm27, %%zmm" a2 "\n\t"       \
  "vpermb %%zmm24, %%zmm19, %%zmm28\n\t"         \
  dot " %%zmm23, %%zmm28, %%zmm" a3 "\n\t"
#define PS24_PAIR_LOOP(dot)                                                                       \
  asm volatile(                                                                                  \
      "vmovdqa64 0(%[acc]), %%zmm0\n\t"    "vmovdqa64 64(%[acc]), %%zmm1\n\t"                    \
      "vmovdqa64 128(%[acc]), %%zmm2\n\t"  "vmovdqa64 192(%[acc]), %%zmm3\n\t"                   \
      "vmovdqa64 256(%[acc]), %%zmm4\n\t"  "vmovdqa64 320(%[acc]), %%zmm5\n\t"                   \
      "vmovdqa64 384(%[acc]), %%zmm6\n\t"  "vmovdqa64 448(%[acc]), %%zmm7\n\t"                   \
      "vmovdqa64 512(%[acc]), %%zmm8\n\t"  "vmovdqa64 576(%[acc]), %%zmm9\n\t"                   \
      "vmovdqa64 640(%[acc]), %%zmm10\n\t" "vmovdqa64 704(%[acc]), %%zmm11\n\t"                  \
      "vmovdqa64 768(%[acc]), %%zmm12\n\t" "vmovdqa64 832(%[acc]), %%zmm13\n\t"                  \
      "vmovdqa64 896(%[acc]), %%zmm14\n\t" "vmovdqa64 960(%[acc]), %%zmm15\n\t"                  \
      "1:\n\t"                                                                                   \
      "vmovdqa64 0(%[e]), %%zmm16\n\t"     "vmovdqa64 64(%[e]), %%zmm20\n\t"                     \
      "vmovdqa64 128(%[e]), %%zmm17\n\t"   "vmovdqa64 192(%[e]), %%zmm21\n\t"                    \
      "vmovdqa64 256(%[e]), %%zmm18\n\t"   "vmovdqa64 320(%[e]), %%zmm22\n\t"                    \
      "vmovdqa64 384(%[e]), %%zmm19\n\t"   "vmovdqa64 448(%[e]), %%zmm23\n\t"                    \
      PS24_PAIR_COLUMN(dot, "(%[x])", "0", "4", "8", "12")                                       \
      PS24_PAIR_COLUMN(dot, "(%[x],%[s],1)", "1", "5", "9", "13")                                \
      PS24_PAIR_COLUMN(dot, "(%[x],%[s],2)", "2", "6", "10", "14")                               \
      PS24_PAIR_COLUMN(dot, "(%[x],%[s3],1)", "3", "7", "11", "15")                              \
      "add $512, %[e]\n\t"                                                                       \
      "add %[step], %[x]\n\t"                                                                    \
      "dec %[n]\n\t"                                                                             \
      "jnz 1b\n\t"                                                                               \
      "vmovdqa64 %%zmm0, 0(%[acc])\n\t"    "vmovdqa64 %%zmm1, 64(%[acc])\n\t"                    \
      "vmovdqa64 %%zmm2, 128(%[acc])\n\t"  "vmovdqa64 %%zmm3, 192(%[acc])\n\t"                   \
      "vmovdqa64 %%zmm4, 256(%[acc])\n\t"  "vmovdqa64 %%zmm5, 320(%[acc])\n\t"                   \
      "vmovdqa64 %%zmm6, 384(%[acc])\n\t"  "vmovdqa64 %%zmm7, 448(%[acc])\n\t"                   \
      "vmovdqa64 %%zmm8, 512(%[acc])\n\t"  "vmovdqa64 %%zmm9, 576(%[acc])\n\t"                   \
      "vmovdqa64 %%zmm10, 640(%[acc])\n\t" "vmovdqa64 %%zmm11, 704(%[acc])\n\t"                  \
      "vmovdqa64 %%zmm12, 768(%[acc])\n\t" "vmovdqa64 %%zmm13, 832(%[acc])\n\t"                  \
      "vmovdqa64 %%zmm14, 896(%[acc])\n\t" "vmovdqa64 %%zmm15, 960(%[acc])\n\t"                  \
      : [e] "+r"(entry), [x] "+r"(x), [n] "+r"(steps)                                            \
      : [acc] "r"(acc), [s] "r"(stride), [s3] "r"(3 * stride), [step] "r"(x_step)                \
      : "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9", "zmm10",  \
        "zmm11", "zmm12", "zmm13", "zmm14", "zmm15", "zmm16", "zmm17", "zmm18", "zmm19", "zmm20", \
        "zmm21", "zmm22", "zmm23", "zmm24", "zmm25", "zmm26", "zmm27", "zmm28", "cc", "memory")

// x: the first step's window of the tile's first column; stride: bytes between columns; x_step:
// bytes between one step's windows and the next's.
template <Kind kind>
void pair_steps_4x4(__m512i (&acc)[kPairs][4], const PairEntry* entry, const uint8_t* x,
                    int64_t stride, int64_t x_step, int64_t steps) {
  static_assert(kPairs == 4 && sizeof(PairEntry) == 128, "the assembly's register and offset plan");
  if (steps <= 0) return;
  if constexpr (kind == Kind::I8) PS24_PAIR_LOOP("vpdpbusd");
  else PS24_PAIR_LOOP("vdpbf16ps");
}
#undef PS24_PAIR_COLUMN
#undef PS24_PAIR_LOOP

// The accumulators of each column tile, per half, kept in memory from one part to the next (per
// thread: the parts of a row block run on the thread that decoded its panel).
struct TileAccumulators {
  __m512i half[2][kPairs][4];
};
thread_local std::vector<TileAccumulators> saved_accumulators;

// A full tile's sums come as vectors of 4 rows x 4 columns: lane i belongs to row i / 4. Spreads one
// 32-bit value per row (the four consecutive ones at `four_rows`) over its row's lanes.
inline __m512i per_row_lanes(const void* four_rows) {
  const __m512i row_of_lane = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  return _mm512_permutexvar_epi32(
      row_of_lane, _mm512_castsi128_si512(_mm_loadu_si128(static_cast<const __m128i*>(four_rows))));
}

// int8 results of a full tile: a tree of adds over all 16 accumulators at once instead of a
// horizontal sum per half accumulator; then the u8 correction and the bias, as vectors.
void store_int8_tile(const Problem& p, const __m512i (&acc)[kPairs][4], int64_t r0, int64_t c0) {
  // Per pair q: chunk j (lanes 4j..4j+3) summed, for columns 0-3. Row A is chunks 0 + 1, B 2 + 3.
  __m512i chunk_sums[kPairs];
  for (int q = 0; q < kPairs; ++q) {
    const __m512i& a = acc[q][0], &b = acc[q][1], &c = acc[q][2], &d = acc[q][3];
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    chunk_sums[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  }
  alignas(64) int32_t sums[kPairRows][4];
  // Rows 4h .. 4h+3: subtract 128 * each row's weight sum, add its bias.
  for (int h = 0; h < 2; ++h) {
    const __m512i& u = chunk_sums[2 * h], &v = chunk_sums[2 * h + 1];
    const __m512i rows = _mm512_add_epi32(_mm512_shuffle_i32x4(u, v, 0x88), _mm512_shuffle_i32x4(u, v, 0xDD));
    const __m512i correction = _mm512_slli_epi32(per_row_lanes(pair_panel.weight_sums + 4 * h), 7);
    const __m512i bias = p.bias ? per_row_lanes(static_cast<const int32_t*>(p.bias) + r0 + 4 * h)
                                : _mm512_setzero_si512();
    _mm512_store_si512(sums[4 * h], _mm512_add_epi32(_mm512_sub_epi32(rows, correction), bias));
  }
  int32_t* out = static_cast<int32_t*>(p.out);
  for (int r = 0; r < kPairRows; ++r)
    for (int c = 0; c < 4; ++c) out[(r0 + r) * p.out_stride_m + (c0 + c) * p.out_stride_n] = sums[r][c];
}

// bfloat16 results of a full tile: the contract's lane tree (matmul.h: reduce16) for all 32 results
// at once, each level as one vector add: s[j] + s[j+8] (first half's lane + second half's), then
// + 4, + 2, + 1; then the bias and the rounding to bfloat16 (float_to_bf16's, as integer ops; the
// scalar stores took ~8% of the bfloat16 time at 4096 x 128 x 4096).
void store_bf16_tile(const Problem& p, const __m512i (&acc)[2][kPairs][4], int64_t r0, int64_t c0) {
  // t[q][c]: lanes 0-7 row 2q's eight sums s[j] + s[j+8], lanes 8-15 row 2q+1's.
  __m512 t[kPairs][4];
  for (int q = 0; q < kPairs; ++q)
    for (int c = 0; c < 4; ++c)
      t[q][c] = _mm512_add_ps(_mm512_castsi512_ps(acc[0][q][c]), _mm512_castsi512_ps(acc[1][q][c]));
  // u[k][c], chunk i (row 4k + i, column c): u[j] = t[j] + t[j+4], j < 4.
  __m512 u[2][4];
  for (int k = 0; k < 2; ++k)
    for (int c = 0; c < 4; ++c) {
      const __m512 &a = t[2 * k][c], &b = t[2 * k + 1][c];
      u[k][c] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
    }
  alignas(64) uint16_t bits[kPairRows][4];
  for (int k = 0; k < 2; ++k) {
    // v[m], chunk i: (u0 + u2, u1 + u3) of row 4k + i in columns 2m and 2m + 1.
    __m512 v[2];
    for (int m = 0; m < 2; ++m) {
      const __m512d a = _mm512_castps_pd(u[k][2 * m]), b = _mm512_castps_pd(u[k][2 * m + 1]);
      v[m] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    // Chunk i: v0 + v1 of row 4k + i, columns 0-3; plus the row's bias.
    __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], 0x88), _mm512_shuffle_ps(v[0], v[1], 0xDD));
    if (p.bias)
      sums = _mm512_add_ps(sums, _mm512_castsi512_ps(per_row_lanes(static_cast<const float*>(p.bias) + r0 + 4 * k)));
    // float_to_bf16: round to nearest even; a NaN stays a quiet NaN.
    const __m512i u = _mm512_castps_si512(sums), high = _mm512_srli_epi32(u, 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    const __m512i rounding = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(high, _mm512_set1_epi32(1)));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, rounding), 16);
    const __m512i quiet = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
    _mm256_store_si256(reinterpret_cast<__m256i*>(bits[4 * k]),
                       _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet)));
  }
  uint16_t* out = static_cast<uint16_t*>(p.out);
  for (int r = 0; r < kPairRows; ++r)
    for (int c = 0; c < 4; ++c) out[(r0 + r) * p.out_stride_m + (c0 + c) * p.out_stride_n] = bits[r][c];
}

// R rows (R/2 pairs, rounded up) x C columns of the output from the panel of rows r0 .. r0+R-1,
// over one part of one half. Full tiles run the assembly loop; edge tiles a plain loop.
template <Kind kind, int R, int C>
void pair_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0, int part) {
  using Value = std::conditional_t<kind == Kind::I8, int8_t, uint16_t>;
  constexpr int Q = (R + 1) / 2;
  const PairPlan plan = pair_plan(p);
  const int h = part / plan.k_parts, k_part = part % plan.k_parts;
  const int64_t first = plan.steps * k_part / plan.k_parts, steps = plan.steps * (k_part + 1) / plan.k_parts - first;
  const int64_t stride = x.stride * int64_t(sizeof(Value));  // bytes between columns of packed X
  const uint8_t* xs = static_cast<const uint8_t*>(x.data) + c0 * stride + first * plan.x_stride + 64 * h;
  const PairEntry* entries = pair_panel.entries.data() + (h * plan.steps + first) * kPairs;
  prefetch_some_weights();

  if (saved_accumulators.size() < size_t((p.N + 3) / 4)) saved_accumulators.resize(size_t((p.N + 3) / 4));
  TileAccumulators& saved = saved_accumulators[size_t(c0 / 4)];
  __m512i (&acc)[kPairs][4] = saved.half[h];
  if (k_part == 0)
    for (auto& pair : acc)
      for (__m512i& v : pair) v = _mm512_setzero_si512();  // also the bit pattern of 0.0f
  if constexpr (R == kPairRows && C == 4) {
    pair_steps_4x4<kind>(acc, entries, xs, stride, plan.x_stride, steps);
  } else {
    __m512i a[Q][C];  // a local copy, so that the accumulators can live in registers
    for (int q = 0; q < Q; ++q)
      for (int c = 0; c < C; ++c) a[q][c] = acc[q][c];
    for (int64_t t = 0; t < steps; ++t, entries += kPairs) {
      for (int c = 0; c < C; ++c) {
        const __m512i window = _mm512_loadu_si512(xs + c * stride + t * plan.x_stride);
        for (int q = 0; q < Q; ++q) {
          const __m512i picked = _mm512_permutexvar_epi8(_mm512_load_si512(&entries[q].index), window);
          const __m512i weights = _mm512_load_si512(&entries[q].weights);
          if constexpr (kind == Kind::I8) a[q][c] = _mm512_dpbusd_epi32(a[q][c], picked, weights);
          else a[q][c] = _mm512_castps_si512(_mm512_dpbf16_ps(_mm512_castsi512_ps(a[q][c]),
                                                              (__m512bh)weights, (__m512bh)picked));
        }
      }
    }
    for (int q = 0; q < Q; ++q)
      for (int c = 0; c < C; ++c) acc[q][c] = a[q][c];
  }
  if (part < plan.parts() - 1) return;

  if constexpr (kind == Kind::I8) {
    if constexpr (R == kPairRows && C == 4) {
      store_int8_tile(p, acc, r0, c0);
    } else {
      for (int r = 0; r < R; ++r) {
        const uint32_t correction = 128u * uint32_t(pair_panel.weight_sums[r]);
        const __mmask16 half = r % 2 ? 0xFF00 : 0x00FF;
        for (int c = 0; c < C; ++c)
          store_int(p, r0 + r, c0 + c, uint32_t(_mm512_mask_reduce_add_epi32(half, acc[r / 2][c])) - correction);
      }
    }
  } else if constexpr (R == kPairRows && C == 4) {
    store_bf16_tile(p, saved.half, r0, c0);
  } else {
    // Row r's 16 contract lanes: its 8 lanes of the first half's accumulator, then of the second's.
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        alignas(64) float first_half[16], second_half[16], lanes[16];
        _mm512_store_si512(first_half, saved.half[0][r / 2][c]);
        _mm512_store_si512(second_half, saved.half[1][r / 2][c]);
        for (int j = 0; j < 8; ++j) {
          lanes[j] = first_half[8 * (r % 2) + j];
          lanes[8 + j] = second_half[8 * (r % 2) + j];
        }
        store_float(p, r0 + r, c0 + c, reduce16(lanes));
      }
    }
  }
}

// ---- the tile kernels by dtype -------------------------------------------------------------

template <int R, int C> struct F32Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { f32_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct BF16Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { bf16_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct BF16WidenedTile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { bf16_widened_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct I8Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { int8_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct I8PairTile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0, int part) { pair_tile<Kind::I8, R, C>(p, x, r0, c0, part); } };
template <int R, int C> struct BF16PairTile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0, int part) { pair_tile<Kind::BF16, R, C>(p, x, r0, c0, part); } };

// Tile shapes. GEMV (N <= 2, memory-bound): one row at a time, so each thread streams a single run
// of weight lines (measured 10-35% faster than 4 interleaved rows in an earlier session, int8 and
// bfloat16; float32 on Ice Lake is the other way round: see run_avx512). Otherwise 4 rows x 4 columns:
// 16 accumulators + 4 weights + 4 indices + 2 X registers fit in 32, and each X load serves 4 rows.
// With more columns the pair tiles (pair_tile). Below kBf16PairMinN / kInt8PairMinN a row block
// meets too few columns to repay writing its panel: measured at 4096 x N x 4096, 1 thread, 4 x 4
// tiles / pair tiles, bfloat16: N = 4 0.74 / 1.36 ms, N = 8 1.45 / 1.89, N = 16 2.58 / 2.24.
constexpr int64_t kBf16PairMinN = 16;
// int8 likewise from N = 5: N = 4 0.33 / 0.35-0.38 ms, N = 8 0.67 / 0.49 (same measurement).
constexpr int64_t kInt8PairMinN = 5;
template <template <int, int> class Kernel>
void run_kernel(const Problem& p, const PackedX& x, int64_t column_bytes) {
  if (p.N <= 2) run_tiles<Kernel, 1, 2>(p, x, column_bytes);
  else run_tiles<Kernel, 4, 4>(p, x, column_bytes);
}

template <template <int, int> class Kernel>
void run_pair_tiles(const Problem& p, const PackedX& x, int64_t column_bytes) {
  run_tiles<Kernel, kPairRows, 4>(
      p, x, column_bytes,
      [&](int64_t r0, int rows) {
        if (p.kind == Kind::I8) decode_pairs<int8_t>(p, r0, rows);
        else decode_pairs<uint16_t>(p, r0, rows);
      },
      pair_plan(p).parts());
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
  // dst row i = column i of the 16 x 16 block at src (+ add, a vector of 16, if given).
  static void transpose(const float* src, int64_t sld, float* dst, int64_t dld, const float* add) {
    __m512 r[16], t[16], u[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * sld);
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j], 128-bit block b: column 4b + j of rows 4i .. 4i+3
    for (int i = 0; i < 4; ++i) {
      u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
      u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    // column 4b + j = blocks b of u[j], u[4 + j], u[8 + j], u[12 + j]
    for (int j = 0; j < 4; ++j) {
      const __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
      const __m512 v2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), v3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
      r[j] = _mm512_shuffle_f32x4(v0, v2, 0x88);
      r[8 + j] = _mm512_shuffle_f32x4(v0, v2, 0xdd);
      r[4 + j] = _mm512_shuffle_f32x4(v1, v3, 0x88);
      r[12 + j] = _mm512_shuffle_f32x4(v1, v3, 0xdd);
    }
    const __m512 a = add ? _mm512_loadu_ps(add) : _mm512_setzero_ps();
    for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * dld, add ? _mm512_add_ps(r[i], a) : r[i]);
  }
};

}  // namespace

// 6 rows x up to 4 vectors: 24 accumulators; each broadcast value serves the panel's vectors.
void run_axpy_avx512(const Problem& p, int width) { run_axpy<Avx512Ops, 6>(p, width); }

bool avx512_vbmi_supported() { return __builtin_cpu_supports("avx512vbmi"); }
bool avx512_bf16_supported() { return __builtin_cpu_supports("avx512bf16"); }

void run_avx512(const Problem& p, const PackedX& x) {
  switch (p.kind) {
    case Kind::BF16:
      // Without vdpbf16ps, two rows at a time: each lane's chain (FMA, then the flush) is ~8 cycles
      // per value pair, so one row alone would wait on it.
      if (!avx512_bf16_supported()) run_tiles<BF16WidenedTile, 2, 2>(p, x, x.stride * 4);
      else if (p.N < kBf16PairMinN) run_kernel<BF16Tile>(p, x, x.stride * 2);
      else run_pair_tiles<BF16PairTile>(p, x, x.stride * 2);
      break;
    case Kind::I8:
      if (p.N < kInt8PairMinN) run_kernel<I8Tile>(p, x, x.stride);
      else run_pair_tiles<I8PairTile>(p, x, x.stride);
      break;
    default:
      // float32 GEMV: 4 rows at a time. On Ice Lake (1 thread, thread CPU time, interleaved, busy
      // machine) 11008x1x4096 6.7-6.9 ms against 7.4-7.8 one row at a time; 4096x1x11008 6.5 / 7.5.
      if (p.N <= 2) run_tiles<F32Tile, 4, 2>(p, x, x.stride * 4);
      else run_kernel<F32Tile>(p, x, x.stride * 4);
      break;
  }
}

}  // namespace ps24::cpu::matmul
