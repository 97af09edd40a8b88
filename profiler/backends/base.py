"""The one interface every latency backend implements.

    backend.measure(spec)          -> LatencyStats of one block
    backend.measure_network(specs) -> LatencyStats of the chained blocks, end to end
    backend.runner(spec_or_specs)  -> prepared `sample(n)` callable (used to interleave networks)
    backend.context()              -> dict describing where and how it measures (the table stores it)

A backend is configured for one precision and one batch size: those are part of its context, and
a spec with another precision or batch is refused rather than silently measured in a mixed table.
A backend that really executes 2:4 layers names its executor in `sparse_executor` (recorded in the
context); one that cannot (it would run the pruned weights at dense speed) refuses sparsity "2:4",
so a table never holds a dense timing under a sparse key.
"""

from __future__ import annotations

import os
import platform
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from pysparse24.timing import LatencyStats, TimingPolicy, measure_adaptive

from ..blocks import check_network
from ..spec import PRECISIONS, LayerSpec
from ..table import SPARSE_EXECUTOR, cannot_run_sparse


class BackendUnavailable(RuntimeError):
    """The runtime a backend needs (TensorRT, a GPU, an execution provider) is not here."""


class Backend(ABC):
    name: str = "?"
    sparse_executor: str | None = None  # what runs "2:4" layers sparse; None: this backend cannot

    def __init__(self, precision: str = "fp32", batch: int = 1, policy: TimingPolicy | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if int(batch) < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.precision = precision
        self.batch = int(batch)
        self.policy = policy or TimingPolicy()

    # -- the interface -------------------------------------------------------------------------
    def measure(self, spec: LayerSpec) -> LatencyStats:
        return measure_adaptive(self.runner(spec), self.policy)

    def measure_network(self, specs: Sequence[LayerSpec]) -> LatencyStats:
        return measure_adaptive(self.runner(specs), self.policy)

    def runner(self, spec_or_specs) -> Callable[[int], list[float]]:
        specs = [spec_or_specs] if isinstance(spec_or_specs, LayerSpec) else list(spec_or_specs)
        specs = check_network(specs)
        for spec in specs:
            if spec.precision != self.precision or spec.batch != self.batch:
                raise ValueError(
                    f"{self.name} backend is set up for {self.precision}, batch {self.batch}; "
                    f"got a spec with {spec.precision}, batch {spec.batch}: {spec.key()}"
                )
            if spec.sparsity == "2:4" and self.sparse_executor is None:
                raise ValueError(cannot_run_sparse(self.name))
        return self._runner(specs)

    def context(self) -> dict:
        executor = {} if self.sparse_executor is None else {SPARSE_EXECUTOR: self.sparse_executor}
        return {"backend": self.name, "precision": self.precision, "batch": self.batch, **executor, **self._context()}

    # -- what each backend provides ------------------------------------------------------------
    @abstractmethod
    def _runner(self, specs: list[LayerSpec]) -> Callable[[int], list[float]]:
        """Build/compile the network once; return sample(n) -> n per-call times in ms."""

    @abstractmethod
    def _context(self) -> dict:
        """Device, runtime versions, threads, execution provider..."""


def _current_cpu() -> int:
    """The CPU this process last ran on (field 39 of /proc/self/stat)."""
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def pin_cpus(count: int, cpus="auto") -> list[int] | None:
    """Pin this process to CPUs and return them (None = left alone).

    Why: on a shared machine a process that migrates between cores arrives on cold caches; timings
    then switch between two levels (~1.5x apart on the development VMs) for a second at a time.
    'auto' takes `count` CPUs starting from the one the scheduler runs us on now (so parallel
    builder workers tend to spread); a list pins to exactly those CPUs; None disables pinning."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return None
    if cpus == "auto":
        allowed = sorted(os.sched_getaffinity(0))
        try:
            start = allowed.index(_current_cpu())
        except (OSError, ValueError, IndexError):
            start = 0
        cpus = [allowed[(start + i) % len(allowed)] for i in range(min(count, len(allowed)))]
    cpus = sorted({int(c) for c in cpus})
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        raise ValueError(f"cannot pin to CPUs {cpus}: {exc}") from None
    return cpus


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_context(threads: int) -> dict:
    return {"device": cpu_name(), "cpu_count": os.cpu_count(), "threads": threads}


def gpu_context() -> dict:
    """GPU name, driver and CUDA runtime versions, via torch and nvidia-smi when present."""
    info = {}
    try:
        import torch

        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name()
            info["cuda_runtime"] = torch.version.cuda
    except ImportError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        name, driver = out.splitlines()[0].split(", ")
        info.setdefault("device", name)
        info["driver"] = driver
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        pass
    return info
