"""contrib/ankihost.service, checked by systemd itself (`systemd-analyze`; systemd is not PID 1
on these machines, so nothing is started): it loads without any warning in a root laid out as
the install instructions say, its sandbox rates "OK", and it runs ankihost as documented."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.packages import ensure_commands
from tests.support.server import REPO_ROOT

UNIT = REPO_ROOT / "contrib" / "ankihost.service"
# systemd-analyze's scale: 0 (locked down) to 10 (no sandbox); "OK" ends at 3.9.
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with systemd's own units, the unit installed and /opt/ankihost/bin/ankihost present."""
    ensure_commands({"systemd-analyze": "systemd"})
    root = tmp_path_factory.mktemp("root")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    program = root / "opt/ankihost/bin/ankihost"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return root


def _install(root: Path, text: str) -> None:
    (root / "etc/systemd/system/ankihost.service").write_text(text)


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args, f"--root={root}", "ankihost.service"],
                          capture_output=True, text=True, timeout=60)


def _problems(root: Path, text: str) -> str:
    """Everything `systemd-analyze verify` says about the unit: warnings (unknown keys, bad
    values) keep exit status 0, so any output at all counts as a problem."""
    _install(root, text)
    done = _analyze(root, "verify")
    said = done.stdout + done.stderr
    return f"exit {done.returncode}: {said}" if done.returncode or said else ""


def test_the_unit_verifies_without_a_single_warning(root):
    assert _problems(root, UNIT.read_text()) == ""


@pytest.mark.parametrize(("edit", "said"), [
    (("ProtectSystem=strict", "ProtectSytem=strict"), "Unknown key 'ProtectSytem'"),
    (("ProtectHome=yes", "ProtectHome=maybe"), "Failed to parse protect home value"),
    (("SystemCallFilter=@system-service", "SystemCallFilter=@system-servic"), "Unknown system call group"),
    (("/opt/ankihost/bin/ankihost serve", "/opt/ankihost/bin/ankihostd serve"), "is not executable"),
])
def test_the_check_catches_real_mistakes(root, edit, said):
    assert said in _problems(root, UNIT.read_text().replace(*edit))


def test_the_sandbox_rates_ok(root):
    _install(root, UNIT.read_text())
    done = _analyze(root, "security", "--offline=true", "--no-pager")
    match = re.search(r"Overall exposure level for ankihost\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout


def _settings(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in text.splitlines()  # type: ignore[misc]
            if "=" in line and not line.startswith(("#", ";"))]


def test_the_unit_runs_ankihost_as_documented():
    settings = _settings(UNIT.read_text())
    values = dict(settings)
    assert values["ExecStart"] == "/opt/ankihost/bin/ankihost serve"
    assert values["StateDirectory"] == "ankihost" and ("Environment", "SYNC_BASE=%S/ankihost") in settings
    assert values["DynamicUser"] == "yes" and values["NoNewPrivileges"] == "yes"
    assert values["ProtectSystem"] == "strict" and values["CapabilityBoundingSet"] == ""
    assert values["EnvironmentFile"] == "-/etc/ankihost/ankihost.env"
    # the first user's secret comes from a credential, never from the environment file
    assert ("LoadCredential", "user1:/etc/ankihost/credentials/user1") in settings
    assert ("Environment", "SYNC_USER1_FILE=%d/user1") in settings
    assert not any(key == "Environment" and value.startswith("SYNC_USER1=") for key, value in settings)
    serve = subprocess.run([sys.executable, "-m", "ankihost", "serve", "--help"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=30)
    assert serve.returncode == 0, serve.stderr
