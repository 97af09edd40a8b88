"""The table builder: enumerate unique layer specs -> measure the missing ones -> commit each as it lands.

Resumable by construction: the table is the only state. Every result is committed in its own
transaction the moment it arrives, and a run measures only keys the table lacks, so a build killed at
any moment (even SIGKILL) loses at most the measurements in flight, and its rerun neither repeats
committed work nor duplicates rows (the key is the table's primary key).

Measurements run in worker processes (profiler.pool), never in the parent: a backend that crashes (a segfaulting
runtime) or hangs takes down only its worker; that spec is recorded as failed, a fresh worker takes
over, and the run continues. Workers are local processes, or Ray actors (`ray_address`: one per GPU)
when a user outgrows one machine. Either way the SQLite writes stay in this one parent process, and
the parent gets the measurement context from the workers themselves (on Ray the GPU is theirs, not the
driver's) and refuses workers that disagree.

Workers exchange only plain data with the parent (key strings, LatencyStats as dicts, messages).
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from pysparse24.timing import LatencyStats

from .pool import OK, LocalPool, RayPool, WorkerStartError
from .spec import LayerSpec
from .table import SPARSE_EXECUTOR, LatencyTable, cannot_run_sparse, context_differences, ensure_same_context

# A worker could not create its backend (missing runtime, bad options): nothing can be measured.
BackendStartError = WorkerStartError

DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class BackendRef:
    """How a worker builds its backend: a registered name (profiler.backends.get_backend) or a
    user's own factory as 'module:callable', plus keyword options. Plain data, so it crosses to
    spawned processes and Ray actors."""

    name: str
    options: Mapping = field(default_factory=dict)

    def create(self):
        if ":" in self.name:
            from pysparse24._cli import resolve_reference

            return resolve_reference(self.name, "backend factory")(**self.options)
        from .backends import get_backend  # imported here: the parent never needs a backend itself

        return get_backend(self.name, **self.options)


def unique_specs(specs: Iterable[LayerSpec]) -> list[LayerSpec]:
    """Specs without repeats (by key), in first-seen order."""
    first = {}
    for spec in specs:
        first.setdefault(spec.key(), spec)
    return list(first.values())


def specs_from_source(
    *,
    space: str | None = None,
    samples: int | None = None,
    seed: int = 0,
    networks: Iterable[str | Path] | None = None,
    keys_file: str | Path | None = None,
    batch: int = 1,
    precision: str = "fp32",
    sparsity: str | None = None,
) -> list[LayerSpec]:
    """The unique specs of one source: a search space (all its layers, or those of `samples` Sobol
    candidates), GPUNet network configs, or a file of keys (one per line; '#' starts a comment).
    `sparsity` puts every spec at it; None: dense, or for a space each stage's own (a sparsity-aware
    space yields the dense and the 2:4 variant of every layer its 2:4-capable stages produce)."""
    if sum(x is not None for x in (space, networks, keys_file)) != 1:
        raise ValueError("give exactly one source: a search space, network configs or a keys file")
    if samples is not None and space is None:
        raise ValueError("samples applies to a search space only")
    if keys_file is not None:
        lines = Path(keys_file).read_text().splitlines()
        keys = [line.strip() for line in lines]
        return unique_specs(LayerSpec.from_key(k) for k in keys if k and not k.startswith("#"))
    if networks is not None:
        from .nas.gpunet import load_gpunet_config

        return unique_specs(
            s
            for path in networks
            for s in load_gpunet_config(path, batch=batch, precision=precision, sparsity=sparsity or "dense")
        )
    from .nas.space import load_space

    search_space = load_space(space).with_context(batch=batch, precision=precision, sparsity=sparsity)
    if samples is None:
        return search_space.layer_specs()
    return unique_specs(s for vector in search_space.sample(samples, seed=seed) for s in search_space.decode(vector))


@dataclass
class BuildReport:
    requested: int = 0  # unique specs asked for
    already: int = 0  # had stats before this run
    known_errors: int = 0  # failed in an earlier run and not retried
    measured: int = 0  # measured and committed by this run
    failed: int = 0  # failed in this run (recorded with their errors)
    interrupted: bool = False

    def summary(self) -> str:
        text = (
            f"{self.requested} unique specs: {self.already} already in the table, {self.measured} measured, "
            f"{self.failed} failed, {self.known_errors} skipped (failed before; --retry-errors to retry)"
        )
        return text + (" — interrupted, rerun to resume" if self.interrupted else "")


def _identical_context(contexts: list[dict]) -> dict:
    for other in contexts[1:]:
        diffs = context_differences(contexts[0], other, "one worker", "another")
        if diffs:
            raise ValueError("workers report different measurement contexts (a mixed cluster?): " + "; ".join(diffs))
    return contexts[0]


def _backend_worker(backend_ref: BackendRef):
    """A pool worker's setup: its backend, and the backend's context as its hello."""
    backend = backend_ref.create()
    return functools.partial(_measure, backend), backend.context()


def _measure(backend, key: str) -> dict:
    stats = backend.measure(LayerSpec.from_key(key))
    if not isinstance(stats, LatencyStats):
        raise TypeError(f"backend returned {type(stats).__name__}, not LatencyStats")
    return stats.to_dict()


def start_pool(
    backend_ref: BackendRef, workers: int = 1, ray_address: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
):
    """Workers measuring one key at a time: local processes (keep workers x backend threads <= cores
    on a CPU target, or the table records contention), or Ray actors, one per GPU of the cluster
    (`workers` CPU actors on one without). Returns the pool and the context the workers measure in,
    which all must report alike."""
    setup = functools.partial(_backend_worker, backend_ref)
    if ray_address:
        pool = RayPool(
            setup, ray_address, workers=workers if workers > 1 else None, timeout_s=timeout_s, what="backend"
        )
    else:
        pool = LocalPool(setup, workers=workers, timeout_s=timeout_s, what="backend")
    try:
        return pool, _identical_context(pool.hellos)
    except BaseException:
        pool.close()
        raise


# ---- the build loop ------------------------------------------------------------------------------
def build_table(
    table_path,
    specs: Iterable[LayerSpec],
    backend_ref: BackendRef,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    retry_errors: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
) -> BuildReport:
    """Measure every spec the table at `table_path` lacks and commit each result as it arrives.

    The table is created with the workers' context if it does not exist; an existing table must
    have been measured in the same context. Returns what happened (KeyboardInterrupt stops the run
    cleanly: everything committed so far stays).
    """
    specs = unique_specs(specs)
    report = BuildReport(requested=len(specs))
    keys = [s.key() for s in specs]
    todo, table = keys, None
    try:
        table = LatencyTable(table_path)
    except FileNotFoundError:  # no table yet: created below with the workers' context
        pass
    else:
        todo = table.missing(keys)
        report.already = len(keys) - len(todo)
        if not retry_errors:
            known = table.errors()
            report.known_errors = sum(k in known for k in todo)
            todo = [k for k in todo if k not in known]
    # Even with nothing to measure the backend is started once: a request in another context (other
    # threads, another backend) must be refused, not reported as "all already in the table".
    workers = workers if todo else 1
    pool = None
    try:
        pool, context = start_pool(backend_ref, workers, ray_address, timeout_s)
        _check_specs_fit(specs, todo, context)
        if table is None:
            table = LatencyTable(table_path, context=context)
        else:
            ensure_same_context(table.context, context, "the backend")
        if todo:
            _drive(pool, table, todo, report, progress)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if pool is not None:
            pool.close()
        if table is not None:
            table.close()
    return report


def _check_specs_fit(specs: list[LayerSpec], todo: list[str], context: Mapping) -> None:
    """A backend is set up for one batch size and precision (both in its context), and runs 2:4 only
    when its context names a sparse executor: specs it cannot measure would only fill the table with
    errors, so refuse them up front."""
    todo = set(todo)
    sparse = sum(s.sparsity != "dense" for s in specs if s.key() in todo)
    if SPARSE_EXECUTOR not in context and sparse:
        raise ValueError(
            f"{sparse} of the specs to measure are 2:4 (a sparsity-aware space, or sparsity='2:4'), "
            f"but {cannot_run_sparse(context.get('backend'))}"
        )
    misfits = [
        s
        for s in specs
        if s.key() in todo
        and any(name in context and getattr(s, name) != context[name] for name in ("batch", "precision"))
    ]
    if misfits:
        raise ValueError(
            f"{len(misfits)} specs do not match the backend's batch {context.get('batch')} / precision "
            f"{context.get('precision')!r} (first: {misfits[0].key()}); set the backend's batch/precision "
            f"options to match the specs"
        )


def _drive(pool, table: LatencyTable, todo: list[str], report: BuildReport, progress: bool) -> None:
    from pysparse24._progress import Progress

    pending = deque(todo)
    with Progress("measuring", len(todo), enabled=progress) as bar:
        while pending or pool.busy():
            while pending and pool.has_idle():
                key = pending.popleft()
                pool.submit(key, key)
            for key, (kind, payload) in pool.wait(1.0):
                if kind == OK:
                    table.put(key, LatencyStats(**payload))
                    report.measured += 1
                else:
                    table.put_error(key, payload)
                    report.failed += 1
                bar.advance(key, failed=kind != OK)
