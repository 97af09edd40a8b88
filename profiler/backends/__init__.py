"""Latency backends behind one interface (see base.Backend): get_backend(name, **options)."""

from __future__ import annotations

from pysparse24.timing import TimingPolicy, least_disturbed, measure_adaptive, measure_interleaved

from .base import Backend, BackendUnavailable

BACKEND_NAMES = ("onnxruntime", "torch", "tensorrt")


def get_backend(name: str, **options) -> Backend:
    """A configured backend, e.g. get_backend("onnxruntime", precision="fp32", batch=1, threads=1).

    Options are the backend class's keyword arguments; `policy` takes a TimingPolicy."""
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend as cls
    elif name == "torch":
        from .torch_backend import TorchBackend as cls
    elif name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend as cls
    else:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKEND_NAMES}")
    return cls(**options)


__all__ = [
    "Backend",
    "BackendUnavailable",
    "TimingPolicy",
    "measure_adaptive",
    "measure_interleaved",
    "least_disturbed",
    "get_backend",
    "BACKEND_NAMES",
]
