"""2:4 sparse matrix products on the CPU, computed straight from the packed values + metadata.

The dense weight is never rebuilt: the C++ kernels (csrc/cpu/matmul*.cpp) decode each group's
2-bit indices in registers and pick the matching elements of x (or, for float32 from N = 16 on,
and bfloat16 from N = 8 on CPUs without AVX-512 BF16, the matching rows of x:
csrc/cpu/matmul_axpy.h), on AVX-512, AVX2 or scalar code
chosen at run time; all three give identical results (see csrc/cpu/matmul.h for the summation
order they share).

    y = pysparse24.matmul(c, x)          # decompress(c) @ x,  x: (K,) or (K, N)
    y = pysparse24.linear(x, c, bias)    # x @ W.T + bias,     x: (..., K)
    y = conv2d_nhwc(x, c, bias, kernel_size, stride, padding, dilation)  # a conv by implicit im2col

Arrays may be numpy (bfloat16 via ml_dtypes) or torch CPU tensors; the result is the same kind
as x. float32 and bfloat16 accumulate in float32 (bfloat16 results are rounded once at the end);
int8 accumulates in int32 and returns int32.
"""

from __future__ import annotations

import functools
import weakref

import numpy as np

from pysparse24 import _arrays, dtypes
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
    if _torch_fast_path(x, c, bias):
        if bias is not None:
            _check_bias(bias, M, dtype)
        if threads is not None:
            _check_threads(threads)
        return run_torch_linear(x, c.values, c.meta, bias, threads or 0)
    lead = tuple(x.shape[:-1])
    x2 = x.reshape(-1, K)
    out2 = _output_like(x, (x2.shape[0], M), _RESULT_DTYPE[dtype])
    # y.T = W @ x.T: both transposes are strided views, so nothing is copied.
    _run(c, dtype, x2.T, out2.T, _bias_array(bias, M, dtype), threads)
    return out2.reshape(*lead, M)


def large_n_regime(dtype: str, n: int) -> bool:
    """Whether a product with n columns (tokens, output pixels) of this dtype runs on the large-N
    kernels (csrc/cpu/matmul_axpy.h), which have their own summation order (csrc/cpu/matmul.h) and
    are the only ones that take a conv's input without an explicit im2col (conv2d_nhwc)."""
    start = {"float32": C.matmul_large_n, "bfloat16": C.matmul_large_n_bfloat16}.get(dtype, 0)
    return start > 0 and n >= start


def conv_output_hw(hw, kernel_size, stride, padding, dilation) -> tuple[int, int]:
    """A conv's output (height, width) for an input of (height, width) ``hw`` (torch's rule); a
    ValueError when the (dilated) kernel is larger than the padded input."""
    out = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(hw, kernel_size, stride, padding, dilation)
    ]
    if min(out) < 1:
        raise ValueError(
            f"input {tuple(hw)} is smaller than the (dilated) kernel {kernel_size[0]}x{kernel_size[1]} after padding"
        )
    return out[0], out[1]


def conv2d_nhwc(x, c, bias, kernel_size, stride, padding, dilation, *, threads: int | None = None):
    """A conv (groups=1, zero padding) by implicit im2col: x is the (batch, H, W, C) input (a
    channels_last tensor's permute(0, 2, 3, 1); any strides, contiguous channels are fastest), ``c``
    the (M, R*S*C) weight with C innermost; returns the (batch*OH*OW, M) result, bit-identical to
    ``linear(patches, c, bias)`` over the explicit patch matrix. The kernel packs its panels straight
    from x, so the patch matrix (R*S times the input) is never written. Only in the large-N regime
    (``large_n_regime(dtype, batch*OH*OW)``); the pairs are (height, width)."""
    dtype = _check_weight(c)
    _check_same_dtype(x, dtype, "x")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D (batch, height, width, channels), got shape {tuple(x.shape)}")
    if kernel_size[0] * kernel_size[1] * x.shape[3] != c.shape[1]:
        raise ValueError(
            f"x has {x.shape[3]} channels but the weight's {c.shape[1]} columns are not kernel "
            f"{kernel_size[0]}x{kernel_size[1]} x {x.shape[3]} channels"
        )
    oh, ow = conv_output_hw(x.shape[1:3], kernel_size, stride, padding, dilation)
    n, M = x.shape[0] * oh * ow, c.shape[0]
    if not large_n_regime(dtype, n):
        raise ValueError(
            f"implicit im2col runs in the large-N regime only; {dtype} with {n} output pixels is not in it"
        )
    out2 = _output_like(x, (n, M), _RESULT_DTYPE[dtype])
    geometry = [list(pair) for pair in (kernel_size, stride, padding, dilation)]
    _run(c, dtype, x, out2.T, _bias_array(bias, M, dtype), threads, conv=geometry)
    return out2


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
    _check_bias(bias, M, dtype)
    bits = np.ascontiguousarray(_bits(bias))
    if dtype == "bfloat16":  # bfloat16 bits are the top half of the float32 bits (exact)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(np.float32) if dtype == "float32" else bits


