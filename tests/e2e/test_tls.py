"""Built-in HTTPS (ANKIHOST_TLS_CERT / ANKIHOST_TLS_KEY) on a real `python -m ankihost` process.

The real client trusts the test CA through SSL_CERT_FILE, which it reads when its backend is
created (a Collection opened before the variable is set keeps refusing the CA), so it is set
before every SyncClient here. A certificate renewed on disk is served to new connections while
connections already open, and syncs under way, go on; bad files stop start-up naming the setting.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import zstandard

from tests.support.certs import PrivateCA, ServerFiles
from tests.support.client import SyncClient
from tests.support.media_files import write_media
from tests.support.server import SyncServer, free_port

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "tls pw"
HOST_KEY = hashlib.sha1(f"{USER}:{PASSWORD}".encode()).hexdigest()


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA.create(tmp_path / "ca")


@pytest.fixture
def files(ca: PrivateCA, tmp_path: Path) -> ServerFiles:
    return ca.issue(tmp_path / "live", ["localhost"], ips=["127.0.0.1"])


@pytest.fixture
def server(ca: PrivateCA, files: ServerFiles) -> Iterator[SyncServer]:
    with SyncServer("ankihost", users=[(USER, PASSWORD)], env=files.env(), tls_ca=ca.pem_path) as srv:
        with srv.log_on_failure():
            yield srv


def client_context(ca: PrivateCA, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.pem_path))
    if version is not None:
        with warnings.catch_warnings():  # setting TLS 1.0/1.1 warns that they are deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.0/1.1 at all
    return context


def tls_connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def served_fingerprint(port: int, ca: PrivateCA) -> bytes:
    with tls_connect(port, client_context(ca)) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).digest()


def meta_head(length: int | None = None) -> bytes:
    header = orjson.dumps({"v": 11, "k": HOST_KEY, "c": "test,1,linux", "s": "tls1"})
    framing = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
    return b"POST /sync/meta HTTP/1.1\r\nhost: x\r\nanki-sync: " + header + b"\r\n" + framing + b"\r\n"


def read_response(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        assert piece, f"connection closed after {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(body) < length:
        body += conn.recv(65536)
    return head


def renew(ca: PrivateCA, files: ServerFiles, tmp: Path) -> ServerFiles:
    """A new key and certificate in place of `files`, each file replaced by a rename."""
    fresh = ca.issue(tmp, ["localhost"], ips=["127.0.0.1"])
    os.replace(fresh.cert, files.cert)
    os.replace(fresh.key, files.key)
    return ServerFiles(files.cert, files.key, fresh.certificate)


# -- the real client ---------------------------------------------------------------------------
def test_real_client_syncs_over_https(server: SyncServer, ca: PrivateCA, clients: dict[str, SyncClient],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.pem_path))
    assert server.endpoint.startswith("https://")
    a = clients["a"] = SyncClient(server, USER, PASSWORD, name="a")
    b = clients["b"] = SyncClient(server, USER, PASSWORD, name="b")
    with server.log_on_failure():
        _add_notes(a, 30)
        assert a.sync(on_conflict="upload").action == "upload"
        write_media(a.media_dir, {"big.bin": os.urandom(3 * 1024 * 1024), "small.txt": b"hello"})
        # The client may leave a file it sees as just written for its next media sync, and
        # SyncClient.sync_media may return before the backend's sync began: sync until done.
        _media_sync_until(a, lambda: _names(server.base / USER / "media") == ["big.bin", "small.txt"])
        assert b.sync().action == "download"
        _media_sync_until(b, lambda: _names(b.media_dir) == ["big.bin", "small.txt"])
        assert (b.media_dir / "big.bin").read_bytes() == (a.media_dir / "big.bin").read_bytes()
        _add_notes(b, 5)
        assert b.sync().action == "normal" and a.sync().action == "normal"
        assert a.col.note_count() == b.col.note_count() == 35


def test_the_client_refuses_an_untrusted_certificate(server: SyncServer, clients: dict[str, SyncClient],
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Control for the test above: without the CA the same client cannot sync."""
    from anki.errors import NetworkError

    other = PrivateCA.create(tmp_path / "other", name="another CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.pem_path))
    a = clients["a"] = SyncClient(server, USER, PASSWORD, name="a")
    with pytest.raises(NetworkError):
        a.login()
    _wait_for(lambda: "TLS handshake with 127.0.0.1 failed" in server.log_text())
    assert "does not trust" in server.log_text()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _media_sync_until(client: SyncClient, done: object, attempts: int = 5) -> None:
    for _ in range(attempts):
        client.sync_media()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            if done():  # type: ignore[operator]
                return
            time.sleep(0.05)
    raise AssertionError(f"media sync of {client.folder} did not finish")


def _add_notes(client: SyncClient, count: int) -> None:
    col = client.col
    basic = col.models.by_name("Basic")
    assert basic is not None
    for i in range(count):
        note = col.new_note(basic)
        note["Front"], note["Back"] = f"{client.folder.name} {i}", "back"
        col.add_note(note, col.decks.id("Default"))


# -- protocol versions -------------------------------------------------------------------------
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_served(server: SyncServer, ca: PrivateCA, version: ssl.TLSVersion) -> None:
    assert server.port is not None
    with tls_connect(server.port, client_context(ca, version)) as conn:
        assert conn.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        assert conn.selected_alpn_protocol() in (None, "http/1.1")
        conn.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(server: SyncServer, ca: PrivateCA, files: ServerFiles,
                                     version: ssl.TLSVersion) -> None:
    assert server.port is not None
    context = client_context(ca, version)
    with legacy_tls_server(files) as port:  # the same client does speak this version
        with tls_connect(port, context) as conn:
            assert conn.version() in ("TLSv1", "TLSv1.1")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):  # ankihost ends the handshake
        tls_connect(server.port, context).close()
    _wait_for(lambda: "only TLS versions before 1.2" in server.log_text())
    assert served_fingerprint(server.port, ca) == files.fingerprint  # and it still serves


