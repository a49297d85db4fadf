"""Media file names, streamed staging under a limit, and the undoable file journal."""

from __future__ import annotations

import hashlib
import io
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from ankihost.errors import BadRequest
from ankihost.media import journal as mj
from ankihost.media import names, staging
from ankihost.storage.paths import is_media_temp_name, new_media_temp_name


@pytest.mark.parametrize(
    "name",
    ["a.jpg", "ünïcödé.png", "x" * 251 + ".jpg", "co:lon.png", "日本語.mp3", ".hidden",
     "a..b"],
)
def test_acceptable_additions(name: str) -> None:
    assert names.addition_problem(name) is None
    assert names.path_problem(name) is None


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
    problem = names.addition_problem(name)
    assert problem is not None and why in problem


def test_protocol_rules_match_the_official_server() -> None:
    # These three apply to deletions too; '\\', NUL and control characters do not.
    assert names.protocol_problem("x" * 255) is None
    assert names.protocol_problem("x" * 256) is not None
    assert names.protocol_problem(unicodedata.normalize("NFD", "é")) is not None
    assert names.protocol_problem("a/b") is not None
    assert names.protocol_problem("a\\b") is None
    assert names.protocol_problem("") is None


def test_media_path_never_leaves_the_folder(tmp_path: Path) -> None:
    assert names.media_path(tmp_path, "a.png") == tmp_path / "a.png"
    assert names.media_path(tmp_path, "a\\b.png").parent == tmp_path
    for bad in ["", ".", "..", "../x", "a/b", "x\x00"]:
        with pytest.raises(BadRequest):
            names.media_path(tmp_path, bad)


def test_stage_stream_hashes_into_a_temp_file(tmp_path: Path) -> None:
    data = os.urandom(3 * staging.COPY_CHUNK_BYTES + 5)
    staged = staging.stage_stream(tmp_path, io.BytesIO(data), max_bytes=len(data))
    assert staged.path.parent == tmp_path and is_media_temp_name(staged.path.name)
    assert staged.path.read_bytes() == data
    assert (staged.sha1, staged.size) == (hashlib.sha1(data).digest(), len(data))
    staged.discard()
    assert list(tmp_path.iterdir()) == []


def test_stage_stream_refuses_one_byte_over_the_limit_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        staging.stage_stream(tmp_path, io.BytesIO(b"x" * 11), max_bytes=10)
    assert list(tmp_path.iterdir()) == []


def _staged(folder: Path, data: bytes) -> staging.StagedFile:
    return staging.stage_stream(folder, io.BytesIO(data), max_bytes=len(data))


def _cleared(journal_path: Path) -> bool:
    """No batch pending: the journal file is absent or empty (it is kept, emptied)."""
    return not journal_path.exists() or journal_path.read_bytes() == b""


