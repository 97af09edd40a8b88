"""One definition per block: a LayerSpec -> a torch nn.Module, whose ONNX export is the graph that
ONNX Runtime and TensorRT consume. There is no second, hand-written ONNX definition to drift apart.

Notes for the table/builder and NAS code (what a spec's fields mean here):
- CHAIN SHAPES WITH output_shape(spec), not ceil(h / stride): a stride-2 fused_irb (GPUNet's
  EdgeResidual) maps 16 px to 7 px with k=3 (see fused_irb below); build_network() refuses a chain
  whose in_shapes disagree with output_shape().
- Blocks follow the published GPUNet modules (NVIDIA DeepLearningExamples, gpunet_modules.py):
  head      conv k x k, stride s (GPUNet: k=3, s=2), BN, act. GPUNet's default head act is swish
            when a config omits it; distill=True heads are ReLU-only (PrologueD).
  head_large  distill family stem: the head conv followed by two more k x k stride-1 ConvBnReLU.
  conv      ConvBnAct; NO residual (GPUNet builds it with skip=False).
  fused_irb EdgeResidual: k x k expand conv (stride s) + BN + act [+ SE] + 1x1 project + BN,
            residual when stride 1 and in == out. Quirk kept on purpose: GPUNet asks for TF "same"
            padding, which its trimmed timm helper turns into padding 0 at stride 2, so a stride-2
            fused_irb maps 160 px to 79 px, not 80. output_shape() reports what the module does.
  irb       InvertedResidual: 1x1 expand + dw k x k (stride s) + [SE] + 1x1 project, residual as above.
  tail      1x1 conv to out_channels + BN + act, global average pool, FC to 1000 classes
            (distill: EpilogueD, 1x1 conv to 1152 first). Its output (N, 1000) is reported as
            (N, 1000, 1, 1) by output_shape().
  distill=True selects the "D" family (Fused_IRB, Inverted_Residual_Block, PrologueD, ...): mid =
  C * expansion exactly, ReLU only, no SE, `groups` on the irb's 1x1 convs. spec.mid_channels is the
  one place the expansion rounding lives.
- Primitives: conv2d (Conv+BN+act, groups; timm's symmetric padding ((s-1)+(k-1))//2, as GPUNet's
  conv and irb use: k//2 for odd k at stride 1 or 2), dwconv2d (the same with groups = C),
  linear (input (N, C, 1, 1), output (N, out)), se (squeeze-excite on C channels, reduced width
  round(C * 0.25 / expansion), as inside an irb), avgpool / maxpool (k, s, padding (k-1)//2; act ignored).
- Single layers, as `advise` traces them in a user's model (act must be "none"): linear_only is one
  nn.Linear (with bias) on an (N, T, C) input, spec in_shape (N, C, T, 1), output (N, T, out) reported
  as (N, out, T, 1); conv2d_only is one nn.Conv2d (no bias; timm's symmetric padding, groups).
  input_shape_of(spec) is the tensor a block takes.
- BN is kept in the torch module (eval mode) and folded into the conv by the ONNX export.
- precision: the module is built in fp32; export_onnx() turns the precision into the graph
  (fp16 weights/activations, or int8 as explicit Q/DQ nodes), which is how TensorRT 10/11 and ONNX
  Runtime take reduced precision (bf16: the torch backend only). sparsity "2:4" prunes every
  conv/linear weight pysparse24.torch.sparsify can prune (input channels a multiple of 4, output
  channels of 8, not grouped) along the input channels, with sparsify's masks: what TensorRT's
  SPARSE_WEIGHTS needs, and what pysparse24.torch.to_sparse_ converts (the torch backend runs 2:4
  specs through it; pruned weights alone run at dense speed). A network may mix dense and 2:4 blocks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .spec import BLOCK_OPS, LayerSpec

TAIL_CLASSES = 1000  # every published GPUNet is an ImageNet-1k classifier
TAIL_D_WIDTH = 1152  # EpilogueD's first 1x1 conv
ONNX_OPSET = 17  # parsed by TensorRT 10/11 and ONNX Runtime >= 1.14
SE_RATIO = 0.25


# ---------------------------------------------------------------------------------------------
# Geometry: the padding each op uses; shared by the modules and by output_shape().


def _symmetric_pad(kernel: int, stride: int) -> int:
    """timm's get_padding(): PyTorch-style symmetric padding."""
    return ((stride - 1) + (kernel - 1)) // 2


