"""Logging set-up, done once at start-up: one line per request, secrets never included."""

from __future__ import annotations

import logging
import sys


def setup(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log would repeat our request line without the user.
    logging.getLogger("uvicorn.access").disabled = True
