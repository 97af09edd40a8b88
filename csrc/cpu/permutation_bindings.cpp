// Python binding of the channel permutation search (pysparse24._C.search_permutation_2to4).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "cpu/permutation_search.h"

namespace py = pybind11;

void bind_permutation(py::module_& m) {
  m.def(
      "search_permutation_2to4",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> magnitude, uint64_t seed,
         int64_t escape_attempts) {
        if (magnitude.ndim() != 2)
          throw std::invalid_argument("search_permutation_2to4 needs a 2-D (rows x channels) array, got " +
                                      std::to_string(magnitude.ndim()) + "-D");
        const int64_t rows = magnitude.shape(0), cols = magnitude.shape(1);
        ps24::cpu::PermutationSearchResult r;
        {
          py::gil_scoped_release release;
          r = ps24::cpu::search_permutation_2to4(magnitude.data(), rows, cols, seed, escape_attempts);
        }
        py::array_t<int64_t> perm(r.permutation.size());
        std::copy(r.permutation.begin(), r.permutation.end(), perm.mutable_data());
        py::dict out;
        out["permutation"] = perm;
        out["kept_before"] = r.kept_before;
        out["kept_after"] = r.kept_after;
        out["improving_moves"] = r.improving_moves;
        out["escapes_accepted"] = r.escapes_accepted;
        return out;
      },
      py::arg("magnitude"), py::arg("seed") = 0, py::arg("escape_attempts") = 100,
      "Search a column order of a (rows x channels) magnitude matrix that keeps more under 2:4.\n"
      "Returns a dict: permutation (new column j = old column permutation[j]), kept_before,\n"
      "kept_after, improving_moves, escapes_accepted. Deterministic for a given seed.");
}
