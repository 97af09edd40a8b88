"""`nas`: the NAS front-end on a latency table.

pysparse24 nas estimate --table lut.sqlite --space demo --samples 100000 --budgets 0.5,1,2
    Phase 1: Sobol candidates priced from the table, counted per latency sub-space; the blocks the
    table lacks are written as a keys file for `pysparse24 lut build --keys`.
pysparse24 nas search --table lut.sqlite --space demo --budget-ms 1.0 --trials 30
    Phase 2: Bayesian optimization inside the sub-space; prints the Pareto front (and which stages
    of each candidate run 2:4) and writes ranked.json / ranked.csv / pareto.png / best.onnx (its 2:4
    stages pruned, the pattern verified in the file) into --out. Rerun the same command to resume.
pysparse24 nas search --table lut.sqlite --space demo_sparse --budget-ms p30 --objective profiler.nas.train:digits_accuracy
    Sparsity-aware search: each stage also chooses dense or 2:4 (the table needs both rows:
    `pysparse24 lut build --space demo_sparse --backend torch`), scored by short training on digits.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from pysparse24._cli import add_version, run

from .estimate import LatencyEstimator, bucket
from .proxy import DEFAULT_OBJECTIVE
from .space import BUILTIN_SPACES, load_space


def _common(p) -> None:
    p.add_argument("--table", required=True, type=Path, help="latency table (SQLite) built by `pysparse24 lut build`")
    p.add_argument(
        "--space",
        default="gpunet",
        help=f"search space: built-in {', '.join(BUILTIN_SPACES)} or a .json/.toml file (default gpunet)",
    )
    p.add_argument("--seed", type=int, default=0, help="Sobol / sampler seed (default 0)")


def _budget(text: str):
    """'0.5' -> 0.5 ms; 'p30' -> ('percentile', 30.0), resolved against the table's estimates."""
    try:
        if text.lower().startswith("p"):
            q = float(text[1:])
            if not 0 < q <= 100:
                raise ValueError
            return ("percentile", q)
        value = float(text)
        if value <= 0:
            raise ValueError
        return value
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds > 0 or pNN (0 < NN <= 100), got {text!r}") from None


def make_parser(prog: str = "nas") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    est = sub.add_parser("estimate", help="Phase 1: price Sobol candidates, count them per latency sub-space")
    _common(est)
    est.add_argument("--samples", type=int, default=100_000, help="Sobol candidates (default 100000)")
    est.add_argument("--budgets", default="0.5,1,2", help="sub-space edges in ms, comma-separated")
    est.add_argument(
        "--missing-keys",
        type=Path,
        metavar="FILE",
        help="write the block keys the table lacks here (for `pysparse24 lut build --keys FILE`)",
    )
    est.set_defaults(run=_run_estimate)

    s = sub.add_parser("search", help="Phase 2: Bayesian optimization inside a latency sub-space")
    _common(s)
    s.add_argument(
        "--budget-ms",
        required=True,
        type=_budget,
        help="latency budget, the sub-space's upper edge: milliseconds, or pNN for the NNth percentile "
        "of the Sobol pool's estimates (e.g. p30: a budget any table can meet)",
    )
    s.add_argument("--min-ms", type=float, default=0.0, help="the sub-space's lower edge (default 0)")
    s.add_argument("--trials", type=int, default=20, help="candidates to score (default 20)")
    s.add_argument(
        "--objective",
        default=DEFAULT_OBJECTIVE,
        help=f"score to maximize, as module:function taking a list of LayerSpec (default {DEFAULT_OBJECTIVE}, "
        "the NASWOT training-free proxy)",
    )
    s.add_argument("--out", type=Path, default=Path("nas_out"), help="output folder (default nas_out)")
    s.add_argument("--storage", type=Path, help="Optuna study file (default OUT/study.sqlite); rerun to resume")
    s.add_argument("--study", help="study name (default: space-min-budget)")
    s.add_argument(
        "--workers",
        type=int,
        default=0,
        help="local worker processes scoring at once (default 0: score in this process)",
    )
    s.add_argument("--ray", metavar="ADDRESS", help="score on a Ray cluster ('local', 'auto', 'ray://host:10001')")
    s.add_argument("--retries", type=int, default=2, help="retries of a failed evaluation (default 2)")
    s.add_argument(
        "--eval-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds one evaluation may take; a longer one is killed and recorded as failed, and the "
        "search goes on (default: no limit; evaluations then run in a worker process)",
    )
    s.add_argument(
        "--sampler",
        choices=("gp", "random"),
        default="gp",
        help="gp: Bayesian optimization (default); random: uniform proposals, the baseline",
    )
    s.add_argument("--initial", type=int, default=8, help="first trials taken from in-budget Sobol candidates")
    s.add_argument(
        "--explore-every",
        type=int,
        default=3,
        help="after those, every Nth trial is an unused in-budget Sobol candidate (default 3; 0: never)",
    )
    s.add_argument("--pool", type=int, default=4096, help="Sobol candidates priced to find them (default 4096)")
    s.add_argument("--no-onnx", action="store_true", help="do not export the best network as ONNX")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(run=_run_search)
    return parser


