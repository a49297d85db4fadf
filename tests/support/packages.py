"""Debian packages the recipe tests run for real (nginx, Caddy, systemd-analyze, Docker).

`ensure_commands()` installs the package of each missing command with apt-get, as CI (a fresh
Debian machine, root) needs; tests never skip for a missing tool.
"""

from __future__ import annotations

import shutil
import subprocess

APT_TIMEOUT_SECONDS = 600


def ensure_commands(commands: dict[str, str]) -> None:
    """`{command: debian package}`: install the packages whose command is not on PATH."""
    missing = sorted({package for command, package in commands.items() if shutil.which(command) is None})
    if not missing:
        return
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True, timeout=APT_TIMEOUT_SECONDS).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True, timeout=APT_TIMEOUT_SECONDS)
        subprocess.run(install, env=env, check=True, capture_output=True, timeout=APT_TIMEOUT_SECONDS)
    still = [command for command in commands if shutil.which(command) is None]
    assert not still, f"installed {missing} but {still} still missing"
