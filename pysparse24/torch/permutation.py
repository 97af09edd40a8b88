"""Channel permutation for 2:4 sparsity (the idea of NVIDIA's ASP; Pool & Yu, NeurIPS 2021).

2:4 keeps two of every four consecutive input channels of a weight. Which channels share a group is
arbitrary: reorder a layer's input channels and, identically, the output channels of the layer that
produces them (and everything per-channel in between, e.g. BatchNorm), and the network computes the
same function, while magnitude pruning now keeps more. The search itself is C++
(`pysparse24._C.search_permutation_2to4`); this module finds the producer -> consumer pairs in a
model with torch.fx and applies the permutation found.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

from pysparse24._ext import C
from pysparse24.groups import splits_into_groups
from pysparse24.torch.sparsify import PRUNABLE, ineligibility

# Operations that act on each channel separately: a permutation of channels passes through them.
PER_CHANNEL_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PER_CHANNEL_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.dropout,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
}
PER_CHANNEL_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


def channels_last_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weight as (rows, input channels): (out, in) as is; conv (K, C, *k) as (K * prod(k), C)."""
    return weight.movedim(1, -1).reshape(-1, weight.shape[1])


@dataclass(frozen=True)
class PermutationResult:
    permutation: np.ndarray  # new channel j is old channel permutation[j]
    kept_before: float  # sum |w| kept by 2:4 in the original order
    kept_after: float  # ... in the permuted order
    half_bound: float  # sum of the largest half of |w| in every row: no channel order keeps more

    @property
    def gap_recovered(self) -> float:
        """Fraction of the gap between plain 2:4 and the half-of-each-row bound that the permutation closes."""
        gap = self.half_bound - self.kept_before
        return (self.kept_after - self.kept_before) / gap if gap > 0 else 0.0


def find_permutation(matrix, seed: int = 0, escape_attempts: int = 100, block_channels: int = 512) -> PermutationResult:
    """Search an order of the columns (input channels) of a 2-D (rows x channels) weight that keeps
    more magnitude under 2:4. Deterministic for a given seed; more escape attempts search longer.

    The cost grows steeply with the channel count (512 x 512: ~2 s, 1024 x 1024: ~20 s on one core),
    so wider weights are searched in independent blocks of `block_channels` consecutive channels."""
    magnitude = np.abs(
        matrix.detach().cpu().float().numpy()
        if isinstance(matrix, torch.Tensor)
        else np.asarray(matrix, dtype=np.float32)
    )
    if magnitude.ndim != 2:
        raise ValueError(f"find_permutation expects a 2-D (rows x channels) weight, got shape {magnitude.shape}")
    if block_channels < 4 or not splits_into_groups(block_channels, 4):
        raise ValueError(f"block_channels must be a positive multiple of 4, got {block_channels}")
    permutation, kept_before, kept_after = [], 0.0, 0.0
    for start in range(0, max(magnitude.shape[1], 1), block_channels):
        block = np.ascontiguousarray(magnitude[:, start : start + block_channels])
        found = C.search_permutation_2to4(block, seed=seed, escape_attempts=escape_attempts)
        permutation.append(start + found["permutation"])
        kept_before += found["kept_before"]
        kept_after += found["kept_after"]
    half = np.sort(magnitude.astype(np.float64), axis=1)[:, magnitude.shape[1] // 2 :].sum()
    return PermutationResult(np.concatenate(permutation), kept_before, kept_after, float(half))


@dataclass(frozen=True)
class PermutedChannels:
    producer: str  # layer whose output channels were reordered
    consumers: tuple[str, ...]  # layers whose input channels were reordered
    channels: int
    result: PermutationResult | None
    skipped: str | None = None


def _module(model: nn.Module, node: fx.Node) -> nn.Module | None:
    return model.get_submodule(node.target) if node.op == "call_module" else None


def _passes_channels_through(model: nn.Module, node: fx.Node, source: fx.Node) -> bool:
    """True when `node` applies a per-channel operation to `source` and uses no other tensor."""
    other_inputs = [a for a in node.all_input_nodes if a is not source]
    if other_inputs or not node.args or node.args[0] is not source:
        return False
    if node.op == "call_module":
        return isinstance(_module(model, node), PER_CHANNEL_MODULES + BATCH_NORMS)
    if node.op == "call_function":
        return node.target in PER_CHANNEL_FUNCTIONS
    return node.op == "call_method" and node.target in PER_CHANNEL_METHODS


def _describe(model: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(_module(model, node)).__name__})"
    if node.op == "output":
        return "the model output"
    return getattr(node.target, "__name__", str(node.target))


