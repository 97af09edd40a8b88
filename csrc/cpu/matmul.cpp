// Sparse matmul: problem checks, packing of X, runtime dispatch, and the scalar reference path
// (the plainest statement of the summation contract in matmul.h).
#include "cpu/matmul.h"
#include "cpu/matmul_axpy.h"

#include <emmintrin.h>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ps24::cpu::matmul {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("pysparse24 matmul: " + message);
}

}  // namespace

void validate_im2col(const Problem& p) {
  const Im2col& g = *p.im2col;
  require(g.height > 0 && g.width > 0 && g.channels > 0 && g.kernel_h > 0 && g.kernel_w > 0 && g.stride_h > 0 &&
              g.stride_w > 0 && g.pad_h >= 0 && g.pad_w >= 0 && g.dilation_h > 0 && g.dilation_w > 0,
          "conv sizes, kernel, stride and dilation must be positive, padding non-negative");
  require(p.K == g.kernel_h * g.kernel_w * g.channels,
          "K = " + std::to_string(p.K) + " is not kernel " + std::to_string(g.kernel_h) + "x" +
              std::to_string(g.kernel_w) + " x " + std::to_string(g.channels) + " channels");
  auto out_size = [](int64_t size, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
    return (size + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
  };
  require(g.height + 2 * g.pad_h > g.dilation_h * (g.kernel_h - 1) &&
              g.width + 2 * g.pad_w > g.dilation_w * (g.kernel_w - 1),
          "the (dilated) kernel is larger than the padded input: no output size");
  require(g.out_height == out_size(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h) &&
              g.out_width == out_size(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w),
          "the output size does not follow from the input size, kernel, stride, padding and dilation");
  require(p.N % (g.out_height * g.out_width) == 0, "N is not a whole number of output images");
  require(p.kind != Kind::I8 && axpy_regime(p),
          "implicit im2col runs in the large-N regime only (float32 from N = " + std::to_string(kAxpyMinN) +
              ", bfloat16 from N = " + std::to_string(kAxpyMinNWidened) +
              " on CPUs without AVX-512 BF16); use the explicit patch matrix");
}

namespace {

void validate(const Problem& p) {
  require(p.kind == Kind::F32 || p.kind == Kind::BF16 || p.kind == Kind::I8,
          "supported dtypes are float32, bfloat16 and int8");
  require(p.M >= 0 && p.N >= 0 && p.K >= 0, "negative dimension");
  require(p.K % 8 == 0, "K (the reduction dimension) must be a multiple of 8 (the packed "
                        "format's meta byte covers two groups of four), got " + std::to_string(p.K));
  require(p.meta_cols == p.K / 8, "meta must have K/8 = " + std::to_string(p.K / 8) +
                                      " columns, got " + std::to_string(p.meta_cols));
  const bool empty = p.M == 0 || p.N == 0;
  require(empty || p.out != nullptr, "missing output");
  require(empty || p.K == 0 || (p.values && p.meta && p.x), "missing input");
  if (p.im2col) validate_im2col(p);
}

// Index of each slot's source element within a block (see XLayout).
// AVX2 float: per 16 elements, [x0..3 | x8..11] and [x4..7 | x12..15] are the two in-lane tables.
constexpr int kAvx2FloatOrder[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};
// AVX2 bfloat16: per 32 elements (8 groups of 4), element j of every group together: slot 8j + i
// holds element 4i + j, so a 2-bit index selects among four registers lane by lane.
constexpr int kAvx2Bf16Order[32] = {0, 4, 8,  12, 16, 20, 24, 28, 1, 5, 9,  13, 17, 21, 25, 29,
                                    2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31};
// AVX2 int8: per 64 bytes, [x0..15 | x32..47] and [x16..31 | x48..63] are the two pshufb tables.
constexpr int kAvx2Int8Order[64] = {
    0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,  //
    32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,  //
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,  //
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};

constexpr int64_t kPackTile = 64;  // a multiple of every layout's block

// SSE2 (the x86-64 baseline, so this file needs no ISA flags) interleaves by element size.
template <int E> __m128i interleave_low(__m128i a, __m128i b);
template <int E> __m128i interleave_high(__m128i a, __m128i b);
template <> __m128i interleave_low<1>(__m128i a, __m128i b) { return _mm_unpacklo_epi8(a, b); }
template <> __m128i interleave_high<1>(__m128i a, __m128i b) { return _mm_unpackhi_epi8(a, b); }
template <> __m128i interleave_low<2>(__m128i a, __m128i b) { return _mm_unpacklo_epi16(a, b); }
template <> __m128i interleave_high<2>(__m128i a, __m128i b) { return _mm_unpackhi_epi16(a, b); }
template <> __m128i interleave_low<4>(__m128i a, __m128i b) { return _mm_unpacklo_epi32(a, b); }
template <> __m128i interleave_high<4>(__m128i a, __m128i b) { return _mm_unpackhi_epi32(a, b); }

// Writes the transpose of a full kPackTile x kPackTile tile, tile[slot][n] -> to[n * kp + slot],
// in blocks of B x B elements of E bytes (B rows of 16 bytes). Each block takes log2(B) rounds of
// perfect shuffles (row i interleaved with row i + B/2), after which row j holds column j. (Element
// by element, the transpose took ~3 cycles per element: a third of the packing time.)
template <typename T>
void transpose_tile(const T (&tile)[kPackTile][kPackTile], T* to, int64_t kp) {
  constexpr int E = sizeof(T), B = 16 / E;
  // Columns outer: B destination rows at a time get whole cache lines (at K = 4096 they are 4 or
  // 8 KB apart, in one L1 set; all 64 at once evict each other).
  for (int n = 0; n < kPackTile; n += B) {
    for (int s = 0; s < kPackTile; s += B) {
      __m128i rows[B];
      for (int i = 0; i < B; ++i) rows[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&tile[s + i][n]));
      for (int round = 1; round < B; round *= 2) {
        __m128i next[B];
        for (int i = 0; i < B / 2; ++i) {
          next[2 * i] = interleave_low<E>(rows[i], rows[i + B / 2]);
          next[2 * i + 1] = interleave_high<E>(rows[i], rows[i + B / 2]);
        }
        for (int i = 0; i < B; ++i) rows[i] = next[i];
      }
      for (int j = 0; j < B; ++j) _mm_storeu_si128(reinterpret_cast<__m128i*>(to + (n + j) * kp + s), rows[j]);
    }
  }
}

// Writes one tile of packed X: slots [s0, s1) of columns [n0, n1), each slot from its source row
// of X (zero past K) through `convert`. Both the reads and the writes run along contiguous
// memory: a strided walk over either side meets 64 lines at a stride of a power of two (4 KB at
// K = 4096), which share one L1 set and evict each other.
template <typename Src, typename Dst, class Convert>
void pack_tile(const Problem& p, const XLayout& layout, int64_t kp, Dst* packed, int64_t s0,
               int64_t s1, int64_t n0, int64_t n1, Convert convert) {
  const Src* x = static_cast<const Src*>(p.x);
  int64_t source_row[kPackTile];  // of each slot; -1: padding
  for (int64_t slot = s0; slot < s1; ++slot) {
    const int64_t within = slot % layout.block;
    const int64_t k = slot - within + (layout.order ? layout.order[within] : within);
    source_row[slot - s0] = k < p.K ? k : -1;
  }
  auto element = [&](int64_t slot, int64_t n) {
    const int64_t k = source_row[slot - s0];
    return k < 0 ? Dst(0) : convert(x[k * p.x_stride_k + n * p.x_stride_n]);
  };
  if (p.x_stride_k == 1) {  // columns of X are contiguous: copy column by column
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t slot = s0; slot < s1; ++slot) packed[n * kp + slot] = element(slot, n);
    return;
  }
  Dst tile[kPackTile][kPackTile];  // rows of X in, columns out
  for (int64_t slot = s0; slot < s1; ++slot) {
    const int64_t k = source_row[slot - s0];
    Dst* to = tile[slot - s0];
    if (k < 0) {
      for (int64_t n = n0; n < n1; ++n) to[n - n0] = Dst(0);
    } else if (p.x_stride_n == 1) {  // a row-major X (the usual case): a loop the compiler vectorizes
      const Src* row = x + k * p.x_stride_k + n0;
      for (int64_t i = 0; i < n1 - n0; ++i) to[i] = convert(row[i]);
    } else {
      for (int64_t n = n0; n < n1; ++n) to[n - n0] = element(slot, n);
    }
  }
  if (s1 - s0 == kPackTile && n1 - n0 == kPackTile) {
    transpose_tile(tile, packed + n0 * kp + s0, kp);
    return;
  }
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t slot = s0; slot < s1; ++slot) packed[n * kp + slot] = tile[slot - s0][n - n0];
}

