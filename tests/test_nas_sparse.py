"""Sparsity-aware NAS (issue 18): candidates whose stages choose dense or 2:4. The proxy and the
training objective see the pruned weights, `profiler build` measures both variants (and only with a
backend that runs 2:4), `nas search` marks the 2:4 stages and exports ONNX that keeps the pattern."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nas_helpers import CONTEXT, fake_ms, one_torch_thread, stats  # noqa: F401 (autouse fixture)
from test_nas_search import nas

import pysparse24
from profiler.blocks import build_network
from profiler.build import BackendRef, build_table, specs_from_source
from profiler.nas.candidate import build_candidate, dense_twin, sparse_block_layers
from profiler.nas.proxy import naswot
from profiler.nas.space import SearchSpace, load_space
from profiler.nas.train import train_candidate
from profiler.table import LatencyTable

# Three stages at 16 px: a tiny network every test here can build, train and time in a moment.
TINY = {
    "name": "tiny_sparse",
    "resolution": [16],
    "stages": [
        {"name": "stem", "op": "head", "stride": 2, "kernel": [3], "filters": [16]},
        {
            "name": "body",
            "op": "irb",
            "stride": 1,
            "layers": [1, 2],
            "kernel": [3],
            "expansion": [2],
            "filters": [16, 24],
            "sparsity": ["dense", "2:4"],
        },
        {"name": "tail", "op": "tail", "stride": 1, "kernel": [1], "filters": [32], "sparsity": ["dense", "2:4"]},
    ],
}


@pytest.fixture(scope="module")
def tiny():
    return SearchSpace.from_dict(TINY)


def all_sparse(space):
    """A candidate of `space` with every stage that can be 2:4 at 2:4 and the other positions at 0."""
    v = np.zeros(space.width, dtype=np.int64)
    for i, label in enumerate(space.layout):
        if label.endswith(".sparsity"):
            v[i] = 1
    return v


def is_2_4(weight: torch.Tensor) -> bool:
    return bool(pysparse24.is_sparse(weight.detach().movedim(1, -1).contiguous().reshape(-1, weight.shape[1]), 2, 4))


def test_candidate_masks_are_the_pruned_weights_the_proxy_scores():
    """build_network prunes a 2:4 block with sparsify's masks; build_candidate attaches the same masks
    to the dense twin. NASWOT (which builds with build_network) therefore scores the pruned network."""
    space = load_space("demo_sparse")
    v = all_sparse(space)
    net = space.decode(v)
    assert space.sparse_stages(v) == ["1", "2", "4"]  # stage 3's first layers choice is 0: skipped
    pruned, masked, dense = build_network(net), build_candidate(net), dense_twin(net)
    names = sparse_block_layers(masked, net)
    modules = dict(pruned.named_modules())
    masked_modules = dict(masked.named_modules())
    checked = 0
    for name in names:
        layer = masked_modules[name]
        if not hasattr(layer, "parametrizations"):
            continue  # depthwise or too narrow: left dense by sparsify, and by build_network too
        torch.testing.assert_close(modules[name].weight, layer.weight, rtol=0, atol=0)
        assert is_2_4(layer.weight) and not is_2_4(dict(dense.named_modules())[name].weight)
        checked += 1
    assert checked >= 4
    dense_net = [s.replace(sparsity="dense") for s in net]
    assert naswot(net) != naswot(dense_net)


def test_digits_training_keeps_the_masks_and_learns(tiny):
    v = all_sparse(tiny)
    net = tiny.decode(v)
    accuracy, model = train_candidate(net, dense_epochs=2, sparse_epochs=1, batch=32, lr=1e-2)
    assert accuracy > 0.3  # 10 classes: chance is 0.1
    masked = [(n, m) for n, m in model.named_modules() if hasattr(m, "parametrizations")]
    assert {n.split(".")[0] for n, _ in masked} == {str(i) for i, s in enumerate(net) if s.sparsity == "2:4"}
    initial = dict(build_candidate(net).named_modules())
    for name, layer in masked:
        assert is_2_4(layer.weight)  # the pattern survived training
        assert not torch.equal(layer.weight, initial[name].weight)  # and the kept weights moved
    with pytest.raises(ValueError, match="needs a classifier"):
        train_candidate(net[:-1])


def test_build_enumerates_both_variants_and_needs_a_sparse_executor(tmp_path, tiny):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    specs = specs_from_source(space=str(path))
    dense = {s.key() for s in specs if s.sparsity == "dense"}
    sparse = {s.key() for s in specs if s.sparsity == "2:4"}
    assert {s.replace(sparsity="dense").key() for s in specs if s.sparsity == "2:4"} == dense - {
        s.key() for s in specs if s.op == "head"
    }
    assert len(sparse) == len(dense) - 1  # every layer but the head, twice
    assert {s.sparsity for s in specs_from_source(space=str(path), sparsity="dense")} == {"dense"}
    with pytest.raises(ValueError, match="onnxruntime backend cannot execute 2:4"):
        build_table(tmp_path / "ort.sqlite", specs, BackendRef("onnxruntime"), progress=False)
    assert not (tmp_path / "ort.sqlite").exists()
    # The torch backend runs the 2:4 variants through pysparse24's sparse modules.
    fast = {"threads": 1, "cpus": None, "policy": None}
    from pysparse24.timing import TimingPolicy

    ref = BackendRef(
        "profiler.backends.torch_backend:TorchBackend",
        {
            **fast,
            "policy": TimingPolicy(
                warmup_min=2, warmup_s=0.0, min_repeats=5, max_repeats=5, min_time_s=0.0, budget_s=0.2
            ),
        },
    )
    report = build_table(tmp_path / "torch.sqlite", specs, ref, progress=False)
    assert report.measured == len(specs) and report.failed == 0, LatencyTable(tmp_path / "torch.sqlite").errors()
    with LatencyTable(tmp_path / "torch.sqlite") as table:
        assert "sparse_executor" in table.context
        assert len(table.to_pandas("sparse_vs_dense")) == len(sparse)


def fill_both(path, space):
    table = LatencyTable(path, {**CONTEXT, "sparse_executor": "test"})
    for spec in space.layer_specs():  # a 2:4 row is 60% of its dense twin's
        table.put(spec, stats(fake_ms(spec.replace(sparsity="dense").key()) * (0.6 if spec.sparsity == "2:4" else 1)))
    return table


def test_nas_search_cli_marks_sparse_stages_and_exports_2_4_onnx(tmp_path, tiny):
    from pysparse24.torch.export import onnx_weights

    space_file = tmp_path / "tiny.json"
    space_file.write_text(json.dumps(TINY))
    fill_both(tmp_path / "lut.sqlite", tiny).close()
    out = tmp_path / "out"
    proc = nas(
        "search",
        "--table",
        tmp_path / "lut.sqlite",
        "--space",
        space_file,
        "--budget-ms",
        "p100",
        "--trials",
        4,
        "--initial",
        3,
        "--pool",
        64,
        "--objective",
        "nas_helpers:cheap",
        "--out",
        out,
        "-q",
    )
    assert "2:4 stages" in proc.stdout
    doc = json.loads((out / "ranked.json").read_text())
    for row in doc["candidates"]:
        assert row["sparse_stages"] == tiny.sparse_stages(np.array(row["vector"]))
    header, *rows = (out / "ranked.csv").read_text().splitlines()
    assert header.split(",")[5] == "sparse_stages"
    best = doc["candidates"][0]
    net = tiny.decode(np.array(best["vector"]))
    weights = onnx_weights(out / "best.onnx")
    expected = sum(1 for s in net if s.sparsity == "2:4")
    if expected:
        assert sum(w.is_2to4 for w in weights) >= expected and "2:4 (verified in the file)" in proc.stdout
    # The all-2:4 candidate exported the same way keeps the pattern in every pruned layer.
    from profiler.nas.candidate import export_candidate_onnx

    v = all_sparse(tiny)
    found = export_candidate_onnx(tiny.decode(v), tmp_path / "sparse.onnx")
    assert sum(w.is_2to4 for w in found) == len(
        [1 for n, m in build_candidate(tiny.decode(v)).named_modules() if hasattr(m, "parametrizations")]
    )


def test_random_sampler_baseline(tmp_path, tiny, monkeypatch):
    """sampler="random": the same search loop with uniform proposals (the baseline BO is compared with)."""
    import optuna

    from profiler.nas.estimate import LatencyEstimator
    from profiler.nas.search import SearchConfig, run_search

    estimator = LatencyEstimator(fill_both(tmp_path / "lut.sqlite", tiny), tiny)
    with pytest.raises(ValueError, match="sampler must be one of"):
        SearchConfig(budget_ms=1.0, sampler="tpe")
    asked = {"gp": 0, "random": 0}
    for name, cls in (("gp", optuna.samplers.GPSampler), ("random", optuna.samplers.RandomSampler)):

        class Counting(cls):
            def sample_independent(self, *a, _name=name, **kw):
                asked[_name] += 1
                return super().sample_independent(*a, **kw)

        monkeypatch.setattr(optuna.samplers, cls.__name__, Counting)
    results = []
    for sampler in ("gp", "random"):
        config = SearchConfig(
            budget_ms=10.0,
            trials=5,
            initial=2,
            pool=64,
            objective="nas_helpers:cheap",
            storage=tmp_path / f"{sampler}.sqlite",
            sampler=sampler,
            explore_every=0,
        )
        results.append(run_search(tiny, estimator, config, progress=False))
    assert all(len(r.ranked) == 5 for r in results)
    assert asked["random"] > 0  # the random run's proposals came from the RandomSampler


ROOT = Path(__file__).resolve().parent.parent


def test_dense_arm_of_the_comparison_is_the_dense_space():
    """benchmarks/nas_sparse_compare.py searches `space.with_context(sparsity="dense")` as the dense-only
    arm: for demo_sparse that is exactly the shipped demo space (same layout, same networks)."""
    dense, demo = load_space("demo_sparse").with_context(sparsity="dense"), load_space("demo")
    assert dense.layout == demo.layout and "1.sparsity" in load_space("demo_sparse").layout
    top = demo.cardinalities - 1
    for v in (np.zeros_like(top), top, np.arange(demo.width) % (top + 1)):
        assert [s.key() for s in dense.decode(v)] == [s.key() for s in demo.decode(v)]


def test_wide_benchmark_space_builds_with_2_4_stages():
    """The comparison's wide space (benchmarks/data/demo_sparse_wide.json) loads, chooses 2:4 on stages
    1-4, and its largest all-2:4 candidate builds, runs and is pruned where it says."""
    space = load_space(ROOT / "benchmarks" / "data" / "demo_sparse_wide.json")
    v = np.maximum(space.cardinalities - 1, 0)
    assert space.sparse_stages(v) == ["1", "2", "3", "4"]
    net = space.decode(v)
    model = build_network(net).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape[1] == 1000
    pruned = [
        m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.in_channels >= 128
    ]
    assert pruned and all(is_2_4(w) for w in pruned)


def test_compare_summary_reports_where_each_search_puts_2_4(monkeypatch):
    """nas_sparse_compare.summarize: best per seed, and per stage the share of 2:4 among each search's
    candidates after its Sobol seeds (in trial order, not rank order)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from nas_sparse_compare import summarize

    def cand(trial, acc, stages):
        return {"trial": trial, "latency_ms": 1.0 + trial / 10, "score": acc, "sparse_stages": stages, "vector": []}

    results = [
        {"budget_ms": 2.0, "seed": 0, "method": "dense-only", "candidates": [cand(0, 0.9, []), cand(3, 0.95, [])]},
        {
            "budget_ms": 2.0,
            "seed": 0,
            "method": "sparsity-aware",
            # ranked best first: the later trials are the 2:4 ones
            "candidates": [cand(5, 0.97, ["3"]), cand(4, 0.96, ["3", "4"]), cand(0, 0.5, ["1"]), cand(1, 0.4, [])],
        },
    ]
    text = summarize(results, [2.0], {"initial": 2})
    assert "| 2.0000 | dense-only | 0.9500 ± 0.0000 | 0.950 | 1.300 | - | 0 of 2 |" in text
    assert "| 2.0000 | sparsity-aware | 0.9700 ± 0.0000 | 0.970 | 1.500 | 3 | 3 of 4 |" in text
    assert "| method | scored | stage 1 | stage 3 | stage 4 |" in text
    assert "| sparsity-aware | 2 | 0% | 100% | 50% |" in text
    assert "| random |" not in text  # no random search in the results: no row
