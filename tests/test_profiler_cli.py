"""The `profiler` command: build, show, export, import (validate is registered; tested by its owner)."""

import subprocess
import sys
from pathlib import Path

import pytest

from profiler.cli import main
from profiler.spec import LayerSpec
from profiler.table import LatencyTable
from pysparse24.timing import LatencyStats

TESTS = Path(__file__).resolve().parent
CTX = {"device": "Test CPU", "backend": "onnxruntime", "precision": "fp32", "batch": 1, "threads": 1}


@pytest.fixture
def table_path(tmp_path, rng):
    path = tmp_path / "lut.sqlite"
    with LatencyTable(path, CTX) as t:
        for c in (8, 16, 32):
            t.put(
                LayerSpec("conv2d", (1, c, 16, 16), 2 * c, kernel=3),
                LatencyStats.from_samples(rng.uniform(1, 2, 9) * c, 2),
            )
        t.put_error(LayerSpec("se", (1, 8, 4, 4), 8), "RuntimeError: not supported")
        t.set_calibration({"overhead_ms": 0.25})
    return path


def test_build_then_show(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))  # spawned workers import the test backend
    keys = tmp_path / "keys.txt"
    specs = [LayerSpec("linear", (1, c, 1, 1), 10) for c in (16, 32)] + [LayerSpec("maxpool", (1, 8, 8, 8), 8)]
    keys.write_text("\n".join(s.key() for s in specs))
    table = tmp_path / "lut.sqlite"
    argv = [
        "build",
        "--table",
        str(table),
        "--keys",
        str(keys),
        "--quiet",
        "--backend",
        "profiler_numpy_backend:NumpyMatmulBackend",
        "-o",
        "repeats=2",
        "-o",
        'fail_op="maxpool"',
    ]
    assert main(argv) == 0
    assert "3 unique specs: 0 already in the table, 2 measured, 1 failed" in capsys.readouterr().out
    assert main(argv) == 0
    assert "2 already in the table, 0 measured, 0 failed, 1 skipped" in capsys.readouterr().out
    assert main(["show", "--table", str(table)]) == 0
    out = capsys.readouterr().out
    assert "2 entries, 1 errors" in out and "numpy-matmul-test" in out and "refuses op 'maxpool'" in out


def test_show_summarizes(table_path, capsys):
    assert main(["show", "--table", str(table_path), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 entries, 1 errors" in out and "Test CPU" in out
    assert "calibration: unrecognised: {'overhead_ms': 0.25}" in out  # not an affine-v1 fit: shown as stored
    assert "in=1x32x16x16" in out and "in=1x16x16x16" in out and "in=1x8x16x16" not in out  # top 2, slowest first
    assert "RuntimeError: not supported" in out


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_export_import_roundtrip(table_path, tmp_path, suffix, capsys):
    out = tmp_path / f"lut.{suffix}"
    assert main(["export", "--table", str(table_path), str(out)]) == 0
    copy = tmp_path / "copy.sqlite"
    assert main(["import", "--table", str(copy), str(out)]) == 0
    assert "imported 4 rows" in capsys.readouterr().out
    with LatencyTable(table_path) as a, LatencyTable(copy) as b:
        assert a.rows() == b.rows() and a.errors() == b.errors() and a.context == b.context
        assert b.calibration() == {"overhead_ms": 0.25}
    assert main(["import", "--table", str(copy), str(out)]) == 0
    assert "imported 0 rows" in capsys.readouterr().out


def test_show_prints_the_calibration_as_a_formula(table_path, tmp_path, capsys):
    from profiler import calibration

    copy = tmp_path / "c.sqlite"
    copy.write_bytes(table_path.read_bytes())
    with LatencyTable(copy) as t:
        t.set_calibration(calibration.fit([1.0, 2.0, 4.0, 8.0], [3, 5, 9, 17], [1.2, 2.3, 4.5, 8.9]))
    assert main(["show", "--table", str(copy)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("calibration:"))
    assert "estimate = " in line and " x sum of layer medians " in line and "{" not in line


def test_errors_are_messages_not_tracebacks(table_path, tmp_path, capsys):
    assert main(["show", "--table", str(tmp_path / "nope.sqlite")]) == 2
    assert "no latency table" in capsys.readouterr().err
    out = tmp_path / "lut.json"
    main(["export", "--table", str(table_path), str(out)])
    with LatencyTable(tmp_path / "other.sqlite", {**CTX, "threads": 4}):
        pass
    assert main(["import", "--table", str(tmp_path / "other.sqlite"), str(out)]) == 2
    assert "threads (table: 4" in capsys.readouterr().err
    assert main(["export", "--table", str(table_path), str(tmp_path / "lut.xlsx")]) == 2
    with pytest.raises(SystemExit):
        main(["build", "--table", "x.sqlite"])  # argparse: a source is required


def test_python_dash_m_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "profiler", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("build", "show", "export", "import", "validate"):
        assert command in out.stdout


def test_validate_is_registered_with_its_own_arguments(capsys):
    with pytest.raises(SystemExit) as done:
        main(["validate", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: profiler validate") and "--table" in out
