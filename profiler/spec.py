"""LayerSpec: one layer (or GPUNet block) configuration, and its canonical key.

The key is the single currency between the profiler, the latency table and NAS: build -> measure ->
store under key; NAS decodes a candidate into specs -> keys -> lookups. It is human-readable, fully
determined by the fields (no repr, no dict ordering, no float formatting surprises), and its hash is
a plain SHA-256 prefix, so equal configs give equal keys in every process and version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from pysparse24.dtypes import PRECISIONS  # noqa: F401 - the table precisions, re-exported for profiler

# GPUNet block types and primitive ops. Block semantics follow ../shared/data/gpunet.
BLOCK_OPS = ("head", "head_large", "conv", "fused_irb", "irb", "tail")
PRIMITIVE_OPS = ("conv2d", "dwconv2d", "linear", "se", "avgpool", "maxpool")
# One torch nn.Linear / nn.Conv2d alone (no BN, no activation): the layers `advise` traces in a model.
LAYER_OPS = ("linear_only", "conv2d_only")
OPS = BLOCK_OPS + PRIMITIVE_OPS + LAYER_OPS
ACTIVATIONS = ("relu", "swish", "none")
SPARSITIES = ("dense", "2:4")

KEY_VERSION = "v1"


def _fmt_number(x: float) -> str:
    """Canonical number text: integers without a decimal point, others with up to 6 significant digits."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.6g}"


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never more than 10% down (timm/GPUNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class LayerSpec:
    """One measurable layer: what it is, and the input it sees.

    in_shape is (N, C, H, W); a linear layer uses (N, C, 1, 1), a linear_only layer (N, C, T, 1) for an
    (N, T, C) input of T tokens. `expansion` is the GPUNet expansion
    ratio (mid channels = round(C * expansion)) and may be fractional. `groups` > 1 is a grouped conv
    (GPUNet's "D" family); `distill` selects the "D" module family for fused_irb/irb blocks.
    """

    op: str
    in_shape: tuple[int, int, int, int]
    out_channels: int
    kernel: int = 1
    stride: int = 1
    expansion: float = 1.0
    se: bool = False
    act: str = "relu"
    groups: int = 1
    distill: bool = False
    precision: str = "fp32"
    sparsity: str = "dense"

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.in_shape)
        object.__setattr__(self, "in_shape", shape)
        object.__setattr__(self, "expansion", float(self.expansion))
        problems = []
        if self.op not in OPS:
            problems.append(f"op {self.op!r} is not one of {OPS}")
        if len(shape) != 4 or any(v <= 0 for v in shape):
            problems.append(f"in_shape must be four positive ints (N, C, H, W), got {self.in_shape}")
        if self.out_channels <= 0:
            problems.append(f"out_channels must be positive, got {self.out_channels}")
        if self.kernel <= 0 or self.stride <= 0 or self.groups <= 0:
            problems.append("kernel, stride and groups must be positive")
        if self.expansion <= 0:
            problems.append(f"expansion must be positive, got {self.expansion}")
        if self.act not in ACTIVATIONS:
            problems.append(f"act {self.act!r} is not one of {ACTIVATIONS}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.sparsity not in SPARSITIES:
            problems.append(f"sparsity {self.sparsity!r} is not one of {SPARSITIES}")
        if problems:
            raise ValueError("invalid LayerSpec: " + "; ".join(problems))

    @property
    def batch(self) -> int:
        return self.in_shape[0]

    @property
    def mid_channels(self) -> int:
        """Channels after expansion, exactly as the published GPUNet modules compute them.

        The "D" family (distill=True: Fused_IRB, Inverted_Residual_Block) uses C * expansion as is;
        the others (EdgeResidual, InvertedResidual) round it to a multiple of 8 (timm's
        make_divisible), e.g. 704 * 3.82 -> 2688, not 2689. Parameter and MAC counts depend on it.
        """
        exact = self.in_shape[1] * self.expansion
        if self.distill:
            return int(round(exact))
        return make_divisible(exact)

    def key(self) -> str:
        """Canonical, human-readable key, e.g. 'v1|irb|in=1x64x56x56|out=96|k=5|s=2|e=4|se=1|act=swish|g=1|d=0|fp16|2:4'."""
        n, c, h, w = self.in_shape
        return "|".join(
            [
                KEY_VERSION,
                self.op,
                f"in={n}x{c}x{h}x{w}",
                f"out={self.out_channels}",
                f"k={self.kernel}",
                f"s={self.stride}",
                f"e={_fmt_number(self.expansion)}",
                f"se={int(self.se)}",
                f"act={self.act}",
                f"g={self.groups}",
                f"d={int(self.distill)}",
                self.precision,
                self.sparsity,
            ]
        )

    def key_hash(self) -> str:
        """Stable 16-hex-digit hash of key() (SHA-256 prefix; never Python's salted hash())."""
        return hashlib.sha256(self.key().encode()).hexdigest()[:16]

    @classmethod
    def from_key(cls, key: str) -> "LayerSpec":
        parts = key.split("|")
        if len(parts) != 13 or parts[0] != KEY_VERSION:
            raise ValueError(f"not a {KEY_VERSION} LayerSpec key: {key!r}")
        fields = dict(p.split("=", 1) for p in parts[2:11])
        try:
            shape = tuple(int(v) for v in fields["in"].split("x"))
            return cls(
                op=parts[1],
                in_shape=shape,
                out_channels=int(fields["out"]),
                kernel=int(fields["k"]),
                stride=int(fields["s"]),
                expansion=float(fields["e"]),
                se=fields["se"] == "1",
                act=fields["act"],
                groups=int(fields["g"]),
                distill=fields["d"] == "1",
                precision=parts[11],
                sparsity=parts[12],
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"malformed LayerSpec key {key!r}: {exc}") from None

    def replace(self, **changes) -> "LayerSpec":
        return dataclasses.replace(self, **changes)
