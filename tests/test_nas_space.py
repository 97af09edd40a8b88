"""Search-space definition, vector encoding, decode/encode round trips, Sobol sampling."""

import json
import math

import numpy as np
import pytest

from profiler.blocks import output_shape
from profiler.nas.space import FIELD_ORDER, SearchSpace, load_space


@pytest.fixture(scope="module")
def gpunet():
    return load_space("gpunet")


@pytest.fixture(scope="module")
def demo():
    return load_space("demo")


def test_gpunet_space_matches_paper_table(gpunet):
    assert gpunet.resolutions == tuple(range(224, 513, 32))
    ops = [s.op for s in gpunet.stages]
    assert ops == ["head", "conv", "fused_irb", "fused_irb", "irb", "irb", "irb", "irb", "tail"]
    assert [s.stride for s in gpunet.stages] == [2, 1, 2, 2, 2, 1, 2, 1, 1]
    assert gpunet.stages[4].layers == tuple(range(1, 11))
    assert gpunet.stages[7].filters == tuple(range(256, 833, 64))
    assert gpunet.stages[2].expansion == (2.0, 3.0, 4.0, 5.0, 6.0)
    # Documented layout: 1 + 3 + 4 + 6*6 + 0.
    assert gpunet.width == 44 == len(gpunet.layout)
    assert gpunet.layout[:4] == ["res", "0.kernel", "0.act", "0.filters"]
    assert gpunet.size == math.prod(int(c) for c in gpunet.cardinalities)


def test_decode_chains_shapes_and_strides(gpunet, rng):
    v = rng.integers(0, gpunet.cardinalities)
    net = gpunet.decode(v)
    res = gpunet.resolutions[v[0]]
    assert net[0].op == "head" and net[0].in_shape == (1, 3, res, res) and net[0].stride == 2
    assert net[-1].op == "tail"
    for prev, cur in zip(net, net[1:]):
        assert cur.in_shape == output_shape(prev)
    # Only the first block of a stage is strided: 5 stride-2 blocks in all (stages 0, 2, 3, 4, 6).
    assert sum(s.stride == 2 for s in net) == 5


def test_roundtrip_random_vectors(gpunet, demo):
    for space in (gpunet, demo):
        vectors = space.sample(64, seed=3)
        for v in vectors:
            net = space.decode(v)
            assert space.decode(space.encode(net)) == net
            # Every position that changes the network is recovered exactly; positions of an empty
            # stage are free (they do not change the network) and encode as 0.
            assert space.encode(net).shape == (space.width,)


def test_encode_exact_when_no_stage_is_empty(demo):
    v = demo.sample(256, seed=5)
    v = v[v[:, demo.layout.index("3.layers")] > 0]  # stage 3 is the only one allowed to be empty
    for row in v:
        assert np.array_equal(demo.encode(demo.decode(row)), row)


def test_invalid_vectors_rejected_with_reason(gpunet):
    good = np.zeros(gpunet.width, dtype=int)
    with pytest.raises(ValueError, match="44 positions"):
        gpunet.decode(good[:-1])
    bad = good.copy()
    bad[gpunet.layout.index("4.filters")] = 7  # 7 choices: 0..6
    with pytest.raises(ValueError, match=r"4\.filters.*outside 0\.\.6"):
        gpunet.decode(bad)
    with pytest.raises(ValueError, match="integers"):
        gpunet.decode(good + 0.5)
    with pytest.raises(ValueError, match="outside"):
        gpunet.decode(good - 1)


def test_encode_rejects_networks_outside_the_space(gpunet, demo):
    net = demo.decode(demo.sample(1, seed=0)[0])
    with pytest.raises(ValueError, match="resolution"):
        gpunet.encode(net)
    g = gpunet.decode(np.zeros(gpunet.width, dtype=int))
    wide = list(g)
    wide[3] = wide[3].replace(out_channels=999)
    with pytest.raises(ValueError, match="not in space"):
        gpunet.encode(wide)
    with pytest.raises(ValueError, match="precision"):
        gpunet.encode([s.replace(precision="fp16") for s in g])
    assert np.array_equal(
        gpunet.with_context(precision="fp16").encode([s.replace(precision="fp16") for s in g]), gpunet.encode(g)
    )


def test_sobol_sample_covers_choices_evenly(gpunet):
    v = gpunet.sample(1024, seed=0)
    assert v.shape == (1024, gpunet.width) and v.dtype == np.int64
    gpunet.check_vectors(v)
    for col, card in enumerate(gpunet.cardinalities):
        counts = np.bincount(v[:, col], minlength=card)
        # Sobol's balance: with 1024 points every choice's share is within one point of exact.
        assert counts.max() - counts.min() <= math.ceil(1024 / card) - 1024 // card + 1, gpunet.layout[col]
    assert not np.array_equal(v, gpunet.sample(1024, seed=1))
    assert np.array_equal(v[:100], gpunet.sample(100, seed=0))


def test_user_space_from_json_and_toml(tmp_path, demo):
    (tmp_path / "s.json").write_text(json.dumps(demo.to_dict()))
    assert load_space(tmp_path / "s.json") == demo
    toml = """
name = "tiny"
in_channels = 3
resolution = {min = 32, max = 48, step = 16}
[[stages]]
op = "head"
stride = 2
filters = [8]
[[stages]]
op = "irb"
stride = 2
layers = {min = 1, max = 2}
expansion = [2, 3]
filters = [16]
se = [false, true]
[[stages]]
op = "tail"
filters = [32]
"""
    (tmp_path / "s.toml").write_text(toml)
    tiny = load_space(tmp_path / "s.toml")
    assert tiny.resolutions == (32, 48) and tiny.layout == ["res", "1.layers", "1.expansion", "1.se"]
    assert len(tiny.decode([1, 1, 0, 1])) == 4


