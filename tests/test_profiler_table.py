"""LatencyTable: the SQLite latency store (issue 5, part 4)."""

import json
import sqlite3
import threading

import numpy as np
import pytest

from profiler.spec import LayerSpec
from profiler.table import ContextMismatchError, LatencyTable, read_export
from pysparse24.timing import LatencyStats

CTX = {
    "device": "Test CPU",
    "driver": "none",
    "runtime": "ort 1.20",
    "backend": "onnxruntime",
    "precision": "fp32",
    "batch": 1,
    "threads": 2,
}


def spec(c=16, out=32, op="irb", **kw):
    return LayerSpec(op=op, in_shape=(1, c, 28, 28), out_channels=out, kernel=3, expansion=4, **kw)


def stats(rng, scale=1.0):
    return LatencyStats.from_samples(rng.uniform(0.5, 1.5, size=25) * scale, warmup=5)


def test_put_get_by_spec_or_key_and_persist(tmp_path, rng):
    path = tmp_path / "t.sqlite"
    a, b = spec(16), spec(24, se=True)
    sa, sb = stats(rng), stats(rng, 3.0)
    with LatencyTable(path, CTX) as t:
        t.put(a, sa)
        t.put(b.key(), sb)
        assert len(t) == 2
        assert t.get(a.key()) == sa and t.get(b) == sb
        assert t.get(spec(40)) is None
        assert t.keys() == sorted([a.key(), b.key()])
        assert a in t and spec(40) not in t
    with LatencyTable(path) as t:  # reopened: everything and the context survive
        assert t.get(a) == sa and t.get(b) == sb
        assert {k: v for k, v in t.context.items() if k != "date"} == CTX
        assert "date" in t.context


def test_put_replaces_and_never_duplicates(tmp_path, rng):
    with LatencyTable(tmp_path / "t.sqlite", CTX) as t:
        first, second = stats(rng), stats(rng, 2.0)
        t.put(spec(), first)
        t.put(spec(), second)
        assert len(t) == 1 and t.get(spec()) == second


def test_medians_vectorized_with_nan_for_missing(tmp_path, rng):
    specs = [spec(c) for c in (8, 16, 24, 32)]
    with LatencyTable(tmp_path / "t.sqlite", CTX) as t:
        for s in specs[:3]:
            t.put(s, stats(rng))
        query = [specs[2], specs[3].key(), specs[0].key(), "garbage", specs[2].key()]
        got = t.medians_ms(query)
        expect = [t.get(specs[2]).median_ms, np.nan, t.get(specs[0]).median_ms, np.nan, t.get(specs[2]).median_ms]
        np.testing.assert_array_equal(got, np.array(expect))
        assert got.dtype == np.float64 and t.medians_ms([]).shape == (0,)
        assert t.missing(query) == [specs[3].key(), "garbage"]


def test_medians_follow_writes_from_this_and_another_connection(tmp_path, rng):
    path = tmp_path / "t.sqlite"
    with LatencyTable(path, CTX) as reader, LatencyTable(path, CTX) as writer:
        assert np.isnan(reader.medians_ms([spec()])[0])
        s = stats(rng)
        writer.put(spec(), s)
        assert reader.medians_ms([spec()])[0] == s.median_ms
        s2 = stats(rng, 2.0)
        reader.put(spec(), s2)
        assert reader.medians_ms([spec()])[0] == s2.median_ms and reader.missing([spec()]) == []


def test_errors_recorded_and_cleared_by_success(tmp_path, rng):
    with LatencyTable(tmp_path / "t.sqlite", CTX) as t:
        t.put_error(spec(8), "RuntimeError: boom")
        assert t.errors() == {spec(8).key(): "RuntimeError: boom"} and len(t) == 0
        assert t.error(spec(8)) == "RuntimeError: boom"
        assert t.missing([spec(8)]) == [spec(8).key()]
        t.put(spec(8), stats(rng))
        assert t.errors() == {} and len(t) == 1


