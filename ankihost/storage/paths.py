"""Every name ankihost uses inside SYNC_BASE, and every clean-up of what a crash left.

SYNC_BASE holds one folder per user, and one of ankihost's own that no user name can take:

    .ankihost/lock                      held (an OS file lock) by the process that owns SYNC_BASE
    .ankihost/control.sock              the running server's admin channel
    .ankihost/accounts.db               the account store (accounts, devices, activity, audit)
    .ankihost/.scratch-<random>/        a backup's copy of the account store (removed at start-up)

Inside SYNC_BASE/<user>, the official server's layout plus a few files of ankihost's (*):

    collection.anki2                    the collection (schema 18, WAL while open: -wal, -shm)
    media/                              media files, flat
    media.db                            the server's media index (WAL while open: -wal, -shm)
    media.ankihost-journal        *     the media log: a record per media batch since the last
                                          checkpoint (media/log.py; empty when idle)
    media.ankihost-trash/         *     media files a sync deleted or replaced (media/trash.py):
      <secs>-<usn>-<sha1>/<name>          one kept version: when, the change that removed it,
                                          its SHA-1; the file inside keeps its media name
    snapshots/                    *     compressed copies of the collection (snapshots/):
      <id>.<reason>.anki2.zst             one snapshot; <id> is its UTC time, YYYYMMDD-HHMMSS[-n]
      .pending-<id>.<reason>.anki2        a complete, uncompressed copy still to be compressed
      .tmp-<random>                       a copy or compressed file being written

Transient files (*), each removed by `UserFolder.remove_leftovers`, the media recovery or the
trash purge (both when the media index opens) when a crash left it behind:

    .upload-<random>                    a full upload being received
    .download-<random>                  a consistent copy being sent as a full download
    .new-<random>.anki2                 a new empty collection being created
    collection.anki2.previous           the collection replaced by a full upload, as versions
                                        before snapshots kept it: made a snapshot at start-up
    collection.anki2.previous.tmp       the same being linked into place (older versions)
    .restore-<random>.anki2             a snapshot being expanded and checked for a restore
    .freeze-<random>/                   a consistent copy a backup or export reads (the media
                                        files hard links, so it costs no space of its own)
    .export-<random>/                   a collection package being written for a download from
                                        the web pages (removed once opened for sending)
    .ankihost-download-<hex>.zip        a media download zip too large for memory
    media/.ankihost-tmp-<32 hex>        a large media file being placed (a source in the log)
    media.ankihost-trash/.purge-<entry> a trash entry being removed (gone from the listing)
    media.ankihost-trash/<entry>/       an entry whose file is not in it yet (an empty folder)

No other module spells a name inside a user's folder. Also here: user-name safety and the
durable-rename helpers every writer uses.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

COLLECTION_NAME = "collection.anki2"
PREVIOUS_NAME = "collection.anki2.previous"
MEDIA_FOLDER_NAME = "media"
MEDIA_DB_NAME = "media.db"
MEDIA_JOURNAL_NAME = "media.ankihost-journal"
MEDIA_TRASH_NAME = "media.ankihost-trash"
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
UPLOAD_PREFIX = ".upload-"
DOWNLOAD_PREFIX = ".download-"
NEW_COLLECTION_PREFIX = ".new-"
PREVIOUS_STAGING_NAME = PREVIOUS_NAME + ".tmp"
MEDIA_ZIP_PREFIX = ".ankihost-download-"
MEDIA_ZIP_SUFFIX = ".zip"
# Inside the media folder: always followed by exactly 32 lowercase hex digits.
MEDIA_TEMP_PREFIX = ".ankihost-tmp-"
_MEDIA_TEMP_TOKEN_HEX = 32
RESTORE_PREFIX = ".restore-"
FREEZE_PREFIX = ".freeze-"
EXPORT_PREFIX = ".export-"
SNAPSHOTS_FOLDER_NAME = "snapshots"
SNAPSHOT_SUFFIX = ".anki2.zst"
SNAPSHOT_PENDING_PREFIX = ".pending-"
SNAPSHOT_PENDING_SUFFIX = ".anki2"
SNAPSHOT_TEMP_PREFIX = ".tmp-"
SCRATCH_PREFIX = ".scratch-"
# Inside the trash: an entry folder, and the prefix an entry takes while it is removed.
_TRASH_ENTRY = re.compile(r"([0-9]{1,12})-([0-9]{1,10})-([0-9a-f]{40})")
TRASH_PURGE_PREFIX = ".purge-"
_LEFTOVER_PREFIXES = (UPLOAD_PREFIX, DOWNLOAD_PREFIX, NEW_COLLECTION_PREFIX, RESTORE_PREFIX)
_FORBIDDEN_CHARS = set('/\\\x00')
MAX_USER_NAME_BYTES = 200
STATE_FOLDER_NAME = ".ankihost"
# Unicode categories of characters that cannot be seen in a name: controls, format characters
# (zero-width ones among them), surrogates, private use, unassigned, line/paragraph separators.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def folded(name: str) -> str:
    """What two user names that must not both exist have in common: the same letters ignoring
    case and Unicode form ("José" typed two ways, "ALICE" and "alice" are one user: their
    folders would be one on macOS and Windows disks)."""
    return unicodedata.normalize("NFC", name).casefold()


def unsafe_name_reason(name: str) -> str | None:
    """Why `name` cannot be a user name (and folder name), or None when it is safe."""
    if name == "":
        return "is empty"
    if name in (".", ".."):
        return "is '.' or '..'"
    if folded(name) == STATE_FOLDER_NAME:
        return f"is reserved ({STATE_FOLDER_NAME} holds ankihost's own data)"
    if any(ch in _FORBIDDEN_CHARS or ord(ch) < 32 for ch in name):
        return "contains '/', '\\', NUL or a control character"
    if name != name.strip():
        return "starts or ends with a space"
    if invisible := next((ch for ch in name if _is_invisible(ch)), None):
        return f"contains an invisible character (U+{ord(invisible):04X})"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_USER_NAME_BYTES:
        return f"is longer than {MAX_USER_NAME_BYTES} bytes"
    return None


def _is_invisible(ch: str) -> bool:
    return unicodedata.category(ch) in _INVISIBLE_CATEGORIES or (ch.isspace() and ch != " ")


@dataclass(frozen=True)
class DataFolder:
    """SYNC_BASE: a folder per user, and ankihost's own state folder."""

    base: Path

    @property
    def state(self) -> Path:
        return self.base / STATE_FOLDER_NAME

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    @property
    def control_socket(self) -> Path:
        return self.state / "control.sock"

    @property
    def accounts_db(self) -> Path:
        return self.state / "accounts.db"

    def new_scratch_dir(self) -> Path:
        """A new private folder in the state folder (for a copy of the account store)."""
        return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=self.state))

    def remove_leftovers(self) -> list[str]:
        """Delete the scratch folders an interrupted backup left; the caller holds the lock."""
        removed = []
        if self.state.is_dir():
            for entry in self.state.iterdir():
                if entry.name.startswith(SCRATCH_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry)
                    removed.append(entry.name)
        return removed

    def user(self, name: str) -> UserFolder:
        return UserFolder(self.base / name)


