"""Demo: prune + compress a real-sized weight (a Llama-7B MLP projection, 11008x4096 float16),
report sparsity, sizes and throughput, check the round trip, and write a compressed checkpoint."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import pysparse24
from pysparse24.checkpoint import compress_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--rows", type=int, default=11008)
    parser.add_argument("--cols", type=int, default=4096)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    w = np.random.default_rng().standard_normal((args.rows, args.cols)).astype(np.float16)
    print(f"weight {w.shape} float16, {w.nbytes / 2**20:.1f} MiB, SIMD path: {pysparse24._C.active_isa()}")

    c = pysparse24.compress(w, prune=True)  # warm-up: thread start, first touch of output pages
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        c = pysparse24.compress(w, prune=True)
        timings.append(time.perf_counter() - start)
    seconds = statistics.median(timings)
    dense = pysparse24.decompress(c)
    sparsity = 1 - np.count_nonzero(dense) / dense.size
    kept = float(np.abs(dense.astype(np.float32)).sum() / np.abs(w.astype(np.float32)).sum())
    assert pysparse24.is_sparse(dense) and np.array_equal(dense, pysparse24.prune(w)), "round trip failed"
    print(
        f"mask+compress: {seconds * 1e3:.1f} ms (median of 5 after a warm-up) = {w.nbytes / seconds / 1e9:.1f} GB/s of input"
    )
    print(
        f"sparsity {sparsity:.1%}, kept |w| {kept:.1%}; values {c.values.nbytes / 2**20:.1f} MiB + meta "
        f"{c.meta.nbytes / 2**20:.2f} MiB = {c.nbytes / c.dense_nbytes:.4f} of dense; round trip bit-exact"
    )

    np.save(out / "weight.npy", w)
    manifest = compress_checkpoint(out / "weight.npy", out / "weight_2to4", prune=True)
    print(f"checkpoint: {out / 'weight_2to4'} ({manifest['totals']['compressed']} tensor compressed)")


if __name__ == "__main__":
    main()
