"""Search spaces of GPUNet's kind, and the fixed-width integer vector that names one candidate.

A space is data (a JSON or TOML file): an input resolution range and an ordered list of stages. Each
stage has one block type (a LayerSpec op) and, per field, the values it may take:

    layers     how many blocks the stage repeats (0: the stage is skipped)
    kernel     kernel size
    act        activation ("relu" | "swish")
    expansion  expansion ratio (fused_irb / irb only)
    filters    output channels
    se         squeeze-and-excitation on/off (fused_irb / irb only)
    sparsity   "dense" | "2:4": whether the stage's blocks run 2:4 sparse (default: the space's
               `sparsity`, "dense"). ["dense", "2:4"] makes it a choice: the search trades a stage's
               width or depth against running it sparse, each priced by its own table row.

Every block of a stage shares the stage's choices; only the first block has the stage's stride (the
GPUNet rule). A value list is written either as a JSON list or as {"min": a, "max": b, "step": s}.
Spatial sizes are chained with profiler.blocks.output_shape, the modules' own geometry.

Vector layout (documented here because GPUNet's own 41-wide layout is unpublished). Every position
holds a choice INDEX (0-based, into the value list), not a raw value, so every position is a small
categorical/ordinal integer that Sobol sampling and Optuna handle alike:

    position 0                  resolution index
    then, stage by stage, in FIELD_ORDER, one position per field that has more than one choice

Fields with a single choice take no position. `space.layout` names every position ("res", "2.filters",
"2.sparsity", ...). For the shipped GPUNet space that is 1 + 3 (stage 0: kernel, act, filters) + 4
(stage 1: layers, kernel, act, filters) + 6 x 6 (stages 2-7) + 0 (stage 8, fixed) = 44 positions;
`gpunet_sparse` adds a sparsity position to stages 1-8 (the head's 3 input channels cannot be 2:4): 52.
A sparsity position's index 0 is "dense", 1 is "2:4" as the spaces list them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..spec import ACTIVATIONS, BLOCK_OPS, PRECISIONS, SPARSITIES, LayerSpec

FIELD_ORDER = ("layers", "kernel", "act", "expansion", "filters", "se", "sparsity")
# Ops whose blocks have an expansion ratio and an optional SE; the others take neither.
EXPANDING_OPS = ("fused_irb", "irb")
BUILTIN_SPACES = ("gpunet", "demo", "gpunet_sparse", "demo_sparse")


def _values(raw, field: str, where: str) -> tuple:
    """A field's allowed values from a list or a {"min", "max", "step"} range."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"min", "max", "step"}
        if unknown or "min" not in raw or "max" not in raw:
            raise ValueError(f"{where}: {field} range needs 'min' and 'max' (and optional 'step'), got {raw}")
        lo, hi, step = raw["min"], raw["max"], raw.get("step", 1)
        if step <= 0 or hi < lo:
            raise ValueError(f"{where}: {field} range {raw} is empty")
        count = int(math.floor((hi - lo) / step + 1e-9)) + 1
        values = [lo + i * step for i in range(count)]
    elif isinstance(raw, (list, tuple)):
        values = list(raw)
    else:
        values = [raw]
    if not values:
        raise ValueError(f"{where}: {field} has no values")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: {field} lists a value twice: {values}")
    return tuple(values)


