"""A tiny but honest measurement backend for the builder/table tests: it really times a numpy matmul
sized by the spec (tokens x C @ C x out). Options let a test make it slow, fail, crash, or log what it
measured (to count repeated work across a killed and resumed build)."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from pysparse24.timing import LatencyStats


class NumpyMatmulBackend:
    def __init__(
        self,
        repeats: int = 5,
        sleep_s: float = 0.0,
        fail_op: str | None = None,
        crash_op: str | None = None,
        hang_op: str | None = None,
        log: str | None = None,
        device: str = "test-cpu",
        precision: str = "fp32",
        batch: int = 1,
    ) -> None:
        self.repeats, self.sleep_s = repeats, sleep_s
        self.fail_op, self.crash_op, self.hang_op = fail_op, crash_op, hang_op
        self.log, self.device, self.precision, self.batch = log, device, precision, batch

    def context(self) -> dict:
        return {
            "device": self.device,
            "backend": "numpy-matmul-test",
            "runtime": np.__version__,
            "driver": platform.python_version(),
            "precision": self.precision,
            "batch": self.batch,
            "threads": 1,
        }

    def measure(self, spec) -> LatencyStats:
        if spec.op == self.fail_op:
            raise NotImplementedError(f"the numpy test backend refuses op {spec.op!r}")
        if spec.op == self.crash_op:
            os._exit(7)  # what a segfaulting runtime looks like to the parent: the process just vanishes
        if spec.op == self.hang_op:
            time.sleep(3600)
        if self.log:
            with open(self.log, "a") as f:
                f.write(spec.key() + "\n")
        n, c, h, w = spec.in_shape
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n * h * w, c), dtype=np.float32)
        weight = rng.standard_normal((c, spec.out_channels), dtype=np.float32)
        x @ weight  # warm-up
        samples = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            x @ weight
            samples.append((time.perf_counter() - start) * 1e3)
        time.sleep(self.sleep_s)
        return LatencyStats.from_samples(samples, warmup=1)
