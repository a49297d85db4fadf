"""The media trash: what syncs delete or replace is kept, listed, expired, purged and restored.

Uploads go through the real media batch (`sync.apply_upload`) over a temp user folder; crash
points of a purge and of a restore run in a subprocess that dies (`os._exit`) there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ankihost.media import restore, sync
from ankihost.media.trash import SECONDS_PER_DAY, Trash
from ankihost.registry import UserState
from ankihost.storage.paths import TRASH_PURGE_PREFIX, UserFolder, trash_entry_name
from tests.support.states import make_state

REPO_ROOT = Path(__file__).resolve().parents[3]
CRASH_CODE = 9
CHILD_TIMEOUT_SECONDS = 60


@pytest.fixture
def state(tmp_path: Path) -> Iterator[UserState]:
    user_state = make_state(tmp_path / "alice")
    yield user_state
    user_state.media.close()


def upload(state: UserState, **files: bytes | None) -> int:
    """Upload `files` (None: a deletion) as one batch; the media USN after it."""
    buf = io.BytesIO()
    listed: list[list[str | None]] = []
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, content) in enumerate(files.items()):
            member = None if content is None else str(i)
            if content is not None:
                zf.writestr(str(i), content)
            listed.append([name.replace("_", "."), member])
        zf.writestr("_meta", json.dumps(listed))
    buf.seek(0)
    usn = sync.apply_upload(state.media, buf)[1]
    state.media.place()  # what the upload reply's follow-up does
    return usn


def media(state: UserState) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in state.folder.media.iterdir()}


def trashed(state: UserState) -> list[tuple[str, bytes]]:
    trash = state.media.trash
    return [(e.name, trash.path_of(e).read_bytes()) for e in trash.entries()]


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


# -- what goes in -----------------------------------------------------------------------------
def test_deleted_and_replaced_files_are_kept_with_what_restoring_needs(state: UserState) -> None:
    upload(state, a_txt=b"A1", b_txt=b"B1", c_txt=b"C1")  # usn 1..3
    before = int(time.time())
    upload(state, a_txt=b"A2", b_txt=None)  # a replaced (usn 4), b deleted (usn 5)
    entries = state.media.trash.entries()
    assert [(e.name, e.sha1, e.size, e.usn) for e in entries] == [
        ("b.txt", sha1(b"B1"), 2, 5), ("a.txt", sha1(b"A1"), 2, 4)]  # newest first
    assert all(before <= e.trashed_at <= time.time() for e in entries)
    assert media(state) == {"a.txt": b"A2", "c.txt": b"C1"}
    # The official layout is untouched: the trash is beside media/, never in it.
    assert state.folder.media_trash.parent == state.folder.root
    assert state.folder.media_bytes() == 4  # and counts toward no quota


def test_a_file_deleted_again_later_gets_an_entry_per_version(state: UserState) -> None:
    upload(state, a_txt=b"one")
    upload(state, a_txt=b"two")
    upload(state, a_txt=None)
    assert trashed(state) == [("a.txt", b"two"), ("a.txt", b"one")]
    assert state.media.trash.newest(["a.txt"])["a.txt"] == state.media.trash.entries()[0]


def test_nothing_is_kept_when_the_trash_is_off(tmp_path: Path) -> None:
    state = make_state(tmp_path / "alice")
    state.media.trash = Trash(state.folder.media_trash, days=0)
    upload(state, a_txt=b"A1", b_txt=b"B1")
    upload(state, a_txt=b"A2", b_txt=None)
    state.media.close()
    assert media(state) == {"a.txt": b"A2"} and not state.folder.media_trash.exists()


def test_a_deletion_of_a_file_missing_from_disk_keeps_nothing(state: UserState) -> None:
    upload(state, a_txt=b"A1")
    (state.folder.media / "a.txt").unlink()
    upload(state, a_txt=None)
    assert trashed(state) == []


def test_the_listing_skips_what_is_not_a_complete_entry(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash")
    assert trash.entries() == []  # no folder yet
    good = trash_entry_name(100, 7, sha1(b"x"))
    (trash.root / good).mkdir(parents=True)
    (trash.root / good / "x.png").write_bytes(b"x")
    (trash.root / trash_entry_name(200, 8, sha1(b"y"))).mkdir()  # never filled
    (trash.root / f"{TRASH_PURGE_PREFIX}{trash_entry_name(50, 1, sha1(b'z'))}").mkdir()
    (trash.root / "not-an-entry").mkdir()
    (trash.root / "stray.txt").write_bytes(b"?")
    assert [(e.id, e.name, e.trashed_at, e.usn, e.size) for e in trash.entries()] == [
        (good, "x.png", 100, 7, 1)]
    trash.remove_leftovers()
    assert sorted(p.name for p in trash.root.iterdir()) == [good, "not-an-entry", "stray.txt"]


# -- expiry -----------------------------------------------------------------------------------
def test_entries_expire_after_the_configured_days(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash", days=30)
    now = 1_800_000_000
    ages = {"fresh.png": 1, "almost.png": 30 * SECONDS_PER_DAY - 1, "due.png": 30 * SECONDS_PER_DAY,
            "old.png": 400 * SECONDS_PER_DAY}
    for usn, (name, age) in enumerate(ages.items(), start=1):
        entry = trash.root / trash_entry_name(now - age, usn, sha1(name.encode()))
        entry.mkdir(parents=True)
        (entry / name).write_bytes(name.encode())
    assert trash.purge(now) == 2
    assert sorted(e.name for e in trash.entries()) == ["almost.png", "fresh.png"]
    assert Trash(trash.root, days=0).purge(now) == 2  # trash off: everything goes
    assert list(trash.root.iterdir()) == []


def test_purge_runs_when_the_index_opens_and_on_demand(state: UserState) -> None:
    upload(state, a_txt=b"A1", b_txt=b"B1")
    upload(state, a_txt=None, b_txt=None)
    state.media.close()
    later = time.time() + 31 * SECONDS_PER_DAY
    assert state.media.purge_trash(now=time.time()) == 0
    assert len(trashed(state)) == 2
    assert state.media.purge_trash(now=later) == 2
    assert trashed(state) == []
    upload(state, c_txt=b"C1")
    upload(state, c_txt=None)
    state.media.close()
    expiring = make_state(state.folder.root)
    expiring.media.trash = Trash(state.folder.media_trash, days=0)
    expiring.prepare()  # opening the index purges (here: everything, the trash being off)
    assert trashed(expiring) == []
    expiring.media.close()


PURGE_CHILD = textwrap.dedent(
    """
    import os, shutil, sys
    from pathlib import Path
    from ankihost.media import trash as trash_module
    from ankihost.media.trash import Trash

    root, now = Path(sys.argv[1]), float(sys.argv[2])
    def crash(*args, **kwargs):
        os._exit({code})
    calls, original = [], shutil.rmtree
    def rmtree(*args, **kwargs):  # the second entry taken out of the listing, not yet deleted
        calls.append(1)
        if len(calls) == 2:
            crash()
        original(*args, **kwargs)
    trash_module.shutil.rmtree = rmtree
    Trash(root, days=30).purge(now)
    """
).format(code=CRASH_CODE)


def test_a_crash_during_a_purge_leaves_no_half_entry(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash", days=30)
    now = 1_800_000_000
    for usn in range(1, 5):
        age = (100 if usn <= 3 else 1) * SECONDS_PER_DAY
        entry = trash.root / trash_entry_name(now - age, usn, sha1(b"%d" % usn))
        entry.mkdir(parents=True)
        (entry / f"{usn}.png").write_bytes(b"%d" % usn)
    done = subprocess.run(
        [sys.executable, "-c", PURGE_CHILD, str(trash.root), str(now)], cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == CRASH_CODE, done.stderr.decode()
    # Newest first: entry 3 is gone, 2 was out of the listing when the process died, 1 was not
    # reached.
    assert sorted(e.usn for e in trash.entries()) == [1, 4]
    assert sum(p.name.startswith(TRASH_PURGE_PREFIX) for p in trash.root.iterdir()) == 1
    assert trash.purge(now) == 1
    assert [e.usn for e in trash.entries()] == [4] and len(list(trash.root.iterdir())) == 1


# -- restore ----------------------------------------------------------------------------------
def test_restore_puts_files_back_as_new_changes(state: UserState) -> None:
    upload(state, a_txt=b"A1", b_txt=b"B1", c_txt=b"C1")
    upload(state, a_txt=None, b_txt=None)  # usn 4, 5
    result = restore.restore(state.media, ["a.txt", "b.txt"])
    assert (result.restored, result.already_there, result.usn) == (["a.txt", "b.txt"], [], 7)
    assert media(state) == {"a.txt": b"A1", "b.txt": b"B1", "c.txt": b"C1"}
    index = state.media.index()
    assert [(e.name, e.usn, e.sha1) for e in index.changes_after(5)] == [
        ("a.txt", 6, sha1(b"A1")), ("b.txt", 7, sha1(b"B1"))]
    assert index.totals().total_bytes == 6 and index.live_file_count() == 3
    assert trashed(state) == []  # restored entries leave the trash
    assert state.folder.media_journal.read_bytes() == b""


def test_restore_takes_the_newest_version(state: UserState) -> None:
    upload(state, a_txt=b"one")
    upload(state, a_txt=b"two")
    upload(state, a_txt=None)
    assert restore.restore(state.media, ["a.txt"]).restored == ["a.txt"]
    assert media(state) == {"a.txt": b"two"} and trashed(state) == [("a.txt", b"one")]


def test_restore_refuses_everything_if_one_file_cannot_be_restored(state: UserState) -> None:
    upload(state, a_txt=b"A1", b_txt=b"B1")
    upload(state, a_txt=b"A2", b_txt=None)  # a.txt now holds other content
    before = (media(state), trashed(state), state.media.index().last_usn())
    with pytest.raises(restore.RestoreRefused) as refused:
        restore.restore(state.media, ["b.txt", "a.txt", "never.txt"])
    message = str(refused.value)
    assert "'a.txt': the server now has another file under this name" in message
    assert "'never.txt': is not in the trash" in message
    assert (media(state), trashed(state), state.media.index().last_usn()) == before


def test_restoring_what_is_already_there_changes_nothing(state: UserState) -> None:
    upload(state, a_txt=b"A1")
    upload(state, a_txt=None)
    upload(state, a_txt=b"A1")  # the same content uploaded again
    result = restore.restore(state.media, ["a.txt"])
    assert (result.restored, result.already_there, result.usn) == ([], ["a.txt"], 3)
    assert trashed(state) == [("a.txt", b"A1")]


def test_a_restored_file_keeps_its_real_sha1(state: UserState) -> None:
    upload(state, a_txt=b"A1")
    upload(state, a_txt=None)
    entry = state.media.trash.entries()[0]
    state.media.trash.path_of(entry).write_bytes(b"changed on disk")
    restore.restore(state.media, ["a.txt"])
    live = state.media.index().get_live("a.txt")
    assert live is not None and live.sha1 == sha1(b"changed on disk")


RESTORE_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from ankihost.media import journal, restore, trash
    from tests.support.states import make_state

    root, point = Path(sys.argv[1]), sys.argv[2]
    def crash(*args, **kwargs):
        os._exit({code})
    if point == "linked, not journaled":
        journal.FileJournal._write_durably = crash
    elif point == "committed, not placed":
        journal.FileJournal.place = crash
    elif point == "placed, trash entry not removed":
        trash.Trash.remove = crash
    state = make_state(root)
    restore.restore(state.media, ["a.txt", "b.txt"])
    """
).format(code=CRASH_CODE)


