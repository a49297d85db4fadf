"""Crash safety of a media batch: a real subprocess applies an upload and dies (`os._exit`) at
each dangerous point; reopening the index must leave folder, index and trash agreeing, byte for
byte, with either the old or the new state — never a mix. A power cut, which can also lose
what was written but not flushed, is simulated by taking that away from the crashed state.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ankihost.media import journal, names, staging, sync
from ankihost.media.log import read_records
from ankihost.registry import UserState
from ankihost.storage.paths import MEDIA_JOURNAL_NAME, is_media_temp_name
from tests.support.states import make_state

REPO_ROOT = Path(__file__).resolve().parents[3]
HOST_KEY = "13e56c1cee7ca0701c9e597d9c63da8615c981b3"
CRASH_CODE = 9
CHILD_TIMEOUT_SECONDS = 60

OLD_UPLOAD: list[tuple[str, bytes | None]] = [
    ("x.txt", b"x version 1"), ("y.txt", b"y lives"), ("z.txt", b"z untouched"),
]
NEW_UPLOAD: list[tuple[str, bytes | None]] = [
    ("x.txt", b"x version 2, longer"), ("y.txt", None), ("w.txt", b"w is new"),
]
OLD_STATE = {"x.txt": b"x version 1", "y.txt": b"y lives", "z.txt": b"z untouched"}
NEW_STATE = {"x.txt": b"x version 2, longer", "z.txt": b"z untouched", "w.txt": b"w is new"}
# What the new state keeps in the trash: the replaced x.txt and the deleted y.txt.
NEW_TRASH = {("x.txt", b"x version 1"), ("y.txt", b"y lives")}
# A second batch right after NEW_UPLOAD (while that one is still unsettled).
NEXT_UPLOAD: list[tuple[str, bytes | None]] = [("z.txt", b"z version 2"), ("w.txt", None)]
NEXT_STATE = {"x.txt": b"x version 2, longer", "z.txt": b"z version 2"}
NEXT_TRASH = NEW_TRASH | {("z.txt", b"z untouched"), ("w.txt", b"w is new")}

# The child applies the uploads it is given, the last one with one function patched to
# `os._exit` at its crash point.
CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from ankihost.media import journal, log, recovery, staging, sync, trash
    from tests.support.states import make_state

    root, point, bodies = Path(sys.argv[1]), sys.argv[2], [Path(a) for a in sys.argv[3:]]
    state = make_state(root, host_key="{host_key}")
    if point != "recovery interrupted":
        state.media.index()
        for body in bodies[:-1]:
            with body.open("rb") as f:
                sync.apply_upload(state.media, f)
            state.media.place()  # what the reply's follow-up does

    def crash(*args, **kwargs):
        os._exit({code})

    def after(owner, name):
        original = getattr(owner, name)
        def patched(*args, **kwargs):
            original(*args, **kwargs)
            crash()
        setattr(owner, name, patched)

    def on_call(owner, name, number):
        original, calls = getattr(owner, name), []
        def patched(*args, **kwargs):
            calls.append(1)
            if len(calls) == number:
                crash()
            return original(*args, **kwargs)
        setattr(owner, name, patched)

    def half_record(fd, offset, pieces):  # the record half written, then the process dies
        data = b"".join(bytes(piece) for piece in pieces)
        os.pwrite(fd, data[: len(data) // 2], offset)
        crash()

    def half_file(fd, data):  # a placed file half written, then the process dies
        os.write(fd, bytes(data[: len(data) // 2]))
        crash()

    if point == "before the record":
        on_call(log, "write_at", 1)
    elif point == "record half written":
        log.write_at = half_record
    elif point == "record written, not flushed":
        on_call(journal.os, "fdatasync", 1)  # the log's flush
    elif point == "flushed, not committed":
        after(journal.FileJournal, "_write_durably")
    elif point == "committed, not placed":
        on_call(journal.FileJournal, "place", 1)
    elif point == "between placements":
        on_call(journal.FileJournal, "_place", 2)
    elif point == "trash folder made, file not moved":
        on_call(trash.os, "rename", 1)
    elif point == "new file half written":
        staging.write_all = half_file
    elif point == "checkpoint flushed, log not emptied":
        on_call(journal.os, "ftruncate", 1)
    elif point == "recovery interrupted":
        on_call(recovery, "_redo", 2)
    state.media.index()  # recovery runs here ("recovery interrupted")
    if point != "recovery interrupted":
        with bodies[-1].open("rb") as f:
            sync.apply_upload(state.media, f)
        if point == "replied, not placed":
            crash()
        state.media.place()  # what the reply's follow-up does
        if point == "placed, not checkpointed":
            crash()
        state.media.close()  # checkpoints
    sys.exit(0)
    """
).format(code=CRASH_CODE, host_key=HOST_KEY)

