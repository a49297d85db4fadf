"""Managing a running test server's accounts the way an admin does: the `ankihost` command."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.server import REPO_ROOT, SyncServer


def add_user(server: SyncServer, name: str, password: str, quota_mb: int | None = None) -> None:
    """`ankihost user add` from the command line: the running server makes the account."""
    env = {**os.environ, **server.environment(), "PYTHONPATH": str(REPO_ROOT)}
    quota = ["--quota-mb", str(quota_mb)] if quota_mb is not None else []
    subprocess.run([sys.executable, "-m", "ankihost", "user", "add", name, *quota],
                   input=f"{password}\n{password}\n", text=True, env=env, check=True, cwd=REPO_ROOT,
                   capture_output=True, timeout=60)
