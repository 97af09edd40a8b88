// The large-N regime of the sparse matmul (N >= kAxpyMinN; float32, and bfloat16 on CPUs without
// AVX-512 BF16, widened to float): "axpy over N".
// For output row m and group g with kept values (v0, v1) at k-rows 4g+i0 and 4g+i1,
//   y[m, columns] += v0 * X[4g+i0, columns] + v1 * X[4g+i1, columns]
// with v broadcast and X rows contiguous, so the hot loop is a broadcast, loads and FMAs: no
// permutes. X is packed once into panels of `width` columns (zero-padded): K rows of `width`
// floats each (blocked over K below).
// Summation order of this regime (matmul.h): one running sum per output element, fma(v, x, sum)
// over the kept values in increasing order, then bias, then rounding. Every ISA includes this file
// with its own vector operations (Ops), so the order is one code.
//
// bfloat16 stays on the small-N kernels: the same design with vdpbf16ps against X packed as the 6
// index pairs of each group measured no faster than them on Zen 5 (about 0.7x dense either way at
// N = 128..512; benchmarks/RESULTS.md), so it was not worth a second bfloat16 summation order.
#pragma once
#include <memory>
#include <type_traits>

#include "cpu/matmul.h"

namespace ps24::cpu::matmul {

// Blocking: the unit of work of a thread is one (macro block of kMacroRows rows, panel) pair, so
// a layer with few rows (a CNN's 1x1 conv: M = 32..320, N = thousands of pixels) still spreads
// over the threads. Within one, K in blocks of groups whose X (of that panel) fits in L1, and for
// each K block the macro block's R-row tiles: each X block is loaded once from L2 for all rows of
// the macro block. Running sums wait in a per-thread buffer (kMacroRows x panel width) between K
// blocks, stored and reloaded exactly (the order is unchanged); a finishing pass adds the bias and
// writes them out along whichever output dimension is contiguous. Measured on Zen 5 (1 thread,
// 2048x512x4096, loaded machine): panels aligned to 64 bytes were worth 1.5x; an L2-sized K block
// was no faster (before aligning).
constexpr int64_t kMacroRows = 96;
constexpr int64_t kXBlockBytes = 40 * 1024;

// One tile: R rows x CV vectors of Ops::kWidth columns of panel `panel`, groups [g0, g1).
// `partial` holds the tile's running sums (R rows of `ld` floats, from this panel's first column).
// `values`: row r0's kept values from group g0 on, rows `values_ld` floats apart.
template <class Ops, int R, int CV>
static void axpy_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t g0, int64_t g1,
                      int64_t panel, const float* values, int64_t values_ld, float* partial, int64_t ld) {
  using Vec = typename Ops::Vec;
  constexpr int W = Ops::kWidth, width = W * CV;
  Vec acc[R][CV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < CV; ++c) acc[r][c] = g0 == 0 ? Ops::zero() : Ops::load(partial + r * ld + c * W);
  // Groups come in pairs (one meta byte; K is a multiple of 8, block edges are even).
  const uint8_t* meta = p.meta + r0 * p.meta_cols;
  const float* xs = static_cast<const float*>(x.data) + panel * x.stride;
  for (int64_t g = g0; g < g1; g += 2) {
    const float* xg = xs + 4 * g * width;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const unsigned byte = meta[r * p.meta_cols + g / 2];
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const unsigned code = h ? byte >> 4 : byte & 15u;
        const float* x0 = xg + (4 * h + (code & 3)) * width;
        const float* x1 = xg + (4 * h + (code >> 2)) * width;
        const Vec v0 = Ops::broadcast(values[r * values_ld + 2 * (g - g0 + h)]);
        const Vec v1 = Ops::broadcast(values[r * values_ld + 2 * (g - g0 + h) + 1]);
#pragma GCC unroll 8
        for (int c = 0; c < CV; ++c) acc[r][c] = Ops::fma(v0, Ops::load(x0 + c * W), acc[r][c]);
#pragma GCC unroll 8
        for (int c = 0; c < CV; ++c) acc[r][c] = Ops::fma(v1, Ops::load(x1 + c * W), acc[r][c]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < CV; ++c) Ops::store(partial + r * ld + c * W, acc[r][c]);
}

// Writes finished sums (rows x cols, row stride ld) to out[m0.., n0..] with the bias (matmul.h's
// store order: sum, then + bias). In the linear orientation (y = x W^T, out (N, M) row-major) the
// output's rows are the problem's columns: whole W x W blocks go through Ops::transpose (vector
// shuffles; element by element this pass cost ~5% of a 1x1 conv), the edges element by element.
template <class Ops>
static void axpy_finish(const Problem& p, int64_t m0, int rows, int64_t n0, int cols,
                        const float* partial, int64_t ld) {
  constexpr int W = Ops::kWidth;
  if (p.kind == Kind::BF16) {  // + bias, rounded once (store_float)
    for (int r = 0; r < rows; ++r)
      for (int n = 0; n < cols; ++n) store_float(p, m0 + r, n0 + n, partial[r * ld + n]);
    return;
  }
  const float* bias = static_cast<const float*>(p.bias);
  float* out = static_cast<float*>(p.out);
  auto element = [&](int r, int n) { return bias ? partial[r * ld + n] + bias[m0 + r] : partial[r * ld + n]; };
  if (p.out_stride_m == 1 && p.out_stride_n != 1) {
    const int full_rows = rows / W * W, full_cols = cols / W * W;
    for (int r = 0; r < full_rows; r += W)
      for (int n = 0; n < full_cols; n += W)
        Ops::transpose(partial + r * ld + n, ld, out + (n0 + n) * p.out_stride_n + m0 + r, p.out_stride_n,
                       bias ? bias + m0 + r : nullptr);
    for (int n = 0; n < cols; ++n)
      for (int r = n < full_cols ? full_rows : 0; r < rows; ++r)
        out[(n0 + n) * p.out_stride_n + m0 + r] = element(r, n);
    return;
  }
  for (int r = 0; r < rows; ++r)
    for (int n = 0; n < cols; ++n) out[(m0 + r) * p.out_stride_m + (n0 + n) * p.out_stride_n] = element(r, n);
}

// bf16_daz_to_float over n elements, branch-free so that GCC vectorizes it (the ternary form
// compiles to scalar code whose stores then stall the vector loads of the transpose).
template <int n>
PS24_INLINE static inline void widen_bf16_daz(const uint16_t* from, float* to) {
  uint32_t bits[n];
  for (int j = 0; j < n; ++j) {
    const uint32_t v = from[j], keep = 0u - uint32_t((v & 0x7f80u) != 0);  // all ones unless zero/denormal
    bits[j] = (v << 16) & (keep | 0x80000000u);
  }
  std::memcpy(to, bits, sizeof bits);
}

// Implicit im2col (Problem::im2col): packs panel `panel` (K rows of `width` floats at `to`)
// straight from the conv's NHWC input, with exactly the values that packing its explicit patch
// matrix would give, so the results are the same bit for bit. Per kernel tap, each column's channels
// are one run of the input, or padding (zeros): whole W-channel blocks of W columns are gathered into
// an L1 block (bfloat16 widened on the way) and transposed with Ops::transpose; channels past the
// last whole block, or all of them when the input's channels are not contiguous, element by element.
template <class Ops, typename Src>
static void axpy_pack_im2col_panel(const Problem& p, int width, int64_t panel, float* to) {
  constexpr int W = Ops::kWidth, kMaxWidth = 4 * W;  // axpy_panel_width: 1, 2 or 4 vectors
  const Im2col& g = *p.im2col;
  const Src* x = static_cast<const Src*>(p.x);
  auto widen = [](Src v) {  // bfloat16 with its denormals read as zero
    if constexpr (std::is_same_v<Src, uint16_t>) return bf16_daz_to_float(v);
    else return v;
  };
  const int64_t channels = g.channels, block_channels = g.stride_c == 1 ? channels / W * W : 0;
  const int64_t pixels = g.out_height * g.out_width, n0 = panel * width;
  // Column n's output pixel: the input offset and (y, x) of its window's top-left tap.
  int64_t corner[kMaxWidth], y0[kMaxWidth], x0[kMaxWidth];
  for (int n = 0; n < width; ++n) {
    const int64_t col = n0 + n < p.N ? n0 + n : 0;
    const int64_t b = col / pixels, oy = col % pixels / g.out_width, ox = col % g.out_width;
    y0[n] = oy * g.stride_h - g.pad_h;
    x0[n] = ox * g.stride_w - g.pad_w;
    corner[n] = b * g.stride_b + y0[n] * g.stride_y + x0[n] * g.stride_x;
  }
  for (int64_t r = 0; r < g.kernel_h; ++r) {
    for (int64_t s = 0; s < g.kernel_w; ++s) {
      // Column n's channel 0 at this tap, or -1: padding, or past N.
      int64_t source[kMaxWidth];
      for (int n = 0; n < width; ++n) {
        const int64_t y = y0[n] + r * g.dilation_h, xx = x0[n] + s * g.dilation_w;
        const bool inside = n0 + n < p.N && y >= 0 && y < g.height && xx >= 0 && xx < g.width;
        source[n] = inside ? corner[n] + r * g.dilation_h * g.stride_y + s * g.dilation_w * g.stride_x : -1;
      }
      float* rows = to + (r * g.kernel_w + s) * channels * width;  // row k = tap * C + c
      alignas(64) float block[W * W];
      for (int64_t c0 = 0; c0 < block_channels; c0 += W) {
        for (int n = 0; n < width; n += W) {
          for (int i = 0; i < W; ++i) {
            float* row = block + i * W;
            if (source[n + i] < 0) {
              for (int j = 0; j < W; ++j) row[j] = 0.0f;
            } else if constexpr (std::is_same_v<Src, uint16_t>) {
              widen_bf16_daz<W>(x + source[n + i] + c0, row);
            } else {
              std::memcpy(row, x + source[n + i] + c0, sizeof(float) * W);
            }
          }
          Ops::transpose(block, W, rows + c0 * width + n, width, nullptr);
        }
      }
      for (int64_t c = block_channels; c < channels; ++c)
        for (int n = 0; n < width; ++n)
          rows[c * width + n] = source[n] < 0 ? 0.0f : widen(x[source[n] + c * g.stride_c]);
    }
  }
}

// Packs panel `panel` of X (columns [panel*width, (panel+1)*width) as K rows of `width` floats at
// `to`, zero past N). In the linear orientation (x (N, K) row-major, so X's columns are contiguous)
// whole W x W blocks are transposed with Ops::transpose.
template <class Ops>
static void axpy_pack_panel(const Problem& p, int width, int64_t panel, float* to) {
  constexpr int W = Ops::kWidth;
  const bool bf16 = p.kind == Kind::BF16;
  const float* x = static_cast<const float*>(p.x);
  const uint16_t* xb = static_cast<const uint16_t*>(p.x);
  auto element = [&](int64_t k, int64_t n) {  // bfloat16 with its denormals read as zero
    const int64_t at = k * p.x_stride_k + n * p.x_stride_n;
    return bf16 ? bf16_daz_to_float(xb[at]) : x[at];
  };
  const int64_t n0 = panel * width;
  const int cols = int(p.N - n0 < width ? p.N - n0 : width);
  int64_t k_done = 0, n_done = 0;  // the part written by whole blocks
  if (p.x_stride_k == 1 && cols == width) {
    k_done = p.K / W * W;
    n_done = width;
    alignas(64) float block[W * W];  // bfloat16: a block widened first
    for (int64_t k = 0; k < k_done; k += W)
      for (int n = 0; n < width; n += W) {
        if (!bf16) {
          Ops::transpose(x + (n0 + n) * p.x_stride_n + k, p.x_stride_n, to + k * width + n, width, nullptr);
          continue;
        }
        for (int i = 0; i < W; ++i) widen_bf16_daz<W>(xb + (n0 + n + i) * p.x_stride_n + k, block + i * W);
        Ops::transpose(block, W, to + k * width + n, width, nullptr);
      }
  }
  for (int64_t k = 0; k < p.K; ++k)
    for (int n = k < k_done ? int(n_done) : 0; n < width; ++n)
      to[k * width + n] = n < cols ? element(k, n0 + n) : 0.0f;
}

// Packs all of X, panel after panel `panel_elems` floats apart.
template <class Ops>
static void axpy_pack(const Problem& p, int width, float* packed, int64_t panel_elems) {
  const int64_t panels = (p.N + width - 1) / width;
  const int threads = p.threads > 0 ? p.threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads) if (p.K * p.N > (1 << 16))
  for (int64_t panel = 0; panel < panels; ++panel) axpy_pack_panel<Ops>(p, width, panel, packed + panel * panel_elems);
}

