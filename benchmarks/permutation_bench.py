"""How much magnitude the 2:4 channel permutation search recovers, and how long it takes.

Measures kept |w| under plain 2:4 and after the permutation, as the fraction of the gap to the
bound recovered, on random 64x128 Gaussian matrices (NVIDIA's ASP paper reports about 35% there) and
on layer weights of the digits CNN trained densely (benchmarks/torch_digits_demo.py).
Two bounds: "row half" = the largest half of |w| of every row (what any channel order could keep at
most, since 2:4 keeps exactly half of every row); "unstructured" = the largest half of all |w|.

    python benchmarks/permutation_bench.py --out demo_out/permutation.json    # ~1 minute
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import pysparse24
from pysparse24.torch import find_permutation
from pysparse24.torch.permutation import channels_last_matrix


def unstructured_half(matrix: np.ndarray) -> float:
    magnitude = np.sort(np.abs(matrix.astype(np.float64)), axis=None)
    return float(magnitude[magnitude.size // 2 :].sum())


def measure(matrix: np.ndarray, seed: int, escape_attempts: int) -> dict:
    started = time.perf_counter()
    r = find_permutation(matrix, seed=seed, escape_attempts=escape_attempts)
    seconds = time.perf_counter() - started
    # Re-check the search's own figure with the library's mask on the permuted matrix.
    permuted = torch.from_numpy(np.ascontiguousarray(matrix[:, r.permutation]))
    kept = (permuted.abs().double() * pysparse24.mask(permuted, 2, 4, dim=1)).sum().item()
    assert abs(kept - r.kept_after) <= 1e-5 * kept, (kept, r.kept_after)
    unstructured = unstructured_half(matrix)
    return {
        "seconds": seconds,
        "kept_before": r.kept_before,
        "kept_after": r.kept_after,
        "row_half_bound": r.half_bound,
        "unstructured_bound": unstructured,
        "recovered_row_half": r.gap_recovered,
        "recovered_unstructured": (r.kept_after - r.kept_before) / (unstructured - r.kept_before),
    }


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in ("recovered_row_half", "recovered_unstructured", "seconds"):
        values = [r[key] for r in runs]
        out[key] = {"mean": statistics.mean(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def trained_layers(width: int, epochs: int, seed: int) -> dict[str, np.ndarray]:
    """Dense-trained digits CNN layers as (rows x input channels) matrices."""
    import torch_digits_demo as demo

    torch.manual_seed(seed)
    train_data, _ = demo.load_digits_split(seed)
    model = demo.DigitsCNN(width)
    demo.train(model, train_data, epochs, 3e-3, seed)
    return {
        f"w{width}.{name}": channels_last_matrix(model.get_submodule(name).weight.detach()).numpy()
        for name in ("conv2", "conv3", "fc1")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out/permutation.json"))
    parser.add_argument("--matrices", type=int, default=10, help="random 64x128 matrices")
    parser.add_argument("--escapes", type=int, nargs="+", default=[0, 100, 1000])
    parser.add_argument("--epochs", type=int, default=20, help="dense training of the CNN whose layers are measured")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"machine": platform.processor() or platform.machine(), "random_64x128": {}, "trained": {}}

    rng = np.random.default_rng(0)
    matrices = [rng.standard_normal((64, 128)).astype(np.float32) for _ in range(args.matrices)]
    for escapes in args.escapes:
        runs = [measure(m, seed=i, escape_attempts=escapes) for i, m in enumerate(matrices)]
        s = results["random_64x128"][escapes] = summarize(runs)
        print(
            f"random 64x128, {escapes:5d} escape attempts: {100 * s['recovered_row_half']['mean']:.1f}% "
            f"(sd {100 * s['recovered_row_half']['stdev']:.1f}) of the gap to the row-half bound, "
            f"{100 * s['recovered_unstructured']['mean']:.1f}% to the unstructured bound; "
            f"{s['seconds']['mean']:.3f} s per matrix",
            flush=True,
        )

    for width in (8, 16):
        for name, matrix in trained_layers(width, args.epochs, seed=0).items():
            r = results["trained"][name] = measure(matrix, seed=0, escape_attempts=max(args.escapes))
            print(
                f"trained {name:10s} {matrix.shape[0]:4d}x{matrix.shape[1]:<4d}: kept {r['kept_before']:.2f} -> "
                f"{r['kept_after']:.2f} (row-half bound {r['row_half_bound']:.2f}): "
                f"{100 * r['recovered_row_half']:.1f}% of the gap, {r['seconds']:.3f} s",
                flush=True,
            )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
