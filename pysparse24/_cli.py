"""What every command line of the project (`pysparse24`, `pysparse24 lut` / `profiler`, `pysparse24 nas` /
`nas`) does the same way: how it fails, how it stops, `--version`, and where `module:callable`
arguments are imported from.

- A failure is one line `error: ...` on stderr and exit status 2 (argparse's own usage errors too).
  A traceback is printed only with PYSPARSE24_TRACEBACK=1.
- Ctrl-C is one line and exit 130; SIGTERM is one line and exit 143. Both unwind normally, so
  `finally` blocks remove partial files and stop worker processes (workers ignore SIGINT, which the
  terminal sends to the whole process group, and are stopped by their parent).
- Results go to stdout; progress and errors to stderr.
- The current directory is importable, as with `python -m`, so `--objective mymod:score` and
  `--backend mymod:factory` find ./mymod.py; spawned workers inherit the path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable

TRACEBACK_ENV = "PYSPARSE24_TRACEBACK"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup runs (BaseException: no `except Exception`
    swallows it)."""


def add_version(parser: argparse.ArgumentParser) -> None:
    from pysparse24 import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def current_directory_importable() -> None:
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def resolve_reference(ref: str, what: str):
    """'package.module:attribute' -> the attribute, or ValueError saying what is wrong and where it
    was looked for (the one resolver of user code named on a command line: objectives, backend
    factories, models)."""
    import importlib

    module_name, sep, attr = str(ref).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} must be 'module:function', got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"{what} {ref!r}: cannot import {module_name!r} ({exc}); modules are looked up in the "
            "current directory and on sys.path: run from the module's folder or add it to "
            "PYTHONPATH"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{what} {ref!r}: module {module_name!r} has no callable {attr!r}") from None


def key_value_option(text: str) -> tuple[str, object]:
    """argparse type of `-o KEY=VALUE` options: (key, value), the value parsed as JSON when it parses
    (numbers, true, ...), else kept as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """`-o KEY=VALUE` (repeatable) into `args.backend_options`: the one spelling of backend options
    for every command that starts a latency backend."""
    parser.add_argument(
        "-o",
        "--backend-option",
        dest="backend_options",
        action="append",
        type=key_value_option,
        default=[],
        metavar="KEY=VALUE",
        help="backend option (repeatable), e.g. -o threads=2",
    )


@contextlib.contextmanager
def ctrl_c_ignored_by_children():
    """Start worker processes inside this block: they inherit SIGINT ignored (an ignored signal stays
    ignored across exec, and Python then installs no KeyboardInterrupt handler), so a Ctrl-C sent to
    the process group while a worker is still starting up cannot print its traceback. This process
    ignores SIGINT too for those few milliseconds (a blocked mask would not do: spawn resets it)."""
    if not _main_thread():  # only the main thread may change handlers; workers start there anyway
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _raise_terminated(signum, frame):
    raise Terminated()


def run(prog: str, body: Callable[[], int]) -> int:
    """Runs a command's body with the shared failure, interrupt and termination handling; returns
    the exit status."""
    current_directory_importable()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if _main_thread() else None
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; work committed so far is kept (rerun the command to resume)", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prog}: terminated; work committed so far is kept", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `... | head`: the reader is gone, nothing left to say
        sys.stderr.close()
        return 141
    except Exception as exc:  # noqa: BLE001 - every failure of a command is one line; the env var shows more
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{prog}: error: {describe(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def describe(exc: BaseException) -> str:
    """The message of an exception, with its type where the message alone would not say what
    happened (an unexpected exception type, an empty message)."""
    text = str(exc).strip() or repr(exc)
    if isinstance(
        exc,
        (
            ValueError,
            TypeError,
            FileNotFoundError,
            PermissionError,
            IsADirectoryError,
            NotADirectoryError,
            FileExistsError,
        ),
    ) or type(exc).__module__.startswith(("profiler", "pysparse24")):
        return text
    return f"{type(exc).__name__}: {text}"


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
