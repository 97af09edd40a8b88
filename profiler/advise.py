"""`advise`: where does 2:4 pay for this model? Measured per layer, before anyone retrains.

    advice = profiler.advise.advise(model, example_input, "t.sqlite", backend="torch")
    advice.write("advice.json")
    pysparse24.torch.sparsify(model, layers=advice)     # prune (and retrain) only the layers that pay
    pysparse24.torch.to_sparse_(model, layers=advice)   # then run them on the sparse kernels

1. Trace: one forward pass with hooks on every nn.Linear / nn.Conv2d records its real input; each
   call becomes a LayerSpec (op linear_only / conv2d_only: the layer alone, see profiler.blocks).
   Layers the spec vocabulary cannot express (non-square kernels, dilation, asymmetric padding...)
   stay dense and are listed with the reason.
2. Measure each spec dense and 2:4 on the backend with the table builder (profiler.build): only the
   keys the table lacks, committed one by one, so an interrupted run resumes. The torch backend runs
   2:4 through pysparse24's sparse modules; a layer no sparse module can run (depthwise, odd widths)
   gets an error row naming why, and stays dense.
3. Advise: the layers whose 2:4 time beats dense by more than `threshold`. Predicted end to end: the
   table's sum over the timed layers, dense and with the advised layers sparse, plus what the layers
   do not cover (activations, norms, attention products, the layers no spec expresses...): the rest,
   measured directly as the model with each timed layer replaced by a stub that returns the output the
   layer gave on the example input (same shape, dtype and layout). The rest is measured, not derived
   from the dense model minus the layer sum: that difference also holds whatever makes the dense
   layers slower (or faster) inside the model than alone, which the 2:4 layers need not share. The
   table's calibration (profiler.calibration, fitted by `lut validate`) applies to the layer sums
   without its offset, the one call a whole network pays, which the measured rest holds. The dense
   model is timed too: predicted vs measured dense says how far layers alone miss them in the model.

The advice iterates over the advised layer names, so the pysparse24 functions that take `layers=`
accept it directly; advice.json holds the same list under "layers" (written atomically).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pysparse24 import dtypes

from . import calibration
from .build import BackendRef, build_table
from .spec import LayerSpec
from .table import SPARSE_EXECUTOR, LatencyTable, cannot_run_sparse, ensure_same_context

DEFAULT_THRESHOLD = 1.05
FORMAT_NAME = "pysparse24-advice"
MODEL_DTYPES = ("float32", "bfloat16", "float16")  # what the torch backend runs (its table precisions)


# ---------------------------------------------------------------------------------------------
# 1. Trace


@dataclass(frozen=True)
class TracedCall:
    """One call of one Linear/Conv2d in the traced forward pass."""

    layer: str  # the module's name in model.named_modules()
    kind: str  # Linear | Conv2d
    input_shape: tuple[int, ...]  # what it really saw
    weight_shape: tuple[int, ...]
    spec: LayerSpec | None  # dense spec timed for it; None when the vocabulary cannot express it
    skipped: str | None = None  # why spec is None
    note: str | None = None  # how the spec differs from the layer, when it does (same work)
    sparse_problem: str | None = None  # why the layer cannot run 2:4 at all (its 2:4 spec is not timed)


def _linear_spec(module, x, batch: int, precision: str) -> tuple[LayerSpec | None, str | None, str | None]:
    c = module.in_features
    rows = x.numel() // c
    if rows % batch:
        return None, f"{rows} rows of input are not a multiple of the batch {batch}", None
    spec = LayerSpec("linear_only", (batch, c, rows // batch, 1), module.out_features, act="none", precision=precision)
    return spec, None, None


def _conv_spec(module, x, batch: int, precision: str) -> tuple[LayerSpec | None, str | None, str | None]:
    import torch

    from .blocks import _symmetric_pad, output_shape

    k, s, p, d = module.kernel_size, module.stride, module.padding, module.dilation
    problems = []
    if x.dim() != 4 or x.shape[0] != batch:
        problems.append(f"input {tuple(x.shape)} is not (batch={batch}, C, H, W)")
    if k[0] != k[1] or s[0] != s[1]:
        problems.append(f"kernel {k} / stride {s} not square")
    if isinstance(p, str) or p[0] != p[1]:
        problems.append(f"padding {p!r} not symmetric")
    if d != (1, 1) or module.padding_mode != "zeros":
        problems.append(f"dilation {d} / padding_mode {module.padding_mode!r}")
    if problems:
        return None, "; ".join(problems), None
    n, c, h, w = x.shape
    # The spec pads like timm (P); another padding p is the same work on an input 2(p - P) larger:
    # same output size, same multiply-adds, dense and sparse alike.
    grow = 2 * (p[0] - _symmetric_pad(k[0], s[0]))
    notes = []
    if grow:
        notes.append(
            f"timed on a {h + grow}x{w + grow} input with padding {_symmetric_pad(k[0], s[0])} "
            f"(same output, same work as padding {p[0]})"
        )
    if not x.is_contiguous(memory_format=torch.channels_last):  # the key has no layout field
        notes.append(
            "the model runs this conv on an NCHW input, the table times it channels_last (the torch "
            "backend's layout, the fastest for oneDNN and the sparse convs): for the timings to hold, "
            "run the model and its input in torch.channels_last"
        )
    note = "; ".join(notes) or None
    try:
        spec = LayerSpec(
            "conv2d_only",
            (n, c, h + grow, w + grow),
            module.out_channels,
            kernel=k[0],
            stride=s[0],
            groups=module.groups,
            act="none",
            precision=precision,
        )
        output_shape(spec)  # the block's own checks
    except ValueError as exc:
        return None, str(exc), None
    return spec, None, note


class _TraceError(RuntimeError):
    pass


def trace(model, example_input, precision: str | None = None) -> list[TracedCall]:
    """Every Linear/Conv2d call of one forward pass of `model` on `example_input`, in call order."""
    import torch
    from torch import nn

    from pysparse24.torch.modules import ineligibility

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1:
        raise TypeError("example_input must be a torch.Tensor with a batch dimension")
    if precision is None:
        if dtypes.canonical(example_input) not in MODEL_DTYPES:
            raise ValueError(
                f"example input dtype {example_input.dtype} has no table precision (use one of {MODEL_DTYPES})"
            )
        precision = dtypes.precision_name(example_input)
    batch = int(example_input.shape[0])
    calls: list[TracedCall] = []

    def hook(name):
        def record(module, args):
            try:
                x = args[0]
                make = _linear_spec if isinstance(module, nn.Linear) else _conv_spec
                spec, skipped, note = make(module, x, batch, precision)
                shape = tuple(module.weight.shape)
                problem = ineligibility(module)
                calls.append(
                    TracedCall(name, type(module).__name__, tuple(x.shape), shape, spec, skipped, note, problem)
                )
            except Exception as exc:  # the tracer's own failure, not the model's
                raise _TraceError(f"tracing layer {name!r} failed: {type(exc).__name__}: {exc}") from exc

        return record

    handles = [
        m.register_forward_pre_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and name
    ]
    try:
        with torch.inference_mode():
            model(example_input)
    except _TraceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is reported as such
        raise ValueError(
            f"the model does not run on the example input {tuple(example_input.shape)} "
            f"{example_input.dtype}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise ValueError("the model ran no nn.Linear or nn.Conv2d layer on the example input: nothing to advise")
    return calls


# ---------------------------------------------------------------------------------------------
# 3. The advice


@dataclass
class LayerAdvice:
    layer: str
    kind: str
    input_shape: list
    calls: int
    dense_ms: float | None  # summed over the layer's calls (table medians)
    sparse_ms: float | None
    speedup: float | None
    share: float | None  # of the model's measured dense time (or of the layers' sum)
    convert: bool
    reason: str | None = None  # why it stays dense (not measurable, no sparse module, too slow)
    note: str | None = None


@dataclass
class Advice:
    """What `advise` found. Iterating gives the names of the layers worth converting."""

    layers: list[str]
    threshold: float
    per_layer: list[LayerAdvice]
    predicted: dict
    context: dict
    table: str
    format: str = FORMAT_NAME
    notes: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path) -> None:
        """advice.json, atomically: a killed write never leaves half a file under the name."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path) -> "Advice":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("format") != FORMAT_NAME:
                raise ValueError(f"format is {data.get('format')!r}, not {FORMAT_NAME!r}")
            data["per_layer"] = [LayerAdvice(**row) for row in data["per_layer"]]
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ValueError(f"{path} is not an advice file written by `advise`: {exc}") from None


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def timed_layers(calls: list[TracedCall], table: LatencyTable) -> list[str]:
    """The layers whose every call has a dense median in the table: the prediction sums their table
    times, and the rest of the model is timed with them stubbed."""
    specs = [c.spec for c in calls if c.spec is not None]
    dense = dict(zip([s.key() for s in specs], table.medians_ms(specs)))
    layers = dict.fromkeys(c.layer for c in calls)
    for c in calls:
        if c.spec is None or not math.isfinite(dense[c.spec.key()]):
            layers.pop(c.layer, None)
    return list(layers)


