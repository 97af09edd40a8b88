// The per-thread work of the GPU mask / compress / decompress kernels, written once as
// __host__ __device__ functors. The kernels (compress_kernels.cu) run them on the GPU; the same
// functors also run on the host ("host emulation"), which is how the CPU-only test suite checks
// the exact code the GPU executes against the CPU implementation, bit for bit.
//
// Each functor handles one "chunk": 32 bytes of dense data (two 16-byte loads), i.e. 8 fp32,
// 16 fp16/bf16 or 32 8-bit elements. That is exactly one CUTLASS metadata word, and its packed
// values (half the bytes) are one 16-byte store. The per-group decisions come from
// common/sparse24.h, shared with the CPU code.
#pragma once
#include <cstdint>
#include <cstring>

#include <cuda_runtime.h>

#include "common/sparse24.h"
#include "cuda/kernels.h"
#include <type_traits>

namespace ps24::cuda {

constexpr int kChunkBytes = 32;

// ---- error reporting ---------------------------------------------------------------------------
// Kernels never stop half-way: each kind of problem has a slot holding the smallest flat index
// seen (element index for non-finite input, group index otherwise), so the launcher reports the
// first problem in row-major order, as the CPU path's sequential loop does.
enum ErrorKind : int { kErrNonfinite = 0, kErrOverfull = 1, kErrBadMeta = 2, kErrorKinds = 3 };
constexpr unsigned long long kNoError = ~0ull;

PS24_HD void record_error(unsigned long long* errors, int64_t index, ErrorKind kind) {
  const auto v = static_cast<unsigned long long>(index);
#if defined(__CUDA_ARCH__)
  atomicMin(&errors[kind], v);
#else
  if (v < errors[kind]) errors[kind] = v;  // host emulation is single-threaded
#endif
}

// ---- element traits ----------------------------------------------------------------------------
// Bits: the storage type; key(): magnitude key (see sparse24.h).
template <Kind K> struct Elem;
template <> struct Elem<Kind::F32> {
  using Bits = uint32_t;
  static PS24_HD uint32_t key(Bits b) { return magnitude_key(b); }
};
template <> struct Elem<Kind::F16> {
  using Bits = uint16_t;
  static PS24_HD uint32_t key(Bits b) { return magnitude_key(b); }
};
template <> struct Elem<Kind::BF16> {
  using Bits = uint16_t;
  static PS24_HD uint32_t key(Bits b) { return magnitude_key(b); }
};
template <> struct Elem<Kind::I8> {
  using Bits = uint8_t;
  static PS24_HD uint32_t key(Bits b) { return magnitude_key_int8(static_cast<int8_t>(b)); }
};
template <> struct Elem<Kind::F8E4M3> {
  using Bits = uint8_t;
  static PS24_HD uint32_t key(Bits b) { return magnitude_key_float8(b); }
};
template <> struct Elem<Kind::F8E5M2> {
  using Bits = uint8_t;
  static PS24_HD uint32_t key(Bits b) { return magnitude_key_float8(b); }
};

// Records the first NaN/Inf (is_nonfinite_bits, as the CPU path) among v[0..count).
template <Kind K, typename Bits>
PS24_HD void check_finite(const Bits* v, int count, int64_t first_element, unsigned long long* errors) {
  bool bad = false;
  for (int i = 0; i < count; ++i) bad |= is_nonfinite_bits(uint32_t(v[i]), K);
  if (!bad) return;  // the rare path below finds which one
  for (int i = 0; i < count; ++i)
    if (is_nonfinite_bits(uint32_t(v[i]), K)) {
      record_error(errors, first_element + i, kErrNonfinite);
      return;
    }
}

// ---- 16-byte memory access ---------------------------------------------------------------------
// kVec: the launcher proved every access of the launch 16-byte aligned and in bounds.
template <int kBytes>
PS24_HD void copy_vector(void* dst, const void* src) {
#if defined(__CUDA_ARCH__)
  using Vector = typename std::conditional<kBytes == 16, uint4, uint2>::type;
  *static_cast<Vector*>(dst) = *static_cast<const Vector*>(src);
#else
  std::memcpy(dst, src, kBytes);
#endif
}

// Loads `count` elements (count <= N) starting at src into v, zero-filling the rest.
template <bool kVec, typename Bits, int N>
PS24_HD void load_chunk(Bits (&v)[N], const Bits* src, int count) {
  if constexpr (kVec) {
    static_assert(sizeof(Bits) * N % 16 == 0, "vector loads are 16 bytes");
#pragma unroll
    for (int i = 0; i < N; i += 16 / int(sizeof(Bits))) copy_vector<16>(&v[i], src + i);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = i < count ? src[i] : Bits(0);
  }
}

// Stores in 16-byte pieces (8 bytes for the one 8-byte case: the fp32 mask's eight flags).
template <bool kVec, typename T, int N>
PS24_HD void store_chunk(T* dst, const T (&v)[N], int count) {
  if constexpr (kVec && sizeof(T) * N == 8) {
    copy_vector<8>(dst, &v[0]);
  } else if constexpr (kVec) {
    static_assert(sizeof(T) * N % 16 == 0, "vector stores are 16 bytes");
#pragma unroll
    for (int i = 0; i < N; i += 16 / int(sizeof(T))) copy_vector<16>(dst + i, &v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i)
      if (i < count) dst[i] = v[i];
  }
}

// Element idx (run-time, 0..3) of a group held in registers: selects, not an indexed array, so the
// group never moves to local memory.
template <typename Bits>
PS24_HD Bits pick4(const Bits* g, uint32_t idx) {
  return idx == 0 ? g[0] : idx == 1 ? g[1] : idx == 2 ? g[2] : g[3];
}

// code_from_keep_mask without its lookup table, which the GPU would keep in local memory:
// the lowest and the highest set bit of a two-bit mask.
PS24_HD uint32_t code_of_two_bits(uint32_t mask4) {
  const uint32_t idx0 = (mask4 & 1u) ? 0u : (mask4 & 2u) ? 1u : (mask4 & 4u) ? 2u : 3u;
  const uint32_t idx1 = (mask4 & 8u) ? 3u : (mask4 & 4u) ? 2u : (mask4 & 2u) ? 1u : 0u;
  return code_from_pair(idx0, idx1);
}

PS24_HD int popcount4(uint32_t x) { return int(x & 1u) + int((x >> 1) & 1u) + int((x >> 2) & 1u) + int((x >> 3) & 1u); }

// Where chunk number `chunk` of N elements lies: row, first column, elements in it (the last chunk
// of a row may be partial).
struct ChunkPosition {
  int64_t row, col0;
  int count;
};
template <int N>
PS24_HD int64_t chunk_count(const Matrix2D& s) { return s.rows * ((s.cols + N - 1) / N); }
template <int N>
PS24_HD ChunkPosition locate_chunk(int64_t chunk, const Matrix2D& s) {
  const int64_t per_row = (s.cols + N - 1) / N, col0 = (chunk % per_row) * N;
  return {chunk / per_row, col0, int(s.cols - col0 < N ? s.cols - col0 : N)};
}

// Row and first column of group number `group` of m elements (for one-thread-per-group kernels).
struct GroupPosition {
  int64_t row, col0;
};
PS24_HD GroupPosition locate_group(int64_t group, const Matrix2D& s, int m) {
  const int64_t per_row = s.cols / m;
  return {group / per_row, (group % per_row) * m};
}

// ---- n:m mask ----------------------------------------------------------------------------------
// One thread per chunk of N elements when m divides N (kTwoFour: the loop-free 2:4 rule), else one
// thread per group (any m <= 32). Output: one byte (bool) per element, contiguous (rows, cols).
template <Kind K, bool kVec, bool kTwoFour>
struct MaskChunkOp {
  using Bits = typename Elem<K>::Bits;
  static constexpr int N = kChunkBytes / int(sizeof(Bits));
  const Bits* in;
  uint8_t* out;
  Matrix2D shape;
  int n, m;
  unsigned long long* error;

