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

from ankihost.media import names, staging, sync
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
# `os._exit` at its crash point. NEW_UPLOAD's files are written in its order: x.txt's temp
# (call 1), w.txt's temp (2), then the journal (3).
CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from ankihost.media import journal, staging, sync, trash
    from tests.support.states import make_state

    root, point, bodies = Path(sys.argv[1]), sys.argv[2], [Path(a) for a in sys.argv[3:]]
    state = make_state(root, host_key="{host_key}")
    if point != "recovery interrupted":
        state.media.index()
        for body in bodies[:-1]:
            with body.open("rb") as f:
                sync.apply_upload(state.media, f)

    def crash(*args, **kwargs):
        os._exit({code})

    def after(owner, name):
        original = getattr(owner, name)
        def patched(*args, **kwargs):
            original(*args, **kwargs)
            crash()
        setattr(owner, name, patched)

    def on_call(owner, name, number, *, after_it=False):
        original, calls = getattr(owner, name), []
        def patched(*args, **kwargs):
            calls.append(1)
            if len(calls) == number and not after_it:
                crash()
            result = original(*args, **kwargs)
            if len(calls) == number:
                crash()
            return result
        setattr(owner, name, patched)

    def half_write(number):
        write_all, calls = staging.write_all, []
        def half(fd, data):
            calls.append(1)
            if len(calls) == number:
                write_all(fd, bytes(data[: len(data) // 2]))
                crash()
            write_all(fd, data)
        staging.write_all = half

    if point == "temp half written":
        half_write(2)
    elif point == "files written, journal not":
        on_call(journal.FileJournal, "_open_journal", 1)
    elif point == "journal half written":
        half_write(3)
    elif point == "journal written, not flushed":
        on_call(staging, "flush_all", 1)
    elif point == "flushed, not committed":
        after(journal.FileJournal, "_write_durably")
    elif point == "committed, not placed":
        on_call(journal.FileJournal, "_after_commit", 1)
    elif point == "between placements":
        on_call(journal, "place", 2)
    elif point == "trash folder made, file not moved":
        on_call(trash.os, "rename", 1)
    elif point == "settled, journal not cleared":
        on_call(journal, "clear_journal", 1)
    elif point == "recovery interrupted":
        on_call(journal, "place", 2)
    state.media.index()  # recovery runs here ("recovery interrupted")
    if point != "recovery interrupted":
        with bodies[-1].open("rb") as f:
            sync.apply_upload(state.media, f)
        if point == "placed, not settled":
            crash()
        state.media.close()  # settles
    sys.exit(0)
    """
).format(code=CRASH_CODE, host_key=HOST_KEY)

BEFORE_JOURNAL = ["temp half written", "files written, journal not", "journal half written"]
# From here on the batch is whole on disk (a kill keeps what was written): recovery finishes it.
AFTER_JOURNAL = [
    "journal written, not flushed", "flushed, not committed", "committed, not placed",
    "between placements", "trash folder made, file not moved", "placed, not settled",
    "settled, journal not cleared",
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
    return all(not p.exists() or p.read_bytes() == b"" for p in state.folder.media_journals)


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


@pytest.mark.parametrize("point", BEFORE_JOURNAL + AFTER_JOURNAL)
def test_a_crash_leaves_the_old_or_the_new_state(
    state: UserState, point: str, tmp_path: Path
) -> None:
    old_then_crash(state, point, tmp_path)
    if point in BEFORE_JOURNAL:
        assert assert_consistent(state, OLD_STATE, set()) == 3
    else:
        assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6
    # The store keeps working: the same upload again gives the new state (nothing more to trash).
    apply(state, NEW_UPLOAD)
    state.media.settle()
    assert_consistent(state, NEW_STATE, NEW_TRASH)


def test_nothing_under_a_media_name_changes_before_the_commit(
    state: UserState, tmp_path: Path
) -> None:
    old_then_crash(state, "flushed, not committed", tmp_path)
    folder = state.folder.media
    assert {p.name: p.read_bytes() for p in folder.iterdir() if not is_media_temp_name(p.name)} \
        == OLD_STATE
    assert sorted(p.read_bytes() for p in folder.iterdir() if is_media_temp_name(p.name)) == [
        b"w is new", b"x version 2, longer"]
    assert not journal_cleared(state)


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
def test_a_commit_lost_after_placing_is_replayed_from_the_journal(
    state: UserState, tmp_path: Path
) -> None:
    apply(state, OLD_UPLOAD)
    state.media.close()
    before = tmp_path / "media.db.before"
    shutil.copy(state.folder.media_db, before)
    assert run_child(state, "placed, not settled", tmp_path) == CRASH_CODE
    # The index's commit had not reached the disk: media.db as it was, its WAL gone.
    for sidecar in ("-wal", "-shm"):
        Path(f"{state.folder.media_db}{sidecar}").unlink(missing_ok=True)
    shutil.copy(before, state.folder.media_db)
    assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6


def test_a_new_file_lost_before_the_commit_drops_the_batch(
    state: UserState, tmp_path: Path
) -> None:
    old_then_crash(state, "journal written, not flushed", tmp_path)
    journal = json.loads(state.folder.media_journals[0].read_bytes())
    w_source = next(f[1] for f in journal["files"] if f[0] == "w.txt")
    (state.folder.media / w_source).write_bytes(b"w is")  # its data never reached the disk
    assert assert_consistent(state, OLD_STATE, set()) == 3


def test_a_torn_journal_is_a_batch_that_never_committed(
    state: UserState, tmp_path: Path
) -> None:
    old_then_crash(state, "flushed, not committed", tmp_path)
    raw = state.folder.media_journals[0].read_bytes()
    state.folder.media_journals[0].write_bytes(raw[: len(raw) // 2])
    assert assert_consistent(state, OLD_STATE, set()) == 3


def test_a_failed_commit_leaves_nothing_behind(state: UserState, tmp_path: Path) -> None:
    apply(state, OLD_UPLOAD)
    index = state.media.index()
    # The commit's last write fails, after the files and the journal were made durable.
    index.db.execute("create trigger refuse before update on meta begin "
                     "select raise(abort, 'refused'); end")
    with pytest.raises(Exception, match="refused"):
        apply(state, NEW_UPLOAD)
    index.db.execute("drop trigger refuse")
    assert state.folder.media_journals[1].read_bytes() == b""  # the failed batch's journal
    assert assert_consistent(state, OLD_STATE, set()) == 3


# -- two batches in a row: the first is unsettled while the second runs ------------------------
SECOND_BATCH_POINTS = [
    ("temp half written", NEW_STATE, NEW_TRASH),
    ("journal written, not flushed", NEXT_STATE, NEXT_TRASH),
    ("flushed, not committed", NEXT_STATE, NEXT_TRASH),
    ("between placements", NEXT_STATE, NEXT_TRASH),
    ("placed, not settled", NEXT_STATE, NEXT_TRASH),
]


@pytest.mark.parametrize(("point", "expected", "in_trash"), SECOND_BATCH_POINTS)
def test_a_crash_in_the_next_batch_keeps_the_unsettled_one(
    state: UserState, point: str, expected: dict[str, bytes], in_trash: set[tuple[str, bytes]],
    tmp_path: Path,
) -> None:
    apply(state, OLD_UPLOAD)
    uploads = (NEW_UPLOAD, NEXT_UPLOAD)
    assert run_child(state, point, tmp_path, uploads) == CRASH_CODE
    assert assert_consistent(state, expected, in_trash) == (6 if expected is NEW_STATE else 8)


def test_batches_take_turns_with_the_two_journals(state: UserState) -> None:
    first, second = state.folder.media_journals
    apply(state, OLD_UPLOAD)
    assert first.read_bytes() != b"" and not second.exists()  # unsettled: its journal is kept
    apply(state, NEW_UPLOAD)
    assert json.loads(second.read_bytes())["before"] == 3  # the first one is left alone
    assert json.loads(first.read_bytes())["before"] == 0
    apply(state, NEXT_UPLOAD)  # back to the first: the batch it described is durable now
    assert json.loads(first.read_bytes())["before"] == 6
    state.media.settle()
    assert journal_cleared(state) and state.media.unsettled_for() is None


def test_a_commit_lost_in_the_batch_before_a_torn_journal_is_replayed(
    state: UserState, tmp_path: Path
) -> None:
    """Power cut while the second batch flushed: its journal torn, and the first batch's
    commit (not flushed yet: the second batch's round would have done it) lost."""
    apply(state, OLD_UPLOAD)
    state.media.close()
    before = tmp_path / "media.db.before"
    shutil.copy(state.folder.media_db, before)
    uploads = (NEW_UPLOAD, NEXT_UPLOAD)
    assert run_child(state, "flushed, not committed", tmp_path, uploads) == CRASH_CODE
    torn = state.folder.media_journals[1]
    torn.write_bytes(torn.read_bytes()[:40])
    for sidecar in ("-wal", "-shm"):
        Path(f"{state.folder.media_db}{sidecar}").unlink(missing_ok=True)
    shutil.copy(before, state.folder.media_db)
    assert assert_consistent(state, NEW_STATE, NEW_TRASH) == 6


def test_the_journals_are_cleared_once_settled_and_live_outside_media(
    state: UserState,
) -> None:
    apply(state, OLD_UPLOAD)
    state.media.settle()
    for journal in state.folder.media_journals:  # kept for the next batches, empty
        assert not journal.exists() or journal.read_bytes() == b""
        assert journal.parent == state.folder.root
        assert names.addition_problem(journal.name) is None  # a legal media name, so they must
        assert journal.parent != state.folder.media  # live outside media/
    assert state.folder.media_journals[0].name == MEDIA_JOURNAL_NAME


def test_the_next_batch_flushes_what_the_previous_one_left(
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
    apply(state, NEXT_UPLOAD)
    folder = state.folder
    entries = {str(folder.media_trash / e.id) for e in state.media.trash.entries()
               if (e.name, folder.media_trash.joinpath(e.id, e.name).read_bytes()) in NEW_TRASH}
    assert len(flushed) == 1 and len(entries) == 2
    assert {f"{folder.media_db}-wal", str(folder.media), str(folder.media_journals[0]),
            str(folder.media_trash), str(folder.root), *entries} <= flushed[0]
