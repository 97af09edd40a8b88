// Scalar reference paths for masks, compression and decompression, and the dispatch to the SIMD
// fast paths. The scalar code is the specification: every SIMD path must match it bit for bit.
#include "cpu/compress.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "cpu/isa.h"

namespace ps24::cpu {
namespace {

constexpr int64_t kNone = std::numeric_limits<int64_t>::max();

template <Kind K>
using KindTag = std::integral_constant<Kind, K>;

// Raw storage type of each kind.
template <Kind K>
using Bits = std::conditional_t<K == Kind::F32, uint32_t, std::conditional_t<K == Kind::F16 || K == Kind::BF16, uint16_t, uint8_t>>;

template <typename F>
decltype(auto) with_kind(Kind kind, F&& f) {
  switch (kind) {
    case Kind::F32: return f(KindTag<Kind::F32>{});
    case Kind::F16: return f(KindTag<Kind::F16>{});
    case Kind::BF16: return f(KindTag<Kind::BF16>{});
    case Kind::I8: return f(KindTag<Kind::I8>{});
    case Kind::F8E4M3: return f(KindTag<Kind::F8E4M3>{});
    case Kind::F8E5M2: return f(KindTag<Kind::F8E5M2>{});
  }
  throw std::invalid_argument("unknown element kind");
}

template <Kind K>
inline uint32_t key_of(Bits<K> b) { return magnitude_key_bits(b, K); }

// |x| as a double, for objectives that add magnitudes (the 4x4 best-pattern search).
double magnitude_value(uint32_t bits, Kind kind) {
  switch (kind) {
    case Kind::F32: { float f; uint32_t b = bits & 0x7fffffffu; std::memcpy(&f, &b, 4); return f; }
    case Kind::BF16: { float f; uint32_t b = (bits & 0x7fffu) << 16; std::memcpy(&f, &b, 4); return f; }
    case Kind::I8: return std::abs(int(static_cast<int8_t>(bits)));
    case Kind::F16: {
      const int e = (bits >> 10) & 0x1f, m = bits & 0x3ff;
      return e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    }
    case Kind::F8E4M3: {
      const int e = (bits >> 3) & 0xf, m = bits & 0x7;
      return e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
    }
    case Kind::F8E5M2: {
      const int e = (bits >> 2) & 0x1f, m = bits & 0x3;
      return e == 0 ? std::ldexp(m, -16) : std::ldexp(4 + m, e - 17);
    }
  }
  return 0;
}

// Runs body(row) over all rows on all cores.
template <typename Body>
void for_each_row(int64_t rows, int64_t cols, Body&& body) {
#pragma omp parallel for schedule(static) if (worth_threads(rows, cols))
  for (int64_t r = 0; r < rows; ++r) body(r);
}

// Smallest flat index reported by any row (kNone when none did).
struct FirstIndex {
  int64_t value = kNone;
  void offer(int64_t i) {
    if (i < kNone) {
#pragma omp critical(ps24_first_index)
      value = std::min(value, i);
    }
  }
  int64_t get() const { return value == kNone ? -1 : value; }
};

template <Kind K>
int64_t first_nonfinite_in_row(const Bits<K>* row, int64_t cols, int64_t base) {
  if constexpr (K == Kind::I8) return kNone;
  for (int64_t c = 0; c < cols; ++c)
    if (is_nonfinite_bits(row[c], K)) return base + c;
  return kNone;
}

// Keep mask of one group of m (<= 16) elements. The 2:4 case has its own loop-free form.
template <Kind K>
inline uint32_t group_keep_mask(const Bits<K>* g, int n, int m) {
  if (n == 2 && m == 4) return keep_mask_2_of_4(key_of<K>(g[0]), key_of<K>(g[1]), key_of<K>(g[2]), key_of<K>(g[3]));
  uint32_t keys[16];
  for (int i = 0; i < m; ++i) keys[i] = key_of<K>(g[i]);
  return keep_mask_n_of_m(keys, n, m);
}

template <Kind K>
inline uint32_t group_nonzeros(const Bits<K>* g, int m) {
  uint32_t nz = 0;
  for (int i = 0; i < m; ++i) nz |= uint32_t(key_of<K>(g[i]) != 0) << i;
  return nz;
}

// ---- 4x4 block patterns ------------------------------------------------------------------------

// The maximal 4x4 0/1 patterns with at most two ones in every row and every column (no element can
// be added): the 90 with exactly two everywhere, and 96 where one row and one column hold a single
// element (greedy can end in those, and they can beat every full pattern). Ascending numeric order
// (bit 4*r + c), so ties pick the same pattern every time.
const std::vector<uint16_t>& maximal_patterns_4x4() {
  static const std::vector<uint16_t> table = [] {
    auto fits = [](uint32_t p) {
      for (int i = 0; i < 4; ++i) {
        int row = 0, col = 0;
        for (int j = 0; j < 4; ++j) {
          row += (p >> (4 * i + j)) & 1;
          col += (p >> (4 * j + i)) & 1;
        }
        if (row > 2 || col > 2) return false;
      }
      return true;
    };
    std::vector<uint16_t> out;
    for (uint32_t p = 0; p < (1u << 16); ++p) {
      if (!fits(p)) continue;
      bool maximal = true;
      for (int b = 0; b < 16 && maximal; ++b) maximal = ((p >> b) & 1) || !fits(p | (1u << b));
      if (maximal) out.push_back(static_cast<uint16_t>(p));
    }
    if (out.size() != 186) throw std::logic_error("expected 186 maximal 4x4 2:4 patterns");
    return out;
  }();
  return table;
}

template <Kind K, bool Exhaustive>
void mask_4x4_block(const Bits<K>* x, int64_t cols, int64_t r0, int64_t c0, uint8_t* mask) {
  uint32_t keys[16];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) keys[4 * i + j] = key_of<K>(x[(r0 + i) * cols + c0 + j]);
  uint32_t chosen = 0;
  if constexpr (Exhaustive) {
    double mags[16];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) mags[4 * i + j] = magnitude_value(x[(r0 + i) * cols + c0 + j], K);
    double best = -1;
    for (uint16_t p : maximal_patterns_4x4()) {
      double kept = 0;
      for (int b = 0; b < 16; ++b)
        if (p >> b & 1) kept += mags[b];
      if (kept > best) { best = kept; chosen = p; }
    }
  } else {
    // Largest magnitude first; ties by position (lower flat index first), as a stable sort would.
    int order[16];
    for (int b = 0; b < 16; ++b) order[b] = b;
    std::stable_sort(order, order + 16, [&](int a, int b) { return keys[a] > keys[b]; });
    int row_kept[4] = {0, 0, 0, 0}, col_kept[4] = {0, 0, 0, 0};
    for (int b : order) {
      const int i = b / 4, j = b % 4;
      if (row_kept[i] < 2 && col_kept[j] < 2) {
        ++row_kept[i];
        ++col_kept[j];
        chosen |= 1u << b;
      }
    }
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) mask[(r0 + i) * cols + c0 + j] = (chosen >> (4 * i + j)) & 1;
}