  PS24_HD int64_t count() const { return chunk_count<N>(shape); }

  PS24_HD void operator()(int64_t chunk) const {
    const auto [row, col0, count] = locate_chunk<N>(chunk, shape);
    Bits v[N];
    uint8_t keep[N];
    load_chunk<kVec>(v, in + row * shape.row_stride + col0, count);
    if constexpr (kTwoFour) {
#pragma unroll
      for (int g = 0; g < N / 4; ++g) {
        uint32_t k[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) k[i] = Elem<K>::key(v[4 * g + i]);
        if (4 * g < count) check_finite<K>(&v[4 * g], 4, row * shape.cols + col0 + 4 * g, error);
        const uint32_t mask = keep_mask_2_of_4(k[0], k[1], k[2], k[3]);
#pragma unroll
        for (int i = 0; i < 4; ++i) keep[4 * g + i] = uint8_t((mask >> i) & 1u);
      }
    } else {
      for (int g = 0; g * m < count; ++g) mask_group(&v[g * m], &keep[g * m], row * shape.cols + col0 + g * m);
    }
    store_chunk<kVec>(out + row * shape.cols + col0, keep, count);
  }

  PS24_HD void mask_group(const Bits* v, uint8_t* keep, int64_t first_element) const {
    uint32_t keys[32];
    for (int i = 0; i < m; ++i) keys[i] = Elem<K>::key(v[i]);
    check_finite<K>(v, m, first_element, error);
    const uint32_t mask = keep_mask_n_of_m(keys, n, m);
    for (int i = 0; i < m; ++i) keep[i] = uint8_t((mask >> i) & 1u);
  }
};

template <Kind K>
struct MaskGroupOp {
  using Bits = typename Elem<K>::Bits;
  const Bits* in;
  uint8_t* out;
  Matrix2D shape;
  int n, m;
  unsigned long long* error;

