// AVX2 sparse matmul: the AVX-512 design (matmul_avx512.cpp) with in-lane shuffles. AVX2 has no
// two-table permute across 128-bit lanes, so X is packed (x_layout) such that each 128-bit lane of
// two loaded registers holds exactly the groups its values can name; vpermilps / pshufb pick
// within the lane and a blend takes each value's element from the right register.
#include <immintrin.h>

#include "cpu/matmul.h"
#include "cpu/matmul_axpy.h"

namespace ps24::cpu::matmul {
namespace {

// ---- float32 / bfloat16: 16 values = two halves of 8 lanes (lanes 0-7 and 8-15 of the contract)

// In-lane indices for the 8 values of one half: value p's field is at bit 2p of meta32 (p counted
// from the block start); vpermilps reads only the low 2 bits, so no masking is needed.
inline __m256i half_index(uint32_t meta32, int half) {
  const __m256i shift = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  return _mm256_srlv_epi32(_mm256_set1_epi32(int(meta32 >> (16 * half))), shift);
}

// Values 0,1 | 4,5 of a half take their element from table a ([x0..3 | x8..11]); 2,3 | 6,7 from b.
inline __m256 select_x(__m256 a, __m256 b, __m256i idx) {
  return _mm256_blend_ps(_mm256_permutevar_ps(a, idx), _mm256_permutevar_ps(b, idx), 0xCC);
}

inline float reduce_lanes(__m256 lo, __m256 hi) {
  const __m256 t = _mm256_add_ps(lo, hi);  // s[j] + s[j+8]
  const __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  const __m128 v = _mm_add_ps(u, _mm_movehl_ps(u, u));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)));
}

template <int R, int C>
void f32_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const float* xs = static_cast<const float*>(x.data) + c0 * x.stride;
  __m256 acc[R][C][2], w[R][2];
  __m256i idx[R][2];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c][0] = acc[r][c][1] = _mm256_setzero_ps();
  for_each_block<float, R, 16>(
      p, r0,
      [&](int r, const float* values, const uint8_t* meta) PS24_INLINE {
        for (int h = 0; h < 2; ++h) {
          w[r][h] = _mm256_loadu_ps(values + 8 * h);
          idx[r][h] = half_index(load_u32(meta), h);
        }
      },
      [&](int64_t block) PS24_INLINE {
        for (int c = 0; c < C; ++c) {
          const float* xb = xs + c * x.stride + 32 * block;
          for (int h = 0; h < 2; ++h) {
            const __m256 a = _mm256_loadu_ps(xb + 16 * h), b = _mm256_loadu_ps(xb + 16 * h + 8);
            for (int r = 0; r < R; ++r)
              acc[r][c][h] = _mm256_fmadd_ps(w[r][h], select_x(a, b, idx[r][h]), acc[r][c][h]);
          }
        }
      },
      c0 == 0);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      store_float(p, r0 + r, c0 + c, reduce_lanes(acc[r][c][0], acc[r][c][1]));
}

// ---- bfloat16: the vdpbf16ps order emulated (matmul.h), 32 values per block ------------------
// Lane i of a half is group i: its odd value (idx1) then its even value (idx0), each a fused
// multiply-add whose result is flushed to zero if denormal. X is packed (x_layout) as four
// registers per 8 groups, register j holding element j of every group, so a lane picks its element
// with two blends on the bits of its 2-bit index.

// Clears the magnitude of lanes whose exponent is zero (denormals -> signed zero).
inline __m256 flush_denormals(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i zero_exponent = _mm256_cmpeq_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7f800000)),
                                                   _mm256_setzero_si256());
  return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_and_si256(zero_exponent, _mm256_set1_epi32(0x7fffffff)), bits));
}

struct Bf16Half {
  __m256 even, odd;         // weights of values 2i and 2i+1, as float (denormals zeroed)
  __m256i pick[2][2];       // [even/odd][index bit]: that bit moved to each lane's sign bit
};

