// pybind11 bindings for masks, compression and decompression. Arrays arrive as C-contiguous numpy
// arrays of raw bits (uint8/16/32; the Python layer reinterprets the user's dtype without copying)
// and the kernels run without the GIL. Problems found in the data come back as indices; the Python
// layer turns them into messages in the user's coordinates.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/compress.h"

namespace py = pybind11;
using ps24::Kind;
using namespace ps24::cpu;

namespace {

// Tests turn this on so that every freshly allocated output starts as garbage (0xA5 bytes): an
// element a kernel forgets to write then shows up as a mismatch instead of hiding behind a zero.
bool g_poison_outputs = false;

template <typename Array>
Array fresh(Array a) {
  if (g_poison_outputs) std::memset(a.mutable_data(), 0xA5, static_cast<size_t>(a.nbytes()));
  return a;
}

Kind to_kind(int kind) {
  if (kind < 0 || kind > 5) throw std::invalid_argument("unknown element kind " + std::to_string(kind));
  return static_cast<Kind>(kind);
}

// Checks that `a` is a C-contiguous 2-D array whose items are `bytes` wide; returns (rows, cols).
std::pair<int64_t, int64_t> matrix_shape(const py::array& a, int bytes, const char* what) {
  if (a.ndim() != 2) throw std::invalid_argument(std::string(what) + " must be 2-D");
  if (a.itemsize() != bytes)
    throw std::invalid_argument(std::string(what) + " has " + std::to_string(a.itemsize()) + "-byte items, expected " +
                                std::to_string(bytes));
  if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string(what) + " must be C-contiguous");
  return {a.shape(0), a.shape(1)};
}

py::dtype bits_dtype(int bytes) {
  return bytes == 4 ? py::dtype::of<uint32_t>() : bytes == 2 ? py::dtype::of<uint16_t>() : py::dtype::of<uint8_t>();
}

void check_groups(int64_t cols, int m) {
  if (m < 1 || m > 16) throw std::invalid_argument("group size m must be in 1..16, got " + std::to_string(m));
  if (cols % m) throw std::invalid_argument("the grouped dimension (" + std::to_string(cols) + ") is not divisible by m=" + std::to_string(m));
}

py::tuple mask_nm(const py::array& x, int kind_id, int n, int m) {
  const Kind kind = to_kind(kind_id);
  auto [rows, cols] = matrix_shape(x, kind_bytes(kind), "input");
  check_groups(cols, m);
  if (n < 0 || n > m) throw std::invalid_argument("n must be in 0..m");
  py::array_t<bool> mask = fresh(py::array_t<bool>({rows, cols}));
  Findings f;
  {
    py::gil_scoped_release release;
    f = mask_n_of_m(x.data(), rows, cols, kind, n, m, reinterpret_cast<uint8_t*>(mask.mutable_data()));
  }
  return py::make_tuple(mask, f.first_nonfinite);
}

py::tuple mask_4x4(const py::array& x, int kind_id, bool exhaustive) {
  const Kind kind = to_kind(kind_id);
  auto [rows, cols] = matrix_shape(x, kind_bytes(kind), "input");
  if (rows % 4 || cols % 4) throw std::invalid_argument("4x4 block masks need both dimensions divisible by 4");
  py::array_t<bool> mask = fresh(py::array_t<bool>({rows, cols}));
  Findings f;
  {
    py::gil_scoped_release release;
    auto* out = reinterpret_cast<uint8_t*>(mask.mutable_data());
    f = exhaustive ? mask_4x4_best(x.data(), rows, cols, kind, out) : mask_4x4_greedy(x.data(), rows, cols, kind, out);
  }
  return py::make_tuple(mask, f.first_nonfinite);
}

int64_t first_overfull(const py::array& x, int kind_id, int n, int m) {
  const Kind kind = to_kind(kind_id);
  auto [rows, cols] = matrix_shape(x, kind_bytes(kind), "input");
  check_groups(cols, m);
  py::gil_scoped_release release;
  return count_overfull(x.data(), rows, cols, kind, n, m).first_overfull;
}

int cutlass_meta_bytes(Kind kind) { return kind_bytes(kind) == 1 ? 4 : 2; }