def new_media_temp_name() -> str:
    """A fresh temp name inside the media folder (never a name a client could upload to us
    unchallenged: `remove_leftovers` of the media recovery recognises it exactly)."""
    return f"{MEDIA_TEMP_PREFIX}{secrets.token_hex(_MEDIA_TEMP_TOKEN_HEX // 2)}"


def is_media_temp_name(name: str) -> bool:
    token = name[len(MEDIA_TEMP_PREFIX) :]
    return (
        name.startswith(MEDIA_TEMP_PREFIX)
        and len(token) == _MEDIA_TEMP_TOKEN_HEX
        and all(c in "0123456789abcdef" for c in token)
    )


def trash_entry_name(trashed_at: int, usn: int, sha1: bytes) -> str:
    """The trash folder of one kept version: when (Unix seconds), the media USN of the change
    that removed it, its SHA-1."""
    return f"{trashed_at}-{usn}-{sha1.hex()}"


def parse_trash_entry_name(name: str) -> tuple[int, int, bytes] | None:
    """(trashed at, USN, SHA-1) of a trash entry's folder name; None for any other name."""
    match = _TRASH_ENTRY.fullmatch(name)
    if match is None:
        return None
    return int(match[1]), int(match[2]), bytes.fromhex(match[3])


def is_trash_purge_name(name: str) -> bool:
    return name.startswith(TRASH_PURGE_PREFIX) and parse_trash_entry_name(
        name[len(TRASH_PURGE_PREFIX) :]) is not None