class legacy_tls_server:  # noqa: N801 - used as a context manager like a function
    """A plain Python TLS server that also speaks TLS 1.0/1.1 (to prove the client can)."""

    def __init__(self, files: ServerFiles) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.context.minimum_version = ssl.TLSVersion.TLSv1
        self.context.set_ciphers("DEFAULT:@SECLEVEL=0")
        self.context.load_cert_chain(files.cert, files.key)
        self.sock = socket.create_server(("127.0.0.1", 0))

    def __enter__(self) -> int:
        def serve() -> None:
            conn, _ = self.sock.accept()
            try:
                self.context.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_connections_before_their_handshake_count_against_the_cap(ca: PrivateCA, files: ServerFiles) -> None:
    """Idle connections to the HTTPS port that never start TLS hold a slot like any other: past
    the cap the oldest are closed for newcomers, and a real request is still served at once."""
    env = {**files.env(), "ANKIHOST_MAX_CONNECTIONS": "4"}
    with SyncServer("ankihost", users=[(USER, PASSWORD)], env=env, tls_ca=ca.pem_path) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
        try:
            with tls_connect(server.port, client_context(ca)) as conn:  # the fifth: room is made
                body = zstandard.ZstdCompressor().compress(b'{"v":11,"cv":"test"}')
                conn.sendall(meta_head(len(body)) + body)
                assert read_response(conn).startswith(b"HTTP/1.1 200")
            idle[0].settimeout(2)
            assert idle[0].recv(1) == b""  # the oldest was closed for it
            idle[3].settimeout(0.3)
            with pytest.raises(TimeoutError):
                idle[3].recv(1)  # the newest still waits
        finally:
            for conn in idle:
                conn.close()