BEFORE_RECORD = ["before the record", "record half written"]
# From here on the batch is whole in the log (a kill keeps what was written): recovery ends it.
AFTER_RECORD = [
    "record written, not flushed", "flushed, not committed", "committed, not placed",
    "replied, not placed", "between placements", "trash folder made, file not moved",
    "new file half written", "placed, not checkpointed", "checkpoint flushed, log not emptied",
]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[UserState]:
    user_state = make_state(tmp_path / "alice", host_key=HOST_KEY)
    yield user_state
    user_state.media.close()


def upload_zip(entries: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    listed: list[list[str | None]] = []
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, content) in enumerate(entries):
            if content is None:
                listed.append([name, None])
            else:
                zf.writestr(str(i), content)
                listed.append([name, str(i)])
        zf.writestr("_meta", json.dumps(listed))
    return buf.getvalue()


def apply(state: UserState, entries: list[tuple[str, bytes | None]]) -> tuple[int, int]:
    return sync.apply_upload(state.media, io.BytesIO(upload_zip(entries)))


def run_child(
    state: UserState, point: str, tmp_path: Path,
    uploads: tuple[list[tuple[str, bytes | None]], ...] = (NEW_UPLOAD,),
) -> int:
    state.media.close()
    bodies = []
    for n, entries in enumerate(uploads):
        bodies.append(tmp_path / f"upload{n}.zip")
        bodies[-1].write_bytes(upload_zip(entries))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(state.folder.root), point, *map(str, bodies)],
        cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
        timeout=CHILD_TIMEOUT_SECONDS, check=False,
    )
    assert done.returncode in (0, CRASH_CODE), done.stderr.decode()
    return done.returncode


def trashed(state: UserState) -> set[tuple[str, bytes]]:
    trash = state.media.trash
    return {(e.name, trash.path_of(e).read_bytes()) for e in trash.entries()}


def reopened(state: UserState) -> tuple[dict[str, bytes], dict[str, tuple[bytes, int]], int]:
    """(media folder contents, live index rows as (sha1, size), last USN) after recovery."""
    state.media.close()
    index = state.media.index()
    live = {e.name: (e.sha1, e.size) for e in index.changes_after(0) if e.live}
    on_disk = {p.name: p.read_bytes() for p in state.folder.media.iterdir()}
    return on_disk, live, index.last_usn()


def journal_cleared(state: UserState) -> bool:
    path = state.folder.media_journal
    return not path.exists() or path.read_bytes() == b""


def assert_consistent(
    state: UserState, expected: dict[str, bytes], in_trash: set[tuple[str, bytes]]
) -> int:
    on_disk, live, usn = reopened(state)
    assert on_disk == expected  # byte for byte, and no temp file is left
    assert live == {name: (hashlib.sha1(b).digest(), len(b)) for name, b in expected.items()}
    assert state.media.index().live_file_count() == len(expected)
    assert journal_cleared(state)
    assert trashed(state) == in_trash
    leftovers = [p.name for p in state.folder.media_trash.glob("*") if not any(p.iterdir())]
    assert leftovers == []  # no empty or half-removed entry
    return usn


def old_then_crash(state: UserState, point: str, tmp_path: Path) -> None:
    apply(state, OLD_UPLOAD)
    assert run_child(state, point, tmp_path) == CRASH_CODE


@pytest.mark.parametrize("point", BEFORE_RECORD + AFTER_RECORD)
def test_a_crash_leaves_the_old_or_the_new_state(
    state: UserState, point: str, tmp_path: Path
) -> None:
    old_then_crash(state, point, tmp_path)
    if point in BEFORE_RECORD:
        assert assert_consistent(state, OLD_STATE, set()) == 3
    else:
        assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6
    # The store keeps working: the same upload again gives the new state (nothing more to trash).
    apply(state, NEW_UPLOAD)
    state.media.settle()
    assert_consistent(state, NEW_STATE, NEW_TRASH)


