"""The table builder (issue 5, part 5): measure only what is missing, commit as it goes, survive
failures, crashes, hangs and SIGKILL. Measurements come from a small but real numpy backend
(tests/profiler_numpy_backend.py) run in spawned worker processes."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reference import ctrl_c_as_a_terminal_gives_it

from profiler.build import BackendRef, BackendStartError, build_table, specs_from_source, unique_specs
from profiler.spec import LayerSpec
from profiler.table import ContextMismatchError, LatencyTable

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FACTORY = "profiler_numpy_backend:NumpyMatmulBackend"


@pytest.fixture(autouse=True)
def _tests_dir_importable(monkeypatch):
    # Spawned workers must import the test backend: they inherit sys.path from this process.
    monkeypatch.syspath_prepend(str(TESTS))


def backend(**options):
    return BackendRef(FACTORY, {"repeats": 3, **options})


def make_specs(n, op="conv2d"):
    return [LayerSpec(op=op, in_shape=(1, 8 + 8 * i, 8, 8), out_channels=16, kernel=1) for i in range(n)]


def logged(path):
    return Path(path).read_text().splitlines() if Path(path).exists() else []


def test_unique_specs_keeps_first_seen_order():
    a, b, c = make_specs(3)
    assert unique_specs([b, a, b, c, a]) == [b, a, c]


def test_build_measures_only_missing_and_records_failures(tmp_path):
    path, log = tmp_path / "lut.sqlite", tmp_path / "measured.log"
    good = make_specs(4)
    bad = make_specs(2, op="avgpool")
    specs = good + bad + good[:2]  # repeats are measured once
    report = build_table(path, specs, backend(fail_op="avgpool", log=str(log)), progress=False)
    assert (report.requested, report.measured, report.failed, report.already) == (6, 4, 2, 0)
    with LatencyTable(path) as t:
        assert sorted(t.keys()) == sorted(s.key() for s in good)
        assert all(t.get(s).median_ms > 0 and t.get(s).n == 3 for s in good)
        assert set(t.errors()) == {s.key() for s in bad}
        assert "NotImplementedError: the numpy test backend refuses op 'avgpool'" in t.error(bad[0])
        assert t.context["backend"] == "numpy-matmul-test" and "date" in t.context
    assert sorted(logged(log)) == sorted(s.key() for s in good)

    more = make_specs(6)
    report = build_table(path, more + bad, backend(fail_op="avgpool", log=str(log)), progress=False)
    assert (report.already, report.measured, report.known_errors, report.failed) == (4, 2, 2, 0)
    assert sorted(logged(log)) == sorted(s.key() for s in more)  # nothing measured twice

    report = build_table(path, more + bad, backend(log=str(log)), retry_errors=True, progress=False)
    assert (report.measured, report.failed) == (2, 0)  # the backend now accepts avgpool
    with LatencyTable(path) as t:
        assert len(t) == 8 and t.errors() == {}


def test_crashing_and_hanging_specs_are_recorded_and_the_run_continues(tmp_path):
    path = tmp_path / "lut.sqlite"
    specs = make_specs(2) + make_specs(1, op="maxpool") + make_specs(1, op="se") + make_specs(4)[2:]
    report = build_table(path, specs, backend(crash_op="maxpool", hang_op="se"), timeout_s=3, progress=False)
    assert (report.measured, report.failed) == (4, 2)
    with LatencyTable(path) as t:
        assert "worker process died" in t.error(specs[2]) and "exit code 7" in t.error(specs[2])
        assert "timed out after 3 s" in t.error(specs[3])
        assert len(t) == 4


def test_several_workers_measure_each_spec_once(tmp_path):
    path, log = tmp_path / "lut.sqlite", tmp_path / "measured.log"
    specs = make_specs(10)
    report = build_table(path, specs, backend(log=str(log)), workers=2, progress=False)
    assert report.measured == 10
    assert sorted(logged(log)) == sorted(s.key() for s in specs)
    with LatencyTable(path) as t:
        assert len(t) == 10


def test_context_mismatch_and_backend_start_failure_stop_before_measuring(tmp_path):
    path, log = tmp_path / "lut.sqlite", tmp_path / "measured.log"
    build_table(path, make_specs(1), backend(), progress=False)
    with pytest.raises(ContextMismatchError, match="device"):
        build_table(path, make_specs(3), backend(device="another-cpu", log=str(log)), progress=False)
    assert logged(log) == []
    with pytest.raises(BackendStartError, match="unexpected keyword argument 'no_such_option'"):
        build_table(tmp_path / "new.sqlite", make_specs(1), backend(no_such_option=1), progress=False)
    assert not (tmp_path / "new.sqlite").exists()


def test_complete_table_refuses_a_request_in_another_context(tmp_path):
    """Nothing left to measure must not hide a context mismatch: the request (another device, here)
    is refused just as it is when keys are missing, not reported as all already in the table."""
    path = tmp_path / "lut.sqlite"
    build_table(path, make_specs(2), backend(), progress=False)
    with pytest.raises(ContextMismatchError, match="device"):
        build_table(path, make_specs(2), backend(device="another-cpu"), progress=False)
    report = build_table(path, make_specs(2), backend(), progress=False)  # same context: nothing to do
    assert (report.already, report.measured) == (2, 0)


def test_specs_from_keys_file_and_space(tmp_path):
    specs = make_specs(3)
    keys = tmp_path / "keys.txt"
    keys.write_text("# missing keys\n" + "\n".join(s.key() for s in specs + specs[:1]) + "\n\n")
    assert specs_from_source(keys_file=keys) == specs
    demo = specs_from_source(space="demo", samples=4, seed=1, batch=2)
    assert demo and len({s.key() for s in demo}) == len(demo) and all(s.batch == 2 for s in demo)
    from profiler.nas.gpunet import load_gpunet_config

    gpunet0 = load_gpunet_config("GPUNet-0", batch=2)
    assert specs_from_source(networks=["GPUNet-0", "GPUNet-0"], batch=2) == unique_specs(gpunet0)
    with pytest.raises(ValueError, match="exactly one source"):
        specs_from_source(space="demo", keys_file=keys)


def _committed(path):
    """Keys committed so far, read with raw SQL as another process sees them (the file may not hold the
    schema yet)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            return [k for (k,) in con.execute("SELECT key FROM latency")]
    except sqlite3.OperationalError:
        return []


