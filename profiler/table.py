"""LatencyTable: the per-layer latency lookup table, one embedded SQLite file.

What the file holds:
- `latency`: one row per LayerSpec key with its LatencyStats (median, p10, p90, mean, std, n, warmup);
- `errors`:  one row per key whose measurement failed, with the error text (a later success replaces it);
- `meta`:    the measurement context (device, driver/runtime versions, backend, precision, batch,
             threads, date) and the optional calibration that turns a sum of layer latencies into an
             end-to-end estimate.
- views:     `latency_fields` splits each key into its LayerSpec fields (op, n, c, h, w, out, ...,
             precision, sparsity) next to the stats, and `sparse_vs_dense` pairs the dense and the 2:4
             row of the same layer (dense_ms, sparse_ms, speedup): one query, from any SQLite client.

2:4 rows are stored only when the context names a `sparse_executor` (what really ran the layers
sparse): a runtime that executes pruned weights at dense speed must not put its timing under a
sparse key.

Every write is its own transaction (WAL journal), so a process killed at any moment leaves every
committed measurement in place and nothing half-written. Timings from one context (device, runtime,
threads...) are meaningless next to another's, so a table refuses to mix contexts; the date is recorded
but is not part of the identity. Export/import is CSV or JSON, never pickle.
"""

from __future__ import annotations

import csv
import datetime as _dt
import glob
import io
import json
import math
import os
import sqlite3
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from pysparse24._files import atomic_output
from pysparse24.timing import LatencyStats

from .spec import LayerSpec

SCHEMA_VERSION = 1
FORMAT_NAME = "pysparse24-latency-table"
# Written into SQLite's header (PRAGMA application_id) so a stray database is recognized as not ours.
APPLICATION_ID = 0x50533234  # "PS24"

# Context fields that are recorded but do not decide whether two measurements may share a table.
NON_IDENTITY_FIELDS = frozenset({"date"})
# Context field naming what executes 2:4 layers sparse (absent: the backend cannot).
SPARSE_EXECUTOR = "sparse_executor"
STAT_FIELDS = tuple(f.name for f in fields(LatencyStats))

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE latency (
    key TEXT PRIMARY KEY,
    median_ms REAL NOT NULL, p10_ms REAL NOT NULL, p90_ms REAL NOT NULL,
    mean_ms REAL NOT NULL, std_ms REAL NOT NULL, n INTEGER NOT NULL, warmup INTEGER NOT NULL,
    measured_at TEXT NOT NULL
);
CREATE TABLE errors (key TEXT PRIMARY KEY, message TEXT NOT NULL, failed_at TEXT NOT NULL);
"""

# The key split into LayerSpec fields (see LayerSpec.key(): 'v1|op|in=NxCxHxW|out=..|k=..|s=..|e=..|se=..|
# act=..|g=..|d=..|precision|sparsity'), via SQLite's JSON functions so any SQLite client can query it.
# `layer` is the key without its sparsity: the dense and the 2:4 row of one layer share it.
_VIEWS = {
    "latency_fields": """
CREATE VIEW latency_fields AS
WITH parts AS (
    SELECT l.*, '["' || replace(l.key, '|', '","') || '"]' AS p FROM latency AS l
), fields AS (
    SELECT parts.*, '[' || replace(substr(json_extract(p, '$[2]'), 4), 'x', ',') || ']' AS shape FROM parts
)
SELECT key,
    substr(key, 1, length(key) - length(json_extract(p, '$[12]')) - 1) AS layer,
    json_extract(p, '$[1]') AS op,
    json_extract(shape, '$[0]') AS batch, json_extract(shape, '$[1]') AS in_channels,
    json_extract(shape, '$[2]') AS in_h, json_extract(shape, '$[3]') AS in_w,
    CAST(substr(json_extract(p, '$[3]'), 5) AS INTEGER) AS out_channels,
    CAST(substr(json_extract(p, '$[4]'), 3) AS INTEGER) AS kernel,
    CAST(substr(json_extract(p, '$[5]'), 3) AS INTEGER) AS stride,
    CAST(substr(json_extract(p, '$[6]'), 3) AS REAL) AS expansion,
    CAST(substr(json_extract(p, '$[7]'), 4) AS INTEGER) AS se,
    substr(json_extract(p, '$[8]'), 5) AS act,
    CAST(substr(json_extract(p, '$[9]'), 3) AS INTEGER) AS groups,
    CAST(substr(json_extract(p, '$[10]'), 3) AS INTEGER) AS distill,
    json_extract(p, '$[11]') AS precision, json_extract(p, '$[12]') AS sparsity,
    median_ms, p10_ms, p90_ms, mean_ms, std_ms, n, warmup, measured_at
