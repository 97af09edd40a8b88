"""Objectives: what Phase 2 maximizes. `evaluate(network: list[LayerSpec]) -> float`, higher is better.

Built in: NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021), a
training-free score. For a mini-batch of inputs through the untrained network, every ReLU/Swish unit
gives each input a binary code (is its pre-activation > 0); K[i, j] counts the units on which inputs i
and j agree, summed over layers, and the score is log|det K|. Networks that tell inputs apart at
initialization score higher, which correlates with trained accuracy. It costs one forward pass: on a
16 x 3 x 64 x 64 batch (the input is shrunk to at most `max_resolution`: the score looks at
activation patterns, not at the deployment resolution) a GPUNet-size candidate takes well under a
second on a CPU. A candidate's 2:4 blocks are scored pruned: profiler.blocks builds them with the
masks pysparse24.torch.sparsify makes.

Users plug their own objective (a trainer, an accuracy predictor) as "module:function"; the shipped
trainer is profiler.nas.train:digits_accuracy (short training, 2:4 stages pruned and retrained).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..spec import LayerSpec

DEFAULT_OBJECTIVE = "profiler.nas.proxy:naswot"


def naswot(network: list[LayerSpec], batch: int = 16, max_resolution: int = 64, seed: int = 0) -> float:
    import torch
    from torch import nn

    from ..blocks import build_network

    module = build_network(network, seed=seed)
    module.train()  # batch statistics in BN, as the NASWOT paper scores freshly initialized networks
    kernel = torch.zeros((batch, batch), dtype=torch.float64)

    def record(layer, inputs):
        codes = (inputs[0].detach().flatten(1) > 0).to(torch.float32)
        ones = codes.sum(dim=1, dtype=torch.float64)
        # Agreements = units where both fire + units where neither does
        #            = 2 c.c^T - |c_i| - |c_j| + units (one matmul instead of two).
        both = (codes @ codes.T).to(torch.float64)  # exact: counts stay far below 2**24
        kernel.add_(2 * both - ones[:, None] - ones[None, :] + codes.shape[1])

    hooks = [m.register_forward_pre_hook(record) for m in module.modules() if isinstance(m, (nn.ReLU, nn.SiLU))]
    if not hooks:
        raise ValueError("NASWOT needs ReLU or Swish activations; the network has none")
    size = min(network[0].in_shape[2], max_resolution)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, network[0].in_shape[1], size, size), generator=generator)
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")


def load_objective(ref: str) -> Callable[[list[LayerSpec]], float]:
    """'package.module:function' -> the function (ValueError saying what is wrong)."""
    from pysparse24._cli import resolve_reference

    func = resolve_reference(ref, "objective")
    if not callable(func):
        raise ValueError(f"objective {ref!r}: {ref.partition(':')[0]!r} has no callable {ref.partition(':')[2]!r}")
    return func


def evaluate_keys(objective_ref: str, keys: list[str]) -> float:
    """Worker entry point: rebuild the network from its keys (plain strings travel to any worker,
    local process or Ray node) and score it. A non-finite score is an error, not a result."""
    network = [LayerSpec.from_key(k) for k in keys]
    score = float(load_objective(objective_ref)(network))
    if not math.isfinite(score):
        raise ValueError(f"objective {objective_ref} returned {score} for a {len(network)}-block network")
    return score