def test_context_mismatch_names_fields_and_date_is_not_identity(tmp_path):
    path = tmp_path / "t.sqlite"
    LatencyTable(path, {**CTX, "date": "2020-01-01"}).close()
    LatencyTable(path, {**CTX, "date": "2026-11-22"}).close()  # another day, same context: fine
    with pytest.raises(ContextMismatchError) as err:
        LatencyTable(path, {**CTX, "threads": 8, "device": "Other CPU"})
    assert "threads (table: 2, the given context: 8)" in str(err.value) and "device" in str(err.value)
    assert "backend" not in str(err.value)
    with pytest.raises(ContextMismatchError, match="extra"):
        LatencyTable(path, {**CTX, "extra": 1})


def test_bad_inputs_are_clear_errors(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="no latency table"):
        LatencyTable(tmp_path / "typo.sqlite")
    assert not (tmp_path / "typo.sqlite").exists()
    with pytest.raises(TypeError, match="context"):
        LatencyTable(tmp_path / "t.sqlite", {"device": ["not", "scalar"]})
    with LatencyTable(tmp_path / "t.sqlite", CTX) as t:
        with pytest.raises(ValueError, match="not canonical"):
            t.put(spec().key().replace("e=4", "e=4.0"), stats(rng))
        with pytest.raises(ValueError, match="LayerSpec key"):
            t.put("conv 3x3", stats(rng))
        with pytest.raises(TypeError):
            t.put(spec(), {"median_ms": 1.0})
        with pytest.raises(ValueError, match="non-finite"):
            t.put(spec(), LatencyStats(float("nan"), 1, 1, 1, 0, 5, 1))
        with pytest.raises(TypeError):
            t.get(42)
        with pytest.raises(ValueError, match="JSON"):
            t.set_calibration({"overhead_ms": float("inf")})
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyTable(tmp_path / "junk.sqlite", CTX)
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE x (a)")
    other.commit()
    other.close()
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyTable(tmp_path / "other.sqlite", CTX)


def test_empty_file_left_by_a_killed_creator(tmp_path, rng):
    path = tmp_path / "t.sqlite"
    path.write_bytes(b"")  # what a process killed before its first commit leaves behind
    with pytest.raises(FileNotFoundError, match="empty"):
        LatencyTable(path)
    with LatencyTable(path, CTX) as t:
        t.put(spec(), stats(rng))
    with LatencyTable(path) as t:
        assert len(t) == 1


def test_private_files_of_killed_creators_are_removed(tmp_path):
    """A creator SIGKILLed before publishing leaves .NAME.PID.TID.new; the next creation removes it
    when that process is gone, and leaves a live creator's file alone."""
    import os

    dead = tmp_path / ".t.sqlite.999999999.1.new"  # above any pid_max: no such process
    alive = tmp_path / f".t.sqlite.{os.getpid()}.99.new"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    LatencyTable(tmp_path / "t.sqlite", CTX).close()
    assert not dead.exists() and alive.exists()


def test_concurrent_creators_agree(tmp_path):
    """Several builders starting at once on a new file: one creates it, the others open it."""
    path, errors = tmp_path / "t.sqlite", []

    def create():
        try:
            LatencyTable(path, CTX).close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with LatencyTable(path) as t:
        assert {k: v for k, v in t.context.items() if k != "date"} == CTX


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "t.sqlite"
    LatencyTable(path, CTX).close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=99")
    con.close()
    with pytest.raises(ValueError, match="schema version 99"):
        LatencyTable(path)