  PS24_HD int64_t count() const { return shape.rows * (shape.cols / m); }

  PS24_HD void operator()(int64_t group) const {
    const auto [row, col0] = locate_group(group, shape, m);
    Bits v[32];
    uint8_t keep[32];
    for (int i = 0; i < m; ++i) v[i] = in[row * shape.row_stride + col0 + i];
    MaskChunkOp<K, false, false>{nullptr, nullptr, shape, n, m, error}.mask_group(v, keep, row * shape.cols + col0);
    for (int i = 0; i < m; ++i) out[row * shape.cols + col0 + i] = keep[i];
  }
};

// ---- n:m check (is_sparse) ---------------------------------------------------------------------
// One thread per group: a group with more than n non-zeros (magnitude key != 0) is recorded.
template <Kind K>
struct OverfullOp {
  using Bits = typename Elem<K>::Bits;
  const Bits* in;
  Matrix2D shape;
  int n, m;
  unsigned long long* error;

  PS24_HD int64_t count() const { return shape.rows * (shape.cols / m); }

  PS24_HD void operator()(int64_t group) const {
    const auto [row, col0] = locate_group(group, shape, m);
    const Bits* g = in + row * shape.row_stride + col0;
    int nonzeros = 0;
    for (int i = 0; i < m; ++i) nonzeros += Elem<K>::key(g[i]) != 0;
    if (nonzeros > n) record_error(error, group, kErrOverfull);
  }
};

// ---- division-free chunk positions -------------------------------------------------------------
// n / d for a divisor fixed at launch, as a multiply-high and shifts (Granlund & Montgomery; Hacker's
// Delight 10-8) instead of a 64-bit division, which the GPU runs as a ~70-instruction subroutine.
struct Divider {
  uint64_t d = 1, magic = 0;
  int shift = 0;  // ceil(log2 d)

  static Divider of(uint64_t d) {  // host side, once per launch
    Divider out;
    out.d = d;
    while (out.shift < 64 && (uint64_t(1) << out.shift) < d) ++out.shift;
    if (d > 1) {
      const unsigned __int128 two_l = (unsigned __int128)1 << out.shift;
      out.magic = uint64_t((((two_l - d) << 64) / d) + 1);
    }
    return out;
  }
  PS24_HD uint64_t divide(uint64_t n) const {
    if (d == 1) return n;
#if defined(__CUDA_ARCH__)
    const uint64_t t = __umul64hi(n, magic);
#else
    const uint64_t t = uint64_t(((unsigned __int128)n * magic) >> 64);
#endif
    return (t + ((n - t) >> 1)) >> (shift - 1);
  }
};

// ---- word-wise 2:4 compression of 8- and 16-bit elements -----------------------------------------
// A chunk is eight 32-bit words (little-endian, on the GPU as on x86); a group of four elements is
// two words (16-bit) or one (8-bit). Selection is branch-free: a pair tournament on the magnitude
// keys gives the metadata code, and one byte permute (PRMT) per group (16-bit) or group pair (8-bit)
// gathers the kept values, so a chunk costs a few instructions per element instead of a chain of
// per-element selects and byte moves.
template <Kind K>
struct Lanes {
  static constexpr bool kWide = sizeof(typename Elem<K>::Bits) == 2;  // 16-bit elements: two per word
  static constexpr uint32_t kOnes = kWide ? 0x00010001u : 0x01010101u;
  static constexpr uint32_t kHigh = kWide ? 0x80008000u : 0x80808080u;
  // Exponent field per lane: all ones means NaN/Inf (float8 e4m3fn: 0x7f is its only NaN). int8: none.
  static constexpr uint32_t kExp = K == Kind::F16 ? 0x7c007c00u : K == Kind::BF16 ? 0x7f807f80u
                                 : K == Kind::F8E4M3 ? 0x7f7f7f7fu : K == Kind::F8E5M2 ? 0x7c7c7c7cu : 0u;
};

// Index of the lowest set bit of x != 0.
PS24_HD int lowest_bit(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __ffs(int(x)) - 1;
#else
  return __builtin_ctz(x);
#endif
}

// __byte_perm(x, y, s) (selector nibbles 0..7 only: byte k of the result is byte s_k of y:x).
PS24_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, s);
#else
  const uint64_t v = uint64_t(y) << 32 | x;
  uint32_t r = 0;
  for (int k = 0; k < 4; ++k) r |= uint32_t(v >> (8 * ((s >> (4 * k)) & 7u)) & 0xffu) << (8 * k);
  return r;
