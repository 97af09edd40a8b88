"""`profiler` command line: build, show, export, import and validate latency tables.

pysparse24 lut build --table lut.sqlite --space demo --samples 20      # measure what the table lacks
pysparse24 lut build --table lut.sqlite --networks gpunet/0.65ms.json  # layers of published networks
pysparse24 lut show --table lut.sqlite
pysparse24 lut export --table lut.sqlite lut.csv
pysparse24 lut import --table other.sqlite lut.csv
pysparse24 lut validate --table lut.sqlite ...
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pysparse24._cli import add_backend_options, add_version, run

from . import build as builder
from . import calibration
from .spec import PRECISIONS, SPARSITIES
from .table import LatencyTable, csv_metadata_path, read_export


def _add_build(sub) -> None:
    p = sub.add_parser(
        "build",
        help="measure the layer specs a table lacks (resumable)",
        description="Enumerate unique layer specs, measure those missing from the table and "
        "commit each as it lands. Kill it at any time; rerun to resume.",
    )
    p.add_argument("--table", required=True, type=Path, help="SQLite table to create or extend")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--space", help="search space: a built-in name (demo, gpunet, demo_sparse, gpunet_sparse) or a .json/.toml file"
    )
    src.add_argument(
        "--networks",
        nargs="+",
        metavar="CONFIG",
        help="GPUNet network configs: JSON files or published names (GPUNet-0, GPUNet-D1, ...)",
    )
    src.add_argument(
        "--keys",
        type=Path,
        metavar="FILE",
        help="text file of LayerSpec keys, one per line (e.g. the missing keys a NAS run reported)",
    )
    p.add_argument(
        "--samples",
        type=int,
        help="with --space: measure the layers of N Sobol-sampled "
        "candidates (default: every layer the space can produce)",
    )
    p.add_argument("--seed", type=int, default=0, help="with --samples: Sobol seed (default 0)")
    p.add_argument("--batch", type=int, default=1, help="batch size of every spec and of the backend (default 1)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="precision of every spec and of the backend (default fp32)",
    )
    p.add_argument(
        "--sparsity",
        choices=SPARSITIES,
        help="put every spec at dense or 2:4 (2:4 needs a backend that executes it: torch, tensorrt). "
        "Default: dense, and with --space what the space says: a sparsity-aware space "
        "(demo_sparse, gpunet_sparse) gets both variants of every layer its 2:4 stages can have",
    )
    p.add_argument(
        "--backend",
        default="onnxruntime",
        help="onnxruntime | torch | tensorrt, or your own factory as module:callable",
    )
    add_backend_options(p)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local worker processes measuring at once (default 1; on a CPU target they share its "
        "cores, so keep workers x threads <= cores); with --ray: actors on a GPU-less cluster",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="measure on a Ray cluster, one worker per GPU ('auto', 'ray://host:10001', or 'local')",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=builder.DEFAULT_TIMEOUT_S,
        help="seconds one spec may take before its worker is killed and the spec recorded as failed",
    )
    p.add_argument("--retry-errors", action="store_true", help="measure again the specs that failed before")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_build)


def _run_build(args) -> int:
    specs = builder.specs_from_source(
        space=args.space,
        samples=args.samples,
        seed=args.seed,
        networks=args.networks,
        keys_file=args.keys,
        batch=args.batch,
        precision=args.precision,
        sparsity=args.sparsity,
    )
    # The backend is set up for the specs' batch and precision (it refuses others); -o may override.
    backend_options = {"batch": args.batch, "precision": args.precision, **dict(args.backend_options)}
    report = builder.build_table(
        args.table,
        specs,
        builder.BackendRef(args.backend, backend_options),
        workers=args.workers,
        ray_address=args.ray,
        retry_errors=args.retry_errors,
        timeout_s=args.timeout,
        progress=not args.quiet,
    )
    print(report.summary())
    if report.interrupted:
        raise KeyboardInterrupt  # the shared handler prints the one line and exits 130
    return 0


def _add_table_arg(p) -> None:
    p.add_argument("--table", required=True, type=Path, help="SQLite latency table")


def _run_show(args) -> int:
    console = Console()
    with LatencyTable(args.table) as table:
        console.print(f"[bold]{args.table}[/]: {len(table)} entries, {len(table.errors())} errors", soft_wrap=True)
        ctx = Table("context", "value", box=None)
        for name, value in sorted(table.context.items()):
            ctx.add_row(name, str(value))
        console.print(ctx)
        slow = Table("slowest layers", "median ms", "p10-p90 ms", "n", box=None)
        slow.columns[0].overflow = "fold"  # keys are long; show them whole
        for row in table.slowest(args.top):
            slow.add_row(
                row["key"], f"{row['median_ms']:.4f}", f"{row['p10_ms']:.4f}-{row['p90_ms']:.4f}", str(row["n"])
            )
        console.print(slow)
        errors = table.errors()
        if errors:
            err = Table("failed", "error", box=None)
            err.columns[0].overflow = "fold"
            for key, message in list(errors.items())[: args.top]:
                err.add_row(key, message)
            console.print(err)
        console.print("calibration: " + calibration.describe(table.calibration()), markup=False, highlight=False)
    return 0


def _run_export(args) -> int:
    with LatencyTable(args.table) as table:
        table.export(args.out, fmt=args.format)
        beside = f" (context and calibration in {csv_metadata_path(args.out)})" if _is_csv(args) else ""
        print(f"wrote {len(table)} entries and {len(table.errors())} errors to {args.out}{beside}")
    return 0


def _is_csv(args) -> bool:
    return (args.format or args.out.suffix.lstrip(".")).lower() == "csv"


def _run_import(args) -> int:
    # A new table takes the file's context; an existing one must match it.
    context = read_export(args.file, args.format)["context"] if not args.table.exists() else None
    with LatencyTable(args.table, context) as table:
        counts = table.import_file(args.file, fmt=args.format, replace=args.replace)
        print(f"imported {counts.added} rows into {args.table}, kept {counts.skipped} existing ({len(table)} entries)")
    return 0


def make_parser(prog: str = "profiler") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Per-layer latency lookup tables.")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)

    p = sub.add_parser("show", help="summarize a table: size, context, errors, slowest layers, calibration")
    _add_table_arg(p)
    p.add_argument("--top", type=int, default=10, help="how many slowest layers / errors to list")
    p.set_defaults(run=_run_show)

    p = sub.add_parser("export", help="write a table as CSV or JSON")
    _add_table_arg(p)
    p.add_argument("out", type=Path, help="output file (.csv or .json)")
    p.add_argument("--format", choices=("csv", "json"), help="default: from the file name")
    p.set_defaults(run=_run_export)

    p = sub.add_parser("import", help="merge a CSV/JSON export into a table (same context only)")
    _add_table_arg(p)
    p.add_argument("file", type=Path, help="a file written by `pysparse24 lut export`")
    p.add_argument("--format", choices=("csv", "json"), help="default: from the file name")
    p.add_argument("--replace", action="store_true", help="overwrite keys the table already has")
    p.set_defaults(run=_run_import)

    # Listed here; parsed by main() with the module's own arguments (see _LAZY_COMMANDS).
    for name, (_, help_text) in _LAZY_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# Subcommands whose module is heavy to import (validate pulls in torch): imported only when run, so
# `pysparse24 lut show` stays instant. Each module provides add_arguments(parser) and run(args) -> int.
_LAZY_COMMANDS = {
    "validate": (
        "profiler.validate",
        "compare LUT estimates with end-to-end measurements (MAPE, share within +-10%%, Spearman) and calibrate",
    ),
    "advise": ("profiler.advise", "measure where 2:4 pays for a model, layer by layer, and write advice.json"),
}


def _parse(argv: list[str], prog: str) -> argparse.Namespace:
    if argv and argv[0] in _LAZY_COMMANDS:
        module_name, help_text = _LAZY_COMMANDS[argv[0]]
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"{prog} {argv[0]}", description=help_text.replace("%%", "%"))
        add_version(parser)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        args.command, args.run = argv[0], module.run
        return args
    return make_parser(prog).parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "profiler") -> int:
    """`pysparse24 lut ...`, also installed as `profiler ...`."""
    args = _parse(sys.argv[1:] if argv is None else list(argv), prog)
    return run(f"{prog} {args.command}", lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