FROM fields""",
    "sparse_vs_dense": """
CREATE VIEW sparse_vs_dense AS
SELECT d.layer, d.op, d.batch, d.in_channels, d.in_h, d.in_w, d.out_channels, d.kernel, d.stride,
    d.precision, d.median_ms AS dense_ms, s.median_ms AS sparse_ms, d.median_ms / s.median_ms AS speedup
FROM latency_fields AS d JOIN latency_fields AS s ON s.layer = d.layer
WHERE d.sparsity = 'dense' AND s.sparsity = '2:4'""",
}


def cannot_run_sparse(backend_name) -> str:
    """Why 2:4 measurements are refused for a backend without a sparse executor (one message for the
    backend, the builder and the table)."""
    return (
        f"the {backend_name} backend cannot execute 2:4 sparsity: it would time the pruned layers at dense "
        f"speed under a sparse key. Measure 2:4 with the torch backend (pysparse24's sparse modules) "
        f"or tensorrt (SPARSE_WEIGHTS)"
    )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def key_of(spec_or_key: LayerSpec | str) -> str:
    """The canonical key of a LayerSpec, or a key string checked to be canonical."""
    if isinstance(spec_or_key, LayerSpec):
        return spec_or_key.key()
    if isinstance(spec_or_key, str):
        canonical = LayerSpec.from_key(spec_or_key).key()  # raises ValueError on a malformed key
        if canonical != spec_or_key:
            raise ValueError(f"key {spec_or_key!r} is not canonical; its canonical form is {canonical!r}")
        return spec_or_key
    raise TypeError(f"expected a LayerSpec or a key string, got {type(spec_or_key).__name__}")


def _checked_stats(key: str, stats: Mapping) -> list:
    """The LatencyStats fields of `stats` in column order; ValueError unless finite, >= 0, n >= 1."""
    values = [stats[f] for f in STAT_FIELDS]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values) or stats["n"] < 1:
        raise ValueError(f"refusing non-finite/negative/empty stats for {key}: {dict(stats)}")
    return values


def _lookup_key(spec_or_key: LayerSpec | str) -> str:
    """Key for a read: a LayerSpec's key, or the string as given (a malformed key simply is not found)."""
    if isinstance(spec_or_key, LayerSpec):
        return spec_or_key.key()
    if isinstance(spec_or_key, str):
        return spec_or_key
    raise TypeError(f"expected a LayerSpec or a key string, got {type(spec_or_key).__name__}")


def _check_context(context: Mapping) -> dict:
    if not isinstance(context, Mapping) or not context:
        raise TypeError(f"context must be a non-empty dict, got {context!r}")
    out = {}
    for name, value in context.items():
        if not isinstance(name, str):
            raise TypeError(f"context field names must be strings, got {name!r}")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"context field {name!r} must be a str/int/float/bool, got {type(value).__name__}")
        out[name] = value
    return out


def context_differences(a: Mapping, b: Mapping, a_name: str = "first", b_name: str = "second") -> list[str]:
    """Identity fields on which two contexts differ, each as "name (first: x, second: y)"."""
    names = sorted((set(a) | set(b)) - NON_IDENTITY_FIELDS)
    return [
        f"{n} ({a_name}: {a.get(n, '<absent>')!r}, {b_name}: {b.get(n, '<absent>')!r})"
        for n in names
        if a.get(n) != b.get(n)
    ]


class ContextMismatchError(ValueError):
    """Raised when measurements from one context would be mixed into a table built on another."""


def ensure_same_context(table_context: Mapping, other: Mapping, what: str) -> None:
    diffs = context_differences(table_context, other, "table", what)
    if diffs:
        raise ContextMismatchError(
            f"{what} was measured in a different context than the table; differing fields: " + "; ".join(diffs)
        )


