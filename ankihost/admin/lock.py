"""The data-folder lock: one process at a time owns SYNC_BASE.

A running server holds an exclusive OS lock (`flock`) on `SYNC_BASE/.ankihost/lock` for its
whole life; the kernel releases it when the process ends, so a kill -9 never leaves a stale
lock. The holder writes who it is into the file, so a process that finds the lock taken can
say who has it. An admin command that finds no server takes the lock itself while it works.
Nothing else in SYNC_BASE is touched before the lock is held.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass

import orjson

from ankihost.storage.paths import DataFolder

SERVER, ADMIN = "server", "admin"
POLL_SECS = 0.1


@dataclass(frozen=True)
class Holder:
    pid: int
    role: str  # SERVER or ADMIN
    detail: str  # what it is doing, e.g. "ankihost user add" or "listening on 0.0.0.0:8080"
    since: float

    def describe(self) -> str:
        what = "an ankihost server" if self.role == SERVER else "an ankihost admin command"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{what} (pid {self.pid}, {self.detail}, since {started})"


class FolderBusy(Exception):
    """Another process holds the lock; `holder` says who (None when it could not be read)."""

    def __init__(self, folder: DataFolder, holder: Holder | None) -> None:
        who = holder.describe() if holder else "another process"
        super().__init__(f"the data folder {folder.base} is in use by {who}")
        self.holder = holder


class DataFolderLock:
    def __init__(self, folder: DataFolder) -> None:
        self.folder = folder
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, role: str, detail: str) -> None:
        """Take the lock now, or raise FolderBusy naming whoever has it."""
        self.folder.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.folder.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(self.folder, self.holder()) from None
        self._fd = fd
        self.describe(role, detail)

    def acquire_waiting(self, role: str, detail: str, timeout: float) -> None:
        """Take the lock, waiting up to `timeout` seconds while an admin command holds it
        (a server holding it is not waited for: FolderBusy at once)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.acquire(role, detail)
            except FolderBusy as busy:
                if (busy.holder is not None and busy.holder.role == SERVER) or (
                    time.monotonic() >= deadline
                ):
                    raise
            time.sleep(POLL_SECS)

    def describe(self, role: str, detail: str) -> None:
        """Write who holds the lock (the caller holds it)."""
        assert self._fd is not None
        record = {"pid": os.getpid(), "role": role, "detail": detail, "since": time.time()}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, orjson.dumps(record), 0)

    def holder(self) -> Holder | None:
        """Who holds the lock, as they wrote it; None when it cannot be read."""
        for _ in range(10):  # the holder may be between truncating and writing
            try:
                value = orjson.loads(self.folder.lock.read_bytes())
                return Holder(int(value["pid"]), str(value["role"]), str(value["detail"]),
                              float(value["since"]))
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.01)
        return None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing releases the flock

    def __del__(self) -> None:
        self.release()
