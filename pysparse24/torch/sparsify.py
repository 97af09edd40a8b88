"""Prune a model's Linear/Conv weights n:m along their input channels and keep the masks while it trains.

Each pruned weight gets a parametrization (torch.nn.utils.parametrize) that multiplies it by a fixed
boolean mask, so every forward pass, and therefore every gradient, sees the pruned weight however
the optimizer moves the underlying parameter. The mask is a buffer: it is saved in the state_dict
(key `<layer>.parametrizations.weight.0.mask`) and `restore` puts it back on a fresh model.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

import pysparse24
from pysparse24.groups import sparse_layer_problem
from pysparse24.torch import oneshot

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def parse_pattern(pattern: str) -> tuple[int, int]:
    """ "2:4" -> (2, 4)."""
    try:
        n, m = (int(part) for part in pattern.split(":"))
    except (AttributeError, ValueError):
        raise ValueError(f"pattern must look like '2:4', got {pattern!r}") from None
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r} must keep between 1 and m-1 of every m")
    return n, m


def ineligibility(module: nn.Module, m: int) -> str | None:
    """Why this Linear/Conv cannot be pruned n:m for the sparse kernels (None when it can)."""
    if isinstance(module, nn.Linear):
        out_channels, in_channels = module.out_features, module.in_features
    else:
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups}) has no dense GEMM to sparsify"
        out_channels, in_channels = module.out_channels, module.in_channels
    return sparse_layer_problem(out_channels, in_channels, m)


class FixedMask(nn.Module):
    """The parametrization: weight -> weight * mask, with the mask fixed when the layer was pruned."""

    def __init__(self, mask: torch.Tensor, pattern: str):
        super().__init__()
        self.pattern = pattern
        self.register_buffer("mask", mask)
        # The weight as it was before pruning, for `undo`; not saved with the state_dict.
        self.register_buffer("dense_weight", None, persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


@dataclass(frozen=True)
class LayerReport:
    name: str
    kind: str
    shape: tuple[int, ...]
    pattern: str | None  # None when the layer was skipped
    kept_magnitude: float | None  # fraction of sum |w| the mask keeps
    skipped: str | None = None  # why the layer was left dense


class SparsityReport(list):
    """One LayerReport per Linear/Conv layer; prints as a table."""

    method = "magnitude"  # how the masks were chosen

    @property
    def sparsified(self) -> list[LayerReport]:
        return [r for r in self if r.skipped is None]

    @property
    def skipped(self) -> list[LayerReport]:
        return [r for r in self if r.skipped is not None]

    def table(self):
        from rich.table import Table

        table = Table(title=f"n:m sparsification ({self.method})")
        for column in ("layer", "type", "shape", "pattern", "kept |w|", "note"):
            table.add_column(column)
        for r in self:
            kept = "" if r.kept_magnitude is None else f"{100 * r.kept_magnitude:.1f}%"
            table.add_row(
                r.name,
                r.kind,
                "x".join(map(str, r.shape)),
                r.pattern or "dense",
                kept,
                f"skipped: {r.skipped}" if r.skipped else "",
            )
        return table

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(file=io.StringIO(), width=140)
        console.print(self.table())
        return console.file.getvalue()


def sparse_layers(model: nn.Module):
    """(name, module, FixedMask) for every layer `sparsify` or `restore` pruned."""
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, FixedMask):
                    yield name, module, p


def _kept_fraction(weight: torch.Tensor, mask: torch.Tensor) -> float:
    magnitude = weight.detach().abs().double()
    total = magnitude.sum().item()
    return magnitude[mask].sum().item() / total if total else 1.0


def _attach(module: nn.Module, mask: torch.Tensor, pattern: str) -> FixedMask:
    fixed = FixedMask(mask, pattern)
    # unsafe=True skips a trial forward; the mask has the weight's shape by construction.
    parametrize.register_parametrization(module, "weight", fixed, unsafe=True)
    return fixed


METHODS = ("magnitude", *oneshot.CALIBRATED_METHODS)


def _selected(model: nn.Module, layers) -> set[str] | None:
    """The names in `layers=` (None: all), each checked to be a Linear/Conv of the model."""
    if layers is None:
        return None
    if isinstance(layers, str):
        raise TypeError(f"layers must be a list of layer names, got the string {layers!r}")
    names = set(layers)
    modules = dict(model.named_modules())
    for name in sorted(names):
        if name not in modules:
            raise ValueError(f"layers names {name!r}, which the model does not have")
        if not isinstance(modules[name], PRUNABLE):
            raise ValueError(
                f"layers names {name!r}, a {type(modules[name]).__name__}: only Linear/Conv layers can be pruned"
            )
    return names


def sparsify(
    model: nn.Module,
    pattern: str = "2:4",
    exclude: tuple[str, ...] = (),
    *,
    method: str = "magnitude",
    calibration=None,
    layers=None,
    damping: float = 0.01,
    block_size: int = 128,
    progress: bool = True,
) -> SparsityReport:
    """Prune every eligible Linear/Conv weight of `model` n:m along its input channels, in place, and
    keep the masks fixed from now on (training included). Layers named in `exclude`, or missing from
    `layers` when it is given, grouped convolutions and shapes the sparse kernels cannot use stay
    dense; the report says why.

    method="magnitude" keeps the n largest |w| of every m. "wanda" and "sparsegpt" are one-shot
    methods for models that will not be retrained: they need `calibration`, an iterable of model
    inputs (tensors, tuples of positional arguments or dicts of keyword arguments; e.g. a few hundred
    samples), and prune layer by layer in the order the model runs them (see pysparse24.torch.oneshot).
    sparsegpt also updates the kept weights; `damping` (fraction of the Hessian's mean diagonal) and
    `block_size` are its parameters. `progress` shows a bar per layer for the one-shot methods. On a
    CNN with BatchNorm, follow a one-shot prune with `recalibrate_batch_norms(model, calibration)`.

    Run `permute_channels` first to keep more magnitude. The existing optimizer still works: the
    weight Parameter object is kept (it moves to `<layer>.parametrizations.weight.original`)."""
    n, m = parse_pattern(pattern)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "magnitude" and calibration is not None:
        raise ValueError(
            "method='magnitude' uses no calibration data; pass method='wanda' or 'sparsegpt' "
            "to prune from calibration activations"
        )
    wanted = _selected(model, layers)
    rows: dict[str, LayerReport] = {}
    chosen = []
    for name, module in list(model.named_modules()):  # a list: attaching masks adds modules
        if not isinstance(module, PRUNABLE):
            continue
        reason = "excluded by the caller" if name in exclude else None
        if reason is None and wanted is not None and name not in wanted:
            reason = "not in layers="
        if reason is None and parametrize.is_parametrized(module, "weight"):
            reason = "weight is already parametrized (sparsified twice?)"
        reason = reason or ineligibility(module, m)
        rows[name] = LayerReport(name, type(module).__name__, tuple(module.weight.shape), None, None, reason)
        if not reason:
            chosen.append((name, module))

    def apply(name: str, module: nn.Module, keep: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        dense = module.weight.detach().clone()
        fixed = _attach(module, keep, pattern)
        fixed.dense_weight = dense
        # Zero the pruned entries of the stored parameter too, so that weight decay or momentum
        # cannot leave stale values there and the raw parameter is itself n:m.
        with torch.no_grad():
            original = module.parametrizations.weight.original
            if weight is not None:  # sparsegpt: the kept weights were updated
                original.copy_(weight)
            original.mul_(keep)
        rows[name] = dataclasses.replace(rows[name], pattern=pattern, kept_magnitude=_kept_fraction(dense, keep))

    if method == "magnitude":
        for name, module in chosen:
            apply(name, module, pysparse24.mask(module.weight.detach(), n=n, m=m, dim=1))
    else:
        try:
            oneshot.prune_in_order(
                model,
                chosen,
                method,
                calibration,
                n,
                m,
                apply,
                damping=damping,
                block_size=block_size,
                progress=progress,
            )
        except BaseException:  # leave the model as it was, not half pruned
            _undo_layers([module for name, module in chosen if rows[name].pattern is not None])
            raise
    report = SparsityReport(rows.values())
    report.method = method
    return report


def _remove_mask(module: nn.Module, leave_parametrized: bool) -> None:
    # parametrize puts the `weight` property on a generated class, which copy.deepcopy shares
    # between the original and the copy, and remove_parametrizations deletes the property from that
    # class, breaking the other copy. Give the module a class of its own first.
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=leave_parametrized)


def finalize(model: nn.Module) -> None:
    """Remove the masks, leaving each pruned weight as a plain Parameter (for export or deployment).
    Training after this no longer keeps the pattern."""
    for _, module, _ in list(sparse_layers(model)):
        _remove_mask(module, leave_parametrized=True)


def undo(model: nn.Module) -> None:
    """Return every pruned layer to the dense weight it had before `sparsify` (retraining since is
    discarded) and remove the masks."""
    layers = list(sparse_layers(model))
    missing = [name for name, _, fixed in layers if fixed.dense_weight is None]
    if missing:
        raise ValueError(
            f"no dense copy of {missing}: masks restored from a checkpoint cannot be undone; "
            "use finalize() to drop the masks instead"
        )
    _undo_layers([module for _, module, _ in layers])


def _undo_layers(modules: list[nn.Module]) -> None:
    for module in modules:
        dense = module.parametrizations.weight[0].dense_weight
        _remove_mask(module, leave_parametrized=False)
        with torch.no_grad():
            module.weight.copy_(dense)


MASK_SUFFIX = ".parametrizations.weight.0.mask"


def restore(model: nn.Module, state_dict: dict, pattern: str = "2:4") -> SparsityReport:
    """Load a state_dict saved from a sparsified model into a fresh (dense) copy of the same
    architecture: re-attach each saved mask, check it is `pattern`, then load all weights."""
    n, m = parse_pattern(pattern)
    report = SparsityReport()
    for key, mask in state_dict.items():
        if not key.endswith(MASK_SUFFIX):
            continue
        name = key[: -len(MASK_SUFFIX)]
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"state_dict has a mask for {name!r}, which the model does not have") from None
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"{name!r} already has a parametrized weight; restore into a fresh dense model")
        if tuple(mask.shape) != tuple(module.weight.shape) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask {key} is {mask.dtype} {tuple(mask.shape)}, expected torch.bool {tuple(module.weight.shape)}"
            )
        if not pysparse24.is_sparse(mask.to(torch.int8), n=n, m=m, dim=1):
            raise ValueError(f"mask {key} is not {pattern} along the input channels")
        _attach(module, mask.clone(), pattern)
        report.append(LayerReport(name, type(module).__name__, tuple(mask.shape), pattern, None))
    model.load_state_dict(state_dict)
    return report