def _strided_conv_pad(spec: LayerSpec) -> int:
    """Padding of the op that carries the spec's kernel and stride."""
    k, s = spec.kernel, spec.stride
    if spec.op in ("head", "head_large") or spec.distill:
        return k // 2
    if spec.op == "fused_irb":
        # EdgeResidual asks for "same": static (k-1)//2 at stride 1, silently 0 at stride 2.
        return (k - 1) // 2 if s == 1 else 0
    if spec.op in ("avgpool", "maxpool"):
        return (k - 1) // 2
    return _symmetric_pad(k, s)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def input_shape_of(spec: LayerSpec) -> tuple[int, ...]:
    """The tensor the block takes: its in_shape, except linear_only's (N, T, C) tokens."""
    n, c, h, w = spec.in_shape
    return (n, h * w, c) if spec.op == "linear_only" else spec.in_shape


def output_shape(spec: LayerSpec) -> tuple[int, int, int, int]:
    """(N, C, H, W) the block produces: the in_shape of the next block of a network."""
    _check(spec)
    n, _, h, w = spec.in_shape
    if spec.op in ("tail",):
        return (n, TAIL_CLASSES, 1, 1)
    if spec.op in ("linear", "linear_only"):
        return (n, spec.out_channels, h, w)
    if spec.op == "se":
        return spec.in_shape
    pad = _strided_conv_pad(spec)
    return (
        n,
        spec.out_channels,
        _conv_out(h, spec.kernel, spec.stride, pad),
        _conv_out(w, spec.kernel, spec.stride, pad),
    )


# ---------------------------------------------------------------------------------------------
# Validation: combinations the published modules do not define are refused, not guessed.


def _check(spec: LayerSpec) -> None:
    if not isinstance(spec, LayerSpec):
        raise TypeError(f"expected a LayerSpec, got {type(spec).__name__}")
    _, c, h, w = spec.in_shape
    problems = []
    if spec.distill and spec.act != "relu":
        problems.append("distill (GPUNet 'D') blocks are ReLU-only")
    if spec.distill and spec.se:
        problems.append("distill (GPUNet 'D') blocks have no SE")
    if spec.se and spec.op not in ("fused_irb", "irb"):
        problems.append("se=True exists only on fused_irb / irb")
    if spec.groups != 1:
        g = spec.groups
        if not (spec.op in ("conv2d", "conv2d_only") or (spec.op == "irb" and spec.distill)):
            problems.append("groups > 1 exists only on conv2d, conv2d_only and distill irb blocks")
        elif c % g or spec.out_channels % g or (spec.op == "irb" and spec.mid_channels % g):
            problems.append(f"groups={g} must divide the in/mid/out channels")
    if spec.op in ("avgpool", "maxpool", "se") and spec.out_channels != c:
        problems.append(f"{spec.op} keeps the channel count: out_channels must be {c}")
    if spec.op == "dwconv2d" and spec.out_channels % c:
        problems.append(f"dwconv2d out_channels must be a multiple of in channels {c}")
    if spec.op in BLOCK_OPS and spec.kernel % 2 == 0:
        problems.append(f"GPUNet blocks take odd kernels (3, 5, 7), got {spec.kernel}")
    if spec.op == "linear" and (h, w) != (1, 1):
        problems.append("linear takes an (N, C, 1, 1) input")
    if spec.op in ("linear_only", "conv2d_only") and spec.act != "none":
        problems.append(f"{spec.op} is the layer alone: act must be 'none'")
    if spec.op == "linear_only" and (w, spec.kernel, spec.stride) != (1, 1, 1):
        problems.append("linear_only takes in_shape (N, C, T, 1) for T tokens, kernel 1, stride 1")
    if spec.op not in ("linear", "linear_only", "se", "tail") and min(h, w) + 2 * _strided_conv_pad(spec) < spec.kernel:
        problems.append(f"kernel {spec.kernel} is larger than the padded {h}x{w} input")
    if problems:
        raise ValueError(f"unsupported block {spec.key()}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Modules.


def _act(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "swish": nn.SiLU(), "none": nn.Identity()}[name]


def _conv_bn_act(c_in, c_out, k, s, pad, act, eps, groups=1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, s, pad, groups=groups, bias=False), nn.BatchNorm2d(c_out, eps=eps), _act(act)
    )


