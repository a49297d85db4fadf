"""Logging set-up, done once at start-up, and `printable`, which every client-supplied value
passes through before it is logged: one line per event, secrets never included.

Two formats (ANKIHOST_LOG_FORMAT): `text`, the standard line, and `json`, one JSON object per
line with the same content. Events with fields of their own (the request line, audit events)
pass them as `extra={"fields": {...}}`: the text line shows them in its message, the JSON
object as keys of its own. `RecentErrors` keeps the last warnings and errors for the admin page.
"""

from __future__ import annotations

import collections
import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

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


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, the record's
    fields, and the traceback if any. JSON escaping keeps every value on the one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(str(key), value)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


# How many warnings and errors the admin page shows, and the most characters of each.
RECENT_ERRORS = 50
RECENT_ERROR_CHARS = 500


@dataclass(frozen=True)
class RecentError:
    at: float
    level: str
    logger: str
    message: str


class RecentErrors(logging.Handler):
    """The last RECENT_ERRORS warnings and errors, in memory, newest last (for the admin page)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.entries: collections.deque[RecentError] = collections.deque(maxlen=RECENT_ERRORS)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = printable(record.getMessage(), RECENT_ERROR_CHARS)
        except Exception:
            message = printable(str(record.msg), RECENT_ERROR_CHARS)
        if record.exc_info and record.exc_info[1] is not None:
            message += printable(f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})",
                                 RECENT_ERROR_CHARS)
        self.entries.append(RecentError(record.created, record.levelname, record.name, message))

    def newest_first(self) -> list[RecentError]:
        return list(reversed(self.entries))


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A record as one write of one whole line (the standard handler writes the line and its
    end separately: two system calls per request line when stderr is unbuffered)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def setup(level: int = logging.INFO, fmt: str = "text") -> None:
    # Nothing we log needs the caller's file and line, thread or process: not looking them up
    # makes each record several times cheaper (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