@dataclass(frozen=True)
class Stage:
    name: str
    op: str
    stride: int
    layers: tuple[int, ...]
    kernel: tuple[int, ...]
    act: tuple[str, ...]
    expansion: tuple[float, ...] = (1.0,)
    filters: tuple[int, ...] = ()
    se: tuple[bool, ...] = (False,)
    sparsity: tuple[str, ...] = ("dense",)

    def choices(self, field: str) -> tuple:
        return getattr(self, field)

    @property
    def max_layers(self) -> int:
        return max(self.layers)

    @classmethod
    def from_dict(cls, d: dict, position: int, sparsity: str = "dense") -> "Stage":
        """`sparsity`: the stage's sparsity when it lists none (the space's)."""
        if not isinstance(d, dict):
            raise ValueError(f"stage {position} must be a table/object of fields, got {type(d).__name__}")
        name = str(d.get("name", position))
        where = f"stage {name}"
        known = {"name", "op", "stride", *FIELD_ORDER}
        if set(d) - known:
            raise ValueError(f"{where}: unknown keys {sorted(set(d) - known)} (known: {sorted(known)})")
        op = d.get("op")
        if op not in BLOCK_OPS:
            raise ValueError(f"{where}: op {op!r} is not a block op {BLOCK_OPS}")
        if "filters" not in d:
            raise ValueError(f"{where}: 'filters' is required")
        fields = {f: _values(d[f], f, where) for f in FIELD_ORDER if f in d}
        if op not in EXPANDING_OPS and (
            set(fields.get("expansion", (1,))) != {1} or set(fields.get("se", (False,))) != {False}
        ):
            raise ValueError(f"{where}: op {op!r} has no expansion or SE; only {EXPANDING_OPS} do")
        stage = cls(
            name=name,
            op=op,
            stride=int(d.get("stride", 1)),
            layers=tuple(int(v) for v in fields.get("layers", (1,))),
            kernel=tuple(int(v) for v in fields.get("kernel", (3,))),
            act=tuple(str(v) for v in fields.get("act", ("relu",))),
            expansion=tuple(float(v) for v in fields.get("expansion", (1.0,))),
            filters=tuple(int(v) for v in fields["filters"]),
            se=tuple(bool(v) for v in fields.get("se", (False,))),
            sparsity=tuple(str(v) for v in fields.get("sparsity", (sparsity,))),
        )
        stage._check(where)
        return stage

    def _check(self, where: str) -> None:
        problems = []
        if self.stride < 1:
            problems.append(f"stride must be >= 1, got {self.stride}")
        if min(self.layers) < 0:
            problems.append(f"layers must be >= 0, got {self.layers}")
        if self.max_layers == 0:
            problems.append("layers allows only 0: the stage would never exist")
        if any(k < 1 or k % 2 == 0 for k in self.kernel):
            problems.append(f"kernels must be odd and positive, got {self.kernel}")
        if any(a not in ACTIVATIONS for a in self.act):
            problems.append(f"act must be among {ACTIVATIONS}, got {self.act}")
        if any(e <= 0 for e in self.expansion):
            problems.append(f"expansion must be positive, got {self.expansion}")
        if any(f < 1 for f in self.filters):
            problems.append(f"filters must be positive, got {self.filters}")
        if any(v not in SPARSITIES for v in self.sparsity):
            problems.append(f"sparsity must be among {SPARSITIES}, got {self.sparsity}")
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "op": self.op,
            "stride": self.stride,
            **{f: list(getattr(self, f)) for f in FIELD_ORDER},
        }


