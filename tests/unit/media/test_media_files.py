"""Media file names, streamed staging under a limit, the media log, batches and recovery."""

from __future__ import annotations

import contextlib
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
from ankihost.media import log as log_format
from ankihost.media import names, recovery, staging
from ankihost.media.index import Entry, IndexChanges, MediaIndex, Totals
from ankihost.media.log import read_records
from ankihost.media.trash import Trash
from ankihost.storage.paths import UserFolder, is_media_temp_name, new_media_temp_name


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


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _cleared(journal_path: Path) -> bool:
    """No batch pending: the journal file is absent or empty (it is kept, emptied)."""
    return not journal_path.exists() or journal_path.read_bytes() == b""


def _user(tmp_path: Path, name: str = "alice") -> tuple[UserFolder, Trash]:
    folder = UserFolder(tmp_path / name)
    folder.ensure()
    return folder, Trash(folder.media_trash, days=30)


def _index(usn_before: int, *rows: tuple[str, bytes, int]) -> IndexChanges:
    """What an index transaction from `usn_before` wrote: (name, content, usn) per row."""
    entries = [Entry(n, _sha1(c), len(c), usn, 0) for n, c, usn in rows]
    last = max([usn_before, *(usn for _, _, usn in rows)])
    return IndexChanges(usn_before, entries, Totals(last, 0, 0))


def _entry(name: str, content: bytes, usn: int = 1) -> Entry:
    return Entry(name, _sha1(content), len(content), usn, 0)


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _trash(trash: Trash) -> dict[str, bytes]:
    return {e.name: trash.path_of(e).read_bytes() for e in trash.entries()}


def _batches(folder: UserFolder) -> list[tuple[mj.Batch, bytes]]:
    return [(mj.Batch.from_header(r.header), r.data) for r in read_records(folder.media_journal)]


def test_a_batch_changes_no_media_name_before_the_commit(tmp_path: Path) -> None:
    folder, trash = _user(tmp_path)
    media = folder.media
    for name, data in [("old.txt", b"old"), ("old2.txt", b"old2"), ("gone.txt", b"bye"),
                       ("orphan.txt", b"not in the index")]:
        (media / name).write_bytes(data)
    big = _staged(media, b"streamed")
    changes = [
        mj.Change("old.txt", big, 7, _entry("old.txt", b"old")),
        mj.Change("old2.txt", staging.StagedFile.in_memory(b"new2"), 8, _entry("old2.txt", b"old2")),
        mj.Change("fresh.txt", staging.StagedFile.in_memory(b"fresh"), 9),
        mj.Change("gone.txt", None, 10, _entry("gone.txt", b"bye")),
        mj.Change("never-existed.txt", None, 11, _entry("never-existed.txt", b"?")),
        mj.Change("orphan.txt", staging.StagedFile.in_memory(b"adopted"), 12),
    ]
    index = _index(6, ("old.txt", b"streamed", 7))
    log = log_format.MediaLog(folder)
    with mj.FileJournal(folder, trash, log) as journal:
        journal.prepare(changes, index)
        [(batch, data)] = _batches(folder)  # logged and flushed before the commit
        assert batch.index == index
        assert [(f.name, f.sha1, f.usn, f.trash_id is not None, f.source is not None)
                for f in batch.files] == [
            ("old.txt", _sha1(b"streamed"), 7, True, True),  # a staged file: renamed in
            ("old2.txt", _sha1(b"new2"), 8, True, False),  # small files: their bytes logged
            ("fresh.txt", _sha1(b"fresh"), 9, False, False), ("gone.txt", None, 10, True, False),
            ("orphan.txt", _sha1(b"adopted"), 12, False, False),  # nothing the index had: not kept
        ]  # never-existed.txt: nothing to do on disk, not logged
        assert data == b"new2freshadopted"
        assert {n: d for n, d in _contents(media).items() if not is_media_temp_name(n)} == {
            "old.txt": b"old", "old2.txt": b"old2", "gone.txt": b"bye",
            "orphan.txt": b"not in the index"}
    assert journal.committed and journal.owned == {big.path} and journal.unplaced
    journal.place()
    assert _contents(media) == {"old.txt": b"streamed", "old2.txt": b"new2", "fresh.txt": b"fresh",
                                "orphan.txt": b"adopted"}
    assert _trash(trash) == {"old.txt": b"old", "old2.txt": b"old2", "gone.txt": b"bye"}
    assert {media / "old2.txt", media / "fresh.txt", media / "orphan.txt"} == log.pending
    log.checkpoint()
    assert folder.media_journal.read_bytes() == b"" and not log.pending
    log.close()


