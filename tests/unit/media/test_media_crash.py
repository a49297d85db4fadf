"""Crash safety of an upload: a real subprocess applies an upload and dies (`os._exit`) at each
dangerous point; reopening the index must leave folder and index agreeing, byte for byte, with
either the old or the new state — never a mix.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ankihost.media import names, sync
from ankihost.registry import UserState
from ankihost.storage.paths import MEDIA_JOURNAL_NAME
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

# The child applies NEW_UPLOAD with one function patched to `os._exit` at its crash point.
CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from ankihost.media import journal, staging, sync
    from tests.support.states import make_state

    root, point, body = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def crash(*args, **kwargs):
        os._exit({code})

    def after(cls, name):
        original = getattr(cls, name)
        def patched(*args, **kwargs):
            original(*args, **kwargs)
            crash()
        setattr(cls, name, patched)

    def on_call(cls, name, number):
        original, calls = getattr(cls, name), []
        def patched(*args, **kwargs):
            calls.append(1)
            if len(calls) == number:
                crash()
            return original(*args, **kwargs)
        setattr(cls, name, patched)

    if point == "journal written":
        after(journal.FileJournal, "_write_journal")
    elif point == "direct file half written":
        write_all, calls = staging.write_all, []
        def half(fd, data):  # 1: the journal, 2: x.txt's temp file, 3: w.txt under its name
            calls.append(1)
            if len(calls) == 3:
                write_all(fd, bytes(data[: len(data) // 2]))
                crash()
            write_all(fd, data)
        staging.write_all = half
    elif point == "files written, not placed":
        after(journal.FileJournal, "_write_files")
    elif point == "between renames":
        on_call(journal.FileJournal, "_apply_one", 2)
    elif point == "renamed, not committed":
        after(journal.FileJournal, "apply")
    elif point == "committed, not cleaned up":
        journal.FileJournal._forget_backups = crash
    elif point == "backups removed, journal left":
        journal._clear_journal = crash
    elif point == "undo interrupted":
        on_call(journal.os, "replace", 2)
    state = make_state(root, host_key="{host_key}")
    index = state.media.index()  # recovery runs here ("undo interrupted")
    if point != "undo interrupted":
        with body.open("rb") as f:
            sync.apply_upload(index, state.folder, f)
    sys.exit(0)
    """
).format(code=CRASH_CODE, host_key=HOST_KEY)

BEFORE_COMMIT = [
    "journal written", "direct file half written", "files written, not placed", "between renames",
    "renamed, not committed",
]
AFTER_COMMIT = ["committed, not cleaned up", "backups removed, journal left"]


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
    return sync.apply_upload(state.media.index(), state.folder, io.BytesIO(upload_zip(entries)))


def run_child(state: UserState, point: str, tmp_path: Path) -> int:
    state.media.close()
    body = tmp_path / "upload.zip"
    body.write_bytes(upload_zip(NEW_UPLOAD))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(state.folder.root), point, str(body)],
        cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
        timeout=CHILD_TIMEOUT_SECONDS, check=False,
    )
    assert done.returncode in (0, CRASH_CODE), done.stderr.decode()
    return done.returncode


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


def assert_consistent(state: UserState, expected: dict[str, bytes]) -> int:
    on_disk, live, usn = reopened(state)
    assert on_disk == expected  # byte for byte, and no temp or backup file is left
    assert live == {name: (hashlib.sha1(b).digest(), len(b)) for name, b in expected.items()}
    assert state.media.index().live_file_count() == len(expected)
    assert journal_cleared(state)
    return usn


@pytest.mark.parametrize("point", BEFORE_COMMIT + AFTER_COMMIT)
def test_a_crash_leaves_the_old_or_the_new_state(
    state: UserState, point: str, tmp_path: Path
) -> None:
    apply(state, OLD_UPLOAD)
    assert run_child(state, point, tmp_path) == CRASH_CODE
    if point in BEFORE_COMMIT:
        assert assert_consistent(state, OLD_STATE) == 3
    else:
        assert assert_consistent(state, NEW_STATE) == 6
    # The store keeps working: the same upload again gives the new state.
    apply(state, NEW_UPLOAD)
    assert_consistent(state, NEW_STATE)


@pytest.mark.parametrize(
    ("point", "w_on_disk"),
    [("direct file half written", b"w is"), ("files written, not placed", b"w is new")],
)
def test_a_file_written_under_a_new_name_is_removed_if_the_upload_did_not_commit(
    state: UserState, point: str, w_on_disk: bytes, tmp_path: Path
) -> None:
    apply(state, OLD_UPLOAD)
    assert run_child(state, point, tmp_path) == CRASH_CODE
    # w.txt did not exist, so it was written straight to its name: half or whole, unclaimed.
    assert (state.folder.media / "w.txt").read_bytes() == w_on_disk
    assert not journal_cleared(state)
    assert assert_consistent(state, OLD_STATE) == 3


def test_a_crash_while_undoing_is_undone_on_the_next_open(
    state: UserState, tmp_path: Path
) -> None:
    apply(state, OLD_UPLOAD)
    assert run_child(state, "renamed, not committed", tmp_path) == CRASH_CODE
    assert not journal_cleared(state)
    assert run_child(state, "undo interrupted", tmp_path) == CRASH_CODE
    assert assert_consistent(state, OLD_STATE) == 3


def test_without_a_crash_the_child_applies_the_upload(state: UserState, tmp_path: Path) -> None:
    apply(state, OLD_UPLOAD)
    assert run_child(state, "none", tmp_path) == 0
    assert assert_consistent(state, NEW_STATE) == 6


def test_journal_is_cleared_after_a_normal_upload_and_names_are_never_media(
    state: UserState,
) -> None:
    apply(state, OLD_UPLOAD)
    assert state.folder.media_journal.read_bytes() == b""  # kept for the next upload, empty
    assert state.folder.media_journal.parent == state.folder.root
    assert names.addition_problem(MEDIA_JOURNAL_NAME) is None  # a legal media name, so it must
    assert state.folder.media_journal.parent != state.folder.media  # live outside media/
