"""Phase 2: Bayesian optimization of a score inside a latency sub-space.

GPUNet's client-server controller: one driver (this process) proposes candidates with Optuna's GP
sampler and keeps `workers` evaluations in flight, on local worker processes or on a Ray cluster;
workers only score networks. Each proposal is priced by the LUT estimate first (microseconds); only
candidates inside the sub-space (min_ms <= latency <= budget_ms) are scored.

A proposal outside the sub-space (or one already scored) is not scored and not shown to the GP as a fake score (a penalty
would teach it that a whole region is bad when only its larger members are over budget). Instead the
trial is closed as failed (the GP ignores failed trials) and the nearest not-yet-used in-budget
candidate of the Sobol pool (L1 distance over choice indices scaled to [0, 1]) is queued and scored
in its place, so every proposal yields one in-budget evaluation near where the GP wanted to look.
The first `initial` trials, and then every `explore_every`-th, are unused in-budget Sobol candidates:
a hedge against a GP that settles in one region (benchmarks/bench_nas_search.py measures it).

Persistence: the study lives in an SQLite file (Optuna RDB storage), committed at every result.
Kill the driver at any moment and run the same command again: finished trials are kept, trials that
were in flight are marked failed and queued again. One driver per study.

An evaluation that raises, or whose worker dies, is retried `retries` times, then recorded as failed
with its error; the search goes on.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pysparse24._progress import Progress

from ..pool import OK, TIMEOUT, LocalPool, RayPool
from .estimate import LatencyEstimator
from .proxy import DEFAULT_OBJECTIVE, evaluate_keys, load_objective
from .space import SearchSpace

SAMPLERS = ("gp", "random")


@dataclass
class SearchConfig:
    budget_ms: float  # sub-space upper edge (inclusive)
    trials: int = 20  # scored (or given-up) candidates wanted in the study
    min_ms: float = 0.0  # sub-space lower edge (inclusive)
    objective: str = DEFAULT_OBJECTIVE
    storage: str | Path = "nas_study.sqlite"
    study_name: str | None = None  # default: "<space>-<min>-<budget>ms"
    workers: int = 0  # 0: evaluate in this process; N: N local worker processes
    ray_address: str | None = None  # evaluate on Ray ("local", "auto", "ray://host:10001")
    retries: int = 2
    timeout_s: float | None = None  # per evaluation; a hung one is recorded as failed (needs a worker
    # process: with workers=0 one is started)
    seed: int = 0
    initial: int = 8  # first trials: Sobol candidates already inside the sub-space
    explore_every: int = 3  # then every Nth trial is the next unused one of them (0: never)
    pool: int = 4096  # Sobol candidates priced: the seeds and the stand-ins for
    # out-of-budget proposals come from its in-budget part
    sampler: str = "gp"  # "gp": Bayesian optimization; "random": uniform proposals, the
    # same seeding and budget handling (the baseline BO must beat)

    def __post_init__(self) -> None:
        if not (self.budget_ms > 0 and 0 <= self.min_ms < self.budget_ms):
            raise ValueError(f"need 0 <= min_ms < budget_ms, got {self.min_ms} and {self.budget_ms}")
        if min(self.trials, self.initial, self.pool) < 1 or min(self.workers, self.retries, self.explore_every) < 0:
            raise ValueError("trials, initial and pool must be >= 1; workers, retries and explore_every >= 0")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {self.timeout_s}")
        load_objective(self.objective)  # fail now, not in a worker


@dataclass
class Candidate:
    trial: int
    vector: np.ndarray
    latency_ms: float
    score: float


@dataclass
class SearchResult:
    study_name: str
    ranked: list[Candidate]  # scored, in-budget candidates, best score first
    pareto: list[Candidate]  # non-dominated (lower latency, higher score), fastest first
    out_of_budget: int = 0
    failed: int = 0  # given up after retries, or interrupted by a stopped search
    errors: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates no other one beats on both latency (lower) and score (higher), fastest first."""
    front, best_score = [], -np.inf
    for c in sorted(candidates, key=lambda c: (c.latency_ms, -c.score)):
        if c.score > best_score:
            front.append(c)
            best_score = c.score
    return front


# ------------------------------------------------------------------------------------------------
# Evaluators: where scoring runs. submit() takes a token and a network (as keys); results() yields
# (token, score | None, error | None) as evaluations finish.


class TimedOut(str):
    """The error of an evaluation that ran past `timeout_s`: recorded as failed without retries (a
    hung objective would hang again)."""


class InlineEvaluator:
    """Scores in the driver process, one at a time (workers=0)."""

    capacity = 1

    def __init__(self, objective: str) -> None:
        self.objective = objective
        self._done: list = []

    def submit(self, token, keys: list[str]) -> None:
        try:
            self._done.append((token, evaluate_keys(self.objective, keys), None))
        except Exception as exc:  # noqa: BLE001 - a failing candidate is data, the search goes on
            self._done.append((token, None, f"{type(exc).__name__}: {exc}"))

    def next_result(self):
        return self._done.pop(0)

    def close(self) -> None:
        pass


