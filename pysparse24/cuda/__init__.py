"""GPU side of pysparse24: 2:4 kernels on CUDA arrays and cuSPARSELt sparse GEMM.

Importing this package never needs a GPU, a driver or cuSPARSELt; the entry points raise
`UnavailableError` saying what is missing ("no CUDA device (...)", "cuSPARSELt not available: ...").
Modules: `ops` (mask / compress / decompress kernels), `cusparselt` (sparse GEMM),
`gemm_bench` (sparse vs dense GEMM timing, compress bandwidth).
"""

from __future__ import annotations

from pysparse24._ext import C as _C

if getattr(_C, "has_cuda_build", False):
    _native = _C.cuda
    UnavailableError = _native.UnavailableError
    CudaError = _native.CudaError
else:
    _native = None

    class UnavailableError(RuntimeError):
        """No usable GPU, driver, CUDA build or cuSPARSELt."""

    class CudaError(RuntimeError):
        """A CUDA or cuSPARSELt call failed."""


_NO_CUDA_BUILD = "pysparse24 was built without CUDA (no nvcc found, or PYSPARSE24_CUDA=OFF)"


def build_info() -> dict:
    """What this build holds for the GPU, whether or not a GPU is present:
    cuda_kernels / cusparselt_wrapper (bools), reason (why one is missing; '' when both are built),
    archs ("80,86,89,90"), nvcc, cusparselt_header (the header's version), cusparselt_include,
    cusparselt_minimum (the oldest cuSPARSELt the wrapper runs with)."""
    if _native is None:
        return {"cuda_kernels": False, "cusparselt_wrapper": False, "reason": _NO_CUDA_BUILD}
    return dict(_native.build_info())


def unavailable_reason() -> str:
    """Why the GPU entry points cannot run here, or "" when they can."""
    if _native is None:
        return f"no CUDA device support: {_NO_CUDA_BUILD}"
    return _native.unavailable_reason()


def is_available() -> bool:
    return not unavailable_reason()


def native():
    """The compiled CUDA module, or UnavailableError when this build has none."""
    if _native is None:
        raise UnavailableError(unavailable_reason())
    return _native


def require_device():
    """The compiled CUDA module, or UnavailableError when no GPU can be used."""
    reason = unavailable_reason()
    if reason:
        raise UnavailableError(reason)
    return _native


__all__ = [
    "UnavailableError",
    "CudaError",
    "build_info",
    "unavailable_reason",
    "is_available",
    "native",
    "require_device",
]
