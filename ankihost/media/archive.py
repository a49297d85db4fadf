"""The zip payloads of media sync, both directions, under explicit limits.

Upload zip (client → server): `_meta` is a JSON list of `[real name, member or null/""]`;
`read_upload` validates all of it and reads every added file before anything is applied: small
files into memory (a stored member straight from its bytes, CRC-32 checked), others streamed to a
staged temp file. Download zip (server → client): members "0", "1", … and a `_meta` object
mapping member → real name, written last; `DownloadZip` copies files into it one at a time.
"""

from __future__ import annotations

import hashlib
import io
import struct
import sys
import zipfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.media import names, staging

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
# Ours: an added file up to this size is held in memory until it is written to its final place,
# as long as the upload's files held so far total at most UPLOAD_IN_MEMORY_BYTES (a client's
# zip of small files is ~2.5 MiB); larger ones are streamed to a temp file at once.
IN_MEMORY_FILE_BYTES = 1024 * 1024
UPLOAD_IN_MEMORY_BYTES = 8 * 1024 * 1024
META_NAME = "_meta"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# The ZIP records as zipfile defines them (zipfile.structFileHeader, structCentralDir, …).
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_CENTRAL_SIGNATURE = b"PK\x01\x02"
# General purpose flags a stored member may have for `_read_stored`: data descriptor, UTF-8 name.
_PLAIN_FLAGS = 0x0008 | 0x0800
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_DOS_DATE, _DOS_TIME = (1980 - 1980) << 9 | 1 << 5 | 1, 0  # _ZIP_DATE, as zipfile encodes it
_CREATE_SYSTEM = 0 if sys.platform == "win32" else 3  # as zipfile.ZipInfo sets it
_EXTERNAL_ATTR = 0o600 << 16  # what ZipFile.writestr gives a member (-rw-------)
# Far below zip64's limits (4 GiB); our in-memory zips are at most ~8 MiB.
_MEMORY_ZIP_MAX_BYTES = 1 << 30
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
    staged: staging.StagedFile | None


@dataclass
class Upload:
    entries: list[UploadEntry] = field(default_factory=list)

    def discard(self, placed: Collection[Path] = ()) -> None:
        """Remove every staged temp file that was not renamed into place (`placed`)."""
        for entry in self.entries:
            staged = entry.staged
            if staged is not None and staged.path is not None and staged.path not in placed:
                staged.discard()


def read_upload(body: IO[bytes], folder: Path) -> Upload:
    """Validate an upload zip and stage its added files in `folder`; 400/413 on any problem.

    On error nothing is left behind in `folder`.
    """
    upload = Upload()
    try:
        _check_member_count(body)
        with zipfile.ZipFile(body) as zf:
            expanded = held = 0
            for name, member in _read_meta(zf):
                staged = None
                if member is not None:
                    staged = _stage_member(zf, body, member, folder, held)
                    held += staged.size if staged.data is not None else 0
                    expanded += staged.size
                upload.entries.append(UploadEntry(name, staged))
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
    problem = names.protocol_problem(name)
    if problem is None and member:
        problem = names.addition_problem(name)
    if problem is not None:
        raise BadRequest(f"media file name {name!r:.300} {problem}")
    return name, member or None


def _stage_member(
    zf: zipfile.ZipFile, body: IO[bytes], member: str, folder: Path, held: int
) -> staging.StagedFile:
    """The member read and checked: in memory when small (`held` bytes are so far), else
    streamed to a temp file in `folder`."""
    info = zf.getinfo(member)
    if info.compress_type not in _READABLE_METHODS or info.flag_bits & 0x1:
        raise BadRequest(f"zip member {member!r:.50} is encrypted or uses an unsupported method")
    if info.file_size > MAX_FILE_BYTES:
        raise BadRequest(f"zip member {member!r:.50} declares over {MAX_FILE_BYTES} bytes")
    if info.file_size == 0:
        raise BadRequest(f"zip member {member!r:.50} is empty")
    if info.file_size <= IN_MEMORY_FILE_BYTES and held + info.file_size <= UPLOAD_IN_MEMORY_BYTES:
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & ~_PLAIN_FLAGS:
            data = _read_stored(body, info)
        else:
            with zf.open(info) as source:  # reading to the end also checks the CRC-32
                data = source.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise zipfile.BadZipFile(f"member {member!r:.50} is not its declared size")
        return staging.StagedFile.in_memory(data)
    with zf.open(info) as source:  # reading to the end also checks the member's CRC-32
        staged = staging.stage_stream(folder, source, MAX_FILE_BYTES)
    if staged.size == 0:
        staged.discard()
        raise BadRequest(f"zip member {member!r:.50} is empty")
    return staged


