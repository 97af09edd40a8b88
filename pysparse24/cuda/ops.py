"""mask / is_sparse / compress / decompress on CUDA arrays (torch.cuda, cupy): the GPU path that
`pysparse24.mask/is_sparse/compress/decompress` route to. Same layouts, same errors as the CPU path,
bit for bit (the kernels share csrc/common/sparse24.h with it); they run on the caller's current
stream, wait for it (to report bad input), and return arrays of the input's library.
"""

from __future__ import annotations

import numpy as np

from pysparse24.cuda import arrays, native, require_device
from pysparse24.groups import check_groups_fit, check_pattern, raise_nonfinite, reduction_dim

FORMATS = ("packed", "cutlass")
_META_DTYPE = {1: "uint8", 2: "int16", 4: "int32"}  # bytes per metadata word -> array dtype
_MAGNITUDE_BITS = {4: 0x7FFFFFFF, 2: 0x7FFF, 1: 0xFF}  # sign cleared: -0.0 counts as zero (int8: all bits)


def mask(x, n: int = 2, m: int = 4, dim: int = -1):
    """Bool array of x's shape: True for the n largest magnitudes of each group of m consecutive
    elements along `dim` (ties keep the lower index). NaN/Inf are rejected."""
    check_pattern(n, m)
    lib = require_device()
    a, moved_shape, dim = _grouped_rows(x, m, dim)
    rows, cols = a.shape
    keep = arrays.empty(a, (rows, cols), "bool")
    nonfinite, _, _ = lib.mask(
        a.address,
        keep.address,
        rows,
        cols,
        a.row_stride,
        a.dtype,
        n,
        m,
        stream=arrays.current_stream(a),
        device=a.device,
    )
    if nonfinite >= 0:
        raise_nonfinite(nonfinite, moved_shape, dim, "weight")
    return arrays.restore_rows(keep, moved_shape, dim)


def is_sparse(x, n: int = 2, m: int = 4, dim: int = -1) -> bool:
    """True when every group of m elements along `dim` has at most n non-zeros (-0.0 counts as zero)."""
    check_pattern(n, m)
    lib = require_device()
    a, _, _ = _grouped_rows(x, m, dim)
    rows, cols = a.shape
    _, overfull, _ = lib.find_overfull(
        a.address, rows, cols, a.row_stride, a.dtype, n, m, stream=arrays.current_stream(a), device=a.device
    )
    return overfull < 0


def meta_shape(rows: int, cols: int, dtype: str, format: str) -> tuple[tuple[int, int], str]:
    """(shape, dtype) of the metadata `compress` returns for a (rows, cols) input."""
    meta_rows, meta_cols, word = native().meta_layout(rows, cols, arrays.dtype_name(dtype), format)
    return (meta_rows, meta_cols), _META_DTYPE[word]


def compress(x, format: str = "packed", prune: bool = False):
    """(values, meta) of a 2-D (rows, reduction) array that is 2:4 sparse along its rows (1:2 for
    float32 in the cutlass format), or is pruned to it first when prune=True."""
    lib = require_device()
    _check_format(format)
    a = arrays.wrap(x)
    rows, cols = a.shape
    values = arrays.empty(a, (rows, cols // 2), a.dtype)
    shape, meta_dtype = meta_shape(rows, cols, a.dtype, format)
    meta = arrays.empty(a, shape, meta_dtype)
    nonfinite, overfull, _ = lib.compress(
        a.address,
        values.address,
        meta.address,
        rows,
        cols,
        a.row_stride,
        a.dtype,
        format,
        prune,
        stream=arrays.current_stream(a),
        device=a.device,
    )
    if nonfinite >= 0:
        raise_nonfinite(nonfinite, (rows, cols), 1, "weight")
    if overfull >= 0:
        _raise_overfull(a, overfull, "1:2" if format == "cutlass" and a.dtype == "float32" else "2:4")
    return values.array, meta.array


def decompress(values, meta, shape, dtype, format: str = "packed"):
    """The dense (rows, cols) array that `compress` turned into (values, meta)."""
    lib = require_device()
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
    if md.dtype != expected_dtype:
        raise ValueError(f"{format} meta must be {expected_dtype} for {dtype}, got {md.dtype}")
    out = arrays.empty(v, (rows, cols), dtype)
    _, _, bad_meta = lib.decompress(
        v.address, md.address, out.address, rows, cols, dtype, format, stream=arrays.current_stream(v), device=v.device
    )
    if bad_meta >= 0:
        raise ValueError(f"corrupt metadata: group {bad_meta} (row-major) has an invalid index code")
    return out.array


def _grouped_rows(x, m: int, dim: int):
    """x with `dim` moved last, as a (rows, size) DeviceArray, plus what restores the layout."""
    x = arrays.import_array(x)
    dim = reduction_dim(x.ndim, dim)
    check_groups_fit(tuple(x.shape), dim, m)
    matrix, moved_shape = arrays.rows_along(x, dim)
    return arrays.wrap(matrix), moved_shape, dim


def _raise_overfull(a: arrays.DeviceArray, flat_group: int, pattern: str) -> None:
    """The CPU path's message for a group with more non-zeros than the pattern allows."""
    n, m = (int(v) for v in pattern.split(":"))
    row, group = divmod(int(flat_group), a.shape[1] // m)
    members = arrays.host_bits(a, row, group * m, m)
    count = int(np.count_nonzero(members & np.array(_MAGNITUDE_BITS[members.itemsize], members.dtype)))
    raise ValueError(
        f"row {row}, group {group} (columns {group * m}..{group * m + m - 1}) has {count} non-zeros; "
        f"the {pattern} pattern allows at most {n}. Prune first (compress(..., prune=True)); "
        "values are never dropped silently"
    )


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")


__all__ = ["mask", "is_sparse", "compress", "decompress", "meta_shape", "FORMATS"]
