"""mask / compress / decompress on CUDA arrays (torch.cuda, cupy): the GPU path the public
`pysparse24.mask/compress/decompress` route to. Same layouts and errors as the CPU path, bit for bit
(the kernels share csrc/common/sparse24.h with it); they run on the caller's current stream and
return arrays of the input's library.
"""
from __future__ import annotations

from pysparse24.cuda import arrays, native, require_device

FORMATS = ("packed", "cutlass")
_META_DTYPE = {1: "uint8", 2: "int16", 4: "int32"}  # bytes per metadata word -> array dtype


def mask(x, n: int = 2, m: int = 4):
    """Bool array of x's shape: True for the n largest magnitudes of each group of m consecutive
    elements along the last dimension (ties keep the lower index). x is 2-D."""
    native = require_device()
    a = arrays.wrap(x)
    rows, cols = a.shape
    out = arrays.empty(a, (rows, cols), "bool")
    native.mask(a.address, out.address, rows, cols, a.row_stride, a.dtype, n, m,
                stream=arrays.current_stream(a), device=a.device)
    return out.array


def meta_shape(rows: int, cols: int, dtype: str, format: str) -> tuple[tuple[int, int], str]:
    """(shape, dtype) of the metadata `compress` returns for a (rows, cols) input."""
    meta_rows, meta_cols, word = native().meta_layout(rows, cols, arrays.dtype_name(dtype), format)
    return (meta_rows, meta_cols), _META_DTYPE[word]


def compress(x, format: str = "packed", prune: bool = False):
    """(values, meta) of a 2-D array whose rows are 2:4 sparse (or pruned to it when prune=True)."""
    native = require_device()
    a = arrays.wrap(x)
    rows, cols = a.shape
    _check_format(format)
    values = arrays.empty(a, (rows, cols // 2), a.dtype)
    shape, meta_dtype = meta_shape(rows, cols, a.dtype, format)
    meta = arrays.empty(a, shape, meta_dtype)
    native.compress(a.address, values.address, meta.address, rows, cols, a.row_stride, a.dtype, format, prune,
                    stream=arrays.current_stream(a), device=a.device)
    return values.array, meta.array


def decompress(values, meta, shape, dtype, format: str = "packed"):
    """The dense (rows, cols) array that `compress` turned into (values, meta)."""
    native = require_device()
    _check_format(format)
    rows, cols = (int(s) for s in shape)
    dtype = arrays.dtype_name(dtype)
    v, md = arrays.wrap(values), arrays.wrap(meta)
    arrays.require_same_device(v, md)
    if v.dtype != dtype:
        raise ValueError(f"values are {v.dtype}, expected {dtype}")
    if v.shape != (rows, cols // 2) or v.row_stride != cols // 2:
        raise ValueError(f"values must be a contiguous ({rows}, {cols // 2}) array, got shape {v.shape}")
    expected_shape, expected_dtype = meta_shape(rows, cols, dtype, format)
    if md.shape != expected_shape or md.row_stride != expected_shape[1]:
        raise ValueError(f"{format} meta must be a contiguous {expected_shape} array, got shape {md.shape}")
    if arrays.dtype_name(md.dtype) not in (expected_dtype, expected_dtype.replace("int", "uint")):
        raise ValueError(f"{format} meta must be {expected_dtype} for {dtype}, got {md.dtype}")
    out = arrays.empty(v, (rows, cols), dtype)
    native.decompress(v.address, md.address, out.address, rows, cols, dtype, format,
                      stream=arrays.current_stream(v), device=v.device)
    return out.array


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")


__all__ = ["mask", "compress", "decompress", "meta_shape", "FORMATS"]
