"""The backup archive: one tar stream (POSIX.1-2001 / PAX) compressed as one zstd frame.

Members are paths as they lie under SYNC_BASE (`alice/collection.anki2`, `alice/media/x.jpg`,
`.ankihost/accounts.db`, …), so unpacking it gives a data folder either server can serve. The
first member, `.ankihost/backup.json`, says what the archive is; the last,
`.ankihost/backup-end.json`, how many files and bytes it holds and a SHA-256 over every
member's path, size and own SHA-256. Reading checks all of that in one pass (and zstd checks
its own checksum), so a damaged, truncated or altered archive is always noticed. Writer and
reader hold one member at a time: memory stays bounded whatever the size or number of files
(tarfile's list of members is emptied after each one).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import orjson
import zstandard

from ankihost.errors import BadRequest
from ankihost.snapshots.progress import Progress, Silent
from ankihost.storage.paths import STATE_FOLDER_NAME, unsafe_name_reason

FORMAT = 1
HEADER_NAME = f"{STATE_FOLDER_NAME}/backup.json"
TRAILER_NAME = f"{STATE_FOLDER_NAME}/backup-end.json"
ACCOUNTS_MEMBER = f"{STATE_FOLDER_NAME}/accounts.db"
COMPRESSION_LEVEL = 3
CHUNK_BYTES = 1024 * 1024
MAX_JSON_MEMBER_BYTES = 1024 * 1024
FILE_MODE = 0o600
FOLDER_MODE = 0o700


@dataclass
class Totals:
    files: int = 0
    bytes: int = 0
    users: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, name: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        top = name.split("/", 1)[0]
        if top != STATE_FOLDER_NAME:
            user = self.users.setdefault(top, {"files": 0, "bytes": 0})
            user["files"] += 1
            user["bytes"] += size


def _entry_line(name: str, size: int, sha256: str) -> bytes:
    return orjson.dumps([name, size, sha256]) + b"\n"


class _Hashing:
    """A file being read into the archive: hashes it and reports its bytes as they pass."""

    def __init__(self, f: BinaryIO, progress: Progress) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.sha.update(data)
        self.progress.add(len(data))
        return data


class ArchiveWriter:
    """Writes an archive to an open binary file (the caller makes it durable and names it)."""

    def __init__(self, out: BinaryIO, progress: Progress | None = None, **about: Any) -> None:
        self.progress = progress or Silent()
        compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, write_checksum=True)
        self._zstd = compressor.stream_writer(out, closefd=False)
        self._sink = _Sink(self._zstd)
        self._tar = tarfile.open(fileobj=cast(Any, self._sink), mode="w|", format=tarfile.PAX_FORMAT)
        self._digest = hashlib.sha256()
        self.totals = Totals()
        self._add_bytes(HEADER_NAME, orjson.dumps({"format": FORMAT, "created": int(time.time()), **about}))

    def add_file(self, name: str, path: Path) -> None:
        """The file at `path` as member `name` (it must not change meanwhile)."""
        _check_name(name)
        with open(path, "rb") as f:
            info = _info(name, tarfile.REGTYPE, os.fstat(f.fileno()))
            reader = _Hashing(f, self.progress)
            self._tar.addfile(info, reader)
        _forget_members(self._tar)
        self._digest.update(_entry_line(name, info.size, reader.sha.hexdigest()))
        self.totals.count(name, info.size)

    def add_folder(self, name: str, path: Path) -> None:
        _check_name(name)
        self._tar.addfile(_info(name, tarfile.DIRTYPE, path.stat()))
        _forget_members(self._tar)
        self._digest.update(_entry_line(name + "/", 0, ""))

    def add_tree(self, prefix: str, root: Path) -> None:
        """Every folder and file under `root`, as members under `prefix` (walked lazily)."""
        for relative, path, is_folder in walk(root):
            if is_folder:
                self.add_folder(f"{prefix}/{relative}", path)
            else:
                self.add_file(f"{prefix}/{relative}", path)

    def _add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), FILE_MODE
        self._tar.addfile(info, _BytesReader(data))
        _forget_members(self._tar)

    def finish(self) -> Totals:
        """Write the closing member and end the stream (the caller fsyncs the file)."""
        trailer = {"files": self.totals.files, "bytes": self.totals.bytes,
                   "digest": self._digest.hexdigest(), "users": self.totals.users}
        self._add_bytes(TRAILER_NAME, orjson.dumps(trailer))
        self._tar.close()
        cast(Any, self._zstd).close()  # ends the zstd frame; the output file stays open
        return self.totals

    def abandon(self) -> None:
        """Give up after an error: nothing more is written (the caller removes the output)."""
        self._sink.abandoned = True
        with contextlib.suppress(Exception):
            self._tar.close()
        with contextlib.suppress(Exception):
            cast(Any, self._zstd).close()


class _Sink:
    """Between tar and zstd: swallows whatever tar still writes after the writer gave up."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.abandoned = False

    def write(self, data: bytes) -> int:
        if self.abandoned:
            return len(data)
        return int(self.target.write(data))


def _forget_members(tar: tarfile.TarFile) -> None:
    """tarfile keeps every member it wrote or read in `members`; we never need them again."""
    cast(Any, tar).members.clear()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.at + size
        chunk = bytes(self.data[self.at:end])
        self.at += len(chunk)
        return chunk