def predict(dense_sum: float, sparse_sum: float, n_calls: int, calib: dict | None, rest_ms: float | None) -> dict:
    """End-to-end prediction from the timed layers' sums, dense and as converted (see the module doc):
    the calibrated sums plus the measured rest; without a rest, the whole calibration on the layers."""
    calib = calib or calibration.identity()
    if rest_ms is not None:
        calib = {**calib, "offset_ms": 0.0}  # the one call a network pays is in the measured rest
    rest = 0.0 if rest_ms is None else float(rest_ms)
    layers_dense = float(calibration.apply(dense_sum, n_calls, calib))
    layers_sparse = float(calibration.apply(sparse_sum, n_calls, calib))
    return {
        "dense_ms": layers_dense + rest,
        "sparse_ms": layers_sparse + rest,
        "speedup": (layers_dense + rest) / (layers_sparse + rest),
        "layers_dense_ms": layers_dense,
        "layers_sparse_ms": layers_sparse,
        "rest_ms": rest,
        "n_layer_calls": n_calls,
        "calibration": calib,
    }


def summarize(
    calls: list[TracedCall],
    table: LatencyTable,
    threshold: float = DEFAULT_THRESHOLD,
    model_dense_ms: float | None = None,
    rest_ms: float | None = None,
) -> Advice:
    """Advice from traced calls and a table holding their measurements (see the module docstring):
    rest_ms is the model with timed_layers() stubbed (layers_stubbed), model_dense_ms the model itself."""
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    specs = [c.spec for c in calls if c.spec is not None]
    dense = dict(zip([s.key() for s in specs], table.medians_ms(specs)))
    sparse_specs = [s.replace(sparsity="2:4") for s in specs]
    sparse = dict(zip([s.key() for s in specs], table.medians_ms(sparse_specs)))
    errors = table.errors()

    by_layer: dict[str, list[TracedCall]] = {}
    for call in calls:
        by_layer.setdefault(call.layer, []).append(call)
    rows = []
    for name, group in by_layer.items():
        first = group[0]
        row = LayerAdvice(
            layer=name,
            kind=first.kind,
            input_shape=list(first.input_shape),
            calls=len(group),
            dense_ms=None,
            sparse_ms=None,
            speedup=None,
            share=None,
            convert=False,
            note=first.note,
        )
        if any(c.spec is None for c in group):
            row.reason = next(c.skipped for c in group if c.spec is None)
        else:
            keys = [c.spec.key() for c in group]
            row.dense_ms = _finite(sum(dense[k] for k in keys))
            row.sparse_ms = _finite(sum(sparse[k] for k in keys))
            if row.dense_ms is None:
                row.reason = errors.get(keys[0], "no dense measurement in the table")
            elif first.sparse_problem:
                row.reason = f"cannot run 2:4: {first.sparse_problem}"
            elif row.sparse_ms is None:
                sparse_key = group[0].spec.replace(sparsity="2:4").key()
                row.reason = errors.get(sparse_key, "no 2:4 measurement in the table")
            else:
                row.speedup = row.dense_ms / row.sparse_ms
                row.convert = row.speedup > threshold
                if not row.convert:
                    row.reason = f"2:4 gains {row.speedup:.2f}x, not above the threshold {threshold:g}x"
        rows.append(row)

    timed_names = set(timed_layers(calls, table))
    timed = [c for c in calls if c.layer in timed_names]
    converted = {r.layer for r in rows if r.convert}
    dense_sum = float(sum(dense[c.spec.key()] for c in timed))
    sparse_sum = float(sum((sparse if c.layer in converted else dense)[c.spec.key()] for c in timed))
    notes = []
    if rest_ms is None:
        notes.append("the rest of the model was not timed: the prediction covers the traced layers only")
    predicted = predict(dense_sum, sparse_sum, len(timed), table.calibration(), rest_ms)
    if model_dense_ms is not None and abs(predicted["dense_ms"] / model_dense_ms - 1) > 0.1:
        notes.append(
            f"the layers timed alone plus the rest ({predicted['dense_ms']:.3f} ms) miss the dense model as "
            f"measured ({model_dense_ms:.3f} ms) by more than 10%: its layers do not cost inside it what they "
            "cost alone"
        )
    total = model_dense_ms if model_dense_ms is not None else predicted["dense_ms"]
    for row in rows:
        row.share = _finite(row.dense_ms / total) if row.dense_ms is not None and total > 0 else None
    predicted.update(
        model_dense_measured_ms=model_dense_ms, layers_sum_dense_ms=dense_sum, layers_sum_sparse_ms=sparse_sum
    )
    return Advice(
        layers=[r.layer for r in rows if r.convert],
        threshold=float(threshold),
        per_layer=rows,
        predicted=predicted,
        context=table.context,
        table=str(table.path),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# The whole run


@contextlib.contextmanager
def _backend_here(ref: BackendRef):
    """The backend created in this process (its context, and the model timed in the same setting);
    the process's CPU affinity and torch threads, which a backend sets, are restored afterwards."""
    import torch

    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    try:
        yield ref.create()
    finally:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)


