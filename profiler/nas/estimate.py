"""Phase 1: price candidates from the latency table, vectorized, and bucket them into sub-spaces.

How it is fast: every block a space can produce is numbered ONCE (SpaceIndex). A stage's blocks all
share its choices, so a candidate is fully described by two block ids per stage (its first, strided
block and its repeated block) and how often each occurs. Turning vectors into that (N x 2*stages)
id matrix is integer arithmetic on whole columns; the latency is then a gather from a per-id array
of table medians and a weighted row sum, followed by the table's calibration
(profiler.calibration.apply, the formula validation fitted). No per-candidate Python.

A candidate whose blocks include one the table lacks gets NaN, never a number: a missing entry
priced at 0 would make it look fast. The missing keys can be written as a keys file for
`pysparse24 lut build --keys`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..calibration import apply as apply_calibration
from ..spec import LayerSpec
from .space import FIELD_ORDER, SearchSpace

CHUNK = 1 << 15  # candidates priced per pass in LatencyEstimator.estimate


class SpaceIndex:
    """Every distinct block of a space, numbered; vectors -> (ids, counts).

    ids[:, 2s] / ids[:, 2s+1] are the ids of stage s's first / repeated block, counts how many times
    each occurs (0, 1 / 0..layers-1). Absent slots point at `pad_id`, one past the last key, whose
    latency is 0 (it is multiplied by a count of 0 anyway; NaN * 0 would still be NaN)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.keys: list[str] = []
        self._ids: dict[str, int] = {}
        self._first: list[np.ndarray] = []
        self._rest: list[np.ndarray | None] = []
        for s, stage in enumerate(space.stages):
            geo = space.geometry[s]
            choice_dims = tuple(len(stage.choices(f)) for f in FIELD_ORDER[1:])
            self._first.append(self._id_array(s, True, (len(geo.sizes_in), len(geo.channels_in), *choice_dims)))
            self._rest.append(
                self._id_array(s, False, (len(geo.sizes_in), *choice_dims)) if stage.max_layers > 1 else None
            )

    def _id_array(self, stage_i: int, first: bool, dims: tuple[int, ...]) -> np.ndarray:
        ids = np.empty(dims, dtype=np.int32)
        for index, spec in self.space.slot_specs(stage_i, first):
            ids[index] = self._ids.setdefault(spec.key(), len(self.keys))
            if ids[index] == len(self.keys):
                self.keys.append(spec.key())
        return ids

    @property
    def pad_id(self) -> int:
        return len(self.keys)

    def ids_and_counts(self, vectors, first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
        space = self.space
        res, per_stage = space.choice_indices(vectors, first_row)
        n = res.shape[0]
        ids = np.full((n, 2 * len(space.stages)), self.pad_id, dtype=np.int32)
        counts = np.zeros(ids.shape, dtype=np.float64)
        size = np.asarray(space.resolutions, dtype=np.int32)[res]
        channels = np.full(n, space.in_channels, dtype=np.int32)
        for s, (stage, pick) in enumerate(zip(space.stages, per_stage)):
            geo = space.geometry[s]
            layers = np.asarray(stage.layers, dtype=np.int32)[pick["layers"]] * np.ones(n, dtype=np.int32)
            size_i = np.searchsorted(geo.sizes_in, size).astype(np.int32)
            choice = [pick[f] for f in FIELD_ORDER[1:]]
            channel_i = np.searchsorted(geo.channels_in, channels).astype(np.int32)
            ids[:, 2 * s] = np.where(layers > 0, _gather(self._first[s], [size_i, channel_i, *choice]), self.pad_id)
            counts[:, 2 * s] = layers > 0
            if self._rest[s] is not None:
                ids[:, 2 * s + 1] = np.where(layers > 1, _gather(self._rest[s], [size_i, *choice]), self.pad_id)
                counts[:, 2 * s + 1] = np.maximum(layers - 1, 0)
            size = np.where(layers > 0, geo.out_sizes.astype(np.int32)[size_i, pick["kernel"]], size)
            channels = np.where(layers > 0, np.asarray(stage.filters, dtype=np.int32)[pick["filters"]], channels)
        return ids, counts


def _gather(table: np.ndarray, index: list) -> np.ndarray:
    """table[index...] through one flat index computed in int32 (faster than numpy's multi-array
    fancy indexing); scalar entries (fields with one choice) are 0 and skipped."""
    flat = index[0]
    for dim, idx in zip(table.shape[1:], index[1:]):
        flat = flat * np.int32(dim)
        if not np.isscalar(idx):
            flat = flat + idx
    return table.ravel().take(flat)


@functools.lru_cache(maxsize=8)
def space_index(space: SearchSpace) -> SpaceIndex:
    """The (cached) index of a space: numbering GPUNet's ~133k blocks takes about a second."""
    return SpaceIndex(space)


@dataclass
class Estimate:
    latency_ms: np.ndarray  # calibrated estimate per candidate; NaN where a block is missing
    n_layers: np.ndarray  # blocks per candidate
    missing_keys: list[str] = field(default_factory=list)  # keys those NaN candidates need

    @property
    def missing(self) -> np.ndarray:
        return np.isnan(self.latency_ms)

    def write_missing_keys(self, path: str | Path) -> int:
        """A keys file (one LayerSpec key a line) for `pysparse24 lut build --keys FILE`; returns the count.
        Written also when nothing is missing, so a file left by an earlier run never lingers."""
        from pysparse24._files import atomic_output

        with atomic_output(path) as tmp:
            tmp.write_text(
                "# layer specs the NAS estimate needed but the table lacks\n"
                + "".join(k + "\n" for k in self.missing_keys)
            )
        return len(self.missing_keys)


class LatencyEstimator:
    """Prices candidates of `space` from `table` (anything with medians_ms(keys) and calibration()).

    The space is decoded in the table's context (batch, precision) when the table records one, so
    the keys match what was measured; each stage keeps its own sparsity (a table holds dense and 2:4
    rows side by side, so a 2:4 stage is priced from its 2:4 row)."""

    def __init__(self, table, space: SearchSpace) -> None:
        context = getattr(table, "context", None) or {}
        space = space.with_context(batch=context.get("batch"), precision=context.get("precision"))
        self.space = space
        self.table = table
        self.index = space_index(space)
        # One trailing 0 for pad_id.
        self.block_ms = np.append(np.asarray(table.medians_ms(self.index.keys), dtype=np.float64), 0.0)
        self.calibration = table.calibration()
        known = np.isfinite(self.block_ms[:-1])
        self.coverage = float(known.mean()) if known.size else 0.0

    def latency(self, ids: np.ndarray, counts: np.ndarray, block_ms: np.ndarray | None = None) -> np.ndarray:
        """The hot path: gather, weighted row sum, calibration. NaN rows = missing blocks."""
        block_ms = self.block_ms if block_ms is None else block_ms
        return apply_calibration(np.einsum("ij,ij->i", block_ms[ids], counts), counts.sum(axis=1), self.calibration)

    def estimate(self, vectors) -> Estimate:
        """Calibrated latency of every vector, in chunks small enough for the id and count matrices
        to stay in cache (about 3x faster than one pass over a million rows)."""
        vectors = np.asarray(vectors)
        vectors = vectors[None, :] if vectors.ndim == 1 else vectors  # each chunk is validated below
        latency = np.empty(len(vectors))
        n_layers = np.empty(len(vectors), dtype=np.int64)
        missing_ids: set[int] = set()
        for start in range(0, len(vectors), CHUNK):
            ids, counts = self.index.ids_and_counts(vectors[start : start + CHUNK], first_row=start)
            part = latency[start : start + CHUNK] = self.latency(ids, counts)
            n_layers[start : start + CHUNK] = counts.sum(axis=1)
            nan_rows = np.isnan(part)
            if nan_rows.any():
                used = ids[nan_rows][counts[nan_rows] > 0]
                missing_ids.update(np.unique(used[np.isnan(self.block_ms[used])]).tolist())
        return Estimate(latency, n_layers, [self.index.keys[i] for i in sorted(missing_ids)])

    def estimate_networks(self, networks: list[list[LayerSpec]]) -> Estimate:
        """Any networks (not only this space's): a padded (N x max layers) id matrix of their keys."""
        keys = sorted({spec.key() for net in networks for spec in net})
        position = {k: i for i, k in enumerate(keys)}
        block_ms = np.append(np.asarray(self.table.medians_ms(keys), dtype=np.float64), 0.0)
        width = max(len(net) for net in networks)
        ids = np.full((len(networks), width), len(keys), dtype=np.int64)
        for row, net in enumerate(networks):
            ids[row, : len(net)] = [position[spec.key()] for spec in net]
        counts = (ids < len(keys)).astype(np.float64)
        missing = [k for k, ms in zip(keys, block_ms) if np.isnan(ms)]
        return Estimate(self.latency(ids, counts, block_ms), counts.sum(axis=1).astype(np.int64), missing)


@dataclass(frozen=True)
class SubSpace:
    label: str
    low_ms: float  # inclusive
    high_ms: float  # exclusive
    indices: np.ndarray  # candidate rows in this latency range

    @property
    def count(self) -> int:
        return int(self.indices.size)


def bucket(latency_ms: np.ndarray, budgets_ms) -> list[SubSpace]:
    """Latency sub-spaces by budget edges, e.g. [0.5, 1.0] -> '< 0.5 ms', '0.5-1 ms', '>= 1 ms'.
    Candidates with missing blocks (NaN) are in no sub-space (Estimate.missing counts them)."""
    edges = sorted(float(b) for b in budgets_ms)
    if not edges or edges[0] <= 0 or len(set(edges)) != len(edges):
        raise ValueError(f"budgets must be distinct positive numbers of ms, got {budgets_ms}")
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    bounds = [0.0, *edges, np.inf]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        label = f"< {hi:g} ms" if lo == 0 else (f">= {lo:g} ms" if hi == np.inf else f"{lo:g}-{hi:g} ms")
        out.append(SubSpace(label, lo, hi, np.flatnonzero((latency_ms >= lo) & (latency_ms < hi))))
    return out
