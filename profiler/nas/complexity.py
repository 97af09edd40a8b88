"""Parameter and multiply-accumulate counts of a network, counted on the built torch modules.

Counting the modules (not re-deriving formulas from the specs) means the numbers describe exactly
what profiler.blocks builds, so comparing them with the published GPUNet figures checks the blocks.
MACs count convolutions and fully-connected layers (the usual "FLOPs" of NAS papers, which are
multiply-adds); BN, activations, pooling and residual adds are left out, as those papers do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import LayerSpec


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int

    def __str__(self) -> str:
        return f"{self.params / 1e6:.2f} M params, {self.macs / 1e9:.3f} GMACs"


def complexity(network: list[LayerSpec]) -> Complexity:
    """Parameters (every tensor in module.parameters(), BN affine included) and MACs of one forward
    pass at the network's input shape (batch included)."""
    import torch
    from torch import nn

    from ..blocks import build_network

    module = build_network(network)
    params = sum(p.numel() for p in module.parameters())
    macs = 0

    def count(layer, inputs, output):
        nonlocal macs
        if isinstance(layer, nn.Conv2d):
            per_output = (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
            macs += output.numel() * per_output
        elif isinstance(layer, nn.Linear):
            macs += output.numel() * layer.in_features

    handles = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # MACs depend on shapes only: run the forward on the meta device (shapes, no arithmetic).
    module = module.to("meta")
    with torch.no_grad():
        module(torch.empty(network[0].in_shape, device="meta"))
    for h in handles:
        h.remove()
    return Complexity(int(params), int(macs))