# Weights that passed the checks, by id(values): weakrefs to (values, meta, bias) and each one's
# (_version, data_ptr, shape) then. A layer calls with the same tensors every time, and the checks
# cost more than a small GEMV (the metadata scan alone ~3% of a LLaMA-sized one). An in-place change
# through torch bumps _version, a swapped storage changes data_ptr, and the weakref drops the entry
# with the tensor (and makes a reused id a miss).
_READY: dict[int, tuple] = {}


def _state(t) -> tuple | None:
    return None if t is None else (t._version, t.data_ptr(), t.shape)


def weight_is_checked(values, meta, bias) -> bool:
    """Whether these very tensors passed _ready_weight's checks and have not changed since."""
    entry = _READY.get(id(values))
    if entry is None:
        return False
    refs, states = entry
    return (
        refs[0]() is values
        and refs[1]() is meta
        and (refs[2] is None if bias is None else refs[2] is not None and refs[2]() is bias)
        and states == (_state(values), _state(meta), _state(bias))
    )


def _ready_weight(values, meta, bias, check_weight) -> tuple:
    """(values, meta, bias) as the kernel reads them: checked (check_weight(values, meta, bias), the
    caller's rules, then the metadata codes), C-contiguous and aligned (a non-contiguous view, or a
    tensor whose address is not a multiple of its element size, is copied, as _arrays.native does).
    Remembered when no copy was needed."""
    if weight_is_checked(values, meta, bias):
        return values, meta, bias
    if check_weight is not None:
        check_weight(values, meta, bias)
    ready = (_aligned(values.contiguous()), meta.contiguous(), None if bias is None else _aligned(bias.contiguous()))
    check_codes(ready[1].numpy())
    if all(a is b for a, b in zip(ready, (values, meta, bias))):
        key = id(values)
        refs = tuple(None if t is None else weakref.ref(t) for t in (meta, bias))
        drop = weakref.ref(values, lambda _, key=key: _READY.pop(key, None))
        _READY[key] = ((drop, *refs), (_state(values), _state(meta), _state(bias)))
    return ready


def run_torch_linear(x, values, meta, bias, threads: int = 0, check_weight=None):
    """x (..., K) @ W.T + bias -> a new (..., M) tensor, for strided CPU tensors: the fast path of
    pysparse24.linear and of the pysparse24::linear op, a few us of Python around the kernel. The
    caller has checked x against the weight (dtype, device, K) and passes its rules for the weight
    as check_weight (run once per weight: see _ready_weight)."""
    values, meta, bias = _ready_weight(values, meta, bias, check_weight)
    name, out_dtype = _torch_kinds()[values.dtype]
    M, K = values.shape[0], 2 * values.shape[1]
    x2 = x if x.dim() == 2 else x.reshape(-1, K)
    n = x2.shape[0]
    out = x2.new_empty((n, M), dtype=out_dtype)
    x2 = _aligned(x2)
    step_n, step_k = x2.stride()
    C.sparse_linear_at(
        name,
        M,
        K,
        n,
        values.data_ptr(),
        meta.data_ptr(),
        x2.data_ptr(),
        step_n,
        step_k,
        out.data_ptr(),
        0 if bias is None else bias.data_ptr(),
        threads,
    )
    return out if x.dim() == 2 else out.view(*x.shape[:-1], M)


def _torch_fast_path(x, c, bias) -> bool:
    """Whether run_torch_linear serves these operands: all strided torch CPU tensors."""
    if not (_arrays.is_torch(x) and _arrays.is_torch(c.values) and (bias is None or _arrays.is_torch(bias))):
        return False
    strided = _arrays.torch_module().strided
    return all(t.is_cpu and t.layout == strided for t in (x, c.values, c.meta) + (() if bias is None else (bias,)))


def _aligned(t):
    return t if t.data_ptr() % t.element_size() == 0 else t.clone()


@functools.cache
def _torch_kinds() -> dict:
    """torch weight dtype -> (kernel dtype name, torch result dtype): _RESULT_DTYPE for torch."""
    return {dtypes.torch_dtype(name): (name, dtypes.torch_dtype(result)) for name, result in _RESULT_DTYPE.items()}


def _check_bias(bias, M: int, dtype: str) -> None:
    if tuple(bias.shape) != (M,):
        raise ValueError(f"bias must have shape ({M},), got {tuple(bias.shape)}")
    wanted = "int32" if dtype == "int8" else dtype
    if _arrays.dtype_name(bias) != wanted:
        raise TypeError(f"bias must have dtype {wanted}, got {_arrays.dtype_name(bias)}")


def _check_threads(threads) -> None:
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")


def _run(c, dtype: str, x, out, bias, threads, conv=None) -> None:
    """out = c @ x + bias; x is X (K, N), or with ``conv`` (kernel, stride, padding, dilation) the
    NHWC input whose patch matrix is X."""
    if threads is not None:
        _check_threads(threads)
    values = np.ascontiguousarray(_bits(c.values))
    meta = np.ascontiguousarray(_arrays.host_numpy(c.meta, "meta"))
    check_codes(meta)
    threads = 0 if threads is None else threads
    if conv is None:
        C.sparse_matmul(values, meta, _bits(x), _bits(out), dtype, bias, threads)
    else:
        C.sparse_conv2d(values, meta, _bits(x), _bits(out), dtype, bias, threads, *conv)
