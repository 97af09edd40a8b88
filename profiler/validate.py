"""`pysparse24 lut validate`: does the table predict whole networks? The number that matters.

Sample networks from a search space, measure each end to end on the table's own backend, and
compare with the table's estimate: MAPE, the share within +-10%, Spearman rank correlation, and a
scatter plot. A calibration (see calibration.py) is fitted on a separate split of networks and, by
default, stored in the table, so NAS estimates with the same formula.

Noise: the end-to-end timings are interleaved - every network is measured in each of several
rounds, in a fresh random order, and its least-disturbed round (lowest median) kept - so a burst of
load from other processes lands on many networks a little instead of a few a lot, and a slow drift
between the table build and this run is absorbed by the fitted scale. On a shared machine the table
itself is noisy too (one measurement window per layer); --remeasure measures the sampled networks'
layers in the same interleaved rounds and stores their least-disturbed round in the table.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pysparse24._cli import add_backend_options

from . import calibration
from .backends import TimingPolicy, least_disturbed, measure_interleaved
from .spec import LayerSpec

# One round's measurement of one item: short, because every item gets `rounds` of them.
ROUND_POLICY = TimingPolicy(warmup_min=5, warmup_s=0.01, min_repeats=30, min_time_s=0.03, rel_tol=0.02, budget_s=0.15)


# ---------------------------------------------------------------------------------------------
# The pieces (usable from Python without the command line).


def metrics(estimate_ms, measured_ms) -> dict:
    """MAPE (%), share within +-10%, Spearman rank correlation of estimate vs measured."""
    from scipy.stats import spearmanr

    est, meas = np.asarray(estimate_ms, float), np.asarray(measured_ms, float)
    rel = est / meas - 1
    rho = spearmanr(est, meas).statistic if est.size >= 3 else float("nan")
    return {
        "n": int(est.size),
        "mape_pct": float(100 * np.mean(np.abs(rel))),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "spearman": float(rho),
        "max_abs_err_pct": float(100 * np.max(np.abs(rel))),
    }


def layer_sums(table, networks: list[list[LayerSpec]]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of table medians, layer count) per network; NaN sums where a key is missing."""
    sums = np.array([table.medians_ms([s.key() for s in net]).sum() for net in networks])
    return sums, np.array([len(net) for net in networks], dtype=np.int64)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _quiet(text: str) -> None:
    pass


def fill_missing(table, backend, networks, log=_stderr) -> int:
    """Measure (and store) the layers the table lacks, so every network can be estimated."""
    missing = {s.key(): s for net in networks for s in net if table.get(s) is None}
    for i, spec in enumerate(missing.values(), 1):
        table.put(spec, backend.measure(spec))
        log(f"  measured missing layer {i}/{len(missing)}: {spec.key()}")
    return len(missing)


def measure_interleaved_runs(
    backend, networks, layers=(), rounds: int = 3, policy: TimingPolicy = ROUND_POLICY, seed: int = 0, log=_stderr
) -> tuple[list[list], list[list]]:
    """Networks end to end (and, optionally, single layers) measured in the same interleaved rounds:
    (network stats[net][round], layer stats[layer][round])."""
    runners = []
    for i, item in enumerate([*networks, *layers], 1):
        runners.append(backend.runner(item))
        if i % 25 == 0 or i == len(networks) + len(layers):
            log(f"  prepared {i}/{len(networks) + len(layers)} networks and layers")
    stats = measure_interleaved(runners, rounds, policy, seed=seed, log=log)
    return stats[: len(networks)], stats[len(networks) :]


@dataclass
class Validation:
    networks: list[list[LayerSpec]]
    measured_ms: np.ndarray
    sum_ms: np.ndarray
    n_layers: np.ndarray
    calibration: dict

    @property
    def estimate_ms(self) -> np.ndarray:
        return calibration.apply(self.sum_ms, self.n_layers, self.calibration)

    def metrics(self) -> dict:
        return {
            "calibrated": metrics(self.estimate_ms, self.measured_ms),
            "plain_sum": metrics(self.sum_ms, self.measured_ms),
        }

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics(),
            "calibration": self.calibration,
            "networks": [
                {"keys": [s.key() for s in net], "measured_ms": float(m), "sum_ms": float(s), "estimate_ms": float(e)}
                for net, m, s, e in zip(self.networks, self.measured_ms, self.sum_ms, self.estimate_ms)
            ],
        }


def scatter_png(v: Validation, path, title: str = "") -> None:
    from pysparse24._plot import new_figure

    m = v.metrics()["calibrated"]
    fig, ax = new_figure((5.5, 5))
    lo, hi = 0.9 * min(v.measured_ms.min(), v.sum_ms.min()), 1.1 * max(v.measured_ms.max(), v.sum_ms.max())
    line = np.array([lo, hi])
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="0.9", label="+-10%")
    ax.plot(line, line, color="0.5", lw=1)
    ax.scatter(v.measured_ms, v.sum_ms, s=14, marker="x", color="tab:gray", label="plain sum of layers")
    ax.scatter(v.measured_ms, v.estimate_ms, s=16, color="tab:blue", label="calibrated estimate")
    ax.set(
        xlim=(lo, hi),
        ylim=(lo, hi),
        xlabel="measured end to end (ms)",
        ylabel="table estimate (ms)",
        title=title
        or f"{m['n']} networks: MAPE {m['mape_pct']:.1f}%, "
        f"{100 * m['within_10pct']:.0f}% within 10%, rho {m['spearman']:.3f}",
    )
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------
# Command line (registered by profiler.cli as `pysparse24 lut validate`).


