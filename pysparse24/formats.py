"""The compressed formats and the `Compressed` container.

- "packed": this project's layout (docs/FORMATS.md): values (M, K/2) in ascending column order;
  meta uint8 (M, K/8), one 4-bit code (idx0 | idx1 << 2) per group of four, first group in the low nibble.
- "cutlass": the sm80 CUTLASS / PyTorch semi-structured layout, bit-identical to
  torch.sparse._semi_structured_conversions.sparse_semi_structured_from_dense_cutlass; float32 is 1:2.
- "cusparselt": cuSPARSELt's opaque compressed layout, produced on the GPU only (pysparse24.cuda).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from pysparse24 import _arrays
from pysparse24._ext import C
from pysparse24.groups import PACKED_K_MULTIPLE

FORMATS = ("packed", "cutlass")


@dataclass(frozen=True)
class Geometry:
    """Shape rules of one (format, dtype): dense multiples and the metadata array."""

    row_multiple: int
    col_multiple: int
    meta_dtype: str
    dense_cols_per_meta_col: int
    pattern: str  # the sparsity the format stores: "2:4", or "1:2" for float32 on tensor cores


def geometry(format: str, dtype: str) -> Geometry:
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    if dtype not in _arrays.KINDS:
        raise TypeError(f"unsupported dtype {dtype!r}; supported: {', '.join(_arrays.KINDS)}")
    if format == "packed":
        return Geometry(1, PACKED_K_MULTIPLE, "uint8", 8, "2:4")
    # Meta words are swizzled in 2x2 blocks, so each row holds an even number of them.
    nbytes = _arrays.KINDS[dtype][1]
    if dtype == "float32":
        return Geometry(32, 16, "int16", 8, "1:2")
    if nbytes == 2:
        return Geometry(32, 32, "int16", 16, "2:4")
    return Geometry(16, 64, "int32", 32, "2:4")


def check_dense_shape(shape, format: str, dtype: str) -> Geometry:
    geo = geometry(format, dtype)
    if len(shape) != 2:
        raise ValueError(f"compression expects a 2-D (rows, reduction) matrix, got shape {tuple(shape)}")
    rows, cols = shape
    if rows == 0 or cols == 0:
        raise ValueError(f"cannot compress an empty matrix of shape {tuple(shape)}")
    if rows % geo.row_multiple or cols % geo.col_multiple:
        raise ValueError(
            f"the {format} format for {dtype} needs rows divisible by {geo.row_multiple} and columns "
            f"divisible by {geo.col_multiple}; got shape {tuple(shape)}"
        )
    return geo


def raise_corrupt_meta(first_bad_group: int) -> None:
    raise ValueError(f"corrupt metadata: group {first_bad_group} (row-major) has an invalid index code")


def check_codes(packed_meta) -> None:
    """ValueError if a packed metadata array (C-contiguous uint8) holds a code that names no valid
    pair of positions (the rule decompress applies: idx0 < idx1, csrc/common/sparse24.h); kernels that
    read the codes without checking them (matmul) call this first. A vectorized scan, 16 codes per
    step: 0.1 ms for a 4096 x 4096 weight's 2 MiB (measured on the dev machine), about 4% of a
    one-thread N = 1 product and less as N grows."""
    first_bad = C.first_bad_packed_code(packed_meta)
    if first_bad >= 0:
        raise_corrupt_meta(first_bad)


@dataclass(frozen=True)
class Compressed:
    """A 2:4 (or 1:2) compressed weight: kept values + metadata, the dense shape and dtype, the format.

    values and meta are numpy arrays or torch tensors (both of the same kind)."""

    values: Any
    meta: Any
    shape: tuple
    dtype: str
    format: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        problems = self._disagreements()
        if problems:
            raise ValueError("Compressed fields disagree: " + "; ".join(problems))

    def _disagreements(self) -> list[str]:
        try:
            geo = check_dense_shape(self.shape, self.format, self.dtype)
        except (TypeError, ValueError) as exc:
            return [str(exc)]
        rows, cols = self.shape
        problems = []
        if _arrays.is_torch(self.values) != _arrays.is_torch(self.meta):
            problems.append("values and meta must both be numpy arrays or both torch tensors")
        if _arrays.dtype_name(self.values) != self.dtype:
            problems.append(f"values have dtype {_arrays.dtype_name(self.values)}, expected {self.dtype}")
        if tuple(self.values.shape) != (rows, cols // 2):
            problems.append(f"values have shape {tuple(self.values.shape)}, expected {(rows, cols // 2)}")
        meta_shape = (rows, cols // geo.dense_cols_per_meta_col)
        if _arrays.dtype_name(self.meta) != geo.meta_dtype:
            problems.append(f"meta has dtype {_arrays.dtype_name(self.meta)}, expected {geo.meta_dtype}")
        if tuple(self.meta.shape) != meta_shape:
            problems.append(f"meta has shape {tuple(self.meta.shape)}, expected {meta_shape}")
        return problems

    @property
    def pattern(self) -> str:
        return geometry(self.format, self.dtype).pattern

    @property
    def nbytes(self) -> int:
        """Bytes of values + metadata (what a sparse GEMM reads)."""
        return _nbytes(self.values) + _nbytes(self.meta)

    @property
    def dense_nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * _arrays.KINDS[self.dtype][1]

    def to_torch_semi_structured(self):
        """This cutlass-format weight as torch.sparse.SparseSemiStructuredTensorCUTLASS (values and meta
        shared, not copied), for GPU users of torch's semi-structured matmuls. torch multiplies with it
        on CUDA only, and asks for larger multiples there than the format (e.g. 64 columns for 16-bit
        types); on the CPU it still converts back (`to_dense`, `from_torch_semi_structured`)."""
        import torch

        if self.format != "cutlass":
            raise ValueError(
                f"torch's semi-structured tensors use the cutlass layout; this weight is {self.format!r} "
                "(compress with format='cutlass')"
            )
        if self.dtype not in ("float32", "float16", "bfloat16", "int8"):
            raise TypeError(f"torch has no semi-structured {self.dtype} tensors")
        values, meta = self.values, self.meta
        if not _arrays.is_torch(values):  # numpy: torch views of the same memory
            values = _arrays.wrap_bits(_arrays.to_raw(self.values).bits, self.dtype, True)
            meta = _arrays.wrap_plain(self.meta, True)
        with warnings.catch_warnings():  # torch's one-time "prototype" notice
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse.SparseSemiStructuredTensorCUTLASS(
                torch.Size(self.shape),
                packed=values,
                meta=meta,
                packed_t=None,
                meta_t=None,
                compressed_swizzled_bitmask=None,
            )

    @classmethod
    def from_torch_semi_structured(cls, tensor) -> "Compressed":
        """A torch SparseSemiStructuredTensorCUTLASS (as torch.sparse.to_sparse_semi_structured makes
        with the CUTLASS backend) as a cutlass-format Compressed over the same values and meta."""
        import torch

        if not isinstance(tensor, torch.sparse.SparseSemiStructuredTensorCUTLASS):
            raise TypeError(
                f"expected a torch.sparse.SparseSemiStructuredTensorCUTLASS, got {type(tensor).__name__} "
                "(cuSPARSELt-backed tensors keep an opaque layout)"
            )
        if tensor.packed is None or tensor.meta is None:
            raise ValueError("the semi-structured tensor holds only its transpose (packed_t/meta_t)")
        return cls(tensor.packed, tensor.meta, tuple(tensor.shape), _arrays.dtype_name(tensor.packed), "cutlass")


def _nbytes(a) -> int:
    return a.numel() * a.element_size() if _arrays.is_torch(a) else a.nbytes
