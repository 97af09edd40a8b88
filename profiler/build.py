"""The table builder: enumerate unique layer specs -> measure the missing ones -> commit each as it lands.

Resumable by construction: the table is the only state. Every result is committed in its own
transaction the moment it arrives, and a run measures only keys the table lacks, so a build killed at
any moment (even SIGKILL) loses at most the measurements in flight, and its rerun neither repeats
committed work nor duplicates rows (the key is the table's primary key).

Measurements run in worker processes, never in the parent: a backend that crashes (a segfaulting
runtime) or hangs takes down only its worker; that spec is recorded as failed, a fresh worker takes
over, and the run continues. Workers are local processes, or Ray actors (`ray_address`: one per GPU)
when a user outgrows one machine. Either way the SQLite writes stay in this one parent process, and
the parent gets the measurement context from the workers themselves (on Ray the GPU is theirs, not the
driver's) and refuses workers that disagree.

Workers exchange only plain data with the parent (key strings, LatencyStats as dicts, messages).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from pysparse24._cli import ctrl_c_ignored_by_children
from pysparse24.timing import LatencyStats

from .spec import LayerSpec
from .table import SPARSE_EXECUTOR, LatencyTable, cannot_run_sparse, context_differences, ensure_same_context

# One worker's answer for one key: ("ok", LatencyStats fields as a dict) or ("error", message).
Outcome = tuple[str, object]

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


def measure_outcome(backend, key: str) -> Outcome:
    """Measure one key; any exception becomes an error outcome (the run goes on)."""
    try:
        stats = backend.measure(LayerSpec.from_key(key))
        if not isinstance(stats, LatencyStats):
            raise TypeError(f"backend returned {type(stats).__name__}, not LatencyStats")
        return ("ok", stats.to_dict())
    except Exception as exc:  # noqa: BLE001 - a failing spec is data, not a reason to stop
        return ("error", f"{type(exc).__name__}: {exc}")


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


class BackendStartError(RuntimeError):
    """A worker could not create its backend (missing runtime, bad options): nothing can be measured."""


def _identical_context(contexts: list[dict]) -> dict:
    for other in contexts[1:]:
        diffs = context_differences(contexts[0], other, "one worker", "another")
        if diffs:
            raise ValueError("workers report different measurement contexts (a mixed cluster?): " + "; ".join(diffs))
    return contexts[0]


# ---- local worker processes ---------------------------------------------------------------------
class WorkerPool:
    """What the build loop drives: workers that each measure one key at a time. Subclasses fill
    `_idle` (free workers) and `_busy` (in flight), set `context`, and implement submit/wait/close."""

    context: dict

    def has_idle(self) -> bool:
        return bool(self._idle)

    def busy(self) -> int:
        return len(self._busy)

    def submit(self, key: str) -> None:
        """Hand `key` to an idle worker."""
        raise NotImplementedError

    def wait(self, poll_s: float = 1.0) -> list[tuple[str, Outcome]]:
        """(key, outcome) of what finished within poll_s; a worker that died or hung yields an error
        outcome for its key and is replaced."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _process_worker_main(conn, backend_ref: BackendRef) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the parent stops us
    try:
        try:
            backend = backend_ref.create()
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the build
            conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("ready", backend.context()))
        while (key := conn.recv()) is not None:
            conn.send(measure_outcome(backend, key))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent is gone or stopping (Ctrl-C reaches the whole process group): exit quietly


class _ProcessWorker:
    def __init__(self, mp, backend_ref: BackendRef) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=_process_worker_main, args=(child, backend_ref), daemon=True)
        with ctrl_c_ignored_by_children():
            self.proc.start()
        child.close()
        self.key: str | None = None
        self.started = 0.0

    def handshake(self, timeout_s: float) -> dict:
        if not self.conn.poll(timeout_s):
            raise BackendStartError(f"a worker did not start its backend within {timeout_s:.0f} s")
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            raise BackendStartError(
                f"a worker died while starting its backend (exit code {self.proc.exitcode})"
            ) from None
        if kind != "ready":
            raise BackendStartError(f"cannot start the backend: {payload}")
        return payload

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