def _estimator(args):
    from ..table import LatencyTable

    return LatencyEstimator(LatencyTable(args.table), load_space(args.space))


def _run_estimate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    estimator = _estimator(args)
    vectors = estimator.space.sample(args.samples, seed=args.seed)
    start = time.perf_counter()
    result = estimator.estimate(vectors)
    seconds = time.perf_counter() - start
    view = Table(
        title=f"{args.samples} Sobol candidates of space {estimator.space.name!r} "
        f"(priced in {seconds:.2f} s, {args.samples / seconds:,.0f}/s)"
    )
    view.add_column("sub-space")
    view.add_column("candidates", justify="right")
    view.add_column("share", justify="right")
    for sub in bucket(result.latency_ms, budgets):
        view.add_row(sub.label, f"{sub.count}", f"{100 * sub.count / args.samples:.1f}%")
    n_missing = int(result.missing.sum())
    view.add_row("missing blocks (no estimate)", f"{n_missing}", f"{100 * n_missing / args.samples:.1f}%")
    Console().print(view)
    if result.missing_keys:
        print(
            f"{len(result.missing_keys)} blocks are not in the table "
            f"({100 * estimator.coverage:.1f}% of the space's blocks are)."
        )
    if args.missing_keys:
        result.write_missing_keys(args.missing_keys)
        if result.missing_keys:
            print(
                f"wrote them to {args.missing_keys}: measure them with "
                f"`pysparse24 lut build --table {args.table} --keys {args.missing_keys}`"
            )
        else:
            print(f"no blocks are missing: {args.missing_keys} now lists none")
    return 0


def _run_search(args) -> int:
    from .search import SearchConfig, run_search

    estimator = _estimator(args)
    budget_ms = args.budget_ms
    if isinstance(budget_ms, tuple):
        latency = estimator.estimate(estimator.space.sample(args.pool, seed=args.seed)).latency_ms
        if not np.isfinite(latency).any():
            raise ValueError("no Sobol candidate could be priced: the table lacks the space's blocks")
        budget_ms = float(np.nanpercentile(latency, budget_ms[1]))
        print(
            f"budget: {args.budget_ms[1]:g}th percentile of {args.pool} Sobol candidates = {budget_ms:.4g} ms",
            file=sys.stderr,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    config = SearchConfig(
        budget_ms=budget_ms,
        min_ms=args.min_ms,
        trials=args.trials,
        objective=args.objective,
        storage=args.storage or args.out / "study.sqlite",
        study_name=args.study,
        workers=args.workers,
        ray_address=args.ray,
        retries=args.retries,
        timeout_s=args.eval_timeout,
        seed=args.seed,
        initial=args.initial,
        explore_every=args.explore_every,
        pool=args.pool,
        sampler=args.sampler,
    )
    result = run_search(estimator.space, estimator, config, progress=not args.quiet)
    _print_front(result, estimator.space)
    write_results(result, estimator.space, args.out, config, calibrated=estimator.calibration is not None)
    if result.best is not None and not args.no_onnx:
        from .candidate import export_candidate_onnx

        weights = export_candidate_onnx(estimator.space.decode(result.best.vector), args.out / "best.onnx")
        kept = sum(w.is_2to4 for w in weights)
        if kept:
            print(f"best.onnx: {kept} of {len(weights)} conv/gemm weights are 2:4 (verified in the file)")
    print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} to {args.out}/")
    return 0 if result.ranked else 1


