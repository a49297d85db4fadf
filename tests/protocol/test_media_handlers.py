"""The `/msync/…` handlers called directly, with real UserState/SyncRequest over a temp folder.

Every refused request is checked twice: it raises the right 4xx error class, and a byte-level
snapshot of the user's folder (media files and media.db, after closing the index so SQLite has
checkpointed) is identical before and after.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
import unicodedata
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from ankihost.errors import BadRequest, PayloadTooLarge, ServerError, SessionConflict, SyncError
from ankihost.media import journal
from ankihost.media.handlers import METHODS
from ankihost.media.sync import IN_MEMORY_ZIP_MAX_BYTES
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply
from ankihost.registry import UserState
from ankihost.storage.paths import new_media_temp_name
from tests.support.media_files import media_zip
from tests.support.states import make_state

HOST_KEY = "13e56c1cee7ca0701c9e597d9c63da8615c981b3"
MiB = 1024 * 1024


@pytest.fixture
def state(tmp_path: Path) -> Iterator[UserState]:
    user_state = make_state(tmp_path / "alice", host_key=HOST_KEY)
    yield user_state
    user_state.media.close()


def request(method: str, body: bytes) -> SyncRequest:
    return SyncRequest(
        method=method, sync_version=11, host_key=HOST_KEY, client_version="26.09.3,test,linux",
        session_key="abc", body=io.BytesIO(body), body_size=len(body),
    )


def call(state: UserState, method: str, body: bytes | dict[str, Any]) -> Reply:
    """Run one method as the web layer does: the step, then its reply's follow-up."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = METHODS[method].run(state, request(method, raw))
    if reply.follow_up is not None:
        reply.follow_up()
    return reply


def data(reply: Reply) -> Any:
    envelope = json.loads(reply.data)
    assert envelope["err"] == ""
    return envelope["data"]


def upload(state: UserState, entries: Sequence[tuple[str, bytes | None]]) -> list[int]:
    """Upload, then wait for the files to be placed (they are, in the background), so that the
    test can look at the media folder."""
    result: list[int] = data(call(state, "uploadChanges", media_zip(entries)))
    state.media.place()
    return result


def download(state: UserState, names: list[str]) -> dict[str, bytes]:
    reply = call(state, "downloadFiles", {"files": names})
    if reply.path is None:  # small zips are built in memory
        return _unzip(io.BytesIO(reply.data))
    assert reply.delete_after and reply.data == b""
    try:
        with reply.path.open("rb") as f:
            return _unzip(f)
    finally:
        reply.path.unlink()


def _unzip(source: IO[bytes]) -> dict[str, bytes]:
    with zipfile.ZipFile(source) as zf:
        meta = json.loads(zf.read("_meta"))
        assert sorted(zf.namelist()) == sorted([*meta, "_meta"])
        return {meta[m]: zf.read(m) for m in meta}


