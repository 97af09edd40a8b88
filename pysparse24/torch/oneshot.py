"""One-shot n:m pruning from calibration data: Wanda and SparseGPT, one layer at a time in the
order the model runs them, so each layer is calibrated on the outputs of the already-pruned ones.

Both methods see a layer as the GEMM it computes: weight matrix (out, columns) times input matrix
(tokens, columns). Linear: columns = in_features. Conv (K, C, *kernel): columns = kernel positions x
C with C fastest, and the input is im2col'd in the same order, so m consecutive columns are m
consecutive input channels at one kernel position: the library's n:m groups along C.

- Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, the n largest per group kept; no weight update.
- SparseGPT (Frantar & Alistarh 2023): H = 2 X^T X / tokens, dampened by 1% of its mean diagonal;
  columns in blocks of 128, the mask of each group of m columns chosen from w^2 / [H^-1]_jj^2 when the
  solver reaches it, and the Optimal Brain Surgeon update applied to the columns not yet pruned.
Either way the choice of the n kept per group is `pysparse24.mask` on the scores: one mask rule.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

import pysparse24

CALIBRATED_METHODS = ("wanda", "sparsegpt")
# Dampening is raised this many times (x10 each) when the Cholesky factorization fails.
DAMPING_RETRIES = 3


def gemm_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out, columns): Linear (out, in) as is; conv (K, C, *kernel) as (K, prod(kernel) * C), C fastest."""
    return weight.movedim(1, -1).reshape(weight.shape[0], -1)