@contextlib.contextmanager
def layers_stubbed(model, example_input, layers):
    """`model` with each named layer replaced (until exit) by a stub that returns, call by call, the
    output the layer gave on `example_input`: same shape, dtype and memory layout, no work. Timing
    it times what the layers do not cover. The same tensors are returned at every forward pass."""
    import torch

    modules = dict(model.named_modules())
    outputs = {name: [] for name in layers}
    hooks = [modules[n].register_forward_hook(lambda m, a, out, n=n: outputs[n].append(out)) for n in layers]
    try:
        with torch.inference_mode():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()

    def stub(name):
        replies = itertools.cycle(outputs[name])  # a layer called k times per pass replies in call order
        return lambda *args, **kwargs: next(replies)

    try:
        for n in layers:
            modules[n].forward = stub(n)  # an instance attribute shadows the class's forward
        yield model
    finally:
        for n in layers:
            modules[n].__dict__.pop("forward", None)


def time_model(model, example_input, backend) -> float:
    """Median end-to-end time (ms) of the model, under the backend's timing policy and threads, with
    at most 2 warm-up calls and 5 repeats required (a whole model can take seconds a call)."""
    import torch

    from pysparse24.timing import cuda_event_sampler, measure_adaptive, wall_clock_sampler

    def run():
        with torch.inference_mode():
            model(example_input)

    policy = backend.policy
    policy = dataclasses.replace(
        policy, warmup_min=min(policy.warmup_min, 2), min_repeats=min(policy.min_repeats, 5), chunk=1
    )
    sample = cuda_event_sampler(run) if example_input.is_cuda else wall_clock_sampler(run)
    return measure_adaptive(sample, policy).median_ms


