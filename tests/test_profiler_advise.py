"""profiler.advise: trace a model's Linear/Conv2d layers into specs, measure them dense and 2:4 on the
torch backend (pysparse24's sparse modules), advise, and the command line with its bad inputs."""

import dataclasses
import json
import os
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pysparse24.cli
import pysparse24.torch as sparse_torch
from profiler import advise as adv
from profiler import cli as profiler_cli
from profiler.backends import TimingPolicy, get_backend
from profiler.blocks import build_module, export_onnx, input_shape_of, output_shape, random_input
from profiler.spec import LayerSpec
from profiler.table import LatencyTable
from pysparse24.timing import LatencyStats

REPO = Path(__file__).resolve().parent.parent
FAST = TimingPolicy(warmup_min=2, warmup_s=0.0, min_repeats=10, min_time_s=0.0, budget_s=0.2)
SPARSE_CTX = {
    "backend": "torch",
    "precision": "fp32",
    "batch": 1,
    "device": "test",
    "threads": 1,
    "sparse_executor": "pysparse24 cpu kernels",
}


@pytest.fixture(autouse=True)
def restore_cpu_affinity_and_threads():
    """The torch backend pins the process and sets torch's threads: give them back."""
    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    yield
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)


class Net(nn.Module):
    """Every case the tracer meets: a timm-padded conv, a conv padded otherwise, depthwise, a
    non-square kernel, BN/act between them, and one Linear called twice on a token tensor."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.valid = nn.Conv2d(32, 32, 3, stride=2, padding=0)
        self.wide = nn.Conv2d(32, 32, (1, 3), padding=(0, 1))
        self.fc = nn.Linear(32, 64)
        self.shared = nn.Linear(64, 64)

    def forward(self, x):
        x = self.wide(self.valid(self.dw(self.pw(torch.relu(self.bn(self.stem(x)))))))
        t = x.flatten(2).transpose(1, 2)  # (N, tokens, C)
        return self.shared(self.shared(self.fc(t)))


def test_trace_maps_each_call_to_a_spec_with_the_same_work():
    model, x = Net().eval(), torch.randn(1, 3, 32, 32)
    outputs = {}

    def keep_output(name):
        def hook(module, args, output):
            outputs.setdefault(name, output.shape)  # returns None: the output stays the layer's

        return hook

    hooks = [m.register_forward_hook(keep_output(n)) for n, m in model.named_modules() if n]
    calls = adv.trace(model, x)
    for h in hooks:
        h.remove()
    assert [c.layer for c in calls] == ["stem", "pw", "dw", "valid", "wide", "fc", "shared", "shared"]
    by = {c.layer: c for c in calls}
    assert by["stem"].spec == LayerSpec("conv2d_only", (1, 3, 32, 32), 16, kernel=3, stride=2, act="none")
    assert by["dw"].spec.groups == 32 and "NCHW input" in by["dw"].note  # the table times channels_last
    cl = {
        c.layer: c
        for c in adv.trace(model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last))
    }
    assert cl["dw"].note is None and "NCHW" not in cl["valid"].note
    # padding 0 where timm pads 1: timed on a 2 px smaller input, which gives the layer's own output.
    assert by["valid"].spec.in_shape == (1, 32, 14, 14) and "padding 1" in by["valid"].note
    assert by["wide"].spec is None and "not square" in by["wide"].skipped
    assert by["fc"].spec == LayerSpec("linear_only", (1, 32, 49, 1), 64, act="none")
    assert calls[-1].spec == calls[-2].spec
    for c in calls:
        if c.spec is not None:  # the block the spec builds produces the layer's real output
            real = outputs[c.layer]
            block = build_module(c.spec)(torch.randn(input_shape_of(c.spec)))
            assert block.shape == real and output_shape(c.spec)[1] == real[-1 if c.kind == "Linear" else 1]
    # bfloat16 models are traced as bf16 specs
    assert adv.trace(model.to(torch.bfloat16), x.to(torch.bfloat16))[0].spec.precision == "bf16"


def test_single_layer_blocks_compute_the_torch_layer():
    lin = LayerSpec("linear_only", (2, 24, 5, 1), 40, act="none")
    module, x = build_module(lin, seed=3), torch.from_numpy(random_input(input_shape_of(lin), seed=4))
    assert input_shape_of(lin) == (2, 5, 24)
    torch.testing.assert_close(module(x), F.linear(x, module.weight, module.bias))
    conv = LayerSpec("conv2d_only", (1, 8, 9, 9), 16, kernel=3, stride=2, groups=2, act="none")
    module = build_module(conv)
    x = torch.from_numpy(random_input(conv.in_shape, seed=5))
    torch.testing.assert_close(module(x), F.conv2d(x, module.weight, None, 2, 1, 1, 2))
    import onnxruntime as ort  # the same definition exports (the ONNX Runtime / TensorRT graph)

    session = ort.InferenceSession(export_onnx(lin), providers=["CPUExecutionProvider"])
    x = random_input(input_shape_of(lin), seed=6)
    np.testing.assert_allclose(
        session.run(None, {"input": x})[0],
        module_out := build_module(lin)(torch.from_numpy(x)).detach().numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    assert module_out.shape == (2, 5, 40)
    for bad in (dict(act="relu"), dict(in_shape=(1, 24, 5, 2))):
        with pytest.raises(ValueError, match="linear_only"):
            build_module(lin.replace(**bad))


def _table_with(path, calls, dense_ms, sparse_ms, errors=(), calib=None):
    """A table holding given medians for the traced specs (the arithmetic under test, not timings)."""
    table = LatencyTable(path, SPARSE_CTX)
    for c in calls:
        if c.spec is None:
            continue
        table.put(c.spec, LatencyStats.from_samples([dense_ms[c.layer]], warmup=0))
        if c.layer in sparse_ms:
            table.put(c.spec.replace(sparsity="2:4"), LatencyStats.from_samples([sparse_ms[c.layer]], warmup=0))
    for layer, message in errors:
        spec = next(c.spec for c in calls if c.layer == layer)
        table.put_error(spec.replace(sparsity="2:4"), message)
    if calib:
        table.set_calibration(calib)
    return table


def test_summarize_advises_the_layers_that_pay_and_predicts_with_the_calibration(tmp_path):
    calls = adv.trace(Net().eval(), torch.randn(1, 3, 32, 32))
    dense = {"stem": 1.0, "pw": 2.0, "dw": 0.5, "valid": 1.0, "fc": 0.4, "shared": 0.3}
    sparse = {"stem": 0.9, "pw": 1.0, "valid": 1.02, "fc": 0.5, "shared": 0.1}
    calib = {"kind": "affine-v1", "scale": 0.9, "per_layer_ms": -0.01, "offset_ms": 0.2}
    with _table_with(tmp_path / "t.sqlite", calls, dense, sparse, [("dw", "ValueError: grouped conv")], calib) as t:
        advice = adv.summarize(calls, t, threshold=1.05, model_dense_ms=8.0, rest_ms=2.0)
        layers_only = adv.summarize(calls, t, threshold=1.05)
        assert adv.timed_layers(calls, t) == ["stem", "pw", "dw", "valid", "fc", "shared"]  # not "wide"
    # stem has 3 input channels: never advised, whatever a 2:4 row for its shape says.
    assert list(advice) == ["pw", "shared"] and len(advice) == 2
    rows = {r.layer: r for r in advice.per_layer}
    assert rows["shared"].calls == 2 and rows["shared"].dense_ms == pytest.approx(0.6)
    assert rows["shared"].speedup == pytest.approx(3.0)
    assert rows["stem"].reason == "cannot run 2:4: 3 input channels are not divisible by the group size 4"
    assert rows["dw"].reason.startswith("cannot run 2:4: grouped convolution") and "not square" in rows["wide"].reason
    assert "0.98x, not above the threshold 1.05x" in rows["valid"].reason
    # 7 timed calls: dense sum 1+2+.5+1+.4+.3+.3 = 5.5; advised sparse sum 1+1+.5+1+.4+.1+.1 = 4.1.
    # The rest measured (2.0 ms) holds the network's one call: the calibration applies without its offset.
    p = advice.predicted
    layers_dense, layers_sparse = 0.9 * 5.5 - 0.07, 0.9 * 4.1 - 0.07
    assert (p["layers_dense_ms"], p["layers_sparse_ms"]) == (pytest.approx(layers_dense), pytest.approx(layers_sparse))
    assert p["rest_ms"] == 2.0 and p["dense_ms"] == pytest.approx(layers_dense + 2.0)
    assert p["speedup"] == pytest.approx((layers_dense + 2.0) / (layers_sparse + 2.0))
    assert p["calibration"]["offset_ms"] == 0 and p["calibration"]["scale"] == 0.9
    assert rows["pw"].share == pytest.approx(2.0 / 8.0)  # of the dense model as measured
    assert any("miss the dense model as measured" in n for n in advice.notes)  # 6.88 ms vs 8.0: > 10% off
    # No rest measured (another backend): the whole calibration, the layers only, and a note saying so.
    q = layers_only.predicted
    assert q["dense_ms"] == pytest.approx(0.9 * 5.5 - 0.07 + 0.2) and q["rest_ms"] == 0
    assert q["speedup"] == pytest.approx((0.9 * 5.5 - 0.07 + 0.2) / (0.9 * 4.1 - 0.07 + 0.2))
    assert any("not timed" in n for n in layers_only.notes)
    # Written atomically and read back; iterating the loaded advice gives the same layer names.
    advice.write(tmp_path / "advice.json")
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    again = adv.Advice.load(tmp_path / "advice.json")
    assert list(again) == list(advice) and again.per_layer == advice.per_layer
    assert json.loads((tmp_path / "advice.json").read_text())["layers"] == ["pw", "shared"]
    adv.speedup_png(again, tmp_path / "speedup.png")
    assert (tmp_path / "speedup.png").read_bytes()[:4] == b"\x89PNG"


def test_layers_stubbed_replays_each_call_and_restores_the_layers():
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        expected = model(x)
    layers = ["pw", "fc", "shared"]  # "shared" is called twice a pass, with different inputs
    with adv.layers_stubbed(model, x, layers) as stubbed, torch.inference_mode():
        for name in layers:  # poison the stubbed layers: a real call would now give NaN
            model.get_submodule(name).weight.fill_(float("nan"))
        for _ in range(2):  # the replies cycle pass after pass
            torch.testing.assert_close(stubbed(x), expected)
    with torch.inference_mode():
        assert torch.isnan(model(x)).all()  # the real layers are back
    assert all("forward" not in model.get_submodule(n).__dict__ for n in layers)


def test_a_failed_write_leaves_the_previous_advice(tmp_path, monkeypatch):
    calls = adv.trace(Net().eval(), torch.randn(1, 3, 32, 32))
    with _table_with(
        tmp_path / "t.sqlite", calls, dict.fromkeys(["stem", "pw", "dw", "valid", "fc", "shared"], 1.0), {}
    ) as t:
        advice = adv.summarize(calls, t)
    path = tmp_path / "advice.json"
    path.write_text("previous")
    monkeypatch.setattr(adv.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        advice.write(path)
    assert path.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["advice.json", "t.sqlite"]
    with pytest.raises(ValueError, match="not an advice file"):
        adv.Advice.load(path)


def test_an_advice_naming_a_layer_the_model_lacks_converts_nothing(tmp_path):
    calls = adv.trace(Net().eval(), torch.randn(1, 3, 32, 32))
    with _table_with(
        tmp_path / "t.sqlite",
        calls,
        dict.fromkeys(["stem", "pw", "dw", "valid", "fc", "shared"], 2.0),
        dict.fromkeys(["pw", "fc"], 1.0),
    ) as t:
        adv.summarize(calls, t).write(tmp_path / "advice.json")
    advice = adv.Advice.load(tmp_path / "advice.json")
    assert list(advice) == ["pw", "fc"]
    other = nn.Sequential(nn.Linear(32, 64)).eval()  # another model: no layer "pw" or "fc"
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="'fc'|'pw'"):
        sparse_torch.sparsify(other, "2:4", layers=advice, progress=False)
    with pytest.raises(ValueError, match="'fc'|'pw'"):
        sparse_torch.to_sparse_(other, layers=advice)
    assert isinstance(other[0], nn.Linear) and all(torch.equal(v, before[k]) for k, v in other.state_dict().items())


def test_torch_backend_runs_2_4_through_the_sparse_modules():
    backend = get_backend("torch", policy=FAST)
    assert backend.context()["sparse_executor"] == "pysparse24 cpu kernels"
    spec = LayerSpec("irb", (1, 16, 8, 8), 16, kernel=3, expansion=2, sparsity="2:4")
    runner = backend.runner(spec)
    assert [r.kind for r in runner.sparse_layers] == ["Conv2d", "Conv2d"]  # the two 1x1 convs; dw stays dense
    assert runner(3) and backend.measure(spec).median_ms > 0
    with pytest.raises(ValueError, match="no layer of this 2:4 block can run sparse .*groups=16"):
        backend.measure(LayerSpec("dwconv2d", (1, 16, 8, 8), 16, kernel=3, sparsity="2:4"))


def test_advise_end_to_end_resumes_and_its_advice_converts_the_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 6)).eval()
    x = torch.randn(1, 4, 256)
    table = tmp_path / "t.sqlite"
    log = []
    advice = adv.advise(model, x, table, backend_options={"policy": FAST}, progress=False, log=log.append)
    # 3 layers dense + 2:4 of "0" and "2"; "4" has 6 outputs, no sparse tile: its 2:4 spec is not timed.
    assert "5 unique specs: 0 already in the table, 5 measured, 0 failed" in log[0]
    assert log[1] == "1 layer(s) cannot run 2:4 and were timed dense only (reasons in the advice)"
    rows = {r.layer: r for r in advice.per_layer}
    assert set(rows) == {"0", "2", "4"} and rows["4"].sparse_ms is None and rows["4"].dense_ms > 0
    assert rows["4"].reason.startswith("cannot run 2:4: 6 output channels")
    assert all(rows[n].dense_ms > 0 and rows[n].sparse_ms > 0 for n in ("0", "2"))
    p = advice.predicted
    assert set(advice) <= {"0", "2"} and p["model_dense_measured_ms"] > 0 and p["rest_ms"] > 0
    with LatencyTable(table) as t:
        assert t.context["sparse_executor"] == "pysparse24 cpu kernels" and len(t) == 5
    again = adv.advise(model, x, table, backend_options={"policy": FAST}, progress=False, log=log.append)
    assert log[2].startswith("5 unique specs: 5 already in the table, 0 measured, 0 failed, 0 skipped")
    assert [r.dense_ms for r in again.per_layer] == [r.dense_ms for r in advice.per_layer]
    # The advice names layers for pysparse24: prune them, then run them sparse (both layers here, whatever
    # this machine's timings advised, so that the conversion is exercised).
    layers = ["0", "2"]
    advice = dataclasses.replace(advice, layers=layers)
    sparse_torch.sparsify(model, "2:4", layers=advice, progress=False)
    dense_out = model(x)
    report = sparse_torch.to_sparse_(model, layers=advice)
    assert [r.name for r in report.converted] == layers
    torch.testing.assert_close(model(x), dense_out, rtol=1e-4, atol=1e-4)


def test_advise_refuses_a_backend_that_cannot_run_2_4_and_a_table_of_another_context(tmp_path):
    model, x = nn.Sequential(nn.Linear(64, 64)).eval(), torch.randn(1, 64)
    with pytest.raises(ValueError, match="onnxruntime backend cannot execute 2:4"):
        adv.advise(model, x, tmp_path / "ort.sqlite", backend="onnxruntime", progress=False)
    assert not (tmp_path / "ort.sqlite").exists()
    LatencyTable(tmp_path / "other.sqlite", {**SPARSE_CTX, "device": "another machine"}).close()
    with pytest.raises(ValueError, match="different context.*device"):
        adv.advise(model, x, tmp_path / "other.sqlite", backend_options={"policy": FAST}, progress=False)
    with pytest.raises(ValueError, match="does not run on the example input"):
        adv.trace(model, torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        adv.trace(nn.ReLU(), x)


# ------------------------------------------------------------------------------ command line
MODELS = """
from torch import nn

def mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))

not_a_model = 3
"""


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`profiler advise ...` in this process, from tmp_path holding a user's models module."""
    (tmp_path / "usermodels.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "usermodels", raising=False)

    def run(*args):
        code = profiler_cli.main(["advise", *args, "--table", "t.sqlite", "--out", "advice.json", "-q"])
        return code, capsys.readouterr()

    return run


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "usermodels:mlp", "--input-shape", "1x3x8x8"], "does not run on the example input (1, 3, 8, 8)"),
        (["--model", "usermodels:nope", "--input-shape", "1x64"], "module 'usermodels' has no callable 'nope'"),
        (["--model", "usermodels:not_a_model", "--input-shape", "1x64"], "gave a int, not a torch.nn.Module"),
        (["--model", "missingmodule:mlp", "--input-shape", "1x64"], "cannot import 'missingmodule'"),
        (["--model", "usermodels:mlp", "--input-shape", "1xax64"], "must look like 1x3x224x224"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_writes_nothing(cli, tmp_path, args, message):
    code, out = cli(*args)
    assert code == 2 and message in out.err and out.err.count("error:") == 1, out.err
    assert not (tmp_path / "advice.json").exists() and not (tmp_path / "t.sqlite").exists()


def test_cli_advises_and_refuses_a_table_of_another_context(cli, tmp_path):
    code, out = cli("--model", "usermodels:mlp", "--input-shape", "1x8x64", "-o", "threads=1", "--plot", "s.png")
    assert code == 0, out.err
    advice = json.loads((tmp_path / "advice.json").read_text())
    assert [r["layer"] for r in advice["per_layer"]] == ["0", "2"] and "predicted end to end" in out.out
    assert advice["predicted"]["dense_ms"] > 0 and (tmp_path / "s.png").exists()
    with LatencyTable(tmp_path / "t.sqlite") as t:
        assert len(t) == 4 and t.to_pandas("sparse_vs_dense")["speedup"].gt(0).all()
    (tmp_path / "advice.json").unlink()
    code, out = cli("--model", "usermodels:mlp", "--input-shape", "1x8x64", "-o", "threads=1", "--dtype", "bfloat16")
    assert code == 2 and "built in another context" in out.err and "precision" in out.err
    assert not (tmp_path / "advice.json").exists()


def test_pysparse24_cli_runs_commands_other_packages_register(monkeypatch, capsys):
    """`pysparse24 advise` comes from the profiler package's entry point (pysparse24 never imports it)."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["pysparse24.commands"] == {"advise": "profiler.advise"}
    entry = EntryPoint("advise", "profiler.advise", pysparse24.cli.PLUGIN_GROUP)
    monkeypatch.setattr(
        pysparse24.cli.importlib.metadata,
        "entry_points",
        lambda group: [entry] if group == pysparse24.cli.PLUGIN_GROUP else [],
    )
    assert "advise" in pysparse24.cli.build_parser().format_help()
    code = pysparse24.cli.main(["advise", "--model", "x", "--input-shape", "1x64", "--table", "t", "--out", "a.json"])
    assert code == 2 and "error: --model must be 'module:function'" in capsys.readouterr().err
