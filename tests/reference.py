"""Independent, slow references in plain numpy, written from the definitions (not from the kernels)."""

import numpy as np

DTYPES = ["float32", "float16", "bfloat16", "int8", "float8_e4m3fn", "float8_e5m2"]


def numpy_dtype(name):
    if name in ("float32", "float16", "int8"):
        return np.dtype(name)
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


def random_weight(rng, shape, dtype, zero_fraction=0.0):
    """Random values of the dtype (ints in [-128, 127]); optional exact zeros sprinkled in."""
    if dtype == "int8":
        w = rng.integers(-128, 128, size=shape).astype(np.int8)
    else:
        w = (rng.standard_normal(shape) * 4).astype(np.float32).astype(numpy_dtype(dtype))
    if zero_fraction:
        w[rng.random(shape) < zero_fraction] = 0
    return w


def magnitudes(w):
    return np.abs(w.astype(np.float64))


def reference_mask(w, n, m):
    """n largest |w| per group of m along the last axis; ties: lower index first (stable sort)."""
    rows, cols = w.shape
    groups = magnitudes(w).reshape(rows, cols // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(rows, cols)


def reference_packed(w_pruned):
    """Packed layout from its written definition: values in ascending column order, meta nibble
    idx0 | idx1 << 2 per group, first group of each byte in the low nibble."""
    rows, cols = w_pruned.shape
    keep = reference_mask(w_pruned, 2, 4).reshape(rows, cols // 4, 4)
    idx = np.sort(np.argsort(~keep, axis=-1, kind="stable")[..., :2], axis=-1)  # the two kept positions
    values = np.take_along_axis(w_pruned.reshape(rows, cols // 4, 4), idx, axis=-1).reshape(rows, cols // 2)
    codes = (idx[..., 0] | (idx[..., 1] << 2)).astype(np.uint8)
    meta = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return values, meta


def ctrl_c_as_a_terminal_gives_it() -> None:
    """preexec_fn for a command a test interrupts with SIGINT: default SIGINT handling, as in a
    terminal. A test runner started in the background (`make test &`) has SIGINT ignored, and an
    ignored signal stays ignored in its children, so the command would never see the Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
