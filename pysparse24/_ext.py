"""Loads the compiled core, pysparse24._C, with an error that says how to build it."""

try:
    from pysparse24 import _C  # noqa: F401
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "pysparse24's C++ extension (pysparse24._C) is not built or failed to load: run `make build` "
        f"(or `pip install -e .`) in the source tree. Cause: {exc}"
    ) from exc

C = _C