template <bool Exhaustive>
Findings mask_4x4(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask) {
  return with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    const auto* data = static_cast<const Bits<K>*>(x);
    FirstIndex nonfinite;
#pragma omp parallel for schedule(static) if (worth_threads(rows, cols))
    for (int64_t br = 0; br < rows / 4; ++br) {
      int64_t bad = kNone;
      for (int i = 0; i < 4; ++i)
        bad = std::min(bad, first_nonfinite_in_row<K>(data + (4 * br + i) * cols, cols, (4 * br + i) * cols));
      nonfinite.offer(bad);
      for (int64_t bc = 0; bc < cols / 4; ++bc) mask_4x4_block<K, Exhaustive>(data, cols, 4 * br, 4 * bc, mask);
    }
    return Findings{nonfinite.get(), -1};
  });
}

// ---- packed ------------------------------------------------------------------------------------

template <Kind K>
Findings compress_packed_scalar(const Bits<K>* x, int64_t rows, int64_t cols, bool prune, Bits<K>* values,
                                uint8_t* meta) {
  FirstIndex nonfinite, overfull;
  const int64_t groups = cols / 4;
  for_each_row(rows, cols, [&](int64_t r) {
    const Bits<K>* row = x + r * cols;
    Bits<K>* vout = values + r * (cols / 2);
    uint8_t* mout = meta + r * (cols / 8);
    int64_t first_overfull = kNone;
    for (int64_t g = 0; g < groups; ++g) {
      const Bits<K>* grp = row + 4 * g;
      if (!prune && first_overfull == kNone && __builtin_popcount(group_nonzeros<K>(grp, 4)) > 2)
        first_overfull = r * groups + g;
      // With at most two non-zeros the two largest magnitudes include all of them, so compressing a
      // pattern-conforming group and pruning-then-compressing pick the same positions.
      const uint32_t code = code_from_keep_mask(group_keep_mask<K>(grp, 2, 4));
      vout[2 * g] = grp[code_idx0(code)];
      vout[2 * g + 1] = grp[code_idx1(code)];
      set_packed_code(mout, g, code);
    }
    overfull.offer(first_overfull);
    nonfinite.offer(first_nonfinite_in_row<K>(row, cols, r * cols));
  });
  return Findings{nonfinite.get(), overfull.get()};
}

