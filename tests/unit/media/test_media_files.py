"""Media file names, streamed staging under a limit, and the undoable file journal."""

from __future__ import annotations

import hashlib
import io
import os
import unicodedata
from pathlib import Path

import pytest

from ankihost.errors import BadRequest
from ankihost.media import files


@pytest.mark.parametrize(
    "name",
    ["a.jpg", "ünïcödé.png", "x" * 251 + ".jpg", "co:lon.png", "日本語.mp3", ".hidden",
     "a..b"],
)
def test_acceptable_additions(name: str) -> None:
    assert files.addition_problem(name) is None
    assert files.path_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        (".", "empty"),
        ("..", "empty"),
        ("../etc/passwd", "'/'"),
        ("a/b.png", "'/'"),
        ("/abs.png", "'/'"),
        ("a\\b.png", "'\\'"),
        ("..\\x.png", "'\\'"),
        ("nul\x00.png", "NUL"),
        ("line\nbreak.png", "control"),
        ("del\x7f.png", "control"),
        (unicodedata.normalize("NFD", "café.png"), "NFC"),
        ("x" * 256, "255 bytes"),
        ("é" * 128, "255 bytes"),  # 256 bytes of UTF-8
    ],
)
def test_refused_additions(name: str, why: str) -> None:
    problem = files.addition_problem(name)
    assert problem is not None and why in problem


def test_protocol_rules_match_the_official_server() -> None:
    # These three apply to deletions too; '\\', NUL and control characters do not.
    assert files.protocol_problem("x" * 255) is None
    assert files.protocol_problem("x" * 256) is not None
    assert files.protocol_problem(unicodedata.normalize("NFD", "é")) is not None
    assert files.protocol_problem("a/b") is not None
    assert files.protocol_problem("a\\b") is None
    assert files.protocol_problem("") is None


def test_media_path_never_leaves_the_folder(tmp_path: Path) -> None:
    assert files.media_path(tmp_path, "a.png") == tmp_path / "a.png"
    assert files.media_path(tmp_path, "a\\b.png").parent == tmp_path
    for bad in ["", ".", "..", "../x", "a/b", "x\x00"]:
        with pytest.raises(BadRequest):
            files.media_path(tmp_path, bad)


def test_stage_stream_hashes_into_a_temp_file(tmp_path: Path) -> None:
    data = os.urandom(3 * files.COPY_CHUNK_BYTES + 5)
    staged = files.stage_stream(tmp_path, io.BytesIO(data), max_bytes=len(data))
    assert staged.path.parent == tmp_path and files.is_temp_name(staged.path.name)
    assert staged.path.read_bytes() == data
    assert (staged.sha1, staged.size) == (hashlib.sha1(data).digest(), len(data))
    staged.discard()
    assert list(tmp_path.iterdir()) == []


def test_stage_stream_refuses_one_byte_over_the_limit_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        files.stage_stream(tmp_path, io.BytesIO(b"x" * 11), max_bytes=10)
    assert list(tmp_path.iterdir()) == []


def _staged(folder: Path, data: bytes) -> files.StagedFile:
    return files.stage_stream(folder, io.BytesIO(data), max_bytes=len(data))


