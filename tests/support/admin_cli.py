"""Running the `ankihost` command as an operator does: a separate process, with the server's
environment (SYNC_BASE, SYNC_USERn), talking to a running server over its admin channel or,
with none running, doing the work itself.

    result = ankihost_cli(base, [("alice", "pw")], "snapshot", "list", "alice")
    result.returncode, result.stdout, result.stderr

`crash_cli` runs the same command in a process that kills itself with SIGKILL at a chosen
point (`tests/support/crash.py`), for kill -9 tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.server import REPO_ROOT, users_env

_DROPPED = ("SYNC_", "PASSWORDS_HASHED", "MAX_SYNC_PAYLOAD_MEGS", "ANKIHOST_")


def cli_env(base: Path, users: Sequence[tuple[str, str]], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(SYNC_BASE=str(base), PYTHONUNBUFFERED="1", **users_env(users), **(extra or {}))
    return env


def ankihost_cli(base: Path, users: Sequence[tuple[str, str]], *args: str,
                 env: Mapping[str, str] | None = None, timeout: float = 600,
                 stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ankihost", *args], cwd=REPO_ROOT,
                          env=cli_env(base, users, env), capture_output=True, text=True,
                          timeout=timeout, input=stdin)


def crash_cli(base: Path, users: Sequence[tuple[str, str]], target: str, when: str, nth: int,
              *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`ankihost ARGS` killed by SIGKILL at the `nth` call of `target` (`module:attr.path`),
    `before` or `after` it runs. Fails the test if the process was not killed there."""
    command = [sys.executable, "-m", "tests.support.crash", target, when, str(nth), "--", *args]
    result = subprocess.run(command, cwd=REPO_ROOT, env=cli_env(base, users), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == -9, (
        f"expected a SIGKILL at {when} call {nth} of {target}; exit {result.returncode}\n"
        f"{result.stdout}\n{result.stderr}")
    return result
