"""Where n:m groups run and which shapes hold them: the one home of these rules for the CPU path
(masks.py), the CUDA path (cuda/ops.py), the torch modules and the benchmarks, so they agree by
construction. Each rule is one function returning why a shape breaks it (None when it holds) or
raising that as a ValueError; tests/test_structure.py fails if another module spells one again."""

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


def splits_into_groups(size: int, m: int) -> bool:
    """`size` elements along the reduction dimension make whole groups of m."""
    return size % m == 0


def check_groups_fit(shape, dim: int, m: int, what: str = "weight") -> None:
    """`dim` (already resolved by reduction_dim) of a non-empty `shape` splits into whole groups of m."""
    if int(np.prod(shape)) == 0:
        raise ValueError(f"{what} is empty")
    if not splits_into_groups(shape[dim], m):
        raise ValueError(f"dimension {dim} of {what} (size {shape[dim]}) is not divisible by the group size m={m}")


# The packed format (docs/FORMATS.md) stores two 4-bit group codes per metadata byte, so the
# reduction dimension K holds whole pairs of groups of four.
PACKED_K_MULTIPLE = 8
# TensorRT / cuSPARSELt tile the output channels of a sparse GEMM in multiples of 8 (NVIDIA's ASP
# skips layers with out % 8 != 0 for the same reason).
OUT_CHANNEL_MULTIPLE = 8
# cuSPARSELt (csrc/cuda/gemm_spec.cpp): the sparse matrix's rows and columns are multiples of 32
# bytes' worth of elements; the dense operand's rows and the output's columns of 16 bytes' worth.
CUSPARSELT_SPARSE_BYTES = 32
CUSPARSELT_DENSE_BYTES = 16


def packed_k_problem(k: int) -> str | None:
    """Why a reduction length K cannot be stored in the packed format (None when it can)."""
    if k < 1 or k % PACKED_K_MULTIPLE:
        return (
            f"reduction length {k} is not a positive multiple of {PACKED_K_MULTIPLE} "
            "(the packed format's groups of two codes per byte)"
        )
    return None


def check_packed_k(k: int) -> None:
    """ValueError naming the problem when K cannot be stored in the packed format."""
    problem = packed_k_problem(k)
    if problem:
        raise ValueError(problem)


def sparse_layer_problem(out_channels: int, in_channels: int, m: int) -> str | None:
    """Why a dense GEMM layer (out_channels, in_channels) cannot be pruned n:m for the sparse
    kernels (None when it can): the input channels make whole groups, the output channels whole tiles."""
    if not splits_into_groups(in_channels, m):
        return f"{in_channels} input channels are not divisible by the group size {m}"
    if out_channels % OUT_CHANNEL_MULTIPLE:
        return f"{out_channels} output channels are not a multiple of {OUT_CHANNEL_MULTIPLE} (sparse kernel tiles)"
    return None


def cusparselt_problem(rows: int, cols: int, element_size: int, dtype: str) -> str | None:
    """Why cuSPARSELt cannot take a (rows, cols) sparse weight of `dtype` (None when it can)."""
    multiple = CUSPARSELT_SPARSE_BYTES // element_size
    if rows % multiple or cols % multiple:
        return f"cuSPARSELt needs {dtype} weights with rows and columns multiples of {multiple}, not {rows}x{cols}"
    return None


def cusparselt_padded(n: int, element_size: int) -> int:
    """`n` rounded up to the row multiple cuSPARSELt takes for the dense operand and the output
    (8 for 16-bit inputs, 4 for 32-bit, 16 for 8-bit): how far a decode step (n = 1) is padded."""
    multiple = CUSPARSELT_DENSE_BYTES // element_size
    return -(-n // multiple) * multiple


def raise_nonfinite(flat_index: int, moved_shape, dim: int, what: str = "input") -> None:
    """ValueError naming where the first NaN/Inf is, in the caller's coordinates (undoing the
    move of `dim` to the last axis)."""
    moved = [int(p) for p in np.unravel_index(flat_index, moved_shape)]
    position = moved[:-1]
    position.insert(dim, moved[-1])
    raise ValueError(f"{what} contains NaN or Inf at index {tuple(position)}; magnitude pruning needs finite values")