def advise(
    model,
    example_input,
    table,
    backend: str = "torch",
    backend_options: dict | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    workers: int = 1,
    progress: bool = True,
    time_end_to_end: bool = True,
    log=print,
) -> Advice:
    """Trace `model` on `example_input`, measure its layers dense and 2:4 into `table` (a path or a
    LatencyTable; only missing keys, resumable), and advise which layers to convert (see module doc).

    `backend` is a registered backend name or 'module:callable'; `backend_options` its keyword options
    (precision and batch come from the example input). With the torch backend the model is also timed
    end to end (dense, same threads), and with its timed layers stubbed: what they do not cover."""
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    table_path = Path(table.path if isinstance(table, LatencyTable) else table)
    calls = trace(model, example_input)
    specs = [c.spec for c in calls if c.spec is not None]
    if not specs:
        raise ValueError(
            "no traced layer can be expressed as a table spec: "
            + "; ".join(f"{c.layer}: {c.skipped}" for c in calls[:5])
        )
    options = {"precision": specs[0].precision, "batch": specs[0].batch, **dict(backend_options or {})}
    ref = BackendRef(backend, options)
    with _backend_here(ref) as here:  # before any worker starts: refuse what cannot work, quickly
        context = here.context()
    if SPARSE_EXECUTOR not in context:
        raise ValueError(cannot_run_sparse(context.get("backend")))
    if table_path.exists():
        with LatencyTable(table_path) as lut:
            ensure_same_context(lut.context, context, "this backend")
    # Each layer's dense spec, and its 2:4 spec where the layer can run 2:4 at all: timing the others
    # would only fill the table with errors.
    capable = [c.spec for c in calls if c.spec is not None and c.sparse_problem is None]
    measure = specs + [s.replace(sparsity="2:4") for s in capable]
    report = build_table(table_path, measure, ref, workers=workers, progress=progress)
    log(report.summary())
    incapable = sorted({c.layer for c in calls if c.spec is not None and c.sparse_problem})
    if incapable:
        log(f"{len(incapable)} layer(s) cannot run 2:4 and were timed dense only (reasons in the advice)")
    if report.interrupted:
        raise KeyboardInterrupt
    with _backend_here(ref) as here, LatencyTable(table_path) as lut:
        model_ms = rest_ms = None
        if time_end_to_end and backend == "torch":
            with layers_stubbed(model, example_input, timed_layers(calls, lut)) as rest:
                rest_ms = time_model(rest, example_input, here)
            model_ms = time_model(model, example_input, here)
        return summarize(calls, lut, threshold, model_ms, rest_ms)


