"""LatencyStats: what one measurement of one layer produced (every backend returns this)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    n: int          # timed repeats kept
    warmup: int     # repeats run and discarded before timing

    @classmethod
    def from_samples(cls, samples_ms, warmup: int) -> "LatencyStats":
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
            raise ValueError("LatencyStats needs a non-empty 1-D list of finite timings")
        p10, med, p90 = np.percentile(s, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), float(s.mean()), float(s.std()), int(s.size), int(warmup))

    def to_dict(self) -> dict:
        return asdict(self)
