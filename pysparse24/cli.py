"""The `pysparse24` command: compress / decompress checkpoints (more subcommands register here)."""
from __future__ import annotations

import argparse
import importlib.metadata
import sys

from rich.console import Console
from rich.table import Table

console = Console()


def _cmd_compress(args) -> int:
    from pysparse24.checkpoint import compress_checkpoint

    def progress(name, entry):
        mark = "[green]compressed[/]" if entry["status"] == "compressed" else f"[yellow]skipped[/]: {entry['reason']}"
        console.print(f"  {name} {tuple(entry['shape'])} {entry['dtype']}: {mark}")

    manifest = compress_checkpoint(args.input, args.output, format=args.format, prune=args.prune,
                                   min_elements=args.min_elements, progress=progress)
    totals = manifest["totals"]
    table = Table(title=f"{args.input} -> {args.output} ({args.format})")
    for col in ("compressed", "skipped", "dense MB", "compressed MB", "ratio"):
        table.add_column(col, justify="right")
    ratio = totals["compressed_bytes"] / totals["dense_bytes"] if totals["dense_bytes"] else float("nan")
    table.add_row(str(totals["compressed"]), str(totals["skipped"]), f"{totals['dense_bytes'] / 1e6:.2f}",
                  f"{totals['compressed_bytes'] / 1e6:.2f}", f"{ratio:.4f}")
    console.print(table)
    return 0


def _cmd_decompress(args) -> int:
    from pysparse24.checkpoint import decompress_checkpoint

    restored = decompress_checkpoint(args.input, args.output)
    console.print(f"restored {len(restored)} tensors into {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysparse24", description="NVIDIA 2:4 structured sparsity tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress every eligible weight of a .npy/.safetensors file")
    p.add_argument("input", help="checkpoint: .npy or .safetensors")
    p.add_argument("output", help="output directory (tensors.safetensors + manifest.json)")
    p.add_argument("--format", choices=["packed", "cutlass"], default="packed")
    p.add_argument("--prune", action="store_true", help="prune to 2:4 by magnitude first (else non-2:4 weights are skipped)")
    p.add_argument("--min-elements", type=int, default=0, help="skip tensors smaller than this")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("decompress", help="restore a checkpoint written by `pysparse24 compress`")
    p.add_argument("input", help="directory written by `pysparse24 compress`")
    p.add_argument("output", help="output file (.safetensors or .npy)")
    p.set_defaults(func=_cmd_decompress)

    from pysparse24.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)  # `pysparse24 bench gemm`
    for entry in _plugin_commands().values():   # listed here; parsed and run by main() (see _run_plugin)
        sub.add_parser(entry.name, help=f"(from {entry.value})", add_help=False)
    return parser


# Subcommands other installed packages contribute (e.g. `advise` from the profiler package) through the
# `pysparse24.commands` entry point group: a module with HELP, add_arguments(parser) and run(args) -> int.
# Discovered by name, loaded only when run, so pysparse24 never imports them otherwise.
PLUGIN_GROUP = "pysparse24.commands"


def _plugin_commands() -> dict:
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def _run_plugin(entry, argv) -> int:
    module = entry.load()
    parser = argparse.ArgumentParser(prog=f"pysparse24 {entry.name}", description=getattr(module, "HELP", None))
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return module.run(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    plugins = _plugin_commands()
    if argv and argv[0] in plugins:
        return _run_plugin(plugins[argv[0]], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
