"""The GEMM benchmark harness: statistics, outputs, resume after a kill, shapes from models, CLI."""

import argparse
import csv
import json
import sys

import numpy as np
import pytest

from pysparse24.bench import GemmCase, backends, cli, run_cases, shapes
from pysparse24.bench.backends import BackendUnavailable


@pytest.fixture
def fake_backend():
    """A backend with known timings (sparse 1..5 ms, dense twice that), recording its calls."""
    calls = []

    def time_pair(M, N, K, dtype, warmup, repeats, threads, cold):
        calls.append((M, N, K, dtype))
        sparse = [float(i + 1) for i in range(repeats)]
        return {"sparse_ms": sparse, "dense_ms": [2 * t for t in sparse]}

    backends.register_backend("fake", time_pair)
    yield calls
    del backends.BACKENDS["fake"]


def test_statistics_flops_and_bytes(fake_backend):
    (r,) = run_cases([GemmCase(64, 8, 128)], backend="fake", repeats=5)
    assert r.sparse["median_ms"] == 3.0 and r.dense["median_ms"] == 6.0
    assert r.sparse["p10_ms"] == pytest.approx(np.percentile([1, 2, 3, 4, 5], 10))
    assert r.sparse["p90_ms"] == pytest.approx(np.percentile([1, 2, 3, 4, 5], 90))
    assert r.speedup == pytest.approx(2.0)
    assert r.sparse_gflops == pytest.approx(2 * 64 * 8 * 128 / 3e-3 / 1e9)
    io = 128 * 8 * 4 + 64 * 8 * 4
    assert r.dense_bytes == 64 * 128 * 4 + io
    assert r.sparse_bytes == 64 * 64 * 4 + 64 * 16 + io


def test_killed_sweep_resumes_without_losing_finished_cases(fake_backend, tmp_path):
    cases = [GemmCase(64, n, 64) for n in (1, 2, 3)]
    path = tmp_path / "r.json"

    def progress(done, total, case):
        if done == 2:
            raise KeyboardInterrupt  # killed after the second case was saved

    with pytest.raises(KeyboardInterrupt):
        run_cases(cases, backend="fake", repeats=2, json_path=path, progress=progress)
    saved = json.loads(path.read_text())["results"]
    assert [r["case"]["N"] for r in saved] == [1, 2]
    results = run_cases(cases, backend="fake", repeats=2, json_path=path, resume=True)
    assert [c[1] for c in fake_backend] == [1, 2, 3]  # only N=3 measured again
    assert [r.case.N for r in results] == [1, 2, 3]
    assert len(json.loads(path.read_text())["results"]) == 3


@pytest.mark.parametrize("cold", [True, False])
def test_real_cpu_backend_times_sparse_and_dense(cold):
    (r,) = run_cases([GemmCase(64, 3, 128, "float32")], backend="cpu", threads=1, warmup=1, repeats=3, cold=cold)
    assert r.sparse["n"] == 3 and r.dense["n"] == 3 and r.cold == cold
    assert r.sparse["median_ms"] > 0 and r.dense["median_ms"] > 0


def test_cuda_backend_without_gpu_is_a_clear_error():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; tests/test_cuda* cover the GPU backend")
    with pytest.raises(BackendUnavailable, match="cuda backend"):
        run_cases([GemmCase(64, 1, 64)], backend="cuda", repeats=1)


def test_unknown_backend_and_bad_repeats():
    with pytest.raises(ValueError, match="unknown backend"):
        run_cases([GemmCase(8, 1, 8)], backend="nope")
    with pytest.raises(ValueError, match="repeats"):
        run_cases([GemmCase(8, 1, 8)], repeats=0)


def test_parse_shapes():
    cases = shapes.parse_shapes("4096x8x4096, 11008X1x4096", ["float32", "int8"])
    assert [(c.M, c.N, c.K, c.dtype) for c in cases] == [
        (4096, 8, 4096, "float32"),
        (4096, 8, 4096, "int8"),
        (11008, 1, 4096, "float32"),
        (11008, 1, 4096, "int8"),
    ]
    with pytest.raises(ValueError, match="expected MxNxK"):
        shapes.parse_shapes("4096x4096", ["float32"])


