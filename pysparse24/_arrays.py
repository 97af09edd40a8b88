"""Array-library adapter: numpy arrays and torch CPU tensors in, the same kind out.

The C++ kernels see raw element bits (uint8/16/32) so that every dtype, including bfloat16 and the
float8 types that numpy lacks natively, crosses without conversion and without copies. torch CPU
tensors cross through `.numpy()` (shared memory); numpy bfloat16/float8 come from ml_dtypes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from pysparse24.dtypes import canonical

# dtype name -> (kernel kind id, bytes); ids match ps24::Kind in csrc/common/sparse24.h.
KINDS = {
    "float32": (0, 4),
    "float16": (1, 2),
    "bfloat16": (2, 2),
    "int8": (3, 1),
    "float8_e4m3fn": (4, 1),
    "float8_e5m2": (5, 1),
}
_BITS = {4: np.uint32, 2: np.uint16, 1: np.uint8}


def _torch():
    """torch if the caller already imported it (we never import it just to check a type)."""
    return sys.modules.get("torch")


def torch_module():
    """torch, for code that only runs on torch tensors (so the caller has imported it)."""
    return sys.modules["torch"]


def is_torch(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def is_cuda_array(x) -> bool:
    if is_torch(x):
        return x.is_cuda
    return hasattr(x, "__cuda_array_interface__")


def dtype_name(x) -> str:
    """The library-neutral name of x's dtype ('float16', 'bfloat16', ...): pysparse24.dtypes'."""
    return canonical(x if hasattr(x, "dtype") else np.asarray(x))


def _numpy_dtype(name: str) -> np.dtype:
    if name in ("float32", "float16", "int8"):
        return np.dtype(name)
    import ml_dtypes  # numpy has no bfloat16/float8 of its own

    return np.dtype(getattr(ml_dtypes, name))


@dataclass
class Raw:
    """An array reinterpreted as raw bits, plus what it takes to turn results back into its kind."""

    bits: np.ndarray  # uint8/16/32, same shape as the input
    dtype: str
    kind: int
    torch_input: bool

    def wrap(self, bits: np.ndarray, dtype: str | None = None):
        """Raw bits -> an array of the caller's kind with the given dtype (default: the input's)."""
        return wrap_bits(bits, dtype or self.dtype, self.torch_input)

    def wrap_plain(self, arr: np.ndarray):
        """A plain numpy result (bool mask, integer metadata) -> the caller's kind."""
        return wrap_plain(arr, self.torch_input)


def wrap_plain(arr: np.ndarray, as_torch: bool):
    """A numpy array of a dtype both libraries share (bool, int16/32, ...), as torch when asked."""
    if as_torch:
        import torch

        return torch.from_numpy(arr)
    return arr


def wrap_bits(bits: np.ndarray, dtype: str, as_torch: bool):
    if as_torch:
        import torch

        return torch.from_numpy(bits).view(getattr(torch, dtype))
    return bits.view(_numpy_dtype(dtype))


def native(a: np.ndarray) -> np.ndarray:
    """`a` in native byte order and aligned, as every kernel reads it: a big-endian array (a .npy
    written on another machine, a '>f4' view) is byte-swapped into a copy, and a misaligned view of
    an offset buffer is copied; any other array is returned as it is."""
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a if a.flags.aligned else a.copy()


def host_numpy(a, what: str = "input") -> np.ndarray:
    """A numpy array or CPU tensor of a plain dtype (metadata, int32 bias) as the kernels read it
    (native byte order, aligned; no copy when it already is)."""
    if is_torch(a):
        return native(a.detach().numpy())
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a numpy array or a torch tensor, got {type(a).__name__}")
    return native(a)


def require_writable_native(out, what: str = "out") -> None:
    """An array the kernels write into must already be in native byte order and aligned: a swapped
    or aligned copy would receive the result and the caller's array would not."""
    if is_torch(out):
        ok = out.data_ptr() % out.element_size() == 0  # torch tensors are always native-endian
    else:
        ok = out.dtype.isnative and out.flags.aligned
    if not ok:
        raise ValueError(
            f"{what} must be in native byte order and aligned (got dtype {out.dtype}, "
            f"at address {_address(out)}); pass a fresh array, e.g. np.empty_like(...)"
        )


def _address(a) -> int:
    return a.data_ptr() if is_torch(a) else a.ctypes.data


def to_raw(x, what: str = "input") -> Raw:
    """Validates x's type and dtype and returns its raw-bit view: no copy, except for torch views that
    numpy cannot share and for arrays the kernels cannot read as they are (byte-swapped or
    misaligned: see native())."""
    if is_cuda_array(x):
        raise TypeError(f"{what} is a CUDA array: pass it to the function directly; it routes to pysparse24.cuda")
    if is_torch(x):
        torch = _torch()
        if x.layout != torch.strided:
            raise TypeError(f"{what} must be a dense (strided) tensor, got layout {x.layout}")
        name = dtype_name(x)
        if name not in KINDS:
            raise TypeError(f"unsupported dtype {x.dtype} for {what}; supported: {', '.join(KINDS)}")
        kind, nbytes = KINDS[name]
        bits = x.detach().view(getattr(torch, {4: "uint32", 2: "uint16", 1: "uint8"}[nbytes])).numpy()
        return Raw(native(bits), name, kind, True)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}")
    name = x.dtype.name
    if name not in KINDS:
        raise TypeError(f"unsupported dtype {x.dtype} for {what}; supported: {', '.join(KINDS)}")
    kind, nbytes = KINDS[name]
    return Raw(native(x).view(_BITS[nbytes]), name, kind, False)


def contiguous_rows(bits: np.ndarray, dim: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Moves `dim` last and flattens the rest: the (rows, cols) matrix the kernels expect, with groups
    along cols. Non-contiguous and negative-stride views are copied; contiguous ones are not."""
    moved = np.moveaxis(bits, dim, -1)
    matrix = np.ascontiguousarray(moved.reshape(-1, moved.shape[-1]) if moved.ndim != 2 else moved)
    return matrix, moved.shape


def restore_rows(matrix: np.ndarray, moved_shape: tuple[int, ...], dim: int) -> np.ndarray:
    return np.moveaxis(matrix.reshape(moved_shape), -1, dim)
