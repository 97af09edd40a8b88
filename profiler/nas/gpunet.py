"""Import the published GPUNet network configs (NVIDIA DeepLearningExamples JSON) as LayerSpec lists.

A config is a JSON list of layer dicts; the first is {"layer_type": "data", "img_resolution": R,
"distill": bool}. `distill: true` selects the "D" module family (GPUNet-D1/D2: PrologueD, Inverted_
Residual_Block with `groups`, EpilogueD), mirrored by LayerSpec.distill. The defaults below are the
published builder's (gpunet_builder.py): a head without "act" is swish, a tail is ReLU, and the D
family is ReLU-only without SE.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..spec import LayerSpec

# Published name -> config file (DeepLearningExamples configs/batch1/GV100).
GPUNET_MODELS = {
    "GPUNet-0": "0.65ms.json",
    "GPUNet-1": "0.85ms.json",
    "GPUNet-2": "1.75ms.json",
    "GPUNet-P0": "0.5ms-D.json",
    "GPUNet-P1": "0.8ms-D.json",
    "GPUNet-D1": "1.25ms-D.json",
    "GPUNet-D2": "2.25ms-D.json",
}
_NUM_CLASSES = 1000  # profiler.blocks' tail is an ImageNet-1k classifier, as every published GPUNet
CONFIG_DIR = Path(__file__).parent / "configs"  # the seven published files, shipped with the package


def _layer_spec(layer: dict, distill: bool, shape: tuple[int, int, int, int], context: dict) -> LayerSpec:
    kind = layer["layer_type"]
    common = dict(in_shape=shape, out_channels=int(layer["num_out_channels"]), distill=distill, **context)
    if kind in ("head", "head_large"):
        if kind == "head_large" and not distill:
            raise ValueError("head_large exists only in distill (D) configs")
        act = "relu" if distill else layer.get("act", "swish")
        return LayerSpec(op=kind, kernel=3, stride=2, act=act, **common)
    if kind == "tail":
        if int(layer.get("num_classes", _NUM_CLASSES)) != _NUM_CLASSES:
            raise ValueError(f"tail num_classes={layer['num_classes']}: the blocks build {_NUM_CLASSES}-class heads")
        return LayerSpec(op="tail", act="relu", **common)
    if kind == "conv":
        return LayerSpec(
            op="conv", kernel=int(layer["kernel_size"]), stride=int(layer["stride"]), act=layer["act"], **common
        )
    if kind in ("irb", "fused_irb"):
        return LayerSpec(
            op=kind,
            kernel=int(layer["kernel_size"]),
            stride=int(layer["stride"]),
            expansion=float(layer["expansion"]),
            groups=int(layer.get("groups", 1)),
            se=False if distill else bool(layer.get("use_se", False)),
            act="relu" if distill else layer["act"],
            **common,
        )
    raise ValueError(f"unknown layer_type {kind!r}")


def load_gpunet_config(
    path: str | Path, batch: int = 1, precision: str = "fp32", sparsity: str = "dense"
) -> list[LayerSpec]:
    """A published GPUNet JSON config (a path, or a model name such as "GPUNet-0") -> its blocks as
    LayerSpecs, input shapes chained from the data layer's resolution with profiler.blocks.output_shape
    (the modules' own geometry)."""
    from ..blocks import output_shape

    path = CONFIG_DIR / GPUNET_MODELS[str(path)] if str(path) in GPUNET_MODELS else Path(path)
    try:
        layers = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(layers, list) or not layers or layers[0].get("layer_type") != "data":
        raise ValueError(f"{path}: a GPUNet config is a JSON list starting with a 'data' layer")
    data = layers[0]
    if "distill" not in data or "img_resolution" not in data:
        raise ValueError(f"{path}: the data layer needs 'img_resolution' and 'distill'")
    res = int(data["img_resolution"])
    distill = bool(data["distill"])
    context = dict(precision=precision, sparsity=sparsity)
    shape = (batch, 3, res, res)
    specs = []
    for i, layer in enumerate(layers[1:], start=1):
        where = f"{path.name} layer {i}"
        if "layer_type" not in layer or "num_out_channels" not in layer:
            raise ValueError(f"{where}: needs 'layer_type' and 'num_out_channels'")
        if int(layer.get("num_in_channels", shape[1])) != shape[1]:
            raise ValueError(
                f"{where}: num_in_channels={layer['num_in_channels']} but the previous layer "
                f"produces {shape[1]} channels"
            )
        try:
            spec = _layer_spec(layer, distill, shape, context)
        except KeyError as exc:
            raise ValueError(f"{where} ({layer['layer_type']}): missing field {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        specs.append(spec)
        shape = output_shape(spec)
    return specs
