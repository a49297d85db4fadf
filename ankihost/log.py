"""Logging set-up, done once at start-up, and `printable`, which every client-supplied value
passes through before it is logged: one line per event, secrets never included."""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The most characters of one client-supplied value (a client version, a user name, a path) that
# go into a log line; the rest is cut and marked.
MAX_LOGGED_CHARS = 200


def printable(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """`text` safe for one log line: at most `limit` characters (then "…"), and every character
    that is not printable (newlines, controls, invisible format characters) escaped as in a
    Python string literal, so nothing a client sends can start a new line or hide in one."""
    if len(text) <= limit and text.isprintable():
        return text
    cut = text[:limit]
    escaped = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in cut)
    return escaped + ("…" if len(text) > limit else "")


class _Formatter(logging.Formatter):
    """The standard format, with the date part of each timestamp formatted once a second
    (a request line would otherwise pay for a `strftime` of its own)."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._text},{int(record.msecs):03d}"


def setup(level: int = logging.INFO) -> None:
    # Nothing we log needs the caller's file and line, thread or process: not looking them up
    # makes each record several times cheaper (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log would repeat our request line without the user.
    logging.getLogger("uvicorn.access").disabled = True