@dataclass(frozen=True)
class UserFolder:
    root: Path

    @property
    def collection(self) -> Path:
        return self.root / COLLECTION_NAME

    @functools.cached_property
    def collection_path(self) -> str:
        """`collection` as a string, made once (`meta` stats it on every sync)."""
        return str(self.collection)

    @property
    def previous_collection(self) -> Path:
        """Where versions before snapshots kept the collection replaced by a full upload."""
        return self.root / PREVIOUS_NAME

    @property
    def media(self) -> Path:
        return self.root / MEDIA_FOLDER_NAME

    @property
    def media_db(self) -> Path:
        return self.root / MEDIA_DB_NAME

    @property
    def media_journal(self) -> Path:
        """The media log (`media/log.py`), under the journal's old name."""
        return self.root / MEDIA_JOURNAL_NAME

    @property
    def snapshots(self) -> Path:
        return self.root / SNAPSHOTS_FOLDER_NAME

    def snapshot_path(self, id: str, reason: str) -> Path:
        return self.snapshots / f"{id}.{reason}{SNAPSHOT_SUFFIX}"

    def pending_snapshot_path(self, id: str, reason: str) -> Path:
        return self.snapshots / f"{SNAPSHOT_PENDING_PREFIX}{id}.{reason}{SNAPSHOT_PENDING_SUFFIX}"

    def new_snapshot_temp(self) -> Path:
        """A new empty file in the snapshots folder (renamed into place when complete)."""
        self.snapshots.mkdir(exist_ok=True)
        return _new_file(self.snapshots, SNAPSHOT_TEMP_PREFIX, "")

    def new_restore_path(self) -> Path:
        """A new empty file in which a snapshot is expanded and checked before a restore."""
        return _new_file(self.root, RESTORE_PREFIX, ".anki2")

    def new_freeze_dir(self) -> Path:
        """A new empty folder for a consistent copy of this folder (backup, export)."""
        return Path(tempfile.mkdtemp(prefix=FREEZE_PREFIX, dir=self.root))

    def new_export_dir(self) -> Path:
        """A new empty folder in which a collection package is written for a download."""
        return Path(tempfile.mkdtemp(prefix=EXPORT_PREFIX, dir=self.root))

    def backup_entries(self, *, snapshots: bool) -> list[Path]:
        """What a backup carries of this folder besides the collection, media.db and media/:
        every other file or folder of the user's (e.g. a media trash, the operator's own
        notes), never a transient file, a database's -wal/-shm/-journal or the media journal;
        `snapshots/` only when asked."""
        special = {COLLECTION_NAME, MEDIA_DB_NAME, MEDIA_FOLDER_NAME, MEDIA_JOURNAL_NAME}
        if not snapshots:
            special.add(SNAPSHOTS_FOLDER_NAME)
        try:
            entries = sorted(self.root.iterdir())
        except FileNotFoundError:
            return []
        return [e for e in entries if e.name not in special and not is_transient(e.name)
                and e.name != PREVIOUS_NAME]

    @property
    def media_trash(self) -> Path:
        """Deleted and replaced media files; the entries inside are named by `media/trash.py`."""
        return self.root / MEDIA_TRASH_NAME

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.media.mkdir(exist_ok=True)

    def collection_bytes(self) -> int:
        """The collection's size on disk, with what is still in its WAL."""
        return sum(file_size(p) for p in (self.collection, Path(f"{self.collection}-wal")))

    def media_bytes(self) -> int:
        """The media files' size on disk (read from the folder: no index needs opening)."""
        try:
            entries = list(os.scandir(self.media))
        except FileNotFoundError:
            return 0
        return sum(e.stat(follow_symlinks=False).st_size for e in entries
                   if e.is_file(follow_symlinks=False) and not is_media_temp_name(e.name))

    def new_upload_file(self) -> tempfile._TemporaryFileWrapper[bytes]:
        """An open, named file that receives a full upload (the caller removes or renames it)."""
        return tempfile.NamedTemporaryFile(prefix=UPLOAD_PREFIX, dir=self.root, delete=False)

    def new_download_path(self) -> Path:
        """A new empty file for the copy a full download sends."""
        return _new_file(self.root, DOWNLOAD_PREFIX, "")

    def new_collection_path(self) -> Path:
        """A new empty file in which a new empty collection is built."""
        return _new_file(self.root, NEW_COLLECTION_PREFIX, ".anki2")

    def new_media_zip_path(self) -> Path:
        """Where a media download zip too large for memory is written (not yet created)."""
        return self.root / f"{MEDIA_ZIP_PREFIX}{secrets.token_hex(16)}{MEDIA_ZIP_SUFFIX}"

    def remove_leftovers(self) -> list[str]:
        """Delete what an interrupted upload, download, collection creation, media download,
        restore, backup, export download or snapshot left in the folder itself and in
        `snapshots/` (the media folder's own temp files are swept by the media recovery, which
        knows which of them the journal still needs; complete `.pending-` snapshots are
        finished by the snapshot recovery). Call only while nothing of this user's is in
        progress. Returns the names removed."""
        removed = []
        for entry in self.root.iterdir():
            if _is_leftover(entry.name) and entry.is_file():
                entry.unlink()
                removed.append(entry.name)
            elif entry.name.startswith((FREEZE_PREFIX, EXPORT_PREFIX)) and entry.is_dir():
                shutil.rmtree(entry)
                removed.append(entry.name)
        if self.snapshots.is_dir():
            for entry in self.snapshots.iterdir():
                if entry.name.startswith(SNAPSHOT_TEMP_PREFIX) and entry.is_file():
                    entry.unlink()
                    removed.append(f"{SNAPSHOTS_FOLDER_NAME}/{entry.name}")
        return removed