def _info(name: str, kind: bytes, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = st.st_size if kind == tarfile.REGTYPE else 0
    info.mtime = int(st.st_mtime)
    info.mode = FILE_MODE if kind == tarfile.REGTYPE else FOLDER_MODE
    return info


def walk(root: Path) -> Iterator[tuple[str, Path, bool]]:
    """(path relative to `root`, path, is a folder) for everything under `root`, folders
    before their contents, read from the disk as it goes (no listing is held in memory)."""
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                relative = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    yield relative, Path(entry.path), True
                    stack.append((relative + "/", Path(entry.path)))
                elif entry.is_file(follow_symlinks=False):
                    yield relative, Path(entry.path), False


# -- reading --------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    """BadRequest unless `name` is a relative path of plain components under SYNC_BASE: a
    user's folder (a safe user name) or ankihost's own folder."""
    parts = name.split("/")
    if any(part in ("", ".", "..") or "\x00" in part for part in parts):
        raise BadRequest(f"the archive holds an unsafe path {name!r:.200}")
    if parts[0] == STATE_FOLDER_NAME:
        if name != ACCOUNTS_MEMBER:
            raise BadRequest(f"the archive holds {name!r:.200}, which is none of ankihost's files")
    elif unsafe_name_reason(parts[0]) is not None:
        raise BadRequest(f"the archive holds a path outside any user's folder: {name!r:.200}")


# What `read` hands to `on_file` for each regular member: its name, size and a reader.
OnFile = Callable[[str, int, "MemberReader"], None]
OnFolder = Callable[[str], None]


class MemberReader:
    """A member's data, hashed as it is read; `drain` reads what the callback left."""

    def __init__(self, f: IO[bytes], progress: Progress) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.progress = progress
        self.size = 0

    def read(self, size: int = CHUNK_BYTES) -> bytes:
        data = self.f.read(size)
        self.sha.update(data)
        self.size += len(data)
        self.progress.add(len(data))
        return data

    def drain(self) -> None:
        while self.read():
            pass


@dataclass(frozen=True)
class About:
    """What the archive's first and last members say."""

    header: dict[str, Any]
    files: int
    bytes: int
    users: dict[str, dict[str, int]]


def read(source: BinaryIO, on_file: OnFile | None = None, on_folder: OnFolder | None = None,
         progress: Progress | None = None) -> About:
    """Read an archive through, checking everything; BadRequest naming the first problem."""
    progress = progress or Silent()
    reader = zstandard.ZstdDecompressor().stream_reader(source, closefd=False)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            about = _read_members(tar, on_file, on_folder, progress, lambda: _drain(reader))
            _drain(reader)  # the rest of the stream: zstd checks its checksum at the end
            return about
    except (tarfile.TarError, zstandard.ZstdError, EOFError, orjson.JSONDecodeError) as exc:
        raise BadRequest(f"the archive is damaged: {exc}") from None


def _drain(reader: Any) -> None:
    while reader.read(CHUNK_BYTES):
        pass


def _read_members(tar: tarfile.TarFile, on_file: OnFile | None, on_folder: OnFolder | None,
                  progress: Progress, drain: Callable[[], None]) -> About:
    header = _json_member(tar, tar.next(), HEADER_NAME)
    if header.get("format") != FORMAT:
        raise BadRequest(f"the archive is of an unknown format {header.get('format')!r}")
    digest, totals = hashlib.sha256(), Totals()
    while True:
        info = tar.next()
        _forget_members(tar)
        if info is None:  # tar saw an end: a damaged header reads as one, which zstd may tell
            drain()
            raise BadRequest("the archive is damaged or incomplete: it ends before its closing member")
        if info.name == TRAILER_NAME:
            return _closing(tar, info, header, digest, totals)
        _check_name(info.name)
        if info.isdir():
            digest.update(_entry_line(info.name + "/", 0, ""))
            if on_folder is not None:
                on_folder(info.name)
        elif info.isreg():
            sha = _read_file(tar, info, on_file, progress)
            digest.update(_entry_line(info.name, info.size, sha))
            totals.count(info.name, info.size)
        else:
            raise BadRequest(f"the archive holds {info.name!r:.200}, which is not a file or folder")


def _read_file(tar: tarfile.TarFile, info: tarfile.TarInfo, on_file: OnFile | None,
               progress: Progress) -> str:
    data = tar.extractfile(info)
    assert data is not None
    reader = MemberReader(data, progress)
    if on_file is not None:
        on_file(info.name, info.size, reader)
    reader.drain()
    if reader.size != info.size:
        raise BadRequest(f"the archive is damaged: {info.name!r:.200} is short")
    return reader.sha.hexdigest()


def _closing(tar: tarfile.TarFile, info: tarfile.TarInfo, header: dict[str, Any],
             digest: Any, totals: Totals) -> About:
    trailer = _json_member(tar, info, TRAILER_NAME)
    if tar.next() is not None:
        raise BadRequest("the archive holds members after its closing member")
    if trailer.get("digest") != digest.hexdigest() or trailer.get("files") != totals.files \
            or trailer.get("bytes") != totals.bytes:
        raise BadRequest("the archive is damaged: its members do not match its closing member "
                         f"({totals.files} files, {totals.bytes} bytes read; it lists "
                         f"{trailer.get('files')} files, {trailer.get('bytes')} bytes)")
    return About(header, totals.files, totals.bytes, totals.users)


def _json_member(tar: tarfile.TarFile, info: tarfile.TarInfo | None, name: str) -> dict[str, Any]:
    _forget_members(tar)
    if info is None or info.name != name or not info.isreg() or info.size > MAX_JSON_MEMBER_BYTES:
        raise BadRequest(f"this is not an ankihost backup archive (no {name})")
    data = tar.extractfile(info)
    assert data is not None
    value = orjson.loads(data.read())
    if not isinstance(value, dict):
        raise BadRequest(f"this is not an ankihost backup archive ({name} is not an object)")
    return value