#endif
}

template <bool kVec, typename Bits>
PS24_HD void load_words(uint32_t (&w)[8], const Bits* src, int count) {
  if constexpr (kVec) {
    copy_vector<16>(&w[0], src);
    copy_vector<16>(&w[4], reinterpret_cast<const uint8_t*>(src) + 16);
  } else {
    constexpr int kPerWord = 4 / int(sizeof(Bits));
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = 0;
#pragma unroll
    for (int i = 0; i < 32 / int(sizeof(Bits)); ++i)
      if (i < count) w[i / kPerWord] |= uint32_t(src[i]) << (8 * int(sizeof(Bits)) * (i % kPerWord));
  }
}

// The first `count` elements of four words (16 bytes) to dst.
template <bool kVec, typename Bits>
PS24_HD void store_words(Bits* dst, const uint32_t (&w)[4], int count) {
  if constexpr (kVec) {
    copy_vector<16>(dst, &w[0]);
  } else {
    constexpr int kPerWord = 4 / int(sizeof(Bits));
#pragma unroll
    for (int i = 0; i < 16 / int(sizeof(Bits)); ++i)
      if (i < count) dst[i] = Bits(w[i / kPerWord] >> (8 * int(sizeof(Bits)) * (i % kPerWord)));
  }
}

// Index (within the chunk) of the first NaN/Inf among the eight words, or -1. SWAR: a lane whose
// exponent bits are all set becomes a zero lane of ~w & kExp, and (u - ones) & ~u & high flags the
// lowest zero lane of each word exactly (lanes above a zero lane may be flagged too; never below).
template <Kind K>
PS24_HD int first_nonfinite(const uint32_t (&w)[8]) {
  if constexpr (Lanes<K>::kExp == 0) {
    return -1;
  } else {
    uint32_t hits[8], any = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t u = ~w[i] & Lanes<K>::kExp;
      hits[i] = (u - Lanes<K>::kOnes) & ~u & Lanes<K>::kHigh;
      any |= hits[i];
    }
    if (!any) return -1;  // the common case: one branch per chunk, taken by no thread
    constexpr int kLaneBits = Lanes<K>::kWide ? 16 : 8;
#pragma unroll
    for (int i = 0; i < 8; ++i)
      if (hits[i]) return i * (32 / kLaneBits) + lowest_bit(hits[i]) / kLaneBits;
    return -1;
  }
}

// Magnitude keys of group g (see sparse24.h: sign cleared; int8: |x| widened).
template <Kind K>
PS24_HD void group_keys(const uint32_t (&w)[8], int g, uint32_t (&k)[4]) {
  if constexpr (Lanes<K>::kWide) {
    const uint32_t lo = w[2 * g], hi = w[2 * g + 1];
    k[0] = lo & 0x7fffu, k[1] = (lo >> 16) & 0x7fffu, k[2] = hi & 0x7fffu, k[3] = (hi >> 16) & 0x7fffu;
  } else {
    uint32_t magnitudes = w[g] & 0x7f7f7f7fu;  // float8: the sign cleared
    if constexpr (K == Kind::I8) {  // |x| of four bytes at once: (x ^ m) + 1 where negative (-128 -> 128)
      const uint32_t negative = (w[g] >> 7) & 0x01010101u;
      magnitudes = (w[g] ^ (negative * 0xffu)) + negative;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) k[i] = (magnitudes >> (8 * i)) & 0xffu;
  }
}

