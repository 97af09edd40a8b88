"""Showing GEMM results: a rich table, CSV, a Markdown table (for RESULTS.md), a speedup plot."""

from __future__ import annotations

import csv
from pathlib import Path

from pysparse24.bench.gemm import GemmResult

COLUMNS = [
    "backend",
    "dtype",
    "M",
    "N",
    "K",
    "layer",
    "threads",
    "cache",
    "dense_ms",
    "dense_p10_ms",
    "dense_p90_ms",
    "sparse_ms",
    "sparse_p10_ms",
    "sparse_p90_ms",
    "speedup",
    "dense_gflops",
    "sparse_gflops",
    "dense_MB",
    "sparse_MB",
]


def rows(results: list[GemmResult]) -> list[dict]:
    """One flat record per result (the CSV columns)."""
    out = []
    for r in results:
        c = r.case
        out.append(
            {
                "backend": r.backend,
                "dtype": c.dtype,
                "M": c.M,
                "N": c.N,
                "K": c.K,
                "layer": c.layer,
                "threads": r.threads,
                "cache": "cold" if r.cold else "warm",
                "dense_ms": r.dense["median_ms"],
                "dense_p10_ms": r.dense["p10_ms"],
                "dense_p90_ms": r.dense["p90_ms"],
                "sparse_ms": r.sparse["median_ms"],
                "sparse_p10_ms": r.sparse["p10_ms"],
                "sparse_p90_ms": r.sparse["p90_ms"],
                "speedup": r.speedup,
                "dense_gflops": r.dense_gflops,
                "sparse_gflops": r.sparse_gflops,
                "dense_MB": r.dense_bytes / 1e6,
                "sparse_MB": r.sparse_bytes / 1e6,
            }
        )
    return out


def write_csv(results: list[GemmResult], path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows(results))


def _ms(stats: dict) -> str:
    return f"{stats['median_ms']:.3f} [{stats['p10_ms']:.3f}-{stats['p90_ms']:.3f}]"


def _cells(r: GemmResult) -> list[str]:
    c = r.case
    return [
        r.backend,
        c.dtype,
        f"{c.M}x{c.N}x{c.K}",
        c.layer or "-",
        _ms(r.dense),
        _ms(r.sparse),
        f"{r.speedup:.2f}x",
        f"{r.dense_gflops:.1f}",
        f"{r.sparse_gflops:.1f}",
        f"{r.dense_bytes / 1e6:.1f} / {r.sparse_bytes / 1e6:.1f}",
    ]


HEADERS = [
    "backend",
    "dtype",
    "MxNxK",
    "layer",
    "dense ms [p10-p90]",
    "sparse ms [p10-p90]",
    "speedup",
    "dense GFLOP/s",
    "sparse GFLOP/s*",
    "MB dense / sparse",
]


def print_table(results: list[GemmResult], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    cache = {"cold" if r.cold else "warm" for r in results}
    threads = {r.threads for r in results}
    table = Table(
        title=f"2:4 sparse vs dense GEMM, threads {'/'.join(map(str, sorted(threads)))}, "
        f"{'/'.join(sorted(cache))} cache  (* dense-equivalent: 2*M*N*K / time)"
    )
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("backend", "dtype", "layer") else "right")
    for r in results:
        cells = _cells(r)
        cells[6] = f"[{'green' if r.speedup >= 1 else 'red'}]{cells[6]}[/]"
        table.add_row(*cells)
    if console is None:
        console = Console()
        if not console.is_terminal:  # files and pipes: don't squeeze the table into 80 columns
            console = Console(width=200)
    console.print(table)


def markdown(results: list[GemmResult]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in results]
    return "\n".join(lines) + "\n"


def plot_speedup(results: list[GemmResult], path) -> None:
    """Speedup (dense / sparse median) vs N, one line per (backend, dtype, M, K)."""
    from pysparse24._plot import new_figure

    series: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        c = r.case
        label = f"{r.backend} {c.dtype} M={c.M} K={c.K}" + (f" ({c.layer})" if c.layer else "")
        series.setdefault(label, []).append((c.N, r.speedup))
    fig, ax = new_figure((7, 4.5))
    for label, points in series.items():
        points.sort()
        ax.plot([n for n, _ in points], [s for _, s in points], marker="o", label=label)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (columns of X: batch x tokens)")
    ax.set_ylabel("speedup of 2:4 sparse over dense")
    ax.set_title("2:4 sparse GEMM speedup vs N")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=120)
