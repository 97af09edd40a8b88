// Channel permutation search for 2:4 sparsity (the idea of NVIDIA's ASP, Pool & Yu, NeurIPS 2021).
//
// A weight matrix (rows x cols) is pruned 2:4 along its columns (the input channels): every group
// of four consecutive columns keeps the two largest magnitudes of each row. Reordering the columns
// changes which channels share a group and therefore how much magnitude survives. The network still
// computes the same function when the producing layer's output channels are reordered the same way,
// so we are free to pick the order that keeps the most.
#pragma once
#include <cstdint>
#include <vector>

namespace ps24::cpu {

struct PermutationSearchResult {
  std::vector<int64_t> permutation;  // new column j is old column permutation[j]
  double kept_before = 0.0;          // sum of |w| kept by 2:4 in the original column order
  double kept_after = 0.0;           // ... in the permuted order (never less than kept_before)
  int64_t improving_moves = 0;       // stripe-pair regroupings applied
  int64_t escapes_accepted = 0;      // perturbations that led to a better optimum
};

// `magnitude` is row-major (rows x cols), every entry finite and >= 0; cols % 4 == 0.
// Search: greedy over pairs of stripes (a stripe = one group of four columns) trying all 35 ways to
// regroup their eight columns, always applying the best regrouping found anywhere, until none
// improves (this covers every single channel swap). Then `escape_attempts` times: perturb the best
// order with a random 3-cycle of channels across three stripes, descend again, keep it if better.
// Deterministic for a given seed. Cost per sweep: O(stripes^2 * 35 * rows).
PermutationSearchResult search_permutation_2to4(const float* magnitude, int64_t rows, int64_t cols,
                                                uint64_t seed, int64_t escape_attempts);

}  // namespace ps24::cpu
