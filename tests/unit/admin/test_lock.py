"""The data-folder lock between real processes: who holds it is named, the kernel frees it when
the holder dies (even by SIGKILL), an admin command waits for another, a server never waits
for a server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ankihost.admin.lock import ADMIN, SERVER, DataFolderLock, FolderBusy
from ankihost.storage.paths import DataFolder
from tests.support.server import REPO_ROOT

HOLD = """
import sys, time
from pathlib import Path
from ankihost.admin.lock import DataFolderLock
from ankihost.storage.paths import DataFolder
lock = DataFolderLock(DataFolder(Path(sys.argv[1])))
lock.acquire(sys.argv[2], "holding it for a test")
print("held", flush=True)
time.sleep(float(sys.argv[3]))
lock.release()
print("released", flush=True)
time.sleep(60)
"""


class Holder:
    """A process that takes the lock with `role`, keeps it `secs`, then lets it go (and lives on)."""

    def __init__(self, base: Path, role: str, secs: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(base), role, str(secs)],
                                     stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "held\n"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    made: list[Holder] = []
    yield made
    for holder in made:
        holder.stop()


@pytest.fixture
def folder(tmp_path: Path) -> DataFolder:
    return DataFolder(tmp_path / "base")


def test_a_second_acquire_names_the_holder(folder: DataFolder, holders: list[Holder]) -> None:
    holders.append(Holder(folder.base, SERVER, 60))
    with pytest.raises(FolderBusy) as busy:
        DataFolderLock(folder).acquire(ADMIN, "ankihost user add")
    holder = busy.value.holder
    assert holder is not None
    assert (holder.pid, holder.role, holder.detail) == (holders[0].proc.pid, SERVER, "holding it for a test")
    message = str(busy.value)
    assert str(folder.base) in message and f"pid {holders[0].proc.pid}" in message
    assert "an ankihost server" in message


def test_the_lock_is_exclusive_within_one_process_too(folder: DataFolder) -> None:
    first = DataFolderLock(folder)
    first.acquire(SERVER, "first")
    try:
        with pytest.raises(FolderBusy) as busy:
            DataFolderLock(folder).acquire(SERVER, "second")
        assert busy.value.holder is not None and busy.value.holder.pid == os.getpid()
    finally:
        first.release()
    second = DataFolderLock(folder)
    second.acquire(SERVER, "second")
    second.release()


def test_sigkill_frees_the_lock(folder: DataFolder, holders: list[Holder]) -> None:
    holder = Holder(folder.base, SERVER, 60)
    holders.append(holder)
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(10)
    lock = DataFolderLock(folder)
    lock.acquire(SERVER, "after a kill -9")  # no stale lock, no waiting
    try:
        assert lock.holder() is not None and lock.holder().pid == os.getpid()  # type: ignore[union-attr]
    finally:
        lock.release()


def test_an_admin_command_waits_for_another(folder: DataFolder, holders: list[Holder]) -> None:
    holders.append(Holder(folder.base, ADMIN, 0.7))
    started = time.monotonic()
    lock = DataFolderLock(folder)
    lock.acquire_waiting(ADMIN, "second command", timeout=20)
    waited = time.monotonic() - started
    lock.release()
    assert 0.3 < waited < 15, waited


def test_an_admin_command_gives_up_after_its_timeout(folder: DataFolder, holders: list[Holder]) -> None:
    holders.append(Holder(folder.base, ADMIN, 60))
    started = time.monotonic()
    with pytest.raises(FolderBusy):
        DataFolderLock(folder).acquire_waiting(ADMIN, "second command", timeout=0.5)
    assert 0.4 < time.monotonic() - started < 10


def test_nobody_waits_for_a_server(folder: DataFolder, holders: list[Holder]) -> None:
    holders.append(Holder(folder.base, SERVER, 60))
    for role in (SERVER, ADMIN):
        started = time.monotonic()
        with pytest.raises(FolderBusy):
            DataFolderLock(folder).acquire_waiting(role, "another", timeout=20)
        assert time.monotonic() - started < 2


def test_a_server_waits_for_an_admin_command(folder: DataFolder, holders: list[Holder]) -> None:
    holders.append(Holder(folder.base, ADMIN, 0.5))
    lock = DataFolderLock(folder)
    lock.acquire_waiting(SERVER, "starting", timeout=20)
    try:
        assert lock.holder() is not None and lock.holder().role == SERVER  # type: ignore[union-attr]
    finally:
        lock.release()


def test_the_lock_file_is_the_only_thing_made(folder: DataFolder) -> None:
    lock = DataFolderLock(folder)
    lock.acquire(SERVER, "x")
    lock.release()
    assert sorted(p.name for p in folder.base.rglob("*")) == [".ankihost", "lock"]
    assert folder.state.stat().st_mode & 0o777 == 0o700 and folder.lock.stat().st_mode & 0o777 == 0o600
