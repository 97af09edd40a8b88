// AVX-512 fast paths for 2:4: one 512-bit register holds 8 (16-bit), 4 (32-bit) or 16 (8-bit)
// groups. Within each group, rotations give every element its three neighbours; "j beats i" is a
// compare (ties: lower index wins), and an element is kept unless two neighbours beat it. Kept
// values leave in column order through vpcompress, which is exactly the packed layout.
#include <immintrin.h>

#include "cpu/compress.h"

namespace ps24::cpu::avx512 {
namespace {

// keep-mask nibble -> packed code nibble, and back (0 marks an invalid code).
// (Functions, not globals: a global vector constant would be built with AVX instructions at import
// time, on CPUs that may not have them.)
inline __m128i code_of_keep() { return _mm_setr_epi8(0, 0, 0, 0x4, 0, 0x8, 0x9, 0, 0, 0xC, 0xD, 0, 0xE, 0, 0, 0); }
inline __m128i keep_of_code() { return _mm_setr_epi8(0, 0, 0, 0, 0x3, 0, 0, 0, 0x5, 0x6, 0, 0, 0x9, 0xA, 0xC, 0); }
constexpr uint64_t kLowNibbles = 0x0F0F0F0F0F0F0F0FULL;

// Maps each nibble of up to 16 nibbles through a 16-entry byte table (pdep spreads, pshufb maps,
// pext gathers back).
inline uint64_t map_nibbles(uint64_t nibbles, int count, __m128i table) {
  const __m128i spread = _mm_set_epi64x(static_cast<int64_t>(_pdep_u64(nibbles >> 32, kLowNibbles)),
                                        static_cast<int64_t>(_pdep_u64(nibbles, kLowNibbles)));
  const __m128i mapped = _mm_shuffle_epi8(table, spread);
  uint64_t lo = _pext_u64(static_cast<uint64_t>(_mm_cvtsi128_si64(mapped)), kLowNibbles);
  if (count <= 8) return lo;
  uint64_t hi = _pext_u64(static_cast<uint64_t>(_mm_extract_epi64(mapped, 1)), kLowNibbles);
  return lo | hi << 32;
}

inline bool any_zero_nibble(uint64_t x, int count) {
  const uint64_t ones = 0x1111111111111111ULL >> (64 - 4 * count);
  const uint64_t folded = (x | x >> 1 | x >> 2 | x >> 3) & ones;
  return folded != ones;
}

// Nibbles whose popcount exceeds two.
inline uint64_t overfull_nibbles(uint64_t nz) {
  uint64_t t = (nz & 0x5555555555555555ULL) + ((nz >> 1) & 0x5555555555555555ULL);
  t = (t & 0x3333333333333333ULL) + ((t >> 2) & 0x3333333333333333ULL);
  return (t & 0x4444444444444444ULL) | (t & (t >> 1) & 0x1111111111111111ULL);
}

inline uint64_t keep_from_beats(uint64_t b1, uint64_t b2, uint64_t b3) { return ~((b1 & b2) | (b1 & b3) | (b2 & b3)); }

// ---- per element width -----------------------------------------------------------------------
struct W16 {
  using T = uint16_t;
  static constexpr int kLanes = 32;
  static __m512i key(__m512i v, Kind) { return _mm512_and_si512(v, _mm512_set1_epi16(0x7fff)); }
  static uint64_t nonfinite(__m512i v, Kind kind) {
    const __m512i e = _mm512_set1_epi16(static_cast<short>(kind == Kind::F16 ? 0x7c00 : 0x7f80));
    return _mm512_cmpeq_epi16_mask(_mm512_and_si512(v, e), e);
  }
  static uint64_t beats(__m512i key, int r, uint64_t ties) {
    const __m512i n = r == 1 ? _mm512_ror_epi64(key, 16) : r == 2 ? _mm512_ror_epi64(key, 32) : _mm512_ror_epi64(key, 48);
    return _mm512_cmpgt_epu16_mask(n, key) | (_mm512_cmpeq_epu16_mask(n, key) & ties);
  }
  static uint64_t nonzero(__m512i key) { return _mm512_test_epi16_mask(key, key); }
  static __m256i compress(uint64_t keep, __m512i v) { return _mm512_castsi512_si256(_mm512_maskz_compress_epi16(static_cast<__mmask32>(keep), v)); }
  static __m512i expand(uint64_t keep, __m256i v) { return _mm512_maskz_expand_epi16(static_cast<__mmask32>(keep), _mm512_castsi256_si512(v)); }
  static void store_mask(uint8_t* out, uint64_t keep) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_maskz_set1_epi8(static_cast<__mmask32>(keep), 1)); }
  static constexpr uint64_t kTie1 = 0x88888888ULL, kTie2 = 0xCCCCCCCCULL, kTie3 = 0xEEEEEEEEULL;
};

