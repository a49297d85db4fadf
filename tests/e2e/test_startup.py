"""Start-up of the real `python -m ankihost` process: bad settings stop it, naming the variable."""

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e


def start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SYNC_", "PASSWORDS_HASHED", "MAX_SYNC"))}
    return subprocess.run([sys.executable, "-m", "ankihost", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "SYNC_USER1"),
        ({"SYNC_USER1": "nocolon"}, "SYNC_USER1"),
        ({"SYNC_USER1": "a:b", "SYNC_USER2": "../x:y"}, "SYNC_USER2"),
        ({"SYNC_USER1": "a:b", "SYNC_PORT": "http"}, "SYNC_PORT"),
        ({"SYNC_USER1": "a:b", "SYNC_HOST": "localhost"}, "SYNC_HOST"),
        ({"SYNC_USER1": "a:b", "MAX_SYNC_PAYLOAD_MEGS": "lots"}, "MAX_SYNC_PAYLOAD_MEGS"),
        ({"SYNC_USER1": "a:b", "SYNC_IP_HEADER": "x-real-ip"}, "SYNC_IP_HEADER"),
        ({"SYNC_USER1": "a:$pbkdf2-sha256$broken", "PASSWORDS_HASHED": "1"}, "SYNC_USER1"),
    ],
)
def test_bad_configuration_stops_start_up(tmp_path, env, variable):
    result = start({"SYNC_BASE": str(tmp_path), "SYNC_HOST": "127.0.0.1", "SYNC_PORT": "0", **env})
    assert result.returncode == 1
    assert variable in result.stderr and "configuration error" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_are_not_echoed(tmp_path):
    result = start({"SYNC_BASE": str(tmp_path), "SYNC_USER1": "a:topsecret", "SYNC_PORT": "x"})
    assert result.returncode == 1 and "topsecret" not in result.stderr + result.stdout


def test_help_lists_every_variable():
    result = start({}, "--help")
    assert result.returncode == 0
    for name in ("SYNC_USER1", "PASSWORDS_HASHED", "SYNC_BASE", "SYNC_HOST", "SYNC_PORT",
                 "MAX_SYNC_PAYLOAD_MEGS", "SYNC_IP_HEADER", "hash-password"):
        assert name in result.stdout


def test_sigterm_mid_sync_rolls_back_and_exits_cleanly(client_collection, tmp_path):
    """A server stopped (SIGTERM) during a normal sync ends the session with a rollback,
    shuts down cleanly, and the next start serves the collection as it was."""
    import hashlib
    import sqlite3

    import httpx2
    import orjson
    import zstandard

    from tests.support.server import SyncServer

    key = hashlib.sha1(b"alice:pw").hexdigest()

    def post(server: SyncServer, method: str, payload: bytes, session: str = "s1") -> bytes:
        header = orjson.dumps({"v": 11, "k": key, "c": "test", "s": session}).decode()
        response = httpx2.post(f"{server.endpoint}sync/{method}", headers={"anki-sync": header},
                               content=zstandard.ZstdCompressor().compress(payload), timeout=30)
        assert response.status_code == 200, (method, response.status_code)
        return zstandard.ZstdDecompressor().decompressobj().decompress(response.content)

    with SyncServer("ankihost", users=[("alice", "pw")]) as server:
        copy = tmp_path / "copy.anki2"
        copy.write_bytes(client_collection)
        card_ids = [row[0] for row in sqlite3.connect(copy).execute("select id from cards")]
        assert post(server, "upload", client_collection) == b"OK"
        meta = orjson.loads(post(server, "meta", b'{"v":11}'))
        post(server, "start", orjson.dumps({"minUsn": meta["usn"], "lnewer": True}))
        graves = {"cards": card_ids[:5], "notes": [], "decks": []}
        assert post(server, "applyGraves", orjson.dumps({"chunk": graves})) == b"null"
        # the listener shuts down gracefully (lifespan shutdown included) and exits with 0
        assert server.stop() == 0
        log = server.log_text()
        assert "shutdown complete" in log and "Traceback" not in log
        server.start()
        db = sqlite3.connect(server.base / "alice" / "collection.anki2")
        assert db.execute("select count() from cards").fetchone()[0] == len(card_ids)
        assert db.execute("select count() from graves").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("ip_header", "logged"),
    [
        (None, "127.0.0.1"),  # the default, ConnectInfo: the socket peer, whatever headers say
        ("RightmostXForwardedFor", "203.0.113.9"),
        ("XRealIp", "198.51.100.4"),
    ],
)
def test_the_logged_client_address_follows_sync_ip_header_only(ip_header, logged):
    """SYNC_IP_HEADER alone decides where the address in the request log comes from, as in
    the official server; headers a client sends are ignored unless it names one of them."""
    import httpx2

    from tests.support.server import SyncServer

    env = {"SYNC_IP_HEADER": ip_header} if ip_header else {}
    headers = {"X-Forwarded-For": "192.0.2.1, 203.0.113.9", "X-Real-IP": "198.51.100.4"}
    with SyncServer("ankihost", (("user", "pass"),), env=env) as server:
        response = httpx2.post(f"{server.endpoint}sync/meta", headers=headers, content=b"")
        assert response.status_code == 400  # no anki-sync header: still a logged request
        deadline = time.monotonic() + 10
        while not (lines := [x for x in server.log_text().splitlines() if "POST /sync/meta" in x]):
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
    assert lines[0].split(" ip=", 1)[1].split(" ", 1)[0] == logged, lines[0]
