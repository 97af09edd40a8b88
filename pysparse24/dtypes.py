"""Dtype names: the one home. Every spelling a user or a runtime uses ('fp16', 'half', torch.float16,
numpy.float16, ml_dtypes.bfloat16, an array) maps to one canonical name, numpy's / torch's
('float16', 'bfloat16', ...); the latency tables' short precision names ('fp16', 'bf16') map from it.
"""

from __future__ import annotations

import numpy as np

# Canonical names: the ones numpy (with ml_dtypes) and torch both print.
CANONICAL = ("float32", "float16", "bfloat16", "int8", "int32", "float8_e4m3fn", "float8_e5m2")
_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "f32": "float32",
    "fp16": "float16",
    "half": "float16",
    "f16": "float16",
    "bf16": "bfloat16",
    "fp8_e4m3": "float8_e4m3fn",
    "e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
    "e5m2": "float8_e5m2",
}
# The latency tables' precision names (LayerSpec.precision, `--precision`): short, as TensorRT spells them.
_PRECISIONS = {"float32": "fp32", "float16": "fp16", "int8": "int8", "bfloat16": "bf16"}
PRECISIONS = tuple(_PRECISIONS.values())


def canonical(dtype) -> str:
    """'float16' for 'fp16', 'half', torch.float16, numpy.float16, ml_dtypes types, or an array of
    that dtype. ValueError for a name no library spells."""
    if not isinstance(dtype, str):
        if not isinstance(dtype, type):  # an array or tensor (numpy's scalar types also have .dtype)
            dtype = getattr(dtype, "dtype", dtype)
        text = str(dtype)
        if text.startswith("torch."):
            dtype = text.removeprefix("torch.")
        else:
            try:
                dtype = np.dtype(dtype).name
            except TypeError:
                dtype = getattr(dtype, "name", text)
    name = _ALIASES.get(dtype.lower(), dtype.lower())
    if name not in CANONICAL and name not in np.sctypeDict:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(CANONICAL)} (or {', '.join(_ALIASES)})")
    return name


def precision_name(dtype) -> str:
    """The latency tables' short name ('fp16', 'bf16', 'fp32', 'int8') of any spelling of a dtype."""
    name = canonical(dtype)
    if name not in _PRECISIONS:
        raise ValueError(f"no table precision for {name}; tables hold {', '.join(_PRECISIONS.values())}")
    return _PRECISIONS[name]


def torch_dtype(dtype):
    """torch's dtype object for any spelling."""
    import torch

    return getattr(torch, canonical(dtype))
