"""Compress every eligible weight of a checkpoint file (.npy or .safetensors) and back.

The output is a directory holding `tensors.safetensors` (values and meta of compressed weights,
the other tensors unchanged) and `manifest.json` (what was compressed, what was skipped and why,
sizes). Nothing is pickled. Conv weights (K, C, R, S) are compressed as TensorRT lays them out for
sparse convolution: (K, R*S*C) with C innermost, so the groups run along input channels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import pysparse24
from pysparse24 import _arrays
from pysparse24._files import atomic_output, refuse_overlap
from pysparse24.formats import check_dense_shape

MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
MANIFEST_VERSION = 1


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def load_tensors(path: Path) -> dict:
    """name -> array. safetensors via torch when present (it knows bfloat16/float8), else numpy."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected a .npy or .safetensors file")
    if path.suffix == ".npy":
        # Memory-mapped first: a header that claims more data than the file holds is an error here,
        # not an attempt to allocate it. A big-endian .npy (another machine's) is made native.
        try:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"cannot read {path} as a .npy array: {exc}") from None
        return {path.stem: _arrays.native(np.array(mapped))}
    if path.suffix == ".safetensors":
        if _torch_available():
            from safetensors.torch import load_file
        else:
            from safetensors.numpy import load_file
        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError (not exported)
            raise ValueError(
                f"cannot read {path} as .safetensors (truncated or not a safetensors file): {exc}"
            ) from None
    raise ValueError(f"unsupported checkpoint type {path.suffix!r}: expected .npy or .safetensors")


def save_tensors(tensors: dict, path: Path) -> None:
    """Writes atomically (_files.atomic_output) so an interrupted run never leaves a torn file."""
    path = Path(path)
    _check_output_file(path, len(tensors))
    with atomic_output(path) as tmp:
        if path.suffix == ".npy":
            (array,) = tensors.values()
            with open(tmp, "wb") as f:
                np.save(f, _as_numpy(array), allow_pickle=False)
        elif any(_arrays.is_torch(t) for t in tensors.values()):
            import torch
            from safetensors.torch import save_file

            save_file(
                {
                    k: (v if _arrays.is_torch(v) else torch.from_numpy(np.ascontiguousarray(v))).contiguous()
                    for k, v in tensors.items()
                },
                str(tmp),
            )
        else:
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))


def _check_output_file(path: Path, count: int) -> None:
    if path.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"unsupported output type {path.suffix!r} ({path}): expected .npy or .safetensors")
    if path.suffix == ".npy" and count != 1:
        raise ValueError(f"{count} tensors cannot go into one .npy file ({path}); write a .safetensors file instead")
    if path.is_dir():
        raise ValueError(f"the output {path} is a directory; expected a file name")


def _as_numpy(a):
    return a.numpy() if _arrays.is_torch(a) else np.asarray(a)


def _as_matrix(w):
    """(matrix view to compress, layout name) or raise ValueError with the reason it is not eligible."""
    if w.ndim == 2:
        return w, "rows"
    if w.ndim == 4:  # conv (K, C, R, S) -> (K, R*S*C), input channels innermost
        k, c, r, s = w.shape
        permuted = w.permute(0, 2, 3, 1) if _arrays.is_torch(w) else np.transpose(w, (0, 2, 3, 1))
        return permuted.reshape(k, r * s * c), "KRSC"
    raise ValueError(f"{w.ndim}-D tensor: only 2-D (Linear) and 4-D (conv) weights are compressed")


def _from_matrix(dense, shape, layout):
    if layout == "rows":
        return dense
    k, c, r, s = shape
    dense = dense.reshape(k, r, s, c)
    return (
        dense.permute(0, 3, 1, 2).contiguous()
        if _arrays.is_torch(dense)
        else np.ascontiguousarray(np.transpose(dense, (0, 3, 1, 2)))
    )