template <Kind K>
int64_t decompress_packed_scalar(const Bits<K>* values, const uint8_t* meta, int64_t rows, int64_t cols,
                                 Bits<K>* out) {
  FirstIndex bad;
  const int64_t groups = cols / 4;
  for_each_row(rows, cols, [&](int64_t r) {
    const Bits<K>* vin = values + r * (cols / 2);
    const uint8_t* min = meta + r * (cols / 8);
    Bits<K>* row = out + r * cols;
    int64_t first_bad = kNone;
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t code = packed_code(min, g);
      const uint32_t i0 = code_idx0(code), i1 = code_idx1(code);
      Bits<K>* grp = row + 4 * g;
      grp[0] = grp[1] = grp[2] = grp[3] = 0;
      if (!code_valid(code)) {
        first_bad = std::min(first_bad, r * groups + g);
        continue;
      }
      grp[i0] = vin[2 * g];
      grp[i1] = vin[2 * g + 1];
    }
    bad.offer(first_bad);
  });
  return bad.get();
}

// ---- cutlass -----------------------------------------------------------------------------------

// Meta word geometry: nibbles per word, dense columns per word, word size in bytes.
struct CutlassGeometry {
  int nibbles_per_word, cols_per_word, word_bytes;
};
void store_meta_word(void* meta, int64_t at, int word_bytes, uint32_t word) {
  if (word_bytes == 2) static_cast<uint16_t*>(meta)[at] = static_cast<uint16_t>(word);
  else static_cast<uint32_t*>(meta)[at] = word;
}
uint32_t load_meta_word(const void* meta, int64_t at, int word_bytes) {
  return word_bytes == 2 ? static_cast<const uint16_t*>(meta)[at] : static_cast<const uint32_t*>(meta)[at];
}

CutlassGeometry cutlass_geometry(Kind kind) {
  if (kind == Kind::F32) return {4, 8, 2};      // four 1:2 pairs per 16-bit word
  if (kind_bytes(kind) == 2) return {4, 16, 2};  // four 2:4 groups per 16-bit word
  return {8, 32, 4};                             // eight 2:4 groups per 32-bit word
}