def test_plain_http_on_the_tls_port_is_told_to_use_https(server: SyncServer, ca: PrivateCA,
                                                          files: ServerFiles) -> None:
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(b"POST /sync/meta HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = b""
        while piece := conn.recv(4096):
            answer += piece
    assert answer.startswith(b"HTTP/1.1 400 ") and b"This port speaks HTTPS" in answer
    assert "plain HTTP from 127.0.0.1 on the HTTPS port" in server.log_text()
    assert served_fingerprint(server.port, ca) == files.fingerprint


# -- renewal -----------------------------------------------------------------------------------
def test_renewed_certificate_is_served_to_new_connections_and_open_ones_go_on(
        server: SyncServer, ca: PrivateCA, files: ServerFiles, tmp_path: Path) -> None:
    port = server.port
    assert port is not None and server.pid is not None
    body = zstandard.ZstdCompressor().compress(b'{"v":11,"cv":"test"}')
    old = tls_connect(port, client_context(ca))
    try:
        old.sendall(meta_head() + b"5\r\n%s\r\n" % body[:5])  # a request under way
        renewed = renew(ca, files, tmp_path / "new")
        os.kill(server.pid, signal.SIGHUP)
        _wait_for(lambda: served_fingerprint(port, ca) == renewed.fingerprint)
        old.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 5, body[5:]))
        assert read_response(old).startswith(b"HTTP/1.1 200 ")
        old_der = old.getpeercert(binary_form=True)
        assert old_der is not None and hashlib.sha256(old_der).digest() == files.fingerprint
    finally:
        old.close()
    assert "TLS certificate renewed" in server.log_text()


def test_renewal_is_noticed_without_a_signal(server: SyncServer, ca: PrivateCA, files: ServerFiles,
                                             tmp_path: Path) -> None:
    assert server.port is not None
    renewed = renew(ca, files, tmp_path / "new")
    _wait_for(lambda: served_fingerprint(server.port, ca) == renewed.fingerprint, timeout=15)  # type: ignore[arg-type]


def test_unusable_renewal_keeps_the_previous_certificate(server: SyncServer, ca: PrivateCA, files: ServerFiles,
                                                         tmp_path: Path) -> None:
    assert server.port is not None and server.pid is not None
    other = ca.issue(tmp_path / "other", ["localhost"], ips=["127.0.0.1"])
    os.replace(other.key, files.key)  # half a renewal: the new key, the old certificate
    os.kill(server.pid, signal.SIGHUP)
    _wait_for(lambda: "not renewed" in server.log_text())
    assert "ANKIHOST_TLS_KEY" in server.log_text()
    assert served_fingerprint(server.port, ca) == files.fingerprint


def test_syncs_go_on_while_the_certificate_is_renewed_again_and_again(
        server: SyncServer, ca: PrivateCA, files: ServerFiles, tmp_path: Path, clients: dict[str, SyncClient],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.pem_path))
    assert server.pid is not None and server.port is not None
    a = clients["a"] = SyncClient(server, USER, PASSWORD, name="a")
    b = clients["b"] = SyncClient(server, USER, PASSWORD, name="b")
    _add_notes(a, 200)
    a.sync(on_conflict="upload")
    stop = threading.Event()
    renewals = []

    def keep_renewing() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            renewals.append(renew(ca, files, tmp_path / f"r{n}"))
            os.kill(server.pid, signal.SIGHUP)  # type: ignore[arg-type]
            time.sleep(0.02)

    renewer = threading.Thread(target=keep_renewing)
    renewer.start()
    try:
        _wait_for(lambda: len(renewals) >= 1)
        for round_ in range(4):
            _add_notes(a, 50)
            assert a.sync().action == "normal"
            assert b.sync().action == ("download" if round_ == 0 else "normal")
    finally:
        stop.set()
        renewer.join()
    assert a.col.note_count() == b.col.note_count() == 400
    assert len(renewals) >= 3 and server.log_text().count("TLS certificate renewed") >= 3


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout} s")


# -- bad files stop start-up -------------------------------------------------------------------
def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "ANKIHOST_", "PASSWORDS"))}
    return subprocess.run([sys.executable, "-m", "ankihost"], capture_output=True, text=True, timeout=60,
                          env={**clean, "SYNC_USER1": "a:b", "SYNC_HOST": "127.0.0.1",
                               "SYNC_PORT": str(free_port()), **env})