def test_shapes_from_an_onnx_file(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.zeros(s, np.float32), name)
        for name, s in [("conv_w", (32, 8, 3, 3)), ("stem_w", (16, 3, 7, 7)), ("fc_w", (48, 288)), ("mm_w", (64, 40))]
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv"),
        helper.make_node("Conv", ["x", "stem_w"], ["s"], name="stem"),
        helper.make_node("Gemm", ["f", "fc_w"], ["g"], name="fc", transB=1),
        helper.make_node("MatMul", ["h", "mm_w"], ["m"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, None)],
        inits,
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert shapes.model_layers(str(path)) == [("conv", 32, 72), ("stem", 16, 147), ("fc", 48, 288), ("mm", 40, 64)]
    cases, skipped = shapes.model_cases(str(path), [1, 4], ["float32"])
    assert [(c.layer, c.M, c.N, c.K) for c in cases] == [
        ("conv", 32, 1, 72),
        ("conv", 32, 4, 72),
        ("fc", 48, 1, 288),
        ("fc", 48, 4, 288),
        ("mm", 40, 1, 64),
        ("mm", 40, 4, 64),
    ]
    assert skipped == ["stem (M=16, K=147: K not a multiple of 8)"]


def test_shapes_from_a_torch_model(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    (tmp_path / "tiny_model.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, groups=2), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(64, 24), torch.nn.Linear(64, 24))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert shapes.model_layers("tiny_model:build") == [("0", 16, 36), ("2", 24, 64), ("3", 24, 64)]
    cases, skipped = shapes.model_cases("tiny_model:build", [2], ["float32"])
    assert [(c.layer, c.M, c.K) for c in cases] == [("2", 24, 64)]  # one case per distinct shape
    assert skipped == ["0 (M=16, K=36: K not a multiple of 8)"]
    with pytest.raises(ValueError, match="module:attribute"):
        shapes.model_layers("resnet50")


def test_cli_writes_json_csv_markdown_and_plot(tmp_path, capsys):
    out = tmp_path / "new" / "dir"  # created as needed
    code = cli.main(
        [
            "gemm",
            "--shapes",
            "32x1x64,32x4x64",
            "--warmup",
            "0",
            "--repeats",
            "2",
            "--threads",
            "1",
            "--json",
            str(out / "r.json"),
            "--csv",
            str(out / "r.csv"),
            "--markdown",
            str(out / "r.md"),
            "--plot",
            str(out / "r.png"),
        ]
    )
    assert code == 0
    assert "32x4x64" in capsys.readouterr().out  # the rich table
    assert len(json.loads((out / "r.json").read_text())["results"]) == 2
    with open(out / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["N"]) for r in rows] == [1, 4] and float(rows[0]["speedup"]) > 0
    assert (out / "r.md").read_text().count("\n") == 4
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_messages_not_tracebacks(capsys):
    assert cli.main(["gemm", "--shapes", "32x1x60"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert cli.main(["gemm", "--shapes", "bad"]) == 2
    assert "expected MxNxK" in capsys.readouterr().err
    assert cli.main(["gemm", "--shapes", "32x1x64", "--resume"]) == 2
    assert cli.main(["gemm", "--shapes", "32x1x64", "--dtype", "float16"]) == 2
    assert "cpu backend times float32, bfloat16 and int8" in capsys.readouterr().err


def test_add_parser_plugs_into_a_parent_cli():
    parser = argparse.ArgumentParser(prog="pysparse24")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "gemm", "--shapes", "8x1x8", "--dtype", "bfloat16"])
    assert args.func is cli.run_gemm and args.dtype == ["bfloat16"]


def test_module_entry_point_runs(tmp_path):
    import subprocess

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pysparse24.bench",
            "gemm",
            "--shapes",
            "16x1x32",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "16x1x32" in result.stdout


@pytest.mark.gpu
def test_cuda_backend_through_the_harness():
    from pysparse24 import cuda

    if not cuda.is_available():
        pytest.skip(f"no usable GPU: {cuda.unavailable_reason()}")
    (r,) = run_cases([GemmCase(256, 16, 256, "float16")], backend="cuda", warmup=2, repeats=5)
    assert r.sparse["n"] == 5 and r.dense["n"] == 5 and r.speedup > 0
    assert r.extra["algorithm"] is not None  # what pysparse24.cuda.gemm_bench reports comes along
