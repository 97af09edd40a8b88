"""What every command line does the same way (pysparse24._cli, pysparse24._progress): a failure is
one `error:` line on stderr and exit 2, results on stdout and progress on stderr, Ctrl-C and SIGTERM
one line (130 / 143) without worker tracebacks, --version, and module:callable found in the
current directory."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import ctrl_c_as_a_terminal_gives_it
from safetensors.torch import save_file

import pysparse24

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "OMP_NUM_THREADS": "1"}


def command(*args, cwd=None, python_flags=()):
    """`pysparse24 ARGS` in a fresh interpreter (as the console script runs it)."""
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "pysparse24", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )


def in_process(capsys, *args):
    """`pysparse24 ARGS` through the same main() in this process (no interpreter start-up)."""
    from pysparse24.cli import main

    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:  # argparse: --version, usage errors
        status = exc.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


def assert_one_error_line(proc, *fragments):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    save_file({"fc.weight": torch.randn(8, 16), "fc.bias": torch.randn(8)}, str(d / "m.safetensors"))
    data = (d / "m.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (d / "garbage.safetensors").write_bytes(b"\x07" * 100)
    with open(d / "huge.npy", "wb") as f:  # a header claiming 4 TB, four bytes of data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
        f.write(b"1234")
    (d / "bad.onnx").write_bytes(b"not an onnx model")
    (d / "a_file").write_text("x")
    (d / "folder.safetensors").mkdir()
    return d


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("compress", "{d}/truncated.safetensors", "{d}/o"), ("truncated.safetensors", "truncated or not")),
        (("compress", "{d}/garbage.safetensors", "{d}/o"), ("garbage.safetensors",)),
        (("compress", "{d}/huge.npy", "{d}/o"), ("huge.npy", "cannot read")),
        (("compress", "{d}/folder.safetensors", "{d}/o"), ("is a directory",)),
        (("compress", "{d}/m.safetensors", "{d}/a_file"), ("not a directory",)),
        (("compress", "{d}/missing.npy", "{d}/o"), ("no such file",)),
        (("bench", "gemm", "--threads", "0"), ("--threads must be at least 1",)),
        (("bench", "gemm", "--shapes", "99999992x99999992x99999992"), ("more than this machine's memory",)),
        (("bench", "gemm", "--model", "{d}/bad.onnx"), ("DecodeError",)),
        (("lut", "export", "--table", "{d}/m.safetensors", "{d}/x.csv"), ("latency table",)),
    ],
)
def test_bad_input_is_one_error_line(files, args, fragments, capsys):
    proc = in_process(capsys, *(a.format(d=files) for a in args))
    assert_one_error_line(proc, *fragments)


def test_decompress_of_many_tensors_into_one_npy(files, tmp_path, capsys):
    assert in_process(capsys, "compress", files / "m.safetensors", tmp_path / "c", "-q").returncode == 0
    proc = in_process(capsys, "decompress", tmp_path / "c", tmp_path / "one.npy")
    assert_one_error_line(proc, "2 tensors cannot go into one .npy file")
    assert not list(tmp_path.glob("one.npy*"))


def test_export_to_an_unwritable_place(tmp_path, capsys):
    from nas_helpers import fill_table

    from profiler.spec import LayerSpec

    fill_table(
        tmp_path / "lut.sqlite", [LayerSpec(op="conv2d", in_shape=(1, 8, 8, 8), out_channels=8, kernel=1)]
    ).close()
    (tmp_path / "a_file").write_text("x")
    proc = in_process(capsys, "lut", "export", "--table", tmp_path / "lut.sqlite", tmp_path / "a_file" / "x.csv")
    assert_one_error_line(proc, "cannot write", "not an existing directory")
    (tmp_path / "out.csv").mkdir()
    proc = in_process(capsys, "lut", "export", "--table", tmp_path / "lut.sqlite", tmp_path / "out.csv")
    assert_one_error_line(proc, "is a directory")


def test_version_on_every_command(capsys):
    version = pysparse24.__version__
    for args in (["--version"], ["lut", "--version"], ["nas", "--version"], ["lut", "validate", "--version"]):
        proc = in_process(capsys, *args)
        assert proc.returncode == 0 and proc.stdout.strip().endswith(version), (args, proc.stdout, proc.stderr)
    for module in ("profiler", "profiler.nas.cli", "pysparse24.bench"):
        proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, env=ENV)
        assert proc.returncode == 0 and proc.stdout.strip().endswith(version)


def test_results_on_stdout_progress_on_stderr(tmp_path):
    """A redirected `lut build`: stdout holds the summary only; stderr the progress lines."""
    proc = command(
        "lut",
        "build",
        "--table",
        tmp_path / "lut.sqlite",
        "--keys",
        _keys(tmp_path, 2),
        "--backend",
        "profiler_numpy_backend:NumpyMatmulBackend",
        "-o",
        "repeats=3",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()]  # one line: the summary
    assert "2 measured" in proc.stdout
    assert "measuring: 2/2" in proc.stderr
    quiet = command(
        "lut",
        "build",
        "--table",
        tmp_path / "q.sqlite",
        "--keys",
        _keys(tmp_path, 2),
        "--backend",
        "profiler_numpy_backend:NumpyMatmulBackend",
        "-o",
        "repeats=3",
        "-q",
    )
    assert quiet.returncode == 0 and quiet.stderr == ""


def _keys(tmp_path, n) -> Path:
    from profiler.spec import LayerSpec

    path = tmp_path / "keys.txt"
    path.write_text(
        "".join(
            LayerSpec(op="conv2d", in_shape=(1, 8 * (i + 1), 8, 8), out_channels=8, kernel=1).key() + "\n"
            for i in range(n)
        )
    )
    return path


def test_progress_lines_every_few_seconds_when_not_a_terminal(capsys):
    from pysparse24._progress import Progress

    with Progress("work", 3, interval_s=0.05) as bar:
        bar.advance("first")
        time.sleep(0.06)
        bar.advance("second")
        bar.advance("third")  # within the interval: no line
    lines = capsys.readouterr().err.splitlines()
    assert lines == [lines[0], lines[1]] and "work: 2/3" in lines[0] and "second" in lines[0]
    assert "work: 3/3" in lines[1]


def test_module_callable_from_the_current_directory(tmp_path):
    """`--backend mymod:factory` finds ./mymod.py as `python -m` would, also when the interpreter
    does not put the current directory on sys.path (console scripts; here python -P)."""
    (tmp_path / "my_backend.py").write_text(
        "from profiler_numpy_backend import NumpyMatmulBackend\n"
        "def make(**options):\n    return NumpyMatmulBackend(repeats=3, **options)\n"
    )
    proc = command(
        "lut",
        "build",
        "--table",
        tmp_path / "lut.sqlite",
        "--keys",
        _keys(tmp_path, 1),
        "--backend",
        "my_backend:make",
        "-q",
        cwd=tmp_path,
        python_flags=("-P",),
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 measured" in proc.stdout


def test_sigterm_unwinds_like_ctrl_c(capsys):
    """SIGTERM becomes an exception in the main thread: `finally` blocks (partial files, workers)
    run, and the command says so in one line with status 143."""
    from pysparse24._cli import run

    cleaned = []

    def body():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        finally:
            cleaned.append(True)
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    assert run("cmd", body) == 143 and cleaned == [True]
    assert capsys.readouterr().err.strip() == "cmd: terminated; work committed so far is kept"
    assert signal.getsignal(signal.SIGTERM) == previous


def test_ctrl_c_is_one_line_without_worker_tracebacks(tmp_path):
    """`nas search` with two workers busy in a slow objective, Ctrl-C to the process group (as a
    terminal sends it): one line, exit 130, no traceback from the driver or its workers."""
    sig, status, word = signal.SIGINT, 130, "interrupted"
    from nas_helpers import fill_table

    from profiler.nas.space import load_space

    fill_table(tmp_path / "lut.sqlite", load_space("demo").layer_specs()).close()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pysparse24",
            "nas",
            "search",
            "--table",
            str(tmp_path / "lut.sqlite"),
            "--space",
            "demo",
            "--budget-ms",
            "p50",
            "--trials",
            "4",
            "--initial",
            "2",
            "--pool",
            "128",
            "--workers",
            "2",
            "--objective",
            "nas_helpers:slow",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
        preexec_fn=ctrl_c_as_a_terminal_gives_it,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _running_trials(out / "study.sqlite") < 2:
        time.sleep(0.5)
    assert _running_trials(out / "study.sqlite") == 2, "the workers never started"
    time.sleep(1.0)
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C does: the whole process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert [line for line in stderr.splitlines() if word in line] == [stderr.strip().splitlines()[-1]]
    assert not list(out.glob("*.partial"))


def _running_trials(storage: Path) -> int:
    import sqlite3

    if not storage.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{storage}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0


def _start_up_slowly() -> None:
    time.sleep(1.0)


def test_workers_started_under_ctrl_c_guard_survive_a_ctrl_c_during_their_start_up():
    """The race behind a flaky Ctrl-C run: SIGINT reaching a spawned worker before its initializer
    ignores it printed a KeyboardInterrupt traceback. Started inside the guard, the worker ignores it
    from its first instruction and exits normally; the parent's own handler is back afterwards."""
    import multiprocessing

    from pysparse24._cli import ctrl_c_ignored_by_children

    before = signal.getsignal(signal.SIGINT)
    worker = multiprocessing.get_context("spawn").Process(target=_start_up_slowly)
    with ctrl_c_ignored_by_children():
        worker.start()
    assert signal.getsignal(signal.SIGINT) is before
    os.kill(worker.pid, signal.SIGINT)  # still importing: its own handler is not set yet
    worker.join(timeout=30)
    assert worker.exitcode == 0
