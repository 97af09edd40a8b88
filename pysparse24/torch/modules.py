"""SparseLinear and SparseConv2d: inference modules holding a 2:4 weight as values + metadata only.

    sparse = SparseLinear.from_dense(linear)   # nn.Linear whose weight is 2:4 along in_features
    sparse = SparseConv2d.from_dense(conv)     # nn.Conv2d, 2:4 along the input channels
    y = sparse(x)                              # torch.ops.pysparse24.linear / conv2d

`from_dense` takes a module whose weight already satisfies 2:4, or one `sparsify` pruned (its
FixedMask parametrization gives the pruned weight). The buffers are `values` and `meta` (the
"packed" format, docs/FORMATS.md) and `bias`; nothing else is saved with the state_dict.

A conv weight (K, C, R, S) is stored as the (K, R*S*C) matrix with C innermost, so its groups of
four are the input-channel groups `sparsify` masks. The forward pass is one GEMM over the im2col
patches of the channels_last input (N*OH*OW rows); for a 1x1, stride-1, unpadded conv on a
channels_last input those patches are the input itself, and where the CPU's large-N kernels run
they are never written (implicit im2col: ops.implicit_im2col). A channels_last input gives a
channels_last output. Grouped and depthwise convs have no GEMM over C to make sparse (each output
channel sees C/groups inputs, for depthwise one): they stay dense.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

import pysparse24
from pysparse24.dtypes import canonical
from pysparse24.formats import check_dense_shape
from pysparse24.groups import packed_k_problem
from pysparse24.torch import ops
from pysparse24.torch.permutation import channels_last_matrix
from pysparse24.torch.sparsify import ineligibility as sparsify_ineligibility

GROUP = 4  # the m of 2:4


def layer_type(module: nn.Module) -> type:
    """The module's own class, seeing through the subclass `sparsify`'s parametrization creates."""
    cls = type(module)
    return cls.__bases__[0] if parametrize.is_parametrized(module) else cls


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The (rows, reduction) matrix the sparse GEMM uses: a Linear weight as is, a conv weight
    (K, C, R, S) as (K, R*S*C) with C innermost. The pruned weight for a `sparsify`'d module."""
    w = module.weight.detach()
    return channels_last_matrix(w).reshape(w.shape[0], -1)


