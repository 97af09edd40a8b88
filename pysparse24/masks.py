"""n:m magnitude masks along the GEMM reduction dimension, and 4x4 masks that are 2:4 both ways."""

from __future__ import annotations

import numpy as np

from pysparse24 import _arrays
from pysparse24._ext import C
from pysparse24.groups import check_groups_fit, check_pattern, raise_nonfinite, reduction_dim, splits_into_groups


def _grouped_matrix(raw: _arrays.Raw, m: int, dim: int | None, what: str):
    d = reduction_dim(raw.bits.ndim, dim)
    check_groups_fit(raw.bits.shape, d, m, what)
    matrix, moved_shape = _arrays.contiguous_rows(raw.bits, d)
    return matrix, moved_shape, d


def mask(w, n: int = 2, m: int = 4, dim: int | None = None):
    """Boolean mask keeping the n largest-magnitude of every m consecutive elements along `dim`.

    Ties break deterministically: the lower index wins. `dim` defaults to the GEMM reduction
    dimension (last for 2-D weights, 1 for conv weights (K, C, R, S)). Returns the same kind of
    array as `w` (numpy bool array or torch bool tensor)."""
    if _arrays.is_cuda_array(w):
        from pysparse24.cuda import ops

        return ops.mask(w, n, m, dim=reduction_dim(w.ndim, dim))
    check_pattern(n, m)
    raw = _arrays.to_raw(w, "weight")
    matrix, moved_shape, d = _grouped_matrix(raw, m, dim, "weight")
    keep, first_nonfinite = C.mask_nm(matrix, raw.kind, int(n), int(m))
    if first_nonfinite >= 0:
        raise_nonfinite(first_nonfinite, moved_shape, d, "weight")
    return raw.wrap_plain(np.ascontiguousarray(_arrays.restore_rows(keep, moved_shape, d)))


def prune(w, n: int = 2, m: int = 4, dim: int | None = None):
    """A copy of w with all but the n largest-magnitude of every m elements along `dim` set to +0."""
    keep = mask(w, n, m, dim)
    if _arrays.is_torch(w):
        import torch

        return torch.where(keep, w.detach(), torch.zeros((), dtype=w.dtype, device=w.device))
    if _arrays.is_cuda_array(w):  # cupy (or another __cuda_array_interface__ array that cupy can wrap)
        import cupy

        w = cupy.asarray(w)
        return cupy.where(cupy.asarray(keep), w, cupy.zeros((), dtype=w.dtype))
    raw = _arrays.to_raw(w, "weight")
    return raw.wrap(np.where(keep, raw.bits, 0).astype(raw.bits.dtype))


def is_sparse(w, n: int = 2, m: int = 4, dim: int | None = None) -> bool:
    """True when every group of m elements along `dim` has at most n non-zeros (-0.0 counts as zero)."""
    check_pattern(n, m)
    if _arrays.is_cuda_array(w):
        from pysparse24.cuda import ops

        return ops.is_sparse(w, n, m, dim=reduction_dim(w.ndim, dim))
    raw = _arrays.to_raw(w, "weight")
    matrix, _, _ = _grouped_matrix(raw, m, dim, "weight")
    return C.first_overfull(matrix, raw.kind, int(n), int(m)) < 0


def mask_2d(w, method: str = "greedy"):
    """Mask for a 2-D weight that is 2:4 along its rows AND its columns in every 4x4 block, so the
    pruned weight stays 2:4 when used transposed (e.g. in the backward pass).

    method="greedy" keeps the largest remaining magnitude while its row and column have room;
    method="exhaustive" picks, per block, the pattern with the largest kept |w| sum among all 186
    maximal ones (the 90 with two per row and column, and 96 where one row and one column keep a
    single element, where greedy can also end), so it is never worse than greedy."""
    if method not in ("greedy", "exhaustive"):
        raise ValueError(f"method must be 'greedy' or 'exhaustive', got {method!r}")
    raw = _arrays.to_raw(w, "weight")
    if raw.bits.ndim != 2:
        raise ValueError(f"mask_2d expects a 2-D weight, got shape {tuple(raw.bits.shape)}")
    if raw.bits.size == 0:
        raise ValueError("weight is empty")
    rows, cols = raw.bits.shape
    if not (splits_into_groups(rows, 4) and splits_into_groups(cols, 4)):  # whole 4x4 blocks
        raise ValueError(f"mask_2d needs both dimensions divisible by 4, got shape {(rows, cols)}")
    matrix = np.ascontiguousarray(raw.bits)
    keep, first_nonfinite = C.mask_4x4(matrix, raw.kind, method == "exhaustive")
    if first_nonfinite >= 0:
        raise_nonfinite(first_nonfinite, matrix.shape, 1, "weight")
    return raw.wrap_plain(keep)
