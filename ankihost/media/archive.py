"""The zip payloads of media sync, both directions, under explicit limits.

Upload zip (client → server): `_meta` is a JSON list of `[real name, member or null/""]`;
`read_upload` validates all of it and streams every added file to a staged temp file before
anything is applied. Download zip (server → client): members "0", "1", … and a `_meta` object
mapping member → real name, written last; `DownloadZip` copies files into it one at a time.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.media import files

# Limits of the official server (rslib/src/sync/media/mod.rs and zip.rs).
MAX_META_BYTES = 50 * 1024
MAX_FILES_PER_ZIP = 25
MAX_FILE_BYTES = 100 * 1024 * 1024
# A download zip stops after the file that takes its running total over this (the official value).
DOWNLOAD_TARGET_BYTES = 2_621_440
# Ours: clients send ≤ 25 files + `_meta`; a bigger central directory is refused before parsing.
MAX_ZIP_MEMBERS = 64
# Ours: all added files of one upload together. A client closes a zip once it passes 2.5 MiB,
# so the most it sends is just under 2.5 MiB plus one 100 MiB file.
MAX_UPLOAD_EXPANDED_BYTES = 128 * 1024 * 1024
META_NAME = "_meta"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_MAX_EOCD_SEARCH_BYTES = _EOCD.size + 0xFFFF
# What zipfile and zlib raise on malformed input.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, KeyError,
               ValueError, NotImplementedError, RuntimeError, struct.error)


@dataclass(frozen=True)
class UploadEntry:
    """One `_meta` entry: a deletion when `staged` is None."""

    name: str
    staged: files.StagedFile | None


@dataclass
class Upload:
    entries: list[UploadEntry] = field(default_factory=list)

    def discard(self, placed: Collection[Path] = ()) -> None:
        """Remove every staged temp file that was not renamed into place (`placed`)."""
        for entry in self.entries:
            if entry.staged is not None and entry.staged.path not in placed:
                entry.staged.discard()


def read_upload(body: IO[bytes], folder: Path) -> Upload:
    """Validate an upload zip and stage its added files in `folder`; 400/413 on any problem.

    On error nothing is left behind in `folder`.
    """
    upload = Upload()
    try:
        _check_member_count(body)
        with zipfile.ZipFile(body) as zf:
            expanded = 0
            for name, member in _read_meta(zf):
                staged = None if member is None else _stage_member(zf, member, folder)
                upload.entries.append(UploadEntry(name, staged))
                expanded += staged.size if staged is not None else 0
                if expanded > MAX_UPLOAD_EXPANDED_BYTES:
                    raise PayloadTooLarge(f"upload expands past {MAX_UPLOAD_EXPANDED_BYTES} bytes")
    except _ZIP_ERRORS as exc:
        upload.discard()
        raise BadRequest(f"invalid upload zip: {type(exc).__name__}: {exc}") from None
    except BaseException:
        upload.discard()
        raise
    return upload


def _check_member_count(body: IO[bytes]) -> None:
    """Read the end-of-central-directory record and refuse more than MAX_ZIP_MEMBERS members."""
    end = body.seek(0, 2)
    start = max(0, end - _MAX_EOCD_SEARCH_BYTES)
    body.seek(start)
    tail = body.read()
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or len(tail) - at < _EOCD.size:
        raise BadRequest("invalid upload zip: no end of central directory")
    count = _EOCD.unpack_from(tail, at)[4]
    if count > MAX_ZIP_MEMBERS:
        raise BadRequest(f"upload zip has {count} members; at most {MAX_ZIP_MEMBERS}")
    body.seek(0)


def _read_meta(zf: zipfile.ZipFile) -> list[tuple[str, str | None]]:
    """The `_meta` list as (real name, member or None), every name checked."""
    with zf.open(META_NAME) as f:
        raw = f.read(MAX_META_BYTES + 1)
    if len(raw) > MAX_META_BYTES:
        raise BadRequest(f"_meta is over {MAX_META_BYTES} bytes")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"_meta is not JSON: {exc}") from None
    if not isinstance(value, list):
        raise BadRequest("_meta must be a list")
    if len(value) > MAX_FILES_PER_ZIP:
        raise BadRequest(f"upload has {len(value)} entries; at most {MAX_FILES_PER_ZIP}")
    return [_meta_entry(item) for item in value]


def _meta_entry(item: object) -> tuple[str, str | None]:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        raise BadRequest(f"bad _meta entry: {item!r:.100}")
    name, member = item
    if member is not None and not isinstance(member, str):
        raise BadRequest(f"bad _meta member for {name!r:.100}")
    problem = files.protocol_problem(name)
    if problem is None and member:
        problem = files.addition_problem(name)
    if problem is not None:
        raise BadRequest(f"media file name {name!r:.300} {problem}")
    return name, member or None


def _stage_member(zf: zipfile.ZipFile, member: str, folder: Path) -> files.StagedFile:
    info = zf.getinfo(member)
    if info.compress_type not in _READABLE_METHODS or info.flag_bits & 0x1:
        raise BadRequest(f"zip member {member!r:.50} is encrypted or uses an unsupported method")
    if info.file_size > MAX_FILE_BYTES:
        raise BadRequest(f"zip member {member!r:.50} declares over {MAX_FILE_BYTES} bytes")
    with zf.open(info) as source:  # reading to the end also checks the member's CRC-32
        staged = files.stage_stream(folder, source, MAX_FILE_BYTES)
    if staged.size == 0:
        staged.discard()
        raise BadRequest(f"zip member {member!r:.50} is empty")
    return staged


class DownloadZip:
    """A download zip written to `target` (a path, or an in-memory buffer for small zips):
    `add()` files in request order, then `close()`."""

    def __init__(self, target: Path | io.BytesIO) -> None:
        self.path = target if isinstance(target, Path) else None
        self._zip = zipfile.ZipFile(target, "w", zipfile.ZIP_STORED)
        self._names: dict[str, str] = {}

    def add(self, real_name: str, source: IO[bytes], size: int) -> bytes:
        """Copy `size` bytes of `source` as the next member; returns the SHA-1 of what was written,
        computed in the same single pass over the file.

        Fewer or more bytes than `size` means the file changed under us: ValueError.
        """
        member = str(len(self._names))
        info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
        if size <= files.COPY_CHUNK_BYTES:
            sha1 = self._add_whole(info, real_name, source, size)
        else:
            sha1 = self._add_streamed(info, real_name, source, size)
        self._names[member] = real_name
        return sha1

    def _add_whole(self, info: zipfile.ZipInfo, real_name: str, source: IO[bytes],
                   size: int) -> bytes:
        """A small file: one read, hashed and stored from the same bytes."""
        data = source.read(size + 1)
        _check_size(real_name, len(data), size)
        self._zip.writestr(info, data)
        return hashlib.sha1(data).digest()

    def _add_streamed(self, info: zipfile.ZipInfo, real_name: str, source: IO[bytes],
                      size: int) -> bytes:
        info.file_size = size
        digest, written = hashlib.sha1(), 0
        with self._zip.open(info, "w") as out:
            while chunk := source.read(min(files.COPY_CHUNK_BYTES, size + 1 - written)):
                written += len(chunk)
                if written > size:
                    break
                digest.update(chunk)
                out.write(chunk)
            _check_size(real_name, written, size)
        return digest.digest()

    @property
    def count(self) -> int:
        return len(self._names)

    def close(self) -> None:
        info = zipfile.ZipInfo(META_NAME, date_time=_ZIP_DATE)
        self._zip.writestr(info, orjson.dumps(self._names))
        self._zip.close()

    def abandon(self) -> None:
        try:
            self._zip.close()
        finally:
            if self.path is not None:
                self.path.unlink(missing_ok=True)


def _check_size(real_name: str, read: int, size: int) -> None:
    if read != size:
        raise ValueError(f"{real_name!r} is {read} bytes or more, expected {size}")
