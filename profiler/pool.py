"""Crash-isolating worker pools: the one home of how profiler runs work outside its own process
(`lut build` measurements, `nas search` evaluations).

A pool keeps `workers` workers, each doing one task at a time with a handler that `setup` makes once
in the worker (a picklable callable returning (handler, hello): a backend and its measurement
context, an objective and nothing). A worker that dies (segfault, SIGKILL, the OOM killer) fails only
the task it held; one running past `timeout_s` is killed and its task reported as timed out; either
way a fresh worker takes its place and the caller goes on.

LocalPool: spawned processes (no fork of a parent holding runtime threads) that ignore SIGINT from
their first instruction: Ctrl-C reaches the whole process group and the driver stops them. RayPool:
the same on a Ray cluster, as actors.

Tasks and results cross as plain data. Each result is (token, Outcome): ("ok", value),
("error", "Type: message") when the handler raised, ("died", message) or ("timeout", message).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import time
from typing import Callable, Mapping

from pysparse24._cli import ctrl_c_ignored_by_children

Outcome = tuple[str, object]
OK, ERROR, DIED, TIMEOUT = "ok", "error", "died", "timeout"


class WorkerStartError(RuntimeError):
    """A worker could not run its setup (a missing runtime, bad options): nothing can run."""


def run_task(handler: Callable, task) -> Outcome:
    """One task; an exception is an error outcome (a failing task is data, the run goes on)."""
    try:
        return OK, handler(task)
    except Exception as exc:  # noqa: BLE001
        return ERROR, f"{type(exc).__name__}: {exc}"


def _timed_out(timeout_s: float) -> Outcome:
    return TIMEOUT, f"timed out after {timeout_s:g} s (worker killed)"


class Pool:
    """What LocalPool and RayPool share: `capacity` workers, `hellos` (each setup's hello), idle
    workers in `_idle`, tasks in flight in `_busy`; submit(token, task), wait(timeout_s), close()."""

    _timeout_s: float | None

    def has_idle(self) -> bool:
        return bool(self._idle)

    def busy(self) -> int:
        return len(self._busy)

    def _wait_s(self, timeout_s: float | None, starts) -> float | None:
        """How long `wait` may block: `timeout_s`, cut to the first task's deadline."""
        if self._timeout_s is None or not starts:
            return timeout_s
        deadline = min(starts) + self._timeout_s - time.monotonic()
        return max(0.0, deadline if timeout_s is None else min(timeout_s, deadline))


# ---- local worker processes ---------------------------------------------------------------------
def _process_main(conn, setup: Callable) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the parent stops us
    try:
        try:
            handler, hello = setup()
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops
            conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("ready", hello))
        while (task := conn.recv()) is not None:
            conn.send(run_task(handler, task))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent is gone or stopping: exit quietly


class _Process:
    def __init__(self, mp, setup: Callable) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=_process_main, args=(child, setup), daemon=True)
        with ctrl_c_ignored_by_children():
            self.proc.start()
        child.close()
        self.token, self.started = None, 0.0

    def handshake(self, timeout_s: float | None, what: str):
        if not self.conn.poll(timeout_s):
            raise WorkerStartError(f"a worker did not start its {what} within {timeout_s:g} s")
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            raise WorkerStartError(
                f"a worker died while starting its {what} (exit code {self.proc.exitcode})"
            ) from None
        if kind != "ready":
            raise WorkerStartError(f"cannot start the {what}: {payload}")
        return payload

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


