"""benchmarks/bench_layers.py (issue 14's layer set): it runs, records what it timed, and refuses to
time a sparse kernel that gives a wrong answer."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_layers.py"
    spec = importlib.util.spec_from_file_location("bench_layers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_one_layer_is_timed_and_recorded(bench, tmp_path, capsys):
    out = tmp_path / "layers.json"
    assert (
        bench.main(
            [
                "--set",
                "bert",
                "--only",
                "attn@128",
                "--dtype",
                "float32",
                "--cache",
                "warm",
                "--rounds",
                "1",
                "--repeats",
                "2",
                "--threads",
                "1",
                "--seed",
                "3",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["seed"] == 3
    (r,) = data["results"]
    assert (r["M"], r["N"], r["K"], r["dtype"], r["cache"]) == (768, 128, 768, "float32", "warm")
    assert set(r["median_ms"]) == {"sparse", "linear", "conv", "matmul"}
    assert all(t > 0 for t in r["median_ms"].values())
    assert r["ratio"] == pytest.approx(r["median_ms"][r["best_dense"]] / r["median_ms"]["sparse"])
    assert "bert.attn@128 | float32 | warm | 768x128x768" in capsys.readouterr().out


def test_a_wrong_sparse_result_is_never_timed(bench, monkeypatch):
    layer = bench.Layer("bert", "tiny", c_in=64, m=32, h=16)
    real = bench.pysparse24.matmul

    def off_by_one(c, x, out=None, threads=None):  # the kernel the check runs first, slightly wrong
        real(c, x, out=out, threads=threads)
        out[0, 0] += 1.0
        return out

    monkeypatch.setattr(bench.pysparse24, "matmul", off_by_one)
    with pytest.raises(RuntimeError, match="disagrees with float64"):
        bench.time_layer(layer, "float32", cold=False, threads=1, rounds=1, repeats=1, seed=0)
