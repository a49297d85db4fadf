"""Run a sync server under test as a subprocess on a loopback port.

Both servers are configured exactly as their users configure them, through the
environment (never through inherited variables: every ``SYNC_*``,
``PASSWORDS_HASHED`` and ``MAX_SYNC_PAYLOAD_MEGS`` of the caller's environment
is dropped and only the values given here are set):

    SYNC_BASE              the data folder (a fresh temp dir unless given)
    SYNC_HOST, SYNC_PORT   127.0.0.1 and a free port
    SYNC_USER1..N          ``user:password`` (or ``user:<PHC hash>``)
    PASSWORDS_HASHED, MAX_SYNC_PAYLOAD_MEGS, ...   via ``env=``

``kind`` selects the command:

    "ankihost"  ->  [sys.executable, "-m", "ankihost"]  (cwd and PYTHONPATH =
                    the repository root, so the working tree is what runs)
    "official"  ->  [sys.executable, "-m", "anki.syncserver"]

The server runs in its own session (process group == its pid), so stopping it
signals exactly that group: SIGTERM, then SIGKILL after a grace period. Its
stdout/stderr go to ``<root>/server.log``; :meth:`SyncServer.log_tail` and
:meth:`SyncServer.log_on_failure` put that log into failure messages.

Typical use::

    with SyncServer("ankihost", users=[("alice", "pw")]) as srv:
        ... srv.endpoint ...        # "http://127.0.0.1:<port>/"
        srv.restart()               # same SYNC_BASE (and port, if free)
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

ServerKind = Literal["ankihost", "official"]

REPO_ROOT = Path(__file__).resolve().parents[2]

# Ports other tooling on shared machines may use for long-running servers.
_AVOID_PORTS = range(27700, 28000)

# Variables that configure a sync server; never inherited from our environment.
_SERVER_ENV_NAMES = frozenset(
    {"SYNC_BASE", "SYNC_HOST", "SYNC_PORT", "PASSWORDS_HASHED", "MAX_SYNC_PAYLOAD_MEGS", "SYNC_IP_HEADER"}
)
_SERVER_ENV_PREFIXES = ("SYNC_USER",)


class ServerStartError(RuntimeError):
    """The server exited or did not answer ``GET /health`` in time."""


def server_command(kind: ServerKind) -> list[str]:
    """The argv that starts a server of the given kind with this interpreter."""
    if kind == "ankihost":
        return [sys.executable, "-m", "ankihost"]
    if kind == "official":
        return [sys.executable, "-m", "anki.syncserver"]
    raise ValueError(f"unknown server kind {kind!r}")


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _AVOID_PORTS:
            return port
    raise RuntimeError("no free loopback port found")


def health_ok(port: int, timeout: float = 0.5, tls_ca: Path | None = None) -> bool:
    """True if ``GET /health`` on 127.0.0.1:port answers 200 (over TLS trusting ``tls_ca``)."""
    conn = (http.client.HTTPConnection("127.0.0.1", port, timeout=timeout) if tls_ca is None else
            http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                        context=ssl.create_default_context(cafile=str(tls_ca))))
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def users_env(users: Sequence[tuple[str, str]]) -> dict[str, str]:
    """``SYNC_USER1..N`` for (username, password-or-hash) pairs."""
    return {f"SYNC_USER{i}": f"{user}:{secret}" for i, (user, secret) in enumerate(users, start=1)}


class SyncServer:
    """One sync server process with its own SYNC_BASE.

    ``base``: an existing SYNC_BASE to serve (e.g. one written by the other
    server); by default a fresh temp folder that :meth:`cleanup` deletes.
    ``env``: extra variables, e.g. ``{"PASSWORDS_HASHED": "1"}``.
    ``command``: overrides the argv chosen by ``kind``.
    ``tls_ca``: the server speaks HTTPS (``ANKIHOST_TLS_*`` in ``env``) with a certificate
    for 127.0.0.1 signed by this CA file: the endpoint is ``https://``, /health is checked over TLS.
    """

    def __init__(
        self,
        kind: ServerKind = "ankihost",
        users: Sequence[tuple[str, str]] = (("user", "pass"),),
        *,
        base: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        ready_timeout: float = 30.0,
        tls_ca: Path | None = None,
    ) -> None:
        self.kind = kind
        self.users = list(users)
        self.command = list(command) if command else server_command(kind)
        self.extra_env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.tls_ca = tls_ca
        self._root = Path(tempfile.mkdtemp(prefix=f"ankihost-test-{kind}-"))
        self.base = Path(base) if base is not None else self._root / "base"
        self.base.mkdir(parents=True, exist_ok=True)
        self.log_path = self._root / "server.log"
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- addresses --------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The sync endpoint as the client expects it (trailing slash)."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- environment --------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The complete environment the server process gets."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _SERVER_ENV_NAMES and not k.startswith(_SERVER_ENV_PREFIXES)
        }
        if self.kind == "ankihost":
            parts = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            env["PYTHONPATH"] = os.pathsep.join(parts)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env["NO_COLOR"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(SYNC_BASE=str(self.base), SYNC_HOST="127.0.0.1", SYNC_PORT=str(self.port))
        env.update(users_env(self.users))
        env.update(self.extra_env)
        return env

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> SyncServer:
        """Start and wait for ``GET /health``; reuses the previous port if
        possible (restart), else picks a fresh one."""
        if self.alive():
            raise RuntimeError("server already running")
        # a restart first tries the old port; if that exits early (e.g. the
        # port was taken meanwhile) one fresh port is tried
        candidates: list[int | None] = [self.port, None] if self.port else [None]
        error: ServerStartError | None = None
        for candidate in candidates:
            self.port = candidate or free_port()
            try:
                self._spawn_and_wait()
            except ServerStartError as exc:
                error = exc
                exited = self.proc is not None and self.proc.poll() is not None
                self._signal(signal.SIGKILL)
                self._reap()
                if not exited:
                    break  # it hung without answering: a retry would not help
                continue  # exited early: perhaps the port was taken
            self.starts += 1
            return self
        assert error is not None
        raise error

    def _spawn_and_wait(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.command)} port={self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command,
                env=self.environment(),
                cwd=str(REPO_ROOT) if self.kind == "ankihost" else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert self.port is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.kind} server exited with {self.proc.returncode} before answering "
                    f"/health on port {self.port}\n--- server log ---\n{self.log_tail()}"
                )
            if health_ok(self.port, tls_ca=self.tls_ca):
                return
            time.sleep(0.05)
        raise ServerStartError(
            f"{self.kind} server did not answer /health on port {self.port} within "
            f"{self.ready_timeout}s\n--- server log ---\n{self.log_tail()}"
        )

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the server's process group, SIGKILL after ``grace`` s.
        Returns the exit code (None if it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
        # children that outlived the leader are killed with the group
        self._signal(signal.SIGKILL)
        return self._reap()

    def restart(self) -> SyncServer:
        """Stop, then start again on the same SYNC_BASE (same port if free)."""
        old_port = self.port
        self.stop()
        if old_port is not None:
            for _ in range(50):
                if not _port_answers(old_port):
                    break
                time.sleep(0.1)
        return self.start()

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # new session: pgid == pid

    def _reap(self) -> int | None:
        if self.proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        return self.proc.returncode

    def cleanup(self) -> None:
        """Stop, and delete the temp root (logs, and the default SYNC_BASE)."""
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> SyncServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- diagnostics --------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    @contextlib.contextmanager
    def log_on_failure(self) -> Iterator[None]:
        """Attach the server log tail to any exception raised in the block."""
        try:
            yield
        except BaseException as exc:
            exc.add_note(f"--- {self.kind} server log (port {self.port}) ---\n{self.log_tail()}")
            raise


@contextlib.contextmanager
def running_server(
    kind: ServerKind,
    users: Sequence[tuple[str, str]],
    **kwargs: object,
) -> Iterator[SyncServer]:
    """``with running_server("official", [("u", "p")]) as srv:`` - always
    stopped and cleaned up on exit; the log is attached to failures."""
    server = SyncServer(kind, users, **kwargs)  # type: ignore[arg-type]
    with server, server.log_on_failure():
        yield server