def test_wal_and_calibration(tmp_path):
    path = tmp_path / "t.sqlite"
    with LatencyTable(path, CTX) as t:
        assert t.calibration() is None
        t.set_calibration({"overhead_ms": 0.012, "scale": 1.03})
        assert t._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with LatencyTable(path) as t:
        assert t.calibration() == {"overhead_ms": 0.012, "scale": 1.03}


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_import_roundtrip(tmp_path, rng, fmt):
    src = tmp_path / "src.sqlite"
    with LatencyTable(src, CTX) as t:
        for c in (8, 16, 24):
            t.put(spec(c, act="swish"), stats(rng))
        t.put_error(spec(40), 'ValueError: bad "quote", comma\nand newline')
        t.set_calibration({"overhead_ms": 0.05})
        t.export(tmp_path / f"out.{fmt}")
        rows, errors = t.rows(), t.error_rows()
    dump = read_export(tmp_path / f"out.{fmt}")
    assert dump["entries"] == rows and dump["errors"] == errors  # lossless, floats included
    with LatencyTable(tmp_path / "dst.sqlite", dump["context"]) as dst:
        counts = dst.import_file(tmp_path / f"out.{fmt}")
        assert (counts.added, counts.skipped) == (4, 0)
        assert dst.rows() == rows and dst.error_rows() == errors
        assert dst.calibration() == {"overhead_ms": 0.05} and dst.context == dump["context"]
        assert dst.import_file(tmp_path / f"out.{fmt}").skipped == 4  # again: nothing duplicated
        assert len(dst) == 3


def test_csv_export_is_plain_csv_with_its_metadata_beside_it(tmp_path, rng):
    """pandas.read_csv reads the export with no options (the '#' header lines broke it); context and
    calibration live in NAME.meta.json, which import needs; older '#'-header exports still import."""
    import pandas as pd

    with LatencyTable(tmp_path / "src.sqlite", CTX) as t:
        for c in (8, 16):
            t.put(spec(c), stats(rng))
        t.put_error(spec(40), "RuntimeError: no")
        t.set_calibration({"overhead_ms": 0.05})
        t.export(tmp_path / "lut.csv")
        rows = t.rows()
    frame = pd.read_csv(tmp_path / "lut.csv")
    assert list(frame["status"]) == ["ok", "ok", "error"] and frame.shape[0] == 3
    assert frame.loc[0, "median_ms"] == rows[0]["median_ms"] and frame.loc[0, "key"] == rows[0]["key"]
    meta = json.loads((tmp_path / "lut.meta.json").read_text())
    assert meta["context"]["device"] == CTX["device"] and meta["calibration"] == {"overhead_ms": 0.05}

    text = (tmp_path / "lut.csv").read_text()
    legacy = (
        f"# {meta['format']} schema_version={meta['schema_version']}\n"
        f"# context: {json.dumps(meta['context'])}\n# calibration: {json.dumps(meta['calibration'])}\n" + text
    )
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "lut.csv").write_text(legacy)
    assert read_export(tmp_path / "old" / "lut.csv")["entries"] == rows

    (tmp_path / "lut.meta.json").unlink()
    with pytest.raises(ValueError, match="no lut.meta.json next to it"):
        read_export(tmp_path / "lut.csv")


def test_import_refuses_other_context_and_bad_files(tmp_path, rng):
    with LatencyTable(tmp_path / "a.sqlite", CTX) as t:
        t.put(spec(), stats(rng))
        t.export(tmp_path / "a.json")
    with LatencyTable(tmp_path / "b.sqlite", {**CTX, "backend": "tensorrt"}) as other:
        with pytest.raises(
            ContextMismatchError, match="backend \\(table: 'tensorrt', the data in .*a.json: 'onnxruntime'\\)"
        ):
            other.import_file(tmp_path / "a.json")
        assert len(other) == 0
        bad = json.loads((tmp_path / "a.json").read_text())
        bad["entries"][0]["median_ms"] = "NaN"
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="not a valid latency table export"):
            other.import_file(tmp_path / "bad.json")
        (tmp_path / "x.json").write_text("[1, 2]")
        with pytest.raises(ValueError, match="not a latency table export"):
            other.import_file(tmp_path / "x.json")
        with pytest.raises(ValueError, match="format"):
            other.export(tmp_path / "out.pickle")


