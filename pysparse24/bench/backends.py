"""Timing backends: each times one (M, N, K, dtype) GEMM, sparse and dense, side by side.

A backend is a function (M, N, K, dtype, warmup, repeats, threads, cold) -> {"sparse_ms": [...],
"dense_ms": [...]}; the harness (gemm.py) turns the lists into statistics. Register new ones with
register_backend; the GPU one is imported only when asked for.

cold=True cycles through copies of the weight (more than 2.5x the last-level cache in all), so each
timed call reads its weight from memory, as the layers of a real model do. (A 4096x4096 bfloat16
2:4 weight, 19 MB, fits this machine's 32 MB L3: warm repeats would time a cache, not memory.)
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from pysparse24.timing import fixed_count, wall_clock_sampler

TimePair = Callable[[int, int, int, str, int, int, int, bool], dict]
BACKENDS: dict[str, TimePair] = {}


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (no GPU, library missing); the message says why."""


def register_backend(name: str, time_pair: TimePair) -> None:
    BACKENDS[name] = time_pair


def get_backend(name: str) -> TimePair:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def _last_level_cache_bytes() -> int:
    try:
        text = open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip()
        return int(text.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
    except (OSError, ValueError):
        return 32 << 20


def _copies(make, nbytes: int, cold: bool) -> list:
    """[make(0)] when warm; when cold, enough distinct copies that cycling through them streams 2.5x
    the last-level cache between two uses of the same one, so every call reads its weight from
    memory, as consecutive layers of a model do. (Copies rather than a cache-flushing sweep: a
    sweep leaves dirty lines or, against a scan-resistant cache, leaves hot weights in place.)"""
    if not cold:
        return [make(0)]
    count = min(256, max(2, math.ceil(2.5 * _last_level_cache_bytes() / max(nbytes, 1))))
    return [make(i) for i in range(count)]


def _cycling(fn, items: list):
    """A no-argument call of fn on the next item, round robin."""
    state = {"i": 0}

    def call():
        fn(items[state["i"] % len(items)])
        state["i"] += 1

    return call


def random_sparse_weight(M: int, K: int, dtype: str, seed: int = 0):
    """A fresh random torch weight (M, K) pruned to 2:4 (never zeros: timing on zeros can flatter)."""
    import torch

    import pysparse24

    gen = torch.Generator().manual_seed(seed)
    if dtype == "int8":
        dense = torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=gen)
    else:
        dense = torch.randn(M, K, generator=gen).to(getattr(torch, dtype))
    return pysparse24.prune(dense)


def time_cpu_pair(
    M: int, N: int, K: int, dtype: str, warmup: int, repeats: int, threads: int, cold: bool = True
) -> dict:
    """pysparse24.matmul on the packed weight vs torch on the dense one, same dtype and threads.

    Dense baseline: torch.matmul (float32, bfloat16) or torch._int_mm (int8 -> int32, the same
    accumulation as the sparse kernel). Both write into preallocated outputs."""
    import torch

    import pysparse24

    if dtype not in ("float32", "bfloat16", "int8"):
        raise ValueError(f"the cpu backend times float32, bfloat16 and int8, not {dtype}")
    torch.set_num_threads(threads)
    w = random_sparse_weight(M, K, dtype)
    gen = torch.Generator().manual_seed(1)
    if dtype == "int8":
        x = torch.randint(-128, 128, (K, N), dtype=torch.int8, generator=gen)
        out_dtype = torch.int32
    else:
        x = torch.randn(K, N, generator=gen).to(w.dtype)
        out_dtype = w.dtype
    dense_out = torch.empty(M, N, dtype=out_dtype)
    sparse_out = torch.empty(M, N, dtype=out_dtype)
    c = pysparse24.compress(w)
    dense_weights = _copies(lambda i: w if i == 0 else w.clone(), w.numel() * w.element_size(), cold)
    sparse_weights = _copies(
        lambda i: c if i == 0 else pysparse24.Compressed(c.values.clone(), c.meta.clone(), c.shape, c.dtype, c.format),
        c.nbytes,
        cold,
    )
    if dtype == "int8":
        dense = _cycling(lambda wi: torch._int_mm(wi, x, out=dense_out), dense_weights)
    else:
        dense = _cycling(lambda wi: torch.matmul(wi, x, out=dense_out), dense_weights)
    sparse = _cycling(lambda ci: pysparse24.matmul(ci, x, out=sparse_out, threads=threads), sparse_weights)

    # One block per kind: alternating calls would let each library's idle worker threads spin
    # against the other's.
    dense_ms = fixed_count(wall_clock_sampler(dense), warmup, repeats)
    sparse_ms = fixed_count(wall_clock_sampler(sparse), warmup, repeats)
    _check_agreement(sparse_out, dense_out, dtype, K)
    return {"sparse_ms": sparse_ms, "dense_ms": dense_ms}


def _check_agreement(sparse_out, dense_out, dtype: str, K: int) -> None:
    """A benchmark of a wrong kernel is worthless: the two results must agree."""
    s, d = sparse_out.double().numpy(), dense_out.double().numpy()
    scale = np.abs(d).max() + 1e-30
    tolerance = 0.0 if dtype == "int8" else (2.0**-6 if dtype == "bfloat16" else 1e-4)
    if np.abs(s - d).max() > tolerance * scale:
        raise RuntimeError(
            f"sparse and dense results disagree for {dtype} (max error {np.abs(s - d).max():.3g} vs scale {scale:.3g})"
        )


def time_cuda_pair(
    M: int, N: int, K: int, dtype: str, warmup: int, repeats: int, threads: int, cold: bool = True
) -> dict:
    """cuSPARSELt vs cuBLAS through pysparse24.cuda (threads and cold do not apply: GPU timing and
    its caches are pysparse24.cuda.gemm_bench's)."""
    try:
        import torch  # noqa: F401  (the GPU timing runs through torch's CUDA streams)

        from pysparse24 import cuda
        from pysparse24.cuda.gemm_bench import time_gemm_pair
    except ImportError as exc:
        raise BackendUnavailable(
            f"the cuda backend needs torch with CUDA and pysparse24's CUDA build with cuSPARSELt "
            f"(pip install 'pysparse24[cuda]' on a machine with an NVIDIA GPU): {exc}"
        ) from exc
    reason = cuda.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"the cuda backend cannot run here: {reason}")
    try:
        return time_gemm_pair(M, N, K, dtype, warmup, repeats)
    except cuda.UnavailableError as exc:
        raise BackendUnavailable(f"the cuda backend cannot run here: {exc}") from exc


register_backend("cpu", time_cpu_pair)
register_backend("cuda", time_cuda_pair)