// The metadata code of the two largest keys (ties: the lower index), exactly as
// code_from_keep_mask(keep_mask_2_of_4(...)): a = winner of (0, 1), b = winner of (2, 3); the pair
// (a, b) unless the loser of one pair beats the winner of the other (then that whole pair).
PS24_HD uint32_t top_two_code(const uint32_t (&k)[4]) {
  const uint32_t a = k[1] > k[0] ? 1u : 0u, b = k[3] > k[2] ? 3u : 2u;
  const uint32_t lo_min = k[0] < k[1] ? k[0] : k[1], lo_max = k[0] < k[1] ? k[1] : k[0];
  const uint32_t hi_min = k[2] < k[3] ? k[2] : k[3], hi_max = k[2] < k[3] ? k[3] : k[2];
  return lo_min >= hi_max ? code_from_pair(0, 1) : hi_min > lo_max ? code_from_pair(2, 3) : code_from_pair(a, b);
}

// PRMT selector that gathers the two elements a code names, from a group's words.
PS24_HD uint32_t select16(uint32_t code) { return (code & 3u) * 0x22u + ((code >> 2) & 3u) * 0x2200u + 0x1010u; }
PS24_HD uint32_t select8_pair(uint32_t code_x, uint32_t code_y) {  // group x in bytes 0-3, y in 4-7
  const uint32_t sx = (code_x & 3u) | (code_x & 12u) << 2, sy = (code_y & 3u) | (code_y & 12u) << 2;
  return sx | (sy + 0x44u) << 8;
}

// Zeroes the elements of group g not in keep (4-bit mask): what "prune" leaves (+0, not -0.0).
template <Kind K>
PS24_HD void keep_only(uint32_t (&w)[8], int g, uint32_t keep) {
  if constexpr (Lanes<K>::kWide) {
    w[2 * g] &= ((keep & 3u) * 0x8001u & 0x10001u) * 0xffffu;
    w[2 * g + 1] &= ((keep >> 2) * 0x8001u & 0x10001u) * 0xffffu;
  } else {
    w[g] &= ((keep * 0x204081u) & 0x01010101u) * 0xffu;  // bit i -> byte i
  }
}

// cutlass_code_from_nonzeros for every 4-bit mask, four bits each: one shift replaces its logic.
constexpr uint64_t cutlass_code_table() {
  uint64_t table = 0;
  for (uint32_t nz = 0; nz < 16; ++nz) table |= uint64_t(cutlass_code_from_nonzeros(nz)) << (4 * nz);
  return table;
}
PS24_HD uint32_t cutlass_code_of(uint32_t nz4) {
  constexpr uint64_t kTable = cutlass_code_table();
  return uint32_t(kTable >> (4 * nz4)) & 15u;
}

// Compress one chunk of an 8- or 16-bit kind: codes (one nibble per group, first group lowest) and
// the kept values as four words; records non-finite input and, unpruned, over-full groups.
// kCutlass: PyTorch's CUTLASS choice of positions (the pruned group's non-zeros decide).
template <Kind K, bool kCutlass>
PS24_HD uint32_t compress_words(uint32_t (&w)[8], uint32_t (&kept)[4], int count, bool prune, int64_t first_element,
                                unsigned long long* error) {
  constexpr int kGroups = Lanes<K>::kWide ? 4 : 8;
  const int nonfinite = first_nonfinite<K>(w);
  if (nonfinite >= 0 && nonfinite < count) record_error(error, first_element + nonfinite, kErrNonfinite);
  uint32_t codes = 0, overfull = 0;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    uint32_t k[4];
    group_keys<K>(w, g, k);
    const uint32_t nonzeros = uint32_t(k[0] != 0) | uint32_t(k[1] != 0) << 1 | uint32_t(k[2] != 0) << 2 |
                              uint32_t(k[3] != 0) << 3;
    if (!prune) overfull |= uint32_t(popcount4(nonzeros) > 2) << g;
    // At most two non-zeros: the two largest keys are the non-zeros plus the lowest-index zeros.
    uint32_t code = top_two_code(k);
    if constexpr (kCutlass) {
      const uint32_t keep = prune ? keep_mask_from_code(code) : 0xfu;
      if (prune) keep_only<K>(w, g, keep);
      code = cutlass_code_of(nonzeros & keep);
    }
    codes |= code << (4 * g);
  }
  if (overfull) {
    const int g = lowest_bit(overfull);
    if (4 * g < count) record_error(error, first_element / 4 + g, kErrOverfull);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (Lanes<K>::kWide) {
      kept[i] = byte_perm(w[2 * i], w[2 * i + 1], select16(codes >> (4 * i)));
    } else {
      kept[i] = byte_perm(w[2 * i], w[2 * i + 1], select8_pair(codes >> (8 * i), codes >> (8 * i + 4)));
    }
  }
  return codes;
}

