"""Snapshots, restore, backup and export through the running server's admin channel (the app in
process, the channel a real Unix socket): what each does, that a restore never cuts a sync,
and that every refusal changes nothing."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from ankihost.admin import channel
from ankihost.admin.operations import AdminError
from ankihost.server import build
from ankihost.storage.paths import DataFolder
from tests.conftest import Wire, make_settings

NO_CHANGES = {"changes": {"models": [], "decks": [[], []], "tags": []}}


class Server:
    def __init__(self, http: TestClient, base: Path) -> None:
        self.wire = Wire(http)
        self.http = http
        self.base = base
        self.alice = base / "alice"

    def admin(self, op: str, progress: list[dict[str, Any]] | None = None, **args: Any) -> Any:
        return channel.call(DataFolder(self.base), op, args,
                            None if progress is None else progress.append)

    def notes(self) -> int:
        """How many notes the server's copy has (read through a full download)."""
        data = self.wire.payload(self.wire.post("download", {}))
        copy = self.base.parent / f"copy-{time.monotonic_ns()}.anki2"
        copy.write_bytes(data)
        return sqlite3.connect(copy).execute("select count() from notes").fetchone()[0]

    def meta(self) -> dict[str, Any]:
        return self.wire.json(self.wire.post("meta", {"v": 11, "cv": "test"}))


@pytest.fixture
def server(tmp_path: Path):
    base = tmp_path / "base"
    with TestClient(build(make_settings(base))) as http:
        yield Server(http, base)


def uploaded_twice(server: Server, first: bytes, second: bytes) -> str:
    """Upload `first`, then `second` over it; the id of the snapshot holding `first`."""
    assert server.wire.payload(server.wire.post("upload", first)) == b"OK"
    assert server.wire.payload(server.wire.post("upload", second)) == b"OK"
    [snapshot] = server.admin("snapshot.list", name="alice")["snapshots"]
    assert snapshot["reason"] == "upload" and snapshot["notes"] == 40
    return str(snapshot["id"])


def test_a_restore_brings_back_the_collection_and_makes_every_device_full_sync(
    server: Server, client_collection: bytes, fewer_notes: bytes
) -> None:
    id = uploaded_twice(server, client_collection, fewer_notes)
    before = server.meta()
    result = server.admin("snapshot.restore", name="alice", id=id)
    assert result["restored"] == id and result["notes"] == 40 and result["saved"]
    after = server.meta()
    assert after["scm"] != before["scm"] and after["mod"] != before["mod"]
    assert after["scm"] == after["mod"] and abs(after["mod"] - time.time() * 1000) < 60_000
    assert server.notes() == 40
    listed = server.admin("snapshot.list", name="alice")
    assert [(s["reason"], s["notes"]) for s in listed["snapshots"]] == [("upload", 40), ("restore", 30)]
    assert listed["snapshots"][1]["id"] == result["saved"]
    assert listed["disk_bytes"] == sum(s["file_bytes"] for s in listed["snapshots"])


def test_a_restore_waits_for_the_running_sync_and_never_cuts_it(
    server: Server, client_collection: bytes, fewer_notes: bytes
) -> None:
    id = uploaded_twice(server, client_collection, fewer_notes)
    wire = server.wire
    wire.post("meta", {"v": 11, "cv": "test"})
    assert wire.post("start", {"minUsn": 0, "lnewer": False, "graves": None}).status_code == 200
    events: list[dict[str, Any]] = []
    outcome: list[Any] = []
    restoring = threading.Thread(target=lambda: outcome.append(
        server.admin("snapshot.restore", events, name="alice", id=id)))
    restoring.start()
    try:
        time.sleep(1.5)
        assert restoring.is_alive() and outcome == []
        assert any("waiting for alice's sync to end" in e.get("message", "") for e in events)
        # the sync goes on to the end, every step answered
        assert wire.post("applyChanges", NO_CHANGES).status_code == 200
        while not wire.json(wire.post("chunk", {}))["done"]:
            pass
        assert wire.post("applyChunk", {"chunk": {"done": True}}).status_code == 200
        assert wire.post("finish", {}).status_code == 200
    finally:
        restoring.join(30)
    assert outcome and outcome[0]["restored"] == id
    assert server.notes() == 40


