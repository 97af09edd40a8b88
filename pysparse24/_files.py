"""Writing output files safely: whole or not at all, never over the input, no leftovers.

Every command that writes a file goes through `atomic_output`: the data lands in NAME.partial next
to the target and is renamed over it only when complete. An error or Ctrl-C (and SIGTERM, which the
command lines turn into an exception) removes the partial file; only SIGKILL can leave one, and the
next write to the same target removes it first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yields the temporary path to write; on success it replaces `path` in one step."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a file name to write")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: {path.parent} is not an existing directory")
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write {path}: {path.parent} is not writable")
    tmp = partial_path(path)
    _remove(tmp)  # a leftover of a run killed mid-write
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def refuse_overlap(inputs: Iterable[str | Path], outputs: Iterable[str | Path]) -> None:
    """ValueError if writing any of `outputs` would overwrite one of `inputs` (same file, also via
    links), before anything is read or written."""
    inputs = [Path(p) for p in inputs]
    for out in map(Path, outputs):
        for src in inputs:
            same = out.exists() and src.exists() and os.path.samefile(out, src)
            if same or out.resolve() == src.resolve():
                raise ValueError(
                    f"the output {out} is the input {src}: writing it would destroy the input; choose another output"
                )
