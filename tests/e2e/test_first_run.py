"""The README's first-run promises, met as a new user meets them.

`scripts/serve-demo` installs ankihost into a virtual environment of its own on the first start
(only then), tells the user whom to log in as and where, and serves that user to the real
client; a restart installs nothing, so it needs no package index. ankihost also installs with
`pip install git+<repository>` and `pipx install git+<repository>`, as the README says.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.client import SyncClient
from tests.support.deploy_scenario import Endpoint, sync_round
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
# The first start installs the server's dependencies into a new venv (from pip's cache).
INSTALL_TIMEOUT = 600.0
START_TIMEOUT = 60.0


class Demo:
    """`scripts/serve-demo` running, with what it has said on stderr so far."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen([str(ROOT / "scripts" / "serve-demo")], env=env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def said(self) -> str:
        return "\n".join(self.lines)

    def wait_listening(self, timeout: float) -> float:
        """Seconds until the server said it listens; fails with what it said if it stops."""
        started = time.monotonic()
        while not any("listening on" in line for line in self.lines):
            if self.process.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"serve-demo stopped with {self.process.returncode}:\n{self.said}")
            if time.monotonic() - started > timeout:
                pytest.fail(f"serve-demo did not start in {timeout:.0f} s:\n{self.said}")
            time.sleep(0.02)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextmanager
def demo(env: dict[str, str]) -> Iterator[Demo]:
    running = Demo(env)
    try:
        yield running
    finally:
        running.stop()


def _without_sync_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SYNC_", "ANKIHOST_", "PASSWORDS_HASHED", "MAX_SYNC_PAYLOAD_MEGS"))}


def _no_package_index(env: dict[str, str]) -> dict[str, str]:
    """`env` with pip unable to reach any package source: an install would fail."""
    env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "",
            "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "1"}


def test_serve_demo_installs_once_serves_the_demo_user_and_restarts_without_an_index(
    tmp_path: Path, clients: dict[str, SyncClient],
) -> None:
    port = free_port()
    env = {**_without_sync_settings(), "ANKIHOST_VENV": str(tmp_path / "venv"),
           "SYNC_BASE": str(tmp_path / "data"), "SYNC_PORT": str(port), "PYTHON": sys.executable}
    with demo(env) as first:
        first.wait_listening(INSTALL_TIMEOUT)
        assert "log in with user demo, password demo at:" in first.said
        assert f"http://127.0.0.1:{port}/" in first.said or f":{port}/" in first.said
        sync_round(Endpoint(f"http://127.0.0.1:{port}/"), "demo", "demo", clients)
    assert (tmp_path / "data" / "demo" / "collection.anki2").is_file()

    again = {**_no_package_index(env), "SYNC_USER1": "maria:a long password", "SYNC_HOST": "127.0.0.1"}
    with demo(again) as second:
        seconds = second.wait_listening(START_TIMEOUT)
        print(f"restart to listening: {seconds:.2f} s")  # shown with pytest -rP
        assert "log in with user maria at:" in second.said and "a long password" not in second.said
        assert f"http://127.0.0.1:{port}/" in second.said.splitlines()[1]
        maria = clients["maria"] = SyncClient(Endpoint(f"http://127.0.0.1:{port}/"), "maria", "a long password",
                                              name="maria")
        maria.login()
        assert maria.sync().action in ("normal", "upload", "download")


def _install_and_run(env: dict[str, str], command: list[str], ankihost: Path) -> str:
    subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    version = subprocess.run([str(ankihost), "--version"], env=env, check=True, capture_output=True,
                             text=True, timeout=60).stdout
    help_text = subprocess.run([str(ankihost), "user", "--help"], env=env, check=True, capture_output=True,
                               text=True, timeout=60).stdout
    assert "add" in help_text and "passwd" in help_text
    return version


def _repository_url(tmp_path: Path) -> str:
    """The repository as pip clones it: its committed HEAD (a copy, so nothing touches the checkout)."""
    copy = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(ROOT), str(copy)], check=True, timeout=120)
    return f"git+file://{copy}"


def _expected_version() -> str:
    from ankihost import __version__

    return f"ankihost {__version__}"


def test_pip_install_from_the_repository(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is needed to install from the repository (apt-get install git)")
    url = _repository_url(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    said = _install_and_run(_without_sync_settings(), [str(venv / "bin" / "pip"), "install", "--quiet", url],
                            venv / "bin" / "ankihost")
    assert said.strip() == _expected_version()


def test_pipx_install_from_the_repository(tmp_path: Path) -> None:
    url = _repository_url(tmp_path)
    tools = tmp_path / "tools"
    subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True, timeout=120)
    subprocess.run([str(tools / "bin" / "pip"), "install", "--quiet", "pipx"], check=True, timeout=INSTALL_TIMEOUT)
    env = {**_without_sync_settings(), "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin"),
           "PIPX_MAN_DIR": str(tmp_path / "man"), "PIPX_DEFAULT_PYTHON": sys.executable}
    said = _install_and_run(env, [str(tools / "bin" / "pipx"), "install", url], tmp_path / "bin" / "ankihost")
    assert said.strip() == _expected_version()
