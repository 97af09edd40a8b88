"""The harness: run GEMM cases on a backend, summarise the timings, keep results safe on disk.

Each finished case is appended to the JSON results file at once (written atomically), so a sweep
that is killed loses at most the case in flight, and `resume=True` skips cases already there.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pysparse24.bench.backends import get_backend
from pysparse24.timing import summarize

_ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
_RESULT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 4}  # int8 -> int32


@dataclass(frozen=True)
class GemmCase:
    """out (M, N) = W (M, K) @ X (K, N); W is the 2:4 sparse operand. `layer` names its source."""

    M: int
    N: int
    K: int
    dtype: str = "float32"
    layer: str = ""

    def flops(self) -> int:
        """Dense-equivalent: 2*M*N*K, so sparse and dense GFLOP/s compare directly."""
        return 2 * self.M * self.N * self.K

    def bytes_moved(self) -> tuple[int, int]:
        """(sparse, dense) bytes read + written once: the weight, X and the result. A sparse weight
        row is K/2 values plus K/8 metadata bytes (0.5625x the dense row for 16-bit types)."""
        e = _ELEMENT_BYTES[self.dtype]
        io = self.K * self.N * e + self.M * self.N * _RESULT_BYTES[self.dtype]
        sparse_weight = self.M * (self.K // 2) * e + self.M * (self.K // 8)
        return sparse_weight + io, self.M * self.K * e + io

    def key(self, backend: str, threads: int, cold: bool) -> str:
        return f"{backend}:{self.dtype}:{self.M}x{self.N}x{self.K}:t{threads}:{'cold' if cold else 'warm'}"


@dataclass
class GemmResult:
    case: GemmCase
    backend: str
    threads: int
    cold: bool  # every timed call read its weight from memory (backends.py)
    sparse: dict  # median_ms, p10_ms, p90_ms, n
    dense: dict
    speedup: float  # dense median / sparse median
    sparse_gflops: float  # dense-equivalent
    dense_gflops: float
    sparse_bytes: int
    dense_bytes: int
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_samples(cls, case: GemmCase, backend: str, threads: int, cold: bool, timings: dict) -> "GemmResult":
        sparse, dense = summarize(timings["sparse_ms"]), summarize(timings["dense_ms"])
        sparse_bytes, dense_bytes = case.bytes_moved()
        gflops = lambda ms: case.flops() / (ms * 1e-3) / 1e9  # noqa: E731
        return cls(
            case,
            backend,
            threads,
            cold,
            sparse,
            dense,
            dense["median_ms"] / sparse["median_ms"],
            gflops(sparse["median_ms"]),
            gflops(dense["median_ms"]),
            sparse_bytes,
            dense_bytes,
            {k: v for k, v in timings.items() if k not in ("sparse_ms", "dense_ms")},
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GemmResult":
        return cls(**{**d, "case": GemmCase(**d["case"])})


def load_results(path: Path) -> list[GemmResult]:
    data = json.loads(Path(path).read_text())
    return [GemmResult.from_dict(d) for d in data["results"]]


def save_results(results: list[GemmResult], path: Path) -> None:
    """Atomic: write a temporary file, then rename over the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"results": [r.to_dict() for r in results]}, indent=1))
    os.replace(tmp, path)


def run_cases(
    cases: list[GemmCase],
    backend: str = "cpu",
    threads: int = 2,
    warmup: int = 3,
    repeats: int = 20,
    cold: bool = True,
    json_path: str | Path | None = None,
    resume: bool = False,
    progress=None,
) -> list[GemmResult]:
    """Times every case (sparse and dense side by side) and returns the results in case order.

    json_path: results are saved there after every case; with resume=True the cases already in it
    (same backend, dtype, shape, threads, cache state) are kept instead of re-measured.
    cold: every timed call reads its weight from memory, not cache (see backends.py).
    progress: optional callable(done, total, case) for a progress display."""
    if warmup < 0 or repeats < 1:
        raise ValueError("warmup must be >= 0 and repeats >= 1")
    time_pair = get_backend(backend)
    done: dict[str, GemmResult] = {}
    if json_path is not None and resume and Path(json_path).exists():
        done = {r.case.key(r.backend, r.threads, r.cold): r for r in load_results(Path(json_path))}
    results = []
    for i, case in enumerate(cases):
        key = case.key(backend, threads, cold)
        if key not in done:
            timings = time_pair(case.M, case.N, case.K, case.dtype, warmup, repeats, threads, cold)
            done[key] = GemmResult.from_samples(case, backend, threads, cold, timings)
        results.append(done[key])
        if json_path is not None:
            save_results(list(done.values()), Path(json_path))
        if progress is not None:
            progress(i + 1, len(cases), case)
    return results
