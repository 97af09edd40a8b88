"""Timing and its statistics, the one home for both (the GEMM benchmark, the CUDA GEMM timing and
every latency-table backend use it).

A runtime supplies `sample(n) -> list of n per-call times in ms` (wall clock around each call on the
CPU; CUDA events on a GPU), so each runtime is timed the way its users time it. Two loops run a
sampler: `measure_adaptive` (reject warm-up, repeat until the median is stable or the time budget is
spent) and `fixed_count` (a given warm-up and repeat count, for sweeps that report raw samples).
`summarize` / `LatencyStats` turn samples into median, p10, p90 (numpy's linear percentiles).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


def summarize(samples_ms) -> dict:
    """median_ms, p10_ms, p90_ms and n of a non-empty 1-D list of finite timings."""
    s = np.asarray(samples_ms, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError("timing statistics need a non-empty 1-D list of finite timings")
    p10, median, p90 = np.percentile(s, [10, 50, 90])
    return {"median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90), "n": int(s.size)}


@dataclass(frozen=True)
class LatencyStats:
    """What one measurement of one layer produced (every latency backend returns this)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    n: int  # timed repeats kept
    warmup: int  # repeats run and discarded before timing

    @classmethod
    def from_samples(cls, samples_ms, warmup: int) -> "LatencyStats":
        q = summarize(samples_ms)
        s = np.asarray(samples_ms, dtype=np.float64)
        return cls(q["median_ms"], q["p10_ms"], q["p90_ms"], float(s.mean()), float(s.std()), q["n"], int(warmup))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TimingPolicy:
    warmup_min: int = 10  # calls always discarded first (allocations, caches, JIT, clocks)
    warmup_s: float = 0.05  # ... and at least this long
    min_repeats: int = 50
    min_time_s: float = 0.1  # keep timing at least this long (spans scheduler noise on shared CPUs)
    max_repeats: int = 2000
    chunk: int = 10  # calls between stability checks
    rel_tol: float = 0.01  # stop once a chunk moves the median by less than this (relative)
    stable_checks: int = 3  # ... this many checks in a row
    budget_s: float = 2.0  # hard cap on timed work per measurement

    def __post_init__(self):
        if self.warmup_min < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise ValueError("TimingPolicy needs warmup_min >= 0 and 1 <= min_repeats <= max_repeats")
        if self.chunk < 1 or self.rel_tol <= 0 or self.budget_s <= 0 or self.stable_checks < 1 or self.min_time_s < 0:
            raise ValueError(
                "TimingPolicy needs chunk >= 1, rel_tol > 0, budget_s > 0, stable_checks >= 1, min_time_s >= 0"
            )


def wall_clock_sampler(run: Callable[[], object]) -> Callable[[int], list[float]]:
    """Per-call wall time in ms, for runtimes whose call returns when the work is done (CPU)."""

    def sample(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            run()
            out.append((time.perf_counter_ns() - t0) * 1e-6)
        return out

    return sample


def measure_adaptive(sample: Callable[[int], list[float]], policy: TimingPolicy = TimingPolicy()) -> LatencyStats:
    """Time `sample` under `policy` and summarise the kept calls."""
    warmup, t_start = 0, time.perf_counter()
    while warmup < policy.warmup_min or time.perf_counter() - t_start < policy.warmup_s:
        sample(1)
        warmup += 1

    samples: list[float] = []
    t_start = time.perf_counter()
    stable, median = 0, None
    while len(samples) < policy.max_repeats:
        samples += sample(min(policy.chunk, policy.max_repeats - len(samples)))
        new_median = float(np.median(samples))
        if median is not None and abs(new_median - median) <= policy.rel_tol * median:
            stable += 1
        else:
            stable = 0
        median = new_median
        elapsed = time.perf_counter() - t_start
        if len(samples) < policy.min_repeats:
            continue
        if (stable >= policy.stable_checks and elapsed >= policy.min_time_s) or elapsed > policy.budget_s:
            break
    return LatencyStats.from_samples(samples, warmup=warmup)


def fixed_count(sample: Callable[[int], list[float]], warmup: int, repeats: int) -> list[float]:
    """`repeats` per-call times after `warmup` discarded calls."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    if warmup:
        sample(warmup)
    return sample(repeats)


def cuda_event_sampler(
    run: Callable[[], object], stream=None, before: Callable[[], object] | None = None
) -> Callable[[int], list[float]]:
    """Per-call GPU time in ms from CUDA events recorded around each call on `stream` (torch's
    current stream by default): the device-side time, as trtexec's "GPU Compute Time" reports it.
    `before` runs ahead of each call outside the events (e.g. an L2 cache flush)."""
    import torch

    def sample(n: int) -> list[float]:
        s = stream or torch.cuda.current_stream()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            if before is not None:
                before()
            start.record(s)
            run()
            end.record(s)
        s.synchronize()
        return [start.elapsed_time(end) for start, end in events]

    return sample


def measure_interleaved(
    samplers, rounds: int, policy: TimingPolicy, seed: int = 0, log=None
) -> list[list[LatencyStats]]:
    """stats[item][round]: every sampler measured once per round, each round in a fresh random
    order, so a burst of load from other processes lands on many items a little rather than on
    a few a lot. Summarise an item with least_disturbed()."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rng = np.random.default_rng(seed)
    stats: list[list] = [[None] * rounds for _ in samplers]
    for r in range(rounds):
        for i in rng.permutation(len(samplers)):
            stats[i][r] = measure_adaptive(samplers[i], policy)
        if log:
            log(f"  round {r + 1}/{rounds} done")
    return stats


def least_disturbed(stats) -> LatencyStats:
    """The round with the lowest median. Load from other processes only ever adds time, so on a
    shared machine the fastest round is the one closest to the machine's own speed."""
    return min(stats, key=lambda s: s.median_ms)
