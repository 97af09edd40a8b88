#include "cpu/permutation_search.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <stdexcept>

namespace ps24::cpu {
namespace {

// Sum of the two largest of four values = the largest sum over the six pairs (branch-free).
inline float top2_of_4(float a, float b, float c, float d) {
  return std::max(std::max(a + b, c + d), std::max(std::max(a + c, b + d), std::max(a + d, b + c)));
}

// The 35 ways to split the eight columns of two stripes into two unordered groups of four:
// group A always holds slot 0 plus three of slots 1..7; group B is the rest.
struct Split {
  std::array<int, 4> a, b;
};

std::vector<Split> all_splits_of_eight() {
  std::vector<Split> splits;
  for (int i = 1; i < 8; ++i)
    for (int j = i + 1; j < 8; ++j)
      for (int k = j + 1; k < 8; ++k) {
        Split s{{0, i, j, k}, {}};
        int nb = 0;
        for (int x = 1; x < 8; ++x)
          if (x != i && x != j && x != k) s.b[nb++] = x;
        splits.push_back(s);
      }
  return splits;  // splits[0] = {0,1,2,3 | 4,5,6,7}, the current grouping
}

class Search {
 public:
  Search(const float* magnitude, int64_t rows, int64_t cols)
      : rows_(rows), stripes_(cols / 4), columns_(size_t(cols) * rows), perm_(cols),
        stripe_kept_(stripes_), pair_gain_(size_t(stripes_) * stripes_, 0.0),
        pair_split_(size_t(stripes_) * stripes_, 0), splits_(all_splits_of_eight()) {
    // Column-major copy so one column is one contiguous run of rows.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) columns_[size_t(c) * rows + r] = magnitude[r * cols + c];
    for (int64_t c = 0; c < cols; ++c) perm_[c] = c;
    for (int64_t s = 0; s < stripes_; ++s) stripe_kept_[s] = group_kept(&perm_[4 * s]);
    recompute_all_pairs();
  }

  double total_kept() const {
    double t = 0.0;
    for (double v : stripe_kept_) t += v;
    return t;
  }

  // Apply the best regrouping anywhere until none improves. Returns the number of moves applied.
  int64_t descend() {
    int64_t moves = 0;
    for (;;) {
      int64_t best_s = -1, best_t = -1;
      double best_gain = 0.0;
      for (int64_t s = 0; s < stripes_; ++s)
        for (int64_t t = s + 1; t < stripes_; ++t) {
          const double g = pair_gain_[s * stripes_ + t];
          // A relative threshold stops float noise from cycling between equal groupings.
          if (g > best_gain && g > 1e-6 * (stripe_kept_[s] + stripe_kept_[t])) {
            best_gain = g;
            best_s = s;
            best_t = t;
          }
        }
      if (best_s < 0) return moves;
      apply_split(best_s, best_t, splits_[pair_split_[best_s * stripes_ + best_t]]);
      ++moves;
    }
  }

  // Rotate one channel through three distinct stripes (s1 -> s2 -> s3 -> s1): a move no single
  // stripe-pair regrouping can undo, so descend() explores a new neighbourhood from there.
  void perturb(std::mt19937_64& rng) {
    std::uniform_int_distribution<int64_t> pick_stripe(0, stripes_ - 1);
    std::uniform_int_distribution<int> pick_slot(0, 3);
    int64_t s[3];
    s[0] = pick_stripe(rng);
    do s[1] = pick_stripe(rng); while (s[1] == s[0]);
    do s[2] = pick_stripe(rng); while (s[2] == s[0] || s[2] == s[1]);
    int64_t* slot[3];
    for (int i = 0; i < 3; ++i) slot[i] = &perm_[4 * s[i] + pick_slot(rng)];
    const int64_t first = *slot[0];
    *slot[0] = *slot[2];
    *slot[2] = *slot[1];
    *slot[1] = first;
    for (int64_t x : s) stripe_kept_[x] = group_kept(&perm_[4 * x]);
    for (int64_t x : s) recompute_pairs_of(x);
  }

  const std::vector<int64_t>& permutation() const { return perm_; }

  // The whole state is small (O(stripes^2)), so snapshots are plain copies.
  struct State {
    std::vector<int64_t> perm;
    std::vector<double> stripe_kept, pair_gain;
    std::vector<int> pair_split;
  };
  State save() const { return {perm_, stripe_kept_, pair_gain_, pair_split_}; }
  void load(const State& st) {
    perm_ = st.perm;
    stripe_kept_ = st.stripe_kept;
    pair_gain_ = st.pair_gain;
    pair_split_ = st.pair_split;
  }

 private:
  const float* column(int64_t c) const { return &columns_[size_t(c) * rows_]; }

