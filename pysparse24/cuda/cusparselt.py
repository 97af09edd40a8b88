"""Sparse GEMM through cuSPARSELt: D = alpha * A @ op(B) + beta * C (+ bias), A 2:4 sparse.

    w = SparseMatrix(weight, prune=True)        # (m, k) CUDA array: pruned and compressed on the GPU
    y = matmul(w, x, transpose_b=True)          # x (n, k) -> y (m, n) = w @ x.T, like F.linear(x, w).T

The library (nvidia-cusparselt-cu13 wheel, or PYSPARSE24_CUSPARSELT=/path/libcusparseLt.so.0, or
the loader path) is loaded on first use; without it, or without a GPU, calls raise UnavailableError
saying why. Shapes, dtypes, alignment and the GPU's architecture are checked before any library
call, so a violation is a ValueError naming the constraint. Plans (descriptors, selected algorithm,
split-k) are cached per thread and device, keyed by shape / dtypes / layout.
"""

from __future__ import annotations

import os
from importlib import metadata

from pysparse24.cuda import UnavailableError, arrays, native, require_device

_WHEEL = "nvidia-cusparselt-cu13"
_SONAME = "libcusparseLt.so.0"
# Output dtype when the caller names none, per input dtype.
_DEFAULT_OUT = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "float8_e4m3fn": "bfloat16",
}


def library_candidates() -> list[str]:
    """Where to look for libcusparseLt, in order: $PYSPARSE24_CUSPARSELT, the wheel, the loader path."""
    found = []
    if os.environ.get("PYSPARSE24_CUSPARSELT"):
        found.append(os.environ["PYSPARSE24_CUSPARSELT"])
    try:
        dist = metadata.distribution(_WHEEL)
        found += [str(dist.locate_file(f)) for f in dist.files or () if f.name.startswith("libcusparseLt.so")]
    except metadata.PackageNotFoundError:
        pass
    found.append(_SONAME)
    return found


def load() -> str:
    """Load cuSPARSELt (once); returns the library's path. UnavailableError says why it cannot
    (a build without the wrapper says why it was left out; a library older than
    `minimum_version()` is skipped, naming its version)."""
    lib = native()
    if not lib.has_cusparselt_build:
        lib.load_cusparselt([])  # raises: built without the wrapper, and why
    return lib.load_cusparselt(library_candidates())


def minimum_version() -> tuple[int, int, int]:
    """The oldest cuSPARSELt the wrapper runs with (0.8.0: it calls functions that release added)."""
    return tuple(int(v) for v in native().minimum_cusparselt.split("."))


def support_table() -> list[dict]:
    """cuSPARSELt's support table as pysparse24 applies it: one dict per input -> output dtype pair
    with the compute capabilities (min_cc, below_cc) and the cuSPARSELt version that run it. A
    combination outside it is a ValueError naming it, before any library call."""
    return list(native().support_table())


def version() -> tuple[int, int, int]:
    load()
    v = native().cusparselt_version()
    return v // 10000, v // 100 % 100, v % 100


def _ready():
    """The native module once cuSPARSELt is loaded and a GPU is present."""
    load()
    return require_device()


class SparseMatrix:
    """A 2:4 sparse (m, k) matrix A compressed into cuSPARSELt's opaque layout (groups along k).

    prune=True prunes `dense` 2:4 by magnitude on the GPU (1:2 for float32) with cuSPARSELt;
    otherwise `dense` must already be 2:4 sparse, which is checked on the GPU (check=False skips it).
    """

    def __init__(self, dense, *, prune: bool = False, check: bool = True):
        lib = _ready()
        a = _contiguous(arrays.wrap(dense))
        m, k = a.shape
        if a.dtype not in _DEFAULT_OUT:
            raise ValueError(f"cuSPARSELt has no {a.dtype} sparse matrices (supported: {', '.join(_DEFAULT_OUT)})")
        stream = arrays.current_stream(a)
        self._descriptor = lib.StructuredMatrix(m, k, a.dtype)
        if prune:
            pruned = arrays.empty(a, (m, k), a.dtype)
            self._descriptor.prune(a.address, pruned.address, stream)
            a = pruned
        elif check and not self._descriptor.is_pruned(a.address, stream):
            raise ValueError(f"the ({m}, {k}) {a.dtype} matrix is not 2:4 sparse along k; pass prune=True")
        size, buffer_size = self._descriptor.compressed_size()
        self.compressed = arrays.empty(a, (size,), "uint8")
        # Temporaries (buffer, pruned copy) may be freed at once: torch's and cupy's allocators only
        # hand their memory to later work on the same stream.
        buffer = arrays.empty(a, (max(buffer_size, 1),), "uint8")
        self._descriptor.compress(a.address, self.compressed.address, buffer.address, stream)
        self.shape = (m, k)
        self.dtype = a.dtype
        self.device = a.device


