"""`ankihost backup`: one archive of the whole server (`snapshots/archive.py`), taken while it
serves; checking an archive; unpacking one into an empty data folder.

Each user in turn is frozen (`snapshots/freeze.py`: their lock held only for the copy, between
their syncs) and written from that private copy with no lock held; a user who is syncing is
done after the others. The account store is copied with SQLite's backup API. The archive is
written beside its destination under a temporary name, read back and checked in full (every
member's SHA-256 and every database's integrity check), made durable, and only then given its
name: a failure or a kill at any point leaves no archive at the destination and SYNC_BASE as it
was (the copies a crash leaves are removed at the next start).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sqlite3
import time
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from ankihost import __version__
from ankihost.errors import BadRequest, ServerError, SessionConflict
from ankihost.registry import Registry
from ankihost.snapshots import archive
from ankihost.snapshots.archive import ACCOUNTS_MEMBER, About, ArchiveWriter
from ankihost.snapshots.freeze import Frozen, freeze, freeze_unowned
from ankihost.snapshots.idle import WAIT_SECS, when_idle
from ankihost.snapshots.progress import Progress
from ankihost.storage.collection import unicase
from ankihost.storage.paths import (
    COLLECTION_NAME,
    MEDIA_DB_NAME,
    MEDIA_FOLDER_NAME,
    DataFolder,
    UserFolder,
    fsync_dir,
    publish_new,
    unsafe_name_reason,
)

log = logging.getLogger(__name__)

_PARTIAL_MARK = ".ankihost-partial-"
_UNPACK_MARK = ".ankihost-unpack-"
DEFAULT_NAME = "ankihost-backup-{time}.tar.zst"


# -- writing --------------------------------------------------------------------------------


async def create(registry: Registry, data: DataFolder, dest: Path, *, snapshots: bool,
                 progress: Progress) -> dict[str, Any]:
    """Write the archive of everything under SYNC_BASE to `dest` (a new file, or a folder to
    put a dated one in); what it holds."""
    dest = destination(dest)
    if dest.parent.resolve().is_relative_to(data.base.resolve()):
        raise BadRequest(f"{dest} is inside the data folder {data.base}: write backups elsewhere "
                         "(a backup there would end up inside the next one)")
    started = time.monotonic()
    part = _claim(dest, _PARTIAL_MARK)
    try:
        with open(part, "xb") as out:
            totals = await _write(registry, data, out, snapshots=snapshots, progress=progress)
        progress.say("checking the archive")
        progress.name("checking")
        progress.expect(totals.bytes)
        about = await anyio.to_thread.run_sync(_check_written, part, data, totals, progress)
        _publish(part, dest)
    except OSError as exc:
        raise ServerError(f"could not write the backup to {dest}: {exc.strerror or exc}; "
                          "no archive was written") from exc
    finally:
        part.unlink(missing_ok=True)
    return {"path": str(dest), "users": len(about.users), "files": about.files,
            "bytes": about.bytes, "archive_bytes": dest.stat().st_size,
            "seconds": round(time.monotonic() - started, 2)}


def destination(dest: Path) -> Path:
    """The archive's path: `dest`, or a dated name inside it when it is a folder. BadRequest
    when it is not absolute, its folder is missing, or the file exists (never overwritten)."""
    if not dest.is_absolute():
        raise BadRequest(f"{dest} is not an absolute path")
    if dest.is_dir():
        dest = dest / DEFAULT_NAME.format(time=time.strftime("%Y%m%d-%H%M%S"))
    if not dest.parent.is_dir():
        raise BadRequest(f"the folder {dest.parent} does not exist")
    if dest.exists() or dest.is_symlink():
        raise BadRequest(f"{dest} already exists; choose another name (nothing is overwritten)")
    return dest


def _claim(dest: Path, mark: str) -> Path:
    """A temporary name beside `dest` for this process; ones of processes that died are
    removed first (a kill -9 leaves them)."""
    prefix = f".{dest.name}{mark}"
    for old in dest.parent.iterdir():
        if not old.name.startswith(prefix):
            continue
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    return dest.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(4)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _write(registry: Registry, data: DataFolder, out: BinaryIO, *, snapshots: bool,
                 progress: Progress) -> archive.Totals:
    names, unowned = _users(registry, data)
    progress.say(f"backing up {len(names) + len(unowned)} user(s) from {data.base}")
    progress.expect(sum(_estimate(data.user(name)) for name in names)
                    + sum(_estimate(folder) for folder in unowned))
    writer = ArchiveWriter(out, progress, ankihost=__version__, base=str(data.base))
    try:
        later = [name for name in names
                 if not await _user(registry, name, writer, snapshots, progress, wait_secs=0)]
        for name in later:
            await _user(registry, name, writer, snapshots, progress, wait_secs=WAIT_SECS)
        for folder in unowned:
            await _unowned(folder, writer, snapshots, progress)
        await anyio.to_thread.run_sync(_add_accounts, data, writer)
        totals = await anyio.to_thread.run_sync(writer.finish)
    except BaseException:
        writer.abandon()
        raise
    out.flush()
    os.fsync(out.fileno())
    return totals


def _users(registry: Registry, data: DataFolder) -> tuple[list[str], list[UserFolder]]:
    """Every account, and every other user folder under SYNC_BASE (data kept after its
    account was removed)."""
    names = sorted(registry.accounts.names(), key=str.casefold)
    unowned = []
    for entry in sorted(data.base.iterdir()):
        if entry.name not in names and unsafe_name_reason(entry.name) is None \
                and entry.is_dir() and not entry.is_symlink() and _holds_data(entry):
            unowned.append(UserFolder(entry))
    return names, unowned


def _estimate(folder: UserFolder) -> int:
    return folder.collection_bytes() + folder.media_bytes()


def _holds_data(folder: Path) -> bool:
    return any((folder / name).exists() for name in (COLLECTION_NAME, MEDIA_DB_NAME, MEDIA_FOLDER_NAME))


async def _user(registry: Registry, name: str, writer: ArchiveWriter, snapshots: bool,
                progress: Progress, *, wait_secs: float) -> bool:
    """Freeze and write one user; False when they are syncing and `wait_secs` is 0."""
    state = registry.by_name(name)
    if state is None:
        return True  # removed meanwhile: their folder is left for the next backup
    progress.name(name)

    def waiting(secs: float) -> None:
        progress.say(f"waiting for {name}'s sync to end ({secs:.0f} s)")

    try:
        work = partial(freeze, state, media=True, others=True, snapshots=snapshots)
        frozen = await when_idle(state, work, wait_secs=wait_secs, on_wait=waiting)
    except SessionConflict:
        if wait_secs:
            raise
        progress.say(f"{name} is syncing: backing up the others first")
        return False
    await anyio.to_thread.run_sync(_add_frozen, writer, name, frozen)
    return True


async def _unowned(folder: UserFolder, writer: ArchiveWriter, snapshots: bool, progress: Progress) -> None:
    progress.name(folder.root.name)
    frozen = await anyio.to_thread.run_sync(lambda: freeze_unowned(folder, snapshots=snapshots))
    await anyio.to_thread.run_sync(_add_frozen, writer, folder.root.name, frozen)


def _add_frozen(writer: ArchiveWriter, name: str, frozen: Frozen) -> None:
    try:
        writer.add_tree(name, frozen.root)
    finally:
        frozen.remove()


def _add_accounts(data: DataFolder, writer: ArchiveWriter) -> None:
    """The account store, copied with SQLite's backup API (the server keeps writing it)."""
    if not data.accounts_db.exists():
        return
    scratch = data.new_scratch_dir()
    try:
        copy = scratch / "accounts.db"
        _copy_database(data.accounts_db, copy)
        writer.add_file(ACCOUNTS_MEMBER, copy)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _copy_database(source: Path, target: Path) -> None:
    src = sqlite3.connect(str(source))
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
    except sqlite3.Error as exc:
        raise ServerError(f"could not copy {source}: {exc}") from exc
    finally:
        dst.close()
        src.close()