class PoolEvaluator:
    """Scores on a profiler.pool pool, one result at a time: local worker processes (a worker that
    dies fails only the evaluation it held, and is replaced) or Ray actors. An evaluation running
    past `timeout_s` has its worker killed and comes back as TimedOut."""

    def __init__(self, pool) -> None:
        self._pool, self.capacity = pool, pool.capacity
        self._done: deque = deque()

    def submit(self, token, keys: list[str]) -> None:
        self._pool.submit(token, keys)

    def next_result(self):
        while not self._done:
            self._done.extend(self._pool.wait())
        token, (kind, payload) = self._done.popleft()
        if kind == OK:
            return token, payload, None
        return token, None, TimedOut(payload) if kind == TIMEOUT else payload

    def close(self) -> None:
        # Interrupted with evaluations in flight: they are not waited for (a trainer may run for
        # hours); their trials stay RUNNING in the study and are queued again on resume.
        self._pool.close()


def _scorer(objective: str):
    """A pool worker's setup: one math thread per evaluation (parallelism comes from the workers;
    the environment variable reaches a torch imported later, an already imported one is told)."""
    import os
    import sys

    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    return functools.partial(evaluate_keys, objective), None


# ------------------------------------------------------------------------------------------------


def run_search(
    space: SearchSpace, estimator: LatencyEstimator, config: SearchConfig, progress: bool = True
) -> SearchResult:
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    name = config.study_name or f"{space.name}-{config.min_ms:g}-{config.budget_ms:g}ms"
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(config.storage).resolve()}")
    sampler = (
        optuna.samplers.GPSampler(seed=config.seed, n_startup_trials=config.initial)
        if config.sampler == "gp"
        else optuna.samplers.RandomSampler(seed=config.seed)
    )
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", sampler=sampler, load_if_exists=True
    )
    _check_study_matches(study, space, config)
    distributions = {label: IntDistribution(0, int(card) - 1) for label, card in zip(space.layout, space.cardinalities)}

    queued: set[tuple] = set()  # vectors enqueued by this driver and not asked for yet

    def queue(vector) -> None:
        used.add(tuple(vector.tolist()))
        queued.add(tuple(vector.tolist()))
        study.enqueue_trial({label: int(v) for label, v in zip(space.layout, vector)})

    stand_ins = _in_budget_pool(space, estimator, config)
    used = {
        tuple(t.params[label] for label in space.layout)  # queued (WAITING) trials have no params yet
        for t in study.get_trials(deepcopy=False)
        if len(t.params) == len(space.layout)
    }
    # A previous driver that died left its in-flight trials RUNNING: fail them and queue them again.
    # One killed inside study.ask() has no parameters yet: an enqueued one still has the values it
    # was queued with, a sampled one has nothing to re-run (the sampler proposes afresh).
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        params = stale.params if len(stale.params) == len(space.layout) else stale.system_attrs.get("fixed_params", {})
        optuna.trial.Trial(study, stale._trial_id).set_user_attr("interrupted", True)
        study.tell(stale.number, state=TrialState.FAIL)
        if all(label in params for label in space.layout):
            queue(np.array([params[label] for label in space.layout]))
    if not study.get_trials(deepcopy=False):
        for vector in stand_ins[: config.initial]:
            queue(vector)

    def finished() -> int:
        """Scored trials plus given-up ones: what `trials` counts."""
        return sum(
            t.state == TrialState.COMPLETE or t.user_attrs.get("gave_up", False)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        )

    evaluator = _make_evaluator(config)
    in_flight: dict[int, tuple] = {}  # trial number -> (trial, keys, attempts)
    bar = Progress("search", config.trials, finished(), enabled=progress)
    try:
        while finished() + len(in_flight) < config.trials or in_flight:
            while len(in_flight) < evaluator.capacity and finished() + len(in_flight) < config.trials:
                proposed = len(study.get_trials(deepcopy=False))
                if (
                    config.explore_every
                    and proposed >= config.initial
                    and (proposed - config.initial) % config.explore_every == config.explore_every - 1
                ):
                    fresh = next((v for v in stand_ins if tuple(v.tolist()) not in used), None)
                    if fresh is not None:
                        queue(fresh)
                trial = study.ask(distributions)
                vector = np.array([trial.params[label] for label in space.layout], dtype=np.int64)
                key = tuple(vector.tolist())
                repeat = key in used and key not in queued  # the GP asked again for a scored candidate
                queued.discard(key)
                used.add(key)
                latency = float(estimator.estimate(vector[None, :]).latency_ms[0])
                trial.set_user_attr("vector", vector.tolist())
                trial.set_user_attr("latency_ms", latency if np.isfinite(latency) else None)
                outside = not config.min_ms <= latency <= config.budget_ms  # also True for NaN (missing blocks)
                if outside or repeat:
                    stand_in = _nearest_unused(stand_ins, vector, space.cardinalities, used)
                    trial.set_user_attr("out_of_budget" if outside else "repeat", True)
                    study.tell(trial, state=TrialState.FAIL)
                    if stand_in is None:
                        bar.note("stopping: every in-budget candidate of the Sobol pool is used (raise --pool)")
                        break
                    queue(stand_in)
                    bar.describe(
                        f"trial {trial.number}: {_fmt(latency)}, "
                        f"{'out of the sub-space' if outside else 'already scored'}; "
                        "its nearest unused in-budget candidate goes next"
                    )
                    continue
                keys = [s.key() for s in estimator.space.decode(vector)]
                in_flight[trial.number] = (trial, keys, 0)
                evaluator.submit(trial.number, keys)
            if not in_flight:
                break  # nothing running and nothing more to propose
            number, score, error = evaluator.next_result()
            trial, keys, attempts = in_flight[number]
            if error is None:
                del in_flight[number]
                study.tell(trial, score)
                bar.advance(f"trial {number}: {_fmt(trial.user_attrs['latency_ms'])}, score {score:.4g}")
            elif attempts < config.retries and not isinstance(error, TimedOut):
                in_flight[number] = (trial, keys, attempts + 1)
                evaluator.submit(number, keys)
                bar.note(f"trial {number}: {error}; retry {attempts + 1}/{config.retries}")
            else:
                del in_flight[number]
                trial.set_user_attr("error", error)
                trial.set_user_attr("gave_up", True)
                study.tell(trial, state=TrialState.FAIL)
                bar.advance(f"trial {number}: failed after {attempts + 1} attempts: {error}", failed=True)
    finally:
        evaluator.close()
        bar.close()
    return collect_results(study, space)


