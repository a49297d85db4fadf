"""What every admin command shares: reading the settings, running one operation wherever it
must run (`admin/runner.py`), and turning a refusal into a message and exit status 1."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson

from ankihost.admin import runner
from ankihost.admin.operations import AdminError
from ankihost.admin.progress import Reporter
from ankihost.cli.terminal import ProgressView
from ankihost.config import ConfigError, Settings


class CommandFailed(Exception):
    """Already explained to the user; exit with status 1."""


def call(op: str, args: dict[str, Any], on_progress: Reporter | None = None) -> Any:
    try:
        settings = Settings.from_env(os.environ)
        return runner.run(settings, op, args, on_progress)
    except (ConfigError, AdminError) as exc:
        if isinstance(on_progress, ProgressView):
            on_progress.close()
        print(f"ankihost: {exc}", file=sys.stderr)
        raise CommandFailed from None


def print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def megabytes(value: int | None, none: str = "-") -> str:
    return none if value is None else f"{value / (1024 * 1024):.1f} MB"


def moment(seconds: int | None) -> str:
    return "never" if seconds is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