py::tuple compress(const py::array& x, int kind_id, const std::string& format, bool prune) {
  const Kind kind = to_kind(kind_id);
  auto [rows, cols] = matrix_shape(x, kind_bytes(kind), "input");
  const int bytes = kind_bytes(kind);
  py::array values = fresh(py::array(bits_dtype(bytes), {rows, cols / 2}));
  Findings f;
  if (format == "packed") {
    if (cols % 8) throw std::invalid_argument("packed format needs the number of columns divisible by 8");
    py::array_t<uint8_t> meta = fresh(py::array_t<uint8_t>({rows, cols / 8}));
    {
      py::gil_scoped_release release;
      f = compress_packed(x.data(), rows, cols, kind, prune, values.mutable_data(), meta.mutable_data());
    }
    return py::make_tuple(values, meta, f.first_nonfinite, f.first_overfull);
  }
  if (format == "cutlass") {
    const int word = cutlass_meta_bytes(kind);
    // Meta words are swizzled in 2x2 blocks, so a row needs an even number of them.
    const int row_multiple = word == 2 ? 32 : 16;
    const int col_multiple = kind == Kind::F32 ? 16 : word == 2 ? 32 : 64;
    if (rows % row_multiple || cols % col_multiple)
      throw std::invalid_argument("cutlass format needs rows divisible by " + std::to_string(row_multiple) +
                                  " and columns divisible by " + std::to_string(col_multiple));
    const int64_t meta_cols = cols / (kind == Kind::F32 ? 8 : word == 2 ? 16 : 32);
    py::array meta = fresh(py::array(word == 2 ? py::dtype::of<int16_t>() : py::dtype::of<int32_t>(), {rows, meta_cols}));
    {
      py::gil_scoped_release release;
      f = compress_cutlass(x.data(), rows, cols, kind, prune, values.mutable_data(), meta.mutable_data());
    }
    return py::make_tuple(values, meta, f.first_nonfinite, f.first_overfull);
  }
  throw std::invalid_argument("unknown format '" + format + "': expected 'packed' or 'cutlass'");
}

py::tuple decompress(const py::array& values, const py::array& meta, int kind_id, const std::string& format,
                     int64_t rows, int64_t cols) {
  const Kind kind = to_kind(kind_id);
  const int bytes = kind_bytes(kind);
  auto [vr, vc] = matrix_shape(values, bytes, "values");
  if (vr != rows || vc * 2 != cols) throw std::invalid_argument("values shape does not match the dense shape");
  py::array out = fresh(py::array(bits_dtype(bytes), {rows, cols}));
  int64_t bad;
  if (format == "packed") {
    auto [mr, mc] = matrix_shape(meta, 1, "meta");
    if (cols % 8 || mr != rows || mc * 8 != cols) throw std::invalid_argument("meta shape does not match the dense shape");
    py::gil_scoped_release release;
    bad = decompress_packed(values.data(), static_cast<const uint8_t*>(meta.data()), rows, cols, kind, out.mutable_data());
  } else if (format == "cutlass") {
    const int word = cutlass_meta_bytes(kind);
    auto [mr, mc] = matrix_shape(meta, word, "meta");
    const int64_t per_word = kind == Kind::F32 ? 8 : word == 2 ? 16 : 32;
    const int row_multiple = word == 2 ? 32 : 16;
    if (rows % row_multiple || cols % (2 * per_word) || mr != rows || mc * per_word != cols)
      throw std::invalid_argument("meta shape does not match the dense shape for the cutlass format");
    py::gil_scoped_release release;
    bad = decompress_cutlass(values.data(), meta.data(), rows, cols, kind, out.mutable_data());
  } else {
    throw std::invalid_argument("unknown format '" + format + "': expected 'packed' or 'cutlass'");
  }
  return py::make_tuple(out, bad);
}

int64_t first_bad_code(const py::array& meta) {
  if (meta.itemsize() != 1 || !(meta.flags() & py::array::c_style))
    throw std::invalid_argument("packed metadata must be a C-contiguous uint8 array");
  const auto* data = static_cast<const uint8_t*>(meta.data());
  const int64_t nbytes = meta.size();
  py::gil_scoped_release release;
  return ps24::cpu::first_bad_packed_code(data, nbytes);
}

}  // namespace

void bind_compress(py::module_& m) {
  m.def("set_poison_outputs", [](bool on) { g_poison_outputs = on; }, py::arg("on"),
        "Fill every new output array with 0xA5 bytes before the kernel writes it (for tests).");
  m.def("mask_nm", &mask_nm, py::arg("x"), py::arg("kind"), py::arg("n"), py::arg("m"),
        "n:m keep mask along the last dim of a raw-bits matrix -> (mask, first_nonfinite)");
  m.def("mask_4x4", &mask_4x4, py::arg("x"), py::arg("kind"), py::arg("exhaustive"),
        "4x4 blocks 2:4 along rows and columns -> (mask, first_nonfinite)");
  m.def("first_overfull", &first_overfull, py::arg("x"), py::arg("kind"), py::arg("n"), py::arg("m"),
        "flat index of the first group with more than n non-zeros, or -1");
  m.def("compress", &compress, py::arg("x"), py::arg("kind"), py::arg("format"), py::arg("prune"),
        "-> (values, meta, first_nonfinite, first_overfull)");
  m.def("first_bad_packed_code", &first_bad_code, py::arg("meta"),
        "flat group index of the first invalid code in packed metadata (uint8, C-contiguous), or -1");
  m.def("decompress", &decompress, py::arg("values"), py::arg("meta"), py::arg("kind"), py::arg("format"),
        py::arg("rows"), py::arg("cols"), "-> (dense, first_bad_group)");
}