def _print_front(result, space) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(
        title=f"Pareto front of study {result.study_name!r}: {len(result.ranked)} scored in budget, "
        f"{result.out_of_budget} proposals out of budget, {result.failed} failed"
    )
    for name in ("trial", "latency (ms)", "score", "layers", "2:4 stages", "vector"):
        view.add_column(name, justify="left" if name in ("vector", "2:4 stages") else "right")
    for c in result.pareto:
        view.add_row(
            str(c.trial),
            f"{c.latency_ms:.4f}",
            f"{c.score:.4f}",
            str(len(space.decode(c.vector))),
            ",".join(space.sparse_stages(c.vector)) or "-",
            " ".join(map(str, c.vector)),
        )
    Console().print(view)
    for error in result.errors:
        print(f"failed: {error}", file=sys.stderr)


def write_results(result, space, out: Path, config, calibrated: bool) -> None:
    """ranked.json / ranked.csv (best score first, with predicted latency) and pareto.png."""
    on_front = {c.trial for c in result.pareto}
    rows = [
        {
            "rank": i + 1,
            "trial": c.trial,
            "score": c.score,
            "latency_ms": c.latency_ms,
            "pareto": c.trial in on_front,
            "sparse_stages": space.sparse_stages(c.vector),
            "vector": [int(v) for v in c.vector],
        }
        for i, c in enumerate(result.ranked)
    ]
    (out / "ranked.json").write_text(
        json.dumps(
            {
                "study": result.study_name,
                "space": space.name,
                "layout": space.layout,
                "budget_ms": config.budget_ms,
                "min_ms": config.min_ms,
                "objective": config.objective,
                "candidates": rows,
            },
            indent=1,
        )
    )
    with open(out / "ranked.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "trial", "score", "latency_ms", "pareto", "sparse_stages", "vector"])
        for r in rows:
            writer.writerow(
                [
                    r["rank"],
                    r["trial"],
                    f"{r['score']:.6g}",
                    f"{r['latency_ms']:.6g}",
                    int(r["pareto"]),
                    " ".join(r["sparse_stages"]),
                    " ".join(map(str, r["vector"])),
                ]
            )
    plot_front(result, out / "pareto.png", config, calibrated)


def plot_front(result, path: Path, config, calibrated: bool) -> None:
    from pysparse24._plot import new_figure

    fig, ax = new_figure((6, 4))
    if result.ranked:
        ax.scatter(
            [c.latency_ms for c in result.ranked],
            [c.score for c in result.ranked],
            s=14,
            alpha=0.5,
            label="scored candidates",
        )
        front = result.pareto
        ax.step(
            [c.latency_ms for c in front],
            [c.score for c in front],
            where="post",
            color="C3",
            marker="o",
            label="Pareto front",
        )
    ax.axvline(config.budget_ms, color="grey", linestyle="--", label=f"budget {config.budget_ms:g} ms")
    ax.set_xlabel(f"estimated latency (ms, {'calibrated ' if calibrated else ''}sum of table entries)")
    ax.set_ylabel("score")
    ax.set_title(result.study_name)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None, prog: str = "nas") -> int:
    """`pysparse24 nas ...`, also installed as `nas ...`."""
    args = make_parser(prog).parse_args(argv)
    return run(f"{prog} {args.command}", lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