def _media(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "media"
    folder.mkdir()
    return folder, tmp_path / "journal"


def test_journal_success_places_files_and_removes_backups(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    (folder / "old.txt").write_bytes(b"old")
    (folder / "gone.txt").write_bytes(b"bye")
    changes = [
        files.Change("old.txt", _staged(folder, b"new")),
        files.Change("fresh.txt", _staged(folder, b"fresh")),
        files.Change("gone.txt", None),
        files.Change("never-existed.txt", None),
    ]
    with files.FileJournal(folder, journal_path) as journal:
        journal.apply(changes, usn=7)
        written = files.Journal.from_bytes(journal_path.read_bytes())  # durable before commit
        assert written.usn == 7
        assert [(e.name, e.sha1) for e in written.entries] == [
            ("old.txt", hashlib.sha1(b"new").digest()),
            ("fresh.txt", hashlib.sha1(b"fresh").digest()),
            ("gone.txt", None),
            ("never-existed.txt", None),
        ]
        assert (folder / written.entries[0].backup).read_bytes() == b"old"
    assert sorted(p.name for p in folder.iterdir()) == ["fresh.txt", "old.txt"]
    assert (folder / "old.txt").read_bytes() == b"new"
    assert not journal_path.exists()


def test_journal_error_restores_every_file(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    (folder / "a.txt").write_bytes(b"A")
    (folder / "b.txt").write_bytes(b"B")
    (folder / "dir").mkdir()
    changes = [
        files.Change("a.txt", _staged(folder, b"A2")),
        files.Change("b.txt", None),
        files.Change("c.txt", _staged(folder, b"C")),
        files.Change("dir", _staged(folder, b"D")),  # fails: a directory is in the way
    ]
    with pytest.raises(IsADirectoryError), files.FileJournal(folder, journal_path) as journal:
        journal.apply(changes, usn=3)
    names = sorted(p.name for p in folder.iterdir() if not files.is_temp_name(p.name))
    assert names == ["a.txt", "b.txt", "dir"]
    assert (folder / "a.txt").read_bytes() == b"A"
    assert (folder / "b.txt").read_bytes() == b"B"
    assert not journal_path.exists()


def test_an_empty_batch_writes_no_journal(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    with files.FileJournal(folder, journal_path) as journal:
        journal.apply([], usn=1)
        assert not journal_path.exists()


def test_sync_files_syncs_a_batch(tmp_path: Path) -> None:
    staged = [_staged(tmp_path, bytes([i]) * 100) for i in range(5)]
    files.sync_files(staged)  # no error; contents untouched
    assert [s.path.read_bytes() for s in staged] == [bytes([i]) * 100 for i in range(5)]


def _crashed_batch(tmp_path: Path) -> tuple[Path, Path, files.Journal]:
    """The folder as a crash after all renames leaves it: a.txt A→A2 (backup kept), b.txt
    deleted (backup kept), c.txt new; the journal on disk."""
    folder, journal_path = _media(tmp_path)
    entries = [
        files.JournalEntry("a.txt", files.new_temp_path(folder).name, hashlib.sha1(b"A2").digest()),
        files.JournalEntry("b.txt", files.new_temp_path(folder).name, None),
        files.JournalEntry("c.txt", files.new_temp_path(folder).name, hashlib.sha1(b"C").digest()),
    ]
    journal = files.Journal(5, entries)
    journal_path.write_bytes(journal.to_bytes())
    (folder / entries[0].backup).write_bytes(b"A")
    (folder / "a.txt").write_bytes(b"A2")
    (folder / entries[1].backup).write_bytes(b"B")
    (folder / "c.txt").write_bytes(b"C")
    return folder, journal_path, journal


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_recover_a_committed_batch_removes_only_the_backups(tmp_path: Path) -> None:
    folder, journal_path, _ = _crashed_batch(tmp_path)
    assert files.recover(folder, journal_path, 5, lambda name: None)
    assert _contents(folder) == {"a.txt": b"A2", "c.txt": b"C"}
    assert not journal_path.exists()


def test_recover_an_uncommitted_batch_restores_the_old_files(tmp_path: Path) -> None:
    folder, journal_path, _ = _crashed_batch(tmp_path)
    old = {"a.txt": hashlib.sha1(b"A").digest(), "b.txt": hashlib.sha1(b"B").digest()}
    assert files.recover(folder, journal_path, 2, old.get)
    assert _contents(folder) == {"a.txt": b"A", "b.txt": b"B"}
    assert not journal_path.exists()
    assert not files.recover(folder, journal_path, 2, old.get)  # nothing left to do


def test_recover_undo_is_idempotent_and_keeps_files_it_did_not_place(tmp_path: Path) -> None:
    folder, journal_path, journal = _crashed_batch(tmp_path)
    # As if an earlier recovery had restored a.txt and then crashed.
    os.replace(folder / journal.entries[0].backup, folder / "a.txt")
    old = {"a.txt": hashlib.sha1(b"A").digest(), "b.txt": hashlib.sha1(b"B").digest()}
    files.recover(folder, journal_path, 2, old.get)
    assert _contents(folder) == {"a.txt": b"A", "b.txt": b"B"}


def test_recover_ignores_a_torn_journal(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    (folder / "a.txt").write_bytes(b"A")
    journal_path.write_bytes(b'{"usn": 4, "entries": [["a.t')
    assert files.recover(folder, journal_path, 0, lambda name: None)
    assert _contents(folder) == {"a.txt": b"A"} and not journal_path.exists()


def test_remove_stray_temps_spares_names_in_use_and_other_files(tmp_path: Path) -> None:
    stray = files.new_temp_path(tmp_path)
    stray.write_bytes(b"crash leftover")
    claimed = files.new_temp_path(tmp_path)
    claimed.write_bytes(b"a user's file that happens to look like a temp")
    (tmp_path / ".ankihost-tmp-not-hex").write_bytes(b"user file")
    (tmp_path / "photo.jpg").write_bytes(b"user file")
    removed = files.remove_stray_temps(tmp_path, lambda name: name == claimed.name)
    assert removed == 1 and not stray.exists() and claimed.exists()
    assert (tmp_path / ".ankihost-tmp-not-hex").exists() and (tmp_path / "photo.jpg").exists()


def test_sha1_of_file_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"abc")
    assert files.sha1_of_file(tmp_path / "real") == hashlib.sha1(b"abc").digest()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError):
        files.open_for_reading(tmp_path / "link")