inline Bf16Half decode_bf16_half(const uint16_t* values, uint32_t meta32) {
  Bf16Half d;
  const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values));
  d.even = flush_denormals(_mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16)));
  d.odd = flush_denormals(_mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32(int(0xffff0000u)))));
  const __m256i m = _mm256_set1_epi32(int(meta32));  // group i's nibble at bit 4i
  const __m256i to_sign = _mm256_setr_epi32(31, 27, 23, 19, 15, 11, 7, 3);
  for (int v = 0; v < 2; ++v)
    for (int bit = 0; bit < 2; ++bit)
      d.pick[v][bit] = _mm256_sllv_epi32(m, _mm256_sub_epi32(to_sign, _mm256_set1_epi32(2 * v + bit)));
  return d;
}

inline __m256 pick_x(const __m256 (&t)[4], const __m256i (&bits)[2]) {
  const __m256 low = _mm256_blendv_ps(t[0], t[1], _mm256_castsi256_ps(bits[0]));
  const __m256 high = _mm256_blendv_ps(t[2], t[3], _mm256_castsi256_ps(bits[0]));
  return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(bits[1]));
}

template <int R, int C>
void bf16_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const float* xs = static_cast<const float*>(x.data) + c0 * x.stride;
  __m256 acc[R][C][2];
  Bf16Half d[R][2];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c][0] = acc[r][c][1] = _mm256_setzero_ps();
  for_each_block<uint16_t, R, 32>(
      p, r0,
      [&](int r, const uint16_t* values, const uint8_t* meta) PS24_INLINE {
        const uint64_t meta64 = load_u64(meta);
        for (int h = 0; h < 2; ++h) d[r][h] = decode_bf16_half(values + 16 * h, uint32_t(meta64 >> (32 * h)));
      },
      [&](int64_t block) PS24_INLINE {
        for (int c = 0; c < C; ++c) {
          for (int h = 0; h < 2; ++h) {
            const float* xb = xs + c * x.stride + 64 * block + 32 * h;
            const __m256 t[4] = {_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8), _mm256_loadu_ps(xb + 16),
                                 _mm256_loadu_ps(xb + 24)};
            for (int r = 0; r < R; ++r) {
              __m256 s = acc[r][c][h];
              s = flush_denormals(_mm256_fmadd_ps(d[r][h].odd, pick_x(t, d[r][h].pick[1]), s));
              s = flush_denormals(_mm256_fmadd_ps(d[r][h].even, pick_x(t, d[r][h].pick[0]), s));
              acc[r][c][h] = s;
            }
          }
        }
      },
      c0 == 0);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      store_float(p, r0 + r, c0 + c, reduce_lanes(acc[r][c][0], acc[r][c][1]));
}

// ---- int8: 32 values per block, products widened to int16 and summed with vpmaddwd ----------

// pshufb indices for 32 values (8 meta bytes): byte p = 4*(p/2 mod 4) + field, i.e. the element
// within its 16-byte table; values 0-7 | 16-23 use table a, 8-15 | 24-31 table b (x_layout).
inline __m256i int8_index(const uint8_t* meta8) {
  const uint64_t meta64 = load_u64(meta8);
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,  //
                                          4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi64x(int64_t(meta64)), spread);
  // Byte j of each dword needs its meta byte shifted right by 2j (bits from the neighbouring
  // byte that 16-bit shifts drag in land above bit 1 and are masked off).
  const __m256i odd_bytes = _mm256_set1_epi16(int16_t(0xff00));
  const __m256i low_word = _mm256_blendv_epi8(bytes, _mm256_srli_epi16(bytes, 2), odd_bytes);
  const __m256i high_word = _mm256_blendv_epi8(_mm256_srli_epi16(bytes, 4),
                                               _mm256_srli_epi16(bytes, 6), odd_bytes);
  const __m256i fields = _mm256_and_si256(_mm256_blend_epi16(low_word, high_word, 0xAA),
                                          _mm256_set1_epi8(3));
  const __m256i group = _mm256_setr_epi8(0, 0, 4, 4, 8, 8, 12, 12, 0, 0, 4, 4, 8, 8, 12, 12,  //
                                         0, 0, 4, 4, 8, 8, 12, 12, 0, 0, 4, 4, 8, 8, 12, 12);
  return _mm256_or_si256(fields, group);
}