def _interrupt_when(proc, path, at_least, sig):
    """Send `sig` to the build's process group (parent and worker, like a terminal) once `at_least` rows
    are committed; return the keys seen committed just before."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seen := _committed(path)) < at_least:
        assert proc.poll() is None, "the build finished before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)
    return seen


def test_ctrl_c_then_sigkill_mid_build_then_resume_loses_and_duplicates_nothing(tmp_path):
    """Real interruptions of the CLI in a subprocess: Ctrl-C (SIGINT) mid-run, rerun, SIGKILL mid-run
    (parent and worker), rerun to completion."""
    path, log, keys = tmp_path / "lut.sqlite", tmp_path / "measured.log", tmp_path / "keys.txt"
    specs = make_specs(16)
    keys.write_text("\n".join(s.key() for s in specs))
    cmd = [
        sys.executable,
        "-m",
        "profiler",
        "build",
        "--table",
        str(path),
        "--keys",
        str(keys),
        "--quiet",
        "--backend",
        FACTORY,
        "-o",
        "repeats=3",
        "-o",
        "sleep_s=0.15",
        "-o",
        f"log={log}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = dict(
        env=env,
        start_new_session=True,
        preexec_fn=ctrl_c_as_a_terminal_gives_it,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    proc = subprocess.Popen(cmd, **start)
    seen = _interrupt_when(proc, path, 3, signal.SIGINT)
    assert proc.returncode == 130 and "interrupted, rerun to resume" in proc.stdout.read()
    assert "Traceback" not in proc.stderr.read()
    after_ctrl_c = _committed(path)
    assert set(seen) <= set(after_ctrl_c) and 3 <= len(after_ctrl_c) < 16

    proc = subprocess.Popen(cmd, **start)
    seen = _interrupt_when(proc, path, len(after_ctrl_c) + 3, signal.SIGKILL)
    after_kill = _committed(path)
    assert set(after_ctrl_c) | set(seen) <= set(after_kill)  # every commit survived the kill
    assert len(after_kill) < 16
    before_rerun = len(logged(log))

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(after_kill)} already in the table, {16 - len(after_kill)} measured" in rerun.stdout
    last_run = logged(log)[before_rerun:]
    assert not set(last_run) & set(after_kill)  # committed work is never redone
    with sqlite3.connect(path) as con:
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT key) FROM latency").fetchone()
    assert rows == distinct == 16
    all_runs = logged(log)
    assert set(all_runs) == {s.key() for s in specs}
    assert len(all_runs) <= 16 + 2  # at most the spec in flight at each interruption measured twice


@pytest.mark.slow
def test_ray_dispatch_on_a_local_cluster(tmp_path, local_ray):
    """The --ray path on a private 2-CPU local cluster (Ray's start-up alone takes ~12 s here): a
    crashing spec kills only its actor, a failing one is recorded, the rest are measured."""
    local_ray()
    path = tmp_path / "lut.sqlite"
    specs = make_specs(5) + make_specs(1, op="maxpool") + make_specs(1, op="avgpool")
    report = build_table(
        path, specs, backend(crash_op="maxpool", fail_op="avgpool"), ray_address="local", timeout_s=60, progress=False
    )
    assert (report.measured, report.failed) == (5, 2)
    with LatencyTable(path) as t:
        assert len(t) == 5 and t.context["backend"] == "numpy-matmul-test"
        assert "Ray worker died" in t.error(specs[5]) and "NotImplementedError" in t.error(specs[6])


def test_specs_for_another_batch_or_precision_are_refused_up_front(tmp_path):
    specs = make_specs(2) + [LayerSpec(op="conv2d", in_shape=(4, 8, 8, 8), out_channels=16)]
    with pytest.raises(ValueError, match=r"1 specs do not match the backend's batch 1 .*in=4x8x8x8"):
        build_table(tmp_path / "lut.sqlite", specs, backend(), progress=False)
    report = build_table(tmp_path / "lut.sqlite", specs[2:], backend(batch=4), progress=False)
    assert report.measured == 1


def test_a_worker_that_dies_while_idle_is_replaced(tmp_path):
    from profiler.build import start_pool

    pool, _ = start_pool(backend(), workers=1)
    try:
        pool._idle[0].proc.kill()  # as the OOM killer would, between two specs
        pool._idle[0].proc.join()
        key = make_specs(1)[0].key()
        pool.submit(key, key)
        results = []
        while pool.busy():
            results += pool.wait()
        assert [(token, outcome[0]) for token, outcome in results] == [(key, "ok")]
    finally:
        pool.close()


def test_2_4_specs_are_refused_up_front_by_a_backend_without_sparse_executor(tmp_path):
    """The numpy backend would time the pruned layer densely: nothing is measured, no table is made."""
    specs = make_specs(2) + [make_specs(1)[0].replace(sparsity="2:4")]
    with pytest.raises(ValueError, match="cannot execute 2:4 sparsity"):
        build_table(tmp_path / "lut.sqlite", specs, backend(), progress=False)
    assert not (tmp_path / "lut.sqlite").exists()
