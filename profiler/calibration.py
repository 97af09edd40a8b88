"""Calibration: turn a plain sum of per-layer table medians into an end-to-end latency estimate.

Why a plain sum is off: every layer measured alone pays the runtime's per-call cost (the Python
call, session.run bookkeeping, input/output copies, thread wake-up, kernel launch); a network pays it
once. Layers inside one graph also share caches and fused epilogues. So the estimate is affine:

    estimate_ms = scale * sum_ms + per_layer_ms * n_layers + offset_ms

per_layer_ms is typically negative (the per-call overhead counted once too often per layer) and
offset_ms the one call a network does pay. The three numbers are fitted on networks measured end to
end (a calibration split), minimising the RELATIVE error, since the target is "within +-10%".
The dict is JSON (stored in the table by LatencyTable.set_calibration), and apply() is the one
formula: NAS applies exactly what validation measured.
"""

from __future__ import annotations

import numpy as np

KIND = "affine-v1"
FIELDS = ("scale", "per_layer_ms", "offset_ms")


def identity() -> dict:
    """The plain sum, as a calibration."""
    return {"kind": KIND, "scale": 1.0, "per_layer_ms": 0.0, "offset_ms": 0.0}


def apply(sum_ms, n_layers, calib: dict | None) -> np.ndarray:
    """Vectorised estimate for arrays of layer sums and layer counts (None = the plain sum).
    NaN sums (networks with missing table entries) stay NaN."""
    sum_ms = np.asarray(sum_ms, dtype=np.float64)
    if calib is None:
        return sum_ms.copy()
    if calib.get("kind") != KIND or any(f not in calib for f in FIELDS):
        raise ValueError(f"not a {KIND} calibration: {calib!r}")
    n_layers = np.asarray(n_layers, dtype=np.float64)
    return calib["scale"] * sum_ms + calib["per_layer_ms"] * n_layers + calib["offset_ms"]


def describe(calib: dict | None) -> str:
    """The calibration as a formula a reader can check by hand (plus any fields beyond it)."""
    if calib is None:
        return "none (estimates are plain sums of the layers' medians)"
    if calib.get("kind") != KIND or any(f not in calib for f in FIELDS):
        return f"unrecognised: {calib!r}"
    text = (
        f"estimate = {calib['scale']:.4f} x sum of layer medians {calib['per_layer_ms']:+.4f} ms x layers "
        f"{calib['offset_ms']:+.4f} ms"
    )
    extra = {k: v for k, v in calib.items() if k not in (*FIELDS, "kind")}
    return text + "".join(f"; {k}: {v}" for k, v in sorted(extra.items()))


def fit(sum_ms, n_layers, measured_ms) -> dict:
    """Least-squares fit of (scale, per_layer_ms, offset_ms) on relative residuals.

    When every calibration network has the same layer count, per_layer_ms and offset_ms cannot be
    told apart: per_layer_ms is then fixed at 0 and the offset absorbs it."""
    s, n, m = (np.asarray(a, dtype=np.float64).ravel() for a in (sum_ms, n_layers, measured_ms))
    if not (s.size == n.size == m.size):
        raise ValueError("sum_ms, n_layers and measured_ms must have the same length")
    if s.size < 3:
        raise ValueError(f"calibration needs at least 3 measured networks, got {s.size}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(m)) and np.all(m > 0)):
        raise ValueError("calibration needs finite layer sums and positive end-to-end times")
    columns = [s, n, np.ones_like(s)] if np.ptp(n) > 0 else [s, np.ones_like(s)]
    design = np.stack(columns, axis=1) / m[:, None]  # rows / m: relative residuals
    coef, *_ = np.linalg.lstsq(design, np.ones_like(m), rcond=None)
    scale, per_layer, offset = (coef[0], coef[1], coef[2]) if len(coef) == 3 else (coef[0], 0.0, coef[1])
    calib = {"kind": KIND, "scale": float(scale), "per_layer_ms": float(per_layer), "offset_ms": float(offset)}
    rel = apply(s, n, calib) / m - 1
    calib.update(n_networks=int(s.size), fit_mape_pct=float(100 * np.mean(np.abs(rel))))
    return calib