// Whether X is packed panel by panel, each panel by the thread that runs it into a buffer of its own
// that stays in L2 for all its macro blocks, rather than whole first (a copy as large as X, written
// out and read back by every macro block). Per (macro block, panel) pair, per panel streams the macro
// block's weights (96 x K x 2.125 bytes float32, 1.125 bfloat16) from where the weight lives; whole
// streams the packed panel (K x 64 x 4 bytes) from where the packed X lives, and wrote it there first.
// Similar bytes, so it goes by where they live (measured A/B on Ice Lake, 1 thread, benchmarks/
// RESULTS.md): weight in L2 -> per panel (1x1 convs: 1.0-1.7x); else packed X in L2 -> whole (per
// panel 0.95x at 704x100x1280); else weight in a core's share of L3 -> per panel (BERT at 512 tokens,
// 1.05-1.13x); else whole (an LLM's weight from memory once per panel: 0.96x at 4096x128x4096).
// Also enough panels for the threads (a thread runs all of its panel's macro blocks). Implicit
// im2col has no materialized X: always per panel.
constexpr int64_t kPanelL2Bytes = 1 << 20, kPanelL3Bytes = 8 << 20;
inline bool axpy_pack_per_panel(const Problem& p, int64_t panels, int64_t panel_elems, int threads) {
  if (p.im2col || p.x_packing == XPacking::PerPanel) return true;
  if (p.x_packing == XPacking::Whole || panels < threads) return false;
  const int64_t weight_bytes = p.M * (p.K / 2) * (p.kind == Kind::BF16 ? 2 : 4) + p.M * p.meta_cols;
  if (weight_bytes <= kPanelL2Bytes) return true;
  return panels * panel_elems * 4 > kPanelL2Bytes && weight_bytes <= kPanelL3Bytes;
}

