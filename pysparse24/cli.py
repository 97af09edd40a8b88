"""The `pysparse24` command: compress / decompress checkpoints (more subcommands register here)."""
from __future__ import annotations

import argparse
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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
