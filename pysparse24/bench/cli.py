"""Command line of the GEMM microbenchmark: `pysparse24 bench gemm` / `python -m pysparse24.bench gemm`.

pysparse24 bench gemm                                  # 4096x4096 and 11008x4096, N = 1 8 128 512
pysparse24 bench gemm --shapes 4096x8x4096 --dtype float32 bfloat16 --json r.json --plot r.png
pysparse24 bench gemm --model resnet.onnx --n 1 16     # the Linear/Conv shapes of a model
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pysparse24._cli import add_version, run
from pysparse24._progress import Progress
from pysparse24.bench import report, shapes
from pysparse24.bench.backends import BACKENDS
from pysparse24.bench.gemm import run_cases
from pysparse24.groups import PACKED_K_MULTIPLE, packed_k_problem


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers `bench gemm` on the main CLI's subparsers."""
    bench = subparsers.add_parser("bench", help="microbenchmarks (gemm: 2:4 sparse vs dense)")
    add_gemm_parser(bench.add_subparsers(dest="bench_command", required=True))
    return bench


def add_gemm_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gemm",
        help="time 2:4 sparse vs dense GEMM on your shapes",
        description="Times out(M,N) = W(M,K) @ X(K,N) with W 2:4 sparse (pysparse24.matmul on CPU, "
        "cuSPARSELt on GPU) against the dense GEMM (torch / cuBLAS), same dtype and threads.",
    )
    src = p.add_argument_group("shapes (default: M,K in {4096x4096, 11008x4096}, N in 1 8 128 512)")
    src.add_argument("--m", type=int, nargs="+", help="rows of the sparse weight (sweep)")
    src.add_argument("--k", type=int, nargs="+", help=f"reduction dimension (sweep; multiple of {PACKED_K_MULTIPLE})")
    src.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=shapes.DEFAULT_N,
        help="columns of X: batch x tokens (sweep, and for --model)",
    )
    src.add_argument("--shapes", help="explicit MxNxK list, e.g. 4096x1x4096,11008x8x4096")
    src.add_argument(
        "--model",
        help="take M,K from the Linear/Conv layers of an .onnx file or a "
        "torch model given as 'package.module:attribute'",
    )
    p.add_argument(
        "--dtype",
        nargs="+",
        default=["float32"],
        choices=["float32", "bfloat16", "float16", "int8"],
        help="float16: GPU backends only (torch's CPU float16 GEMM is not a fair baseline)",
    )
    p.add_argument("--backend", default="cpu", choices=sorted(BACKENDS))
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both sparse and dense")
    p.add_argument(
        "--cache",
        choices=["cold", "warm"],
        default="cold",
        help="cold (default): every timed call reads its weight from memory (the "
        "harness cycles through copies larger than the cache), as in a real model; "
        "warm: the same weight back to back",
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", help="write results here after every case (see --resume)")
    p.add_argument("--resume", action="store_true", help="keep cases already in --json")
    p.add_argument("--csv", help="write a CSV table")
    p.add_argument("--markdown", help="write a Markdown table")
    p.add_argument("--plot", help="PNG of speedup vs N per shape")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run_gemm)
    return p


def _cases(args):
    if args.model:
        cases, skipped = shapes.model_cases(args.model, args.n, args.dtype)
        for layer in skipped:
            print(f"skipped {layer}", file=sys.stderr)
        return cases
    if args.shapes:
        return shapes.parse_shapes(args.shapes, args.dtype)
    if args.m is None and args.k is None:
        return [c for d in args.dtype for m, k in shapes.DEFAULT_MK for c in shapes.sweep([m], args.n, [k], [d])]
    return shapes.sweep(args.m or [4096], args.n, args.k or [4096], args.dtype)


def run_gemm(args) -> int:
    cases = _cases(args)
    bad = [c for c in cases if packed_k_problem(c.K) or min(c.M, c.N) < 1]
    if bad:
        raise ValueError(f"K must be a positive multiple of {PACKED_K_MULTIPLE} and M, N positive: {bad[0]}")
    if not cases:
        raise ValueError("no shapes to run")
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if min(args.repeats, args.warmup + 1) < 1:
        raise ValueError("--repeats must be at least 1 and --warmup at least 0")
    largest = max(cases, key=_case_bytes)
    if _case_bytes(largest) > _memory_bytes():
        raise ValueError(
            f"shape {largest.M}x{largest.N}x{largest.K} ({largest.dtype}) needs about "
            f"{_case_bytes(largest) / 2**30:.0f} GiB, more than this machine's memory"
        )
    if args.resume and not args.json:
        raise ValueError("--resume needs --json (the file to resume from)")
    if args.backend == "cpu" and "OMP_WAIT_POLICY" not in os.environ and not args.quiet:
        print(
            "note: OMP_WAIT_POLICY is unset: OpenMP workers left spinning by one library can stall the "
            "other's threads on a busy machine. For steady figures run with OMP_WAIT_POLICY=PASSIVE "
            "(it must be set before Python starts).",
            file=sys.stderr,
        )
    with Progress("gemm", len(cases), enabled=not args.quiet) as bar:
        results = run_cases(
            cases,
            args.backend,
            args.threads,
            args.warmup,
            args.repeats,
            cold=args.cache == "cold",
            json_path=args.json,
            resume=args.resume,
            progress=lambda done, total, c: bar.update(done, f"{c.dtype} {c.M}x{c.N}x{c.K}"),
        )
    report.print_table(results)
    for path in filter(None, (args.csv, args.markdown, args.plot)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if args.csv:
        report.write_csv(results, args.csv)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown(results))
    if args.plot:
        try:
            report.plot_speedup(results, args.plot)
        except ImportError as exc:
            raise ImportError(f"--plot needs matplotlib (pip install 'pysparse24[bench]'): {exc}") from None
    return 0


def _case_bytes(case) -> int:
    """Memory one case holds at once: dense weight, its compressed copy, input and both outputs."""
    item = 4 if case.dtype == "float32" else 2 if case.dtype in ("bfloat16", "float16") else 1
    return item * (2 * case.M * case.K + case.K * case.N) + 4 * 2 * case.M * case.N


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pysparse24.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(parser)
    add_gemm_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run("pysparse24 bench", lambda: args.func(args))