def from_gemm_weight(matrix: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of gemm_weight."""
    moved = (shape[0], *shape[2:], shape[1])
    return matrix.reshape(moved).movedim(-1, 1)


def gemm_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as (tokens, columns), columns in gemm_weight's order, so that
    gemm_input(x) @ gemm_weight(w).T is the layer's output without bias."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features)
    spatial = len(module.kernel_size)
    if x.dim() == spatial + 1:  # unbatched input
        x = x.unsqueeze(0)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    # The padding the module's own forward applies ('same' already resolved by torch).
    x = nn.functional.pad(x, module._reversed_padding_repeated_twice, mode=mode)
    for d, (k, stride, dilation) in enumerate(zip(module.kernel_size, module.stride, module.dilation)):
        x = x.unfold(2 + d, dilation * (k - 1) + 1, stride)  # windows appended as a trailing dim
    x = x[(..., *[slice(None, None, dilation) for dilation in module.dilation])]
    # (N, C, *out, *kernel) -> (N, *out, *kernel, C)
    x = x.movedim(1, -1)
    return x.reshape(-1, math.prod(module.kernel_size) * module.in_channels)


def wanda_mask(weight: torch.Tensor, input_norms: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep mask for a (out, columns) weight: the n largest |W_ij| * ||X_j||_2 of every m columns."""
    scores = weight.detach().double().abs() * input_norms.double()
    return pysparse24.mask(scores.float(), n=n, m=m, dim=1)


class SingularHessian(ValueError):
    """The dampened Hessian of a layer could not be factorized."""


def inverse_hessian_factor(hessian: torch.Tensor, damping: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of (H + d I)^-1 = U^T U with d = damping x mean diag(H); the damping
    is raised x10 up to DAMPING_RETRIES times while H + d I is not positive definite.
    Returns (U, the damping fraction used)."""
    if not torch.isfinite(hessian).all():
        raise SingularHessian("the Hessian has NaN or Inf entries (activations overflowed?)")
    mean_diagonal = hessian.diagonal().mean()
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for attempt in range(DAMPING_RETRIES + 1):
        fraction = damping * 10**attempt
        lower, info = torch.linalg.cholesky_ex(hessian + fraction * mean_diagonal * eye)
        if info == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if info == 0:
                return upper, fraction
    raise SingularHessian(
        f"the Hessian is not positive definite even dampened by {fraction:g} x its mean "
        "diagonal; calibrate with more (or more varied) data"
    )


def sparsegpt_prune(
    weight: torch.Tensor, hessian: torch.Tensor, n: int, m: int, damping: float = 0.01, block_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """SparseGPT on a (out, columns) weight with the (columns, columns) Hessian of its inputs.
    Returns (pruned and updated weight, keep mask, damping fraction used); float64 throughout."""
    W = weight.detach().double().clone()
    H = hessian.double().clone()
    dead = H.diagonal() == 0  # inputs that were always zero: their weights never mattered
    H[dead, dead] = 1
    W[:, dead] = 0
    U, used = inverse_hessian_factor(H, damping)
    keep = torch.zeros(W.shape, dtype=torch.bool, device=W.device)
    columns = W.shape[1]
    block_size = max(m, block_size - block_size % m)  # groups never straddle two blocks
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = W[:, start:end].clone()
        errors = torch.zeros_like(block)
        factor = U[start:end, start:end]
        diagonal = factor.diagonal()
        for i in range(end - start):
            if i % m == 0:  # the group's mask, from the weights as updated so far
                scores = block[:, i : i + m].abs() / diagonal[i : i + m]  # same order as w^2 / d^2
                keep[:, start + i : start + i + m] = pysparse24.mask(scores.float(), n=n, m=m, dim=1)
            w = block[:, i]
            q = w * keep[:, start + i]
            error = (w - q) / diagonal[i]
            block[:, i:] -= torch.outer(error, factor[i, i:])  # OBS: the others compensate
            block[:, i] = q
            errors[:, i] = error
        W[:, start:end] = block
        W[:, end:] -= errors @ U[start:end, end:]
    return W * keep, keep, used


def _run(model: nn.Module, batch) -> None:
    if isinstance(batch, Mapping):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        model(batch)


class _BadCalibration(ValueError):
    """Raised by a hook on a layer's calibration input; it already names the batch and the layer."""


class _Stop(Exception):
    """Raised by a hook once the layers being calibrated have seen this batch: the rest of the
    forward pass is not needed."""


class _Pass:
    """Counts the calls of the layers being calibrated in one batch; stops the forward pass after the last."""

    def __init__(self, expected: int):
        self.remaining = expected

    def called(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            raise _Stop


class _Collector:
    """Accumulates one layer's calibration statistics: squared input norms per column (Wanda) or
    X^T X (SparseGPT), summed in float64; memory is one (columns, columns) matrix at most."""

    def __init__(self, name: str, method: str):
        self.name, self.method = name, method
        self.batch = 0
        self.current: _Pass | None = None
        self.tokens = 0
        self.sum = None

    def hook(self, module, args, kwargs):
        X = gemm_input(module, _first_input(args, kwargs).detach())
        if not torch.isfinite(X).all():
            raise _BadCalibration(f"calibration batch {self.batch} gives layer {self.name!r} an input with NaN or Inf")
        X = X.to(torch.promote_types(X.dtype, torch.float32))
        if self.method == "wanda":
            part = X.double().square().sum(0)
        else:
            part = (X.T @ X).double()
        self.sum = part if self.sum is None else self.sum.add_(part)
        self.tokens += X.shape[0]
        self.current.called()

    def statistic(self) -> torch.Tensor:
        """Wanda: ||X_j||_2 per column; SparseGPT: H = 2 X^T X / tokens."""
        if self.method == "wanda":
            return self.sum.sqrt()
        return self.sum * (2 / self.tokens)


def _first_input(args, kwargs) -> torch.Tensor:
    return args[0] if args else next(iter(kwargs.values()))


class _Progress:
    """A rich progress bar over layers, with a second one over the current layer's batches."""

    def __init__(self, method: str, layers: int, batches: int, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not enabled,
            transient=False,
        )
        self.layers = self.bar.add_task(f"{method}: layers", total=layers)
        self.batches = self.bar.add_task("calibrating", total=batches)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def layer(self, name: str) -> None:
        self.bar.reset(self.batches, description=f"  {name}: calibrating")

    def batch(self) -> None:
        self.bar.advance(self.batches)

    def solving(self, name: str) -> None:
        self.bar.update(self.batches, description=f"  {name}: pruning")

    def done(self) -> None:
        self.bar.advance(self.layers)


def _batches(calibration) -> list:
    if calibration is None:
        raise ValueError(
            "wanda and sparsegpt need calibration=: an iterable of model inputs (tensors, "
            "tuples of positional arguments, or dicts of keyword arguments)"
        )
    if isinstance(calibration, (torch.Tensor, str, bytes, Mapping)):
        raise TypeError(
            f"calibration must be an iterable of batches (e.g. a list of tensors or a DataLoader "
            f"of inputs), got a single {type(calibration).__name__}"
        )
    try:
        batches = list(calibration)  # iterated once per layer: a generator would run dry
    except TypeError:
        raise TypeError(f"calibration must be an iterable of batches, got {type(calibration).__name__}") from None
    if not batches:
        raise ValueError("calibration is empty: give at least one batch of model inputs")
    return batches


def _forward(model: nn.Module, batches: list, index: int) -> None:
    try:
        _run(model, batches[index])
    except _Stop:
        pass
    except _BadCalibration:
        raise
    except Exception as error:
        raise ValueError(
            f"calibration batch {index} does not run through the model: {type(error).__name__}: {error}"
        ) from error


@contextlib.contextmanager
def _in_eval_mode(model: nn.Module):
    """The model in eval mode (dropout off, BatchNorm statistics frozen) without gradients; each
    module's own mode restored afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.train(training)


def recalibrate_batch_norms(model: nn.Module, calibration) -> int:
    """Re-estimate every BatchNorm's running mean and variance on `calibration` (an iterable of model
    inputs, as for sparsify), each batch weighted equally (momentum=None), with the rest of the model
    in eval mode and no gradients. Pruning a conv shifts the statistics of the BatchNorm after it; the
    dense model's statistics then mis-normalize every later layer (on the digits CNN this is most of
    magnitude's and Wanda's one-shot loss). Returns how many BatchNorm layers were re-estimated. A
    model without BatchNorm statistics, a batch the model rejects or a BatchNorm no batch reaches is
    a ValueError, and the model is left as it was."""
    norms = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    }
    if not norms:
        raise ValueError("the model has no BatchNorm layer with running statistics to re-estimate")
    batches = _batches(calibration)
    saved = {name: {key: b.clone() for key, b in norm.named_buffers(recurse=False)} for name, norm in norms.items()}
    momenta = {name: norm.momentum for name, norm in norms.items()}
    finished = False
    try:
        with _in_eval_mode(model):
            for norm in norms.values():
                norm.reset_running_stats()
                norm.momentum = None  # cumulative average over the batches, not an exponential one
                norm.train()
            for index in range(len(batches)):
                _forward(model, batches, index)
        unreached = [name for name, norm in norms.items() if not norm.num_batches_tracked]
        if unreached:
            raise ValueError(
                f"BatchNorm layer(s) {unreached} saw no calibration data: their statistics cannot be re-estimated"
            )
        finished = True
    finally:
        for name, norm in norms.items():
            norm.momentum = momenta[name]
            if not finished:  # leave the model as it was, not half re-estimated
                for key, value in saved[name].items():
                    getattr(norm, key).copy_(value)
    return len(norms)


def _execution_order(model: nn.Module, layers: list[tuple[str, nn.Module]], batches: list):
    """Runs every batch once. Returns the layers in the order they first run, in groups of consecutive
    layers that read the very same input tensor (unmodified, once per batch: attention's query, key
    and value), which can be calibrated in one pass since pruning one cannot change another's input;
    and how often each layer runs per batch. A batch the model cannot take or a layer that never runs
    is a ValueError."""
    calls = {name: [0] * len(batches) for name, _ in layers}
    order: list[str] = []
    joins = {name: True for name, _ in layers}  # reads what the layer just before it read, every time
    state = {"batch": 0, "last": None}

    def counter(name):
        def hook(module, args, kwargs):
            x = _first_input(args, kwargs)
            if name not in order:
                order.append(name)
            calls[name][state["batch"]] += 1
            last = state["last"]
            if (
                last is None
                or last[1] is not x
                or last[2] != x._version
                or order.index(last[0]) != order.index(name) - 1
            ):
                joins[name] = False
            state["last"] = (name, x, x._version)

        return hook

    handles = [module.register_forward_pre_hook(counter(name), with_kwargs=True) for name, module in layers]
    try:
        for index in range(len(batches)):
            state["batch"], state["last"] = index, None
            _forward(model, batches, index)
    finally:
        for handle in handles:
            handle.remove()
        state["last"] = None
    idle = [name for name, _ in layers if name not in order]
    if idle:
        raise ValueError(
            f"layer(s) {idle} saw no calibration data (never ran in the forward pass over "
            "the calibration batches): exclude them, or give calibration data that reaches them"
        )
    modules = dict(layers)
    groups: list[list[tuple[str, nn.Module]]] = []
    for position, name in enumerate(order):
        once = all(c == 1 for c in calls[name])
        if groups and once and joins[name] and all(c == 1 for c in calls[order[position - 1]]):
            groups[-1].append((name, modules[name]))
        else:
            groups.append([(name, modules[name])])
    return groups, calls


def prune_in_order(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    method: str,
    calibration,
    n: int,
    m: int,
    apply: Callable[[str, nn.Module, torch.Tensor, torch.Tensor | None], None],
    damping: float = 0.01,
    block_size: int = 128,
    progress: bool = True,
) -> None:
    """Prunes `layers` n:m with `method` ("wanda" | "sparsegpt") in the order the model runs them.
    For each it calls apply(name, module, keep, new_weight) (new_weight None: keep the kept weights
    as they are), which must attach the mask before the next layer is calibrated."""
    if method not in CALIBRATED_METHODS:
        raise ValueError(f"method must be one of {CALIBRATED_METHODS}, got {method!r}")
    if not 0 <= damping:
        raise ValueError(f"damping must be >= 0, got {damping}")
    batches = _batches(calibration)
    # parametrize.cached: a pruned layer's weight (its FixedMask product, fixed from then on) is
    # computed once, not in every forward pass that runs through it (a fifth of the time on MiniLM).
    with _in_eval_mode(model), parametrize.cached():
        groups, calls = _execution_order(model, layers, batches)
        with _Progress(method, len(layers), len(batches), progress) as bar:
            for group in groups:
                names = ", ".join(name for name, _ in group)
                bar.layer(names)
                collectors = [_Collector(name, method) for name, _ in group]
                handles = [
                    module.register_forward_pre_hook(c.hook, with_kwargs=True)
                    for (_, module), c in zip(group, collectors)
                ]
                try:
                    for index in range(len(batches)):
                        current = _Pass(sum(calls[name][index] for name, _ in group))
                        for collector in collectors:
                            collector.batch, collector.current = index, current
                        if current.remaining:
                            _forward(model, batches, index)
                        bar.batch()
                finally:
                    for handle in handles:
                        handle.remove()
                bar.solving(names)
                for (name, module), collector in zip(group, collectors):
                    apply(
                        name,
                        module,
                        *_prune_layer(name, module, method, collector.statistic(), n, m, damping, block_size),
                    )
                    bar.done()


def _prune_layer(name, module, method, statistic, n, m, damping, block_size):
    weight = module.weight.detach()
    matrix = gemm_weight(weight)
    if method == "wanda":
        keep = wanda_mask(matrix, statistic, n, m)
        return from_gemm_weight(keep, weight.shape), None
    try:
        pruned, keep, _ = sparsegpt_prune(matrix, statistic, n, m, damping, block_size)
    except SingularHessian as error:
        raise SingularHessian(f"layer {name!r}: {error}") from None
    return from_gemm_weight(keep, weight.shape), from_gemm_weight(pruned, weight.shape).to(weight.dtype)