def snapshot(state: UserState) -> dict[str, bytes | None]:
    """Every file and folder under the user's folder, byte for byte (index closed first)."""
    state.media.close()
    root = state.folder.root
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def sha1(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


# --- begin, sanity -------------------------------------------------------------------------


def test_begin_on_a_new_user_creates_the_official_layout(state: UserState) -> None:
    assert json.loads(call(state, "begin", {"v": "anki,26.09.3 (x),linux"}).data) == {
        "data": {"usn": 0, "sk": HOST_KEY}, "err": ""
    }
    state.media.close()
    root = state.folder.root
    assert sorted(p.name for p in root.iterdir()) == ["media", "media.db"]
    db = sqlite3.connect(root / "media.db")
    assert db.execute("pragma user_version").fetchone() == (4,)
    db.close()


@pytest.mark.parametrize("body", [b"", b"{}", b'{"v": ""}', b'{"v": 3}'])
def test_begin_without_a_client_version_is_400(state: UserState, body: bytes) -> None:
    with pytest.raises(BadRequest):
        call(state, "begin", body)


def test_begin_and_meta_agree_on_the_usn(state: UserState) -> None:
    upload(state, [("a.txt", b"a"), ("b.txt", b"b")])
    assert data(call(state, "begin", {"v": "x"}))["usn"] == state.media.last_usn() == 2


def test_media_sanity(state: UserState) -> None:
    upload(state, [("a.txt", b"a"), ("b.txt", b"b"), ("a.txt", None)])
    assert data(call(state, "mediaSanity", {"local": 1})) == "OK"
    assert data(call(state, "mediaSanity", {"local": 2})) == "mediaSanity"


# --- uploadChanges -------------------------------------------------------------------------


def test_upload_adds_replaces_deletes_with_one_usn_per_change(state: UserState) -> None:
    media = state.folder.media
    assert upload(state, [("f00.txt", b"zero"), ("f01.txt", b"one"), ("f02.txt", b"two")]) == [3, 3]
    assert (media / "f01.txt").read_bytes() == b"one"
    # modify, delete, delete a never-seen name, add
    assert upload(state, [("f00.txt", b"ZERO"), ("f01.txt", None), ("nope.txt", None),
                          ("new.txt", b"new")]) == [4, 6]
    assert (media / "f00.txt").read_bytes() == b"ZERO" and not (media / "f01.txt").exists()
    # re-uploading identical content is counted but changes nothing
    assert upload(state, [("new.txt", b"new")]) == [1, 6]
    assert data(call(state, "mediaChanges", {"lastUsn": 0})) == [
        ["f02.txt", 3, sha1(b"two")], ["f00.txt", 4, sha1(b"ZERO")], ["f01.txt", 5, ""],
        ["new.txt", 6, sha1(b"new")],
    ]
    names = sorted(p.name for p in media.iterdir())
    assert names == ["f00.txt", "f02.txt", "new.txt"]  # no temp files left behind


def test_an_uploads_files_are_placed_in_the_background_and_reads_wait_for_them(
    state: UserState, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    place = journal.FileJournal.place

    def held_place(self: journal.FileJournal) -> None:
        assert gate.wait(timeout=30)
        place(self)

    monkeypatch.setattr(journal.FileJournal, "place", held_place)
    reply = call(state, "uploadChanges", media_zip([("a.txt", b"A"), ("b.txt", b"B")]))
    assert data(reply) == [2, 2]  # answered at once
    media = state.folder.media
    assert not (media / "a.txt").exists()  # durable in the media log, not placed yet
    assert data(call(state, "mediaChanges", {"lastUsn": 0}))[0][:2] == ["a.txt", 1]
    gate.set()
    assert download(state, ["a.txt", "b.txt"]) == {"a.txt": b"A", "b.txt": b"B"}  # waited
    assert sorted(p.name for p in media.iterdir()) == ["a.txt", "b.txt"]


def test_a_placement_that_fails_in_any_way_is_redone_from_the_media_log(
    state: UserState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only a disk error: whatever stops the background placement, the batches it dropped
    are placed again when the index is next opened, never forgotten by a checkpoint."""
    place = journal.FileJournal.place

    def failing_place(self: journal.FileJournal) -> None:
        raise RuntimeError("placement interrupted")

    monkeypatch.setattr(journal.FileJournal, "place", failing_place)
    reply = call(state, "uploadChanges", media_zip([("a.txt", b"A"), ("b.txt", b"B")]))
    assert data(reply) == [2, 2]
    with pytest.raises(RuntimeError, match="placement interrupted"):
        state.media.settle()
    monkeypatch.setattr(journal.FileJournal, "place", place)
    state.media.settle()  # nothing of its own to flush: the index was closed
    assert download(state, ["a.txt", "b.txt"]) == {"a.txt": b"A", "b.txt": b"B"}


def test_upload_accepts_legacy_empty_string_deletions_and_25_entries(state: UserState) -> None:
    assert upload(state, [(f"f{i:02}.txt", b"x") for i in range(25)]) == [25, 25]
    body = media_zip([], meta=[["f00.txt", ""]])
    assert data(call(state, "uploadChanges", body)) == [1, 26]


def test_a_255_byte_name_is_accepted(state: UserState) -> None:
    name = "é" * 125 + "x.png"  # 250 + 5 bytes of UTF-8
    assert len(name.encode()) == 255
    assert upload(state, [(name, b"long")]) == [1, 1]
    assert download(state, [name]) == {name: b"long"}


def test_upload_of_an_identical_file_repairs_it_if_lost_or_damaged(state: UserState) -> None:
    upload(state, [("a.txt", b"a"), ("b.txt", b"b")])
    (state.folder.media / "a.txt").unlink()
    (state.folder.media / "b.txt").write_bytes(b"damaged")
    assert upload(state, [("a.txt", b"a"), ("b.txt", b"b")]) == [2, 2]  # no USN consumed
    assert (state.folder.media / "a.txt").read_bytes() == b"a"
    assert (state.folder.media / "b.txt").read_bytes() == b"b"


def test_reference_accepted_names_with_a_backslash_can_still_be_deleted(state: UserState) -> None:
    index = state.media.index()
    with index.atomic() as w:  # a folder written by the official server may hold such names
        w.record_addition("a\\b.png", hashlib.sha1(b"x").digest(), 1)
    (state.folder.media / "a\\b.png").write_bytes(b"x")
    assert upload(state, [("a\\b.png", None), ("", None), ("..", None)]) == [3, 2]
    assert not (state.folder.media / "a\\b.png").exists()


# --- mediaChanges --------------------------------------------------------------------------


def test_media_changes_pages_by_1000_in_usn_order(state: UserState) -> None:
    index = state.media.index()
    with index.atomic() as w:
        for i in range(1145):
            w.record_addition(f"f{i:04}.txt", hashlib.sha1(b"%d" % i).digest(), 1)
    first = data(call(state, "mediaChanges", {"lastUsn": 0}))
    assert len(first) == 1000 and [r[1] for r in first] == list(range(1, 1001))
    second = data(call(state, "mediaChanges", {"lastUsn": first[-1][1]}))
    assert [r[1] for r in second] == list(range(1001, 1146))
    assert data(call(state, "mediaChanges", {"lastUsn": 1145})) == []
    assert data(call(state, "mediaChanges", {"lastUsn": 99999})) == []
    assert len(data(call(state, "mediaChanges", {"lastUsn": -5}))) == 1000


# --- downloadFiles -------------------------------------------------------------------------


def test_download_returns_a_prefix_capped_near_2_5_mib(state: UserState) -> None:
    files_1mib = [(f"big{i}.bin", bytes([i]) * MiB) for i in range(5)]
    upload(state, files_1mib)
    got = download(state, [name for name, _ in files_1mib])
    assert sorted(got) == ["big0.bin", "big1.bin", "big2.bin"]
    assert got["big1.bin"] == bytes([1]) * MiB


def test_download_small_files_and_an_empty_request(state: UserState) -> None:
    upload(state, [("a.txt", b"aa"), ("ü.txt", b"uu")])
    assert download(state, ["ü.txt", "a.txt"]) == {"ü.txt": b"uu", "a.txt": b"aa"}
    assert download(state, []) == {}


def test_small_downloads_are_built_in_memory_big_ones_in_a_temp_file(state: UserState) -> None:
    big = bytes(range(256)) * ((IN_MEMORY_ZIP_MAX_BYTES + MiB) // 256)
    upload(state, [("small.txt", b"s" * 1000), ("big.bin", big)])
    small_reply = call(state, "downloadFiles", {"files": ["small.txt"]})
    assert small_reply.path is None and small_reply.data.startswith(b"PK")
    big_reply = call(state, "downloadFiles", {"files": ["big.bin", "small.txt"]})
    assert big_reply.path is not None and big_reply.path.parent == state.folder.root
    big_reply.path.unlink()
    assert download(state, ["big.bin"]) == {"big.bin": big}
    assert list(state.folder.root.glob(".ankihost-download-*")) == []


def test_download_of_a_file_missing_on_disk_forgets_it_and_is_409(state: UserState) -> None:
    upload(state, [("a.txt", b"a"), ("b.txt", b"b")])
    (state.folder.media / "a.txt").unlink()
    with pytest.raises(SessionConflict):
        download(state, ["a.txt"])
    assert data(call(state, "mediaSanity", {"local": 1})) == "OK"
    assert [r[0] for r in data(call(state, "mediaChanges", {"lastUsn": 0}))] == ["b.txt"]
    assert list(state.folder.root.glob(".ankihost-download-*")) == []


def test_download_of_a_corrupted_file_is_409_never_silently_served(state: UserState) -> None:
    upload(state, [("a.txt", b"original")])
    (state.folder.media / "a.txt").write_bytes(b"bit rot!")
    with pytest.raises(SessionConflict):
        download(state, ["a.txt"])
    assert data(call(state, "mediaSanity", {"local": 0})) == "OK"
    assert list(state.folder.root.glob(".ankihost-download-*")) == []


# --- refused requests leave everything byte-for-byte unchanged --------------------------------


def _corrupt_zip() -> bytes:
    raw = bytearray(media_zip([("new.txt", b"ABCDEFGHIJKLMNOP")]))
    raw[raw.index(b"ABCDEFGHIJKLMNOP")] ^= 0xFF  # content no longer matches the CRC-32
    return bytes(raw)


REFUSED: dict[str, tuple[str, bytes | dict[str, Any], type[SyncError]]] = {
    "upload traversal ../": ("uploadChanges", media_zip([("../evil.txt", b"x")]), BadRequest),
    "upload traversal ..": ("uploadChanges", media_zip([("..", b"x")]), BadRequest),
    "upload absolute": ("uploadChanges", media_zip([("/etc/evil", b"x")]), BadRequest),
    "upload backslash": ("uploadChanges", media_zip([("..\\evil.txt", b"x")]), BadRequest),
    "upload NUL": ("uploadChanges", media_zip([("a\x00b", b"x")]), BadRequest),
    "upload NFD": ("uploadChanges", media_zip([(unicodedata.normalize("NFD", "é.png"), b"x")]),
                   BadRequest),
    "upload 256-byte name": ("uploadChanges", media_zip([("n" * 256, b"x")]), BadRequest),
    "upload 26 entries": ("uploadChanges", media_zip([(f"n{i}", b"x") for i in range(26)]),
                          BadRequest),
    "upload empty member": ("uploadChanges", media_zip([("new.txt", b"")]), BadRequest),
    "upload missing member": ("uploadChanges", media_zip([], meta=[["new.txt", "0"]]),
                              BadRequest),
    "upload bad after good": ("uploadChanges",
                              media_zip([("keep.txt", b"changed!"), ("new.txt", b"n"),
                                          ("keep.txt", None), ("../x", b"x")]), BadRequest),
    "upload corrupt zip": ("uploadChanges", b"PK\x03\x04 definitely not a zip", BadRequest),
    "upload wrong checksum": ("uploadChanges", _corrupt_zip(), BadRequest),
    "upload JSON instead of zip": ("uploadChanges", b'{"files": []}', BadRequest),
    "changes usn too big": ("mediaChanges", {"lastUsn": 2**31}, BadRequest),
    "changes usn too small": ("mediaChanges", {"lastUsn": -(2**31) - 1}, BadRequest),
    "changes usn missing": ("mediaChanges", {}, BadRequest),
    "changes usn string": ("mediaChanges", {"lastUsn": "0"}, BadRequest),
    "changes usn bool": ("mediaChanges", {"lastUsn": True}, BadRequest),
    "changes not JSON": ("mediaChanges", b"\x00\x01", BadRequest),
    "sanity negative": ("mediaSanity", {"local": -1}, BadRequest),
    "sanity over u32": ("mediaSanity", {"local": 2**32}, BadRequest),
    "download 26 names": ("downloadFiles", {"files": ["keep.txt"] * 26}, BadRequest),
    "download not a list": ("downloadFiles", {"files": "keep.txt"}, BadRequest),
    "download traversal": ("downloadFiles", {"files": ["../media.db"]}, BadRequest),
    "download dotdot": ("downloadFiles", {"files": ["keep.txt", ".."]}, BadRequest),
    "download deleted": ("downloadFiles", {"files": ["dead.txt"]}, SessionConflict),
    "download unknown": ("downloadFiles", {"files": ["keep.txt", "nope.txt"]}, SessionConflict),
}


def _populate(state: UserState) -> None:
    upload(state, [("keep.txt", b"keep me"), ("dead.txt", b"x"), ("other.bin", b"\x00" * 100)])
    upload(state, [("dead.txt", None)])


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_requests_change_nothing(state: UserState, case: str) -> None:
    method, body, error = REFUSED[case]
    _populate(state)
    before = snapshot(state)
    with pytest.raises(error) as raised:
        call(state, method, body)
    assert 400 <= raised.value.status < 500
    assert snapshot(state) == before


def test_oversized_upload_is_refused_and_changes_nothing(state: UserState) -> None:
    _populate(state)
    before = snapshot(state)
    big = b"\0" * (100 * MiB + 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("0", big)
        zf.writestr("_meta", json.dumps([["big.bin", "0"]]))
    del big
    with pytest.raises((BadRequest, PayloadTooLarge)):
        call(state, "uploadChanges", buf.getvalue())
    assert snapshot(state) == before


def test_a_failure_while_applying_rolls_back_files_and_database(state: UserState) -> None:
    _populate(state)
    (state.folder.media / "blocker").mkdir()  # a directory where a file must go: rename fails
    before = snapshot(state)
    body = media_zip([("keep.txt", b"new content"), ("other.bin", None), ("blocker", b"x")])
    with pytest.raises(ServerError):
        call(state, "uploadChanges", body)
    assert snapshot(state) == before
    assert upload(state, [("keep.txt", b"new content")]) == [1, 5]  # and the store still works


def test_stray_temp_files_from_a_crash_are_removed_on_open(state: UserState) -> None:
    _populate(state)
    state.media.close()
    stray = state.folder.media / new_media_temp_name()
    stray.write_bytes(b"half written")
    assert data(call(state, "begin", {"v": "x"}))["usn"] == 4
    assert not stray.exists()


def test_a_stray_download_zip_is_removed_when_the_user_is_prepared(state: UserState) -> None:
    _populate(state)
    state.media.close()
    (state.folder.root / ".ankihost-download-0123.zip").write_bytes(b"old zip")
    state.prepare()
    assert list(state.folder.root.glob(".ankihost-download-*")) == []
