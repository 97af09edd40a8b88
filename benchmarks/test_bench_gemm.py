"""pytest-benchmark suite for the CPU 2:4 sparse GEMM: `make bench` (or pytest benchmarks --benchmark-only).

Sparse (pysparse24.matmul on the packed weight) and dense (torch.matmul on the same weight, same
dtype) are grouped per shape, so the comparison table shows them side by side. Threads: 2, or
PYSPARSE24_BENCH_THREADS. Calls run back to back (warm caches); `pysparse24 bench gemm` also times
cold-cache calls, its default. Run with OMP_WAIT_POLICY=PASSIVE (see README).
"""

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

import pysparse24  # noqa: E402
from pysparse24.bench.backends import random_sparse_weight  # noqa: E402

THREADS = int(os.environ.get("PYSPARSE24_BENCH_THREADS", "2"))
CASES = [(4096, n, 4096, d) for d in ("float32", "bfloat16") for n in (1, 8, 128)] + [
    (11008, n, 4096, "float32") for n in (1, 8)
]


@pytest.fixture(params=CASES, ids=lambda c: f"{c[3]}-{c[0]}x{c[1]}x{c[2]}")
def problem(request):
    M, N, K, dtype = request.param
    torch.set_num_threads(THREADS)
    w = random_sparse_weight(M, K, dtype)
    x = torch.randn(K, N).to(w.dtype)
    return request.param, w, pysparse24.compress(w), x


def test_sparse(benchmark, problem):
    (M, N, K, dtype), _, c, x = problem
    benchmark.group = f"{dtype} {M}x{N}x{K}"
    out = torch.empty(M, N, dtype=x.dtype)
    benchmark(pysparse24.matmul, c, x, out=out, threads=THREADS)


def test_dense(benchmark, problem):
    (M, N, K, dtype), w, _, x = problem
    benchmark.group = f"{dtype} {M}x{N}x{K}"
    out = torch.empty(M, N, dtype=x.dtype)
    benchmark(torch.matmul, w, x, out=out)