struct W32 {
  using T = uint32_t;
  static constexpr int kLanes = 16;
  static __m512i key(__m512i v, Kind) { return _mm512_and_si512(v, _mm512_set1_epi32(0x7fffffff)); }
  static uint64_t nonfinite(__m512i v, Kind) {
    const __m512i e = _mm512_set1_epi32(0x7f800000);
    return _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, e), e);
  }
  static uint64_t beats(__m512i key, int r, uint64_t ties) {
    const __m512i n = r == 1 ? _mm512_shuffle_epi32(key, _MM_PERM_ADCB)
                    : r == 2 ? _mm512_shuffle_epi32(key, _MM_PERM_BADC)
                             : _mm512_shuffle_epi32(key, _MM_PERM_CBAD);
    return _mm512_cmpgt_epu32_mask(n, key) | (_mm512_cmpeq_epu32_mask(n, key) & ties);
  }
  static uint64_t nonzero(__m512i key) { return _mm512_test_epi32_mask(key, key); }
  static __m256i compress(uint64_t keep, __m512i v) { return _mm512_castsi512_si256(_mm512_maskz_compress_epi32(static_cast<__mmask16>(keep), v)); }
  static __m512i expand(uint64_t keep, __m256i v) { return _mm512_maskz_expand_epi32(static_cast<__mmask16>(keep), _mm512_castsi256_si512(v)); }
  static void store_mask(uint8_t* out, uint64_t keep) { _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_maskz_set1_epi8(static_cast<__mmask16>(keep), 1)); }
  static constexpr uint64_t kTie1 = 0x8888ULL, kTie2 = 0xCCCCULL, kTie3 = 0xEEEEULL;
};

struct W8 {
  using T = uint8_t;
  static constexpr int kLanes = 64;
  static __m512i key(__m512i v, Kind kind) {
    return kind == Kind::I8 ? _mm512_abs_epi8(v) : _mm512_and_si512(v, _mm512_set1_epi8(0x7f));
  }
  static uint64_t nonfinite(__m512i v, Kind kind) {
    if (kind == Kind::I8) return 0;
    const __m512i e = _mm512_set1_epi8(kind == Kind::F8E4M3 ? 0x7f : 0x7c);
    return _mm512_cmpeq_epi8_mask(_mm512_and_si512(v, e), e);
  }
  static uint64_t beats(__m512i key, int r, uint64_t ties) {
    const __m512i n = r == 1 ? _mm512_ror_epi32(key, 8) : r == 2 ? _mm512_ror_epi32(key, 16) : _mm512_ror_epi32(key, 24);
    return _mm512_cmpgt_epu8_mask(n, key) | (_mm512_cmpeq_epu8_mask(n, key) & ties);
  }
  static uint64_t nonzero(__m512i key) { return _mm512_test_epi8_mask(key, key); }
  static __m256i compress(uint64_t keep, __m512i v) { return _mm512_castsi512_si256(_mm512_maskz_compress_epi8(keep, v)); }
  static __m512i expand(uint64_t keep, __m256i v) { return _mm512_maskz_expand_epi8(keep, _mm512_castsi256_si512(v)); }
  static void store_mask(uint8_t* out, uint64_t keep) { _mm512_storeu_si512(out, _mm512_maskz_set1_epi8(keep, 1)); }
  static constexpr uint64_t kTie1 = 0x8888888888888888ULL, kTie2 = 0xCCCCCCCCCCCCCCCCULL, kTie3 = 0xEEEEEEEEEEEEEEEEULL;
};