def test_a_failed_batch_cuts_its_record_and_changes_no_name(tmp_path: Path) -> None:
    folder, trash = _user(tmp_path)
    (folder.media / "a.txt").write_bytes(b"A")
    streamed = _staged(folder.media, b"streamed")
    log = log_format.MediaLog(folder)
    with mj.FileJournal(folder, trash, log) as journal:
        journal.prepare([mj.Change("z.txt", staging.StagedFile.in_memory(b"Z"), 1)],
                        _index(0, ("z.txt", b"Z", 1)))
    journal.place()
    kept = folder.media_journal.stat().st_size
    changes = [
        mj.Change("new.txt", staging.StagedFile.in_memory(b"N"), 2),
        mj.Change("a.txt", staging.StagedFile.in_memory(b"A2"), 3, _entry("a.txt", b"A")),
        mj.Change("s.txt", streamed, 4),
    ]
    with pytest.raises(RuntimeError), mj.FileJournal(folder, trash, log) as journal:
        journal.prepare(changes, _index(1, ("a.txt", b"A2", 3)))
        raise RuntimeError("the commit failed")
    # A staged upload file stays the caller's to discard; the earlier batch stays logged.
    assert _contents(folder.media) == {"a.txt": b"A", "z.txt": b"Z",
                                       streamed.path.name: b"streamed"}
    assert journal.owned == set() and not journal.committed
    assert folder.media_journal.stat().st_size == kept == log.size
    assert [b.index.usn for b, _ in _batches(folder)] == [1] and trash.entries() == []
    log.close()


def test_a_batch_refuses_a_directory_before_touching_anything(tmp_path: Path) -> None:
    folder, trash = _user(tmp_path)
    (folder.media / "dir").mkdir()
    changes = [mj.Change("x.txt", staging.StagedFile.in_memory(b"X"), 1),
               mj.Change("dir", staging.StagedFile.in_memory(b"D"), 2)]
    log = log_format.MediaLog(folder)
    with pytest.raises(IsADirectoryError), mj.FileJournal(folder, trash, log) as journal:
        journal.prepare(changes, _index(0, ("x.txt", b"X", 1), ("dir", b"D", 2)))
    assert [p.name for p in folder.media.iterdir()] == ["dir"]
    assert not folder.media_journal.exists() or folder.media_journal.read_bytes() == b""


def test_an_empty_batch_logs_nothing(tmp_path: Path) -> None:
    folder, trash = _user(tmp_path)
    log = log_format.MediaLog(folder)
    with mj.FileJournal(folder, trash, log) as journal:
        journal.prepare([], IndexChanges(1, [], Totals(1, 0, 0)))
    assert not folder.media_journal.exists() and not log.unsettled


def test_without_a_trash_deleted_and_replaced_files_are_removed(tmp_path: Path) -> None:
    folder, _ = _user(tmp_path)
    trash = Trash(folder.media_trash, days=0)
    (folder.media / "a.txt").write_bytes(b"A")
    (folder.media / "b.txt").write_bytes(b"B")
    changes = [mj.Change("a.txt", staging.StagedFile.in_memory(b"A2"), 3, _entry("a.txt", b"A")),
               mj.Change("b.txt", None, 4, _entry("b.txt", b"B"))]
    log = log_format.MediaLog(folder)
    with mj.FileJournal(folder, trash, log) as journal:
        journal.prepare(changes, _index(2, ("a.txt", b"A2", 3)))
    journal.place()
    log.checkpoint()
    log.close()
    assert _contents(folder.media) == {"a.txt": b"A2"}
    assert not folder.media_trash.exists()