// Copies X into one zero-padded row of Kp elements per column, in the ISA's element order, in
// tiles of 64 x 64 (element by element down each column of a row-major X cost ~1.3 ns per
// element, ~1 ms at K = 4096, N = 128: measured), from a 64-byte boundary (`data`).
std::unique_ptr<uint8_t[]> pack_x(const Problem& p, const XLayout& layout, int64_t& kp,
                                   uint8_t*& data) {
  kp = (p.K + layout.pad - 1) / layout.pad * layout.pad;
  const int elem = p.kind == Kind::I8 ? 1 : layout.bf16_bits ? 2 : 4;
  std::unique_ptr<uint8_t[]> storage(new uint8_t[size_t(kp * p.N * elem) + 128]);
  uint8_t* const packed = align_to_64(storage.get());
  data = packed;
  const int64_t column_tiles = (p.N + kPackTile - 1) / kPackTile;
  const int64_t slot_tiles = (kp + kPackTile - 1) / kPackTile;
  const int threads = p.threads > 0 ? p.threads : omp_get_max_threads();
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (kp * p.N > (1 << 16))
  for (int64_t ct = 0; ct < column_tiles; ++ct) {
    for (int64_t st = 0; st < slot_tiles; ++st) {
      const int64_t n0 = ct * kPackTile, n1 = n0 + kPackTile < p.N ? n0 + kPackTile : p.N;
      const int64_t s0 = st * kPackTile, s1 = s0 + kPackTile < kp ? s0 + kPackTile : kp;
      if (p.kind == Kind::I8) {
        const uint8_t flip = layout.flip_sign ? 0x80 : 0;
        pack_tile<int8_t>(p, layout, kp, packed, s0, s1, n0, n1,
                          [flip](int8_t v) { return uint8_t(uint8_t(v) ^ flip); });
      } else if (p.kind == Kind::F32) {
        pack_tile<float>(p, layout, kp, reinterpret_cast<float*>(packed), s0, s1, n0, n1,
                         [](float v) { return v; });
      } else if (layout.bf16_bits) {  // bfloat16 with denormals flushed (the bfloat16 contract)
        pack_tile<uint16_t>(p, layout, kp, reinterpret_cast<uint16_t*>(packed), s0, s1, n0,
                            n1, [](uint16_t v) { return bf16_daz(v); });
      } else {
        pack_tile<uint16_t>(p, layout, kp, reinterpret_cast<float*>(packed), s0, s1, n0, n1,
                            [](uint16_t v) { return bf16_daz_to_float(v); });
      }
    }
  }
  return storage;
}