// Chunk positions without a 64-bit division per chunk (per_row: the Divider of chunks per row).
template <int N>
PS24_HD ChunkPosition locate_chunk(int64_t chunk, const Matrix2D& s, const Divider& per_row) {
  const int64_t row = int64_t(per_row.divide(uint64_t(chunk)));
  const int64_t col0 = (chunk - row * int64_t(per_row.d)) * N;
  return {row, col0, int(s.cols - col0 < N ? s.cols - col0 : N)};
}

// Compress of an 8- or 16-bit kind, packed or cutlass metadata, one chunk per call.
template <Kind K, bool kVec, bool kCutlass>
struct CompressWordsOp {
  using Bits = typename Elem<K>::Bits;
  // packed: bytes (rows, cols/8); cutlass: (rows, cols / N) 16-bit (16-bit kinds) or 32-bit words in CUTLASS order
  using Meta = typename std::conditional<!kCutlass, uint8_t,
                                         typename std::conditional<sizeof(Bits) == 1, uint32_t, uint16_t>::type>::type;
  static constexpr int N = kChunkBytes / int(sizeof(Bits));
  const Bits* in;
  Bits* values;  // contiguous (rows, cols/2)
  Meta* meta;
  Matrix2D shape;
  bool prune;
  unsigned long long* error;
  Divider per_row;  // chunks per row

  PS24_HD int64_t count() const { return chunk_count<N>(shape); }

  PS24_HD void operator()(int64_t chunk) const {
    // count: a multiple of 8 (packed), N (cutlass: cols % (2N) == 0)
    const auto [row, col0, count] = locate_chunk<N>(chunk, shape, per_row);
    uint32_t w[8], kept[4];
    load_words<kVec>(w, in + row * shape.row_stride + col0, count);
    const uint32_t codes = compress_words<K, kCutlass>(w, kept, count, prune, row * shape.cols + col0, error);
    store_words<kVec>(values + row * (shape.cols / 2) + col0 / 2, kept, count / 2);
    if constexpr (kCutlass) {
      meta[cutlass_meta_offset(row, col0 / N, shape.rows, int(sizeof(Meta)))] = Meta(codes);
    } else if constexpr (kVec) {  // N / 8 whole bytes, aligned to their size (the launcher checked)
      uint8_t* out = meta + row * (shape.cols / 8) + col0 / 8;
      if constexpr (N == 32) *reinterpret_cast<uint32_t*>(out) = codes;
      else *reinterpret_cast<uint16_t*>(out) = uint16_t(codes);
    } else {
#pragma unroll
      for (int i = 0; i < N / 8; ++i)
        if (i < count / 8) meta[row * (shape.cols / 8) + col0 / 8 + i] = uint8_t(codes >> (8 * i));
    }
  }
};

// ---- compress to "packed" ----------------------------------------------------------------------
// values (rows, cols/2): the two kept values of each group of four in ascending column order;
// meta (rows, cols/8): one 4-bit code per group, the first group of each byte in the low nibble.
// prune=false keeps the (at most two) non-zeros; a group with more is an error.
template <Kind K>
PS24_HD uint32_t keep_mask_for_group(const typename Elem<K>::Bits* v, bool prune, int64_t first_element,
                                     unsigned long long* error) {
  uint32_t keys[4], nonzeros = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    keys[i] = Elem<K>::key(v[i]);
    nonzeros |= uint32_t(keys[i] != 0) << i;
  }
  check_finite<K>(v, 4, first_element, error);
  if (!prune && popcount4(nonzeros) > 2) record_error(error, first_element / 4, kErrOverfull);
  // With at most two non-zeros, the two largest keys are the non-zeros plus the lowest-index
  // zeros (ties break towards the lower index), so one rule serves both cases.
  return keep_mask_2_of_4(keys[0], keys[1], keys[2], keys[3]);
}

template <Kind K, bool kVec>
struct CompressPackedOp {
  using Bits = typename Elem<K>::Bits;
  static constexpr int N = kChunkBytes / int(sizeof(Bits));
  const Bits* in;
  Bits* values;   // contiguous (rows, cols/2)
  uint8_t* meta;  // contiguous (rows, cols/8)
  Matrix2D shape;
  bool prune;
  unsigned long long* error;

  PS24_HD int64_t count() const { return chunk_count<N>(shape); }