def test_other_users_are_not_held_up_by_a_waiting_restore(
    server: Server, client_collection: bytes, fewer_notes: bytes
) -> None:
    from tests.conftest import BOB_KEY

    id = uploaded_twice(server, client_collection, fewer_notes)
    server.wire.post("meta", {"v": 11, "cv": "test"})
    server.wire.post("start", {"minUsn": 0, "lnewer": False, "graves": None})
    restoring = threading.Thread(target=lambda: server.admin("snapshot.restore", name="alice", id=id))
    restoring.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        assert server.wire.payload(server.wire.post("upload", client_collection, key=BOB_KEY)) == b"OK"
        assert server.wire.json(server.wire.post("meta", {"v": 11}, key=BOB_KEY))["empty"] is False
        assert time.monotonic() - started < 5
        assert restoring.is_alive()
    finally:
        server.wire.post("abort", {})
        restoring.join(30)


def test_an_unknown_snapshot_changes_nothing(server: Server, client_collection: bytes, fewer_notes: bytes) -> None:
    uploaded_twice(server, client_collection, fewer_notes)
    before = server.meta()
    with pytest.raises(AdminError) as refused:
        server.admin("snapshot.restore", name="alice", id="20200101-000000")
    assert refused.value.status == 404 and "snapshot list alice" in refused.value.message
    assert server.meta() == before and len(server.admin("snapshot.list", name="alice")["snapshots"]) == 1
    with pytest.raises(AdminError, match="no user 'nobody'"):
        server.admin("snapshot.list", name="nobody")


def test_a_snapshot_that_fails_its_check_changes_nothing(
    server: Server, client_collection: bytes, fewer_notes: bytes
) -> None:
    id = uploaded_twice(server, client_collection, fewer_notes)
    [path] = (server.alice / "snapshots").iterdir()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    before = server.meta()
    with pytest.raises(AdminError, match=f"snapshot {id} is damaged.*nothing was changed"):
        server.admin("snapshot.restore", name="alice", id=id)
    assert server.meta() == before and server.notes() == 30
    assert sorted(p.name for p in (server.alice / "snapshots").iterdir()) == [path.name]
    assert not [p for p in server.alice.iterdir() if p.name.startswith(".")]