// Scalar path: one row at a time, its value positions decoded once and reused for every column.
// Rows are padded with zero weights to whole blocks, as the SIMD paths see them.
void scalar_float_tile(const Problem& p, const PackedX& x, int64_t r0, int rows, int64_t c0,
                       int cols) {
  const bool bf16 = p.kind == Kind::BF16;
  const int64_t nv = p.K / 2, block = bf16 ? 32 : 16;
  const int64_t padded = (nv + block - 1) / block * block;
  thread_local std::vector<int64_t> column_of;
  thread_local std::vector<float> weight;
  column_of.resize(size_t(padded));
  weight.resize(size_t(padded));
  for (int64_t m = r0; m < r0 + rows; ++m) {
    const uint8_t* meta = p.meta + m * p.meta_cols;
    for (int64_t v = 0; v < padded; ++v) {
      const uint32_t field = v < nv ? (meta[v / 4] >> (2 * (v % 4))) & 3u : 0;  // v's 2-bit index
      column_of[size_t(v)] = 4 * (v / 2) + field;
      weight[size_t(v)] = v >= nv ? 0.0f
                          : bf16  ? bf16_daz_to_float(static_cast<const uint16_t*>(p.values)[m * nv + v])
                                  : static_cast<const float*>(p.values)[m * nv + v];
    }
    for (int64_t n = c0; n < c0 + cols; ++n) {
      const float* xn = static_cast<const float*>(x.data) + n * x.stride;
      float lanes[16] = {};
      if (bf16) {
        for (int64_t b = 0; b < padded; b += 32) {
          for (int i = 0; i < 16; ++i) {
            for (const int64_t v : {b + 2 * i + 1, b + 2 * i}) {
              lanes[i] = flush_denormal(std::fma(weight[size_t(v)], xn[column_of[size_t(v)]], lanes[i]));
            }
          }
        }
      } else {
        for (int64_t v = 0; v < padded; ++v) {
          lanes[v % 16] = std::fma(weight[size_t(v)], xn[column_of[size_t(v)]], lanes[v % 16]);
        }
      }
      store_float(p, m, n, reduce16(lanes));
    }
  }
}

