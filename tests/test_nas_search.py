"""Phase 2: constrained BO inside a latency sub-space; retries; crash and resume; the `nas` command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nas_helpers
import numpy as np
import pytest
from nas_helpers import cheap, fill_table, one_torch_thread  # noqa: F401 (autouse fixture)

from profiler.nas.estimate import LatencyEstimator
from profiler.nas.search import Candidate, SearchConfig, pareto_front, run_search
from profiler.nas.space import load_space
from profiler.table import LatencyTable

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="module")
def demo():
    return load_space("demo")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory, demo):
    path = tmp_path_factory.mktemp("lut") / "lut.sqlite"
    fill_table(path, demo.layer_specs()).close()
    return path


@pytest.fixture()
def estimator(table_path, demo):
    return LatencyEstimator(LatencyTable(table_path), demo)


@pytest.fixture()
def budget(estimator, demo):
    """The median estimate of the space: about half the candidates are in budget."""
    return float(np.median(estimator.estimate(demo.sample(1024, seed=0)).latency_ms))


def config(tmp_path, budget, **kw):
    kw = {
        "trials": 6,
        "initial": 3,
        "pool": 256,
        "objective": "nas_helpers:cheap",
        "storage": tmp_path / "study.sqlite",
        **kw,
    }
    return SearchConfig(budget_ms=budget, **kw)


def test_search_scores_only_in_budget_candidates(tmp_path, demo, estimator, budget):
    result = run_search(demo, estimator, config(tmp_path, budget), progress=False)
    assert len(result.ranked) == 6 and result.failed == 0
    for c in result.ranked:
        assert c.latency_ms <= budget
        assert c.latency_ms == pytest.approx(estimator.estimate(c.vector[None]).latency_ms[0])
        assert c.score == pytest.approx(cheap(demo.decode(c.vector)))
    scores = [c.score for c in result.ranked]
    assert scores == sorted(scores, reverse=True)
    # The front: fastest first, scores rising, and nothing scored dominates a front member.
    front = result.pareto
    assert [c.latency_ms for c in front] == sorted(c.latency_ms for c in front)
    assert all(a.score < b.score for a, b in zip(front, front[1:]))
    for f in front:
        assert not any(c.latency_ms <= f.latency_ms and c.score > f.score for c in result.ranked)
    assert front[-1].score == result.best.score


def test_out_of_budget_proposals_are_replaced_by_in_budget_neighbours(tmp_path, demo, estimator):
    import optuna
    from optuna.trial import TrialState

    tight = float(np.percentile(estimator.estimate(demo.sample(1024, seed=0)).latency_ms, 10))
    cfg = config(tmp_path, tight, trials=8, initial=2, pool=1024)
    result = run_search(demo, estimator, cfg, progress=False)
    assert len(result.ranked) == 8 and all(c.latency_ms <= tight for c in result.ranked)
    trials = optuna.load_study(study_name=result.study_name, storage=f"sqlite:///{cfg.storage}").get_trials()
    skipped = [t for t in trials if t.user_attrs.get("out_of_budget")]
    assert len(skipped) == result.out_of_budget > 0  # a tight budget: the GP does step outside
    assert all(t.state == TrialState.FAIL and t.user_attrs["latency_ms"] > tight for t in skipped)
    scored = [tuple(c.vector) for c in result.ranked]
    assert len(set(scored)) == len(scored)  # stand-ins are never repeats


def test_nearest_unused_pool_vector():
    from profiler.nas.search import _nearest_unused

    pool = np.array([[0, 0, 0], [2, 2, 2], [1, 2, 2]])
    cards = np.array([3, 3, 3])
    assert list(_nearest_unused(pool, np.array([2, 2, 1]), cards, set())) == [2, 2, 2]
    assert list(_nearest_unused(pool, np.array([2, 2, 1]), cards, {(2, 2, 2)})) == [1, 2, 2]
    assert _nearest_unused(pool, np.array([2, 2, 1]), cards, {tuple(p) for p in pool.tolist()}) is None


def test_pareto_front_small_example():
    pts = [
        Candidate(i, np.zeros(1), lat, score)
        for i, (lat, score) in enumerate([(1.0, 5.0), (0.5, 4.0), (0.7, 3.0), (0.9, 6.0), (0.4, 1.0), (0.9, 2.0)])
    ]
    assert [c.trial for c in pareto_front(pts)] == [4, 1, 3]


def test_failed_evaluations_are_retried_then_given_up(tmp_path, demo, estimator, budget, monkeypatch):
    monkeypatch.setenv("NAS_TEST_DIR", str(tmp_path))
    result = run_search(
        demo, estimator, config(tmp_path, budget, objective="nas_helpers:flaky", trials=4), progress=False
    )
    assert len(result.ranked) == 4 and result.failed == 0  # every first attempt failed, every retry worked
    broken = run_search(
        demo,
        estimator,
        config(
            tmp_path,
            budget,
            objective="nas_helpers:always_fails",
            trials=3,
            retries=1,
            storage=tmp_path / "broken.sqlite",
        ),
        progress=False,
    )
    assert broken.ranked == [] and broken.failed == 3
    assert all("this objective is broken" in e for e in broken.errors)


def test_process_pool_survives_dying_workers(tmp_path, demo, estimator, budget, monkeypatch):
    monkeypatch.setenv("NAS_TEST_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(TESTS))  # spawned workers import nas_helpers from sys.path
    cfg = config(tmp_path, budget, objective="nas_helpers:dies_once", trials=3, initial=2, workers=2)
    result = run_search(demo, estimator, cfg, progress=False)
    assert len(result.ranked) == 3 and result.failed == 0
    for c in result.ranked:
        assert c.score == pytest.approx(cheap(demo.decode(c.vector)))


def test_hung_evaluation_times_out_and_the_search_goes_on(tmp_path, demo, estimator, budget, monkeypatch):
    monkeypatch.setenv("NAS_TEST_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(TESTS))
    cfg = config(tmp_path, budget, objective="nas_helpers:hangs_once", trials=3, initial=2, timeout_s=3.0)
    result = run_search(demo, estimator, cfg, progress=False)  # workers=0: a worker process is used
    assert len(result.ranked) == 2 and result.failed == 1
    assert "timed out after 3 s" in result.errors[0]
    for c in result.ranked:
        assert c.score == pytest.approx(cheap(demo.decode(c.vector)))
    with pytest.raises(ValueError, match="timeout_s"):
        config(tmp_path, budget, timeout_s=0)


def test_resumed_study_must_match(tmp_path, demo, estimator, budget):
    run_search(demo, estimator, config(tmp_path, budget, trials=2, study_name="s"), progress=False)
    with pytest.raises(ValueError, match="budget_ms"):
        run_search(demo, estimator, config(tmp_path, budget * 0.9, trials=2, study_name="s"), progress=False)


def test_resume_after_a_kill_inside_ask(tmp_path, demo, estimator, budget):
    """A driver killed inside study.ask() leaves a RUNNING trial without parameters (seen with
    --workers 2 after Ctrl-C); the rerun crashed with KeyError. Reproduced exactly: ask() on the
    study file, for a sampled trial and for an enqueued one, then resume. Both count as failed."""
    import optuna

    cfg = config(tmp_path, budget, trials=3, study_name="s")
    first = run_search(demo, estimator, cfg, progress=False)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{cfg.storage}")
    study.ask()  # sampled: nothing to re-run
    queued = {label: 0 for label in demo.layout}
    study.enqueue_trial(queued)
    stale = study.ask().number  # enqueued: its fixed parameters are queued again
    cfg = config(tmp_path, budget, trials=5, study_name="s")
    result = run_search(demo, estimator, cfg, progress=False)
    assert len(result.ranked) == 5
    assert {c.trial for c in first.ranked} <= {c.trial for c in result.ranked}
    assert result.failed == 2 and sum("interrupted" in e for e in result.errors) == 2
    trials = study.get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert trials[stale].state == optuna.trial.TrialState.FAIL
    assert any(t.params == queued for t in trials[stale + 1 :])


def test_empty_sub_space_is_a_clear_error(tmp_path, demo, estimator):
    with pytest.raises(ValueError, match="none of 256 Sobol candidates"):
        run_search(demo, estimator, config(tmp_path, 1e-6), progress=False)
    with pytest.raises(ValueError, match="module:function"):
        config(tmp_path, 1.0, objective="no_colon")


def nas(*args, env=None, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "profiler.nas.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_killed_search_resumes_without_losing_trials(tmp_path, table_path, budget, demo):
    """`nas search` killed inside an evaluation, then run again: the study resumes, nothing is lost,
    and the outputs (front, JSON, CSV, PNG, ONNX) are written."""
    import onnxruntime as ort
    import optuna
    from optuna.trial import TrialState

    out = tmp_path / "out"
    args = [
        "search",
        "--table",
        table_path,
        "--space",
        "demo",
        "--budget-ms",
        budget,
        "--trials",
        5,
        "--initial",
        3,
        "--pool",
        256,
        "--objective",
        "nas_helpers:crash_once_at",
        "--out",
        out,
        "-q",
    ]
    env = {"NAS_TEST_DIR": str(tmp_path), "NAS_TEST_CRASH_AT": "3"}
    killed = nas(*args, env=env, check=False)
    assert killed.returncode == 3, killed.stderr  # died inside its 3rd evaluation
    storage = f"sqlite:///{out / 'study.sqlite'}"
    (name,) = optuna.get_all_study_names(storage)
    before = optuna.load_study(study_name=name, storage=storage).get_trials()
    done_before = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    running = [t for t in before if t.state == TrialState.RUNNING]
    assert len(running) == 1 and len(done_before) >= 2

    proc = nas(*args, env=env)  # the same command resumes
    after = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert {t.number: t.value for t in after if t.number in done_before} == done_before  # nothing lost
    stale = after[running[0].number]
    assert stale.state == TrialState.FAIL
    assert any(t.params == stale.params and t.state == TrialState.COMPLETE for t in after)  # re-run
    assert not [t for t in after if t.state == TrialState.RUNNING]

    assert "Pareto front" in proc.stdout
    doc = json.loads((out / "ranked.json").read_text())
    rows = (out / "ranked.csv").read_text().splitlines()
    assert len(doc["candidates"]) == len(rows) - 1 == 5
    assert all(r["latency_ms"] <= budget for r in doc["candidates"])
    best = doc["candidates"][0]
    assert rows[1].split(",")[1] == str(best["trial"])
    assert best["score"] == pytest.approx(cheap(demo.decode(np.array(best["vector"]))))
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    session = ort.InferenceSession(str(out / "best.onnx"), providers=["CPUExecutionProvider"])
    first = demo.decode(np.array(best["vector"]))[0]
    x = np.random.default_rng(0).standard_normal(first.in_shape).astype(np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, 1000)


def test_nas_estimate_reports_buckets_and_missing_keys(tmp_path, demo):
    specs = demo.layer_specs()
    fill_table(tmp_path / "partial.sqlite", specs, skip={s.key() for s in specs[::5]}).close()
    keys = tmp_path / "missing.txt"
    proc = nas(
        "estimate",
        "--table",
        tmp_path / "partial.sqlite",
        "--space",
        "demo",
        "--samples",
        2000,
        "--budgets",
        "1,3",
        "--missing-keys",
        keys,
    )
    assert "< 1 ms" in proc.stdout and "missing blocks" in proc.stdout
    listed = [k for k in keys.read_text().splitlines() if not k.startswith("#")]
    assert listed and set(listed) <= {s.key() for s in specs[::5]}
    # A complete table: the keys file of the earlier run must not linger with stale keys.
    fill_table(tmp_path / "full.sqlite", specs).close()
    proc = nas(
        "estimate", "--table", tmp_path / "full.sqlite", "--space", "demo", "--samples", 200, "--missing-keys", keys
    )
    assert [k for k in keys.read_text().splitlines() if not k.startswith("#")] == []
    assert not keys.with_name(keys.name + ".partial").exists()
    bad = nas("search", "--table", tmp_path / "nope.sqlite", "--budget-ms", 1, check=False)
    assert bad.returncode == 2 and "no latency table" in bad.stderr


@pytest.mark.slow
def test_ray_workers(tmp_path, demo, estimator, budget, monkeypatch, local_ray):
    monkeypatch.setenv("NAS_TEST_DIR", str(tmp_path))
    local_ray(NAS_TEST_DIR=str(tmp_path))
    cfg = config(tmp_path, budget, objective="nas_helpers:flaky", trials=4, ray_address="local", timeout_s=60)
    result = run_search(demo, estimator, cfg, progress=False)
    assert len(result.ranked) == 4 and result.failed == 0
    assert nas_helpers.cheap(demo.decode(result.best.vector)) == pytest.approx(result.best.score)


def test_budget_argument_accepts_ms_or_percentile():
    from profiler.nas.cli import make_parser

    def parse(budget):
        return make_parser().parse_args(["search", "--table", "t", "--budget-ms", budget]).budget_ms

    assert parse("0.25") == 0.25 and parse("p30") == ("percentile", 30.0)
    for bad in ("p0", "p101", "-1", "fast"):
        with pytest.raises(SystemExit):
            parse(bad)
