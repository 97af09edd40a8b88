"""GPU benchmark: cuSPARSELt 2:4 sparse GEMM vs dense cuBLAS, and compress-kernel bandwidth vs a
device-to-device copy. Prints a table and writes JSON (--out), rewritten after every case so that a
crash or a timeout loses nothing. Without a GPU it says why and exits 0.

    python3 benchmarks/bench_cuda.py --out cuda_bench.json            # square GEMMs + compress
    python3 benchmarks/bench_cuda.py --llm --out cuda_bench.json      # + LLM layer shapes
    python3 benchmarks/bench_cuda.py --gemm 8192x8192x8192 --dtypes float16 --repeats 100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Run as a script from anywhere, this file's checkout (and its in-place build) comes first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pysparse24.cuda as pcuda  # noqa: E402

DEFAULT_GEMMS = ["4096x4096x4096", "8192x8192x8192"]
# LLM layer shapes (Llama-2-7B: 4096 / 11008, Llama-3-8B and Mistral-7B: 4096 / 14336): every
# M, K in LLM_DIMS with N tokens in LLM_TOKENS (1: a decode step, 2048: a prefill).
LLM_DIMS = [4096, 11008, 14336]
LLM_TOKENS = [1, 16, 128, 2048]
DEFAULT_COMPRESS = ["8192x8192", "16384x16384"]


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def llm_shapes() -> list[str]:
    return [f"{m}x{n}x{k}" for m in LLM_DIMS for k in LLM_DIMS for n in LLM_TOKENS]


class Results:
    """The JSON document, rewritten (atomically) after every case."""

    def __init__(self, path: str | None, header: dict):
        self.path, self.data = path, {**header, "gemm": [], "compress": []}
        self.save()

    def add(self, kind: str, row: dict) -> None:
        self.data[kind].append(row)
        self.save()

    def save(self) -> None:
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


def run_gemms(results: Results, shapes: list[str], args) -> None:
    from pysparse24.cuda import gemm_bench

    print(
        f"{'MxNxK':>18} {'dtype':>14} {'dense ms':>9} {'sparse ms':>9} {'dense TF/s':>10} {'sparse TF/s':>11} "
        f"{'speedup':>7}"
    )
    for shape in shapes:
        m, n, k = parse_shape(shape)
        for dtype in args.dtypes:
            start = time.perf_counter()
            try:
                r = gemm_bench.time_gemm_pair(m, n, k, dtype, args.warmup, args.repeats)
            except (pcuda.CudaError, RuntimeError, ValueError) as e:  # an unsupported combination: say so, go on
                print(f"{shape:>18} {dtype:>14} failed: {e}", flush=True)
                results.add("gemm", {"shape": shape, "dtype": dtype, "error": str(e)})
                continue
            sparse = gemm_bench.summarize(r["sparse_ms"], flops=r["flops"])
            r.update(sparse_summary=sparse, seconds=time.perf_counter() - start)
            if r["dense_ms"]:
                dense = gemm_bench.summarize(r["dense_ms"], flops=r["flops"])
                r.update(dense_summary=dense, speedup=dense["median_ms"] / sparse["median_ms"])
                figures = (
                    f"{dense['median_ms']:9.3f} {sparse['median_ms']:9.3f} {dense['tflops']:10.1f} "
                    f"{sparse['tflops']:11.1f} {r['speedup']:6.2f}x"
                )
            else:
                figures = (
                    f"{'-':>9} {sparse['median_ms']:9.3f} {'-':>10} {sparse['tflops']:11.1f}  dense: {r['dense_error']}"
                )
            results.add("gemm", r)
            padded = f" (N padded to {r['N_sparse']})" if r["N_sparse"] != n else ""
            print(f"{shape:>18} {dtype:>14} {figures}{padded}", flush=True)


def run_compress(results: Results, args) -> None:
    from pysparse24.cuda import gemm_bench

    print(f"\n{'MxK':>12} {'dtype':>9} {'format':>8} {'compress GB/s':>13} {'copy GB/s':>9} {'ratio':>6}")
    for shape in args.compress:
        m, k = parse_shape(shape)
        for dtype in ("float16", "bfloat16", "int8"):
            for fmt in ("packed", "cutlass"):
                try:
                    r = gemm_bench.time_compress(m, k, dtype, fmt, args.warmup, args.repeats)
                except (pcuda.CudaError, RuntimeError, ValueError) as e:
                    print(f"{shape:>12} {dtype:>9} {fmt:>8} failed: {e}", flush=True)
                    results.add("compress", {"shape": shape, "dtype": dtype, "format": fmt, "error": str(e)})
                    continue
                comp = gemm_bench.summarize(r["compress_ms"], nbytes=r["compress_bytes"])
                copy = gemm_bench.summarize(r["copy_ms"], nbytes=r["copy_bytes"])
                r.update(compress_summary=comp, copy_summary=copy, ratio=comp["gbps"] / copy["gbps"])
                results.add("compress", r)
                print(
                    f"{shape:>12} {dtype:>9} {fmt:>8} {comp['gbps']:13.0f} {copy['gbps']:9.0f} {r['ratio']:6.2f}",
                    flush=True,
                )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gemm", nargs="*", default=DEFAULT_GEMMS, help="MxNxK shapes")
    p.add_argument(
        "--llm", action="store_true", help="also the LLM layer shapes (M, K in %s; N in %s)" % (LLM_DIMS, LLM_TOKENS)
    )
    p.add_argument("--compress", nargs="*", default=DEFAULT_COMPRESS, help="MxK shapes")
    p.add_argument("--dtypes", nargs="*", default=["float16", "bfloat16", "int8", "float8_e4m3fn"])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", help="write all raw times and summaries here (JSON)")
    args = p.parse_args(argv)
    reason = pcuda.unavailable_reason()
    if reason:
        print(f"bench_cuda: skipped: {reason}")
        Results(args.out, {"skipped": reason, "pysparse24": str(Path(pcuda.__file__).parents[1])})
        return 0
    import torch

    from pysparse24.cuda import cusparselt

    device = torch.cuda.get_device_name()
    results = Results(
        args.out,
        {
            "device": device,
            "capability": list(torch.cuda.get_device_capability()),
            "torch": torch.__version__,
            "build": pcuda.build_info(),
            "cusparselt": ".".join(map(str, cusparselt.version())),
        },
    )
    print(f"device: {device}, cuSPARSELt {results.data['cusparselt']}, torch {torch.__version__}")
    # The square shapes and compress first: the LLM sweep is the longest and comes last.
    run_gemms(results, args.gemm, args)
    run_compress(results, args)
    if args.llm:
        run_gemms(results, llm_shapes(), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
