"""The `pysparse24` command: compress / decompress checkpoints, `bench gemm`, and the latency-table
tools as `pysparse24 lut ...` and `pysparse24 nas ...` (also installed as `profiler` and `nas`).

Failures, Ctrl-C and --version behave as in every command of the project (pysparse24._cli).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

from pysparse24._cli import add_version, run

# The command groups of the profiler package, which ships in the same distribution: forwarded by
# module name, imported only when run (pysparse24's library never imports profiler). Built in rather
# than entry points so that they work in a source checkout too; single commands of other packages
# come through the plugin group below.
_FORWARDED = {
    "lut": ("profiler.cli", "latency lookup tables: build, show, export, import, validate"),
    "nas": ("profiler.nas.cli", "hardware-aware NAS on a latency table: estimate, search"),
}


# Library messages name parameters; on the command line they are these flags.
_FLAGS = {"compress with prune=True": "pass --prune", "min_elements=": "--min-elements "}


def _as_flags(message: str) -> str:
    for parameter, flag in _FLAGS.items():
        message = message.replace(parameter, flag)
    return message


def _cmd_compress(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pysparse24.checkpoint import compress_checkpoint

    def progress(name, entry):
        mark = "compressed" if entry["status"] == "compressed" else f"skipped: {_as_flags(entry['reason'])}"
        print(f"  {name} {tuple(entry['shape'])} {entry['dtype']}: {mark}", file=sys.stderr, flush=True)

    manifest = compress_checkpoint(
        args.input,
        args.output,
        format=args.format,
        prune=args.prune,
        min_elements=args.min_elements,
        progress=None if args.quiet else progress,
    )
    totals = manifest["totals"]
    table = Table(title=f"{args.input} -> {args.output} ({args.format})")
    for col in ("compressed", "skipped", "dense MB", "compressed MB", "ratio"):
        table.add_column(col, justify="right")
    ratio = totals["compressed_bytes"] / totals["dense_bytes"] if totals["dense_bytes"] else float("nan")
    table.add_row(
        str(totals["compressed"]),
        str(totals["skipped"]),
        f"{totals['dense_bytes'] / 1e6:.2f}",
        f"{totals['compressed_bytes'] / 1e6:.2f}",
        f"{ratio:.4f}",
    )
    Console().print(table)
    return 0


def _cmd_decompress(args) -> int:
    from pysparse24.checkpoint import decompress_checkpoint

    restored = decompress_checkpoint(args.input, args.output)
    print(f"restored {len(restored)} tensors into {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysparse24", description="NVIDIA 2:4 structured sparsity tools")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress every eligible weight of a .npy/.safetensors file")
    p.add_argument("input", help="checkpoint: .npy or .safetensors")
    p.add_argument("output", help="output directory (tensors.safetensors + manifest.json)")
    p.add_argument("--format", choices=["packed", "cutlass"], default="packed")
    p.add_argument(
        "--prune", action="store_true", help="prune to 2:4 by magnitude first (else non-2:4 weights are skipped)"
    )
    p.add_argument("--min-elements", type=int, default=0, help="skip tensors smaller than this")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-tensor lines on stderr")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("decompress", help="restore a checkpoint written by `pysparse24 compress`")
    p.add_argument("input", help="directory written by `pysparse24 compress`")
    p.add_argument("output", help="output file (.safetensors or .npy)")
    p.set_defaults(func=_cmd_decompress)

    from pysparse24.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)  # `pysparse24 bench gemm`
    for name, (_, help_text) in _FORWARDED.items():  # listed for --help; parsed by their own parsers
        sub.add_parser(name, help=help_text, add_help=False)
    for entry in _plugin_commands().values():  # listed here; parsed and run by main() (see _run_plugin)
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
    add_version(parser)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return run(f"pysparse24 {entry.name}", lambda: module.run(args))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _FORWARDED:
        module_name, _ = _FORWARDED[argv[0]]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            print(
                f"pysparse24 {argv[0]}: error: needs the profiler package and its extra "
                f"(pip install 'pysparse24[profiler]'): {exc}",
                file=sys.stderr,
            )
            return 2
        return module.main(argv[1:], prog=f"pysparse24 {argv[0]}")
    plugins = _plugin_commands()
    if argv and argv[0] in plugins:
        return _run_plugin(plugins[argv[0]], argv[1:])
    args = build_parser().parse_args(argv)
    return run(f"pysparse24 {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
