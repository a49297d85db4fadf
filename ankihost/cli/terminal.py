"""Showing a long command's progress: its messages as lines on stderr, and, on a terminal,
one line that keeps being rewritten with how far the work is ("alice  42%  120.3 of 286.0 MB").
Not on a terminal (cron, a pipe), only the messages are written."""

from __future__ import annotations

import shutil
import sys
from typing import Any, TextIO

MIB = 1024 * 1024


class ProgressView:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._shown = False

    def __call__(self, event: dict[str, Any]) -> None:
        if "message" in event:
            self._clear()
            print(str(event["message"]), file=self.stream, flush=True)
        elif self.live and isinstance(event.get("done"), int):
            self._show(event["done"], int(event.get("total") or 0), str(event.get("what") or ""))

    def _show(self, done: int, total: int, what: str) -> None:
        percent = f"{100 * done // total:3d}%  " if total else ""
        text = f"{what}  {percent}{done / MIB:.1f} of {max(total, done) / MIB:.1f} MB"
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()
        self._shown = True

    def _clear(self) -> None:
        if self._shown:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self._shown = False

    def close(self) -> None:
        """Leave the terminal as it was (the progress line erased)."""
        self._clear()
        self.stream.flush()