def file_size(path: Path) -> int:
    """The size of the file at `path`; 0 when there is none."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def is_transient(name: str) -> bool:
    """Whether `name` (anywhere in a user's folder) is a file ankihost is writing or a crash
    left, or a database's -wal/-shm/-journal: never part of a copy of the folder."""
    return (_is_leftover(name) or name.startswith((FREEZE_PREFIX, EXPORT_PREFIX, SNAPSHOT_TEMP_PREFIX))
            or name.endswith(SIDECAR_SUFFIXES) or is_media_temp_name(name))


def _is_leftover(name: str) -> bool:
    return (
        name.startswith(_LEFTOVER_PREFIXES)
        or name == PREVIOUS_STAGING_NAME
        or (name.startswith(MEDIA_ZIP_PREFIX) and name.endswith(MEDIA_ZIP_SUFFIX))
    )


def _new_file(folder: Path, prefix: str, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    return Path(name)


def remove_sidecars(db_path: Path) -> None:
    """Delete `-wal`/`-shm`/`-journal` files so SQLite never replays them into another file."""
    for suffix in SIDECAR_SUFFIXES:
        try:
            os.unlink(str(db_path) + suffix)
        except FileNotFoundError:
            pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_replace(source: Path, target: Path) -> None:
    """Durably move `source` over `target` (same folder): fsync file, rename, fsync folder."""
    with open(source, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(source, target)
    fsync_dir(target.parent)


def publish_new(source: Path, target: Path) -> bool:
    """`atomic_replace`, but never over an existing file: False, and nothing moved, when
    `target` exists (a file that appeared while `source` was being written)."""
    if target.exists():
        return False
    atomic_replace(source, target)
    return True