def test_a_snapshot_whose_collection_is_corrupt_changes_nothing(
    server: Server, client_collection: bytes, fewer_notes: bytes, tmp_path: Path
) -> None:
    """Intact as a zstd stream, but the collection inside fails SQLite's integrity check."""
    from ankihost.snapshots.shelf import UserSnapshots
    from ankihost.storage.paths import UserFolder

    uploaded_twice(server, client_collection, fewer_notes)
    broken = tmp_path / "broken.anki2"
    broken.write_bytes(client_collection)
    page = 4096
    data = bytearray(broken.read_bytes())
    data[5 * page:6 * page] = bytes(range(256)) * (page // 256)  # one page of garbage
    broken.write_bytes(bytes(data))
    shelf = UserSnapshots(UserFolder(server.alice))
    shelf.capture_file(broken, "upload")
    [made] = shelf.settle(None)
    before = server.meta()
    with pytest.raises(AdminError, match=f"snapshot {made.id} fails its check.*nothing was changed"):
        server.admin("snapshot.restore", name="alice", id=made.id)
    assert server.meta() == before and server.notes() == 30


def test_progress_lines_come_before_the_answer_and_only_when_asked(server: Server) -> None:
    def raw(request: dict[str, Any]) -> list[Any]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(server.base / ".ankihost/control.sock"))
            sock.sendall(orjson.dumps(request) + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return [orjson.loads(line) for line in data.splitlines()]

    dest = server.base.parent / "b.tar.zst"
    plain = raw({"op": "backup.create", "args": {"dest": str(dest)}})
    assert len(plain) == 1 and plain[0]["ok"] is True
    streamed = raw({"op": "backup.create", "args": {"dest": str(dest.with_name("c.tar.zst"))},
                    "progress": True})
    assert len(streamed) > 1 and all("progress" in line for line in streamed[:-1])
    assert streamed[-1]["ok"] is True and "progress" not in streamed[-1]


def periodic(base: Path) -> list[Path]:
    return sorted((base / "alice" / "snapshots").glob("*.periodic.anki2.zst"))


def wait_for(condition: Any, secs: float = 10) -> None:
    deadline = time.monotonic() + secs
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# The server's own keeper task, with an interval of 0.36 s (it looks every 0.5 s).
EVERY_FEW_TENTHS = {"ANKIHOST_SNAPSHOT_INTERVAL_HOURS": "0.0001"}


def test_the_keeper_snapshots_a_collection_again_only_once_it_changed(
    tmp_path: Path, client_collection: bytes
) -> None:
    base = tmp_path / "base"
    with TestClient(build(make_settings(base, **EVERY_FEW_TENTHS))) as http:
        wire = Wire(http)
        assert wire.payload(wire.post("upload", client_collection)) == b"OK"
        wait_for(lambda: len(periodic(base)) == 1)
        time.sleep(2.5)  # five rounds past the interval, nothing changed
        assert len(periodic(base)) == 1
        wire.post("download", {})  # a change: usn + 1
        wait_for(lambda: len(periodic(base)) == 2)
        time.sleep(1.5)
        assert len(periodic(base)) == 2


def test_the_keeper_leaves_a_syncing_user_for_a_later_round(tmp_path: Path, client_collection: bytes) -> None:
    base = tmp_path / "base"
    with TestClient(build(make_settings(base))) as http:
        assert Wire(http).payload(Wire(http).post("upload", client_collection)) == b"OK"
    with TestClient(build(make_settings(base, **EVERY_FEW_TENTHS))) as http:
        wire = Wire(http)  # the session opens well before the keeper's first round (0.5 s)
        wire.post("meta", {"v": 11})
        wire.post("start", {"minUsn": 0, "lnewer": False, "graves": None})
        time.sleep(2.5)  # rounds come and go; the session stays open
        assert periodic(base) == []
        assert wire.post("applyChanges", NO_CHANGES).status_code == 200  # never cut
        wire.post("abort", {})
        wait_for(lambda: len(periodic(base)) == 1)


def test_retention_applies_to_upload_snapshots(tmp_path: Path, client_collection: bytes, fewer_notes: bytes) -> None:
    base = tmp_path / "base"
    with TestClient(build(make_settings(base, ANKIHOST_SNAPSHOT_KEEP="2"))) as http:
        wire = Wire(http)
        for body in (client_collection, fewer_notes, client_collection, fewer_notes):
            assert wire.payload(wire.post("upload", body)) == b"OK"
        snapshots = Server(http, base).admin("snapshot.list", name="alice")["snapshots"]
    assert [s["notes"] for s in snapshots] == [30, 40]


def test_a_backup_whose_command_goes_away_is_cancelled_and_leaves_nothing(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    media = server.alice / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i in range(60):
        (media / f"big {i}.bin").write_bytes(os.urandom(1024 * 1024))
    (tmp_path / "backups").mkdir()
    dest = tmp_path / "backups" / "gone.tar.zst"
    caplog.set_level("INFO", "ankihost.admin.channel")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(server.base / ".ankihost/control.sock"))
        request = {"op": "backup.create", "args": {"dest": str(dest)}, "progress": True}
        sock.sendall(orjson.dumps(request) + b"\n")
        assert b"progress" in sock.recv(65536)
    wait_for(lambda: "backup.create cancelled: its client went away" in caplog.text, 30)
    assert list(dest.parent.iterdir()) == []
    assert not [p for p in server.base.rglob("*") if p.name.startswith((".freeze-", ".scratch-"))]
    result = server.admin("backup.create", dest=str(dest))  # the server still serves the channel
    assert Path(result["path"]).exists()


def test_a_restore_or_export_asked_to_wait_less_gives_up_with_409_and_changes_nothing(
    server: Server, client_collection: bytes, fewer_notes: bytes, tmp_path: Path
) -> None:
    """`wait_secs` (what the web pages pass, so a browser is answered): past it, a 409."""
    id = uploaded_twice(server, client_collection, fewer_notes)
    server.wire.post("meta", {"v": 11, "cv": "test"})
    assert server.wire.post("start", {"minUsn": 0, "lnewer": False, "graves": None}).status_code == 200
    try:
        for op, args in (("snapshot.restore", {"id": id}), ("export.create", {"dest": str(tmp_path / "a.colpkg")})):
            started = time.monotonic()
            with pytest.raises(AdminError) as refused:
                server.admin(op, name="alice", wait_secs=1, **args)
            assert refused.value.status == 409 and "did not end within 1 s" in refused.value.message
            assert 1 <= time.monotonic() - started < 10
        for bad in (-1, 601, "5", True):
            with pytest.raises(AdminError, match="wait_secs must be"):
                server.admin("snapshot.restore", name="alice", id=id, wait_secs=bad)
    finally:
        server.wire.post("abort", {})
    assert server.notes() == 30 and not (tmp_path / "a.colpkg").exists()