template <Kind K>
Findings compress_cutlass_scalar(const Bits<K>* x, int64_t rows, int64_t cols, bool prune, Bits<K>* values,
                                 void* meta) {
  const CutlassGeometry geo = cutlass_geometry(K);
  const int64_t words_per_row = cols / geo.cols_per_word;
  const int elems_per_nibble = K == Kind::F32 ? 2 : 4;
  const int64_t nibbles_per_row = cols / elems_per_nibble;
  FirstIndex nonfinite, overfull;
  for_each_row(rows, cols, [&](int64_t r) {
    const Bits<K>* row = x + r * cols;
    Bits<K>* vout = values + r * (cols / 2);
    int64_t first_overfull = kNone;
    for (int64_t w = 0; w < words_per_row; ++w) {
      uint32_t word = 0;
      for (int q = 0; q < geo.nibbles_per_word; ++q) {
        const int64_t g = w * geo.nibbles_per_word + q;  // group (or pair) index within the row
        const Bits<K>* grp = row + g * elems_per_nibble;
        uint32_t code;
        if constexpr (K == Kind::F32) {
          // 1:2: keep the larger of the pair when pruning (lower index on ties).
          const uint32_t keep = prune ? group_keep_mask<K>(grp, 1, 2) : 3u;
          const uint32_t nz = group_nonzeros<K>(grp, 2) & keep;
          if (!prune && nz == 3u && first_overfull == kNone) first_overfull = r * nibbles_per_row + g;
          code = cutlass_code_for_pair(nz & 1u, nz & 2u);
          const uint32_t pos = code_idx0(code) / 2;
          vout[g] = (keep >> pos & 1u) ? grp[pos] : Bits<K>(0);
        } else {
          uint32_t nz = group_nonzeros<K>(grp, 4);
          uint32_t keep = 15u;
          if (prune) {
            keep = group_keep_mask<K>(grp, 2, 4);
            nz &= keep;
          } else if (__builtin_popcount(nz) > 2 && first_overfull == kNone) {
            first_overfull = r * nibbles_per_row + g;
          }
          code = cutlass_code_from_nonzeros(nz);
          // Pruned-away positions read as +0, exactly as in the pruned dense matrix.
          const uint32_t i0 = code_idx0(code), i1 = code_idx1(code);
          vout[2 * g] = (keep >> i0 & 1u) ? grp[i0] : Bits<K>(0);
          vout[2 * g + 1] = (keep >> i1 & 1u) ? grp[i1] : Bits<K>(0);
        }
        word |= code << (4 * q);
      }
      store_meta_word(meta, cutlass_meta_offset(r, w, rows, geo.word_bytes), geo.word_bytes, word);
    }
    overfull.offer(first_overfull);
    nonfinite.offer(first_nonfinite_in_row<K>(row, cols, r * cols));
  });
  return Findings{nonfinite.get(), overfull.get()};
}

template <Kind K>
int64_t decompress_cutlass_scalar(const Bits<K>* values, const void* meta, int64_t rows, int64_t cols,
                                  Bits<K>* out) {
  const CutlassGeometry geo = cutlass_geometry(K);
  const int64_t words_per_row = cols / geo.cols_per_word;
  const int elems_per_nibble = K == Kind::F32 ? 2 : 4;
  const int64_t nibbles_per_row = cols / elems_per_nibble;
  FirstIndex bad;
  for_each_row(rows, cols, [&](int64_t r) {
    const Bits<K>* vin = values + r * (cols / 2);
    Bits<K>* row = out + r * cols;
    int64_t first_bad = kNone;
    for (int64_t w = 0; w < words_per_row; ++w) {
      const uint32_t word = load_meta_word(meta, cutlass_meta_offset(r, w, rows, geo.word_bytes), geo.word_bytes);
      for (int q = 0; q < geo.nibbles_per_word; ++q) {
        const int64_t g = w * geo.nibbles_per_word + q;
        const uint32_t code = (word >> (4 * q)) & 15u;
        Bits<K>* grp = row + g * elems_per_nibble;
        for (int i = 0; i < elems_per_nibble; ++i) grp[i] = 0;
        if constexpr (K == Kind::F32) {
          // A pair is described as four halves of which an aligned half-pair is kept.
          if (code != 0x4u && code != 0xEu) { first_bad = std::min(first_bad, r * nibbles_per_row + g); continue; }
          grp[code_idx0(code) / 2] = vin[g];
        } else {
          const uint32_t i0 = code_idx0(code), i1 = code_idx1(code);
          if (i0 >= i1) { first_bad = std::min(first_bad, r * nibbles_per_row + g); continue; }
          grp[i0] = vin[2 * g];
          grp[i1] = vin[2 * g + 1];
        }
      }
    }
    bad.offer(first_bad);
  });
  return bad.get();
}

