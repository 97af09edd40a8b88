// The large-N regime of the sparse matmul (N >= kAxpyMinN, float32): "axpy over N".
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

#include "cpu/matmul.h"

namespace ps24::cpu::matmul {

// Blocking: rows in macro blocks of kMacroRows (the unit of work of a thread); within one, panel
// by panel, K in blocks of groups whose X (of that panel) fits in L1, and for each K block the
// macro block's R-row tiles. So each X block is loaded once from L2 for all rows of the macro
// block. Partial sums wait in a per-thread float buffer between K blocks (stored and reloaded
// exactly: the order is unchanged). Measured on Zen 5 (1 thread, 2048x512x4096, loaded machine):
// panels aligned to 64 bytes were worth 1.5x; an L2-sized K block was no faster (before aligning).
constexpr int64_t kMacroRows = 96;
constexpr int64_t kXBlockBytes = 40 * 1024;

// One tile: R rows x CV vectors of Ops::kWidth columns of panel `panel`, groups [g0, g1).
// `partial` holds the tile's running sums (R rows of `ld` floats, from this panel's first column).
template <class Ops, int R, int CV>
static void axpy_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t g0, int64_t g1,
                      int64_t panel, float* partial, int64_t ld) {
  using Vec = typename Ops::Vec;
  constexpr int W = Ops::kWidth, width = W * CV;
  const int64_t nv = p.K / 2;
  Vec acc[R][CV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < CV; ++c) acc[r][c] = g0 == 0 ? Ops::zero() : Ops::load(partial + r * ld + c * W);
  // Groups come in pairs (one meta byte; K is a multiple of 8, block edges are even).
  const uint8_t* meta = p.meta + r0 * p.meta_cols;
  const float* xs = static_cast<const float*>(x.data) + panel * x.stride;
  const float* values = static_cast<const float*>(p.values) + r0 * nv;
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
        const Vec v0 = Ops::broadcast(values[r * nv + 2 * (g + h)]);
        const Vec v1 = Ops::broadcast(values[r * nv + 2 * (g + h) + 1]);
#pragma GCC unroll 8
        for (int c = 0; c < CV; ++c) acc[r][c] = Ops::fma(v0, Ops::load(x0 + c * W), acc[r][c]);
#pragma GCC unroll 8
        for (int c = 0; c < CV; ++c) acc[r][c] = Ops::fma(v1, Ops::load(x1 + c * W), acc[r][c]);
      }
    }
  }
  if (g1 < p.K / 4) {
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < CV; ++c) Ops::store(partial + r * ld + c * W, acc[r][c]);
    return;
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < CV; ++c) {
      alignas(64) float lanes[W];
      Ops::store(lanes, acc[r][c]);
      const int64_t n0 = panel * width + c * W;
      for (int l = 0; l < W && n0 + l < p.N; ++l) store_float(p, r0 + r, n0 + l, lanes[l]);
    }
}

using AxpyTileFn = void (*)(const Problem&, const PackedX&, int64_t, int64_t, int64_t, int64_t,
                            float*, int64_t);

template <class Ops, int CV, int... Rs>
static void axpy_run_rows(const Problem& p, const PackedX& x, std::integer_sequence<int, Rs...>) {
  constexpr int R = sizeof...(Rs), width = Ops::kWidth * CV;
  static constexpr AxpyTileFn table[R] = {&axpy_tile<Ops, Rs + 1, CV>...};
  const int64_t groups = p.K / 4, panels = (p.N + width - 1) / width, ld = panels * width;
  const int64_t x_bytes_per_group = 4 * 4 * width;  // of one panel
  int64_t block = kXBlockBytes / x_bytes_per_group;
  block = block < 8 ? 8 : block / 2 * 2;  // whole meta bytes
  const int64_t macro_blocks = (p.M + kMacroRows - 1) / kMacroRows;
  const int threads = p.threads > 0 ? p.threads : omp_get_max_threads();
  const bool worth_threads = p.M * p.N * p.K > (int64_t(1) << 20);
#pragma omp parallel num_threads(threads) if (worth_threads)
  {
    std::unique_ptr<float[]> partial(new float[size_t(kMacroRows * ld)]);
#pragma omp for schedule(dynamic, 1)
    for (int64_t mb = 0; mb < macro_blocks; ++mb) {
      const int64_t m_begin = mb * kMacroRows;
      const int64_t m_end = m_begin + kMacroRows < p.M ? m_begin + kMacroRows : p.M;
      for (int64_t panel = 0; panel < panels; ++panel) {
        for (int64_t g0 = 0; g0 < groups || g0 == 0; g0 += block) {  // K = 0: one pass writes bias
          const int64_t g1 = g0 + block < groups ? g0 + block : groups;
          for (int64_t r0 = m_begin; r0 < m_end; r0 += R) {
            const int rows = int(m_end - r0 < R ? m_end - r0 : R);
            table[rows - 1](p, x, r0, g0, g1, panel, partial.get() + (r0 - m_begin) * ld + panel * width, ld);
          }
        }
      }
    }
  }
}

// Runs the regime with R-row tiles on panels of `width` columns (a multiple of Ops::kWidth whose
// quotient is 1, 2 or 4; see axpy_panel_width).
template <class Ops, int R>
static void run_axpy(const Problem& p, const PackedX& x, int width) {
  const auto rows = std::make_integer_sequence<int, R>{};
  switch (width / Ops::kWidth) {
    case 4: axpy_run_rows<Ops, 4>(p, x, rows); break;
    case 2: axpy_run_rows<Ops, 2>(p, x, rows); break;
    default: axpy_run_rows<Ops, 1>(p, x, rows); break;
  }
}

}  // namespace ps24::cpu::matmul