def _follow_channels(model: nn.Module, producer: fx.Node):
    """Walk forward from a producer's output through per-channel operations. Returns the consumer
    nodes (Linear/Conv reading those channels as input), the BatchNorms on the way, and a reason
    when the channels also reach something a permutation would change (an add, a flatten, the output)."""
    consumers, batch_norms, frontier = [], [], [producer]
    while frontier:
        source = frontier.pop()
        for user in source.users:
            module = _module(model, user)
            if isinstance(module, PRUNABLE) and user.args[0] is source and len(user.all_input_nodes) == 1:
                consumers.append(user)
            elif _passes_channels_through(model, user, source):
                if isinstance(module, BATCH_NORMS):
                    batch_norms.append(module)
                frontier.append(user)
            else:
                return [], [], f"its output channels reach {_describe(model, user)}"
    return consumers, batch_norms, None


def _permute_(tensor: torch.Tensor | None, permutation: torch.Tensor, dim: int) -> None:
    if tensor is not None:
        tensor.data = tensor.data.index_select(dim, permutation.to(tensor.device)).contiguous()


def permute_channels(
    model: nn.Module, example_input, seed: int = 0, escape_attempts: int = 100
) -> list[PermutedChannels]:
    """Reorder channels of `model` in place so that 2:4 pruning of its eligible layers keeps more
    magnitude, without changing what the model computes. Call before `sparsify`.

    Each Linear/Conv whose output feeds, through per-channel operations only (activations, pooling,
    BatchNorm, dropout), the input of prunable Linear/Conv layers is a producer: one permutation is
    searched on its consumers' weights stacked, then applied to the producer's output channels (weight
    rows, bias), the BatchNorms between, and the consumers' input channels. The model is run on
    `example_input` before and after; if the outputs differ, every change is undone and ValueError raised."""
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("permute_channels must run before sparsify (the model already has parametrized weights)")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # fx raises many kinds (TraceError, TypeError, ...) for untraceable code
        raise ValueError(f"permute_channels needs a model torch.fx can trace: {error}") from error
    calls_per_module: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls_per_module[node.target] = calls_per_module.get(node.target, 0) + 1

    was_training = model.training
    model.eval()
    backup = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        expected = model(example_input)
        if not isinstance(expected, torch.Tensor):
            model.train(was_training)
            raise TypeError(
                f"permute_channels checks the model's output before and after; it must be one "
                f"tensor, got {type(expected).__name__}"
            )
        report = []
        for node in graph.nodes:
            producer = _module(model, node)
            if not isinstance(producer, PRUNABLE):
                continue
            report.append(_permute_one(model, node, producer, calls_per_module, seed, escape_attempts))
        actual = model(example_input)
    model.train(was_training)
    if not torch.allclose(actual, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item()):
        model.load_state_dict(backup)
        raise ValueError(
            "channel permutation changed the model's output (an operation between layers "
            "is not per-channel?); the model was left unchanged"
        )
    return report


def _permute_one(model, node, producer, calls_per_module, seed, escape_attempts) -> PermutedChannels:
    channels = producer.weight.shape[0]
    consumers, batch_norms, reason = _follow_channels(model, node)
    names = tuple(c.target for c in consumers)
    if reason is None and not consumers:
        reason = "its output feeds no Linear/Conv"
    if reason is None and getattr(producer, "groups", 1) != 1:
        reason = "grouped convolution: its output channels cannot be reordered freely"
    layers = [model.get_submodule(name) for name in names]
    if reason is None:
        unusable = [(name, ineligibility(layer, 4)) for name, layer in zip(names, layers)]
        unusable = [f"{name}: {why}" for name, why in unusable if why]
        if unusable:
            reason = "a consumer will not be pruned (" + "; ".join(unusable) + ")"
    if reason is None:
        shared = [t for t in (node.target, *names) if calls_per_module[t] > 1]
        if shared:
            reason = f"{shared[0]} is called more than once"
    if reason:
        return PermutedChannels(node.target, names, channels, None, reason)

    stacked = torch.cat([channels_last_matrix(layer.weight.detach()) for layer in layers])
    result = find_permutation(stacked, seed=seed, escape_attempts=escape_attempts)
    order = torch.as_tensor(result.permutation, dtype=torch.long)
    _permute_(producer.weight, order, 0)
    _permute_(producer.bias, order, 0)
    for bn in batch_norms:
        for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            _permute_(tensor, order, 0)
    for layer in layers:
        _permute_(layer.weight, order, 1)
    return PermutedChannels(node.target, names, channels, result)