def add_arguments(parser) -> None:
    parser.add_argument("--table", required=True, type=Path, help="SQLite latency table to validate")
    parser.add_argument("--space", default="demo", help="search space to sample: built-in name or file")
    parser.add_argument("--networks", type=int, default=50, help="test networks (default 50)")
    parser.add_argument(
        "--calibrate",
        type=int,
        default=20,
        help="extra networks to fit the calibration on (default 20; 0 = use the table's)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="Sobol seed of the sampled networks")
    parser.add_argument("--backend", default="onnxruntime", help="must match the table's context")
    add_backend_options(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("validate_out"), help="folder for validation.json and scatter.png"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--no-store", action="store_true", help="do not store the fitted calibration in the table")
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="re-measure the sampled networks' layers in the same interleaved rounds as the "
        "networks and store them in the table (for tables built on a noisy, shared machine)",
    )
    parser.add_argument(
        "--min-within",
        type=float,
        default=None,
        help="exit 1 if fewer than this share of test networks are within +-10%%",
    )


def sample_networks(space, count: int, seed: int) -> list[list[LayerSpec]]:
    """`count` distinct networks from Sobol samples of `space` (in sample order)."""
    unique: dict[tuple, list[LayerSpec]] = {}
    for vector in space.sample(4 * count, seed=seed):
        net = space.decode(vector)
        unique.setdefault(tuple(s.key() for s in net), net)
        if len(unique) == count:
            return list(unique.values())
    raise ValueError(
        f"the space gave only {len(unique)} distinct networks in {4 * count} samples; ask for fewer than {count}"
    )


def _open(args):
    """(backend, table) set up like the table: its precision, batch and threads are the defaults."""
    from .build import BackendRef
    from .table import LatencyTable

    if not args.table.exists():
        raise FileNotFoundError(f"no table at {args.table}: run `pysparse24 lut build` first")
    with LatencyTable(args.table) as probe:
        ctx = probe.context
    options = {k: ctx[k] for k in ("precision", "batch", "threads") if k in ctx}
    options.update(args.backend_options)
    backend = BackendRef(args.backend, options).create()
    if not hasattr(backend, "runner"):
        raise ValueError(
            f"validate times whole networks: backend {args.backend!r} must be a "
            "profiler.backends.Backend (measure_network/runner), not only measure(spec)"
        )
    return backend, LatencyTable(args.table, context=backend.context())  # refuses another machine/runtime


def _print_summary(result: Validation, stored: bool) -> None:
    calib = result.calibration
    print(f"calibration: {calibration.describe(calib)}" + ("  (stored in the table)" if stored else ""))
    for name, x in (("plain sum ", result.metrics()["plain_sum"]), ("calibrated", result.metrics()["calibrated"])):
        print(
            f"{name}: MAPE {x['mape_pct']:5.1f}%  within +-10%: {100 * x['within_10pct']:5.1f}%  "
            f"Spearman {x['spearman']:.3f}  worst {x['max_abs_err_pct']:.1f}%"
        )


def run(args) -> int:
    from .nas.space import load_space

    if args.networks < 3 or args.calibrate < 0 or args.rounds < 1:
        raise ValueError("--networks must be >= 3, --calibrate >= 0 and --rounds >= 1")
    t0 = time.perf_counter()
    backend, table = _open(args)
    with table:
        space = load_space(args.space).with_context(batch=backend.batch, precision=backend.precision)
        k = args.calibrate
        networks = sample_networks(space, args.networks + k, args.seed)  # calibration split first
        log = _quiet if args.quiet else _stderr
        log(
            f"validate: {args.networks} test + {k} calibration networks from space {args.space!r} on "
            f"{backend.name} ({table.context.get('device')}, {table.context.get('threads')} thread(s))"
        )

        layers = list({s.key(): s for net in networks for s in net}.values()) if args.remeasure else []
        n_missing = 0 if args.remeasure else fill_missing(table, backend, networks, log=log)
        net_stats, layer_stats = measure_interleaved_runs(
            backend, networks, layers, args.rounds, seed=args.seed, log=log
        )
        for spec, stats in zip(layers, layer_stats):
            table.put(spec, least_disturbed(stats))
        measured = np.array([least_disturbed(s).median_ms for s in net_stats])
        sums, counts = layer_sums(table, networks)
        if k:
            calib = calibration.fit(sums[:k], counts[:k], measured[:k])
            if not args.no_store:
                table.set_calibration(calib)
        else:
            calib = table.calibration()
            if calib is None:
                raise ValueError("--calibrate 0 needs a calibration stored in the table")
        result = Validation(networks[k:], measured[k:], sums[k:], counts[k:], calib)

        report = result.to_dict()
        report.update(
            context=table.context,
            space=args.space,
            missing_layers_measured=n_missing,
            layers_remeasured=len(layers),
            rounds=args.rounds,
            calibration_networks=[
                {"keys": [s.key() for s in net], "measured_ms": float(m)} for net, m in zip(networks[:k], measured[:k])
            ],
            # [round][network], calibration networks first
            rounds_ms=[[round(r.median_ms, 6) for r in rounds] for rounds in zip(*net_stats)],
            seconds=round(time.perf_counter() - t0, 1),
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validation.json").write_text(json.dumps(report, indent=1) + "\n")
    scatter_png(result, args.out / "scatter.png")

    _print_summary(result, stored=bool(k) and not args.no_store)
    print(f"wrote {args.out / 'validation.json'} and {args.out / 'scatter.png'} ({report['seconds']} s)")
    within = result.metrics()["calibrated"]["within_10pct"]
    if args.min_within is not None and within < args.min_within:
        print(f"FAIL: {100 * within:.1f}% within +-10% < required {100 * args.min_within:.1f}%")
        return 1
    return 0
