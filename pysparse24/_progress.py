"""Progress of long work, always on stderr (stdout carries results): a live rich bar on a terminal,
and a plain line every few seconds when stderr is a file or a pipe (CI logs, `2> log`), so a
redirected run still shows that it moves."""

from __future__ import annotations

import sys
import time

LINE_INTERVAL_S = 5.0


class Progress:
    """Counts finished items out of `total`; `note` prints a line now, `describe` sets the status
    shown with the count. Disabled, it does nothing. Use as a context manager or call close()."""

    def __init__(
        self,
        label: str,
        total: int,
        done: int = 0,
        enabled: bool = True,
        interval_s: float = LINE_INTERVAL_S,
        stream=None,
    ) -> None:
        self.label, self.total, self.done, self.failed = label, total, done, 0
        self._stream = stream or sys.stderr
        self._enabled, self._interval_s = enabled, interval_s
        self._status, self._bar, self._start = "", None, time.monotonic()
        self._last_line = self._start
        if enabled and self._stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(f"[bold]{label}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=Console(file=self._stream),
            )
            self._task = self._bar.add_task("", total=total, completed=done)
            self._bar.start()

    def advance(self, status: str = "", failed: bool = False) -> None:
        self.failed += bool(failed)
        self.update(self.done + 1, status)

    def update(self, done: int, status: str = "") -> None:
        self.done = done
        self.describe(status)

    def describe(self, status: str) -> None:
        self._status = status
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=self._line_status())
        elif self._enabled and time.monotonic() - self._last_line >= self._interval_s:
            self._write_line()

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        elif self._enabled:
            print(text, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._enabled and self.done:
            self._write_line()
        self._enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line_status(self) -> str:
        failed = f"{self.failed} failed; " if self.failed else ""
        return failed + self._status

    def _write_line(self) -> None:
        self._last_line = time.monotonic()
        elapsed = self._last_line - self._start
        print(
            f"{self.label}: {self.done}/{self.total} after {elapsed:.0f} s; {self._line_status()}".rstrip("; "),
            file=self._stream,
            flush=True,
        )