def test_flush_all_syncs_files_and_folders_and_reports_an_error(tmp_path: Path) -> None:
    staged = [_staged(tmp_path, bytes([i]) * 100) for i in range(5)]
    fds = [os.open(s.path, os.O_RDONLY) for s in staged if s.path is not None]
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        staging.flush_all(fds, [folder])  # no error; contents untouched
    finally:
        for fd in [*fds, folder]:
            os.close(fd)
    assert [s.path.read_bytes() for s in staged if s.path] == [bytes([i]) * 100 for i in range(5)]
    with pytest.raises(OSError):
        staging.flush_all([fds[0], fds[1]], [])  # closed descriptors




def test_records_are_read_back_up_to_the_first_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / "log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        end = log_format.write_at(fd, 0, log_format.encode(b"one", [b"1", b"11"]))
        end = log_format.write_at(fd, end, log_format.encode(b"two", []))
        log_format.write_at(fd, end, log_format.encode(b"three", [b"333"]))
    finally:
        os.close(fd)
    assert [(r.header, r.data) for r in read_records(path)] == [
        (b"one", b"111"), (b"two", b""), (b"three", b"333")]
    raw = path.read_bytes()
    path.write_bytes(raw[:-1])  # cut short
    assert [r.header for r in read_records(path)] == [b"one", b"two"]
    damaged = bytearray(raw)
    damaged[21] ^= 1  # a flipped bit in the first record's header (after its 20-byte head)
    path.write_bytes(bytes(damaged))
    assert list(read_records(path)) == []
    assert list(read_records(tmp_path / "absent")) == []


# -- recovery -----------------------------------------------------------------------------
class _Uncommitted(Exception):
    pass


def _recoverable(tmp_path: Path) -> tuple[UserFolder, Trash, MediaIndex, mj.Batch]:
    """A user whose index is at USN 2 (a.txt = A, b.txt = B) and a logged batch 2 → 5:
    a.txt → A2 (A to the trash), b.txt deleted (to the trash), c.txt new (a staged file).
    Nothing placed, the commit not made."""
    folder, trash = _user(tmp_path)
    index = MediaIndex.open(folder.media_db)
    with index.atomic() as writer:
        writer.record_addition("a.txt", _sha1(b"A"), 1)
        writer.record_addition("b.txt", _sha1(b"B"), 1)
    (folder.media / "a.txt").write_bytes(b"A")
    (folder.media / "b.txt").write_bytes(b"B")
    with contextlib.suppress(_Uncommitted), index.atomic() as writer:
        writer.record_addition("a.txt", _sha1(b"A2"), 2)  # what the batch's transaction
        writer.record_deletion("b.txt")  # writes; rolled back here
        writer.record_addition("c.txt", _sha1(b"C"), 1)
        changes = writer.changes()
        raise _Uncommitted
    source = new_media_temp_name()
    (folder.media / source).write_bytes(b"C")
    files = [
        mj.FileChange("a.txt", _sha1(b"A2"), 3, trash.entry_id(1000, 3, _sha1(b"A")),
                      inline=(0, 2)),
        mj.FileChange("b.txt", None, 4, trash.entry_id(1000, 4, _sha1(b"B"))),
        mj.FileChange("c.txt", _sha1(b"C"), 5, source=source),
    ]
    batch = mj.Batch(changes, files)
    folder.media_journal.write_bytes(b"".join(log_format.encode(batch.header(), [b"A2"])))
    return folder, trash, index, batch


def _recover(folder: UserFolder, trash: Trash, index: MediaIndex) -> bool:
    media_log = log_format.MediaLog(folder)
    try:
        return recovery.recover(folder, trash, index, media_log)
    finally:
        media_log.close()


