// The one pybind11 module, pysparse24._C. Each area registers its own functions from its own file;
// this file only wires them together.
#include <pybind11/pybind11.h>

#include "cpu/isa.h"

namespace py = pybind11;

void bind_compress(py::module_& m);  // csrc/cpu/compress_bindings.cpp (masks, compress, decompress)
void bind_permutation(py::module_& m);  // csrc/cpu/permutation_bindings.cpp (2:4 channel permutation search)
#ifdef PYSPARSE24_WITH_CUDA
void bind_cuda(py::module_& m);      // csrc/cuda/
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "pysparse24 C++/CUDA core";
  m.def("best_isa", [] { return ps24::cpu::isa_name(ps24::cpu::best_isa()); },
        "Widest SIMD instruction set this CPU supports.");
  m.def("active_isa", [] { return ps24::cpu::isa_name(ps24::cpu::active_isa()); },
        "SIMD instruction set the CPU kernels use now.");
  m.def("set_isa", &ps24::cpu::force_isa, py::arg("name"),
        "Force the CPU kernels onto one path: 'scalar', 'avx2', 'avx512' or 'auto'.");
  bind_compress(m);
  bind_permutation(m);
#ifdef PYSPARSE24_WITH_CUDA
  m.attr("has_cuda_build") = true;
  bind_cuda(m);
#else
  m.attr("has_cuda_build") = false;
#endif
}