// Turns the output of the packed kernel into the cutlass layout (2:4 kinds). The packed codes name the
// two largest magnitudes; where a group has fewer than two non-zeros, PyTorch names other zero
// positions, so those groups are re-encoded from their non-zero flags and re-gathered (a position
// pruned away reads as +0, one that was not pruned keeps its own bits, e.g. -0.0).
template <Kind K>
void packed_to_cutlass(const Bits<K>* x, int64_t rows, int64_t cols, bool prune, Bits<K>* values,
                       uint8_t* packed_meta, void* meta) {
  const CutlassGeometry geo = cutlass_geometry(K);
  for_each_row(rows, cols, [&](int64_t r) {
    Bits<K>* vrow = values + r * (cols / 2);
    uint8_t* mrow = packed_meta + r * (cols / 8);
    // A cheap, vectorizable scan first: most rows need no re-encoding.
    constexpr Bits<K> all_ones = static_cast<Bits<K>>(~Bits<K>(0));
    constexpr Bits<K> magnitude_bits = K == Kind::I8 ? all_ones : static_cast<Bits<K>>(all_ones >> 1);
    uint32_t zeros = 0;
    for (int64_t p = 0; p < cols / 2; ++p) zeros += (vrow[p] & magnitude_bits) == 0;
    const bool any_zero = zeros != 0;
    for (int64_t g = 0; any_zero && g < cols / 4; ++g) {
      const uint32_t nz0 = key_of<K>(vrow[2 * g]) != 0, nz1 = key_of<K>(vrow[2 * g + 1]) != 0;
      if (nz0 && nz1) continue;
      const uint32_t old_code = packed_code(mrow, g);
      const uint32_t i0 = code_idx0(old_code), i1 = code_idx1(old_code);
      const uint32_t code = cutlass_code_from_nonzeros(nz0 << i0 | nz1 << i1);
      const Bits<K>* grp = x + r * cols + 4 * g;
      for (int k = 0; k < 2; ++k) {
        const uint32_t j = k == 0 ? code_idx0(code) : code_idx1(code);
        vrow[2 * g + k] = (prune && j != i0 && j != i1) ? Bits<K>(0) : grp[j];
      }
      set_packed_code(mrow, g, code);
    }
  });
  // Word w of row r lands at offset(r, w % 2) + (w / 2) * 2 * rows: the 2x2 swizzle only depends on
  // the parity of w, and rows are interwoven only within blocks of `group`. Walking one block of rows
  // word pair by word pair writes the destination contiguously instead of one cache line per word.
  using Word = std::conditional_t<sizeof(Bits<K>) == 1, uint32_t, uint16_t>;  // the packed nibble order is CUTLASS's
  const int64_t group = sizeof(Word) == 2 ? 32 : 16, pairs = cols / geo.cols_per_word / 2;
  const auto* words = reinterpret_cast<const Word*>(packed_meta);  // rows are whole, aligned words
  auto* out = static_cast<Word*>(meta);
#pragma omp parallel for schedule(static) if (worth_threads(rows, cols))
  for (int64_t block = 0; block < rows / group; ++block) {
    int64_t base[32][2];
    for (int64_t i = 0; i < group; ++i)
      for (int parity = 0; parity < 2; ++parity)
        base[i][parity] = cutlass_meta_offset(block * group + i, parity, rows, sizeof(Word));
    for (int64_t pair = 0; pair < pairs; ++pair)
      for (int64_t i = 0; i < group; ++i) {
        const Word* src = words + (block * group + i) * (2 * pairs) + 2 * pair;
        out[base[i][0] + pair * 2 * rows] = src[0];
        out[base[i][1] + pair * 2 * rows] = src[1];
      }
  }
}

