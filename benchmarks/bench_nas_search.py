"""Is the Bayesian-optimization phase worth it? A check on the demo space, whose sub-space is small
enough to score exhaustively.

1. Price every vector of the demo space (its full grid) from a latency table; the sub-space is
   "estimate <= the pNN of Sobol estimates" (what `nas search --budget-ms pNN` uses).
2. Score every distinct in-budget network with NASWOT: the ground truth.
3. Run the search (`--trials` T, the CLI's defaults otherwise) for several seeds, with the GP alone
   (explore_every=0) and with every 3rd trial an unused Sobol candidate (the default), and report its
   best next to random search: the expected best of T vectors drawn uniformly without replacement from
   the sub-space, computed exactly from the score distribution.

    python benchmarks/bench_nas_search.py --table demo_out/lut.sqlite      # ~10 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.special import gammaln

from profiler.nas.estimate import LatencyEstimator
from profiler.nas.proxy import naswot
from profiler.nas.search import SearchConfig, run_search
from profiler.nas.space import load_space
from profiler.table import LatencyTable


def expected_best_of(scores: np.ndarray, draws: int) -> float:
    """E[max of `draws` values drawn without replacement]: the k-th smallest (1-based) is the max with
    probability C(k-1, draws-1) / C(n, draws)."""
    v = np.sort(scores)
    n, k = len(v), np.arange(1, len(v) + 1)
    valid = k >= draws
    log_p = (
        gammaln(k[valid])
        - gammaln(draws)
        - gammaln(k[valid] - draws + 1)
        - (gammaln(n + 1) - gammaln(draws + 1) - gammaln(n - draws + 1))
    )
    return float(np.sum(v[valid] * np.exp(log_p)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--table", type=Path, required=True, help="a table of the demo space (profiler build --space demo)"
    )
    parser.add_argument("--percentile", type=float, default=40.0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    space = load_space("demo")
    estimator = LatencyEstimator(LatencyTable(args.table), space)
    budget = float(np.nanpercentile(estimator.estimate(space.sample(4096, seed=0)).latency_ms, args.percentile))
    grid = np.stack(np.meshgrid(*[np.arange(c) for c in space.cardinalities], indexing="ij"), -1).reshape(
        -1, space.width
    )
    inside = grid[estimator.estimate(grid).latency_ms <= budget]
    start = time.perf_counter()
    by_network: dict[tuple, float] = {}
    scores = np.empty(len(inside))
    for i, v in enumerate(inside):
        network = space.decode(v)
        key = tuple(s.key() for s in network)
        if key not in by_network:
            by_network[key] = naswot(network)
        scores[i] = by_network[key]
    scoring_s = time.perf_counter() - start
    print(
        f"budget p{args.percentile:g} = {budget:.4g} ms: {len(inside)} of {len(grid)} vectors in budget, "
        f"{len(by_network)} distinct networks, all scored in {scoring_s:.0f} s "
        f"({1000 * scoring_s / len(by_network):.0f} ms each); best NASWOT {scores.max():.3f}"
    )
    random_best = expected_best_of(scores, args.trials)
    print(
        f"random search, {args.trials} draws: expected best {random_best:.3f} "
        f"(beats {100 * np.mean(scores < random_best):.1f}% of the sub-space)"
    )
    print(
        "\n| trials | explore_every | seed | BO best | share of sub-space below it | wall (s) |\n|---|---|---|---|---|---|"
    )
    for explore in (0, 3):
        bests = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                config = SearchConfig(
                    budget_ms=budget,
                    trials=args.trials,
                    seed=seed,
                    explore_every=explore,
                    storage=Path(tmp) / "s.sqlite",
                )
                start = time.perf_counter()
                best = run_search(space, estimator, config, progress=False).best
                wall = time.perf_counter() - start
            bests.append(best.score)
            print(
                f"| {args.trials} | {explore} | {seed} | {best.score:.3f} | {100 * np.mean(scores < best.score):.1f}% "
                f"| {wall:.0f} |"
            )
        print(f"| {args.trials} | {explore} | mean | {np.mean(bests):.3f} | random search: {random_best:.3f} | |")


if __name__ == "__main__":
    main()