@pytest.mark.parametrize("point", ["record written, not flushed", "flushed, not committed"])
def test_nothing_under_a_media_name_changes_before_the_commit(
    state: UserState, point: str, tmp_path: Path
) -> None:
    old_then_crash(state, point, tmp_path)
    assert {p.name: p.read_bytes() for p in state.folder.media.iterdir()} == OLD_STATE
    assert not journal_cleared(state)  # the batch is in the log, with its files' bytes
    log = state.folder.media_journal.read_bytes()
    assert b"x version 2, longer" in log and b"w is new" in log


def test_a_crash_while_recovering_is_recovered_from_on_the_next_open(
    state: UserState, tmp_path: Path
) -> None:
    old_then_crash(state, "committed, not placed", tmp_path)
    assert run_child(state, "recovery interrupted", tmp_path) == CRASH_CODE
    assert not journal_cleared(state)
    assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6


def test_without_a_crash_the_child_applies_the_upload(state: UserState, tmp_path: Path) -> None:
    apply(state, OLD_UPLOAD)
    assert run_child(state, "none", tmp_path) == 0
    assert journal_cleared(state)
    assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6


# -- a power cut: what was not flushed may be lost too ----------------------------------------
def lose_commit(state: UserState, before: Path) -> None:
    """The index's commits since `before` (a copy of media.db) never reached the disk."""
    for sidecar in ("-wal", "-shm"):
        Path(f"{state.folder.media_db}{sidecar}").unlink(missing_ok=True)
    shutil.copy(before, state.folder.media_db)


def snapshot_index(state: UserState, tmp_path: Path) -> Path:
    state.media.close()  # checkpointed: media.db holds everything
    before = tmp_path / "media.db.before"
    shutil.copy(state.folder.media_db, before)
    return before


def test_a_commit_lost_after_placing_is_replayed_from_the_log(
    state: UserState, tmp_path: Path
) -> None:
    apply(state, OLD_UPLOAD)
    before = snapshot_index(state, tmp_path)
    assert run_child(state, "placed, not checkpointed", tmp_path) == CRASH_CODE
    lose_commit(state, before)
    assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6


def test_placed_files_lost_before_the_checkpoint_are_rewritten_from_the_log(
    state: UserState, tmp_path: Path
) -> None:
    old_then_crash(state, "placed, not checkpointed", tmp_path)
    (state.folder.media / "w.txt").unlink()  # its name never reached the disk
    (state.folder.media / "x.txt").write_bytes(b"x vers")  # nor all of its data
    assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6


def test_a_torn_record_is_a_batch_that_never_committed(state: UserState, tmp_path: Path) -> None:
    old_then_crash(state, "flushed, not committed", tmp_path)
    raw = state.folder.media_journal.read_bytes()
    state.folder.media_journal.write_bytes(raw[: len(raw) - 3])
    assert assert_consistent(state, OLD_STATE, set()) == 3


BIG = bytes(range(256)) * 5000  # over archive.IN_MEMORY_FILE_BYTES: staged to a temp file


def test_a_staged_file_lost_before_the_commit_drops_the_batch(
    state: UserState, tmp_path: Path
) -> None:
    apply(state, OLD_UPLOAD)
    assert run_child(state, "record written, not flushed", tmp_path,
                     ([("big.bin", BIG), ("w.txt", b"w is new")],)) == CRASH_CODE
    staged = [p for p in state.folder.media.iterdir() if is_media_temp_name(p.name)]
    assert len(staged) == 1 and staged[0].read_bytes() == BIG
    staged[0].write_bytes(BIG[:1000])  # its data never reached the disk
    assert assert_consistent(state, OLD_STATE, set()) == 3


def test_a_staged_file_is_placed_by_its_rename(state: UserState, tmp_path: Path) -> None:
    apply(state, OLD_UPLOAD)
    assert run_child(state, "committed, not placed", tmp_path,
                     ([("big.bin", BIG), ("x.txt", b"x3")],)) == CRASH_CODE
    expected = {**OLD_STATE, "big.bin": BIG, "x.txt": b"x3"}
    assert assert_consistent(state, expected, {("x.txt", b"x version 1")}) == 5


def test_a_failed_commit_leaves_nothing_behind(state: UserState) -> None:
    apply(state, OLD_UPLOAD)
    state.media.settle()
    index = state.media.index()
    # The commit's last write fails, after the batch was logged and flushed.
    index.db.execute("create trigger refuse before update on meta begin "
                     "select raise(abort, 'refused'); end")
    with pytest.raises(Exception, match="refused"):
        apply(state, NEW_UPLOAD)
    index.db.execute("drop trigger refuse")
    assert journal_cleared(state)  # the record was cut from the log
    assert assert_consistent(state, OLD_STATE, set()) == 3