// Locates the first NaN/Inf (the SIMD paths only say whether there is one).
Findings locate_nonfinite(const void* x, int64_t rows, int64_t cols, Kind kind) {
  return with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    FirstIndex first;
    const auto* data = static_cast<const Bits<K>*>(x);
    for_each_row(rows, cols, [&](int64_t r) { first.offer(first_nonfinite_in_row<K>(data + r * cols, cols, r * cols)); });
    return Findings{first.get(), -1};
  });
}

}  // namespace

Findings count_overfull(const void* x, int64_t rows, int64_t cols, Kind kind, int n, int m) {
  return with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    const auto* data = static_cast<const Bits<K>*>(x);
    FirstIndex first;
    const int64_t groups = cols / m;
    for_each_row(rows, cols, [&](int64_t r) {
      for (int64_t g = 0; g < groups; ++g)
        if (__builtin_popcount(group_nonzeros<K>(data + r * cols + g * m, m)) > n) {
          first.offer(r * groups + g);
          return;
        }
    });
    return Findings{-1, first.get()};
  });
}

Findings mask_n_of_m(const void* x, int64_t rows, int64_t cols, Kind kind, int n, int m, uint8_t* mask) {
  if (n == 2 && m == 4) {
    bool nonfinite = false, done = false;
    const Isa isa = active_isa();
    if (isa == Isa::Avx512) done = avx512::mask_2of4(x, rows, cols, kind, mask, &nonfinite);
    else if (isa == Isa::Avx2) done = avx2::mask_2of4(x, rows, cols, kind, mask, &nonfinite);
    if (done) return nonfinite ? locate_nonfinite(x, rows, cols, kind) : Findings{};
  }
  return with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    const auto* data = static_cast<const Bits<K>*>(x);
    FirstIndex nonfinite;
    for_each_row(rows, cols, [&](int64_t r) {
      const Bits<K>* row = data + r * cols;
      uint8_t* out = mask + r * cols;
      for (int64_t g = 0; g < cols / m; ++g) {
        const uint32_t keep = group_keep_mask<K>(row + g * m, n, m);
        for (int i = 0; i < m; ++i) out[g * m + i] = (keep >> i) & 1u;
      }
      nonfinite.offer(first_nonfinite_in_row<K>(row, cols, r * cols));
    });
    return Findings{nonfinite.get(), -1};
  });
}

Findings mask_4x4_greedy(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask) {
  return mask_4x4<false>(x, rows, cols, kind, mask);
}
Findings mask_4x4_best(const void* x, int64_t rows, int64_t cols, Kind kind, uint8_t* mask) {
  return mask_4x4<true>(x, rows, cols, kind, mask);
}

Findings compress_packed(const void* x, int64_t rows, int64_t cols, Kind kind, bool prune, void* values,
                         uint8_t* meta) {
  bool nonfinite = false, overfull = false, done = false;
  const Isa isa = active_isa();
  if (isa == Isa::Avx512) done = avx512::compress_packed_2of4(x, rows, cols, kind, prune, values, meta, &nonfinite, &overfull);
  else if (isa == Isa::Avx2) done = avx2::compress_packed_2of4(x, rows, cols, kind, prune, values, meta, &nonfinite, &overfull);
  if (done) {
    Findings f = nonfinite ? locate_nonfinite(x, rows, cols, kind) : Findings{};
    if (overfull) f.first_overfull = count_overfull(x, rows, cols, kind, 2, 4).first_overfull;
    return f;
  }
  return with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    return compress_packed_scalar<K>(static_cast<const Bits<K>*>(x), rows, cols, prune, static_cast<Bits<K>*>(values), meta);
  });
}