def _read_stored(body: IO[bytes], info: zipfile.ZipInfo) -> bytes:
    """A stored member's bytes, read at once from behind its local header; the same checks as
    `ZipFile.open` (signature, name, size) plus the CRC-32, without its per-read overhead."""
    body.seek(info.header_offset)
    header = body.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise zipfile.BadZipFile("truncated local file header")
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != _LOCAL_SIGNATURE:
        raise zipfile.BadZipFile("bad magic number for a local file header")
    name_length, extra_length = fields[10], fields[11]
    raw_name = body.read(name_length)
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"  # as zipfile decides
    if raw_name.decode(encoding) != info.orig_filename:
        raise zipfile.BadZipFile(f"local header name differs from {info.orig_filename!r:.50}")
    body.seek(extra_length, io.SEEK_CUR)
    if info.compress_size != info.file_size:
        raise zipfile.BadZipFile(f"stored member {info.orig_filename!r:.50} has two sizes")
    data = body.read(info.file_size)
    if len(data) != info.file_size:
        raise zipfile.BadZipFile(f"member {info.orig_filename!r:.50} is truncated")
    if zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"bad CRC-32 for member {info.orig_filename!r:.50}")
    return data


class DownloadZip:
    """A download zip written to `target` (a path, or an in-memory buffer for small zips):
    `add()` files in request order, then `close()`."""

    def __init__(self, target: Path | io.BytesIO) -> None:
        self.path = target if isinstance(target, Path) else None
        self._zip: zipfile.ZipFile | _MemoryZip = (
            zipfile.ZipFile(target, "w", zipfile.ZIP_STORED)
            if isinstance(target, Path) else _MemoryZip(target)
        )
        self._names: dict[str, str] = {}

    def add(self, real_name: str, source: IO[bytes], size: int) -> bytes:
        """Copy `size` bytes of `source` as the next member; returns the SHA-1 of what was written,
        computed in the same single pass over the file.

        Fewer or more bytes than `size` means the file changed under us: ValueError.
        """
        member = str(len(self._names))
        if size <= staging.COPY_CHUNK_BYTES:
            sha1 = self._add_whole(member, real_name, source, size)
        else:
            sha1 = self._add_streamed(member, real_name, source, size)
        self._names[member] = real_name
        return sha1

    def _add_whole(self, member: str, real_name: str, source: IO[bytes], size: int) -> bytes:
        """A small file: one read, hashed and stored from the same bytes."""
        data = source.read(size + 1)
        _check_size(real_name, len(data), size)
        self._write(member, data)
        return hashlib.sha1(data).digest()

    def _write(self, member: str, data: bytes) -> None:
        if isinstance(self._zip, _MemoryZip):
            self._zip.write(member, data)
        else:
            self._zip.writestr(zipfile.ZipInfo(member, date_time=_ZIP_DATE), data)

    def _add_streamed(self, member: str, real_name: str, source: IO[bytes], size: int) -> bytes:
        if isinstance(self._zip, _MemoryZip):  # never in practice: big files go to a file
            data = source.read(size + 1)
            _check_size(real_name, len(data), size)
            self._zip.write(member, data)
            return hashlib.sha1(data).digest()
        info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
        info.file_size = size
        digest, written = hashlib.sha1(), 0
        with self._zip.open(info, "w") as out:
            while chunk := source.read(min(staging.COPY_CHUNK_BYTES, size + 1 - written)):
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
        self._write(META_NAME, orjson.dumps(self._names))
        self._zip.close()

    def abandon(self) -> None:
        try:
            self._zip.close()
        finally:
            if self.path is not None:
                self.path.unlink(missing_ok=True)


class _MemoryZip:
    """The few ZIP features a small download zip needs (stored members with ASCII names, no
    zip64, no comment), written to a buffer byte for byte as `zipfile` writes them, without its
    per-member overhead (a tenth of the cost for 25 files of 20 KB)."""

    def __init__(self, out: io.BytesIO) -> None:
        self._out = out
        self._central: list[bytes] = []
        self._closed = False

    def write(self, member: str, data: bytes) -> None:
        name = member.encode("ascii")
        if self._out.tell() + len(data) > _MEMORY_ZIP_MAX_BYTES or len(self._central) >= 0xFFFF:
            raise ValueError("an in-memory download zip must stay small")
        offset, crc, size = self._out.tell(), zlib.crc32(data), len(data)
        self._out.write(_LOCAL_HEADER.pack(_LOCAL_SIGNATURE, 20, 0, 0, zipfile.ZIP_STORED,
                                           _DOS_TIME, _DOS_DATE, crc, size, size, len(name), 0))
        self._out.write(name)
        self._out.write(data)
        self._central.append(_CENTRAL_HEADER.pack(
            _CENTRAL_SIGNATURE, 20, _CREATE_SYSTEM, 20, 0, 0, zipfile.ZIP_STORED,
            _DOS_TIME, _DOS_DATE, crc, size, size, len(name), 0, 0, 0, 0, _EXTERNAL_ATTR, offset,
        ) + name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        start = self._out.tell()
        for header in self._central:
            self._out.write(header)
        count, size = len(self._central), self._out.tell() - start
        self._out.write(_EOCD.pack(_EOCD_SIGNATURE, 0, 0, count, count, size, start, 0))


def _check_size(real_name: str, read: int, size: int) -> None:
    if read != size:
        raise ValueError(f"{real_name!r} is {read} bytes or more, expected {size}")
