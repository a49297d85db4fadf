"""End-to-end: media one device deleted comes back from the server's trash on every device.

Real ankihost process, real Anki client (`Collection.sync_media`), the admin command run as an
admin would run it (`python -m ankihost media …`), against the running server (over its admin
channel) and with the server stopped (in process, under the data-folder lock).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tests.support.client import SyncClient
from tests.support.media_files import write_media
from tests.support.server import REPO_ROOT, SyncServer

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "trash pw"
USERS = [(USER, PASSWORD)]
CLI_TIMEOUT_SECONDS = 120

INITIAL = {
    "cat.jpg": b"\xff\xd8 a cat " * 300,
    "dog.jpg": b"\xff\xd8 a dog " * 300,
    "ünïcödé sound.mp3": b"\xff\xfb" * 700,
    "notes.txt": b"stays",
}


def _client(clients: dict[str, SyncClient], name: str, server: SyncServer) -> SyncClient:
    clients[name] = SyncClient(server, USER, PASSWORD, name=name)
    clients[name].login()
    return clients[name]


def _media(client: SyncClient) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest()
            for p in client.media_dir.iterdir() if p.is_file()}


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha1(data).hexdigest() for name, data in files.items()}


def ankihost(server: SyncServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m ankihost ARGS` with the server's environment, as an admin runs it."""
    env = server.environment()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "ankihost", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS, check=False)


def _trash(server: SyncServer) -> dict[str, object]:
    listed = ankihost(server, "media", "trash", USER, "--json")
    assert listed.returncode == 0, listed.stderr
    result: dict[str, object] = json.loads(listed.stdout)
    return result


def test_media_deleted_on_one_device_is_restored_to_every_device(
    clients: dict[str, SyncClient],
) -> None:
    with SyncServer("ankihost", USERS) as server, server.log_on_failure():
        a = _client(clients, "A", server)
        write_media(a.media_dir, INITIAL)
        a.sync_media()
        b = _client(clients, "B", server)
        b.sync_media()
        assert _media(b) == _digests(INITIAL)

        # A's user wipes two files and changes a third; B syncs and loses them too.
        write_media(a.media_dir, {"cat.jpg": None, "ünïcödé sound.mp3": None,
                                  "dog.jpg": b"\xff\xd8 another dog"})
        a.sync_media()
        b.sync_media()
        assert set(_media(b)) == {"dog.jpg", "notes.txt"}

        listed = _trash(server)
        files = listed["files"]
        assert isinstance(files, list)
        assert sorted((f["file"], f["sha1"], f["size"]) for f in files) == sorted(
            (name, hashlib.sha1(INITIAL[name]).hexdigest(), len(INITIAL[name]))
            for name in ("cat.jpg", "ünïcödé sound.mp3", "dog.jpg"))
        assert listed["days"] == 30

        restored = ankihost(server, "media", "restore", USER, "cat.jpg", "ünïcödé sound.mp3")
        assert restored.returncode == 0, restored.stderr
        assert "restored 2 file(s)" in restored.stdout

        expected = {**_digests(INITIAL), "dog.jpg": hashlib.sha1(b"\xff\xd8 another dog").hexdigest()}
        for device in (a, b):
            device.sync_media()
            assert _media(device) == expected
        c = _client(clients, "C", server)  # a new device gets them too
        c.sync_media()
        assert _media(c) == expected
        # Only the replaced dog.jpg is left in the trash; nothing counts toward a quota.
        assert [f["file"] for f in _trash(server)["files"]] == ["dog.jpg"]  # type: ignore[index]


def test_a_restore_over_other_content_or_of_an_unknown_file_is_refused(
    clients: dict[str, SyncClient],
) -> None:
    with SyncServer("ankihost", USERS) as server, server.log_on_failure():
        a = _client(clients, "A", server)
        write_media(a.media_dir, INITIAL)
        a.sync_media()
        write_media(a.media_dir, {"cat.jpg": None})
        a.sync_media()
        write_media(a.media_dir, {"cat.jpg": b"\xff\xd8 a new cat"})  # the name taken again
        a.sync_media()
        before = (_trash(server), a.sync(on_conflict="upload").server_media_usn)

        refused = ankihost(server, "media", "restore", USER, "cat.jpg")
        assert refused.returncode == 1
        assert "nothing was restored" in refused.stderr
        assert "another file under this name" in refused.stderr

        unknown = ankihost(server, "media", "restore", USER, "notes.txt", "never.png")
        assert unknown.returncode == 1
        assert "'never.png': is not in the trash" in unknown.stderr
        assert "'notes.txt': is not in the trash" in unknown.stderr

        no_user = ankihost(server, "media", "trash", "nobody")
        assert no_user.returncode == 1 and "there is no user 'nobody'" in no_user.stderr

        assert (_trash(server), a.sync(on_conflict="upload").server_media_usn) == before
        b = _client(clients, "B", server)
        b.sync_media()
        assert _media(b)["cat.jpg"] == hashlib.sha1(b"\xff\xd8 a new cat").hexdigest()


def test_the_commands_work_with_the_server_stopped(clients: dict[str, SyncClient]) -> None:
    with SyncServer("ankihost", USERS) as server, server.log_on_failure():
        a = _client(clients, "A", server)
        write_media(a.media_dir, INITIAL)
        a.sync_media()
        write_media(a.media_dir, {"dog.jpg": None})
        a.sync_media()
        server.stop()
        assert [f["file"] for f in _trash(server)["files"]] == ["dog.jpg"]  # type: ignore[index]
        table = ankihost(server, "media", "trash", USER)
        assert table.returncode == 0, table.stderr
        header, row = table.stdout.splitlines()[:2]
        assert header.split()[:2] == ["FILE", "SIZE"] and row.startswith("dog.jpg ")
        assert hashlib.sha1(INITIAL["dog.jpg"]).hexdigest() in row
        assert "1 file(s)" in table.stdout and "counts toward no quota" in table.stdout
        restored = ankihost(server, "media", "restore", USER, "dog.jpg")
        assert restored.returncode == 0, restored.stderr
        empty = ankihost(server, "media", "trash", USER)
        assert "the media trash of alice is empty (the trash is kept 30 days)" in empty.stdout
        server.start()
        a.sync_media()
        assert _media(a) == _digests(INITIAL)
