"""Hostile headers and log injection against a real ankihost process (issue #15, attacks 2-3).

Without logging in, a client sends huge headers, thousands of header fields, and `anki-sync`
headers whose client version is long or holds line breaks. Each is refused or logged as one
short line, at once, while another user's `meta` requests and a real client's sync go on, and
nothing the client sends can start a line of its own in the server's log.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.support.client import SyncClient
from tests.support.raw_wire import MetaLoop, login, post, zstd
from tests.support.server import SyncServer, health_ok

pytestmark = pytest.mark.abuse

USERS = [("victim", "victim-pw"), ("carol", "carol-pw")]
FORGED = "2026-01-01 00:00:00,000 INFO ankihost.request: POST /sync/upload user=admin status=200"
# Another user's worst wait meanwhile (the target is "no measurable stall"; room for a loaded
# test machine).
VICTIM_WORST_MS = 1500
# What one refused request may add to the log, at most.
LOG_BYTES_PER_REQUEST = 1024


@pytest.fixture(scope="module")
def server() -> Iterator[SyncServer]:
    with SyncServer("ankihost", USERS) as srv, srv.log_on_failure():
        yield srv


def _raw(port: int, head: bytes, body_chunks: Iterator[bytes] | None = None) -> bytes:
    """Send `head` (and chunks) on a raw socket; the first line of the answer, or b""."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
            for chunk in body_chunks or ():
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished sending: what we want
        try:
            return sock.recv(4096).split(b"\r\n", 1)[0]
        except ConnectionResetError:
            return b""


def test_huge_and_many_headers_are_refused_at_once_while_others_sync(server: SyncServer) -> None:
    port = server.port
    assert port is not None
    victim = MetaLoop(port, login(port, "victim", "victim-pw"))
    victim.start()
    try:
        started = time.monotonic()
        big = b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n"
        assert _raw(port, big).startswith(b"HTTP/1.1 431")
        many = b"POST /sync/meta HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-%d: y\r\n" % i for i in range(200_000)) + b"\r\n"
        assert _raw(port, many).startswith(b"HTTP/1.1 431")
        line = b"GET /" + b"a" * (16 << 20) + b" HTTP/1.1\r\n\r\n"
        assert _raw(port, line).startswith(b"HTTP/1.1 414")
        finished = time.monotonic()
        assert finished - started < 10
        time.sleep(0.2)  # a few more of the victim's requests after the attacks
        worst_ms, failed, seen = victim.during(started, time.monotonic())
    finally:
        victim.stop()
    assert failed == 0 and seen > 0 and worst_ms < VICTIM_WORST_MS, (worst_ms, failed, seen, victim.failures)
    assert health_ok(port)


def test_client_supplied_text_cannot_forge_or_flood_log_lines(server: SyncServer, tmp_path) -> None:
    port = server.port
    assert port is not None
    before = len(server.log_text().encode())
    versions = ["x" * 30_000, f"26.09.3\n{FORGED}", f"a\rb\x1b[31m{FORGED}"]
    for version in versions * 3:
        status, _ = post(port, "meta", zstd(orjson.dumps({"v": 11})), hkey="not-a-key", client=version)
        assert status == 403
    for name in (f"victim\n{FORGED}", f"v\u2028{FORGED}", "y" * 20_000):
        status, _ = post(port, "hostKey", zstd(orjson.dumps({"u": name, "p": "x"})))
        assert status == 403
    deadline = time.monotonic() + 10
    while len(server.log_text().encode()) - before < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    added = server.log_text().encode()[before:]
    assert len(added) < LOG_BYTES_PER_REQUEST * (len(versions) * 3 + 3) * 3  # request + audit lines
    lines = added.decode().splitlines()
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) ankihost")
    assert lines and all(stamp.match(line) and not line.startswith("2026-01-01") for line in lines), lines
    assert all(len(line) < 2 * LOG_BYTES_PER_REQUEST for line in lines)
    # and the server serves a real client afterwards
    client = SyncClient(server, "carol", "carol-pw", folder=tmp_path / "carol")
    try:
        client.login()
        assert client.sync().action in ("normal", "upload", "download", "none")
    finally:
        client.cleanup()


def test_an_endless_upload_that_is_not_zstd_is_refused_after_its_first_bytes(server: SyncServer) -> None:
    """An endless chunked upload of garbage: refused at once, nothing kept on disk, and the
    connection let go long before the upload limit (3 x MAX_SYNC_PAYLOAD_MEGS)."""
    port = server.port
    assert port is not None
    key = login(port, "carol", "carol-pw")
    header = orjson.dumps({"v": 11, "k": key, "c": "test", "s": "u"}).decode()
    head = (f"POST /sync/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"anki-sync: {header}\r\n\r\n").encode()
    piece = bytes(range(256)) * 4096  # 1 MiB, not a zstd frame
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(200):
            sent += len(piece)
            yield b"%x\r\n" % len(piece) + piece + b"\r\n"

    assert _raw(port, head, chunks()).startswith(b"HTTP/1.1 400")
    assert sent <= 16 << 20  # the server stopped reading long before 200 MiB
    leftovers = [p for p in (server.base / "carol").glob(".upload-*")] if (server.base / "carol").exists() else []
    assert leftovers == []
    assert health_ok(port)
