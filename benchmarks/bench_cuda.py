"""GPU benchmark: cuSPARSELt 2:4 sparse GEMM vs dense cuBLAS, and compress-kernel bandwidth vs a
device-to-device copy. Prints a table and writes JSON (--out). Exits with a message without a GPU.

    python benchmarks/bench_cuda.py --out cuda_bench.json              # the default shape sets
    python benchmarks/bench_cuda.py --gemm 8192x8192x8192 --dtypes float16 --repeats 100
"""
from __future__ import annotations

import argparse
import json
import sys

import pysparse24.cuda as pcuda

DEFAULT_GEMMS = ["8192x8192x8192", "4096x4096x4096", "16384x8192x4096", "4096x128x4096"]
DEFAULT_COMPRESS = ["8192x8192", "16384x16384"]


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gemm", nargs="*", default=DEFAULT_GEMMS, help="MxNxK shapes")
    p.add_argument("--compress", nargs="*", default=DEFAULT_COMPRESS, help="MxK shapes")
    p.add_argument("--dtypes", nargs="*", default=["float16", "bfloat16", "int8", "float8_e4m3fn"])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", help="write all raw times and summaries here (JSON)")
    args = p.parse_args(argv)
    reason = pcuda.unavailable_reason()
    if reason:
        print(f"bench_cuda: skipped: {reason}")
        return 0
    import torch

    from pysparse24.cuda import gemm_bench

    results = {"device": torch.cuda.get_device_name(), "gemm": [], "compress": []}
    print(f"device: {results['device']}")
    print(f"{'shape':>18} {'dtype':>14} {'dense ms':>9} {'sparse ms':>9} {'dense TF/s':>10} {'sparse TF/s':>11} {'speedup':>7}")
    for shape in args.gemm:
        m, n, k = parse_shape(shape)
        for dtype in args.dtypes:
            if dtype == "float8_e4m3fn" and torch.cuda.get_device_capability() < (8, 9):
                continue
            try:
                r = gemm_bench.time_gemm_pair(m, n, k, dtype, args.warmup, args.repeats)
            except (pcuda.CudaError, RuntimeError, ValueError) as e:  # an unsupported combination: say so, go on
                print(f"{shape:>18} {dtype:>14} failed: {e}", flush=True)
                results["gemm"].append({"shape": shape, "dtype": dtype, "error": str(e)})
                continue
            dense = gemm_bench.summarize(r["dense_ms"], flops=r["flops"])
            sparse = gemm_bench.summarize(r["sparse_ms"], flops=r["flops"])
            r.update(dense_summary=dense, sparse_summary=sparse, speedup=dense["median_ms"] / sparse["median_ms"])
            results["gemm"].append(r)
            print(f"{shape:>18} {dtype:>14} {dense['median_ms']:9.3f} {sparse['median_ms']:9.3f} "
                  f"{dense['tflops']:10.1f} {sparse['tflops']:11.1f} {r['speedup']:6.2f}x", flush=True)
    print(f"\n{'shape':>12} {'dtype':>9} {'format':>8} {'compress GB/s':>13} {'copy GB/s':>9} {'ratio':>6}")
    for shape in args.compress:
        m, k = parse_shape(shape)
        for dtype in ("float16", "bfloat16", "int8"):
            for fmt in ("packed", "cutlass"):
                r = gemm_bench.time_compress(m, k, dtype, fmt, args.warmup, args.repeats)
                comp = gemm_bench.summarize(r["compress_ms"], nbytes=r["compress_bytes"])
                copy = gemm_bench.summarize(r["copy_ms"], nbytes=r["copy_bytes"])
                r.update(compress_summary=comp, copy_summary=copy, ratio=comp["gbps"] / copy["gbps"])
                results["compress"].append(r)
                print(f"{shape:>12} {dtype:>9} {fmt:>8} {comp['gbps']:13.0f} {copy['gbps']:9.0f} {r['ratio']:6.2f}",
                      flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