# -- several batches in the log -------------------------------------------------------------
SECOND_BATCH_POINTS = [
    ("record half written", NEW_STATE, NEW_TRASH),
    ("record written, not flushed", NEXT_STATE, NEXT_TRASH),
    ("between placements", NEXT_STATE, NEXT_TRASH),
    ("placed, not checkpointed", NEXT_STATE, NEXT_TRASH),
]


@pytest.mark.parametrize(("point", "expected", "in_trash"), SECOND_BATCH_POINTS)
def test_a_crash_in_the_next_batch_keeps_the_one_before(
    state: UserState, point: str, expected: dict[str, bytes], in_trash: set[tuple[str, bytes]],
    tmp_path: Path,
) -> None:
    apply(state, OLD_UPLOAD)
    uploads = (NEW_UPLOAD, NEXT_UPLOAD)
    assert run_child(state, point, tmp_path, uploads) == CRASH_CODE
    assert assert_consistent(state, expected, in_trash) == (6 if expected is NEW_STATE else 8)


def test_batches_accumulate_in_the_log_until_the_checkpoint(state: UserState) -> None:
    apply(state, OLD_UPLOAD)
    size = state.folder.media_journal.stat().st_size
    apply(state, NEW_UPLOAD)
    assert state.folder.media_journal.stat().st_size > size  # appended
    assert state.media.unsettled_for() is not None
    state.media.settle()
    assert journal_cleared(state) and state.media.unsettled_for() is None


def test_a_full_log_is_checkpointed_before_the_next_batch(
    state: UserState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "LOG_CHECKPOINT_BYTES", 1)
    apply(state, OLD_UPLOAD)
    apply(state, NEW_UPLOAD)  # checkpoints OLD_UPLOAD's record first
    records = list(read_records(state.folder.media_journal))
    assert len(records) == 1 and b"w is new" in records[0].data


def test_commits_lost_before_a_torn_record_are_replayed(state: UserState, tmp_path: Path) -> None:
    """Power cut while the second batch was logged: its record torn, and the first batch's
    commit (not flushed before a checkpoint) lost too."""
    apply(state, OLD_UPLOAD)
    before = snapshot_index(state, tmp_path)
    assert run_child(state, "flushed, not committed", tmp_path, (NEW_UPLOAD, NEXT_UPLOAD)) \
        == CRASH_CODE
    raw = state.folder.media_journal.read_bytes()
    state.folder.media_journal.write_bytes(raw[: len(raw) - 5])
    lose_commit(state, before)
    assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6


def test_the_log_is_emptied_at_the_checkpoint_and_lives_outside_media(
    state: UserState,
) -> None:
    apply(state, OLD_UPLOAD)
    state.media.settle()
    path = state.folder.media_journal
    assert path.read_bytes() == b""  # kept for the next batches, empty
    assert path.parent == state.folder.root and path.name == MEDIA_JOURNAL_NAME
    assert names.addition_problem(path.name) is None  # a legal media name, so it must
    assert path.parent != state.folder.media  # live outside media/


def test_a_checkpoint_flushes_what_the_batches_left(
    state: UserState, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(state, OLD_UPLOAD)
    apply(state, NEW_UPLOAD)  # trashes x.txt and y.txt: new trash folders to flush
    flushed: list[set[str]] = []
    real_flush_all = staging.flush_all

    def flush_all(files: list[int], folders: list[int]) -> None:
        flushed.append({os.readlink(f"/proc/self/fd/{fd}") for fd in [*files, *folders]})
        real_flush_all(files, folders)

    monkeypatch.setattr(staging, "flush_all", flush_all)
    state.media.settle()
    folder = state.folder
    trashed_files = {str(state.media.trash.path_of(e)) for e in state.media.trash.entries()}
    assert len(flushed) == 1 and len(trashed_files) == 2
    assert {f"{folder.media_db}-wal", str(folder.media), str(folder.media / "w.txt"),
            str(folder.media / "x.txt"), str(folder.media / "z.txt"), str(folder.media_trash),
            str(folder.root), *(str(Path(f).parent) for f in trashed_files)} <= flushed[0]
    # The files OLD_UPLOAD wrote and NEW_UPLOAD then trashed are flushed where they are now.
    assert trashed_files <= flushed[0]
