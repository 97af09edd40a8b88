"""A/B of the pysparse24::linear and ::conv2d ops between two source trees, in 1-thread thread CPU time.

    python benchmarks/ab_linear_call.py OLD_TREE NEW_TREE [--rounds 5]

Each round runs one fresh process per tree (old, then new: interleaved), each timing
torch.ops.pysparse24.linear against F.linear on the same seeded inputs: GPUNet-0's squeeze-excite
1x1 convs and an 8x8 weight at N = 1 (call overhead) and the LLaMA-7B MLP GEMVs; the small shapes
also as torch.ops.pysparse24.conv2d against F.conv2d on a (1, K, 1, 1) input. Prints the median
of the rounds per case. Both trees must be built (setup.py build_ext --inplace). For a machine
shared with other work: thread CPU time counts only this thread's cycles (memory stalls included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SMALL = [(8, 8), (64, 1280), (1280, 64), (176, 3520), (3520, 176)]  # (M, K): 8x8, then GPUNet-0 SE convs
LLAMA = [(11008, 4096), (4096, 11008)]


def one_round(seed: int) -> dict:
    import torch
    import torch.nn.functional as F

    import pysparse24
    import pysparse24.torch  # noqa: F401  (registers the ops)

    torch.set_num_threads(1)
    torch.manual_seed(seed)

    def per_call_ns(fn, reps: int) -> float:
        fn()
        best = float("inf")
        for _ in range(3):
            start = time.thread_time_ns()
            for _ in range(reps):
                fn()
            best = min(best, (time.thread_time_ns() - start) / reps)
        return best

    out = {}
    with torch.no_grad():
        for shapes, reps, unit, scale, with_bias in ((SMALL, 300, "us", 1e3, True), (LLAMA, 3, "ms", 1e6, False)):
            for M, K in shapes:
                for dtype in (torch.float32, torch.bfloat16):
                    w = pysparse24.prune(torch.randn(M, K, dtype=dtype))
                    c = pysparse24.compress(w)
                    b = torch.randn(M, dtype=dtype) if with_bias else None
                    x = torch.randn(1, K, dtype=dtype)
                    key = f"{M}x1x{K} {str(dtype).split('.')[-1]}"
                    op = per_call_ns(lambda: torch.ops.pysparse24.linear(x, c.values, c.meta, b), reps)
                    dense = per_call_ns(lambda: F.linear(x, w, b), reps)
                    out[f"{key} op {unit}"], out[f"{key} F.linear {unit}"] = op / scale, dense / scale
                    if shapes is SMALL:  # the same weight as a 1x1 conv over one pixel
                        x4, w4, one, zero = x.view(1, K, 1, 1), w.view(M, K, 1, 1), [1, 1], [0, 0]
                        op = per_call_ns(
                            lambda: torch.ops.pysparse24.conv2d(x4, c.values, c.meta, b, one, one, zero, one), reps
                        )
                        dense = per_call_ns(lambda: F.conv2d(x4, w4, b), reps)
                        out[f"{key} conv op {unit}"], out[f"{key} F.conv2d {unit}"] = op / scale, dense / scale
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-seed", type=int, help=argparse.SUPPRESS)  # internal: one round in this process
    args = parser.parse_args()
    if args.round_seed is not None:
        sys.path.insert(0, args.new)
        print(json.dumps(one_round(args.round_seed)))
        return 0
    results: dict[str, list] = {"old": [], "new": []}
    for r in range(args.rounds):
        for name in ("old", "new"):
            tree = getattr(args, name)
            cmd = [sys.executable, __file__, tree, tree, "--round-seed", str(100 + r)]
            done = subprocess.run(
                cmd, capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""}
            )
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"seeds 100..{100 + args.rounds - 1}; median of {args.rounds} rounds, 1 thread, thread CPU time")
    for key in results["old"][0]:
        old, new = (statistics.median(run[key] for run in results[name]) for name in ("old", "new"))
        print(f"{key:34s} old {old:9.3f}  new {new:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