  PS24_HD void operator()(int64_t chunk) const {
    const auto [row, col0, count] = locate_chunk<N>(chunk, shape);  // a multiple of 8
    Bits v[N], kept[N / 2];
    uint32_t codes = 0;  // N/8 <= 4 metadata bytes, first group in the lowest nibble
    load_chunk<kVec>(v, in + row * shape.row_stride + col0, count);
#pragma unroll
    for (int g = 0; g < N / 4; ++g) {
      uint32_t code = 0;
      if (4 * g < count) {
        const uint32_t keep =
            keep_mask_for_group<K>(&v[4 * g], prune, row * shape.cols + col0 + 4 * g, error);
        code = code_of_two_bits(keep);
      }
      kept[2 * g] = pick4(&v[4 * g], code_idx0(code));
      kept[2 * g + 1] = pick4(&v[4 * g], code_idx1(code));
      codes |= code << (4 * g);
    }
    store_chunk<kVec>(values + row * (shape.cols / 2) + col0 / 2, kept, count / 2);
#pragma unroll
    for (int i = 0; i < N / 8; ++i)
      if (i < count / 8) meta[row * (shape.cols / 8) + col0 / 8 + i] = uint8_t(codes >> (8 * i));
  }
};

// ---- compress to "cutlass" ---------------------------------------------------------------------
// Bit-identical to PyTorch's sparse_semi_structured_from_dense_cutlass. Each chunk is one metadata
// word: 16-bit words (4 codes) for fp32/fp16/bf16, 32-bit words (8 codes) for 8-bit types, stored
// at cutlass_meta_offset. fp32 is 1:2: each code describes a pair as four 16-bit halves.
template <Kind K>
struct CutlassWord {
  using type = typename std::conditional<sizeof(typename Elem<K>::Bits) == 1, uint32_t, uint16_t>::type;
};

template <Kind K, bool kVec>
struct CompressCutlassOp {
  using Bits = typename Elem<K>::Bits;
  using Word = typename CutlassWord<K>::type;
  static constexpr int N = kChunkBytes / int(sizeof(Bits));
  static constexpr bool kPairs = K == Kind::F32;  // 1:2
  const Bits* in;
  Bits* values;  // contiguous (rows, cols/2)
  Word* meta;    // (rows, cols / N) words in CUTLASS order
  Matrix2D shape;
  bool prune;
  unsigned long long* error;

  PS24_HD int64_t count() const { return chunk_count<N>(shape); }

  PS24_HD void operator()(int64_t chunk) const {
    const auto [row, col0, count] = locate_chunk<N>(chunk, shape);  // count == N: cols % (2N) == 0
    const int64_t word_col = col0 / N;
    Bits v[N], kept[N / 2];
    load_chunk<kVec>(v, in + row * shape.row_stride + col0, count);
    Word word = 0;
    if constexpr (kPairs) {
#pragma unroll
      for (int p = 0; p < N / 2; ++p) {
        const int64_t first_element = row * shape.cols + col0 + 2 * p;
        check_finite<K>(&v[2 * p], 2, first_element, error);
        Bits a = v[2 * p], b = v[2 * p + 1];
        if (prune) {  // keep the larger magnitude (a tie keeps the lower index); the other becomes +0
          if (Elem<K>::key(a) >= Elem<K>::key(b)) b = Bits(0); else a = Bits(0);
        }
        const bool nz_a = Elem<K>::key(a) != 0, nz_b = Elem<K>::key(b) != 0;
        if (nz_a && nz_b) record_error(error, first_element / 2, kErrOverfull);
        const uint32_t code = cutlass_code_for_pair(nz_a, nz_b);
        kept[p] = code_idx0(code) >= 2 ? b : a;  // as PyTorch: the named element, even a -0.0
        word |= Word(code << (4 * p));
      }
    } else {
#pragma unroll
      for (int g = 0; g < N / 4; ++g) {
        const int64_t first_element = row * shape.cols + col0 + 4 * g;
        const uint32_t best_two = keep_mask_for_group<K>(&v[4 * g], prune, first_element, error);
        const uint32_t keep = prune ? best_two : 0xfu;  // unpruned: the non-zeros decide, as in PyTorch
        uint32_t nonzeros = 0;
        Bits pruned[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          pruned[i] = ((keep >> i) & 1u) ? v[4 * g + i] : Bits(0);
          nonzeros |= uint32_t(Elem<K>::key(pruned[i]) != 0) << i;
        }
        const uint32_t code = cutlass_code_from_nonzeros(nonzeros);
        kept[2 * g] = pick4(pruned, code_idx0(code));
        kept[2 * g + 1] = pick4(pruned, code_idx1(code));
        word |= Word(code << (4 * g));
      }
    }
    store_chunk<kVec>(values + row * (shape.cols / 2) + col0 / 2, kept, count / 2);
    meta[cutlass_meta_offset(row, word_col, shape.rows, int(sizeof(Word)))] = word;
  }
};

