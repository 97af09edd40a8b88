"""The adaptive timing loop every backend shares: reject warm-up, repeat until the median is stable
or the time budget is spent, keep the spread.

A backend supplies `sample(n) -> list of n per-call times in ms` (wall clock around each call on the
CPU; CUDA events on a GPU), so each runtime is timed the way its users time it, and the stopping
rule is the same everywhere.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..stats import LatencyStats


@dataclass(frozen=True)
class TimingPolicy:
    warmup_min: int = 10          # calls always discarded first (allocations, caches, JIT, clocks)
    warmup_s: float = 0.05        # ... and at least this long
    min_repeats: int = 50
    min_time_s: float = 0.1       # keep timing at least this long (spans scheduler noise on shared CPUs)
    max_repeats: int = 2000
    chunk: int = 10               # calls between stability checks
    rel_tol: float = 0.01         # stop once a chunk moves the median by less than this (relative)
    stable_checks: int = 3        # ... this many checks in a row
    budget_s: float = 2.0         # hard cap on timed work per measurement

    def __post_init__(self):
        if self.warmup_min < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise ValueError("TimingPolicy needs warmup_min >= 0 and 1 <= min_repeats <= max_repeats")
        if self.chunk < 1 or self.rel_tol <= 0 or self.budget_s <= 0 or self.stable_checks < 1 \
                or self.min_time_s < 0:
            raise ValueError("TimingPolicy needs chunk >= 1, rel_tol > 0, budget_s > 0, stable_checks >= 1, "
                             "min_time_s >= 0")


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


def cuda_event_sampler(run: Callable[[], object], stream=None) -> Callable[[int], list[float]]:
    """Per-call GPU time in ms from CUDA events recorded around each call on `stream` (torch's
    current stream by default): the device-side time, as trtexec's "GPU Compute Time" reports it."""
    import torch

    def sample(n: int) -> list[float]:
        s = stream or torch.cuda.current_stream()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record(s)
            run()
            end.record(s)
        s.synchronize()
        return [start.elapsed_time(end) for start, end in events]
    return sample


def measure_interleaved(samplers, rounds: int, policy: TimingPolicy, seed: int = 0,
                        log=None) -> list[list[LatencyStats]]:
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