@pytest.mark.parametrize(("point", "restored"), [
    ("linked, not journaled", False),
    ("committed, not placed", True),
    ("placed, trash entry not removed", True),
])
def test_a_crash_during_a_restore_leaves_it_done_or_not_done(
    state: UserState, point: str, restored: bool
) -> None:
    upload(state, a_txt=b"A1", b_txt=b"B1", c_txt=b"C1")
    upload(state, a_txt=None, b_txt=None)
    state.media.close()
    done = subprocess.run(
        [sys.executable, "-c", RESTORE_CHILD, str(state.folder.root), point], cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == CRASH_CODE, done.stderr.decode()
    index = state.media.index()  # recovery
    live = {e.name for e in index.changes_after(0) if e.live}
    if restored:
        assert media(state) == {"a.txt": b"A1", "b.txt": b"B1", "c.txt": b"C1"}
        assert live == {"a.txt", "b.txt", "c.txt"} and index.last_usn() == 7
        assert trashed(state) == []
    else:
        assert media(state) == {"c.txt": b"C1"}
        assert live == {"c.txt"} and index.last_usn() == 5
        assert sorted(trashed(state)) == [("a.txt", b"A1"), ("b.txt", b"B1")]
    assert state.folder.media_journal.read_bytes() == b""


def test_a_user_folder_names_its_trash(tmp_path: Path) -> None:
    folder = UserFolder(tmp_path / "alice")
    assert folder.media_trash == tmp_path / "alice" / "media.ankihost-trash"
    assert os.path.basename(folder.media_trash) != "media"
