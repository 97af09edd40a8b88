"""Shared fixtures: fresh random data (seed reported on failure), poisoned kernel outputs, and
forcing each CPU dispatch path."""

import secrets

import numpy as np
import pytest

import pysparse24


@pytest.fixture
def rng(request):
    """A generator with a fresh seed per test; the seed is attached to the report for replay."""
    seed = secrets.randbits(32)
    request.node.user_properties.append(("seed", seed))
    print(f"rng seed = {seed}")
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def poisoned_outputs():
    """Every C++-allocated output starts as 0xA5 garbage, so an unwritten element is a mismatch."""
    pysparse24._C.set_poison_outputs(True)
    yield
    pysparse24._C.set_poison_outputs(False)


SUPPORTED_ISAS = [
    isa
    for isa in ("scalar", "avx2", "avx512")
    if ["scalar", "avx2", "avx512"].index(isa) <= ["scalar", "avx2", "avx512"].index(pysparse24._C.best_isa())
]


@pytest.fixture(params=SUPPORTED_ISAS)
def isa(request):
    """Runs the test once per SIMD path this CPU supports, forcing the kernels onto it."""
    pysparse24._C.set_isa(request.param)
    yield request.param
    pysparse24._C.set_isa("auto")


@pytest.fixture
def local_ray(monkeypatch):
    """start(**env_vars) starts a private 2-CPU local Ray cluster whose workers import the project
    and tests/ (plus `env_vars`); it is shut down after the test. Ray is in the test extra, so CI
    (CI=true) fails without it instead of skipping. Start-up is sized for a small CI machine: no
    dashboard, a 100 MB object store, no usage-stats upload (no network). A watchdog ends the whole
    run with every thread's traceback if a Ray test runs past 5 minutes, instead of hanging CI; the
    tests give the pools a 60 s timeout, so a worker that cannot start fails them within a minute."""
    import faulthandler
    import os
    from pathlib import Path

    if os.environ.get("CI") == "true":
        import ray  # noqa: F401 - an ImportError here fails CI: the Ray paths must run there
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'pysparse24[ray]'")
    tests = Path(__file__).resolve().parent
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")

    # Ray's workers get the runtime_env's PYTHONPATH instead of this process's: keep this one's entries
    # (a Ray installed with `pip install --target` and found through PYTHONPATH), or every worker dies
    # on `import ray` and Ray retries its start for minutes without telling the driver.
    path = os.pathsep.join(filter(None, [str(tests), str(tests.parent), os.environ.get("PYTHONPATH")]))

    def start(**env_vars):
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=100 * 2**20,
            runtime_env={"env_vars": {"PYTHONPATH": path, **env_vars}},
        )
        return ray

    faulthandler.dump_traceback_later(300, exit=True)
    try:
        yield start
    finally:
        faulthandler.cancel_dump_traceback_later()
        ray.shutdown()
