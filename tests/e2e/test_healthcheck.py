"""`ankihost healthcheck` against a real server process: 0 when `/health` answers 200, else 1
with the reason on stderr; it reads the server's own settings (SYNC_HOST, SYNC_PORT,
ANKIHOST_TLS_CERT) and asks over loopback when the server listens on every address."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ankihost.healthcheck import healthcheck_command
from ankihost.tls.selfsigned import issue, parse_names
from tests.support.server import REPO_ROOT, SyncServer, free_port

pytestmark = pytest.mark.e2e


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ankihost", "healthcheck"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 10
    return done


@pytest.mark.parametrize("listen", ["127.0.0.1", "0.0.0.0"])
def test_a_running_server_is_healthy_and_a_stopped_one_is_not(listen):
    with SyncServer("ankihost", env={"SYNC_HOST": listen}) as server:
        env = server.environment()
        healthy = _run(env)
        assert (healthy.returncode, healthy.stderr) == (0, ""), healthy
        assert f"http://127.0.0.1:{server.port}/health answered 200" in healthy.stdout
        server.stop()
        unhealthy = _run(env)
    assert unhealthy.returncode == 1
    assert f"unhealthy: nothing listens on 127.0.0.1:{server.port} (connection refused)" in unhealthy.stderr


def test_a_server_on_every_address_answers_on_ipv6_and_ipv4_loopback():
    """SYNC_HOST=:: takes IPv6 and IPv4 clients, as the official server does (SyncServer waits
    for it on 127.0.0.1); the check asks ::1."""
    with SyncServer("ankihost", env={"SYNC_HOST": "::"}) as server:
        done = _run(server.environment())
        assert done.returncode == 0, done
        assert f"http://[::1]:{server.port}/health answered 200" in done.stdout


def test_https_expected_but_the_server_speaks_plain_http():
    with SyncServer("ankihost") as server:
        done = _run({**server.environment(), "ANKIHOST_TLS_CERT": "/etc/ankihost/server.crt"})
    assert done.returncode == 1
    assert "unhealthy: TLS with 127.0.0.1" in done.stderr and "ANKIHOST_TLS_CERT" in done.stderr


def test_a_bad_setting_is_named():
    done = _run({"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "SYNC_PORT": "eighty"})
    assert done.returncode == 1
    assert "configuration error: SYNC_PORT='eighty' is invalid" in done.stderr


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


def _serving(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[int]:
    """An HTTPS server whose certificate is for another name, from a CA nobody trusts."""
    issue(tmp_path, parse_names("elsewhere.example.org", []))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    yield from _serving(_Answer, context)


def test_over_https_only_the_answer_counts_not_the_certificate(tls_server, capsys):
    env = {"SYNC_HOST": "0.0.0.0", "SYNC_PORT": str(tls_server), "ANKIHOST_TLS_CERT": "/any/server.crt"}
    assert healthcheck_command(env) == 0
    assert f"https://127.0.0.1:{tls_server}/health answered 200" in capsys.readouterr().out


def test_an_answer_other_than_200_is_unhealthy(capsys):
    class Unavailable(_Answer):
        status = 503

    for port in _serving(Unavailable):
        assert healthcheck_command({"SYNC_HOST": "127.0.0.1", "SYNC_PORT": str(port)}) == 1
    assert f"http://127.0.0.1:{port}/health answered 503" in capsys.readouterr().err


def test_a_server_that_never_answers_times_out_quickly(capsys):
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        assert healthcheck_command({"SYNC_HOST": "127.0.0.1", "SYNC_PORT": str(port)}, timeout=0.5) == 1
        assert time.monotonic() - started < 3
    assert f"no answer from http://127.0.0.1:{port}/health within 0.5 s" in capsys.readouterr().err


def test_sync_port_zero_has_nothing_to_check(capsys):
    assert healthcheck_command({"SYNC_PORT": "0"}) == 1
    assert "SYNC_PORT=0" in capsys.readouterr().err


def test_defaults_are_the_servers(capsys):
    port = free_port()
    assert healthcheck_command({"SYNC_PORT": str(port)}) == 1  # SYNC_HOST defaults to 0.0.0.0
    assert f"nothing listens on 127.0.0.1:{port}" in capsys.readouterr().err