# ---------------------------------------------------------------------------------------------
# Presentation


def print_advice(advice: Advice, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=160))  # logs: whole rows

    def ms(x):
        return "-" if x is None else f"{x:.4f}"

    out = Table(
        title=f"advise: {len(advice.layers)} of {len(advice.per_layer)} layers worth 2:4 "
        f"(speedup > {advice.threshold:g}x)"
    )
    for col in ("layer", "type", "input", "dense ms", "2:4 ms", "speedup", "share"):
        out.add_column(col, justify="right" if col in ("dense ms", "2:4 ms", "speedup", "share") else "left")
    out.add_column("advice (reasons in the JSON)", no_wrap=True, overflow="ellipsis", max_width=48)
    for r in advice.per_layer:
        out.add_row(
            r.layer,
            r.kind,
            "x".join(map(str, r.input_shape)) + (f" (x{r.calls})" if r.calls > 1 else ""),
            ms(r.dense_ms),
            ms(r.sparse_ms),
            "-" if r.speedup is None else f"{r.speedup:.2f}x",
            "-" if r.share is None else f"{100 * r.share:.1f}%",
            "[green]2:4[/]"
            if r.convert
            else "dense"
            if r.speedup is not None
            else f"dense: {r.reason.removeprefix('ValueError: ')}",
        )
    console.print(out)
    p = advice.predicted
    console.print(
        f"predicted end to end: dense {p['dense_ms']:.3f} ms, advised 2:4 {p['sparse_ms']:.3f} ms, "
        f"speedup {p['speedup']:.3f}x (layers {p['layers_dense_ms']:.3f} -> {p['layers_sparse_ms']:.3f} ms, "
        f"rest of the model {p['rest_ms']:.3f} ms)"
        + (
            ""
            if p["model_dense_measured_ms"] is None
            else f"; dense model measured {p['model_dense_measured_ms']:.3f} ms"
        ),
        soft_wrap=True,
    )
    for note in advice.notes:
        console.print(f"note: {note}", soft_wrap=True)