class LocalPool(Pool):
    """`workers` spawned processes. On a CPU target, tasks run at once compete for cores: keep
    workers x threads per task <= cores. `what` names the setup's product in start-up errors."""

    def __init__(self, setup: Callable, workers: int = 1, timeout_s: float | None = None, what: str = "worker") -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.capacity = workers
        self._mp = multiprocessing.get_context("spawn")
        self._setup, self._timeout_s, self._what = setup, timeout_s, what
        self._idle: list[_Process] = []
        self._busy: list[_Process] = []
        try:
            self._idle = [_Process(self._mp, setup) for _ in range(workers)]  # all start, then all answer
            self.hellos = [w.handshake(timeout_s, what) for w in self._idle]
        except BaseException:
            self.close()
            raise

    def submit(self, token, task) -> None:
        """Hand `task` to an idle worker; its result comes back from `wait` with `token`."""
        worker = self._idle.pop()
        if not worker.proc.is_alive():  # died while idle (the OOM killer, say): use a fresh one
            worker.kill()
            worker = self._fresh()
        worker.token, worker.started = token, time.monotonic()
        worker.conn.send(task)
        self._busy.append(worker)

    def wait(self, timeout_s: float | None = None) -> list[tuple[object, Outcome]]:
        """The (token, outcome) of every task that finished within `timeout_s` (None: at least one),
        a task past the pool's timeout included."""
        if not self._busy:
            return []
        timeout_s = self._wait_s(timeout_s, [w.started for w in self._busy])
        waitables = {}
        for w in self._busy:
            waitables[w.conn] = waitables[w.proc.sentinel] = w
        ready = multiprocessing.connection.wait(list(waitables), timeout=timeout_s)
        finished: dict[_Process, Outcome] = {}
        for worker in (waitables[obj] for obj in ready):
            if worker in finished:
                continue
            try:
                outcome = worker.conn.recv() if worker.conn.poll() else None
            except (EOFError, OSError):
                outcome = None
            if outcome is None:  # the process is gone without an answer: this task crashed it
                worker.proc.join(timeout=5)  # the pipe closes a moment before the exit code is known
                outcome = DIED, f"worker process died (exit code {worker.proc.exitcode})"
            finished[worker] = outcome
        if self._timeout_s is not None:
            now = time.monotonic()
            for worker in self._busy:
                if worker not in finished and now - worker.started >= self._timeout_s:
                    finished[worker] = _timed_out(self._timeout_s)
        for worker, (kind, _) in finished.items():
            self._busy.remove(worker)
            if kind in (OK, ERROR) and worker.proc.is_alive():
                self._idle.append(worker)
            else:  # dead, or hung: a fresh worker takes its place
                worker.kill()
                self._idle.append(self._fresh())
        return [(worker.token, outcome) for worker, outcome in finished.items()]

    def _fresh(self) -> _Process:
        worker = _Process(self._mp, self._setup)
        try:
            worker.handshake(self._timeout_s, self._what)
        except BaseException:
            worker.kill()
            raise
        return worker

    def close(self) -> None:
        """Stops every worker; tasks in flight are abandoned (a trainer may run for hours)."""
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
class RayWorker:
    """A Ray actor body (wrapped by ray.remote at run time): one handler, one task at a time."""

    def __init__(self, setup: Callable) -> None:
        self.handler, self._hello = setup()

    def hello(self):
        return self._hello

    def run(self, task) -> Outcome:
        return run_task(self.handler, task)


class RayPool(Pool):
    """The same on a Ray cluster: `workers` actors, by default one per GPU of the cluster, or one per
    CPU on a cluster without GPUs; `per_worker` (Ray resources, e.g. {"num_cpus": 1}) overrides that.

    `address` is a Ray cluster address ('auto', 'ray://host:10001', ...) or 'local' to start a
    private local cluster, which outlives the pool (ray.shutdown() ends it). Ray is imported only here.
    """

    def __init__(
        self,
        setup: Callable,
        address: str,
        workers: int | None = None,
        timeout_s: float | None = None,
        what: str = "worker",
        per_worker: Mapping | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError("Ray is not installed: pip install 'pysparse24[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if per_worker is None:
            per_worker = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        self.capacity = workers or (gpus if "num_gpus" in per_worker else max(1, int(resources.get("CPU", 1))))
        self._actor_cls = ray.remote(**per_worker)(RayWorker)
        self._setup, self._timeout_s = setup, timeout_s
        self._idle = [self._actor_cls.remote(setup) for _ in range(self.capacity)]
        self._busy: dict = {}  # ObjectRef -> (actor, token, start time)
        try:
            self.hellos = ray.get([a.hello.remote() for a in self._idle], timeout=timeout_s)
        except ray.exceptions.RayError as exc:
            self.close()
            raise WorkerStartError(f"cannot start the {what} on the Ray workers: {exc}") from None

    def submit(self, token, task) -> None:
        actor = self._idle.pop()
        self._busy[actor.run.remote(task)] = (actor, token, time.monotonic())

    def wait(self, timeout_s: float | None = None) -> list[tuple[object, Outcome]]:
        ray = self._ray
        if not self._busy:
            return []
        timeout_s = self._wait_s(timeout_s, [started for _, _, started in self._busy.values()])
        ready, _ = ray.wait(list(self._busy), num_returns=1, timeout=timeout_s)
        results = []
        for ref in ready:
            actor, token, _ = self._busy.pop(ref)
            try:
                results.append((token, tuple(ray.get(ref))))
                self._idle.append(actor)
            except ray.exceptions.RayError as exc:  # the actor died (crash, node lost)
                results.append((token, (DIED, f"Ray worker died: {type(exc).__name__}")))
                self._replace(actor)
        now = time.monotonic()
        for ref, (actor, token, started) in list(self._busy.items()):
            if self._timeout_s is not None and now - started >= self._timeout_s:
                del self._busy[ref]
                results.append((token, _timed_out(self._timeout_s)))
                self._replace(actor)
        return results

    def _replace(self, actor) -> None:
        self._ray.kill(actor)
        self._idle.append(self._actor_cls.remote(self._setup))

    def close(self) -> None:
        for actor in self._idle + [a for a, _, _ in self._busy.values()]:
            self._ray.kill(actor)
        self._idle, self._busy = [], {}
