"""The sparse forward passes as torch.library custom ops, so torch.compile and torch.export see them.

    torch.ops.pysparse24.linear(x, values, meta, bias)                # x @ W.T + bias, x: (..., K)
    torch.ops.pysparse24.conv2d(x, values, meta, bias, kernel_size, stride, padding, dilation)

W is a 2:4 weight in the "packed" format (docs/FORMATS.md): values (M, K/2), meta uint8 (M, K/8).
For conv2d, W is the (K_out, R*S*C) matrix with C innermost, so groups of four run along the input
channels (the rule of `pysparse24.mask(w, dim=1)` and `sparsify`). dtypes: float32, bfloat16
(float32 accumulation) and int8 (int32 accumulation and result, int32 bias).

CPU tensors run on pysparse24.linear. CUDA tensors run on cuSPARSELt (pysparse24.cuda.cusparselt),
except float32 (cuSPARSELt's float32 (TF32) sparsity is 1:2, which a 2:4 weight is not in general)
and weights whose shape breaks cuSPARSELt's multiples: those run the decompressed weight densely
(`gpu_dense_reason` says why; int8 has no dense fallback and raises instead).

Inference only: with grad mode on, an input that requires grad is an error (there is no backward).
The fake implementations share the shape checks with the real ones, so a bad call fails the same
way in eager mode, under torch.compile and under torch.export.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

import pysparse24
from pysparse24 import _arrays
from pysparse24.formats import Compressed
from pysparse24.groups import PACKED_K_MULTIPLE, cusparselt_padded, cusparselt_problem, packed_k_problem
from pysparse24.matmul import conv2d_nhwc, conv_output_hw, large_n_regime, run_torch_linear, weight_is_checked

DTYPES = (torch.float32, torch.bfloat16, torch.int8)


def result_dtype(dtype: torch.dtype) -> torch.dtype:
    """int8 products accumulate in and return int32; float products keep their dtype."""
    return torch.int32 if dtype == torch.int8 else dtype


def compressed(values: Tensor, meta: Tensor) -> Compressed:
    """The packed-format Compressed weight whose buffers are `values` and `meta` (no copy)."""
    return Compressed(values, meta, (values.shape[0], 2 * values.shape[1]), _arrays.dtype_name(values), "packed")


def _check_weight(values: Tensor, meta: Tensor, bias: Optional[Tensor]) -> None:
    if values.dtype not in DTYPES:
        raise TypeError(f"sparse weight values have dtype {values.dtype}; supported: {', '.join(map(str, DTYPES))}")
    if (
        values.dim() != 2
        or meta.dim() != 2
        or meta.dtype != torch.uint8
        or tuple(meta.shape) != (values.shape[0], values.shape[1] // 4)
        or packed_k_problem(2 * values.shape[1])
    ):
        raise ValueError(
            f"values {tuple(values.shape)} and meta {meta.dtype} {tuple(meta.shape)} are not a packed "
            f"2:4 weight: values (M, K/2) and uint8 meta (M, K/8) with K divisible by {PACKED_K_MULTIPLE}"
        )
    if meta.device != values.device:
        raise ValueError(f"meta is on {meta.device}, values on {values.device}")
    if bias is not None:
        wanted = result_dtype(values.dtype)
        if tuple(bias.shape) != (values.shape[0],) or bias.dtype != wanted:
            raise ValueError(
                f"bias must be a ({values.shape[0]},) {wanted} vector, got {bias.dtype} {tuple(bias.shape)}"
            )
        if bias.device != values.device:
            raise ValueError(f"bias is on {bias.device}, the weight on {values.device}")


def _check_input(x: Tensor, values: Tensor, what: str) -> None:
    if x.dtype != values.dtype:
        raise TypeError(
            f"{what} has dtype {x.dtype} but the sparse weight is {values.dtype}; "
            "convert the input (or the model) to one dtype"
        )
    if x.device != values.device:
        raise ValueError(f"{what} is on {x.device} but the sparse weight is on {values.device}")


# ---- the library and inference only --------------------------------------------------------------

# The ops are defined with torch.library.Library rather than torch.library.custom_op: custom_op's
# Python layers (autograd wrapper, dynamo guard, aliasing check) cost ~10 us per call, as much as a
# whole small GEMV (GPUNet-0's squeeze-excite convs). There is no autograd kernel: the kernels and
# the fake implementations refuse an input that requires grad themselves.
_LIB = torch.library.Library("pysparse24", "DEF")


def _implements(name: str, *devices: str):
    def register(fn):
        for device in devices:
            _LIB.impl(name, fn, device)
        return fn

    return register


def _refuse_grad(x: Tensor, values: Tensor, bias: Optional[Tensor]) -> None:
    # With grad mode on, an input that requires grad would get a result silently cut off from the
    # graph: refuse instead.
    if torch.is_grad_enabled() and (
        x.requires_grad or values.requires_grad or (bias is not None and bias.requires_grad)
    ):
        raise RuntimeError(
            "pysparse24 sparse layers are inference-only: an input requires grad. Run under "
            "torch.no_grad() / torch.inference_mode(), or detach the input"
        )


# ---- linear ----------------------------------------------------------------------------------


def _check_linear(x, values, meta, bias) -> None:
    _check_weight(values, meta, bias)
    _check_linear_input(x, values)


def _check_linear_input(x, values) -> None:
    _check_input(x, values, "x")
    if x.dim() < 1 or x.shape[-1] != 2 * values.shape[1]:
        raise ValueError(f"x has shape {tuple(x.shape)}; the sparse weight needs (..., {2 * values.shape[1]})")


_LIB.define("linear(Tensor x, Tensor values, Tensor meta, Tensor? bias) -> Tensor")


def linear(x: Tensor, values: Tensor, meta: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x @ W.T + bias for the packed 2:4 weight W = (values, meta); x: (..., K) -> (..., M)."""
    return torch.ops.pysparse24.linear(x, values, meta, bias)


