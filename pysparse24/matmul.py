"""2:4 sparse matrix products on the CPU, computed straight from the packed values + metadata.

The dense weight is never rebuilt: the C++ kernels (csrc/cpu/matmul*.cpp) decode each group's
2-bit indices in registers and pick the matching elements of x (or, for float32 from N = 16 on,
and bfloat16 from N = 16 on CPUs without AVX-512 BF16, the matching rows of x:
csrc/cpu/matmul_axpy.h), on AVX-512, AVX2 or scalar code
chosen at run time; all three give identical results (see csrc/cpu/matmul.h for the summation
order they share).

    y = pysparse24.matmul(c, x)          # decompress(c) @ x,  x: (K,) or (K, N)
    y = pysparse24.linear(x, c, bias)    # x @ W.T + bias,     x: (..., K)

Arrays may be numpy (bfloat16 via ml_dtypes) or torch CPU tensors; the result is the same kind
as x. float32 and bfloat16 accumulate in float32 (bfloat16 results are rounded once at the end);
int8 accumulates in int32 and returns int32.
"""

from __future__ import annotations

import numpy as np

from pysparse24 import _arrays
from pysparse24._ext import C
from pysparse24.formats import Compressed, check_codes

# Weight dtype -> result dtype.
_RESULT_DTYPE = {"float32": "float32", "bfloat16": "bfloat16", "int8": "int32"}


def matmul(c, x, out=None, *, threads: int | None = None):
    """Return decompress(c) @ x for a 2:4 compressed weight ``c`` of shape (M, K).

    ``x`` is (K,) or (K, N) with c's dtype; the result is (M,) or (M, N). ``out``, if given,
    receives the result (same kind, dtype and shape as the result; any strides) and is returned.
    ``threads`` defaults to OpenMP's setting (OMP_NUM_THREADS or all cores).
    """
    dtype = _check_weight(c)
    _check_same_dtype(x, dtype, "x")
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be 1-D (K,) or 2-D (K, N), got shape {tuple(x.shape)}")
    M, K = c.shape
    if x.shape[0] != K:
        raise ValueError(f"x has {x.shape[0]} rows but the weight is {M}x{K} (needs K={K})")
    shape = (M,) if x.ndim == 1 else (M, x.shape[1])
    result = _output_like(x, shape, _RESULT_DTYPE[dtype]) if out is None else out
    if out is not None:
        _check_out(out, x, shape, _RESULT_DTYPE[dtype])
    x2 = x[:, None] if x.ndim == 1 else x
    out2 = result[:, None] if x.ndim == 1 else result
    _run(c, dtype, x2, out2, None, threads)
    return result


def linear(x, c, bias=None, *, threads: int | None = None):
    """Return x @ W.T + bias for a 2:4 compressed weight ``c`` = W of shape (out_features, K).

    ``x`` is (..., K); the result is (..., out_features), like torch.nn.functional.linear.
    ``bias`` is (out_features,), same dtype as x (int32 for int8 weights) or None.
    """
    dtype = _check_weight(c)
    _check_same_dtype(x, dtype, "x")
    M, K = c.shape
    if x.ndim < 1 or x.shape[-1] != K:
        raise ValueError(f"x must have shape (..., {K}) for a {M}x{K} weight, got {tuple(x.shape)}")
    lead = tuple(x.shape[:-1])
    x2 = x.reshape(-1, K)
    out2 = _output_like(x, (x2.shape[0], M), _RESULT_DTYPE[dtype])
    # y.T = W @ x.T: both transposes are strided views, so nothing is copied.
    _run(c, dtype, x2.T, out2.T, _bias_array(bias, M, dtype), threads)
    return out2.reshape(*lead, M)


# ---- helpers ---------------------------------------------------------------------------------


def _check_weight(c) -> str:
    if not isinstance(c, Compressed):
        raise TypeError(f"expected a pysparse24.Compressed weight, got {type(c).__name__}")
    if c.format != "packed":
        raise ValueError(
            f"matmul needs format='packed', got '{c.format}' (compress with pysparse24.compress(w, format='packed'))"
        )
    if c.dtype not in _RESULT_DTYPE:
        raise ValueError(f"CPU sparse matmul supports {', '.join(_RESULT_DTYPE)}; got {c.dtype}")
    if _arrays.is_cuda_array(c.values):
        raise ValueError("the weight is on a GPU; pysparse24.matmul runs on the CPU")
    return c.dtype


def _check_same_dtype(a, dtype: str, name: str) -> None:
    if not (isinstance(a, np.ndarray) or _arrays.is_torch(a)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")
    if _arrays.is_cuda_array(a):
        raise ValueError(f"{name} is on a GPU; pysparse24.matmul runs on the CPU")
    if _arrays.dtype_name(a) != dtype:
        raise TypeError(f"{name} has dtype {_arrays.dtype_name(a)} but the weight is {dtype}")


def _check_out(out, x, shape, dtype: str) -> None:
    if _arrays.is_torch(out) != _arrays.is_torch(x) or not (isinstance(out, np.ndarray) or _arrays.is_torch(out)):
        raise TypeError("out must be the same kind of array as x (numpy or torch)")
    if tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape}, got {tuple(out.shape)}")
    if _arrays.dtype_name(out) != dtype:
        raise TypeError(f"out must have dtype {dtype}, got {_arrays.dtype_name(out)}")
    _arrays.require_writable_native(out)


def _output_like(x, shape, dtype: str):
    """An uninitialised result of x's kind (numpy or torch)."""
    if dtype == "int32":
        return _arrays.wrap_plain(np.empty(shape, dtype=np.int32), _arrays.is_torch(x))
    bits = np.empty(shape, dtype=np.uint32 if dtype == "float32" else np.uint16)
    return _arrays.wrap_bits(bits, dtype, _arrays.is_torch(x))


def _bits(a) -> np.ndarray:
    """The raw-bits numpy view of a numpy array or CPU tensor (a copy only when its byte order or
    alignment needs one: see _arrays.native)."""
    if _arrays.dtype_name(a) == "int32":  # int8 results and biases; not a weight dtype
        return _arrays.host_numpy(a)
    return _arrays.to_raw(a).bits


def _bias_array(bias, M: int, dtype: str):
    """Bias as the kernel wants it: float32 for float weights, int32 for int8."""
    if bias is None:
        return None
    if tuple(bias.shape) != (M,):
        raise ValueError(f"bias must have shape ({M},), got {tuple(bias.shape)}")
    wanted = "int32" if dtype == "int8" else dtype
    if _arrays.dtype_name(bias) != wanted:
        raise TypeError(f"bias must have dtype {wanted}, got {_arrays.dtype_name(bias)}")
    bits = np.ascontiguousarray(_bits(bias))
    if dtype == "bfloat16":  # bfloat16 bits are the top half of the float32 bits (exact)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(np.float32) if dtype == "float32" else bits


def _run(c, dtype: str, x, out, bias, threads) -> None:
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    values = np.ascontiguousarray(_bits(c.values))
    meta = np.ascontiguousarray(_arrays.host_numpy(c.meta, "meta"))
    check_codes(meta)
    C.sparse_matmul(values, meta, _bits(x), _bits(out), dtype, bias, 0 if threads is None else threads)