def _check_written(written: Path, data: DataFolder, totals: archive.Totals, progress: Progress) -> About:
    scratch = data.new_scratch_dir()
    try:
        about = verify(written, scratch, progress)
    except BadRequest as exc:
        raise ServerError(f"the archive just written fails its check ({exc.reason}); "
                          "it was deleted") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if (about.files, about.bytes) != (totals.files, totals.bytes):
        raise ServerError("the archive just written does not hold what was written; it was deleted")
    return about


def _publish(written: Path, dest: Path) -> None:
    """Give the complete, checked archive its name, durably, never over an existing file."""
    if not publish_new(written, dest):
        raise BadRequest(f"{dest} appeared while the backup ran; the backup was not kept")


# -- checking -------------------------------------------------------------------------------


def verify(path: Path, scratch: Path, progress: Progress) -> About:
    """Read the archive at `path` through: structure, checksums, and the integrity of every
    database in it (each copied to `scratch` to be opened). BadRequest names the problem; a
    damaged archive is reported as such even when the damage first shows in a database."""
    problems: list[str] = []

    def check(name: str, size: int, reader: archive.MemberReader) -> None:
        if _is_database_member(name):
            copy = scratch / "check.db"
            with open(copy, "wb") as out:
                _pour(reader, out)
            try:
                _require_sound(copy, name)
            except BadRequest as exc:
                problems.append(exc.reason)  # reported once the whole archive checks out
            finally:
                for leftover in scratch.iterdir():
                    leftover.unlink()

    try:
        with open(path, "rb") as f:
            about = archive.read(f, on_file=check, progress=progress)
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror or exc}") from None
    if problems:
        raise BadRequest(problems[0])
    return about


