"""pysparse24.timing: the one timing harness and its statistics (median, percentiles, adaptive stopping),
used by the GEMM benchmark, the CUDA GEMM timing and every latency-table backend."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from pysparse24.bench import backends as bench_backends
from pysparse24.timing import (
    LatencyStats,
    TimingPolicy,
    fixed_count,
    least_disturbed,
    measure_adaptive,
    measure_interleaved,
    summarize,
    wall_clock_sampler,
)


# ------------------------------------------------------------------------------ statistics
def test_summary_is_numpys_linear_percentiles():
    rng = np.random.default_rng(7)
    samples = rng.lognormal(0.0, 0.5, 101)
    s = summarize(samples)
    assert s["median_ms"] == pytest.approx(np.median(samples))
    assert s["p10_ms"] == pytest.approx(np.percentile(samples, 10))
    assert s["p90_ms"] == pytest.approx(np.percentile(samples, 90)) and s["n"] == 101
    assert summarize([1, 2, 3, 4, 5]) == {
        "median_ms": 3.0,
        "p10_ms": pytest.approx(1.4),
        "p90_ms": pytest.approx(4.6),
        "n": 5,
    }
    stats = LatencyStats.from_samples(samples, warmup=3)
    assert (stats.median_ms, stats.p10_ms, stats.p90_ms, stats.n) == (s["median_ms"], s["p10_ms"], s["p90_ms"], 101)
    assert stats.mean_ms == pytest.approx(samples.mean()) and stats.std_ms == pytest.approx(samples.std())
    for bad in ([], [1.0, float("nan")], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="finite timings"):
            summarize(bad)


def test_fixed_count_discards_warmup_and_times_each_call():
    calls = itertools.count()
    seen = []
    sample = lambda n: [float(seen.append(next(calls)) or len(seen)) for _ in range(n)]  # noqa: E731
    assert fixed_count(sample, warmup=3, repeats=4) == [4.0, 5.0, 6.0, 7.0]
    times = fixed_count(wall_clock_sampler(lambda: sum(range(1000))), warmup=1, repeats=5)
    assert len(times) == 5 and all(t > 0 for t in times)
    with pytest.raises(ValueError, match="repeats"):
        fixed_count(sample, warmup=0, repeats=0)


def test_one_timing_home():
    """The GEMM benchmark, the CUDA GEMM timing and the latency backends share pysparse24.timing; the
    former per-package harnesses are gone, and profiler's backends re-export the same objects."""
    import profiler.backends

    assert profiler.backends.TimingPolicy is TimingPolicy and profiler.backends.measure_adaptive is measure_adaptive
    assert bench_backends.fixed_count is fixed_count
    root = Path(__file__).resolve().parents[1]
    assert not (root / "profiler" / "stats.py").exists() and not (root / "profiler" / "backends" / "timing.py").exists()
    from pysparse24.cuda import gemm_bench

    expected = {**summarize([1, 2, 3, 4, 5]), "tflops": pytest.approx(1.0)}
    assert gemm_bench.summarize([1, 2, 3, 4, 5], flops=3e9) == expected


# ------------------------------------------------------------------------------ adaptive stopping
def test_warmup_is_rejected_and_the_median_is_robust():
    calls = itertools.count()

    def sample(n):  # 5 slow cold calls, then 1.0 ms with one 50 ms hiccup every 10 calls
        out = []
        for _ in range(n):
            i = next(calls)
            out.append(100.0 if i < 5 else (50.0 if i % 10 == 0 else 1.0))
        return out

    stats = measure_adaptive(sample, TimingPolicy(warmup_min=5, warmup_s=0.0, min_repeats=30, min_time_s=0.0))
    assert stats.warmup == 5 and stats.median_ms == 1.0 and stats.p90_ms >= 1.0 and stats.std_ms > 0
    assert 30 <= stats.n < 2000  # stable median: stops early, but never before min_repeats


def test_unstable_timings_run_until_the_budget_or_the_cap():
    rng = np.random.default_rng(0)
    drifting = iter(np.cumsum(rng.uniform(0.5, 1.5, 100000)))  # median never settles
    stats = measure_adaptive(
        lambda n: [float(next(drifting)) for _ in range(n)],
        TimingPolicy(warmup_min=0, warmup_s=0.0, min_repeats=10, max_repeats=300, min_time_s=0.0, budget_s=30.0),
    )
    assert stats.n == 300
    with pytest.raises(ValueError):
        TimingPolicy(min_repeats=0)


def test_interleaved_rounds_spread_load_and_keep_the_least_disturbed():
    clock = itertools.count()
    order = []

    def sampler(name, base):
        def sample(n):  # a load burst makes everything 3x slower during calls 100..199 (of 300)
            order.append(name)
            return [base * (3.0 if 100 <= next(clock) < 200 else 1.0) for _ in range(n)]

        return sample

    policy = TimingPolicy(warmup_min=0, warmup_s=0.0, min_repeats=20, max_repeats=20, min_time_s=0.0)
    stats = measure_interleaved([sampler("a", 1.0), sampler("b", 2.0), sampler("c", 4.0)], 5, policy, seed=1)
    assert [len(s) for s in stats] == [5, 5, 5]
    rounds = [order[i : i + 6] for i in range(0, 30, 6)]  # 20 samples = 2 chunks of 10 per item
    assert len({tuple(r[::2]) for r in rounds}) > 1  # the order changes between rounds
    assert [least_disturbed(s).median_ms for s in stats] == [1.0, 2.0, 4.0]
    assert max(s.median_ms for item in stats for s in item) > 4.0  # the burst did hit some rounds
    with pytest.raises(ValueError):
        measure_interleaved([], 0, policy)