def _media(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "media"
    folder.mkdir()
    return folder, tmp_path / "journal"


def test_journal_success_places_files_and_removes_backups(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    (folder / "old.txt").write_bytes(b"old")
    (folder / "old2.txt").write_bytes(b"old2")
    (folder / "gone.txt").write_bytes(b"bye")
    changes = [
        mj.Change("old.txt", _staged(folder, b"new")),  # a temp file renamed over it
        mj.Change("old2.txt", staging.StagedFile.in_memory(b"new2")),  # via a temp file too
        mj.Change("fresh.txt", _staged(folder, b"fresh")),
        mj.Change("direct.txt", staging.StagedFile.in_memory(b"direct")),  # written in place
        mj.Change("gone.txt", None),
        mj.Change("never-existed.txt", None),  # nothing to do on disk: not journaled
    ]
    with mj.FileJournal(folder, journal_path) as journal:
        journal.apply(changes, usn=7)
        written = mj.Journal.from_bytes(journal_path.read_bytes())  # durable before commit
        assert written.usn == 7
        assert [(e.name, e.sha1, e.backup is None) for e in written.entries] == [
            ("old.txt", hashlib.sha1(b"new").digest(), False),
            ("old2.txt", hashlib.sha1(b"new2").digest(), False),
            ("fresh.txt", hashlib.sha1(b"fresh").digest(), True),
            ("direct.txt", hashlib.sha1(b"direct").digest(), True),
            ("gone.txt", None, False),
        ]
        backups = [e.backup for e in written.entries if e.backup is not None]
        assert [(folder / b).read_bytes() for b in backups] == [b"old", b"old2", b"bye"]
    assert _contents(folder) == {
        "old.txt": b"new", "old2.txt": b"new2", "fresh.txt": b"fresh", "direct.txt": b"direct",
    }
    assert _cleared(journal_path)


def test_journal_error_removes_files_written_in_place(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    (folder / "a.txt").write_bytes(b"A")
    changes = [
        mj.Change("new.txt", staging.StagedFile.in_memory(b"N")),
        mj.Change("a.txt", staging.StagedFile.in_memory(b"A2")),
    ]
    with pytest.raises(RuntimeError), mj.FileJournal(folder, journal_path) as journal:
        journal.apply(changes, usn=3)
        assert _contents(folder) == {"new.txt": b"N", "a.txt": b"A2"} | {
            e.backup: b"A" for e in mj.Journal.from_bytes(journal_path.read_bytes()).entries
            if e.backup is not None
        }
        raise RuntimeError("the commit failed")
    assert _contents(folder) == {"a.txt": b"A"}
    assert _cleared(journal_path)


def test_journal_refuses_a_directory_before_touching_anything(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    (folder / "dir").mkdir()
    changes = [mj.Change("x.txt", staging.StagedFile.in_memory(b"X")),
               mj.Change("dir", staging.StagedFile.in_memory(b"D"))]
    with pytest.raises(IsADirectoryError), mj.FileJournal(folder, journal_path) as journal:
        journal.apply(changes, usn=3)
    assert sorted(p.name for p in folder.iterdir()) == ["dir"]
    assert _cleared(journal_path)


def test_journal_error_restores_every_file(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    (folder / "a.txt").write_bytes(b"A")
    (folder / "b.txt").write_bytes(b"B")
    (folder / "dir").mkdir()
    changes = [
        mj.Change("a.txt", _staged(folder, b"A2")),
        mj.Change("b.txt", None),
        mj.Change("c.txt", _staged(folder, b"C")),
        mj.Change("dir", _staged(folder, b"D")),  # fails: a directory is in the way
    ]
    with pytest.raises(IsADirectoryError), mj.FileJournal(folder, journal_path) as journal:
        journal.apply(changes, usn=3)
    names = sorted(p.name for p in folder.iterdir() if not is_media_temp_name(p.name))
    assert names == ["a.txt", "b.txt", "dir"]
    assert (folder / "a.txt").read_bytes() == b"A"
    assert (folder / "b.txt").read_bytes() == b"B"
    assert _cleared(journal_path)


def test_an_empty_batch_writes_no_journal(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    with mj.FileJournal(folder, journal_path) as journal:
        journal.apply([], usn=1)
        assert not journal_path.exists()


def _fsync_all(fds: list[int]) -> None:
    fsyncs = staging.Fsyncs()
    for fd in fds:
        fsyncs.start(fd)
    fsyncs.wait()


def test_fsyncs_sync_a_batch_and_report_an_error(tmp_path: Path) -> None:
    staged = [_staged(tmp_path, bytes([i]) * 100) for i in range(5)]
    fds = [os.open(s.path, os.O_RDONLY) for s in staged if s.path is not None]
    try:
        _fsync_all(fds)  # no error; contents untouched
    finally:
        for fd in fds:
            os.close(fd)
    assert [s.path.read_bytes() for s in staged if s.path] == [bytes([i]) * 100 for i in range(5)]
    with pytest.raises(OSError):
        _fsync_all([fds[0], fds[1]])  # closed descriptors


def _crashed_batch(tmp_path: Path) -> tuple[Path, Path, mj.Journal]:
    """The folder as a crash after all renames leaves it: a.txt A→A2 (backup kept), b.txt
    deleted (backup kept), c.txt new; the journal on disk."""
    folder, journal_path = _media(tmp_path)
    entries = [
        mj.JournalEntry("a.txt", (folder / new_media_temp_name()).name, hashlib.sha1(b"A2").digest()),
        mj.JournalEntry("b.txt", (folder / new_media_temp_name()).name, None),
        mj.JournalEntry("c.txt", (folder / new_media_temp_name()).name, hashlib.sha1(b"C").digest()),
    ]
    journal = mj.Journal(5, entries)
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
    assert mj.recover(folder, journal_path, 5, lambda name: None)
    assert _contents(folder) == {"a.txt": b"A2", "c.txt": b"C"}
    assert _cleared(journal_path)


def test_recover_an_uncommitted_batch_restores_the_old_files(tmp_path: Path) -> None:
    folder, journal_path, _ = _crashed_batch(tmp_path)
    old = {"a.txt": hashlib.sha1(b"A").digest(), "b.txt": hashlib.sha1(b"B").digest()}
    assert mj.recover(folder, journal_path, 2, old.get)
    assert _contents(folder) == {"a.txt": b"A", "b.txt": b"B"}
    assert _cleared(journal_path)
    assert not mj.recover(folder, journal_path, 2, old.get)  # nothing left to do


def test_recover_undo_is_idempotent_and_keeps_files_it_did_not_place(tmp_path: Path) -> None:
    folder, journal_path, journal = _crashed_batch(tmp_path)
    # As if an earlier recovery had restored a.txt and then crashed.
    os.replace(folder / journal.entries[0].backup, folder / "a.txt")
    old = {"a.txt": hashlib.sha1(b"A").digest(), "b.txt": hashlib.sha1(b"B").digest()}
    mj.recover(folder, journal_path, 2, old.get)
    assert _contents(folder) == {"a.txt": b"A", "b.txt": b"B"}


def test_recover_ignores_a_torn_journal(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    (folder / "a.txt").write_bytes(b"A")
    journal_path.write_bytes(b'{"usn": 4, "entries": [["a.t')
    assert mj.recover(folder, journal_path, 0, lambda name: None)
    assert _contents(folder) == {"a.txt": b"A"} and _cleared(journal_path)


def test_recover_removes_files_written_in_place_complete_or_not(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    entries = [
        mj.JournalEntry("whole.txt", None, hashlib.sha1(b"whole").digest()),
        mj.JournalEntry("half.txt", None, hashlib.sha1(b"half written").digest()),
        mj.JournalEntry("not yet.txt", None, hashlib.sha1(b"never started").digest()),
    ]
    journal_path.write_bytes(mj.Journal(9, entries).to_bytes())
    (folder / "whole.txt").write_bytes(b"whole")
    (folder / "half.txt").write_bytes(b"half")
    (folder / "other.txt").write_bytes(b"not in the journal")
    assert mj.recover(folder, journal_path, 8, lambda name: None)
    assert _contents(folder) == {"other.txt": b"not in the journal"}
    # Committed: they stay.
    journal_path.write_bytes(mj.Journal(9, entries).to_bytes())
    (folder / "whole.txt").write_bytes(b"whole")
    assert mj.recover(folder, journal_path, 9, lambda name: None)
    assert _contents(folder) == {"other.txt": b"not in the journal", "whole.txt": b"whole"}


def test_a_journal_of_the_previous_version_still_reads(tmp_path: Path) -> None:
    backup = new_media_temp_name()
    raw = orjson.dumps({"usn": 2, "entries": [["a.txt", backup, "00" * 20], ["b", backup, None]]})
    journal = mj.Journal.from_bytes(raw)
    assert [(e.name, e.backup) for e in journal.entries] == [("a.txt", backup), ("b", backup)]
    with pytest.raises(ValueError):
        mj.Journal.from_bytes(orjson.dumps({"usn": 2, "entries": [["a", "not-a-temp", None]]}))


def test_remove_stray_temps_spares_names_in_use_and_other_files(tmp_path: Path) -> None:
    stray = (tmp_path / new_media_temp_name())
    stray.write_bytes(b"crash leftover")
    claimed = (tmp_path / new_media_temp_name())
    claimed.write_bytes(b"a user's file that happens to look like a temp")
    (tmp_path / ".ankihost-tmp-not-hex").write_bytes(b"user file")
    (tmp_path / "photo.jpg").write_bytes(b"user file")
    removed = mj.remove_stray_temps(tmp_path, lambda name: name == claimed.name)
    assert removed == 1 and not stray.exists() and claimed.exists()
    assert (tmp_path / ".ankihost-tmp-not-hex").exists() and (tmp_path / "photo.jpg").exists()


def test_sha1_of_file_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"abc")
    assert staging.sha1_of_file(tmp_path / "real") == hashlib.sha1(b"abc").digest()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError):
        staging.open_for_reading(tmp_path / "link")


def test_the_journal_file_is_reused_and_a_stale_committed_one_is_harmless(tmp_path: Path) -> None:
    folder, journal_path = _media(tmp_path)
    with mj.FileJournal(folder, journal_path) as journal:
        journal.apply([mj.Change("a.txt", staging.StagedFile.in_memory(b"A"))], usn=1)
    inode = journal_path.stat().st_ino
    with mj.FileJournal(folder, journal_path) as journal:
        journal.apply([mj.Change("a.txt", staging.StagedFile.in_memory(b"A2"))], usn=2)
        assert mj.Journal.from_bytes(journal_path.read_bytes()).usn == 2
    assert journal_path.stat().st_ino == inode and journal_path.read_bytes() == b""
    # A crash may bring back a cleared journal whose batch committed: nothing is undone.
    backup = new_media_temp_name()
    entries = [mj.JournalEntry("a.txt", backup, hashlib.sha1(b"A2").digest())]
    journal_path.write_bytes(mj.Journal(2, entries).to_bytes())
    assert mj.recover(folder, journal_path, 2, lambda name: hashlib.sha1(b"A2").digest())
    assert _contents(folder) == {"a.txt": b"A2"} and journal_path.read_bytes() == b""
    assert not mj.recover(folder, journal_path, 2, lambda name: None)  # empty: no journal


def test_batches_of_several_users_share_the_sync_threads(tmp_path: Path) -> None:
    def user(n: int) -> dict[str, bytes]:
        folder, journal_path = tmp_path / f"u{n}" / "media", tmp_path / f"u{n}" / "journal"
        folder.mkdir(parents=True)
        for batch in range(5):
            changes = [mj.Change(f"{batch}-{i}", staging.StagedFile.in_memory(b"%d" % (n * i)))
                       for i in range(10)]
            with mj.FileJournal(folder, journal_path) as journal:
                journal.apply(changes, usn=batch + 1)
        return _contents(folder)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(user, range(4)))
    for n, contents in enumerate(results):
        assert contents == {f"{b}-{i}": b"%d" % (n * i) for b in range(5) for i in range(10)}