  double group_kept(const int64_t* cols4) const {
    const float *c0 = column(cols4[0]), *c1 = column(cols4[1]), *c2 = column(cols4[2]),
                *c3 = column(cols4[3]);
    // Sixteen float partial sums let the compiler vectorise the loop over rows; the partials are
    // combined in double.
    constexpr int kLanes = 16;
    float partial[kLanes] = {};
    int64_t r = 0;
    for (; r + kLanes <= rows_; r += kLanes)
      for (int l = 0; l < kLanes; ++l) partial[l] += top2_of_4(c0[r + l], c1[r + l], c2[r + l], c3[r + l]);
    double sum = 0.0;
    for (; r < rows_; ++r) sum += top2_of_4(c0[r], c1[r], c2[r], c3[r]);
    for (float p : partial) sum += p;
    return sum;
  }

  // Best regrouping of stripes s and t: stores its gain over the current grouping and its index.
  void evaluate_pair(int64_t s, int64_t t) {
    int64_t eight[8];
    for (int i = 0; i < 4; ++i) {
      eight[i] = perm_[4 * s + i];
      eight[4 + i] = perm_[4 * t + i];
    }
    const double current = stripe_kept_[s] + stripe_kept_[t];
    double best_gain = 0.0;
    int best_split = 0;
    for (size_t k = 1; k < splits_.size(); ++k) {  // k = 0 is the current grouping
      const Split& sp = splits_[k];
      const int64_t ga[4] = {eight[sp.a[0]], eight[sp.a[1]], eight[sp.a[2]], eight[sp.a[3]]};
      const int64_t gb[4] = {eight[sp.b[0]], eight[sp.b[1]], eight[sp.b[2]], eight[sp.b[3]]};
      const double gain = group_kept(ga) + group_kept(gb) - current;
      if (gain > best_gain) {
        best_gain = gain;
        best_split = int(k);
      }
    }
    pair_gain_[s * stripes_ + t] = pair_gain_[t * stripes_ + s] = best_gain;
    pair_split_[s * stripes_ + t] = pair_split_[t * stripes_ + s] = best_split;
  }

  void recompute_all_pairs() {
#pragma omp parallel for schedule(dynamic)
    for (int64_t s = 0; s < stripes_; ++s)
      for (int64_t t = s + 1; t < stripes_; ++t) evaluate_pair(s, t);
  }

  // Serial on purpose: it touches only O(stripes) pairs, and waking threads for that costs more
  // than it saves (badly so on a loaded machine).
  void recompute_pairs_of(int64_t s) {
    for (int64_t t = 0; t < stripes_; ++t)
      if (t != s) evaluate_pair(std::min(s, t), std::max(s, t));
  }

  void apply_split(int64_t s, int64_t t, const Split& sp) {
    int64_t eight[8];
    for (int i = 0; i < 4; ++i) {
      eight[i] = perm_[4 * s + i];
      eight[4 + i] = perm_[4 * t + i];
    }
    for (int i = 0; i < 4; ++i) {
      perm_[4 * s + i] = eight[sp.a[i]];
      perm_[4 * t + i] = eight[sp.b[i]];
    }
    stripe_kept_[s] = group_kept(&perm_[4 * s]);
    stripe_kept_[t] = group_kept(&perm_[4 * t]);
    recompute_pairs_of(s);
    recompute_pairs_of(t);
  }

  int64_t rows_, stripes_;
  std::vector<float> columns_;
  std::vector<int64_t> perm_;
  std::vector<double> stripe_kept_;
  std::vector<double> pair_gain_;  // stripes x stripes, symmetric; diagonal unused
  std::vector<int> pair_split_;
  std::vector<Split> splits_;
};

}  // namespace

PermutationSearchResult search_permutation_2to4(const float* magnitude, int64_t rows, int64_t cols,
                                                uint64_t seed, int64_t escape_attempts) {
  if (rows < 1 || cols < 4 || cols % 4 != 0)
    throw std::invalid_argument("permutation search needs rows >= 1 and a column count divisible by 4, got " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  if (escape_attempts < 0) throw std::invalid_argument("escape_attempts must be >= 0");
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!(std::isfinite(magnitude[i]) && magnitude[i] >= 0.0f))
      throw std::invalid_argument("permutation search needs finite magnitudes >= 0");

  Search search(magnitude, rows, cols);
  PermutationSearchResult result;
  result.kept_before = search.total_kept();
  if (cols >= 12) {  // with fewer than three stripes, one descent already tries every grouping
    result.improving_moves = search.descend();
    Search::State best = search.save();
    double best_kept = search.total_kept();
    std::mt19937_64 rng(seed);
    for (int64_t attempt = 0; attempt < escape_attempts; ++attempt) {
      search.perturb(rng);
      const int64_t moves = search.descend();
      const double kept = search.total_kept();
      if (kept > best_kept * (1.0 + 1e-9)) {
        best = search.save();
        best_kept = kept;
        result.improving_moves += moves;
        ++result.escapes_accepted;
      } else {
        search.load(best);
      }
    }
    search.load(best);
  } else {
    result.improving_moves = search.descend();
  }
  result.permutation = search.permutation();
  result.kept_after = search.total_kept();
  return result;
}

}  // namespace ps24::cpu
