"""Shared pieces of the NAS tests: a latency table filled with synthetic (key-derived) medians, and
objectives that are cheap, or fail / crash on purpose (importable as module:function by workers)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from profiler.table import LatencyTable
from pysparse24.timing import LatencyStats

CONTEXT = {"device": "test", "backend": "fake", "precision": "fp32", "batch": 1, "threads": 1}


def fake_ms(key: str) -> float:
    """A deterministic, key-dependent latency in [0.01, 1.01) ms."""
    return 0.01 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def stats(ms: float) -> LatencyStats:
    return LatencyStats(ms, ms * 0.9, ms * 1.1, ms, ms * 0.05, 20, 5)


def fill_table(path, specs, skip=frozenset()) -> LatencyTable:
    table = LatencyTable(path, CONTEXT)
    for spec in specs:
        if spec.key() not in skip:
            table.put(spec, stats(fake_ms(spec.key())))
    return table


def _network_id(network) -> str:
    return hashlib.sha256("".join(s.key() for s in network).encode()).hexdigest()[:16]


def cheap(network) -> float:
    """Deterministic and architecture-dependent, no torch: favours wide, large-kernel networks."""
    return sum(s.out_channels * s.kernel for s in network) / 100.0


def crash_once_at(network) -> float:
    """Counts evaluations in $NAS_TEST_DIR/count and kills its process at the $NAS_TEST_CRASH_AT-th."""
    counter = Path(os.environ["NAS_TEST_DIR"]) / "count"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    if n == int(os.environ.get("NAS_TEST_CRASH_AT", "0")):
        os._exit(3)
    return cheap(network)


def _first_attempt(network) -> bool:
    marker = Path(os.environ["NAS_TEST_DIR"]) / _network_id(network)
    first = not marker.exists()
    marker.write_text("seen")
    return first


def flaky(network) -> float:
    """Raises on the first attempt at each network, succeeds on the retry."""
    if _first_attempt(network):
        raise RuntimeError("flaky first attempt")
    return cheap(network)


def dies_once(network) -> float:
    """Kills its worker process on the first attempt at each network."""
    if _first_attempt(network):
        os._exit(7)
    return cheap(network)


def hangs_once(network) -> float:
    """Hangs (sleeps far past any test's timeout) in the first evaluation of the run, then scores."""
    marker = Path(os.environ["NAS_TEST_DIR"]) / "hung"
    if not marker.exists():
        marker.write_text("hung")
        import time

        time.sleep(3600)
    return cheap(network)


def slow(network) -> float:
    """Long enough that a test can interrupt the search while evaluations are in flight."""
    import time

    time.sleep(30)
    return cheap(network)


def always_fails(network) -> float:
    raise RuntimeError("this objective is broken")


def nan_score(network) -> float:
    return float("nan")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Import into a test module to run its tests with one torch thread: on the 2 shared cores of the
    dev machines, torch's thread pool (used by the blocks and by Optuna's GP) oversubscribes badly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