def compress_checkpoint(
    src, dst, format: str = "packed", prune: bool = False, min_elements: int = 0, progress=None
) -> dict:
    """Compresses every eligible weight of `src` into the directory `dst`; returns the manifest."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"the output {dst} exists and is not a directory (compress writes a directory)")
    refuse_overlap([src], [dst / TENSORS, dst / MANIFEST])
    tensors = load_tensors(Path(src))
    out: dict = {}
    entries: dict = {}
    for name, w in tensors.items():
        dtype = _arrays.dtype_name(w)
        entry = {"shape": list(w.shape), "dtype": dtype}
        try:
            size = w.numel() if _arrays.is_torch(w) else w.size
            if size == 0:
                raise ValueError("empty tensor")
            if size < min_elements:
                raise ValueError(f"smaller than min_elements={min_elements}")
            if dtype not in _arrays.KINDS:
                raise ValueError(f"dtype {dtype} is not supported")
            matrix, layout = _as_matrix(w)
            pattern = check_dense_shape(tuple(matrix.shape), format, dtype).pattern
            n, m = (int(v) for v in pattern.split(":"))
            if not prune and not pysparse24.is_sparse(matrix, n, m):
                raise ValueError(f"not {pattern} sparse (compress with prune=True to prune it)")
            c = pysparse24.compress(matrix, format=format, prune=prune)
        except ValueError as exc:
            out[name] = w
            entries[name] = {**entry, "status": "skipped", "reason": str(exc)}
        else:
            out[f"{name}.values"], out[f"{name}.meta"] = c.values, c.meta
            entries[name] = {
                **entry,
                "status": "compressed",
                "layout": layout,
                "matrix_shape": list(c.shape),
                "pattern": c.pattern,
                "dense_bytes": c.dense_nbytes,
                "compressed_bytes": c.nbytes,
            }
        if progress:
            progress(name, entries[name])
    dst.mkdir(parents=True, exist_ok=True)
    save_tensors(out, dst / TENSORS)
    compressed = [e for e in entries.values() if e["status"] == "compressed"]
    manifest = {
        "pysparse24_manifest": MANIFEST_VERSION,
        "source": str(src),
        "source_type": Path(src).suffix,
        "format": format,
        "pruned": bool(prune),
        "tensors": entries,
        "totals": {
            "compressed": len(compressed),
            "skipped": len(entries) - len(compressed),
            "dense_bytes": sum(e["dense_bytes"] for e in compressed),
            "compressed_bytes": sum(e["compressed_bytes"] for e in compressed),
        },
    }
    with atomic_output(dst / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return manifest


def decompress_checkpoint(src_dir, dst) -> dict:
    """Restores the original tensors from a directory written by compress_checkpoint into `dst`
    (.safetensors, or .npy when the source was a single .npy array)."""
    src_dir = Path(src_dir)
    refuse_overlap([src_dir / TENSORS, src_dir / MANIFEST], [dst])
    try:
        manifest = json.loads((src_dir / MANIFEST).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{src_dir} has no {MANIFEST}: not a pysparse24 compressed checkpoint") from None
    if manifest.get("pysparse24_manifest") != MANIFEST_VERSION:
        raise ValueError(f"{src_dir / MANIFEST} is not a version-{MANIFEST_VERSION} pysparse24 manifest")
    _check_output_file(Path(dst), len(manifest["tensors"]))
    stored = load_tensors(src_dir / TENSORS)
    restored = {}
    for name, entry in manifest["tensors"].items():
        if entry["status"] == "skipped":
            restored[name] = stored[name]
            continue
        c = pysparse24.Compressed(
            stored[f"{name}.values"],
            stored[f"{name}.meta"],
            tuple(entry["matrix_shape"]),
            entry["dtype"],
            manifest["format"],
        )
        restored[name] = _from_matrix(pysparse24.decompress(c), entry["shape"], entry["layout"])
    save_tensors(restored, Path(dst))
    return restored
