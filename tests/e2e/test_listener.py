"""The listener's limits, timeouts, connection cap and shutdown, on a real `python -m ankihost`
process with real sockets (timeouts set low through their ANKIHOST_… settings)."""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest
import zstandard

from tests.support.server import SyncServer, free_port

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "listener pw"
HOST_KEY = hashlib.sha1(f"{USER}:{PASSWORD}".encode()).hexdigest()
META_BODY = zstandard.ZstdCompressor().compress(b'{"v":11,"cv":"test"}')
FAST = {"ANKIHOST_HEADER_TIMEOUT": "2", "ANKIHOST_KEEPALIVE_TIMEOUT": "2", "ANKIHOST_BODY_IDLE_TIMEOUT": "5"}


@pytest.fixture(scope="module")
def server() -> Iterator[SyncServer]:
    with SyncServer("ankihost", users=[(USER, PASSWORD)], env=FAST) as srv:
        yield srv


def connect(server: SyncServer, timeout: float = 10) -> socket.socket:
    assert server.port is not None
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def meta_head(chunked: bool = True) -> bytes:
    header = orjson.dumps({"v": 11, "k": HOST_KEY, "c": "test,1,linux", "s": "lim1"})
    framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % len(META_BODY)
    return b"POST /sync/meta HTTP/1.1\r\nhost: x\r\nanki-sync: " + header + b"\r\n" + framing + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