@dataclass(frozen=True)
class SearchSpace:
    """A GPUNet-style space. `batch` and `precision` go into every decoded LayerSpec, so keys match the
    latency table they are priced against (see `with_context`); `sparsity` is what a stage that lists
    no sparsity of its own gets when the space is read from a file."""

    name: str
    resolutions: tuple[int, ...]
    stages: tuple[Stage, ...]
    in_channels: int = 3
    batch: int = 1
    precision: str = "fp32"
    sparsity: str = "dense"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError(f"space {self.name!r}: no stages")
        if any(r < 1 for r in self.resolutions):
            raise ValueError(f"space {self.name!r}: resolutions must be positive")
        if self.precision not in PRECISIONS or self.sparsity not in SPARSITIES or self.batch < 1:
            raise ValueError(
                f"space {self.name!r}: bad context batch={self.batch} precision={self.precision!r} "
                f"sparsity={self.sparsity!r}"
            )
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"space {self.name!r}: stage names repeat: {names}")

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, d: dict) -> "SearchSpace":
        if not isinstance(d, dict) or not isinstance(d.get("stages", []), list):
            raise ValueError("a search space is an object with 'name', 'resolution' and a list of 'stages'")
        known = {"name", "description", "in_channels", "resolution", "stages", "batch", "precision", "sparsity"}
        if set(d) - known:
            raise ValueError(f"search space: unknown keys {sorted(set(d) - known)} (known: {sorted(known)})")
        for key in ("name", "resolution", "stages"):
            if key not in d:
                raise ValueError(f"search space: {key!r} is required")
        return cls(
            name=str(d["name"]),
            description=str(d.get("description", "")),
            resolutions=tuple(int(r) for r in _values(d["resolution"], "resolution", "search space")),
            stages=tuple(Stage.from_dict(s, i, str(d.get("sparsity", "dense"))) for i, s in enumerate(d["stages"])),
            in_channels=int(d.get("in_channels", 3)),
            batch=int(d.get("batch", 1)),
            precision=str(d.get("precision", "fp32")),
            sparsity=str(d.get("sparsity", "dense")),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "in_channels": self.in_channels,
            "batch": self.batch,
            "precision": self.precision,
            "sparsity": self.sparsity,
            "resolution": list(self.resolutions),
            "stages": [s.to_dict() for s in self.stages],
        }

    def with_context(
        self, batch: int | None = None, precision: str | None = None, sparsity: str | None = None
    ) -> "SearchSpace":
        """The same space, decoded for another batch / precision (a table's context); a `sparsity`
        puts every stage at that one sparsity (`profiler build --sparsity 2:4`: all blocks 2:4)."""
        stages = (
            self.stages
            if sparsity is None
            else tuple(dataclasses.replace(s, sparsity=(sparsity,)) for s in self.stages)
        )
        return dataclasses.replace(
            self,
            batch=self.batch if batch is None else int(batch),
            stages=stages,
            precision=precision or self.precision,
            sparsity=sparsity or self.sparsity,
        )

    # ---------------------------------------------------------------- vector layout
    @property
    def _positions(self) -> tuple[tuple[int, str], ...]:
        """(stage index, field) of each vector position after the resolution; -1 means resolution."""
        out = [(-1, "res")]
        for i, stage in enumerate(self.stages):
            out += [(i, f) for f in FIELD_ORDER if len(stage.choices(f)) > 1]
        return tuple(out)

    @property
    def layout(self) -> list[str]:
        """Human-readable name of every vector position, e.g. ['res', '0.kernel', ...]."""
        return [f if i < 0 else f"{self.stages[i].name}.{f}" for i, f in self._positions]

    @property
    def width(self) -> int:
        return len(self._positions)

    @property
    def cardinalities(self) -> np.ndarray:
        """Number of choices at every vector position."""
        return np.array(
            [len(self.resolutions) if i < 0 else len(self.stages[i].choices(f)) for i, f in self._positions],
            dtype=np.int64,
        )

    @property
    def size(self) -> int:
        """Number of distinct vectors (exact integer)."""
        return math.prod(int(c) for c in self.cardinalities)

    def check_vectors(self, vectors) -> np.ndarray:
        """Vectors as an (N, width) int64 array; ValueError naming the first bad row and position."""
        return self._checked_columns(vectors).T.astype(np.int64)

    def _checked_columns(self, vectors, first_row: int = 0) -> np.ndarray:
        """Validated vectors as contiguous (width, N) int32 columns (what vectorized code reads);
        first_row numbers the rows in error messages when `vectors` is a slice of a larger batch."""
        v = np.asarray(vectors)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.width:
            raise ValueError(
                f"space {self.name!r} vectors have {self.width} positions ({', '.join(self.layout)}); "
                f"got shape {np.shape(vectors)}"
            )
        if v.dtype.kind == "f":
            if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
                raise ValueError("vector positions must be integers (choice indices)")
        elif v.dtype.kind not in "iu":
            raise ValueError(f"vector positions must be integers (choice indices), got dtype {v.dtype}")
        rows = np.ascontiguousarray(v.T)
        columns = np.empty(rows.shape, dtype=np.int32)
        for pos, (row, card) in enumerate(zip(rows, self.cardinalities)):
            bad = (row < 0) | (row >= card)
            if bad.any():
                first = int(np.argmax(bad))
                raise ValueError(
                    f"invalid vector (row {first_row + first}): position {pos} ({self.layout[pos]}) = {row[first]} "
                    f"is outside 0..{card - 1}"
                )
            columns[pos] = row
        return columns

    def choice_indices(self, vectors, first_row: int = 0) -> tuple[np.ndarray, list[dict[str, np.ndarray | int]]]:
        """Vectors -> (resolution index (N,), per stage {field: choice index (N,)}), as contiguous
        int32 columns; a field with a single choice is the scalar 0."""
        columns = self._checked_columns(vectors, first_row)
        per_stage = [{f: 0 for f in FIELD_ORDER} for _ in self.stages]
        for col, (i, f) in enumerate(self._positions):
            if i >= 0:
                per_stage[i][f] = columns[col]
        return columns[0], per_stage

    # ---------------------------------------------------------------- decode / encode
    def _block(self, stage: Stage, j: int, c: int, h: int, kernel, act, expansion, filters, se, sparsity) -> LayerSpec:
        """Block j of a stage on a (c, h, h) input: only block 0 carries the stage's stride."""
        return LayerSpec(
            op=stage.op,
            in_shape=(self.batch, c, h, h),
            out_channels=filters,
            kernel=kernel,
            stride=stage.stride if j == 0 else 1,
            expansion=expansion,
            se=se,
            act=act,
            precision=self.precision,
            sparsity=sparsity,
        )

    def decode(self, vector) -> list[LayerSpec]:
        """One vector -> the network: a list of block LayerSpecs with input shapes chained."""
        res, per_stage = self.choice_indices(vector)
        h = self.resolutions[int(res[0])]
        c = self.in_channels
        network = []
        for stage, idx in zip(self.stages, per_stage):
            pick = {f: stage.choices(f)[int(np.ravel(idx[f])[0])] for f in FIELD_ORDER}
            for j in range(pick["layers"]):
                spec = self._block(stage, j, c, h, *(pick[f] for f in FIELD_ORDER[1:]))
                network.append(spec)
                c, h = spec.out_channels, _output_size(spec)
        return network

    def sparse_stages(self, vector) -> list[str]:
        """Names of the stages that run 2:4 in one candidate (skipped stages are not listed)."""
        _, per_stage = self.choice_indices(vector)
        pick = [
            {f: stage.choices(f)[int(np.ravel(idx[f])[0])] for f in ("layers", "sparsity")}
            for stage, idx in zip(self.stages, per_stage)
        ]
        return [stage.name for stage, p in zip(self.stages, pick) if p["layers"] and p["sparsity"] == "2:4"]

    def encode(self, network: list[LayerSpec]) -> np.ndarray:
        """A network (list of LayerSpecs) -> its vector; ValueError saying why it is not in this space."""
        network = list(network)
        if not network or not all(isinstance(s, LayerSpec) for s in network):
            raise ValueError("encode needs a non-empty list of LayerSpec")
        first = network[0]
        _, c0, h0, w0 = first.in_shape
        if h0 != w0:
            raise ValueError(f"the space has square inputs; the network starts with {h0}x{w0}")
        if h0 not in self.resolutions:
            raise ValueError(f"resolution {h0} is not in the space's {list(self.resolutions)}")
        if c0 != self.in_channels:
            raise ValueError(f"the network takes {c0} input channels; the space {self.in_channels}")
        for i, s in enumerate(network):
            if (s.batch, s.precision) != (self.batch, self.precision):
                raise ValueError(
                    f"layer {i}: batch/precision {s.batch}/{s.precision} differ "
                    f"from the space's {self.batch}/{self.precision} (see with_context)"
                )
        failure = [-1, "no stage assignment fits"]  # the deepest failure is the most useful reason

        def fail(pos: int, reason: str) -> None:
            if pos > failure[0]:
                failure[:] = [pos, reason]

        def match(stage_i: int, pos: int, c: int, h: int) -> list[dict] | None:
            if stage_i == len(self.stages):
                if pos == len(network):
                    return []
                fail(pos, f"layer {pos} ({network[pos].op}) is left over after the last stage")
                return None
            stage = self.stages[stage_i]
            for n in sorted(stage.layers, reverse=True):
                picks = self._match_stage(stage, network[pos : pos + n], n, c, h, pos, fail)
                if picks is None:
                    continue
                c_next, h_next = (picks["filters_value"], _output_size(network[pos])) if n else (c, h)
                rest = match(stage_i + 1, pos + n, c_next, h_next)
                if rest is not None:
                    return [picks] + rest
            return None

        picks = match(0, 0, self.in_channels, h0)
        if picks is None:
            raise ValueError(f"network is not in space {self.name!r}: {failure[1]}")
        vector = [self.resolutions.index(h0)]
        for i, f in self._positions[1:]:
            vector.append(picks[i][f])
        return np.array(vector, dtype=np.int64)

    def _match_stage(self, stage: Stage, group: list[LayerSpec], n: int, c: int, h: int, pos: int, fail):
        """Choice indices if `group` (n layers starting at network position pos) is this stage."""
        if n == 0:
            return {f: 0 for f in FIELD_ORDER} | {"layers": stage.layers.index(0), "filters_value": c}
        if len(group) < n:
            # Ranked just below a mismatch at the same position: running out of layers while trying a
            # longer stage says less than the value that did not fit.
            fail(pos - 0.5, f"stage {stage.name} needs {n} layers, the network ends first")
            return None
        head = group[0]
        values = {
            "kernel": head.kernel,
            "act": head.act,
            "expansion": head.expansion,
            "filters": head.out_channels,
            "se": head.se,
            "sparsity": head.sparsity,
        }
        picks = {"layers": stage.layers.index(n), "filters_value": head.out_channels}
        for f, value in values.items():
            if value not in stage.choices(f):
                fail(
                    pos,
                    f"layer {pos} ({head.op}): {f}={value} is not among stage {stage.name}'s {list(stage.choices(f))}",
                )
                return None
            picks[f] = stage.choices(f).index(value)
        for j, spec in enumerate(group):
            expected = self._block(stage, j, c, h, *(values[f] for f in FIELD_ORDER[1:]))
            c, h = expected.out_channels, _output_size(expected)
            if spec.op != stage.op:
                fail(pos + j, f"layer {pos + j} is {spec.op!r}; stage {stage.name} holds {stage.op!r}")
                return None
            if spec != expected:
                fail(
                    pos + j,
                    f"layer {pos + j} ({spec.key()}) does not continue stage {stage.name} (expected {expected.key()})",
                )
                return None
        return picks

    # ---------------------------------------------------------------- sampling
    def sample(self, n: int, seed: int | None = 0) -> np.ndarray:
        """n vectors from a scrambled Sobol sequence (scipy.stats.qmc): each unit coordinate is
        mapped to a choice index by floor(u * cardinality), so every choice gets an equal share."""
        from scipy.stats import qmc

        if n < 1:
            raise ValueError(f"sample needs n >= 1, got {n}")
        sobol = qmc.Sobol(d=self.width, scramble=True, seed=seed)
        # A power-of-two prefix keeps Sobol's balance; the first n of those points are taken.
        u = sobol.random_base2(max(0, math.ceil(math.log2(n))))[:n]
        return np.minimum((u * self.cardinalities).astype(np.int64), self.cardinalities - 1)

    # ---------------------------------------------------------------- enumeration
    @functools.cached_property
    def geometry(self) -> list[StageGeometry]:
        """What can enter each stage, and the spatial size it hands on (see StageGeometry)."""
        geometry = []
        sizes, channels = set(self.resolutions), {self.in_channels}
        for stage in self.stages:
            sizes_in, channels_in = tuple(sorted(sizes)), tuple(sorted(channels))
            out = np.zeros((len(sizes_in), len(stage.kernel)), dtype=np.int64)
            for (h_i, h), (k_i, k) in itertools.product(enumerate(sizes_in), enumerate(stage.kernel)):
                # Geometry only depends on op, kernel, stride and size; the other fields are placeholders.
                first = self._block(
                    stage,
                    0,
                    channels_in[0],
                    h,
                    k,
                    stage.act[0],
                    stage.expansion[0],
                    stage.filters[0],
                    stage.se[0],
                    stage.sparsity[0],
                )
                out[h_i, k_i] = _output_size(first)
                if stage.max_layers > 1:
                    repeated = self._block(
                        stage,
                        1,
                        first.out_channels,
                        int(out[h_i, k_i]),
                        k,
                        stage.act[0],
                        stage.expansion[0],
                        stage.filters[0],
                        stage.se[0],
                        stage.sparsity[0],
                    )
                    if _output_size(repeated) != out[h_i, k_i]:
                        raise ValueError(
                            f"stage {stage.name}: a repeated {stage.op} block changes the spatial "
                            f"size ({out[h_i, k_i]} px), so the stage's output size would depend "
                            "on its layer count; this space cannot be indexed"
                        )
            geometry.append(StageGeometry(sizes_in, channels_in, out))
            keep = 0 in stage.layers  # an empty stage hands its input on unchanged
            sizes = set(out.ravel().tolist()) | (sizes if keep else set())
            channels = set(stage.filters) | (channels if keep else set())
        return geometry

    def slot_specs(self, stage_i: int, first: bool):
        """Yield (multi-index, LayerSpec) for every configuration of a stage's first block (first=True;
        index over (input size, input channels, kernel, act, expansion, filters, se), sizes and channels
        indexing StageGeometry) or of its repeated blocks (first=False; the same without input channels).
        The estimator turns these into id arrays."""
        stage = self.stages[stage_i]
        geo = self.geometry[stage_i]
        for h_i, h in enumerate(geo.sizes_in):
            for c_i, cin in enumerate(geo.channels_in) if first else [(None, None)]:
                for combo in itertools.product(*(range(len(stage.choices(f))) for f in FIELD_ORDER[1:])):
                    values = [stage.choices(f)[i] for f, i in zip(FIELD_ORDER[1:], combo)]
                    if first:
                        yield (h_i, c_i, *combo), self._block(stage, 0, cin, h, *values)
                    else:
                        h_out = int(geo.out_sizes[h_i, combo[0]])  # combo[0] is the kernel index
                        yield (h_i, *combo), self._block(stage, 1, values[3], h_out, *values)

    def layer_specs(self) -> list[LayerSpec]:
        """Every distinct block LayerSpec the space can produce (what a latency table must hold)."""
        unique: dict[str, LayerSpec] = {}
        for i, stage in enumerate(self.stages):
            for first in (True, False):
                if not first and stage.max_layers < 2:
                    continue
                for _, spec in self.slot_specs(i, first):
                    unique.setdefault(spec.key(), spec)
        return list(unique.values())


@dataclass(frozen=True)
class StageGeometry:
    """sizes_in / channels_in: every input size / channel count that can reach the stage (sorted; an
    empty stage passes its input on); out_sizes[size index, kernel index]: the size the stage hands on.
    Sizes follow profiler.blocks.output_shape, not ceil(h / stride): GPUNet's stride-2 EdgeResidual
    pads 0, so a stage's output size depends on its kernel choice."""

    sizes_in: tuple[int, ...]
    channels_in: tuple[int, ...]
    out_sizes: np.ndarray


def _output_size(spec: LayerSpec) -> int:
    from ..blocks import output_shape  # torch is imported only when shapes are chained

    return output_shape(spec)[2]


def load_space(source: str | Path) -> SearchSpace:
    """A built-in space by name ('gpunet', 'demo') or a user's .json / .toml file."""
    if str(source) in BUILTIN_SPACES:
        text = resources.files("profiler.nas").joinpath("spaces", f"{source}.json").read_text()
        return SearchSpace.from_dict(json.loads(text))
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"search space {str(source)!r} is neither a built-in {BUILTIN_SPACES} nor a file")
    text = path.read_text()
    import tomllib  # Python >= 3.11; only needed for .toml spaces

    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") from None
    return SearchSpace.from_dict(data)