template <typename W>
inline uint64_t keep_mask(__m512i key) {
  return keep_from_beats(W::beats(key, 1, W::kTie1), W::beats(key, 2, W::kTie2), W::beats(key, 3, W::kTie3)) &
         (~0ULL >> (64 - W::kLanes));
}

// Scalar handling of the groups past the last full register (the same logic, one group at a time).
template <typename W>
inline uint32_t tail_keep(const typename W::T* g, Kind kind) {
  return keep_mask_2_of_4(magnitude_key_bits(g[0], kind), magnitude_key_bits(g[1], kind),
                          magnitude_key_bits(g[2], kind), magnitude_key_bits(g[3], kind));
}

template <typename W>
void compress_rows(const typename W::T* x, int64_t rows, int64_t cols, Kind kind, bool prune, typename W::T* values,
                   uint8_t* meta, bool* nonfinite_out, bool* overfull_out) {
  using T = typename W::T;
  constexpr int L = W::kLanes;
  const int64_t full = cols / L * L;
  bool any_nonfinite = false, any_overfull = false;
#pragma omp parallel for schedule(static) reduction(|| : any_nonfinite, any_overfull) if (worth_threads(rows, cols))
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x + r * cols;
    T* vout = values + r * (cols / 2);
    uint8_t* mout = meta + r * (cols / 8);
    uint64_t nonfinite = 0, overfull = 0;
    for (int64_t c = 0; c < full; c += L) {
      const __m512i v = _mm512_loadu_si512(row + c);
      const __m512i key = W::key(v, kind);
      nonfinite |= W::nonfinite(v, kind);
      if (!prune) overfull |= overfull_nibbles(W::nonzero(key));
      const uint64_t keep = keep_mask<W>(key);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(vout + c / 2), W::compress(keep, v));
      const uint64_t codes = map_nibbles(keep, L / 4, code_of_keep());
      __builtin_memcpy(mout + c / 8, &codes, L / 8);
    }
    for (int64_t c = full; c < cols; c += 4) {
      const T* g = row + c;
      for (int i = 0; i < 4; ++i) nonfinite |= is_nonfinite_bits(g[i], kind);
      uint32_t nz = 0;
      for (int i = 0; i < 4; ++i) nz |= uint32_t(magnitude_key_bits(g[i], kind) != 0) << i;
      if (!prune) overfull |= __builtin_popcount(nz) > 2;
      const uint32_t code = code_from_keep_mask(tail_keep<W>(g, kind));
      vout[c / 2] = g[code_idx0(code)];
      vout[c / 2 + 1] = g[code_idx1(code)];
      if ((c / 4) % 2 == 0) mout[c / 8] = static_cast<uint8_t>(code);
      else mout[c / 8] |= static_cast<uint8_t>(code << 4);
    }
    any_nonfinite = any_nonfinite || nonfinite;
    any_overfull = any_overfull || overfull;
  }
  *nonfinite_out = any_nonfinite;
  *overfull_out = any_overfull;
}

