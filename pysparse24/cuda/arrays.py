"""CUDA arrays as the kernels see them: address, shape, dtype, device and the caller's stream.

torch.cuda tensors and cupy arrays are used as they are, and outputs are allocated with the same
library, so a torch input gives torch outputs and a cupy input cupy outputs. Other CUDA arrays are
imported without a copy: through `__cuda_array_interface__` as cupy arrays, through DLPack as torch
tensors (and the outputs are of that library).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pysparse24.dtypes import canonical

_KDL_CUDA = 2  # DLPack device type of CUDA memory


@dataclass(frozen=True)
class DeviceArray:
    array: object  # the torch tensor / cupy array (kept alive while its address is in use)
    library: str  # "torch" or "cupy"
    address: int
    shape: tuple
    row_stride: int  # elements between rows of a 2-D array (its last dimension is contiguous)
    dtype: str  # "float16", "bfloat16", "float8_e4m3fn", ...
    device: int


def _library_of(x) -> str | None:
    module = type(x).__module__
    if module.startswith("torch"):
        return "torch" if getattr(x, "is_cuda", False) else None
    if module.startswith("cupy"):
        return "cupy"
    return None


def import_array(x):
    """x as a torch tensor or cupy array without a copy; TypeError when x is no CUDA array."""
    if _library_of(x):
        return x
    if hasattr(x, "__cuda_array_interface__"):
        import cupy

        return cupy.asarray(x)
    dlpack_device = getattr(x, "__dlpack_device__", None)
    if dlpack_device is not None and dlpack_device()[0] == _KDL_CUDA:
        import torch

        return torch.from_dlpack(x)
    raise TypeError(
        f"expected a CUDA array (torch.cuda tensor, cupy array, or an object with __cuda_array_interface__ "
        f"or CUDA DLPack), got {type(x).__module__}.{type(x).__name__}"
    )


def element_count(x) -> int:
    """Number of elements of a torch tensor (whose .size is a method) or a cupy array."""
    return x.numel() if callable(x.size) else int(x.size)


def wrap(x, ndim: int = 2) -> DeviceArray:
    """Describe a CUDA array; a last dimension with a stride other than 1 is made contiguous first."""
    x = import_array(x)
    library = _library_of(x)
    if x.ndim != ndim:
        raise ValueError(f"expected a {ndim}-D array, got shape {tuple(x.shape)}")
    if library == "torch":
        if ndim and x.stride(-1) != 1:
            x = x.contiguous()
        dtype = canonical(x.dtype)
        row_stride = x.stride(0) if ndim == 2 else 1
        return DeviceArray(x, "torch", x.data_ptr(), tuple(x.shape), row_stride, dtype, x.device.index)
    itemsize = x.dtype.itemsize
    if ndim and x.strides[-1] != itemsize:
        import cupy

        x = cupy.ascontiguousarray(x)
    row_stride = x.strides[0] // itemsize if ndim == 2 else 1
    return DeviceArray(x, "cupy", x.data.ptr, tuple(x.shape), row_stride, x.dtype.name, x.device.id)


def current_stream(a: DeviceArray) -> int:
    """The caller's current stream on a's device, as a raw cudaStream_t."""
    if a.library == "torch":
        import torch

        return torch.cuda.current_stream(a.device).cuda_stream
    import cupy

    with cupy.cuda.Device(a.device):
        return cupy.cuda.get_current_stream().ptr


def empty(like: DeviceArray, shape: tuple, dtype: str) -> DeviceArray:
    """An uninitialised array of the same library and device as `like`."""
    if like.library == "torch":
        import torch

        out = torch.empty(shape, dtype=getattr(torch, dtype), device=f"cuda:{like.device}")
    else:
        import cupy

        if dtype in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
            raise TypeError(f"cupy has no {dtype} arrays; pass torch tensors for {dtype}")
        with cupy.cuda.Device(like.device):
            out = cupy.empty(shape, dtype="bool" if dtype == "bool" else dtype)
    return wrap(out, ndim=len(shape))


def astype(a: DeviceArray, dtype: str) -> DeviceArray:
    """a converted to dtype (a new array of the same library), or a itself when it already is."""
    if a.dtype == dtype:
        return a
    if a.library == "torch":
        import torch

        return wrap(a.array.to(getattr(torch, dtype)), ndim=len(a.shape))
    return wrap(a.array.astype(dtype), ndim=len(a.shape))


def dtype_name(dtype) -> str:
    """'float16' from 'float16', 'fp16', torch.float16, numpy/cupy dtypes (pysparse24.dtypes)."""
    return canonical(dtype)


def rows_along(x, dim: int):
    """x (torch or cupy) with `dim` moved last and the rest flattened: the (rows, size) matrix the
    kernels take (a copy only when the move needs one), and the moved shape to undo it."""
    if type(x).__module__.startswith("torch"):
        moved = x.movedim(dim, -1)
    else:
        import cupy

        moved = cupy.moveaxis(x, dim, -1)
    return moved.reshape(-1, moved.shape[-1]), tuple(moved.shape)


def restore_rows(matrix: DeviceArray, moved_shape: tuple, dim: int):
    """Inverse of rows_along, as a contiguous array of the same library."""
    out = matrix.array.reshape(moved_shape)
    if matrix.library == "torch":
        return out.movedim(-1, dim).contiguous()
    import cupy

    return cupy.ascontiguousarray(cupy.moveaxis(out, -1, dim))


def host_bits(a: DeviceArray, row: int, col: int, count: int) -> np.ndarray:
    """a[row, col:col+count] copied to the host as raw unsigned bits (for error messages)."""
    piece = a.array[row, col : col + count]
    if a.library == "torch":
        import torch

        raw = piece.contiguous().cpu().view(torch.uint8).numpy()
    else:
        import cupy

        raw = cupy.asnumpy(piece).view(np.uint8)
    return raw.view({4: np.uint32, 2: np.uint16, 1: np.uint8}[raw.size // count])


def require_same_device(*arrays: DeviceArray) -> None:
    devices = {a.device for a in arrays}
    if len(devices) > 1:
        raise ValueError(f"arrays are on different devices: {sorted(devices)}")


__all__ = [
    "DeviceArray",
    "import_array",
    "element_count",
    "wrap",
    "empty",
    "astype",
    "current_stream",
    "dtype_name",
    "rows_along",
    "restore_rows",
    "host_bits",
    "require_same_device",
]