// ---- decompress --------------------------------------------------------------------------------
// A code naming two positions with idx0 >= idx1 (or, for fp32, not a whole element) is corrupt
// metadata: recorded as an error, the group is written as zeros.
PS24_HD bool valid_code(uint32_t code, bool pairs) {
  return pairs ? (code == code_from_pair(0, 1) || code == code_from_pair(2, 3))
               : code_idx0(code) < code_idx1(code);
}

template <Kind K, bool kVec>
struct DecompressPackedOp {
  using Bits = typename Elem<K>::Bits;
  static constexpr int N = kChunkBytes / int(sizeof(Bits));
  const Bits* values;
  const uint8_t* meta;
  Bits* out;  // contiguous (rows, cols)
  Matrix2D shape;
  unsigned long long* error;

  PS24_HD int64_t count() const { return chunk_count<N>(shape); }

  PS24_HD void operator()(int64_t chunk) const {
    const auto [row, col0, count] = locate_chunk<N>(chunk, shape);
    Bits kept[N / 2], dense[N];
    load_chunk<kVec>(kept, values + row * (shape.cols / 2) + col0 / 2, count / 2);
#pragma unroll
    for (int g = 0; g < N / 4; ++g) {
      uint32_t code = 0;
      if (4 * g < count) code = packed_code(meta + row * (shape.cols / 8), col0 / 4 + g);
      const bool ok = valid_code(code, false);
      if (!ok && 4 * g < count) record_error(error, (row * shape.cols + col0) / 4 + g, kErrBadMeta);
#pragma unroll
      for (int i = 0; i < 4; ++i)
        dense[4 * g + i] = !ok ? Bits(0)
                           : uint32_t(i) == code_idx0(code) ? kept[2 * g]
                           : uint32_t(i) == code_idx1(code) ? kept[2 * g + 1]
                                                            : Bits(0);
    }
    store_chunk<kVec>(out + row * shape.cols + col0, dense, count);
  }
};

template <Kind K, bool kVec>
struct DecompressCutlassOp {
  using Bits = typename Elem<K>::Bits;
  using Word = typename CutlassWord<K>::type;
  static constexpr int N = kChunkBytes / int(sizeof(Bits));
  static constexpr bool kPairs = K == Kind::F32;
  const Bits* values;
  const Word* meta;
  Bits* out;
  Matrix2D shape;
  unsigned long long* error;

  PS24_HD int64_t count() const { return chunk_count<N>(shape); }

  PS24_HD void operator()(int64_t chunk) const {
    const auto [row, col0, count] = locate_chunk<N>(chunk, shape);  // count == N: cols % (2N) == 0
    const int64_t word_col = col0 / N;
    Bits kept[N / 2], dense[N];
    load_chunk<kVec>(kept, values + row * (shape.cols / 2) + col0 / 2, count / 2);
    const Word word = meta[cutlass_meta_offset(row, word_col, shape.rows, int(sizeof(Word)))];
    constexpr int kGroups = kPairs ? N / 2 : N / 4;
    constexpr int kWidth = kPairs ? 2 : 4;
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      const uint32_t code = (uint32_t(word) >> (4 * g)) & 0xfu;
      const bool ok = valid_code(code, kPairs);
      if (!ok) record_error(error, (row * shape.cols + col0) / kWidth + g, kErrBadMeta);
      if constexpr (kPairs) {  // code (0,1) names element a, (2,3) element b
        dense[2 * g] = ok && code_idx0(code) == 0 ? kept[g] : Bits(0);
        dense[2 * g + 1] = ok && code_idx0(code) == 2 ? kept[g] : Bits(0);
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          dense[4 * g + i] = !ok ? Bits(0)
                             : uint32_t(i) == code_idx0(code) ? kept[2 * g]
                             : uint32_t(i) == code_idx1(code) ? kept[2 * g + 1]
                                                              : Bits(0);
      }
    }
    store_chunk<kVec>(out + row * shape.cols + col0, dense, count);
  }
};

}  // namespace ps24::cuda