inline __m256i dot_int16(__m256i acc, __m128i w, __m128i x) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(w), _mm256_cvtepi8_epi16(x)));
}

template <int R, int C>
void int8_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) {
  const int8_t* xs = static_cast<const int8_t*>(x.data) + c0 * x.stride;
  __m256i acc[R][C], w[R], idx[R];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_si256();
  for_each_block<int8_t, R, 32>(
      p, r0,
      [&](int r, const int8_t* values, const uint8_t* meta) PS24_INLINE {
        w[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values));
        idx[r] = int8_index(meta);
      },
      [&](int64_t block) PS24_INLINE {
        for (int c = 0; c < C; ++c) {
          // 32 values span 64 X bytes, i.e. half of a packed 128-byte layout block (x_layout).
          const int8_t* xb = xs + c * x.stride + 64 * block;
          const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb));
          const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 32));
          for (int r = 0; r < R; ++r) {
            const __m256i sel = _mm256_blend_epi32(_mm256_shuffle_epi8(a, idx[r]),
                                                   _mm256_shuffle_epi8(b, idx[r]), 0xCC);
            acc[r][c] = dot_int16(acc[r][c], _mm256_castsi256_si128(w[r]), _mm256_castsi256_si128(sel));
            acc[r][c] = dot_int16(acc[r][c], _mm256_extracti128_si256(w[r], 1),
                                  _mm256_extracti128_si256(sel, 1));
          }
        }
      },
      c0 == 0);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      alignas(32) uint32_t lanes[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[r][c]);
      uint32_t sum = 0;
      for (uint32_t lane : lanes) sum += lane;
      store_int(p, r0 + r, c0 + c, sum);
    }
}

// ---- the tile kernels by dtype -------------------------------------------------------------

template <int R, int C> struct F32Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { f32_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct BF16Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { bf16_tile<R, C>(p, x, r0, c0); } };
template <int R, int C> struct I8Tile { static void run(const Problem& p, const PackedX& x, int64_t r0, int64_t c0) { int8_tile<R, C>(p, x, r0, c0); } };

// ---- the large-N regime (matmul_axpy.h) ---------------------------------------------------

struct Avx2Ops {
  using Vec = __m256;
  static constexpr int kWidth = 8;
  static __m256 zero() { return _mm256_setzero_ps(); }
  static __m256 load(const float* x) { return _mm256_loadu_ps(x); }
  static __m256 broadcast(float v) { return _mm256_set1_ps(v); }
  static __m256 fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* dst, __m256 v) { _mm256_storeu_ps(dst, v); }
  // dst row i = column i of the 8 x 8 block at src (+ add, a vector of 8, if given).
  static void transpose(const float* src, int64_t sld, float* dst, int64_t dld, const float* add) {
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * sld);
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j], 128-bit lane b: column 4b + j of rows 4i .. 4i+3
    for (int i = 0; i < 2; ++i) {
      u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
      u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int j = 0; j < 4; ++j) {
      r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
      r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
    const __m256 a = add ? _mm256_loadu_ps(add) : _mm256_setzero_ps();
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * dld, add ? _mm256_add_ps(r[i], a) : r[i]);
  }
};

// 16 ymm registers: 2 rows x 2 columns of split accumulators (8) plus weights and indices.
constexpr int kRows = 2, kCols = 2;

}  // namespace

// 2 rows x up to 4 vectors: 8 accumulators of the 16 ymm registers.
void run_axpy_avx2(const Problem& p, int width) { run_axpy<Avx2Ops, 2>(p, width); }

void run_avx2(const Problem& p, const PackedX& x) {
  switch (p.kind) {
    case Kind::BF16: run_tiles<BF16Tile, kRows, kCols>(p, x, x.stride * 4); break;
    case Kind::I8: run_tiles<I8Tile, kRows, kCols>(p, x, x.stride); break;
    default: run_tiles<F32Tile, kRows, kCols>(p, x, x.stride * 4); break;
  }
}

}  // namespace ps24::cpu::matmul
