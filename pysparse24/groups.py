"""Where n:m groups run and which shapes hold them: the one home of these rules for the CPU path
(masks.py) and the CUDA path (cuda/ops.py), so the two agree by construction."""

from __future__ import annotations

import numpy as np


def reduction_dim(ndim: int, dim: int | None) -> int:
    """The dimension the groups run along. Default: the last one for vectors and (out, in) matrices,
    dim 1 (input channels C) for conv weights (K, C, R, S), as TensorRT requires."""
    if ndim == 0:
        raise ValueError("expected an array with at least one dimension, got a scalar")
    if dim is None:
        dim = -1 if ndim <= 2 else 1
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim {dim} is out of range for an array with {ndim} dimensions")
    return dim % ndim


def check_pattern(n: int, m: int) -> None:
    if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer))):
        raise TypeError(f"n and m must be integers, got {n!r} and {m!r}")
    if not 1 <= m <= 16:
        raise ValueError(f"group size m must be between 1 and 16, got {m}")
    if not 0 <= n <= m:
        raise ValueError(f"n must be between 0 and m={m}, got {n}")


def check_groups_fit(shape, dim: int, m: int, what: str = "weight") -> None:
    """`dim` (already resolved by reduction_dim) of a non-empty `shape` splits into whole groups of m."""
    if int(np.prod(shape)) == 0:
        raise ValueError(f"{what} is empty")
    if shape[dim] % m:
        raise ValueError(f"dimension {dim} of {what} (size {shape[dim]}) is not divisible by the group size m={m}")


def raise_nonfinite(flat_index: int, moved_shape, dim: int, what: str = "input") -> None:
    """ValueError naming where the first NaN/Inf is, in the caller's coordinates (undoing the
    move of `dim` to the last axis)."""
    moved = [int(p) for p in np.unravel_index(flat_index, moved_shape)]
    position = moved[:-1]
    position.insert(dim, moved[-1])
    raise ValueError(f"{what} contains NaN or Inf at index {tuple(position)}; magnitude pruning needs finite values")