void scalar_int8_tile(const Problem& p, const PackedX& x, int64_t r0, int rows, int64_t c0,
                      int cols) {
  const int64_t nv = p.K / 2;
  const int8_t* values = static_cast<const int8_t*>(p.values);
  for (int64_t m = r0; m < r0 + rows; ++m) {
    const uint8_t* meta = p.meta + m * p.meta_cols;
    for (int64_t n = c0; n < c0 + cols; ++n) {
      const int8_t* xn = static_cast<const int8_t*>(x.data) + n * x.stride;
      uint32_t sum = 0;  // unsigned: wraps like the SIMD paths instead of overflowing
      for (int64_t v = 0; v < nv; ++v) {
        const uint32_t field = (meta[v / 4] >> (2 * (v % 4))) & 3u;
        sum += uint32_t(int32_t(values[m * nv + v]) * int32_t(xn[4 * (v / 2) + field]));
      }
      store_int(p, m, n, sum);
    }
  }
}

// Scalar operations of the large-N regime (matmul_axpy.h): vectors of one element.
struct ScalarOps {
  using Vec = float;
  static constexpr int kWidth = 1;
  static float zero() { return 0.0f; }
  static float load(const float* x) { return *x; }
  static float broadcast(float v) { return v; }
  static float fma(float a, float b, float c) { return std::fma(a, b, c); }
  static void store(float* dst, float v) { *dst = v; }
  static void transpose(const float* src, int64_t, float* dst, int64_t, const float* add) {
    *dst = add ? *src + *add : *src;
  }
};

// Panel width (columns) of the large-N regime for an ISA of `lanes` floats per vector: 4 vectors
// (the broadcast value serves 4 loads), fewer when N is smaller.
int axpy_panel_width(const Problem& p, int lanes) {
  int vectors = 4;
  while (vectors > 1 && int64_t(lanes) * vectors >= p.N + lanes) vectors /= 2;
  return lanes * vectors;
}

}  // namespace

void run_axpy_scalar(const Problem& p, int width) { run_axpy<ScalarOps, 1>(p, width); }

XLayout x_layout(Isa isa, Kind kind) {
  XLayout layout;
  if (kind == Kind::I8) {
    layout.pad = 128;
    if (isa == Isa::Avx2) { layout.block = 64; layout.order = kAvx2Int8Order; }
    layout.flip_sign = isa == Isa::Avx512;
  } else if (kind == Kind::BF16) {
    layout.pad = 64;
    if (isa == Isa::Avx2) { layout.block = 32; layout.order = kAvx2Bf16Order; }
    // AVX-512 without its dot product (Ice Lake) emulates it on floats (bf16_widened_tile).
    layout.bf16_bits = isa == Isa::Avx512 && avx512_bf16_supported();
  } else {
    layout.pad = 32;
    if (isa == Isa::Avx2) { layout.block = 16; layout.order = kAvx2FloatOrder; }
  }
  return layout;
}

void run_scalar(const Problem& p, const PackedX& x) {
  const int64_t column_bytes = x.stride * (p.kind == Kind::I8 ? 1 : 4);
  if (p.kind == Kind::I8) {
    for_each_tile(p, 1, 8, column_bytes, [&](int64_t r0, int rows, int64_t c0, int cols) {
      scalar_int8_tile(p, x, r0, rows, c0, cols);
    });
  } else {
    for_each_tile(p, 1, 8, column_bytes, [&](int64_t r0, int rows, int64_t c0, int cols) {
      scalar_float_tile(p, x, r0, rows, c0, cols);
    });
  }
}

void run(const Problem& p) {
  validate(p);
  if (p.M == 0 || p.N == 0) return;
  Isa isa = active_isa();
  // The AVX-512 kernels also use byte permutes (VBMI; every CPU with the dispatch's VBMI2 has it).
  if (isa == Isa::Avx512 && !avx512_vbmi_supported()) isa = Isa::Avx2;
  if (axpy_regime(p)) {
    const int width = axpy_panel_width(p, isa == Isa::Avx512 ? 16 : isa == Isa::Avx2 ? 8 : 1);
    switch (isa) {
      case Isa::Avx512: run_axpy_avx512(p, width); break;
      case Isa::Avx2: run_axpy_avx2(p, width); break;
      default: run_axpy_scalar(p, width); break;
    }
    return;
  }
  const XLayout layout = x_layout(isa, p.kind);
  int64_t kp = 0;
  uint8_t* data = nullptr;
  const auto packed = pack_x(p, layout, kp, data);
  const PackedX x{data, kp};
  switch (isa) {
    case Isa::Avx512: run_avx512(p, x); break;
    case Isa::Avx2: run_avx2(p, x); break;
    default: run_scalar(p, x); break;
  }
}

}  // namespace ps24::cpu::matmul
