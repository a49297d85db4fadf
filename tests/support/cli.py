"""Run the `ankihost` command line as an admin does: a subprocess `python -m ankihost …` of the
working tree, configured only by the environment (SYNC_BASE and any SYNC_USERn given here; the
caller's own SYNC_* and PASSWORDS_HASHED are dropped), the password piped on stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import orjson

from tests.support.server import REPO_ROOT


def cli_env(base: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SYNC_", "PASSWORDS_HASHED", "MAX_SYNC", "ANKIHOST_"))}
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), clean.get("PYTHONPATH", "")) if p)
    return {**clean, "SYNC_BASE": str(base), **(env or {})}


def run_cli(base: Path, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m ankihost ARGS` on SYNC_BASE=base; `stdin` is piped (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "ankihost", *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, cwd=REPO_ROOT, env=cli_env(base, env),
                          timeout=timeout)


def cli_ok(base: Path, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The output of a command that must succeed."""
    result = run_cli(base, *args, stdin=stdin, env=env)
    assert result.returncode == 0, f"ankihost {' '.join(args)} exited {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def cli_json(base: Path, *args: str, env: Mapping[str, str] | None = None) -> object:
    return orjson.loads(cli_ok(base, *args, "--json", env=env))


def cli_refused(base: Path, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The message of a command that must be refused: exit status 1, a message, no traceback."""
    result = run_cli(base, *args, stdin=stdin, env=env)
    what = f"ankihost {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert result.returncode == 1, what
    assert result.stderr.startswith("ankihost: ") and "Traceback" not in result.stderr, result.stderr
    return result.stderr