def _is_database_member(name: str) -> bool:
    parts = name.split("/")
    return name == ACCOUNTS_MEMBER or (len(parts) == 2 and parts[1] in (COLLECTION_NAME, MEDIA_DB_NAME))


def _pour(reader: archive.MemberReader, out: BinaryIO) -> None:
    while chunk := reader.read():
        out.write(chunk)


def _require_sound(path: Path, name: str) -> None:
    """BadRequest unless SQLite's integrity check passes (read-only: nothing is written)."""
    try:
        db = sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)
        try:
            db.create_collation("unicase", unicase)
            rows = db.execute("pragma integrity_check").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise BadRequest(f"{name} in the archive is not a readable database: {exc}") from None
    if rows != [("ok",)]:
        raise BadRequest(f"{name} in the archive fails its integrity check: "
                         + "; ".join(str(r[0]) for r in rows[:3]))


# -- unpacking ------------------------------------------------------------------------------


def unpack(path: Path, target: Path, progress: Progress) -> About:
    """Unpack the archive at `path` into `target`, a data folder that does not exist yet or is
    empty. Everything is written and checked in a folder beside it first, then renamed: on any
    problem `target` stays as it was."""
    target = target.absolute()
    _require_empty(target)
    if not path.is_file():
        raise BadRequest(f"cannot read {path}: no such file")
    staging = _claim(target, _UNPACK_MARK)
    staging.mkdir(mode=0o700)
    try:
        about = _unpack_into(path, staging, progress)
        os.sync()  # every file and folder written durably, in one go
        if target.exists():
            target.rmdir()
        os.rename(staging, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise ServerError(f"could not unpack into {target}: {exc.strerror or exc}; nothing was "
                          "written there") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return about


def _require_empty(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise BadRequest(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()):
        raise BadRequest(f"{target} is not empty: unpack into a new or empty folder")
    if not target.parent.is_dir():
        raise BadRequest(f"the folder {target.parent} does not exist")


def _unpack_into(path: Path, staging: Path, progress: Progress) -> About:
    databases: list[tuple[str, Path]] = []

    def on_folder(name: str) -> None:
        (staging / name).mkdir(mode=0o700, parents=True, exist_ok=True)

    def on_file(name: str, size: int, reader: archive.MemberReader) -> None:
        target = staging / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            _pour(reader, out)
        if _is_database_member(name):
            databases.append((name, target))

    try:
        with open(path, "rb") as f:
            about = archive.read(f, on_file=on_file, on_folder=on_folder, progress=progress)
    except FileExistsError as exc:
        raise BadRequest(f"the archive holds {exc.filename} twice") from None
    for name, database in databases:
        _require_sound(database, name)
    return about