@dataclass
class ImportCounts:
    added: int = 0  # entries (stats or errors) written
    skipped: int = 0  # entries already present and kept (import without replace)


def _remove_stale_new_tables(path: Path) -> None:
    """Private files of creators that were killed before publishing (their process is gone)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.*.new"):
        pid = stale.name[len(path.name) + 2 :].split(".")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish_new_table(path: Path, context: dict) -> None:
    """Create a complete table (schema, WAL mode, context) in a private file, then publish it under
    `path` in one atomic step. Concurrent creators race only on that step (the first wins, the others
    then open its file), and a creator killed midway leaves no half-made table behind."""
    _remove_stale_new_tables(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    con = sqlite3.connect(str(tmp))
    try:
        con.execute("PRAGMA journal_mode=WAL")  # stored in the file: every later connection uses WAL
        with con:
            con.executescript(_SCHEMA)
            _create_views(con)
            con.execute(f"PRAGMA application_id={APPLICATION_ID}")
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.execute("INSERT INTO meta(name, value) VALUES('context', ?)", (json.dumps(context, sort_keys=True),))
    finally:
        con.close()  # the last connection to close folds the WAL back into the file
    try:
        if path.exists() and path.stat().st_size == 0:
            os.replace(tmp, path)  # an empty file (e.g. `touch`ed) holds nothing to lose
        else:
            os.link(tmp, path)  # fails if another creator published first: then its table is opened
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _create_views(con: sqlite3.Connection) -> None:
    """Create the views a table lacks (tables made before a view existed gain it when opened)."""
    have = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    for name, sql in _VIEWS.items():
        if name not in have:
            con.execute(sql)


class LatencyTable:
    """Per-key latency statistics in one SQLite file; see the module docstring.

    `LatencyTable(path, context)` creates the file (or opens it and checks that `context` matches the
    recorded one); `LatencyTable(path)` opens an existing table and never creates one (a mistyped
    path is an error, not a new empty table).
    """

    def __init__(self, path: str | Path, context: Mapping | None = None) -> None:
        self.path = Path(path)
        self._medians: dict[str, float] | None = None  # read cache, see medians_ms
        self._medians_version = None
        if context is not None:
            context = _check_context(context)
            if not self.path.exists() or self.path.stat().st_size == 0:
                _publish_new_table(self.path, {**context, "date": context.get("date") or _now()})
        elif not self.path.exists():
            raise FileNotFoundError(f"no latency table at {self.path} (pass a context to create one)")
        try:
            # timeout: wait (rather than fail) while another process holds the write lock.
            self._conn = sqlite3.connect(str(self.path), timeout=30.0)
            self._context = self._check_file(context)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ValueError(f"{self.path} is not a latency table: {exc}") from None
        except BaseException:
            self.close()
            raise

    # ---- set-up -------------------------------------------------------------------------------
    def _check_file(self, context: dict | None) -> dict:
        """Check that the file is a latency table this code reads; return its context (checked
        against `context` when one is given)."""
        c = self._conn
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            if c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                raise FileNotFoundError(f"no latency table in {self.path} (the file is empty)")
            raise ValueError(f"{self.path} is an SQLite file but not a latency table")
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.path} uses table schema version {version}; this profiler reads up to {SCHEMA_VERSION} (upgrade it)"
            )
        # Future schema migrations go here (version < SCHEMA_VERSION).
        c.execute("PRAGMA synchronous=NORMAL")  # with WAL: a committed row survives a killed process
        with c:
            _create_views(c)
        stored = self._meta_json("context")
        if context is not None:
            ensure_same_context(stored, context, "the given context")
        return stored

    def _set_meta(self, name: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta(name, value) VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (name, value),
        )

    def _meta_json(self, name: str):
        row = self._conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    # ---- context and calibration ----------------------------------------------------------------
    @property
    def context(self) -> dict:
        """The measurement context (a copy)."""
        return dict(self._context)

    def set_calibration(self, calibration: Mapping) -> None:
        """Store how a sum of layer latencies maps to an end-to-end estimate (a JSON-able dict)."""
        if not isinstance(calibration, Mapping):
            raise TypeError(f"calibration must be a dict, got {type(calibration).__name__}")
        try:
            text = json.dumps(dict(calibration), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"calibration must be JSON-serializable with finite numbers: {exc}") from None
        with self._conn:
            self._set_meta("calibration", text)

    def calibration(self) -> dict | None:
        return self._meta_json("calibration")

    # ---- writes -----------------------------------------------------------------------------------
    def put(self, spec_or_key: LayerSpec | str, stats: LatencyStats) -> None:
        """Store (or replace) the stats of one key in its own transaction; clears an earlier error."""
        key = key_of(spec_or_key)
        if not isinstance(stats, LatencyStats):
            raise TypeError(f"stats must be a LatencyStats, got {type(stats).__name__}")
        values = _checked_stats(key, stats.to_dict())
        with self._conn:
            self._write_stats(key, values, _now())

    def _write_stats(self, key: str, values: Sequence, measured_at: str) -> None:
        if SPARSE_EXECUTOR not in self._context and LayerSpec.from_key(key).sparsity != "dense":
            raise ValueError(
                f"refusing a 2:4 row in a table without a sparse executor ({key}): "
                + cannot_run_sparse(self._context.get("backend"))
            )
        cols = ", ".join(STAT_FIELDS)
        updates = ", ".join(f"{f}=excluded.{f}" for f in STAT_FIELDS)
        self._conn.execute(
            f"INSERT INTO latency(key, {cols}, measured_at) VALUES({', '.join('?' * (len(STAT_FIELDS) + 2))}) "
            f"ON CONFLICT(key) DO UPDATE SET {updates}, measured_at=excluded.measured_at",
            (key, *values, measured_at),
        )
        self._conn.execute("DELETE FROM errors WHERE key=?", (key,))
        self._medians = None  # PRAGMA data_version does not see this connection's own writes

    def put_error(self, spec_or_key: LayerSpec | str, message: str) -> None:
        """Record that measuring this key failed (the stats of a key, if any, are kept)."""
        key = key_of(spec_or_key)
        with self._conn:
            self._write_error(key, str(message), _now())

    def _write_error(self, key: str, message: str, failed_at: str) -> None:
        self._conn.execute(
            "INSERT INTO errors(key, message, failed_at) VALUES(?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET message=excluded.message, failed_at=excluded.failed_at",
            (key, message, failed_at),
        )

    # ---- reads ------------------------------------------------------------------------------------
    def get(self, spec_or_key: LayerSpec | str) -> LatencyStats | None:
        cols = ", ".join(STAT_FIELDS)
        row = self._conn.execute(f"SELECT {cols} FROM latency WHERE key=?", (_lookup_key(spec_or_key),)).fetchone()
        return None if row is None else LatencyStats(*row)

    def error(self, spec_or_key: LayerSpec | str) -> str | None:
        row = self._conn.execute("SELECT message FROM errors WHERE key=?", (_lookup_key(spec_or_key),)).fetchone()
        return None if row is None else row[0]

    def errors(self) -> dict[str, str]:
        """Every failed key with its error message."""
        return dict(self._conn.execute("SELECT key, message FROM errors ORDER BY key"))

    def keys(self) -> list[str]:
        """Keys that have stats (sorted)."""
        return [k for (k,) in self._conn.execute("SELECT key FROM latency ORDER BY key")]

    def __len__(self) -> int:
        return self._conn.execute("SELECT count(*) FROM latency").fetchone()[0]

    def __contains__(self, spec_or_key) -> bool:
        return (
            self._conn.execute("SELECT 1 FROM latency WHERE key=?", (_lookup_key(spec_or_key),)).fetchone() is not None
        )

    def _median_map(self) -> dict[str, float]:
        # PRAGMA data_version changes whenever another connection commits, so the cache also
        # follows writes made by other processes (e.g. a builder running next to a NAS search).
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if self._medians is None or version != self._medians_version:
            self._medians = dict(self._conn.execute("SELECT key, median_ms FROM latency"))
            self._medians_version = version
        return self._medians

    def medians_ms(self, keys: Iterable[LayerSpec | str]) -> np.ndarray:
        """Median latency (ms) of each key as a float64 array; NaN where the table has no entry."""
        medians = self._median_map()
        keys = [_lookup_key(k) for k in keys]
        return np.fromiter((medians.get(k, np.nan) for k in keys), dtype=np.float64, count=len(keys))

    def missing(self, keys: Iterable[LayerSpec | str]) -> list[str]:
        """Keys (in first-seen order, without repeats) that have no stats in the table."""
        medians = self._median_map()
        return [k for k in dict.fromkeys(_lookup_key(k) for k in keys) if k not in medians]

    def rows(self) -> list[dict]:
        """All stats rows as dicts (key, the LatencyStats fields, measured_at), sorted by key."""
        return self._row_dicts("ORDER BY key")

    def slowest(self, count: int = 10) -> list[dict]:
        """Rows (as rows() gives them) of the `count` keys with the largest median, slowest first."""
        return self._row_dicts("ORDER BY median_ms DESC, key LIMIT ?", (int(count),))

    def _row_dicts(self, order: str, params: tuple = ()) -> list[dict]:
        cols = ("key", *STAT_FIELDS, "measured_at")
        cur = self._conn.execute(f"SELECT {', '.join(cols)} FROM latency {order}", params)
        return [dict(zip(cols, row)) for row in cur]

    def to_pandas(self, view: str = "latency_fields"):
        """The table as a pandas DataFrame: one row per key with its LayerSpec fields as columns
        ('latency_fields'), or the dense/2:4 pairs of the same layers with their speedup ('sparse_vs_dense')."""
        if view not in _VIEWS:
            raise ValueError(f"view must be one of {tuple(_VIEWS)}, got {view!r}")
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("LatencyTable.to_pandas needs pandas: pip install 'pysparse24[profiler]'") from None
        return pd.read_sql_query(f"SELECT * FROM {view}", self._conn)

    def error_rows(self) -> list[dict]:
        cur = self._conn.execute("SELECT key, message, failed_at FROM errors ORDER BY key")
        return [dict(zip(("key", "message", "failed_at"), row)) for row in cur]

    # ---- export / import --------------------------------------------------------------------------
    def export(self, path: str | Path, fmt: str | None = None) -> None:
        """Write the whole table (context, calibration, stats, errors) as CSV or JSON."""
        path = Path(path)
        fmt = _format_of(path, fmt)
        dump = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "context": self.context,
            "calibration": self.calibration(),
            "entries": self.rows(),
            "errors": self.error_rows(),
        }
        if fmt == "json":
            text = json.dumps(dump, indent=1, allow_nan=False) + "\n"
        else:  # rows only, as plain CSV readers expect; what a row cannot carry goes next to it
            text = _to_csv(dump)
            meta = {k: dump[k] for k in ("format", "schema_version", "context", "calibration")}
            with atomic_output(csv_metadata_path(path)) as tmp:
                tmp.write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        with atomic_output(path) as tmp:  # a killed export never leaves a truncated file under the real name
            tmp.write_text(text, encoding="utf-8")

    def import_file(self, path: str | Path, fmt: str | None = None, replace: bool = False) -> ImportCounts:
        """Merge an exported table into this one (its context must match) in a single transaction.

        Keys already present are kept unless `replace`; an imported success clears a local error.
        The file's calibration is taken only if this table has none (or with `replace`).
        """
        dump = read_export(path, fmt)
        ensure_same_context(self._context, dump["context"], f"the data in {path}")
        counts = ImportCounts()
        have_stats, have_errors = set(self.keys()), set(self.errors())
        with self._conn:
            for row in dump["entries"]:
                if row["key"] in have_stats and not replace:
                    counts.skipped += 1
                    continue
                self._write_stats(row["key"], [row[f] for f in STAT_FIELDS], row["measured_at"])
                counts.added += 1
            for row in dump["errors"]:
                if (row["key"] in have_stats or row["key"] in have_errors) and not replace:
                    counts.skipped += 1
                    continue
                self._write_error(row["key"], row["message"], row["failed_at"])
                counts.added += 1
            if dump["calibration"] is not None and (replace or self.calibration() is None):
                self._set_meta("calibration", json.dumps(dump["calibration"], sort_keys=True))
        return counts

    # ---- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "LatencyTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LatencyTable({str(self.path)!r}, {len(self)} entries, backend={self._context.get('backend')!r})"


# ---- file formats --------------------------------------------------------------------------------
# CSV layout: one row per key, nothing else (pandas.read_csv and spreadsheets read it as it is);
# `status` is "ok" (stats columns filled) or "error" (message filled). What a row cannot carry (format,
# schema version, context, calibration) is in NAME.meta.json next to it (csv_metadata_path). Exports
# of earlier versions carried it in leading '#' lines, which are still read.
_CSV_COLUMNS = ("key", "status", *STAT_FIELDS, "measured_at", "message")


def csv_metadata_path(csv_path: str | Path) -> Path:
    return Path(csv_path).with_suffix(".meta.json")


def _format_of(path: Path, fmt: str | None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("csv", "json"):
        raise ValueError(f"cannot tell the format of {path}: use a .csv or .json name or say fmt='csv'|'json'")
    return fmt


def _to_csv(dump: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in dump["entries"]:
        writer.writerow({**row, "status": "ok", "message": ""})
    for row in dump["errors"]:
        writer.writerow(
            {"key": row["key"], "status": "error", "measured_at": row["failed_at"], "message": row["message"]}
        )
    return buf.getvalue()


def _from_csv(text: str, path: Path) -> dict:
    where = str(path)
    lines = text.splitlines(keepends=True)
    header = {}
    while lines and lines[0].startswith("#"):  # an export of an earlier version
        line = lines.pop(0)[1:].strip()
        if ":" in line and not line.startswith(FORMAT_NAME):
            name, value = line.split(":", 1)
            header[name.strip()] = json.loads(value)
        elif line.startswith(FORMAT_NAME):
            header["schema_version"] = int(line.rsplit("=", 1)[-1])
    if not header:
        meta_path = csv_metadata_path(path)
        if not meta_path.exists():
            raise ValueError(
                f"{where} has no {meta_path.name} next to it (the context and calibration that "
                "export writes beside a CSV); copy it along, or export as JSON for one file"
            )
        header = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise ValueError(f"{meta_path} is not a latency table export's metadata")
    if "context" not in header or "schema_version" not in header:
        raise ValueError(f"{where} is not a latency table CSV export (no context / schema version)")
    entries, errors = [], []
    for row in csv.DictReader(io.StringIO("".join(lines))):
        if row.get("status") == "ok":
            entry = {"key": row["key"], "measured_at": row["measured_at"]}
            for f in STAT_FIELDS:
                entry[f] = int(row[f]) if f in ("n", "warmup") else float(row[f])
            entries.append(entry)
        elif row.get("status") == "error":
            errors.append({"key": row["key"], "message": row["message"], "failed_at": row["measured_at"]})
        else:
            raise ValueError(
                f"{where}: row for {row.get('key')!r} has status {row.get('status')!r} (expected ok/error)"
            )
    return {
        "format": FORMAT_NAME,
        "schema_version": header["schema_version"],
        "context": header["context"],
        "calibration": header.get("calibration"),
        "entries": entries,
        "errors": errors,
    }


def read_export(path: str | Path, fmt: str | None = None) -> dict:
    """Read and validate a CSV/JSON export: {'context', 'calibration', 'entries', 'errors', ...}."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        dump = json.loads(text) if _format_of(path, fmt) == "json" else _from_csv(text, path)
    except (json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{path} is not a valid latency table export: {exc}") from None
    if not isinstance(dump, dict) or dump.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a latency table export (format must be {FORMAT_NAME!r})")
    if dump.get("schema_version", 0) > SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema version {dump['schema_version']}; this profiler reads up to {SCHEMA_VERSION}"
        )
    try:
        _check_context(dump["context"])
        for row in dump.setdefault("entries", []):
            _checked_stats(key_of(row["key"]), row)
            row.setdefault("measured_at", "")
        for row in dump.setdefault("errors", []):
            key_of(row["key"])
            row["message"] = str(row["message"])
            row.setdefault("failed_at", "")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a valid latency table export: {exc!r}") from None
    dump.setdefault("calibration", None)
    return dump