class LocalPool(WorkerPool):
    """`n` worker processes (spawned: no fork of a parent holding runtime threads), each measuring one
    key at a time. On a CPU target, workers measured at once compete for cores: keep
    workers x backend threads <= cores, or the table records contention."""

    def __init__(self, backend_ref: BackendRef, workers: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._mp = multiprocessing.get_context("spawn")
        self._ref, self._timeout_s = backend_ref, timeout_s
        self._idle = [_ProcessWorker(self._mp, backend_ref) for _ in range(workers)]
        self._busy: list[_ProcessWorker] = []
        try:
            self.context = _identical_context([w.handshake(timeout_s) for w in self._idle])
        except BaseException:
            self.close()
            raise

    def submit(self, key: str) -> None:
        worker = self._idle.pop()
        if not worker.proc.is_alive():  # died while idle (the OOM killer, say): use a fresh one
            worker.kill()
            worker = self._fresh_worker()
        worker.key, worker.started = key, time.monotonic()
        worker.conn.send(key)
        self._busy.append(worker)

    def wait(self, poll_s: float = 1.0) -> list[tuple[str, Outcome]]:
        waitables = {}
        for w in self._busy:
            waitables[w.conn] = waitables[w.proc.sentinel] = w
        ready = multiprocessing.connection.wait(list(waitables), timeout=poll_s)
        results, finished = [], set()
        for obj in ready:
            worker = waitables[obj]
            if worker in finished:
                continue
            finished.add(worker)
            try:
                outcome = worker.conn.recv() if worker.conn.poll() else None
            except (EOFError, OSError):
                outcome = None
            if outcome is None:  # the process is gone without an answer: this key crashed it
                worker.proc.join(timeout=5)  # the pipe closes a moment before the exit code is known
                outcome = ("error", f"worker process died while measuring (exit code {worker.proc.exitcode})")
                self._replace(worker)
            results.append((worker.key, outcome))
        now = time.monotonic()
        for worker in self._busy:
            if worker not in finished and now - worker.started > self._timeout_s:
                finished.add(worker)
                results.append((worker.key, ("error", f"timed out after {self._timeout_s:.0f} s (worker killed)")))
                self._replace(worker)
        for worker in finished:
            self._busy.remove(worker)
            if worker.proc.is_alive():
                self._idle.append(worker)
        return results

    def _replace(self, worker: _ProcessWorker) -> None:
        worker.kill()
        self._idle.append(self._fresh_worker())

    def _fresh_worker(self) -> _ProcessWorker:
        worker = _ProcessWorker(self._mp, self._ref)
        worker.handshake(self._timeout_s)
        return worker

    def close(self) -> None:
        for worker in self._idle:
            try:
                worker.conn.send(None)  # polite stop for idle workers; kill() is the fallback
                worker.proc.join(timeout=5)
            except OSError:
                pass
        for worker in self._idle + self._busy:
            worker.kill()
        self._idle, self._busy = [], []


# ---- Ray actors -----------------------------------------------------------------------------------
class RayMeasurer:
    """A Ray actor body: one backend, measuring one key at a time (wrapped by ray.remote at run time)."""

    def __init__(self, backend_ref: BackendRef) -> None:
        self.backend = backend_ref.create()

    def context(self) -> dict:
        return self.backend.context()

    def measure(self, key: str) -> Outcome:
        return measure_outcome(self.backend, key)


class RayPool(WorkerPool):
    """Ray actors, one per GPU of the cluster (or `workers` CPU actors on a cluster without GPUs).

    `address` is a Ray cluster address ('auto', 'ray://host:10001', ...) or 'local' to start a
    private local cluster. Ray is imported only here.
    """

    def __init__(
        self,
        address: str,
        backend_ref: BackendRef,
        workers: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        init_options: Mapping | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError("RayPool needs Ray: pip install 'pysparse24[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, **dict(init_options or {}))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            count, resources = workers or gpus, {"num_gpus": 1}
        else:
            count, resources = workers or int(ray.cluster_resources().get("CPU", 1)), {"num_cpus": 1}
        self._actor_cls = ray.remote(**resources)(RayMeasurer)
        self._ref, self._timeout_s = backend_ref, timeout_s
        self._idle = [self._actor_cls.remote(backend_ref) for _ in range(count)]
        self._busy: dict = {}  # ObjectRef -> (actor, key, start time)
        try:
            self.context = _identical_context(ray.get([a.context.remote() for a in self._idle], timeout=timeout_s))
        except ray.exceptions.RayError as exc:
            self.close()
            raise BackendStartError(f"cannot start the backend on the Ray workers: {exc}") from None

    def submit(self, key: str) -> None:
        actor = self._idle.pop()
        self._busy[actor.measure.remote(key)] = (actor, key, time.monotonic())

    def wait(self, poll_s: float = 1.0) -> list[tuple[str, Outcome]]:
        ray = self._ray
        ready, _ = ray.wait(list(self._busy), num_returns=1, timeout=poll_s)
        results = []
        for ref in ready:
            actor, key, _ = self._busy.pop(ref)
            try:
                results.append((key, tuple(ray.get(ref))))
                self._idle.append(actor)
            except ray.exceptions.RayError as exc:  # the actor died (crash, node lost)
                results.append((key, ("error", f"Ray worker died while measuring: {type(exc).__name__}")))
                self._replace(actor)
        now = time.monotonic()
        for ref, (actor, key, started) in list(self._busy.items()):
            if now - started > self._timeout_s:
                del self._busy[ref]
                results.append((key, ("error", f"timed out after {self._timeout_s:.0f} s (worker killed)")))
                self._replace(actor)
        return results

    def _replace(self, actor) -> None:
        self._ray.kill(actor)
        self._idle.append(self._actor_cls.remote(self._ref))

    def close(self) -> None:
        for actor in self._idle + [a for a, _, _ in self._busy.values()]:
            self._ray.kill(actor)
        self._idle, self._busy = [], {}


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
        pool = (
            RayPool(ray_address, backend_ref, workers=workers if workers > 1 else None, timeout_s=timeout_s)
            if ray_address
            else LocalPool(backend_ref, workers=workers, timeout_s=timeout_s)
        )
        _check_specs_fit(specs, todo, pool.context)
        if table is None:
            table = LatencyTable(table_path, context=pool.context)
        else:
            ensure_same_context(table.context, pool.context, "the backend")
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


def _drive(pool: WorkerPool, table: LatencyTable, todo: list[str], report: BuildReport, progress: bool) -> None:
    from pysparse24._progress import Progress

    pending = deque(todo)
    with Progress("measuring", len(todo), enabled=progress) as bar:
        while pending or pool.busy():
            while pending and pool.has_idle():
                pool.submit(pending.popleft())
            for key, (kind, payload) in pool.wait():
                if kind == "ok":
                    table.put(key, LatencyStats(**payload))
                    report.measured += 1
                else:
                    table.put_error(key, payload)
                    report.failed += 1
                bar.advance(key, failed=kind != "ok")