_unread: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(conn: socket.socket) -> tuple[int, bytes, bytes]:
    """(status, head, body) of the next response on `conn` (with a Content-Length)."""
    data = _unread.pop(conn, b"")
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            raise ConnectionError(f"closed after {data[:200]!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    _unread[conn] = body[length:]
    return int(head.split(b" ", 2)[1]), head, body[:length]


def closed_within(conn: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `conn` (reading and dropping what it sends)."""
    started = time.monotonic()
    conn.settimeout(seconds)
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return float("inf")
    return time.monotonic() - started


def meta_status(server: SyncServer) -> int:
    with connect(server) as conn:
        conn.sendall(meta_head() + chunk(META_BODY) + LAST_CHUNK)
        return read_response(conn)[0]


# -- request line and head limits -------------------------------------------------------------
def test_long_request_target_is_414_before_the_line_ends(server: SyncServer) -> None:
    with connect(server) as conn:
        conn.sendall(b"POST /sync/" + b"a" * 20_000)  # no end of line: nothing else is read
        status, head, _ = read_response(conn)
        assert status == 414 and b"connection: close" in head
    assert meta_status(server) == 200


def test_large_header_is_431_before_the_head_ends(server: SyncServer) -> None:
    with connect(server) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000)
        assert read_response(conn)[0] == 431
    assert meta_status(server) == 200


def test_a_64_mib_header_is_refused_at_once_without_reading_it(server: SyncServer) -> None:
    piece, sent = b"a" * 65536, 0
    started = time.monotonic()
    with connect(server) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nx-huge: ")
        try:
            while sent < 64 * 1024 * 1024:
                conn.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        refused_after = time.monotonic() - started
        try:
            status = read_response(conn)[0]
        except (ConnectionError, OSError):
            status = 431  # reset before the answer could be read: the refusal raced the upload
    assert status == 431
    assert sent < 16 * 1024 * 1024 and refused_after < 2, (sent, refused_after)
    assert meta_status(server) == 200


def test_too_many_header_fields_is_431(server: SyncServer) -> None:
    fields = b"".join(b"x-h%d: 1\r\n" % i for i in range(150))
    with connect(server) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n" + fields + b"\r\n")
        assert read_response(conn)[0] == 431
    with connect(server) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n" + fields[: 90 * 9] + b"\r\n")
        assert read_response(conn)[0] == 200


def test_malformed_request_is_400(server: SyncServer) -> None:
    with connect(server) as conn:
        conn.sendall(b"POST /sync/meta HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n")
        assert read_response(conn)[0] == 400


# -- timeouts ----------------------------------------------------------------------------------
def test_head_not_complete_in_time_is_408(server: SyncServer) -> None:
    with connect(server) as conn:
        conn.sendall(b"POST /sync/meta HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        status, _, _ = read_response(conn)
        assert status == 408 and 1.5 < time.monotonic() - started < 5


def test_silent_connection_is_closed_after_the_header_timeout(server: SyncServer) -> None:
    with connect(server) as conn:
        assert 1.5 < closed_within(conn, 8) < 5


def test_keep_alive_connection_is_reused_then_closed_when_idle(server: SyncServer) -> None:
    with connect(server) as conn:
        for _ in range(3):
            conn.sendall(meta_head() + chunk(META_BODY) + LAST_CHUNK)
            assert read_response(conn)[0] == 200
            time.sleep(0.5)
        assert 1.0 < closed_within(conn, 8) < 4.5


def test_stalled_body_times_out_while_a_slow_body_is_served(server: SyncServer) -> None:
    results: dict[str, object] = {}

    def slow() -> None:  # one byte a second, for longer than the idle timeout in total
        with connect(server) as conn:
            conn.sendall(meta_head())
            for byte in META_BODY[:8]:
                conn.sendall(chunk(bytes([byte])))
                time.sleep(1)
            conn.sendall(chunk(META_BODY[8:]) + LAST_CHUNK)
            results["slow"] = read_response(conn)[0]

    thread = threading.Thread(target=slow)
    thread.start()
    with connect(server) as conn:
        conn.sendall(meta_head() + chunk(META_BODY[:4]))
        started = time.monotonic()
        status, _, _ = read_response(conn)
        results["stalled"], results["after"] = status, time.monotonic() - started
    thread.join()
    assert results["stalled"] == 408 and 4.5 < results["after"] < 8  # type: ignore[operator]
    assert results["slow"] == 200


def test_a_reply_sent_before_the_whole_body_leaves_the_connection_usable() -> None:
    """An upload refused as too large part-way: the client reads the refusal (the rest of the
    body is read and dropped, not reset) and its next request on the connection is served."""
    env = {"MAX_SYNC_PAYLOAD_MEGS": "1"}  # uploads up to 3 MiB
    with SyncServer("ankihost", users=[(USER, PASSWORD)], env=env) as server, connect(server) as conn:
        head = meta_head().replace(b"/sync/meta", b"/sync/upload")
        piece = bytes(range(256)) * 256  # 64 KiB
        magic = bytes.fromhex("28b52ffd")  # starts as a zstd frame: refused for its size, not its kind
        conn.sendall(head + chunk(magic) + b"".join(chunk(piece) for _ in range(56)) + LAST_CHUNK)  # 3.5 MiB
        status, _, body = read_response(conn)
        answer = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        assert status == 200 and b"exceeds size limit" in answer
        conn.sendall(meta_head() + chunk(META_BODY) + LAST_CHUNK)
        assert read_response(conn)[0] == 200


# -- pipelining and HTTP/1.0 ---------------------------------------------------------------------
def test_pipelined_requests_are_answered_in_order(server: SyncServer) -> None:
    with connect(server) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n" + meta_head(chunked=False) + META_BODY
                     + b"GET /nothing HTTP/1.1\r\nhost: x\r\n\r\n")
        assert [read_response(conn)[0] for _ in range(3)] == [200, 200, 404]


def test_http_1_0_request_is_answered_and_closed(server: SyncServer) -> None:
    with connect(server) as conn:
        conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        status, head, _ = read_response(conn)
        assert status == 200 and b"connection: close" in head.lower()
        assert closed_within(conn, 3) < 1


LOW_SOFT_LIMIT_THEN_ANKIHOST = (
    "import os, resource, sys; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); "
    "os.execv(sys.executable, [sys.executable, '-m', 'ankihost'])"
)


def test_expect_100_continue_is_answered_before_the_body(server: SyncServer) -> None:
    head = meta_head(chunked=False).replace(b"\r\n\r\n", b"\r\nexpect: 100-continue\r\n\r\n")
    with connect(server) as conn:
        conn.sendall(head)
        assert conn.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(META_BODY)
        assert read_response(conn)[0] == 200


def test_head_then_get_on_one_connection(server: SyncServer) -> None:
    with connect(server) as conn:
        conn.sendall(b"HEAD /health HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        first, second = read_response(conn), read_response(conn)
        assert first[0] == 200 and first[2] == b"" and second[0] == 200


STREAMING_APP = """
import sys
from ankihost.web import listener

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part two", "more_body": False})

listener.run(app, "127.0.0.1", int(sys.argv[1]), listener.ListenerLimits(),
             on_listening=lambda url: print(url, flush=True))
"""


def test_a_head_of_a_streamed_response_has_no_body_not_even_the_last_chunk() -> None:
    """A reply of unknown length is sent chunked; to HEAD only its head, so the next response
    on the connection starts where the client expects it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", STREAMING_APP, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().startswith("http://")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"0\r\n\r\n") or data.count(b"HTTP/1.1 200") < 2:
                piece = conn.recv(65536)
                assert piece, data
                data += piece
        head, rest = data.split(b"\r\n\r\n", 1)
        assert b"transfer-encoding: chunked" in head.lower()
        assert rest.startswith(b"HTTP/1.1 200 ")  # nothing between the HEAD's head and the next response
        assert rest.split(b"\r\n\r\n", 1)[1] == b"a\r\npart one, \r\n8\r\npart two\r\n0\r\n\r\n"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


FAILING_START = """
import sys
from ankihost.web import listener

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        raise OSError("the admin channel's socket cannot be made")

listener.run(app, "127.0.0.1", int(sys.argv[1]), listener.ListenerLimits(),
             on_listening=lambda url: print("listening", url, flush=True))
"""


def test_an_app_that_fails_to_start_stops_the_server_before_it_listens() -> None:
    port = free_port()
    done = subprocess.run([sys.executable, "-c", FAILING_START, str(port)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "listening" not in done.stdout
    assert "the admin channel's socket cannot be made" in done.stderr


def test_file_descriptor_soft_limit_is_raised_to_the_hard_limit() -> None:
    command = [sys.executable, "-c", LOW_SOFT_LIMIT_THEN_ANKIHOST]
    with SyncServer("ankihost", users=[(USER, PASSWORD)], command=command) as server:
        limits = Path(f"/proc/{server.pid}/limits").read_text()
        log = server.log_text()
    soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
    assert int(hard) > 256 and soft == hard
    assert f"open-file limit raised from 256 to {hard}" in log


# -- the connection cap ------------------------------------------------------------------------------
def test_connections_over_the_cap_get_503_and_a_request_is_served_after() -> None:
    with SyncServer("ankihost", users=[(USER, PASSWORD)], env={"ANKIHOST_MAX_CONNECTIONS": "4"}) as server:
        with ExitStack() as stack:
            busy = [stack.enter_context(connect(server)) for _ in range(4)]
            for conn in busy:  # each in the middle of a request: not to be closed for others
                conn.sendall(meta_head() + chunk(META_BODY[:3]))
            time.sleep(1.5)
            with connect(server) as extra:
                status, head, _ = read_response(extra)
                assert status == 503 and b"connection: close" in head
            busy[0].sendall(chunk(META_BODY[3:]) + LAST_CHUNK)
            assert read_response(busy[0])[0] == 200
            busy.pop(0).close()
            assert meta_status(server) == 200
        time.sleep(1.2)  # refusals are logged once a second, as a count
        assert "1 connection(s) refused with 503" in server.log_text()


def test_idle_connections_make_room_for_new_ones() -> None:
    with SyncServer("ankihost", users=[(USER, PASSWORD)], env={"ANKIHOST_MAX_CONNECTIONS": "4"}) as server:
        with ExitStack() as stack:
            idle = [stack.enter_context(connect(server)) for _ in range(4)]
            for _ in range(3):  # at once: the oldest waiting connections make room
                assert meta_status(server) == 200
            assert closed_within(idle[0], 0.2) < 0.2  # the oldest
            assert closed_within(idle[3], 0.2) == float("inf")


def test_a_flood_of_idle_connections_leaves_syncing_unaffected() -> None:
    """2,000 idle connections, twice the default cap: requests are served at once, while the
    flood is opened and right after."""
    with SyncServer("ankihost", users=[(USER, PASSWORD)]) as server, ExitStack() as stack:
        flood = []
        for index in range(2000):
            try:
                flood.append(stack.enter_context(connect(server)))
            except OSError:
                break
            if index % 250 == 249:
                assert meta_status(server) == 200
        slowest = 0.0
        for _ in range(20):
            started = time.monotonic()
            assert meta_status(server) == 200
            slowest = max(slowest, time.monotonic() - started)
        assert len(flood) == 2000 and slowest < 0.5


# -- shutdown ---------------------------------------------------------------------------------------
def test_sigterm_lets_a_request_under_way_finish_then_exits() -> None:
    server = SyncServer("ankihost", users=[(USER, PASSWORD)], env={"ANKIHOST_SHUTDOWN_GRACE": "10"})
    with server:
        assert server.proc is not None
        conn = connect(server)
        conn.sendall(meta_head() + chunk(META_BODY[:3]))
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):
            connect(server, timeout=2).close()  # no longer accepting
        conn.sendall(chunk(META_BODY[3:]) + LAST_CHUNK)
        status, head, _ = read_response(conn)
        assert status == 200 and b"connection: close" in head
        conn.close()
        assert server.proc.wait(timeout=10) == 0
        assert "shutdown complete" in server.log_text() and "Traceback" not in server.log_text()


def test_sigterm_cuts_off_a_request_still_running_after_the_grace_period() -> None:
    server = SyncServer("ankihost", users=[(USER, PASSWORD)], env={"ANKIHOST_SHUTDOWN_GRACE": "1"})
    with server:
        assert server.proc is not None
        with connect(server) as conn:
            conn.sendall(meta_head() + chunk(META_BODY[:3]))
            time.sleep(0.3)
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 4
            assert closed_within(conn, 2) < 1
        assert "still running after 1 s" in server.log_text()


# -- settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "value"), [
    ("ANKIHOST_MAX_CONNECTIONS", "0"), ("ANKIHOST_MAX_CONNECTIONS", "many"),
    ("ANKIHOST_HEADER_TIMEOUT", "soon"), ("ANKIHOST_BODY_IDLE_TIMEOUT", "1"),
    ("ANKIHOST_KEEPALIVE_TIMEOUT", "-5"), ("ANKIHOST_SHUTDOWN_GRACE", "1e9"),
])
def test_bad_limit_settings_stop_start_up(tmp_path: object, name: str, value: str) -> None:
    env = {"SYNC_USER1": "a:b", "SYNC_BASE": str(tmp_path), "SYNC_HOST": "127.0.0.1",
           "SYNC_PORT": str(free_port()), name: value, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "ankihost"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "configuration error" in result.stderr and name in result.stderr and "Traceback" not in result.stderr
