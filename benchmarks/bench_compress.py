"""Compression throughput on a 4096x4096 float16 weight, side by side in one run:
numpy copy of the same bytes, pysparse24 (mask+compress, compress alone; packed and cutlass), and
PyTorch's CPU reference conversion (torch.sparse._semi_structured_conversions).

    python benchmarks/bench_compress.py            # report table (markdown) for RESULTS.md
    pytest benchmarks/bench_compress.py --benchmark-only   # the same cases under pytest-benchmark
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch.sparse._semi_structured_conversions import sparse_semi_structured_from_dense_cutlass

import pysparse24

SHAPE = (4096, 4096)


def make_weights(seed: int = 0):
    w = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float16)
    return w, pysparse24.prune(w)


def torch_magnitude_prune(w: torch.Tensor) -> torch.Tensor:
    """2:4 by magnitude in plain PyTorch ops (what a user would write without this library)."""
    groups = w.reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.abs().topk(2, dim=1).indices, True)
    return (groups * keep).reshape(w.shape)


def cases(w: np.ndarray, pruned: np.ndarray) -> dict:
    tw, tp = torch.from_numpy(w), torch.from_numpy(pruned)
    return {
        "numpy copy (same bytes)": lambda: w.copy(),
        "pysparse24 mask+compress (packed)": lambda: pysparse24.compress(w, prune=True),
        "pysparse24 compress (packed)": lambda: pysparse24.compress(pruned),
        "pysparse24 mask+compress (cutlass)": lambda: pysparse24.compress(w, format="cutlass", prune=True),
        "pysparse24 compress (cutlass)": lambda: pysparse24.compress(pruned, format="cutlass"),
        "PyTorch mask+compress (cutlass ref)": lambda: sparse_semi_structured_from_dense_cutlass(
            torch_magnitude_prune(tw)
        ),
        "PyTorch compress (cutlass ref)": lambda: sparse_semi_structured_from_dense_cutlass(tp),
    }


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (page faults, thread pool start)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def machine_line() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"numpy {np.__version__}, ISA {pysparse24._C.active_isa()}, {time.strftime('%Y-%m-%d')}"
    )


def report(repeats: int) -> str:
    w, pruned = make_weights()
    medians = {}
    # Interleave the cases round by round so that machine noise hits all of them alike.
    samples = {name: [] for name in cases(w, pruned)}
    for _ in range(repeats):
        for name, fn in cases(w, pruned).items():
            samples[name] += timed(fn, 1) if name.startswith("PyTorch") else timed(fn, 5)
    for name, s in samples.items():
        medians[name] = statistics.median(s)
    copy = medians["numpy copy (same bytes)"]
    lines = [
        f"Machine: {machine_line()}",
        "",
        f"Input: {SHAPE[0]}x{SHAPE[1]} float16 ({w.nbytes / 2**20:.0f} MiB), medians; throughput = input bytes / time.",
        "",
        "| case | median ms | GB/s (input) | vs copy | vs PyTorch same op |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, t in medians.items():
        op = "mask+compress" if "mask+compress" in name else "compress"
        ref = medians.get(f"PyTorch {op} (cutlass ref)")
        vs_torch = f"{ref / t:.0f}x" if ref and not name.startswith(("PyTorch", "numpy")) else ""
        lines.append(f"| {name} | {t * 1e3:.2f} | {w.nbytes / t / 1e9:.1f} | {copy / t:.0%} | {vs_torch} |")
    return "\n".join(lines)


# ---- pytest-benchmark ----------------------------------------------------------------------------


def _bench(benchmark, name):
    w, pruned = make_weights()
    benchmark.pedantic(cases(w, pruned)[name], rounds=10, warmup_rounds=1)


def test_numpy_copy(benchmark):
    _bench(benchmark, "numpy copy (same bytes)")


def test_mask_compress_packed(benchmark):
    _bench(benchmark, "pysparse24 mask+compress (packed)")


def test_compress_packed(benchmark):
    _bench(benchmark, "pysparse24 compress (packed)")


def test_compress_cutlass(benchmark):
    _bench(benchmark, "pysparse24 compress (cutlass)")


def test_pytorch_reference_compress(benchmark):
    w, pruned = make_weights()
    benchmark.pedantic(cases(w, pruned)["PyTorch compress (cutlass ref)"], rounds=2, warmup_rounds=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    print(report(parser.parse_args().repeats))