def _live(index: MediaIndex) -> dict[str, bytes]:
    return {e.name: e.sha1 for e in index.changes_after(0) if e.live}


def test_recover_replays_a_whole_batch_whose_commit_was_lost(tmp_path: Path) -> None:
    folder, trash, index, _ = _recoverable(tmp_path)
    assert index.last_usn() == 2
    assert _recover(folder, trash, index)
    assert index.last_usn() == 5 and index.live_file_count() == 2
    assert _live(index) == {"a.txt": _sha1(b"A2"), "c.txt": _sha1(b"C")}
    assert _contents(folder.media) == {"a.txt": b"A2", "c.txt": b"C"}
    assert _trash(trash) == {"a.txt": b"A", "b.txt": b"B"}
    assert folder.media_journal.read_bytes() == b""
    assert not _recover(folder, trash, index)  # nothing left to do
    index.close()


def test_recover_drops_a_batch_with_a_staged_file_missing(tmp_path: Path) -> None:
    folder, trash, index, batch = _recoverable(tmp_path)
    source = batch.files[2].source
    assert source is not None
    (folder.media / source).unlink()  # lost before it reached the disk
    assert _recover(folder, trash, index)
    assert index.last_usn() == 2 and _live(index) == {"a.txt": _sha1(b"A"), "b.txt": _sha1(b"B")}
    assert _contents(folder.media) == {"a.txt": b"A", "b.txt": b"B"}
    assert trash.entries() == [] and folder.media_journal.read_bytes() == b""
    index.close()


def test_recover_finishes_a_committed_batch_whatever_was_placed(tmp_path: Path) -> None:
    folder, trash, index, batch = _recoverable(tmp_path)
    index.replay(batch.index)  # committed
    dir_fd = os.open(folder.media, os.O_RDONLY)
    try:  # a.txt half placed: the old one trashed, the new one written in part
        trash.move_in(dir_fd, "a.txt", batch.files[0].trash_id or "")
    finally:
        os.close(dir_fd)
    (folder.media / "a.txt").write_bytes(b"A")  # the first byte of A2, as it happens
    assert _recover(folder, trash, index)
    assert _contents(folder.media) == {"a.txt": b"A2", "c.txt": b"C"}
    assert _trash(trash) == {"a.txt": b"A", "b.txt": b"B"}
    index.close()


def test_recover_leaves_names_a_later_change_owns(tmp_path: Path) -> None:
    """A log that comes back after a crash although its batch was long complete, with b.txt
    added again since (say by the official server): nothing is moved."""
    folder, trash, index, batch = _recoverable(tmp_path)
    index.replay(batch.index)
    with index.atomic() as writer:
        writer.record_addition("b.txt", _sha1(b"B again"), 7)
    (folder.media / "b.txt").write_bytes(b"B again")
    assert _recover(folder, trash, index)
    assert _contents(folder.media) == {"a.txt": b"A2", "b.txt": b"B again", "c.txt": b"C"}
    assert _trash(trash) == {"a.txt": b"A"}
    index.close()


def test_recover_stops_at_a_record_whose_logged_bytes_are_damaged(tmp_path: Path) -> None:
    folder, trash, index, _ = _recoverable(tmp_path)
    raw = bytearray(folder.media_journal.read_bytes())
    raw[-1] ^= 1  # the last byte of A2, the logged content of a.txt
    folder.media_journal.write_bytes(bytes(raw))
    assert _recover(folder, trash, index)
    assert index.last_usn() == 2 and _live(index) == {"a.txt": _sha1(b"A"), "b.txt": _sha1(b"B")}
    index.close()


def test_recover_stops_at_a_torn_record(tmp_path: Path) -> None:
    folder, trash, index, _ = _recoverable(tmp_path)
    raw = folder.media_journal.read_bytes()
    folder.media_journal.write_bytes(raw[:-1])
    assert _recover(folder, trash, index)
    assert index.last_usn() == 2 and folder.media_journal.read_bytes() == b""
    assert {n for n in _contents(folder.media) if not is_media_temp_name(n)} == {"a.txt", "b.txt"}
    index.close()


