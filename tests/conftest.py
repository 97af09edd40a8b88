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