int64_t first_bad_packed_code(const uint8_t* meta, int64_t nbytes) {
  // code_valid for 16 nibbles at once: per nibble, (idx1 | 4) - (idx0 + 1) = idx1 - idx0 + 3 lies
  // in 0..6 (no borrow crosses nibbles) and has bit 2 set exactly when idx1 > idx0.
  constexpr uint64_t kLow2 = 0x3333333333333333ull, kOne = 0x1111111111111111ull, kBit2 = 0x4444444444444444ull;
  const int64_t words = nbytes / 8;
  uint64_t all_valid = kBit2;
  for (int64_t w = 0; w < words; ++w) {
    uint64_t x;
    std::memcpy(&x, meta + 8 * w, 8);
    all_valid &= (((x >> 2) & kLow2) | kBit2) - ((x & kLow2) + kOne);
  }
  if (all_valid == kBit2) {
    for (int64_t b = 8 * words; b < nbytes; ++b)
      if (!code_valid(meta[b] & 15u) || !code_valid(meta[b] >> 4)) { all_valid = 0; break; }
    if (all_valid) return -1;
  }
  for (int64_t g = 0; g < 2 * nbytes; ++g)  // rare path: locate the first bad one
    if (!code_valid(packed_code(meta, g))) return g;
  return -1;
}

int64_t decompress_packed(const void* values, const uint8_t* meta, int64_t rows, int64_t cols, Kind kind, void* out) {
  bool bad_code = false;
  if (active_isa() == Isa::Avx512 && avx512::decompress_packed_2of4(values, meta, rows, cols, kind, out, &bad_code) && !bad_code)
    return -1;
  // The scalar path also locates the first bad code when the fast path saw one.
  return with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    return decompress_packed_scalar<K>(static_cast<const Bits<K>*>(values), meta, rows, cols, static_cast<Bits<K>*>(out));
  });
}

Findings compress_cutlass(const void* x, int64_t rows, int64_t cols, Kind kind, bool prune, void* values, void* meta) {
  if (kind != Kind::F32 && active_isa() != Isa::Scalar) {
    // 2:4 kinds: the SIMD packed kernel does the heavy lifting (its codes are CUTLASS's codes), then
    // the few groups with fewer than two non-zeros are re-encoded and the words are reordered.
    std::unique_ptr<uint8_t[]> packed_meta(new uint8_t[static_cast<size_t>(rows * (cols / 8))]);  // no zero-fill
    const Findings f = compress_packed(x, rows, cols, kind, prune, values, packed_meta.get());
    if (f.first_nonfinite >= 0 || f.first_overfull >= 0) return f;
    with_kind(kind, [&](auto tag) {
      constexpr Kind K = decltype(tag)::value;
      packed_to_cutlass<K>(static_cast<const Bits<K>*>(x), rows, cols, prune, static_cast<Bits<K>*>(values),
                           packed_meta.get(), meta);
    });
    return f;
  }
  return with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    return compress_cutlass_scalar<K>(static_cast<const Bits<K>*>(x), rows, cols, prune, static_cast<Bits<K>*>(values), meta);
  });
}

int64_t decompress_cutlass(const void* values, const void* meta, int64_t rows, int64_t cols, Kind kind, void* out) {
  return with_kind(kind, [&](auto tag) {
    constexpr Kind K = decltype(tag)::value;
    return decompress_cutlass_scalar<K>(static_cast<const Bits<K>*>(values), meta, rows, cols, static_cast<Bits<K>*>(out));
  });
}

}  // namespace ps24::cpu