template <typename W>
void mask_rows(const typename W::T* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask, bool* nonfinite_out) {
  constexpr int L = W::kLanes;
  const int64_t full = cols / L * L;
  bool any_nonfinite = false;
#pragma omp parallel for schedule(static) reduction(|| : any_nonfinite) if (worth_threads(rows, cols))
  for (int64_t r = 0; r < rows; ++r) {
    const typename W::T* row = x + r * cols;
    uint8_t* out = mask + r * cols;
    uint64_t nonfinite = 0;
    for (int64_t c = 0; c < full; c += L) {
      const __m512i v = _mm512_loadu_si512(row + c);
      nonfinite |= W::nonfinite(v, kind);
      W::store_mask(out + c, keep_mask<W>(W::key(v, kind)));
    }
    for (int64_t c = full; c < cols; c += 4) {
      for (int i = 0; i < 4; ++i) nonfinite |= is_nonfinite_bits(row[c + i], kind);
      const uint32_t keep = tail_keep<W>(row + c, kind);
      for (int i = 0; i < 4; ++i) out[c + i] = (keep >> i) & 1u;
    }
    any_nonfinite = any_nonfinite || nonfinite;
  }
  *nonfinite_out = any_nonfinite;
}

template <typename W>
void decompress_rows(const typename W::T* values, const uint8_t* meta, int64_t rows, int64_t cols, typename W::T* out,
                     bool* bad_out) {
  using T = typename W::T;
  constexpr int L = W::kLanes;
  const int64_t full = cols / L * L;
  bool any_bad = false;
#pragma omp parallel for schedule(static) reduction(|| : any_bad) if (worth_threads(rows, cols))
  for (int64_t r = 0; r < rows; ++r) {
    const T* vin = values + r * (cols / 2);
    const uint8_t* min = meta + r * (cols / 8);
    T* row = out + r * cols;
    bool bad = false;
    for (int64_t c = 0; c < full; c += L) {
      uint64_t codes = 0;
      __builtin_memcpy(&codes, min + c / 8, L / 8);
      const uint64_t keep = map_nibbles(codes, L / 4, keep_of_code());
      bad |= any_zero_nibble(keep, L / 4);
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vin + c / 2));
      _mm512_storeu_si512(row + c, W::expand(keep, v));
    }
    for (int64_t c = full; c < cols; c += 4) {
      const uint32_t code = (min[c / 8] >> (4 * ((c / 4) % 2))) & 15u;
      T* g = row + c;
      g[0] = g[1] = g[2] = g[3] = 0;
      if (code_idx0(code) >= code_idx1(code)) { bad = true; continue; }
      g[code_idx0(code)] = vin[c / 2];
      g[code_idx1(code)] = vin[c / 2 + 1];
    }
    any_bad = any_bad || bad;
  }
  *bad_out = any_bad;
}

template <typename F>
bool with_width(Kind kind, F&& f) {
  switch (kind_bytes(kind)) {
    case 2: f(W16{}); return true;
    case 4: f(W32{}); return true;
    default: f(W8{}); return true;
  }
}

}  // namespace

bool compress_packed_2of4(const void* x, int64_t rows, int64_t cols, Kind kind, bool prune, void* values,
                          uint8_t* meta, bool* nonfinite, bool* overfull) {
  return with_width(kind, [&](auto w) {
    using W = decltype(w);
    compress_rows<W>(static_cast<const typename W::T*>(x), rows, cols, kind, prune, static_cast<typename W::T*>(values),
                     meta, nonfinite, overfull);
  });
}

bool mask_2of4(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask, bool* nonfinite) {
  return with_width(kind, [&](auto w) {
    using W = decltype(w);
    mask_rows<W>(static_cast<const typename W::T*>(x), rows, cols, kind, mask, nonfinite);
  });
}

bool decompress_packed_2of4(const void* values, const uint8_t* meta, int64_t rows, int64_t cols, Kind kind, void* out,
                            bool* bad_code) {
  return with_width(kind, [&](auto w) {
    using W = decltype(w);
    decompress_rows<W>(static_cast<const typename W::T*>(values), meta, rows, cols, static_cast<typename W::T*>(out), bad_code);
  });
}

}  // namespace ps24::cpu::avx512