def _conv_padding(module: nn.Conv2d) -> tuple[int, int] | None:
    """Symmetric zero padding as two integers, or None when the conv pads asymmetrically."""
    if module.padding == "valid":
        return 0, 0
    if module.padding == "same":
        totals = [d * (k - 1) for k, d in zip(module.kernel_size, module.dilation)]
        return None if any(t % 2 for t in totals) else (totals[0] // 2, totals[1] // 2)
    return tuple(module.padding)


def ineligibility(module: nn.Module) -> str | None:
    """Why `module` cannot become a sparse module, judged on its structure (None when it can)."""
    if layer_type(module) not in (nn.Linear, nn.Conv2d):
        # Subclasses too: their owner may use the weight without calling forward (MultiheadAttention's out_proj).
        return f"{layer_type(module).__name__} has no sparse module (nn.Linear and nn.Conv2d do)"
    reason = sparsify_ineligibility(module, GROUP)
    if reason:
        return reason
    if module.weight.dtype not in ops.DTYPES:
        return f"dtype {module.weight.dtype} has no sparse kernel (float32, bfloat16, int8 do)"
    if module.bias is not None and module.bias.dtype != ops.result_dtype(module.weight.dtype):
        return f"bias is {module.bias.dtype}; a {module.weight.dtype} weight needs a {ops.result_dtype(module.weight.dtype)} bias"
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (the sparse conv pads with zeros only)"
        if _conv_padding(module) is None:
            return "padding='same' with an even (dilated) kernel pads asymmetrically"
    return packed_k_problem(weight_matrix(module).shape[1])


def first_bad_group(module: nn.Module) -> str | None:
    """Where the weight breaks 2:4 along its input channels: the first group of four with more than
    two non-zeros, as "output channel k, group g (...)"; None when the weight is 2:4."""
    w = weight_matrix(module)
    if pysparse24.is_sparse(w):  # the common case, decided in C++ without temporaries
        return None
    counts = (w.reshape(w.shape[0], -1, GROUP) != 0).sum(-1)
    bad = (counts > 2).nonzero()
    if not len(bad):
        return None
    row, group = (int(v) for v in bad[0])
    where = f"input features {GROUP * group}..{GROUP * group + 3}"
    if isinstance(module, nn.Conv2d):
        per_position = module.in_channels // GROUP
        r, s = divmod(group // per_position, module.kernel_size[1])
        c = GROUP * (group % per_position)
        where = f"input channels {c}..{c + 3} at kernel position ({r}, {s})"
    return f"output channel {row}, group {group} ({where}) has {int(counts[row, group])} non-zeros; 2:4 allows 2"


def blocker(module: nn.Module) -> str | None:
    """Why `module` cannot be converted (structure first, then its values), or None."""
    return ineligibility(module) or first_bad_group(module)


def kernel_name(module: nn.Module) -> str:
    """What runs a converted layer's forward pass, for reports."""
    if isinstance(module, SparseConv2d):
        r, s = module.kernel_size
        base = (
            "1x1 conv: GEMM over N*H*W"
            if (r, s) == (1, 1)
            else f"{r}x{s} conv: im2col GEMM (implicit on the CPU's large-N kernels)"
        )
    else:
        base = "GEMM"
    if not module.values.is_cuda:
        return f"{base}, pysparse24.linear (CPU)"
    reason = ops.gpu_dense_reason(module.values)
    return f"{base}, cuSPARSELt" if reason is None else f"{base}, dense on the GPU: {reason}"


class _SparseModule(nn.Module):
    """Buffers shared by both modules: the packed weight and the bias."""

    def __init__(self, rows: int, reduction: int, bias: bool, dtype: torch.dtype, device=None):
        super().__init__()
        if dtype not in ops.DTYPES:
            raise TypeError(f"dtype {dtype} has no sparse kernel (float32, bfloat16, int8 do)")
        check_dense_shape((rows, reduction), "packed", canonical(dtype))
        self.register_buffer("values", torch.zeros(rows, reduction // 2, dtype=dtype, device=device))
        # Code 0x4 (kept positions 0 and 1) in both nibbles: a valid all-zero weight until loaded.
        self.register_buffer("meta", torch.full((rows, reduction // 8), 0x44, dtype=torch.uint8, device=device))
        self.register_buffer("bias", torch.zeros(rows, dtype=ops.result_dtype(dtype), device=device) if bias else None)

    def _load(self, module: nn.Module) -> None:
        reason = blocker(module)
        if reason:
            raise ValueError(f"cannot convert {layer_type(module).__name__} {tuple(module.weight.shape)}: {reason}")
        c = pysparse24.compress(weight_matrix(module).contiguous())
        with torch.no_grad():
            self.values.copy_(c.values)
            self.meta.copy_(c.meta)
            if self.bias is not None:
                self.bias.copy_(module.bias.detach())

    def compressed(self) -> pysparse24.Compressed:
        return ops.compressed(self.values, self.meta)


class SparseLinear(_SparseModule):
    """nn.Linear's forward, y = x @ W.T + bias, with W 2:4 along in_features (inference only)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=torch.float32, device=None):
        super().__init__(out_features, in_features, bias, dtype, device)
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_dense(cls, module: nn.Linear) -> SparseLinear:
        if layer_type(module) is not nn.Linear:
            raise TypeError(f"SparseLinear.from_dense expects an nn.Linear, got {layer_type(module).__name__}")
        sparse = cls(
            module.in_features, module.out_features, module.bias is not None, module.weight.dtype, module.weight.device
        )
        sparse._load(module)
        return sparse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.pysparse24.linear(x, self.values, self.meta, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"dtype={self.values.dtype}"
        )


class SparseConv2d(_SparseModule):
    """nn.Conv2d's forward (groups=1, zero padding) with the weight 2:4 along the input channels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias: bool = True,
        dtype=torch.float32,
        device=None,
    ):
        kernel_size, stride, padding, dilation = (
            nn.modules.utils._pair(v) for v in (kernel_size, stride, padding, dilation)
        )
        super().__init__(out_channels, kernel_size[0] * kernel_size[1] * in_channels, bias, dtype, device)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation

    @classmethod
    def from_dense(cls, module: nn.Conv2d) -> SparseConv2d:
        if layer_type(module) is not nn.Conv2d:
            raise TypeError(f"SparseConv2d.from_dense expects an nn.Conv2d, got {layer_type(module).__name__}")
        reason = ineligibility(module)
        if reason:
            raise ValueError(f"cannot convert Conv2d {tuple(module.weight.shape)}: {reason}")
        sparse = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            _conv_padding(module),
            module.dilation,
            module.bias is not None,
            module.weight.dtype,
            module.weight.device,
        )
        sparse._load(module)
        return sparse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.pysparse24.conv2d(
            x, self.values, self.meta, self.bias, self.kernel_size, self.stride, self.padding, self.dilation
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
            f"dtype={self.values.dtype}"
        )
