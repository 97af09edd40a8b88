"""Phase-1 estimate throughput: candidates priced per second from a latency table, one core.

Stages, timed separately on the same 2**20 Sobol candidates (best of --repeats):
  index   number every block of the space once (one-time cost per space)
  ids     vectors -> (candidates x 2*stages) block-id and count matrices, all rows in one pass
  price   gather + weighted row sum + calibration on those matrices (the >= 1M candidates/s target)
  total   LatencyEstimator.estimate(vectors): ids + price in cache-sized chunks, missing-key bookkeeping
The table holds a synthetic median for every block (key-derived), so nothing is missing, and a
calibration is applied, as on a validated table. numpy runs these single-threaded.

    python benchmarks/bench_nas_estimate.py                 # markdown table for RESULTS.md
    python benchmarks/bench_nas_estimate.py --log2-n 16     # quick smoke run
    pytest benchmarks/bench_nas_estimate.py --benchmark-only
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import time

import numpy as np

from profiler.calibration import KIND
from profiler.nas.estimate import LatencyEstimator, space_index
from profiler.nas.space import load_space

CALIBRATION = {"kind": KIND, "scale": 0.95, "per_layer_ms": -0.002, "offset_ms": 0.01}


class SyntheticTable:
    """The two calls LatencyEstimator makes of a LatencyTable, over made-up medians."""

    context = {"batch": 1, "precision": "fp32", "sparsity": "dense"}

    def medians_ms(self, keys):
        return np.array([0.01 + int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 2**32 for k in keys])

    def calibration(self):
        return CALIBRATION


def best_of(repeats: int, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def measure(space_name: str, n: int, repeats: int) -> dict:
    space = load_space(space_name)
    space_index.cache_clear()
    t_index, estimator = best_of(1, lambda: LatencyEstimator(SyntheticTable(), space))
    vectors = space.sample(n, seed=0)
    t_ids, (ids, counts) = best_of(repeats, lambda: estimator.index.ids_and_counts(vectors))
    t_price, latency = best_of(repeats, lambda: estimator.latency(ids, counts))
    t_total, result = best_of(repeats, lambda: estimator.estimate(vectors))
    assert np.all(np.isfinite(latency)) and np.array_equal(result.latency_ms, latency)
    return {
        "space": space_name,
        "width": space.width,
        "blocks": len(estimator.index.keys),
        "n": n,
        "index_s": t_index,
        "ids_per_s": n / t_ids,
        "price_per_s": n / t_price,
        "total_per_s": n / t_total,
    }


def machine() -> str:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, load average {load:.1f} at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2-n", type=int, default=20, help="candidates = 2**N (default 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spaces", default="demo,gpunet,gpunet_sparse")
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    print(
        "| space | vector width | blocks indexed | candidates | index build (s) | ids (cand/s) "
        "| price: gather+sum+calibration (cand/s) | total: estimate() (cand/s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.spaces.split(","):
        r = measure(name, 2**args.log2_n, args.repeats)
        print(
            f"| {r['space']} | {r['width']} | {r['blocks']} | {r['n']} | {r['index_s']:.2f} | {r['ids_per_s']:,.0f} "
            f"| {r['price_per_s']:,.0f} | {r['total_per_s']:,.0f} |"
        )


# ---- the same under pytest-benchmark -------------------------------------------------------------
def _prepared(space_name: str, n: int = 2**16):
    estimator = LatencyEstimator(SyntheticTable(), load_space(space_name))
    vectors = estimator.space.sample(n, seed=0)
    return estimator, vectors, *estimator.index.ids_and_counts(vectors)


def test_price_gpunet(benchmark):
    estimator, _, ids, counts = _prepared("gpunet")
    benchmark(estimator.latency, ids, counts)


def test_ids_gpunet(benchmark):
    estimator, vectors, _, _ = _prepared("gpunet")
    benchmark(estimator.index.ids_and_counts, vectors)


if __name__ == "__main__":
    main()