@_implements("linear", "CPU")
def _linear_cpu(x, values, meta, bias):
    _refuse_grad(x, values, bias)
    _check_linear_input(x, values)
    return run_torch_linear(x, values, meta, bias, check_weight=_check_weight)


@_implements("linear", "CUDA")
def _linear_cuda(x, values, meta, bias):
    _refuse_grad(x, values, bias)
    _check_linear(x, values, meta, bias)
    return _cuda_linear(x, values, meta, bias)


@torch.library.register_fake("pysparse24::linear")
def _linear_fake(x, values, meta, bias):
    _refuse_grad(x, values, bias)
    _check_linear(x, values, meta, bias)
    return x.new_empty((*x.shape[:-1], values.shape[0]), dtype=result_dtype(values.dtype))


# ---- conv2d ----------------------------------------------------------------------------------


def _conv_geometry(x, values, kernel_size, stride, padding, dilation) -> tuple[int, int]:
    """Checks the conv hyperparameters against x and the weight; returns the output (height, width)."""
    limits = (
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    )
    for name, pair, low in limits:
        if len(pair) != 2 or min(pair) < low:
            raise ValueError(f"{name} must be two integers >= {low}, got {list(pair)}")
    if x.dim() != 4:
        raise ValueError(f"conv2d input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    (r, s), channels = kernel_size, x.shape[1]
    if 2 * values.shape[1] != r * s * channels:
        raise ValueError(
            f"input has {channels} channels but the sparse weight's {2 * values.shape[1]} columns "
            f"are not kernel {r}x{s} x {channels} channels"
        )
    return conv_output_hw(x.shape[2:], kernel_size, stride, padding, dilation)


def _check_conv(x, values, meta, bias, kernel_size, stride, padding, dilation) -> tuple[int, int]:
    if not weight_is_checked(values, meta, bias):  # the CPU kernels remember a weight once checked
        _check_weight(values, meta, bias)
    _check_input(x, values, "conv2d input")
    return _conv_geometry(x, values, kernel_size, stride, padding, dilation)


def returns_channels_last(x: Tensor) -> bool:
    """The output follows the input: channels_last in, channels_last out (otherwise contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def patches(x_nhwc: Tensor, kernel_size, stride, padding, dilation, out_hw) -> Tensor:
    """im2col over an (N, H, W, C) tensor: (N*OH*OW, R*S*C) with C innermost, the weight's column
    order. A strided view of the (padded) input, copied once by reshape; a 1x1, stride-1,
    unpadded conv over a channels_last input is the input itself, no copy."""
    (ph, pw), (r, s) = padding, kernel_size
    if ph or pw:
        x_nhwc = F.pad(x_nhwc, (0, 0, pw, pw, ph, ph))
    n, _, _, c = x_nhwc.shape
    sn, sh, sw, sc = x_nhwc.stride()
    (oh, ow), (th, tw), (dh, dw) = out_hw, stride, dilation
    view = x_nhwc.as_strided((n, oh, ow, r, s, c), (sn, sh * th, sw * tw, sh * dh, sw * dw, sc))
    return view.reshape(n * oh * ow, r * s * c)


def patches_are_the_input(x_nhwc: Tensor, kernel_size, stride, padding) -> bool:
    """A 1x1, stride-1, unpadded conv over a contiguous (N, H, W, C) input (a channels_last tensor's,
    or one pixel's): its patch matrix is the input itself, read in place."""
    return (*kernel_size, *stride, *padding) == (1, 1, 1, 1, 0, 0) and x_nhwc.is_contiguous()


def implicit_im2col(x_nhwc: Tensor, values: Tensor, out_hw) -> bool:
    """Whether the conv runs by implicit im2col (the CPU large-N kernels pack straight from the
    input) rather than over an explicit patch matrix. The explicit one stays where those kernels do
    not run: few output pixels (the small-N kernels read a patch matrix), bfloat16 on CPUs with
    AVX-512 BF16 (its lane kernels), int8, and the GPU (cuSPARSELt takes a dense matrix). Asked only
    where the patches are not the input (patches_are_the_input: that conv needs neither)."""
    if x_nhwc.is_cuda:
        return False
    return large_n_regime(_arrays.dtype_name(values), x_nhwc.shape[0] * out_hw[0] * out_hw[1])


def _conv_gemm(x_nhwc: Tensor, values, meta, bias, kernel_size, stride, padding, dilation, out_hw) -> Tensor:
    """The conv as one GEMM, (N*OH*OW, K_out): over the input itself, by implicit im2col, or over the patches."""
    if patches_are_the_input(x_nhwc, kernel_size, stride, padding):
        cols = x_nhwc.view(-1, x_nhwc.shape[3])
    elif implicit_im2col(x_nhwc, values, out_hw):
        if x_nhwc.stride(3) != 1:  # channel runs contiguous: one copy of the input, 1/(R*S) of the patches
            x_nhwc = x_nhwc.contiguous()
        return conv2d_nhwc(x_nhwc, compressed(values, meta), bias, kernel_size, stride, padding, dilation)
    else:
        cols = patches(x_nhwc, kernel_size, stride, padding, dilation, out_hw)
    if x_nhwc.is_cuda:
        return _cuda_linear(cols, values, meta, bias)
    return run_torch_linear(cols, values, meta, bias, check_weight=_check_weight)  # x checked by the op


_LIB.define(
    "conv2d(Tensor x, Tensor values, Tensor meta, Tensor? bias, int[] kernel_size, int[] stride, "
    "int[] padding, int[] dilation) -> Tensor"
)


def conv2d(
    x: Tensor,
    values: Tensor,
    meta: Tensor,
    bias: Optional[Tensor],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> Tensor:
    """F.conv2d(x, W, bias, stride, padding, dilation) for a packed 2:4 weight W of shape
    (K_out, R*S*C), C innermost; groups=1, zero padding."""
    return torch.ops.pysparse24.conv2d(x, values, meta, bias, kernel_size, stride, padding, dilation)


@_implements("conv2d", "CPU", "CUDA")
def _conv2d(x, values, meta, bias, kernel_size, stride, padding, dilation):
    _refuse_grad(x, values, bias)
    oh, ow = _check_conv(x, values, meta, bias, kernel_size, stride, padding, dilation)
    y = _conv_gemm(x.permute(0, 2, 3, 1), values, meta, bias, kernel_size, stride, padding, dilation, (oh, ow))
    if oh == ow == 1 and not returns_channels_last(x):  # (N, K) is already the contiguous (N, K, 1, 1)
        return y.view(x.shape[0], values.shape[0], 1, 1)
    y = y.view(x.shape[0], oh, ow, values.shape[0]).permute(0, 3, 1, 2)  # channels_last strides
    if returns_channels_last(x):
        return y
    out = torch.empty(y.shape, dtype=y.dtype, device=y.device)
    return out.copy_(y)


@torch.library.register_fake("pysparse24::conv2d")
def _conv2d_fake(x, values, meta, bias, kernel_size, stride, padding, dilation):
    _refuse_grad(x, values, bias)
    oh, ow = _check_conv(x, values, meta, bias, kernel_size, stride, padding, dilation)
    fmt = torch.channels_last if returns_channels_last(x) else torch.contiguous_format
    return torch.empty(
        (x.shape[0], values.shape[0], oh, ow), dtype=result_dtype(values.dtype), device=x.device, memory_format=fmt
    )


# ---- CUDA: cuSPARSELt --------------------------------------------------------------------------


def gpu_dense_reason(values: Tensor) -> str | None:
    """Why this weight, on a GPU, runs as a dense GEMM of its decompressed matrix rather than on
    cuSPARSELt (None: it runs on cuSPARSELt). cuSPARSELt's shape rules (csrc/cuda/gemm_spec.cpp):
    the sparse matrix's rows and columns are multiples of 32 bytes' worth of elements."""
    if values.dtype == torch.float32:
        return "cuSPARSELt's float32 (TF32) sparsity is 1:2, not 2:4"
    return cusparselt_problem(values.shape[0], 2 * values.shape[1], values.element_size(), values.dtype)


# values tensor id -> (weakref to it, values._version, meta._version, prepared weight). The weakref
# makes a freed tensor's reused id a miss; the versions make an in-place update a miss.
_PREPARED: dict[int, tuple] = {}


def _prepared_weight(values: Tensor, meta: Tensor):
    """The weight as the GPU path uses it: a cuSPARSELt SparseMatrix, or the dense matrix."""
    key = id(values)
    entry = _PREPARED.get(key)
    if entry is not None and entry[0]() is values and entry[1:3] == (values._version, meta._version):
        return entry[3]
    prepared = pysparse24.decompress(compressed(values, meta))  # on the GPU (pysparse24.cuda.ops)
    if gpu_dense_reason(values) is None:
        from pysparse24.cuda import cusparselt

        prepared = cusparselt.SparseMatrix(prepared, check=False)  # decompress wrote a 2:4 matrix
    for stale in [k for k, e in _PREPARED.items() if e[0]() is None]:
        del _PREPARED[stale]
    _PREPARED[key] = (weakref.ref(values), values._version, meta._version, prepared)
    return prepared


def _cuda_linear(x: Tensor, values: Tensor, meta: Tensor, bias: Optional[Tensor]) -> Tensor:
    reason = gpu_dense_reason(values)
    if reason and values.dtype == torch.int8:  # torch has no general int8 GEMM on the GPU to fall back on
        raise ValueError(f"int8 sparse layers run on the GPU through cuSPARSELt only: {reason}")
    weight = _prepared_weight(values, meta)
    if reason:
        return F.linear(x, weight, bias)
    from pysparse24.cuda import cusparselt

    # The dense operand's rows and the output's columns are multiples of 16 bytes, and pointers
    # 16-byte aligned: pad the rows with zeros (into a fresh, aligned tensor) and drop them after.
    x2 = x.reshape(-1, x.shape[-1])
    n, padded = x2.shape[0], cusparselt_padded(x2.shape[0], values.element_size())
    if padded != n or x2.data_ptr() % 16:
        x2 = F.pad(x2, (0, 0, 0, padded - n))
    if values.dtype == torch.int8:  # int32 out; the wrapper's bias would be float32, so add it exactly here
        y = cusparselt.matmul(weight, x2, transpose_b=True, out_dtype="int32")[:, :n].t()
        y = y if bias is None else y + bias
    else:
        y = cusparselt.matmul(weight, x2, transpose_b=True, bias=bias)[:, :n].t()  # (M, n) -> (n, M)
    return y.contiguous().view(*x.shape[:-1], values.shape[0])