def plan_for(a: SparseMatrix, n: int, *, out_dtype: str | None = None, transpose_b: bool = False, bias: bool = False):
    """The cached cuSPARSELt plan of `a @ B` with n columns (threads and devices have their own)."""
    lib = _ready()
    out_dtype = arrays.dtype_name(out_dtype) if out_dtype else _DEFAULT_OUT[a.dtype]
    m, k = a.shape
    spec = lib.GemmSpec(
        m, n, k, a.dtype, out_dtype, transpose_a=False, transpose_b=transpose_b, row_major=True, has_bias=bias
    )
    return lib.cached_plan(spec)


def matmul(
    a: SparseMatrix,
    b,
    *,
    bias=None,
    alpha: float = 1.0,
    beta: float = 0.0,
    c=None,
    out_dtype: str | None = None,
    transpose_b: bool = False,
    search: bool = False,
    split_k: tuple[int, int, int] | None = None,
):
    """D (m, n) = alpha * A @ B + beta * C + bias, with B (k, n), or (n, k) when transpose_b.

    bias: length-m vector added to every column, converted to the dtype cuSPARSELt reads (float32 for
    int8 inputs whatever the output, the output dtype otherwise; `plan.spec.bias_dtype`).
    int8 and float8 need B stored (n, k) with transpose_b=True (k contiguous in both operands).
    search: time cuSPARSELt's algorithms on these operands once and keep the fastest in the plan.
    split_k: (factor, mode 1|2, buffers) for the plan (kept for later calls with the same plan).
    """
    _ready()
    bw = arrays.wrap(b)
    if bw.device != a.device:
        raise ValueError(f"B is on device {bw.device}, A on device {a.device}")
    k = a.shape[1]
    n = bw.shape[0] if transpose_b else bw.shape[1]
    if (bw.shape[1] if transpose_b else bw.shape[0]) != k:
        raise ValueError(f"B's reduction dimension is {bw.shape}, A is {a.shape}")
    if bw.dtype != a.dtype:
        raise ValueError(f"B is {bw.dtype} but A is {a.dtype}; cuSPARSELt multiplies equal input types")
    bw = _contiguous(bw)
    plan = plan_for(a, n, out_dtype=out_dtype, transpose_b=transpose_b, bias=bias is not None)
    m = a.shape[0]
    out_dtype = plan.spec.output
    d = arrays.empty(bw, (m, n), out_dtype)
    c_address = d.address
    if c is not None:
        cw = _contiguous(arrays.wrap(c))
        if cw.shape != (m, n) or cw.dtype != out_dtype:
            raise ValueError(f"C must be ({m}, {n}) {out_dtype}, got {cw.shape} {cw.dtype}")
        c_address = cw.address
    elif beta != 0.0:
        raise ValueError("beta != 0 needs C")
    bias_address = 0
    if bias is not None:
        bias_w = arrays.wrap(bias, ndim=1)
        if bias_w.shape != (m,):
            raise ValueError(f"bias must be a ({m},) vector, got shape {bias_w.shape}")
        if bias_w.device != a.device:
            raise ValueError(f"bias is on device {bias_w.device}, A on device {a.device}")
        bias_w = arrays.astype(bias_w, plan.spec.bias_dtype)  # kept alive until the call below is queued
        bias_address = bias_w.address
    plan.set_bias(bias_address)  # before the algorithm is chosen, as cuSPARSELt expects
    if split_k is not None:
        plan.set_split_k(*split_k)
    workspace = arrays.empty(bw, (max(plan.workspace_size, 1),), "uint8")
    stream = arrays.current_stream(bw)
    args = (
        a.compressed.address,
        bw.address,
        c_address,
        d.address,
        alpha,
        beta,
        bias_address,
        workspace.address,
        stream,
    )
    if search:
        plan.search(*args)
        if plan.workspace_size > workspace.shape[0]:  # the chosen algorithm may need more
            workspace = arrays.empty(bw, (plan.workspace_size,), "uint8")
            args = args[:7] + (workspace.address, stream)
    plan.matmul(*args)
    return d.array


def _contiguous(a: arrays.DeviceArray) -> arrays.DeviceArray:
    if a.row_stride == a.shape[1]:
        return a
    return arrays.wrap(a.array.contiguous() if a.library == "torch" else a.array.copy())


__all__ = [
    "SparseMatrix",
    "matmul",
    "plan_for",
    "load",
    "version",
    "minimum_version",
    "support_table",
    "library_candidates",
    "UnavailableError",
]