class SqueezeExcite(nn.Module):
    """GPUNet/timm SE: global mean -> 1x1 reduce -> act -> 1x1 expand -> sigmoid gate."""

    def __init__(self, channels: int, reduced: int, act: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = _act(act)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x):
        s = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class Residual(nn.Module):
    """body(x) + x when the block keeps its shape (stride 1, in == out), else body(x)."""

    def __init__(self, body: nn.Module, use_shortcut: bool):
        super().__init__()
        self.body = body
        self.use_shortcut = use_shortcut

    def forward(self, x):
        y = self.body(x)
        return y + x if self.use_shortcut else y


def _se_reduced(channels: int, expansion: float) -> int:
    # GPUNet: rd_ratio = 0.25 / exp_ratio applied to the expanded width, i.e. ~ in_chs / 4.
    return max(1, round(channels * (SE_RATIO / expansion)))


def _block(spec: LayerSpec) -> nn.Module:
    n, c, h, w = spec.in_shape
    k, s, out, act = spec.kernel, spec.stride, spec.out_channels, spec.act
    pad = _strided_conv_pad(spec)
    mid = spec.mid_channels
    # GPUNet's non-D modules use BN eps 1e-3; the D family keeps PyTorch's 1e-5 (except Fused_IRB).
    eps = 1e-5 if spec.distill and spec.op != "fused_irb" else 1e-3
    shortcut = s == 1 and c == out

    if spec.op == "head":
        return _conv_bn_act(c, out, k, s, pad, act, eps)
    if spec.op == "head_large":
        return nn.Sequential(
            _conv_bn_act(c, out, k, s, pad, act, eps),
            _conv_bn_act(out, out, k, 1, k // 2, act, eps),
            _conv_bn_act(out, out, k, 1, k // 2, act, eps),
        )
    if spec.op in ("conv", "conv2d"):
        return _conv_bn_act(c, out, k, s, pad, act, eps, groups=spec.groups)
    if spec.op == "dwconv2d":
        return _conv_bn_act(c, out, k, s, pad, act, eps, groups=c)
    if spec.op == "fused_irb":
        layers = [_conv_bn_act(c, mid, k, s, pad, act, eps)]
        if spec.se:
            layers.append(SqueezeExcite(mid, _se_reduced(mid, spec.expansion), act))
        layers.append(_conv_bn_act(mid, out, 1, 1, 0, "none", eps))
        return Residual(nn.Sequential(*layers), shortcut)
    if spec.op == "irb":
        g = spec.groups
        layers = [
            _conv_bn_act(c, mid, 1, 1, 0, act, eps, groups=g),
            _conv_bn_act(mid, mid, k, s, pad, act, eps, groups=mid),
        ]
        if spec.se:
            layers.append(SqueezeExcite(mid, _se_reduced(mid, spec.expansion), act))
        layers.append(_conv_bn_act(mid, out, 1, 1, 0, "none", eps, groups=g))
        return Residual(nn.Sequential(*layers), shortcut)
    if spec.op == "tail":
        if spec.distill:  # EpilogueD
            return nn.Sequential(
                _conv_bn_act(c, TAIL_D_WIDTH, 1, 1, 0, "relu", eps),
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(TAIL_D_WIDTH, out, 1, bias=False),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(out, TAIL_CLASSES),
            )
        return nn.Sequential(
            _conv_bn_act(c, out, 1, 1, 0, act, eps), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(out, TAIL_CLASSES)
        )
    if spec.op == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(c, out), _act(act))
    if spec.op == "linear_only":
        return nn.Linear(c, out)
    if spec.op == "conv2d_only":
        return nn.Conv2d(c, out, k, s, pad, groups=spec.groups, bias=False)
    if spec.op == "se":
        return SqueezeExcite(c, _se_reduced(c, spec.expansion), act)
    if spec.op == "avgpool":
        return nn.AvgPool2d(k, s, pad, count_include_pad=False)
    if spec.op == "maxpool":
        return nn.MaxPool2d(k, s, pad)
    raise ValueError(f"no block definition for op {spec.op!r}")


def _randomize_batchnorm(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics, so that folding BN into the conv is actually exercised."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            c = bn.num_features
            bn.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            bn.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            bn.weight.data.copy_(0.5 + torch.rand(c, generator=gen))
            bn.bias.data.copy_(0.1 * torch.randn(c, generator=gen))


def _prune_2_4(module: nn.Module) -> None:
    """2:4 along input channels with the masks `pysparse24.torch.sparsify` makes (magnitude), folded
    into the weights: the layers it skips (depthwise, out channels not a multiple of 8) are those no
    sparse kernel would run either."""
    from pysparse24.torch import finalize, sparsify

    sparsify(module, "2:4", progress=False)
    finalize(module)


def build_module(spec: LayerSpec, seed: int | None = 0) -> nn.Module:
    """The block as an eval-mode fp32 torch module (deterministic weights for a given seed)."""
    _check(spec)
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        module = _block(spec)
    with torch.no_grad():
        _randomize_batchnorm(module, gen)
        if spec.sparsity == "2:4":
            _prune_2_4(module)
    return module.eval()


def check_network(specs: Sequence[LayerSpec]) -> list[LayerSpec]:
    """A network is a non-empty chain of specs, each taking the previous one's output shape."""
    specs = list(specs)
    if not specs:
        raise ValueError("a network needs at least one LayerSpec")
    for i, (a, b) in enumerate(zip(specs, specs[1:])):
        if output_shape(a) != b.in_shape:
            raise ValueError(
                f"network layer {i + 1} expects input {b.in_shape}, but layer {i} ({a.op}) produces {output_shape(a)}"
            )
        if a.precision != b.precision:  # sparsity may differ: a NAS candidate runs some stages 2:4
            raise ValueError(f"network layers {i} and {i + 1} mix precisions")
    for spec in specs[:-1]:
        if spec.op in ("tail", "linear", "linear_only"):
            raise ValueError(f"{spec.op} produces no (N, C, H, W) output: it can only be a network's last layer")
    return specs


def build_network(specs: Sequence[LayerSpec], seed: int | None = 0) -> nn.Sequential:
    """The chained blocks as one eval-mode module (layer i seeded with seed + i)."""
    specs = check_network(specs)
    base = 0 if seed is None else seed
    return nn.Sequential(*(build_module(s, base + i) for i, s in enumerate(specs))).eval()


# ---------------------------------------------------------------------------------------------
# ONNX.


def _resolve(obj, input_shape, precision):
    """(module, input shape, precision) for a module, a LayerSpec or a sequence of LayerSpecs."""
    if isinstance(obj, nn.Module):
        if input_shape is None:
            raise ValueError("export_onnx(module, ...) needs input_shape")
        return obj, tuple(input_shape), precision or "fp32"
    if isinstance(obj, LayerSpec):
        obj = [obj]
    specs = check_network(obj)
    if input_shape is not None and tuple(input_shape) != input_shape_of(specs[0]):
        raise ValueError(f"input_shape {tuple(input_shape)} disagrees with the spec's {specs[0].in_shape}")
    if precision is not None and precision != specs[0].precision:
        raise ValueError(f"precision {precision!r} disagrees with the spec's {specs[0].precision!r}")
    module = build_module(specs[0]) if len(specs) == 1 else build_network(specs)
    return module, input_shape_of(specs[0]), specs[0].precision


def random_input(shape, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """A fresh standard-normal input (never zeros: some kernels shortcut them)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def export_onnx(
    module_or_specs, path: str | os.PathLike | None = None, input_shape=None, precision: str | None = None
) -> bytes:
    """Export to ONNX (opset 17, BN folded, input 'input', output 'output'); returns the bytes and
    writes them to `path` when given. fp16 exports a half-precision graph; int8 adds explicit Q/DQ
    nodes (per-channel weights, activations calibrated on random inputs) via ONNX Runtime's
    quantization tool: the form TensorRT 10/11 and ONNX Runtime both run as int8."""
    module, shape, precision = _resolve(module_or_specs, input_shape, precision)
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    module = module.to(dtype).eval()
    x = torch.from_numpy(random_input(shape)).to(dtype)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript and
        # produces the same Conv/Gemm graph; this one is dependency-free and folds BN in eval mode.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (x,),
            buf,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
            do_constant_folding=True,
        )
    data = buf.getvalue()
    if precision == "int8":
        data = _quantize_qdq(data, shape)
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs 'consider pre-processing' on the root logger for every model."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize_qdq(fp32_onnx: bytes, input_shape) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class RandomInputs(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{"input": random_input(input_shape, seed=i)} for i in range(4)])

        def get_next(self):
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(fp32_onnx)
        # Symmetric int8 for weights and activations: what TensorRT's explicit quantization takes.
        quantize_static(
            src,
            dst,
            RandomInputs(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        with open(dst, "rb") as f:
            return f.read()
