"""A NAS candidate as a torch model whose 2:4 blocks carry `pysparse24.torch.sparsify` masks.

profiler.blocks builds a 2:4 block with its weights already pruned (what the latency backends time
and the NASWOT proxy scores). Training and export need the masks themselves: training keeps them
fixed while the kept weights move, and pysparse24.torch.export_onnx checks that the written weights
keep the pattern. Both come from sparsify's magnitude rule, so a candidate pruned here at
initialization holds exactly the weights build_network gives it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..blocks import build_network, input_shape_of, random_input
from ..spec import LayerSpec


def dense_twin(network: Sequence[LayerSpec], seed: int = 0) -> nn.Sequential:
    """The candidate with every block dense (same weights as build_network before pruning)."""
    return build_network([s.replace(sparsity="dense") for s in network], seed=seed)


def sparse_block_layers(module: nn.Sequential, network: Sequence[LayerSpec]) -> list[str]:
    """Names of the Conv2d/Linear layers inside the candidate's 2:4 blocks (module[i] is block i)."""
    return [
        f"{i}.{name}"
        for i, spec in enumerate(network)
        if spec.sparsity == "2:4"
        for name, layer in module[i].named_modules()
        if isinstance(layer, (nn.Conv2d, nn.Linear))
    ]


def prune_sparse_blocks(module: nn.Sequential, network: Sequence[LayerSpec]):
    """Prune the 2:4 blocks' layers in place with masks fixed from now on (magnitude, as
    profiler.blocks prunes); layers no sparse kernel takes (depthwise, ...) stay dense. The report."""
    from pysparse24.torch import sparsify

    return sparsify(module, "2:4", layers=sparse_block_layers(module, network), progress=False)


def build_candidate(network: Sequence[LayerSpec], seed: int = 0) -> nn.Sequential:
    """The candidate with its 2:4 blocks pruned at initialization, masks attached."""
    module = dense_twin(network, seed)
    prune_sparse_blocks(module, network)
    return module


def export_candidate_onnx(network: Sequence[LayerSpec], path) -> list:
    """Write the candidate (untrained, 2:4 blocks pruned) as ONNX; pysparse24.torch.export_onnx
    verifies that every pruned weight is 2:4 along its input channels in the written file. Returns
    its per-weight findings (OnnxWeight: node, shape, is_2to4)."""
    from pysparse24.torch import export_onnx

    module = build_candidate(network).eval()
    example = torch.from_numpy(random_input(input_shape_of(network[0])))
    return export_onnx(module, example, path)
