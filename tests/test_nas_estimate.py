"""Phase 1: the vectorized LUT estimate equals a plain per-layer loop; missing keys; sub-spaces."""

import numpy as np
import pytest
from nas_helpers import CONTEXT, fake_ms, fill_table, stats

from profiler import calibration
from profiler.nas.estimate import LatencyEstimator, bucket, space_index
from profiler.nas.space import load_space
from profiler.table import LatencyTable


@pytest.fixture(scope="module")
def demo():
    return load_space("demo")


@pytest.fixture()
def full_table(tmp_path, demo):
    return fill_table(tmp_path / "lut.sqlite", demo.layer_specs())


def loop_estimate(table, space, vector, calib):
    """Reference: decode one candidate, look every block up, sum, calibrate (no vectorization)."""
    specs = space.decode(vector)
    total = sum(table.get(s).median_ms for s in specs)
    return float(calibration.apply(np.array([total]), np.array([len(specs)]), calib)[0])


def test_vectorized_estimate_equals_per_layer_loop(full_table, demo, rng):
    calib = {"kind": calibration.KIND, "scale": 0.9, "per_layer_ms": -0.01, "offset_ms": 0.05}
    full_table.set_calibration(calib)
    est = LatencyEstimator(full_table, demo)
    vectors = demo.sample(300, seed=int(rng.integers(2**31)))
    result = est.estimate(vectors)
    expected = [loop_estimate(full_table, demo, v, calib) for v in vectors]
    np.testing.assert_allclose(result.latency_ms, expected, rtol=1e-12)
    assert list(result.n_layers) == [len(demo.decode(v)) for v in vectors]
    assert not result.missing.any() and result.missing_keys == []
    assert est.coverage == 1.0


def test_gpunet_index_matches_decode():
    """Ids from integer arithmetic name exactly the blocks decode() produces (big space, sampled)."""
    space = load_space("gpunet")
    index = space_index(space)
    vectors = space.sample(64, seed=9)
    ids, counts = index.ids_and_counts(vectors)
    for row, v in enumerate(vectors):
        from_index = sorted(k for i, c in zip(ids[row], counts[row]) if c for k in [index.keys[i]] * int(c))
        assert from_index == sorted(s.key() for s in space.decode(v))


def test_missing_blocks_are_nan_and_reported(tmp_path, demo):
    specs = demo.layer_specs()
    dropped = {s.key() for s in specs[::7]}
    table = fill_table(tmp_path / "partial.sqlite", specs, skip=dropped)
    est = LatencyEstimator(table, demo)
    vectors = demo.sample(512, seed=2)
    result = est.estimate(vectors)
    needs = np.array([any(s.key() in dropped for s in demo.decode(v)) for v in vectors])
    assert needs.any() and (~needs).any()
    np.testing.assert_array_equal(result.missing, needs)  # never priced at 0
    assert np.all(np.isfinite(result.latency_ms[~needs]))
    reported = set(result.missing_keys)
    assert reported <= dropped
    assert reported == {s.key() for v in vectors[needs] for s in demo.decode(v)} & dropped
    path = tmp_path / "missing.txt"
    assert result.write_missing_keys(path) == len(reported)
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    assert set(lines) == reported


def test_estimate_networks_generic_path(full_table, demo):
    est = LatencyEstimator(full_table, demo)
    vectors = demo.sample(20, seed=1)
    networks = [demo.decode(v) for v in vectors]
    np.testing.assert_allclose(est.estimate_networks(networks).latency_ms, est.estimate(vectors).latency_ms)
    foreign = [networks[0][:-1] + [networks[0][-1].replace(out_channels=77)]]
    result = est.estimate_networks(foreign)
    assert np.isnan(result.latency_ms[0]) and result.missing_keys == [foreign[0][-1].key()]


def test_table_context_sets_decode_precision(tmp_path, demo):
    table = LatencyTable(tmp_path / "fp16.sqlite", {**CONTEXT, "precision": "fp16"})
    for spec in demo.with_context(precision="fp16").layer_specs():
        table.put(spec, stats(1.0))
    result = LatencyEstimator(table, demo).estimate(demo.sample(8, seed=0))
    assert np.all(np.isfinite(result.latency_ms))


def test_bucket_counts_and_labels():
    lat = np.array([0.1, 0.4, 0.5, 0.7, 1.2, np.nan, 3.0])
    subs = bucket(lat, [1.0, 0.5])
    assert [s.label for s in subs] == ["< 0.5 ms", "0.5-1 ms", ">= 1 ms"]
    assert [list(s.indices) for s in subs] == [[0, 1], [2, 3], [4, 6]]
    assert sum(s.count for s in subs) == 6  # the NaN (missing) candidate is in none
    with pytest.raises(ValueError, match="budgets"):
        bucket(lat, [])
    with pytest.raises(ValueError, match="budgets"):
        bucket(lat, [0.5, 0.5])


def test_invalid_vector_in_a_later_chunk_is_named(full_table, demo):
    from profiler.nas.estimate import CHUNK

    vectors = demo.sample(CHUNK + 10, seed=0)
    vectors[CHUNK + 3, 1] = 99
    with pytest.raises(ValueError, match=rf"row {CHUNK + 3}\).*0\.act"):
        LatencyEstimator(full_table, demo).estimate(vectors)


def test_sparse_stages_are_priced_from_their_2_4_rows(tmp_path, demo):
    """A 2:4 stage costs its 2:4 rows: the estimate equals the per-layer loop, and a candidate
    differing only in one stage's sparsity differs by exactly that stage's dense-vs-2:4 rows."""
    sparse = load_space("demo_sparse")
    table = LatencyTable(tmp_path / "both.sqlite", {**CONTEXT, "sparse_executor": "test"})
    specs = sparse.layer_specs()
    for spec in specs:  # 2:4 rows are 60% of their dense twins: a visible, known difference
        dense_ms = fake_ms(spec.replace(sparsity="dense").key())
        table.put(spec, stats(dense_ms * (0.6 if spec.sparsity == "2:4" else 1.0)))
    est = LatencyEstimator(table, sparse)
    vectors = sparse.sample(200, seed=7)
    np.testing.assert_allclose(
        est.estimate(vectors).latency_ms, [loop_estimate(table, sparse, v, None) for v in vectors], rtol=1e-12
    )
    pos = sparse.layout.index("2.sparsity")
    dense_v, sparse_v = vectors[0].copy(), vectors[0].copy()
    dense_v[pos], sparse_v[pos] = 0, 1
    saving = sum(
        table.get(s).median_ms - table.get(s.replace(sparsity="2:4")).median_ms
        for s in sparse.decode(dense_v)
        if s not in sparse.decode(sparse_v)
    )
    lat = est.estimate(np.stack([dense_v, sparse_v])).latency_ms
    assert saving > 0
    np.testing.assert_allclose(lat[0] - lat[1], saving, rtol=1e-9)

    # The table lacks one 2:4 row: candidates using it are NaN and the 2:4 key is reported.
    twin = next(s for s in sparse.decode(sparse_v) if s.sparsity == "2:4")
    partial = LatencyTable(tmp_path / "partial.sqlite", {**CONTEXT, "sparse_executor": "test"})
    for spec in specs:
        if spec.key() != twin.key():
            partial.put(spec, stats(1.0))
    result = LatencyEstimator(partial, sparse).estimate(np.stack([dense_v, sparse_v]))
    assert np.isfinite(result.latency_ms[0]) and np.isnan(result.latency_ms[1])
    assert result.missing_keys == [twin.key()] and twin.key().endswith("|2:4")
