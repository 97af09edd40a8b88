"""compress / decompress: dense 2-D weight <-> Compressed (values + metadata)."""

from __future__ import annotations

import numpy as np

from pysparse24 import _arrays
from pysparse24._ext import C
from pysparse24.formats import Compressed, check_dense_shape, raise_corrupt_meta
from pysparse24.groups import raise_nonfinite


def compress(w, format: str = "packed", prune: bool = False) -> Compressed:
    """Compress a 2-D weight (rows, reduction) that is already 2:4 sparse (1:2 for float32 in the
    cutlass format) along its rows. A group with more non-zeros than the pattern allows is an error
    naming the first offending row and group; `prune=True` prunes by magnitude first.
    numpy in -> numpy out, torch in -> torch out, CUDA arrays run on the GPU (pysparse24.cuda)."""
    if _arrays.is_cuda_array(w):
        from pysparse24.cuda import ops

        check_dense_shape(tuple(w.shape), format, _arrays.dtype_name(w))
        values, meta = ops.compress(w, format, prune)
        return Compressed(values, meta, tuple(w.shape), _arrays.dtype_name(w), format)
    raw = _arrays.to_raw(w, "weight")
    geo = check_dense_shape(raw.bits.shape, format, raw.dtype)
    matrix = np.ascontiguousarray(raw.bits)
    values, meta, first_nonfinite, first_overfull = C.compress(matrix, raw.kind, format, bool(prune))
    if first_nonfinite >= 0:
        raise_nonfinite(first_nonfinite, matrix.shape, 1, "weight")
    if first_overfull >= 0:
        _raise_overfull(matrix, first_overfull, geo.pattern)
    return Compressed(raw.wrap(values), raw.wrap_plain(meta), matrix.shape, raw.dtype, format)


def _raise_overfull(matrix: np.ndarray, flat_group: int, pattern: str) -> None:
    n, m = (int(v) for v in pattern.split(":"))
    groups_per_row = matrix.shape[1] // m
    row, group = divmod(int(flat_group), groups_per_row)
    members = matrix[row, group * m : (group + 1) * m]
    count = int(np.count_nonzero(members & np.array(_MAGNITUDE_MASK[members.dtype.itemsize], members.dtype)))
    raise ValueError(
        f"row {row}, group {group} (columns {group * m}..{group * m + m - 1}) has {count} non-zeros; "
        f"the {pattern} pattern allows at most {n}. Prune first (compress(..., prune=True)); "
        "values are never dropped silently"
    )


# Bits that carry magnitude (sign excluded), so -0.0 counts as zero; int8 has no -0 so all bits count.
_MAGNITUDE_MASK = {4: 0x7FFFFFFF, 2: 0x7FFF, 1: 0xFF}


def decompress(c: Compressed):
    """The dense matrix back, bit-exact (a dropped -0.0 returns as +0.0), same array kind as c.values."""
    if not isinstance(c, Compressed):
        raise TypeError(f"decompress expects a pysparse24.Compressed, got {type(c).__name__}")
    if _arrays.is_cuda_array(c.values):
        from pysparse24.cuda import ops

        return ops.decompress(c.values, c.meta, c.shape, c.dtype, c.format)
    values = _arrays.to_raw(c.values, "values")
    meta = _arrays.host_numpy(c.meta, "meta")
    rows, cols = c.shape
    dense, first_bad = C.decompress(
        np.ascontiguousarray(values.bits), np.ascontiguousarray(meta), values.kind, c.format, rows, cols
    )
    if first_bad >= 0:
        raise_corrupt_meta(first_bad)
    return values.wrap(dense)