def test_a_journal_of_the_previous_version_is_still_recovered(tmp_path: Path) -> None:
    """Before the trash, replaced and deleted files went to backup temp names before the commit
    and new files straight to their names."""
    folder, trash = _user(tmp_path)
    index = MediaIndex.open(folder.media_db)
    media = folder.media
    backup_a, backup_b = new_media_temp_name(), new_media_temp_name()

    def crashed() -> None:
        for name, data in [(backup_a, b"A"), ("a.txt", b"A2"), (backup_b, b"B"), ("c.txt", b"C")]:
            (media / name).write_bytes(data)
        folder.media_journal.write_bytes(orjson.dumps({"usn": 5, "entries": [
            ["a.txt", backup_a, _sha1(b"A2").hex()], ["b.txt", backup_b, None],
            ["c.txt", None, _sha1(b"C").hex()]]}))

    crashed()  # not committed (the index is at 0): undone
    assert _recover(folder, trash, index)
    assert _contents(media) == {"a.txt": b"A", "b.txt": b"B"}
    for name in ("a.txt", "b.txt"):
        (media / name).unlink()
    with index.atomic() as writer:
        writer.totals.last_usn = 5
    crashed()  # committed: only the backups go
    assert _recover(folder, trash, index)
    assert _contents(media) == {"a.txt": b"A2", "c.txt": b"C"}
    assert folder.media_journal.read_bytes() == b""
    index.close()


def test_remove_stray_temps_spares_names_in_use_and_other_files(tmp_path: Path) -> None:
    stray = (tmp_path / new_media_temp_name())
    stray.write_bytes(b"crash leftover")
    claimed = (tmp_path / new_media_temp_name())
    claimed.write_bytes(b"a user's file that happens to look like a temp")
    (tmp_path / ".ankihost-tmp-not-hex").write_bytes(b"user file")
    (tmp_path / "photo.jpg").write_bytes(b"user file")
    removed = recovery.remove_stray_temps(tmp_path, lambda name: name == claimed.name)
    assert removed == 1 and not stray.exists() and claimed.exists()
    assert (tmp_path / ".ankihost-tmp-not-hex").exists() and (tmp_path / "photo.jpg").exists()


def test_sha1_of_file_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"abc")
    assert staging.sha1_of_file(tmp_path / "real") == hashlib.sha1(b"abc").digest()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError):
        staging.open_for_reading(tmp_path / "link")


def test_batches_of_several_users_share_the_sync_threads(tmp_path: Path) -> None:
    def user(n: int) -> dict[str, bytes]:
        folder, trash = _user(tmp_path, f"u{n}")
        log = log_format.MediaLog(folder)
        for batch in range(5):
            changes = [mj.Change(f"{batch}-{i}", staging.StagedFile.in_memory(b"%d" % (n * i)), i)
                       for i in range(10)]
            with mj.FileJournal(folder, trash, log) as journal:
                journal.prepare(changes, _index(batch, (f"{batch}-0", b"0", batch + 1)))
            journal.place()
        log.checkpoint()
        log.close()
        return _contents(folder.media)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(user, range(4)))
    for n, contents in enumerate(results):
        assert contents == {f"{b}-{i}": b"%d" % (n * i) for b in range(5) for i in range(10)}


def test_a_file_written_over_is_a_new_file_so_a_hard_link_keeps_the_old_content(tmp_path: Path) -> None:
    """Backups and exports freeze media as hard links: placing a new version must never rewrite
    the old one in place (with the trash off, or for a change without an old row)."""
    from ankihost.media.journal import write_file_at

    (tmp_path / "a.jpg").write_bytes(b"old version")
    os.link(tmp_path / "a.jpg", tmp_path / "frozen.jpg")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_file_at(fd, "a.jpg", b"new")
    finally:
        os.close(fd)
    assert (tmp_path / "a.jpg").read_bytes() == b"new"
    assert (tmp_path / "frozen.jpg").read_bytes() == b"old version"