def _bad_files(case: str, ca: PrivateCA, files: ServerFiles, tmp: Path) -> tuple[dict[str, str], str, str]:
    """(environment, setting named, words in the message) for one kind of bad input."""
    cert, key = str(files.cert), str(files.key)
    if case == "missing cert file":
        return {"ANKIHOST_TLS_CERT": str(tmp / "nope.pem"), "ANKIHOST_TLS_KEY": key}, "ANKIHOST_TLS_CERT", "cannot read"
    if case == "unreadable key (a folder)":
        return {"ANKIHOST_TLS_CERT": cert, "ANKIHOST_TLS_KEY": str(tmp)}, "ANKIHOST_TLS_KEY", "cannot read"
    if case == "cert not PEM":
        (tmp / "der.crt").write_bytes(files.certificate.public_bytes(__import__(
            "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER))
        return {"ANKIHOST_TLS_CERT": str(tmp / "der.crt"), "ANKIHOST_TLS_KEY": key}, "ANKIHOST_TLS_CERT", "PEM"
    if case == "key not PEM":
        return {"ANKIHOST_TLS_CERT": cert, "ANKIHOST_TLS_KEY": cert}, "ANKIHOST_TLS_KEY", "private key"
    if case == "key of another certificate":
        other = ca.issue(tmp / "other", ["localhost"])
        return {"ANKIHOST_TLS_CERT": cert, "ANKIHOST_TLS_KEY": str(other.key)}, "ANKIHOST_TLS_KEY", "does not belong"
    if case == "key with a passphrase":
        locked = ca.issue(tmp / "locked", ["localhost"], passphrase=b"secret")
        return locked.env(), "ANKIHOST_TLS_KEY", "passphrase"
    if case == "expired certificate":
        return ca.issue(tmp / "old", ["localhost"], days=-1).env(), "ANKIHOST_TLS_CERT", "expired"
    if case == "key setting missing":
        return {"ANKIHOST_TLS_CERT": cert}, "ANKIHOST_TLS_KEY", "not set"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "missing cert file", "unreadable key (a folder)", "cert not PEM", "key not PEM",
    "key of another certificate", "key with a passphrase", "expired certificate", "key setting missing",
])
def test_bad_tls_files_stop_start_up_naming_the_setting(case: str, ca: PrivateCA, files: ServerFiles,
                                                        tmp_path: Path) -> None:
    env, setting, words = _bad_files(case, ca, files, tmp_path)
    result = _start({"SYNC_BASE": str(tmp_path / "base"), **env})
    assert result.returncode == 1, result.stderr
    assert "configuration error" in result.stderr and setting in result.stderr, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert "listening" not in result.stderr


def test_the_documented_recipe_with_ankihost_tls_self_signed(tmp_path: Path, clients: dict[str, SyncClient],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README tells a user: `ankihost tls self-signed`, then ANKIHOST_TLS_CERT/KEY from
    its folder; the desktop client on Linux trusts the CA through SSL_CERT_FILE; the health
    check answers over HTTPS."""
    out = tmp_path / "tls"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    made = subprocess.run([sys.executable, "-m", "ankihost", "tls", "self-signed", "--host", "localhost",
                           "--ip", "127.0.0.1", "--out", str(out)], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "SSL_CERT_FILE" in made.stdout  # how the Linux desktop app trusts the CA
    tls_env = {"ANKIHOST_TLS_CERT": str(out / "server.crt"), "ANKIHOST_TLS_KEY": str(out / "server.key")}
    with SyncServer("ankihost", users=[(USER, PASSWORD)], env=tls_env, tls_ca=out / "ca.crt") as server:
        with server.log_on_failure():
            monkeypatch.setenv("SSL_CERT_FILE", str(out / "ca.crt"))
            a = clients["a"] = SyncClient(server, USER, PASSWORD, name="a")
            b = clients["b"] = SyncClient(server, USER, PASSWORD, name="b")
            _add_notes(a, 10)
            assert a.sync(on_conflict="upload").action == "upload"
            assert b.sync().action == "download"
            _add_notes(b, 2)
            assert b.sync().action == "normal" and a.sync().action == "normal"
            assert a.col.note_count() == b.col.note_count() == 12
            check = subprocess.run([sys.executable, "-m", "ankihost", "healthcheck"],
                                   env={**server.environment()}, capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
            assert "https://127.0.0.1" in check.stdout
