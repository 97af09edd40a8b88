// AVX2 fast path for 2:4 on 16-bit kinds (float16, bfloat16): the keep mask of four groups at a
// time with the same rotate-and-compare scheme as the AVX-512 path, then BMI2 pext picks the two
// kept values out of each 64-bit group. Other kinds fall back to the scalar path.
#include <immintrin.h>

#include "cpu/compress.h"

namespace ps24::cpu::avx2 {
namespace {

// Lane mask (one bit per 16-bit lane) of a 16-bit compare result.
inline uint32_t lane_mask(__m256i cmp) { return _pext_u32(static_cast<uint32_t>(_mm256_movemask_epi8(cmp)), 0x55555555u); }

// Rotate the four 16-bit lanes of every 64-bit group by r lanes (element i gets element i+r).
inline __m256i rotate_in_groups(__m256i v, int r) {
  const __m256i by1 = _mm256_setr_epi8(2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9,
                                       2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9);
  const __m256i by2 = _mm256_setr_epi8(4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11,
                                       4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  const __m256i by3 = _mm256_setr_epi8(6, 7, 0, 1, 2, 3, 4, 5, 14, 15, 8, 9, 10, 11, 12, 13,
                                       6, 7, 0, 1, 2, 3, 4, 5, 14, 15, 8, 9, 10, 11, 12, 13);
  return _mm256_shuffle_epi8(v, r == 1 ? by1 : r == 2 ? by2 : by3);
}

// Keys are at most 0x7fff, so signed 16-bit compares order them correctly.
inline uint32_t beats(__m256i key, int r, uint32_t ties) {
  const __m256i n = rotate_in_groups(key, r);
  return lane_mask(_mm256_cmpgt_epi16(n, key)) | (lane_mask(_mm256_cmpeq_epi16(n, key)) & ties);
}

inline uint32_t keep_mask16(__m256i key) {
  const uint32_t b1 = beats(key, 1, 0x8888u), b2 = beats(key, 2, 0xCCCCu), b3 = beats(key, 3, 0xEEEEu);
  return ~((b1 & b2) | (b1 & b3) | (b2 & b3)) & 0xFFFFu;
}

inline uint32_t nonfinite16(__m256i v, Kind kind) {
  const __m256i e = _mm256_set1_epi16(static_cast<short>(kind == Kind::F16 ? 0x7c00 : 0x7f80));
  return lane_mask(_mm256_cmpeq_epi16(_mm256_and_si256(v, e), e));
}

inline uint32_t tail_keep(const uint16_t* g, Kind kind) {
  return keep_mask_2_of_4(magnitude_key_bits(g[0], kind), magnitude_key_bits(g[1], kind),
                          magnitude_key_bits(g[2], kind), magnitude_key_bits(g[3], kind));
}

// 16 lanes = four groups; `body(c, keep)` sees each group's 4-bit keep mask.
template <typename Body>
void for_each_group(const uint16_t* row, int64_t cols, Kind kind, uint32_t& nonfinite, Body&& body) {
  const __m256i magnitude = _mm256_set1_epi16(0x7fff);
  const int64_t full = cols / 16 * 16;
  for (int64_t c = 0; c < full; c += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c));
    nonfinite |= nonfinite16(v, kind);
    const uint32_t keep = keep_mask16(_mm256_and_si256(v, magnitude));
    for (int q = 0; q < 4; ++q) body(c + 4 * q, (keep >> (4 * q)) & 15u);
  }
  for (int64_t c = full; c < cols; c += 4) {
    for (int i = 0; i < 4; ++i) nonfinite |= is_nonfinite_bits(row[c + i], kind);
    body(c, tail_keep(row + c, kind));
  }
}

}  // namespace

bool compress_packed_2of4(const void* x, int64_t rows, int64_t cols, Kind kind, bool prune, void* values,
                          uint8_t* meta, bool* nonfinite_out, bool* overfull_out) {
  if (kind != Kind::F16 && kind != Kind::BF16) return false;
  const auto* data = static_cast<const uint16_t*>(x);
  auto* vals = static_cast<uint16_t*>(values);
  bool any_nonfinite = false, any_overfull = false;
#pragma omp parallel for schedule(static) reduction(|| : any_nonfinite, any_overfull) if (worth_threads(rows, cols))
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* row = data + r * cols;
    uint16_t* vout = vals + r * (cols / 2);
    uint8_t* mout = meta + r * (cols / 8);
    uint32_t nonfinite = 0;
    bool overfull = false;
    for_each_group(row, cols, kind, nonfinite, [&](int64_t c, uint32_t keep) {
      uint64_t group;
      __builtin_memcpy(&group, row + c, 8);
      if (!prune) {
        const uint64_t magnitudes = group & 0x7fff7fff7fff7fffULL;
        const uint64_t nonzero_lanes = (magnitudes + 0x7fff7fff7fff7fffULL) & 0x8000800080008000ULL;
        overfull |= __builtin_popcountll(nonzero_lanes) > 2;
      }
      const uint64_t lanes = _pdep_u64(keep, 0x0001000100010001ULL) * 0xFFFFULL;
      const uint32_t kept = static_cast<uint32_t>(_pext_u64(group, lanes));
      __builtin_memcpy(vout + c / 2, &kept, 4);
      const uint32_t code = code_from_keep_mask(keep);
      if ((c / 4) % 2 == 0) mout[c / 8] = static_cast<uint8_t>(code);
      else mout[c / 8] |= static_cast<uint8_t>(code << 4);
    });
    any_nonfinite = any_nonfinite || nonfinite;
    any_overfull = any_overfull || overfull;
  }
  *nonfinite_out = any_nonfinite;
  *overfull_out = any_overfull;
  return true;
}

bool mask_2of4(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask, bool* nonfinite_out) {
  if (kind != Kind::F16 && kind != Kind::BF16) return false;
  const auto* data = static_cast<const uint16_t*>(x);
  bool any_nonfinite = false;
#pragma omp parallel for schedule(static) reduction(|| : any_nonfinite) if (worth_threads(rows, cols))
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* out = mask + r * cols;
    uint32_t nonfinite = 0;
    for_each_group(data + r * cols, cols, kind, nonfinite, [&](int64_t c, uint32_t keep) {
      const uint32_t bytes = static_cast<uint32_t>(_pdep_u64(keep, 0x01010101ULL));
      __builtin_memcpy(out + c, &bytes, 4);
    });
    any_nonfinite = any_nonfinite || nonfinite;
  }
  *nonfinite_out = any_nonfinite;
  return true;
}

}  // namespace ps24::cpu::avx2
