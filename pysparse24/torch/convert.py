"""to_sparse_: swap a model's 2:4 Linear/Conv2d layers for SparseLinear/SparseConv2d, in place.

    report = pysparse24.torch.to_sparse_(model)                   # every eligible 2:4 layer
    report = pysparse24.torch.to_sparse_(model, ["fc1", "fc2"])   # exactly these (any iterable of names)
    print(report)                                                 # layer, shape, dtype, kernel, skipped and why

Default mode converts what it can and reports the rest (a weight that is not 2:4 is skipped with
its first bad group as the reason). Naming layers is a promise that they convert: a named layer
that is missing, of another type, ineligible or not 2:4 is a ValueError naming it, raised before
anything is swapped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from pysparse24.dtypes import canonical
from pysparse24.torch.modules import SparseConv2d, SparseLinear, blocker, kernel_name, layer_type

# The layer types the report lists (Conv1d/Conv3d have no sparse module: reported as skipped).
CANDIDATES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerConversion:
    name: str
    kind: str  # the original module's type
    shape: tuple[int, ...]  # its weight's shape
    dtype: str
    kernel: str | None  # what runs it now; None when skipped
    skipped: str | None = None


class ConversionReport(list):
    """One LayerConversion per Linear/Conv layer of the model; prints as a table."""

    @property
    def converted(self) -> list[LayerConversion]:
        return [r for r in self if r.skipped is None]

    @property
    def skipped(self) -> list[LayerConversion]:
        return [r for r in self if r.skipped is not None]

    def table(self):
        from rich.table import Table

        table = Table(title=f"to_sparse_: {len(self.converted)} of {len(self)} layers 2:4")
        for column in ("layer", "type", "shape", "dtype", "kernel / skipped"):
            table.add_column(column)
        for r in self:
            table.add_row(r.name, r.kind, "x".join(map(str, r.shape)), r.dtype, r.kernel or f"dense: {r.skipped}")
        return table

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(file=io.StringIO(), width=160)
        console.print(self.table())
        return console.file.getvalue()


def _sparse_twin(module: nn.Module) -> nn.Module:
    return (SparseLinear if isinstance(module, nn.Linear) else SparseConv2d).from_dense(module)


def _requested(model: nn.Module, layers) -> set[str] | None:
    if layers is None:
        return None
    if isinstance(layers, str) or not isinstance(layers, Iterable):
        raise TypeError(f"layers must be an iterable of layer names (e.g. a list), got {type(layers).__name__}")
    names = set(layers)
    modules = dict(model.named_modules())
    for name in sorted(names):
        if not isinstance(name, str):
            raise TypeError(f"layers must hold layer names (str), got {name!r}")
        if name not in modules:
            raise ValueError(f"layer {name!r} is not in the model")
        reason = (
            "it is the model itself (wrap it, or use SparseLinear/SparseConv2d.from_dense)"
            if name == ""
            else blocker(modules[name])
        )
        if reason:
            raise ValueError(
                f"layer {name!r} ({layer_type(modules[name]).__name__} "
                f"{tuple(getattr(modules[name], 'weight', torch.empty(0)).shape)}) cannot be made 2:4 "
                f"sparse: {reason}"
            )
    return names


@torch.no_grad()
def to_sparse_(model: nn.Module, layers: Iterable[str] | None = None) -> ConversionReport:
    """Replace every eligible nn.Linear/nn.Conv2d whose weight is 2:4 along its input channels (after
    `sparsify` + retraining, or weights that already are) by SparseLinear/SparseConv2d, in place.
    `layers`: the names to convert (all others stay dense); None converts every layer it can.
    Inference only: the sparse layers have no backward pass."""
    requested = _requested(model, layers)
    report = ConversionReport()
    twins: dict[int, nn.Module] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, CANDIDATES):
            continue
        entry = dict(
            name=name,
            kind=layer_type(module).__name__,
            shape=tuple(module.weight.shape),
            dtype=canonical(module.weight.dtype),
        )
        if requested is not None and name not in requested:
            report.append(LayerConversion(**entry, kernel=None, skipped="not in layers="))
            continue
        reason = "the model itself (wrap it to convert it)" if name == "" else blocker(module)
        if reason:
            report.append(LayerConversion(**entry, kernel=None, skipped=reason))
            continue
        twins[id(module)] = twin = _sparse_twin(module)
        report.append(LayerConversion(**entry, kernel=kernel_name(twin)))
    # Swap every reference (a module shared by two parents is replaced under both names).
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in twins:
                setattr(parent, child_name, twins[id(child)])
    return report