SPARSE_CTX = {**CTX, "backend": "torch", "sparse_executor": "pysparse24 cpu"}


def test_2_4_rows_need_a_sparse_executor_in_the_context(tmp_path, rng):
    """A table whose backend cannot run 2:4 refuses a 2:4 row (put and import alike), keeping the rest."""
    with LatencyTable(tmp_path / "dense.sqlite", CTX) as t:
        t.put(spec(), stats(rng))
        with pytest.raises(ValueError, match="cannot execute 2:4"):
            t.put(spec(sparsity="2:4"), stats(rng))
        assert t.keys() == [spec().key()]
    with LatencyTable(tmp_path / "sparse.sqlite", {**SPARSE_CTX, "backend": "onnxruntime"}) as t:
        t.put(spec(sparsity="2:4"), stats(rng))
        assert spec(sparsity="2:4") in t


def test_views_split_the_key_and_pair_dense_with_2_4(tmp_path, rng):
    specs = [
        LayerSpec("conv2d", (2, 24, 14, 7), 40, kernel=3, stride=2, act="swish", groups=4),
        LayerSpec("irb", (1, 16, 28, 28), 32, kernel=5, expansion=3.82, se=True),
        LayerSpec("linear", (8, 768, 1, 1), 3072, act="none", precision="fp16", distill=True),
    ]
    medians = {}
    with LatencyTable(tmp_path / "t.sqlite", SPARSE_CTX) as t:
        for s in specs:
            for sparsity, scale in (("dense", 2.0), ("2:4", 1.0)):
                key = s.replace(sparsity=sparsity)
                t.put(key, stats(rng, scale))
                medians[key.key()] = t.get(key).median_ms
        t.put(spec(), stats(rng))  # dense only: no pair
        frame = t.to_pandas()
        pairs = t.to_pandas("sparse_vs_dense")
        with pytest.raises(ValueError, match="view must be one of"):
            t.to_pandas("latency; DROP TABLE latency")
    assert len(frame) == 7 and len(pairs) == 3
    for row in frame.to_dict("records"):  # every column equals the field LayerSpec.from_key reads
        s = LayerSpec.from_key(row["key"])
        assert (row["batch"], row["in_channels"], row["in_h"], row["in_w"]) == s.in_shape
        assert (row["op"], row["out_channels"], row["kernel"], row["stride"], row["act"], row["groups"]) == (
            s.op,
            s.out_channels,
            s.kernel,
            s.stride,
            s.act,
            s.groups,
        )
        assert (row["expansion"], bool(row["se"]), bool(row["distill"]), row["precision"], row["sparsity"]) == (
            s.expansion,
            s.se,
            s.distill,
            s.precision,
            s.sparsity,
        )
        assert row["layer"] + "|" + s.sparsity == row["key"] and row["median_ms"] == medians.get(
            row["key"], row["median_ms"]
        )
    for row in pairs.to_dict("records"):
        dense, sparse = medians[row["layer"] + "|dense"], medians[row["layer"] + "|2:4"]
        assert (row["dense_ms"], row["sparse_ms"]) == (dense, sparse)
        assert row["speedup"] == pytest.approx(dense / sparse)
    # A plain SQLite client sees the same views (they live in the file).
    con = sqlite3.connect(tmp_path / "t.sqlite")
    assert con.execute(
        "SELECT count(*) FROM sparse_vs_dense WHERE op = 'linear' AND precision = 'fp16'"
    ).fetchone() == (1,)
    con.close()


def test_a_table_made_before_the_views_gains_them_when_opened(tmp_path, rng):
    path = tmp_path / "old.sqlite"
    with LatencyTable(path, CTX) as t:
        t.put(spec(), stats(rng))
    con = sqlite3.connect(path)
    with con:
        con.execute("DROP VIEW sparse_vs_dense")
        con.execute("DROP VIEW latency_fields")
    con.close()
    with LatencyTable(path) as t:
        assert t.to_pandas()["op"].tolist() == ["irb"]
