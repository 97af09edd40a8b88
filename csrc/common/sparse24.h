// The 2:4 bit layout, in one place. Header-only and __host__ __device__, so the CPU kernels
// (csrc/cpu) and the CUDA kernels (csrc/cuda) share it and the CPU tests pin what the GPU does.
//
// Everything here works on one group of m consecutive elements along the reduction dimension,
// using "magnitude keys": unsigned integers whose order is the order of |x|. For sign-magnitude
// floats (fp32, fp16, bf16, fp8) that is the bit pattern with the sign cleared (NaN is rejected
// before we get here); for int8 it is |x| widened so that -128 has a key too.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define PS24_HD __host__ __device__ __forceinline__
#else
#define PS24_HD inline
#endif

namespace ps24 {

// Element kinds understood by every kernel. The Python layer maps dtypes onto these.
enum class Kind : int { F32 = 0, F16 = 1, BF16 = 2, I8 = 3, F8E4M3 = 4, F8E5M2 = 5 };

PS24_HD int kind_bytes(Kind k) {
  return k == Kind::F32 ? 4 : (k == Kind::F16 || k == Kind::BF16) ? 2 : 1;
}

// Magnitude keys ------------------------------------------------------------------------------
PS24_HD uint32_t magnitude_key(uint32_t bits) { return bits & 0x7fffffffu; }  // fp32
PS24_HD uint16_t magnitude_key(uint16_t bits) { return bits & 0x7fffu; }      // fp16, bf16
PS24_HD uint8_t magnitude_key_float8(uint8_t bits) { return bits & 0x7fu; }   // fp8 e4m3 / e5m2
PS24_HD uint8_t magnitude_key_int8(int8_t v) { return v < 0 ? uint8_t(-int(v)) : uint8_t(v); }

// A value is "non-zero" for the compression formats when its magnitude key is non-zero, so
// -0.0 counts as zero, as it does for the hardware and for PyTorch's `dense != 0`.

// n:m selection -------------------------------------------------------------------------------
// Bit i of the result is set when element i is among the n largest keys of the group.
// Ties break deterministically: the lower index wins.
template <typename Key>
PS24_HD uint32_t keep_mask_n_of_m(const Key* keys, int n, int m) {
  uint32_t mask = 0;
  for (int i = 0; i < m; ++i) {
    int beaten_by = 0;  // how many elements rank above element i
    for (int j = 0; j < m; ++j) {
      beaten_by += (keys[j] > keys[i]) || (keys[j] == keys[i] && j < i);
    }
    if (beaten_by < n) mask |= 1u << i;
  }
  return mask;
}

// 2:4 specialisation with no loops: element i is kept unless two or more of the other three beat it.
template <typename Key>
PS24_HD uint32_t keep_mask_2_of_4(Key k0, Key k1, Key k2, Key k3) {
  // b_ij: element j beats element i.
  const bool b01 = k1 > k0, b02 = k2 > k0, b03 = k3 > k0;
  const bool b10 = k0 >= k1, b12 = k2 > k1, b13 = k3 > k1;
  const bool b20 = k0 >= k2, b21 = k1 >= k2, b23 = k3 > k2;
  const bool b30 = k0 >= k3, b31 = k1 >= k3, b32 = k2 >= k3;
  const bool keep0 = (int(b01) + int(b02) + int(b03)) < 2;
  const bool keep1 = (int(b10) + int(b12) + int(b13)) < 2;
  const bool keep2 = (int(b20) + int(b21) + int(b23)) < 2;
  const bool keep3 = (int(b30) + int(b31) + int(b32)) < 2;
  return uint32_t(keep0) | uint32_t(keep1) << 1 | uint32_t(keep2) << 2 | uint32_t(keep3) << 3;
}

// Metadata codes ------------------------------------------------------------------------------
// A 4-bit code names the two kept positions of a group of four: idx0 | idx1 << 2, idx0 < idx1.
// This is both the "packed" nibble and the per-group code inside CUTLASS's metadata words.
PS24_HD constexpr uint32_t code_from_pair(uint32_t idx0, uint32_t idx1) { return idx0 | (idx1 << 2); }
PS24_HD uint32_t code_idx0(uint32_t code) { return code & 3u; }
PS24_HD uint32_t code_idx1(uint32_t code) { return (code >> 2) & 3u; }
// The one validity rule for a code (decompress and the checks before matmul apply it).
PS24_HD bool code_valid(uint32_t code) { return code_idx0(code) < code_idx1(code); }

// Code for a keep mask with exactly two bits set (0 for any other mask, which callers never pass).
PS24_HD uint32_t code_from_keep_mask(uint32_t mask4) {
  // Indexed by the 4-bit mask; only the six two-bit masks are meaningful.
  constexpr uint8_t table[16] = {0, 0, 0, 0x4, 0, 0x8, 0x9, 0, 0, 0xC, 0xD, 0, 0xE, 0, 0, 0};
  return table[mask4 & 15u];
}

PS24_HD uint32_t keep_mask_from_code(uint32_t code) {
  return (1u << code_idx0(code)) | (1u << code_idx1(code));
}

// Packed metadata: group g of a row sits in nibble g % 2 of byte g / 2 (low nibble first).
PS24_HD uint32_t packed_code(const uint8_t* meta_row, int64_t group) {
  return (meta_row[group / 2] >> (4 * (group % 2))) & 15u;
}
PS24_HD void set_packed_code(uint8_t* meta_row, int64_t group, uint32_t code) {
  const int shift = 4 * (group % 2);
  meta_row[group / 2] = static_cast<uint8_t>((meta_row[group / 2] & ~(15u << shift)) | (code << shift));
}

// CUTLASS / PyTorch semi-structured code for a group of four given its non-zero flags (bit i set
// when element i is non-zero). Groups with fewer than two non-zeros name some zero positions as
// kept; the choice is PyTorch's (sparse_semi_structured_from_dense_cutlass), so that our output is
// bit-identical. Callers reject groups with more than two non-zeros before asking.
PS24_HD constexpr uint32_t cutlass_code_from_nonzeros(uint32_t nz4) {
  const bool m0 = nz4 & 1u, m1 = nz4 & 2u, m3 = nz4 & 8u;
  const bool expr0 = m0 && m1, expr1 = !m0 && m1, expr2 = !m0 && !m1;
  const uint32_t idx0 = uint32_t(expr1) | uint32_t(expr2) << 1;
  const uint32_t idx1 = uint32_t(expr0 || expr2 || m3) | uint32_t(expr1 || !m1) << 1;
  return code_from_pair(idx0, idx1);
}

// float32 on sparse tensor cores is 1:2: each pair (a, b) is described as if it were four 16-bit
// halves (a_lo, a_hi, b_lo, b_hi), two of which are kept.
PS24_HD uint32_t cutlass_code_for_pair(bool nz_a, bool nz_b) {
  return cutlass_code_from_nonzeros(uint32_t(nz_a) * 3u | uint32_t(nz_b) * 12u);
}

// CUTLASS metadata reordering -----------------------------------------------------------------
// The metadata matrix (rows, meta_cols) of 16-bit words (fp32/fp16/bf16) or 32-bit words
// (8-bit types) is stored in CUTLASS's ColumnMajorInterleaved<2> layout with rows interwoven and
// 2x2 blocks swizzled. Returns the linear position of logical word (row, col).
PS24_HD int64_t cutlass_meta_offset(int64_t row, int64_t col, int64_t rows, int meta_word_bytes) {
  const int64_t group = meta_word_bytes == 2 ? 32 : 16;
  const int64_t interweave = meta_word_bytes == 2 ? 4 : 2;
  int64_t r = row / group * group + (row % 8) * interweave + (row % group) / 8;
  int64_t c = col;
  const int64_t swap = int64_t(r % 2 == 0 && c % 2 == 1) - int64_t(r % 2 == 1 && c % 2 == 0);
  r += swap;
  c -= swap;
  return (c / 2) * rows * 2 + r * 2 + (c % 2);
}

}  // namespace ps24

namespace ps24 {

// Non-finite test on raw bits (NaN or Inf; float8 e4m3fn has NaN only). int8 is always finite.
PS24_HD bool is_nonfinite_bits(uint32_t bits, Kind kind) {
  switch (kind) {
    case Kind::F32: return (bits & 0x7f800000u) == 0x7f800000u;
    case Kind::F16: return (bits & 0x7c00u) == 0x7c00u;
    case Kind::BF16: return (bits & 0x7f80u) == 0x7f80u;
    case Kind::F8E4M3: return (bits & 0x7fu) == 0x7fu;
    case Kind::F8E5M2: return (bits & 0x7cu) == 0x7cu;
    default: return false;
  }
}

// Magnitude key of raw bits of any kind, widened to 32 bits (order = order of |x|).
PS24_HD uint32_t magnitude_key_bits(uint32_t bits, Kind kind) {
  switch (kind) {
    case Kind::F32: return bits & 0x7fffffffu;
    case Kind::F16:
    case Kind::BF16: return bits & 0x7fffu;
    case Kind::I8: return magnitude_key_int8(static_cast<int8_t>(bits & 0xffu));
    default: return bits & 0x7fu;  // float8
  }
}

}  // namespace ps24