@pytest.mark.parametrize(
    "stage, message",
    [
        ({"op": "irb", "stride": 2, "layers": [0], "filters": [8]}, "never exist"),
        ({"op": "conv", "filters": [8], "expansion": [2]}, "no expansion"),
        ({"op": "warp", "filters": [8]}, "not a block op"),
        ({"op": "irb", "filters": [8], "kernel": [4]}, "odd"),
        ({"op": "irb", "filters": [8], "act": ["gelu"]}, "act"),
        ({"op": "irb", "filters": {"min": 8, "max": 4}}, "empty"),
        ({"op": "irb"}, "filters"),
        ({"op": "irb", "filters": [8], "colour": [1]}, "unknown keys"),
    ],
)
def test_bad_space_files_are_rejected(stage, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace.from_dict({"name": "x", "resolution": [32], "stages": [stage]})


def test_malformed_space_documents(tmp_path):
    for text, message in [
        ("[1, 2]", "a search space is an object"),
        ('{"name": "x", "resolution": [32], "stages": [3]}', "stage 0 must be"),
        ("{", "not valid JSON"),
    ]:
        (tmp_path / "s.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            load_space(tmp_path / "s.json")
    with pytest.raises(ValueError, match="neither a built-in"):
        load_space(tmp_path / "absent.json")


def test_layer_specs_enumerate_everything_decode_can_produce(demo):
    keys = {s.key() for s in demo.layer_specs()}
    assert len(keys) == len(demo.layer_specs())
    for v in demo.sample(512, seed=11):
        for spec in demo.decode(v):
            assert spec.key() in keys
    # and nothing more: each enumerated key is reachable (exhaustive over the small demo space).
    seen = set()
    grids = np.stack(np.meshgrid(*[np.arange(c) for c in demo.cardinalities], indexing="ij"), -1)
    for v in grids.reshape(-1, demo.width):
        seen.update(s.key() for s in demo.decode(v))
    assert seen == keys


def test_field_order_is_stable():
    # The vector layout is part of the saved-results format: changing it breaks old encodings.
    # sparsity came last, so the dense spaces (one sparsity choice: no position) keep their layouts.
    assert FIELD_ORDER == ("layers", "kernel", "act", "expansion", "filters", "se", "sparsity")


def test_sparsity_positions_round_trip(demo):
    sparse = load_space("demo_sparse")
    assert sparse.width == demo.width + 4 and load_space("gpunet_sparse").width == 52
    assert [p for p in sparse.layout if p.endswith("sparsity")] == [
        "1.sparsity",
        "2.sparsity",
        "3.sparsity",
        "4.sparsity",
    ]
    seen = set()
    for v in sparse.sample(256, seed=4):
        net = sparse.decode(v)
        assert sparse.decode(sparse.encode(net)) == net
        if v[sparse.layout.index("3.layers")] > 0:
            assert np.array_equal(sparse.encode(net), v)
        chosen = {st.name: st.sparsity[v[sparse.layout.index(f"{st.name}.sparsity")]] for st in sparse.stages[1:]}
        present = {st.name for st in sparse.stages if st.name != "3" or v[sparse.layout.index("3.layers")]}
        marked = sparse.sparse_stages(v)
        assert marked == [n for n, sp in chosen.items() if sp == "2:4" and n in present]
        # Each block carries its stage's choice; the head lists none and stays dense.
        ops_2_4 = [spec.op for spec in net if spec.sparsity == "2:4"]
        assert net[0].sparsity == "dense" and ("tail" in ops_2_4) == ("4" in marked)
        assert ("fused_irb" in ops_2_4) == ("1" in marked)
        seen.add(tuple(marked))
    assert len(seen) > 8
    # Dense specs never come out of a 2:4 stage's choice and vice versa: the tail follows 4.sparsity.
    v = sparse.sample(1, seed=0)[0]
    v[sparse.layout.index("4.sparsity")] = 1
    assert sparse.decode(v)[-1].sparsity == "2:4"
    v[sparse.layout.index("4.sparsity")] = 0
    assert sparse.decode(v)[-1].sparsity == "dense"


def test_sparse_space_layer_specs_hold_both_variants(demo):
    sparse = load_space("demo_sparse")
    dense_keys = {s.key() for s in demo.layer_specs()}
    keys = {s.key() for s in sparse.layer_specs()}
    twins = {s.replace(sparsity="2:4").key() for s in demo.layer_specs() if s.op != "head"}
    assert keys == dense_keys | twins
    assert {s.sparsity for s in sparse.with_context(sparsity="2:4").layer_specs()} == {"2:4"}
    with pytest.raises(ValueError, match="sparsity must be among"):
        SearchSpace.from_dict(
            {
                "name": "x",
                "resolution": [32],
                "stages": [{"op": "head", "stride": 2, "filters": [16], "sparsity": ["dense", "1:4"]}],
            }
        )
    # A space-level sparsity is the default of stages that list none.
    doc = json.loads(json.dumps(demo.to_dict()))
    doc["sparsity"] = "2:4"
    for st in doc["stages"]:
        del st["sparsity"]
    assert {s.sparsity for s in SearchSpace.from_dict(doc).layer_specs()} == {"2:4"}