def collect_results(study, space: SearchSpace) -> SearchResult:
    from optuna.trial import TrialState

    scored, out_of_budget, failed, errors = [], 0, 0, []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            scored.append(Candidate(t.number, np.array(t.user_attrs["vector"]), t.user_attrs["latency_ms"], t.value))
        elif t.user_attrs.get("out_of_budget"):
            out_of_budget += 1
        elif t.user_attrs.get("gave_up"):
            failed += 1
            errors.append(f"trial {t.number}: {t.user_attrs.get('error')}")
        elif t.user_attrs.get("interrupted"):
            failed += 1
            errors.append(f"trial {t.number}: interrupted (the search stopped while it ran); queued again")
    ranked = sorted(scored, key=lambda c: (-c.score, c.latency_ms))
    return SearchResult(study.study_name, ranked, pareto_front(scored), out_of_budget, failed, errors)


def _in_budget_pool(space: SearchSpace, estimator: LatencyEstimator, config: SearchConfig) -> np.ndarray:
    """The Sobol pool's candidates whose estimate lies inside the sub-space, in Sobol order (so the
    first few are spread over the space: they seed the search)."""
    vectors = space.sample(config.pool, seed=config.seed)
    latency = estimator.estimate(vectors).latency_ms
    inside = np.flatnonzero((latency >= config.min_ms) & (latency <= config.budget_ms))
    if inside.size == 0:
        finite = latency[np.isfinite(latency)]
        spread = (
            f"estimates span {finite.min():.4g}..{finite.max():.4g} ms"
            if finite.size
            else "no candidate could be priced (the table lacks their blocks)"
        )
        raise ValueError(
            f"none of {config.pool} Sobol candidates lies in the sub-space "
            f"[{config.min_ms:g}, {config.budget_ms:g}] ms; {spread}"
        )
    return vectors[inside]


def _nearest_unused(pool: np.ndarray, vector: np.ndarray, cardinalities: np.ndarray, used: set):
    """The pool vector closest to `vector` (L1 over choice indices scaled to [0, 1]) not yet used."""
    scale = np.maximum(cardinalities - 1, 1)
    order = np.argsort(np.abs(pool - vector) / scale @ np.ones(len(vector)), kind="stable")
    for i in order:
        if tuple(pool[i].tolist()) not in used:
            return pool[i]
    return None


def _check_study_matches(study, space: SearchSpace, config: SearchConfig) -> None:
    """A resumed study must be the same search: same space, sub-space and objective."""
    identity = {
        "space": json.dumps(space.to_dict(), sort_keys=True),
        "budget_ms": config.budget_ms,
        "min_ms": config.min_ms,
        "objective": config.objective,
    }
    stored = {k: study.user_attrs.get(k) for k in identity}
    if all(v is None for v in stored.values()):
        for k, v in identity.items():
            study.set_user_attr(k, v)
        return
    differ = [k for k in identity if stored[k] != identity[k]]
    if differ:
        raise ValueError(
            f"study {study.study_name!r} in this storage was started with another "
            f"{', '.join(differ)}; give another study name or storage file"
        )


def _make_evaluator(config: SearchConfig):
    setup = functools.partial(_scorer, config.objective)
    if config.ray_address:
        return PoolEvaluator(
            RayPool(setup, config.ray_address, config.workers or None, config.timeout_s, "objective", {"num_cpus": 1})
        )
    if config.workers == 0 and config.timeout_s is None:
        return InlineEvaluator(config.objective)
    return PoolEvaluator(LocalPool(setup, max(config.workers, 1), config.timeout_s, "objective"))


def _fmt(latency) -> str:
    return "no estimate (missing blocks)" if latency is None or not np.isfinite(latency) else f"{latency:.4g} ms"