using AxpyTileFn = void (*)(const Problem&, const PackedX&, int64_t, int64_t, int64_t, int64_t,
                            const float*, int64_t, float*, int64_t);

// Runs the regime with R-row tiles (Rs = 0 .. R-1) on panels of Ops::kWidth * CV columns. The unit of
// work is one (macro block, panel) pair. X packed whole (axpy_pack_per_panel): first, then the pairs
// macro block by macro block, so a thread's consecutive pairs share the macro block's weights (in its
// L2). Per panel: panel by panel, each packed (from x, or from the conv's input by implicit im2col)
// by the thread that then runs all its macro blocks on it (measured on GPUNet-0's 32x25600x288 3x3
// conv: the whole packed X's round trip through memory was most of the time at few output channels).
template <class Ops, int CV, int... Rs>
static void axpy_run_rows(const Problem& p, std::integer_sequence<int, Rs...>) {
  constexpr int R = sizeof...(Rs), width = Ops::kWidth * CV;
  static constexpr AxpyTileFn table[R] = {&axpy_tile<Ops, Rs + 1, CV>...};
  const int64_t groups = p.K / 4, panels = (p.N + width - 1) / width, nv = p.K / 2;
  const int64_t panel_elems = p.K * width;
  const int64_t x_bytes_per_group = 4 * 4 * width;  // of one panel
  int64_t block = kXBlockBytes / x_bytes_per_group;
  block = block < 8 ? 8 : block / 2 * 2;  // whole meta bytes
  const int64_t macro_blocks = (p.M + kMacroRows - 1) / kMacroRows;
  const int threads = p.threads > 0 ? p.threads : omp_get_max_threads();
  const bool worth_threads = p.M * p.N * p.K > (int64_t(1) << 20);
  const bool per_panel = axpy_pack_per_panel(p, panels, panel_elems, worth_threads ? threads : 1);
  const int64_t chunk = per_panel ? macro_blocks : 1;
  std::unique_ptr<float[]> storage;  // the whole packed X
  if (!per_panel) {
    storage.reset(new float[size_t(panels * panel_elems) + 16]);
    axpy_pack<Ops>(p, width, align_to_64(storage.get()), panel_elems);
  }
#pragma omp parallel num_threads(threads) if (worth_threads)
  {
    alignas(64) float partial[kMacroRows * width];
    // bfloat16: a K block's values of the macro block, widened (denormals as zero) once for its
    // tiles; 1/(4 * width / 16) of the block's multiply-adds.
    std::unique_ptr<float[]> widened(new float[p.kind == Kind::BF16 ? size_t(kMacroRows * 2 * block) : 1]);
    std::unique_ptr<float[]> own_panel(new float[per_panel ? size_t(panel_elems) + 16 : 1]);
    PackedX x{align_to_64(per_panel ? own_panel.get() : storage.get()), per_panel ? 0 : panel_elems};
    // Per panel: a thread takes a panel's pairs together (the chunk), packing it first.
#pragma omp for schedule(dynamic, chunk)
    for (int64_t item = 0; item < macro_blocks * panels; ++item) {
      const int64_t macro = per_panel ? item % macro_blocks : item / panels;
      const int64_t panel = per_panel ? item / macro_blocks : item % panels;
      if (per_panel && macro == 0) {
        float* to = const_cast<float*>(static_cast<const float*>(x.data));
        if (!p.im2col) axpy_pack_panel<Ops>(p, width, panel, to);
        else if (p.kind == Kind::BF16) axpy_pack_im2col_panel<Ops, uint16_t>(p, width, panel, to);
        else axpy_pack_im2col_panel<Ops, float>(p, width, panel, to);
      }
      const int64_t m_begin = macro * kMacroRows;
      const int64_t m_end = m_begin + kMacroRows < p.M ? m_begin + kMacroRows : p.M;
      for (int64_t g0 = 0; g0 < groups || g0 == 0; g0 += block) {  // K = 0: one pass writes bias
        const int64_t g1 = g0 + block < groups ? g0 + block : groups;
        const float* values = widened.get();
        int64_t values_ld = 2 * block;
        if (p.kind == Kind::BF16) {
          const uint16_t* bits = static_cast<const uint16_t*>(p.values) + m_begin * nv + 2 * g0;
          for (int64_t r = 0; r < m_end - m_begin; ++r)
            for (int64_t v = 0; v < 2 * (g1 - g0); ++v) widened[r * values_ld + v] = bf16_daz_to_float(bits[r * nv + v]);
        } else {
          values = static_cast<const float*>(p.values) + m_begin * nv + 2 * g0;
          values_ld = nv;
        }
        for (int64_t r0 = m_begin; r0 < m_end; r0 += R) {
          const int rows = int(m_end - r0 < R ? m_end - r0 : R);
          table[rows - 1](p, x, r0, g0, g1, panel, values + (r0 - m_begin) * values_ld, values_ld,
                          partial + (r0 - m_begin) * width, width);
        }
      }
      const int64_t n0 = panel * width;
      axpy_finish<Ops>(p, m_begin, int(m_end - m_begin), n0, int(p.N - n0 < width ? p.N - n0 : width),
                  partial, width);
    }
  }
}

// Runs the regime with R-row tiles on panels of `width` columns (a multiple of Ops::kWidth whose
// quotient is 1, 2 or 4; see axpy_panel_width).
template <class Ops, int R>
static void run_axpy(const Problem& p, int width) {
  const auto rows = std::make_integer_sequence<int, R>{};
  switch (width / Ops::kWidth) {
    case 4: axpy_run_rows<Ops, 4>(p, rows); break;
    case 2: axpy_run_rows<Ops, 2>(p, rows); break;
    default: axpy_run_rows<Ops, 1>(p, rows); break;
  }
}

}  // namespace ps24::cpu::matmul