def speedup_png(advice: Advice, path, title: str = "") -> None:
    """Per-layer 2:4 speedup bars (advised layers highlighted), threshold and 1x lines."""
    from pysparse24._plot import new_figure

    rows = [r for r in advice.per_layer if r.speedup is not None]
    if not rows:
        raise ValueError("no layer has both a dense and a 2:4 measurement: nothing to plot")
    fig, ax = new_figure((max(6.0, 0.22 * len(rows) + 2), 4.2))
    colors = ["tab:green" if r.convert else "tab:gray" for r in rows]
    ax.bar(range(len(rows)), [r.speedup for r in rows], color=colors)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(advice.threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {advice.threshold:g}x")
    ax.set_xticks(range(len(rows)), [r.layer for r in rows], rotation=90, fontsize=6)
    ax.set_ylim(0, 1.1 * max(advice.threshold, *(r.speedup for r in rows)))
    p = advice.predicted
    ax.set(
        ylabel="2:4 speedup over dense (table)",
        title=title or f"{len(advice.layers)} layers advised; predicted end to end {p['speedup']:.2f}x",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------
# Command line: `pysparse24 advise` (this module is registered under the pysparse24.commands entry
# point, so pysparse24 never imports profiler) and `profiler advise`.

HELP = "measure where 2:4 pays for a model, layer by layer, and write advice.json"


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-shape must look like 1x3x224x224, got {text!r}") from None
    if not shape or any(v <= 0 for v in shape):
        raise ValueError(f"--input-shape needs positive sizes, got {text!r}")
    return shape


def load_model(target: str):
    """'module:callable' -> the nn.Module the callable returns (the current directory is importable)."""
    from torch import nn

    from pysparse24._cli import resolve_reference

    factory = resolve_reference(target, "--model")
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {target} gave a {type(model).__name__}, not a torch.nn.Module")
    return model


def add_arguments(p) -> None:
    from pysparse24._cli import add_backend_options

    p.add_argument(
        "--model",
        required=True,
        metavar="MODULE:CALLABLE",
        help="a function (or module attribute) returning the torch.nn.Module to advise on",
    )
    p.add_argument("--input-shape", required=True, help="example input shape, e.g. 1x3x224x224 or 1x128x768")
    p.add_argument("--dtype", default="float32", choices=MODEL_DTYPES, help="model and input dtype")
    p.add_argument("--table", required=True, type=Path, help="latency table to read and extend (SQLite)")
    p.add_argument("--out", required=True, type=Path, help="advice file to write (JSON)")
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"convert a layer when 2:4 is faster than dense by more than this (default {DEFAULT_THRESHOLD})",
    )
    p.add_argument("--backend", default="torch", help="torch (default: really runs 2:4), tensorrt, or module:callable")
    add_backend_options(p)
    p.add_argument("--plot", type=Path, help="also write the per-layer speedup as a PNG")
    p.add_argument("--seed", type=int, default=0, help="seed of the random example input (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import torch

    from .build import BackendStartError
    from .table import ContextMismatchError

    shape = parse_shape(args.input_shape)
    for option, path in (("--out", args.out), ("--table", args.table)):
        if not path.absolute().parent.is_dir():
            raise ValueError(f"{option}: directory {path.absolute().parent} does not exist")
    dtype = getattr(torch, args.dtype)
    model = load_model(args.model).eval().to(dtype)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed)).to(dtype)
    try:
        advice = advise(
            model,
            x,
            args.table,
            backend=args.backend,
            backend_options=dict(args.backend_options),
            threshold=args.threshold,
            progress=not args.quiet,
        )
    except ContextMismatchError as exc:
        raise ValueError(f"--table {args.table} was built in another context: {exc}") from None
    except BackendStartError as exc:
        raise ValueError(str(exc)) from None
    print_advice(advice)
    advice.write(args.out)
    print(f"wrote {args.out}")
    if args.plot:
        speedup_png(advice, args.plot, title=f"{args.model} {args.input_shape} {args.dtype}")
        print(f"wrote {args.plot}")
    return 0
