"""Export a sparsified model: ONNX for TensorRT (`trtexec --onnx=... --sparsity=enable`) with the
2:4 pattern verified in the written file, and .safetensors for `pysparse24 compress` (no pickle)."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import pysparse24
from pysparse24._files import atomic_output
from pysparse24.groups import splits_into_groups
from pysparse24.torch.sparsify import finalize, sparse_layers


def _deployable_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy with the masks folded into plain weights; the names of the pruned layers."""
    deployable = copy.deepcopy(model)
    pruned = [name for name, _, _ in sparse_layers(deployable)]
    finalize(deployable)
    return deployable.eval(), pruned


@dataclass(frozen=True)
class OnnxWeight:
    node: str  # ONNX node name, e.g. "/features/conv2/Conv"
    op: str  # Conv | Gemm | MatMul
    initializer: str
    shape: tuple[int, ...]
    input_axis: int  # the axis holding the input channels (the 2:4 groups run along it)
    is_2to4: bool


def _input_channel_axis(node, initializer_rank: int) -> int:
    """Where the input channels are in a weight initializer: Conv W (K, C, ...) -> 1; Gemm B is
    (in, out) unless transB=1; MatMul's constant right operand is (in, out)."""
    if node.op_type == "Conv":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 1 if trans_b else 0
    return initializer_rank - 2


def onnx_weights(path) -> list[OnnxWeight]:
    """Every Conv / Gemm / MatMul weight stored as an initializer in the ONNX file, and whether it is
    2:4 along its input channels."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        init = initializers.get(node.input[1])
        if init is None:
            continue
        weight = numpy_helper.to_array(init)
        axis = _input_channel_axis(node, weight.ndim)
        sparse = splits_into_groups(weight.shape[axis], 4) and pysparse24.is_sparse(
            np.ascontiguousarray(weight), 2, 4, dim=axis
        )
        found.append(OnnxWeight(node.name, node.op_type, init.name, tuple(weight.shape), axis, bool(sparse)))
    return found


def _module_of_node(node_name: str) -> str:
    """The module a node of the legacy exporter comes from. Its scopes name a child of a container
    (Sequential, ModuleList, ModuleDict) with the container's scope as a prefix, a child of any other
    module by its bare name: "/features/conv2/Conv" -> "features.conv2", "/2/2.0/2.0.0/Conv" -> "2.0.0",
    "/1/body/body.0/body.0.0/Conv" -> "1.body.0.0"."""
    parts, previous = [], None
    for scope in node_name.strip("/").split("/")[:-1]:
        parts.append(scope[len(previous) + 1 :] if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    return ".".join(parts)


def verify_onnx_sparsity(path, pruned_layers) -> list[OnnxWeight]:
    """Check that the weight of every layer in `pruned_layers` (module names) is 2:4 along its input
    channels in the ONNX file. Raises ValueError naming the layers that are missing or not 2:4."""
    weights = onnx_weights(path)
    by_module = {_module_of_node(w.node): w for w in weights}
    missing = [name for name in pruned_layers if name not in by_module]
    dense = [name for name in pruned_layers if name in by_module and not by_module[name].is_2to4]
    if missing or dense:
        raise ValueError(f"{path}: weights not found for {missing}; not 2:4 along input channels: {dense}")
    return weights


def export_onnx(model: nn.Module, example_input, path, opset: int = 17) -> list[OnnxWeight]:
    """Write `model` (sparsified or not) to ONNX with its pruned weights as plain 2:4 initializers,
    then read the file back and verify them (see `verify_onnx_sparsity`). The model is not changed.

    Uses PyTorch's TorchScript-based exporter (dynamo=False), which needs no extra package. In eval
    mode it folds BatchNorm into the preceding Conv; that scales whole output channels, so the zeros
    of the 2:4 pattern survive."""
    deployable, pruned = _deployable_copy(model)
    with atomic_output(path) as partial:  # only a verified file gets the real name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter": chosen on purpose, see above
            torch.onnx.export(
                deployable,
                (example_input,),
                str(partial),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        weights = verify_onnx_sparsity(partial, pruned)
    return weights


def save_safetensors(model: nn.Module, path) -> dict[str, torch.Tensor]:
    """Save the model's weights, masks folded in, as .safetensors under the plain parameter names
    (`conv2.weight`, ...): loadable with `model.load_state_dict(safetensors.torch.load_file(path))`
    into the dense architecture, and compressible with `pysparse24 compress path out_dir`."""
    from safetensors.torch import save_file

    deployable, _ = _deployable_copy(model)
    tensors = {name: t.detach().contiguous() for name, t in deployable.state_dict().items()}
    with atomic_output(path) as partial:
        save_file(tensors, str(partial))
    return tensors
