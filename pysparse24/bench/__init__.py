"""GEMM microbenchmark: 2:4 sparse vs dense on the user's shapes (`pysparse24 bench gemm`).

    from pysparse24.bench import GemmCase, run_cases
    results = run_cases([GemmCase(4096, 8, 4096, "float32")], backend="cpu", threads=2)

Backends ("cpu": pysparse24.matmul vs torch.matmul; "cuda": cuSPARSELt vs cuBLAS) live in a
registry (backends.register_backend), so every backend shares the same statistics and reports.
"""

from pysparse24.bench.backends import BACKENDS, register_backend
from pysparse24.bench.gemm import GemmCase, GemmResult, run_cases

__all__ = ["BACKENDS", "GemmCase", "GemmResult", "register_backend", "run_cases"]
