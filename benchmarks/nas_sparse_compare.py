"""Does choosing which stages run 2:4 help the search? (issue 18, section 3)

On one latency table holding the dense and the 2:4 row of every layer of a sparsity-aware space
(--space: demo_sparse, or benchmarks/data/demo_sparse_wide.json, whose wide stages the CPU 2:4
kernels run faster than dense in bf16), for three latency budgets and several seeds, at equal trials:
  dense-only       `run_search` on the space with every stage dense (SearchSpace.with_context)
  sparsity-aware   `run_search` on the space itself (its stages also choose dense or 2:4)
  random           `run_search` on the space with sampler="random" (same seeding, same budget
                   handling): the baseline the sparsity-aware BO run is compared with
The objective is short training on scikit-learn's digits (profiler.nas.train.train_candidate: 2:4
stages pruned once, retrained with masks fixed). It is deterministic (seeded, one thread per
worker), so a candidate that several searches find is trained once: scores are cached per network
in OUT/scores/. --objective swaps in another score (profiler.nas.proxy:naswot, the training-free one
that sees 2:4 stages pruned; it is seconds per network, so no cache), or nas_sparse_compare:mmacs.
Budgets are percentiles of the dense space's estimates, the same milliseconds for
every search. Every study lives in OUT/studies.sqlite: rerun the same command to resume (finished
searches cost a few seconds of pricing, scored networks come from the cache). The loop runs seed by
seed, so a stopped run has every budget and method for the seeds it finished.

    profiler build --table lut.sqlite --space demo_sparse --backend torch -o threads=1
    python benchmarks/nas_sparse_compare.py --table lut.sqlite --out nas_compare            # full
    python benchmarks/nas_sparse_compare.py --table lut.sqlite --out nas_compare \\
        --trials 10 --seeds 3 --dense-epochs 1 --sparse-epochs 1 --max-resolution 16      # reduced
    profiler build --table wide_bf16.sqlite --space benchmarks/data/demo_sparse_wide.json \\
        --backend torch --precision bf16 -o threads=1                                    # 2:4 pays
    python benchmarks/nas_sparse_compare.py --table wide_bf16.sqlite --out nas_wide \\
        --space benchmarks/data/demo_sparse_wide.json --trials 15 --dense-epochs 1 --sparse-epochs 1 \\
        --max-resolution 8

Writes OUT/summary.md (best score per budget and method, mean and spread over seeds, how many
best candidates run stages 2:4), OUT/results.json (every scored candidate) and OUT/pareto.png (one
panel per budget: the fronts of all seeds' candidates, dense-only vs sparsity-aware).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # spawned workers inherit sys.path: they import this module

from profiler.nas.estimate import LatencyEstimator  # noqa: E402
from profiler.nas.search import SearchConfig, pareto_front, run_search  # noqa: E402
from profiler.nas.space import load_space  # noqa: E402
from profiler.table import LatencyTable  # noqa: E402

OBJECTIVE = "nas_sparse_compare:cached_digits_accuracy"
METHODS = (("dense-only", "dense", "gp"), ("sparsity-aware", "sparse", "gp"), ("random", "sparse", "random"))


def cached_digits_accuracy(network) -> float:
    """The digits objective with the settings in $NAS_COMPARE (JSON), cached in $NAS_COMPARE_CACHE."""
    from profiler.nas.train import train_candidate
    from pysparse24._files import atomic_output

    settings = json.loads(os.environ["NAS_COMPARE"])
    name = hashlib.sha256(("".join(s.key() for s in network) + json.dumps(settings, sort_keys=True)).encode())
    path = Path(os.environ["NAS_COMPARE_CACHE"]) / f"{name.hexdigest()[:24]}.json"
    if path.exists():
        return json.loads(path.read_text())["accuracy"]
    start = time.perf_counter()
    accuracy = train_candidate(network, **settings)[0]
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"accuracy": accuracy, "seconds": time.perf_counter() - start}))
    return accuracy


def mmacs(network) -> float:
    """Millions of multiply-adds of the network as built: a score that rewards exactly the capacity a
    faster 2:4 stage can buy under a budget (is the search able to find it?), blind to accuracy."""
    from profiler.nas.complexity import complexity

    return complexity(network).macs / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, required=True, help="table with the dense and 2:4 rows of --space")
    parser.add_argument("--space", default="demo_sparse", help="a sparsity-aware space: built-in name or file")
    parser.add_argument("--out", type=Path, default=Path("nas_compare"))
    parser.add_argument(
        "--objective",
        default=OBJECTIVE,
        help="module:function scoring a network (default: the digits objective below, cached; "
        "profiler.nas.proxy:naswot is the training-free one)",
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", default="25,50,75", help="percentiles of the dense space's estimates")
    parser.add_argument("--initial", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dense-epochs", type=int, default=2)
    parser.add_argument("--sparse-epochs", type=int, default=2)
    parser.add_argument("--max-resolution", type=int, default=32)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scores").mkdir(exist_ok=True)
    os.environ["NAS_COMPARE"] = json.dumps(
        {"dense_epochs": args.dense_epochs, "sparse_epochs": args.sparse_epochs, "max_resolution": args.max_resolution}
    )
    os.environ["NAS_COMPARE_CACHE"] = str((args.out / "scores").resolve())
    table = LatencyTable(args.table)
    space = load_space(args.space)
    if not any(len(stage.sparsity) > 1 for stage in space.stages):
        raise SystemExit(f"error: space {space.name!r} has no stage that chooses dense or 2:4")
    estimators = {"dense": LatencyEstimator(table, space.with_context(sparsity="dense"))}
    estimators["sparse"] = LatencyEstimator(table, space)
    dense_latency = estimators["dense"].estimate(estimators["dense"].space.sample(4096, seed=0)).latency_ms
    if not np.isfinite(dense_latency).all():
        raise SystemExit(f"error: {args.table} lacks dense rows of {space.name}; build it as the docstring says")
    budgets = [float(np.percentile(dense_latency, float(q))) for q in args.budgets.split(",")]
    print(f"budgets (ms): {', '.join(f'{b:.4f}' for b in budgets)} (percentiles {args.budgets} of the dense space)")

    results = []
    for seed in range(args.seeds):
        for budget in budgets:
            for method, space_name, sampler in METHODS:
                estimator = estimators[space_name]
                config = SearchConfig(
                    budget_ms=budget,
                    trials=args.trials,
                    objective=args.objective,
                    storage=args.out / "studies.sqlite",
                    workers=args.workers,
                    seed=seed,
                    initial=args.initial,
                    pool=4096,
                    sampler=sampler,
                    study_name=f"{method}-{budget:.5f}ms-seed{seed}",
                )
                start = time.perf_counter()
                found = run_search(estimator.space, estimator, config, progress=False)
                best = found.best
                print(
                    f"budget {budget:.4f} ms seed {seed} {method:15s}: best {best.score:.4f} at {best.latency_ms:.4f} ms, "
                    f"2:4 stages {estimator.space.sparse_stages(best.vector) or '-'} "
                    f"({len(found.ranked)} scored, {time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
                results.append(
                    {
                        "budget_ms": budget,
                        "seed": seed,
                        "method": method,
                        "space": estimator.space.name,
                        "stages": space_name,
                        "candidates": [
                            {
                                "trial": c.trial,
                                "latency_ms": c.latency_ms,
                                "score": c.score,
                                "sparse_stages": estimator.space.sparse_stages(c.vector),
                                "vector": [int(v) for v in c.vector],
                            }
                            for c in found.ranked
                        ],
                    }
                )
                write(args, budgets, results)  # after every search: a stopped run still has its figures
    print((args.out / "summary.md").read_text())


def write(args, budgets, results) -> None:
    settings = {k: v for k, v in vars(args).items() if k not in ("table", "out")}
    (args.out / "results.json").write_text(
        json.dumps(
            {"settings": settings, "table": str(args.table), "budgets_ms": budgets, "searches": results}, indent=1
        )
    )
    (args.out / "summary.md").write_text(summarize(results, budgets, settings))
    label = "digits validation accuracy" if args.objective == OBJECTIVE else args.objective.split(":")[-1]
    plot(results, budgets, args.out / "pareto.png", label)


def summarize(results, budgets, settings) -> str:
    lines = [
        f"settings: {json.dumps(settings)}",
        "",
        "| budget (ms) | method | best score, mean ± std over seeds | per seed | its latency (ms) "
        "| its 2:4 stages | scored candidates with 2:4 stages |",
        "|---|---|---|---|---|---|---|",
    ]
    for budget in budgets:
        for method, _, _ in METHODS:
            runs = [r for r in results if r["budget_ms"] == budget and r["method"] == method]
            bests = [max(r["candidates"], key=lambda c: c["score"]) for r in runs if r["candidates"]]
            if not bests:
                continue
            acc = np.array([b["score"] for b in bests])
            scored = [c for r in runs for c in r["candidates"]]
            lines.append(
                f"| {budget:.4f} | {method} | {acc.mean():.4f} ± {acc.std():.4f} | "
                f"{' '.join(f'{a:.3f}' for a in acc)} | {' '.join('%.3f' % b['latency_ms'] for b in bests)} | "
                f"{' '.join(','.join(b['sparse_stages']) or '-' for b in bests)} | "
                f"{sum(bool(c['sparse_stages']) for c in scored)} of {len(scored)} |"
            )
    # Where does each search put 2:4? Past the `initial` Sobol seeds, a sampler that learns from the
    # table and the scores should run 2:4 where it pays and keep it off where it costs.
    stages = sorted({st for r in results for c in r["candidates"] for st in c["sparse_stages"]})
    if stages:
        lines += [
            "",
            f"Share of the candidates each search scored after its first {settings['initial']} that run a stage 2:4 "
            "(all budgets and seeds):",
            "",
            "| method | scored | " + " | ".join(f"stage {st}" for st in stages) + " |",
            "|---|---|" + "---|" * len(stages),
        ]
        for method, _, _ in METHODS[1:]:
            later = [
                c
                for r in results
                if r["method"] == method
                for c in sorted(r["candidates"], key=lambda c: c["trial"])[settings["initial"] :]
            ]
            if later:
                shares = [sum(st in c["sparse_stages"] for c in later) / len(later) for st in stages]
                lines.append(f"| {method} | {len(later)} | " + " | ".join(f"{x:.0%}" for x in shares) + " |")
    return "\n".join(lines) + "\n"


def plot(results, budgets, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from profiler.nas.search import Candidate

    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for colour, (method, _, _) in zip(("C0", "C3", "C2"), METHODS):
            scored = [c for r in results if r["budget_ms"] == budget and r["method"] == method for c in r["candidates"]]
            if not scored:
                continue
            ax.scatter(
                [c["latency_ms"] for c in scored],
                [c["score"] for c in scored],
                s=10,
                alpha=0.35,
                color=colour,
                marker="o" if method != "random" else "x",
            )
            front = pareto_front(
                [Candidate(i, np.array(c["vector"]), c["latency_ms"], c["score"]) for i, c in enumerate(scored)]
            )
            ax.step(
                [c.latency_ms for c in front],
                [c.score for c in front],
                where="post",
                color=colour,
                marker="s",
                markersize=4,
                label=f"{method} front",
            )
        ax.axvline(budget, color="grey", linestyle="--")
        ax.set_title(f"budget {budget:.3f} ms")
        ax.set_xlabel("estimated latency (ms, LUT sum)")
        ax.set_ylabel(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
