// The large-N regime of the sparse matmul (N >= kAxpyMinN, float32 and bfloat16): "axpy over N".
// For output row m and group g with kept values (v0, v1) at k-rows 4g+i0 and 4g+i1,
//   y[m, columns] += v0 * X[4g+i0, columns] + v1 * X[4g+i1, columns]
// with v broadcast and X rows contiguous, so the hot loop is a broadcast, loads and FMAs: no
// permutes. X is packed once into panels of `width` columns (zero-padded), sized to stay in L2:
//   float32:  panel = K rows of `width` floats.
//   bfloat16: panel = K/4 groups x 6 index pairs x `width` dwords; dword (g, pair, n) holds the
//             bfloat16 bits of X[4g+i1, n] (high half) and X[4g+i0, n] (low half), the operand
//             layout of vdpbf16ps against the broadcast value pair (v1 | v0) of a group.
// Summation order of this regime (matmul.h): one running sum per output element, over the kept
// values in increasing order (float32: fma(v0, x) then fma(v1, x) per group; bfloat16: per group
// v1 then v0, each flushed to zero if denormal, the vdpbf16ps order), then bias, then rounding.
// Every ISA includes this file with its own vector operations (Ops), so the order is one code.
#pragma once
#include <array>
#include <memory>

#include "cpu/matmul.h"

namespace ps24::cpu::matmul {

// Index pair (i0, i1) of each packed bfloat16 slot, and the slot of each meta code i0 | i1 << 2
// (a nibble table; invalid codes read slot 0, so no meta can address outside the panel).
static constexpr int kPairIdx[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
static constexpr uint64_t kSlotOfCode = (uint64_t(1) << 4 * 8) | (uint64_t(2) << 4 * 12) |
                                        (uint64_t(3) << 4 * 9) | (uint64_t(4) << 4 * 13) |
                                        (uint64_t(5) << 4 * 14);  // code 4 -> slot 0

static constexpr int slot_of_code(unsigned code) { return int(kSlotOfCode >> (4 * code)) & 15; }

// Blocking: rows in macro blocks of kMacroRows (the unit of work of a thread), K in blocks of
// groups whose X (all panels) fits an L2 budget. For each K block a thread walks its macro block
// in R-row tiles and each tile across every panel, so the X block is reused by all rows of the
// macro block from L2 and a tile's weights by all panels from L1. Partial sums wait in a
// per-thread float buffer between K blocks (stored and reloaded exactly: the order is unchanged).
constexpr int64_t kMacroRows = 96;
constexpr int64_t kXBlockBytes = 40 * 1024;

// One tile: R rows x CV vectors of Ops::kWidth columns of panel `panel`, groups [g0, g1).
// `partial` holds the tile's running sums (R rows of `ld` floats, from this panel's first column).
template <class Ops, bool Bf16, int R, int CV>
static void axpy_tile(const Problem& p, const PackedX& x, int64_t r0, int64_t g0, int64_t g1,
                      int64_t panel, float* partial, int64_t ld) {
  using Vec = typename Ops::Vec;
  constexpr int W = Ops::kWidth, width = W * CV;
  const int64_t nv = p.K / 2;
  Vec acc[R][CV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < CV; ++c) acc[r][c] = g0 == 0 ? Ops::zero() : Ops::load(partial + r * ld + c * W);
  // Groups come in pairs (one meta byte; K is a multiple of 8, block edges are even); each
  // 4-bit code becomes X row offsets through a table, so the loop is loads and FMAs.
  const uint8_t* meta = p.meta + r0 * p.meta_cols;
  if constexpr (Bf16) {
    const uint32_t* xs = static_cast<const uint32_t*>(x.data) + panel * x.stride;
    const uint8_t* values = static_cast<const uint8_t*>(p.values) + r0 * nv * 2;
    static constexpr auto offset = [] {
      std::array<int32_t, 16> t{};
      for (unsigned code = 0; code < 16; ++code) t[code] = slot_of_code(code) * width;
      return t;
    }();
    for (int64_t g = g0; g < g1; g += 2) {
      const uint32_t* xg = xs + 6 * g * width;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const unsigned byte = meta[r * p.meta_cols + g / 2];
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const uint32_t* xp = xg + 6 * width * h + offset[h ? byte >> 4 : byte & 15u];
          const auto pair = Ops::broadcast_pair(load_u32(values + r * nv * 2 + 4 * (g + h)));
#pragma GCC unroll 8
          for (int c = 0; c < CV; ++c) acc[r][c] = Ops::dot_pair(acc[r][c], pair, xp + c * W);
        }
      }
    }
  } else {
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

template <class Ops, bool Bf16, int CV, int... Rs>
static void axpy_run_rows(const Problem& p, const PackedX& x, std::integer_sequence<int, Rs...>) {
  constexpr int R = sizeof...(Rs), width = Ops::kWidth * CV;
  static constexpr AxpyTileFn table[R] = {&axpy_tile<Ops, Bf16, Rs + 1, CV>...};
  const int64_t groups = p.K / 4, panels = (p.N + width - 1) / width, ld = panels * width;
  const int64_t x_bytes_per_group = (Bf16 ? 6 : 4) * 4 * width;  // of one panel
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
        for (int64_t g0 = 0; g0 < groups; g0 += block) {
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
  const bool bf16 = p.kind == Kind::BF16;
  switch (width / Ops::kWidth) {
    case 4: bf16 ? axpy_run_rows<Ops, true, 4>(p, x, rows) : axpy_run_rows<Ops, false, 4>(p, x, rows); break;
    case 2: bf16 ? axpy_run_rows<Ops, true, 2>(p, x, rows) : axpy_run_rows<Ops, false, 2>(p, x, rows); break;
    default: bf16 ? axpy_run_rows<Ops, true, 1>(p, x, rows) : axpy_run_rows<Ops, false, 1>(p, x, rows); break;
  }
}

}  // namespace ps24::cpu::matmul
