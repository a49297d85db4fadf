"""`ankihost export`: a user's collection (and media) as a collection package (.colpkg), the
file Anki desktop's File → Export → "Anki Collection Package" writes and File → Import reads.

The layout, as Anki 26.9.3 writes it (every member stored, not deflated): `meta` (the package
version, 3), `collection.anki21b` (the schema-18 collection, zstd), `collection.anki2` (a small
schema-11 collection whose one note asks users of old versions to update), then each media
file as a member named by its position, "0", "1", … (zstd each), then `media` (zstd of the list
of name, size and SHA-1 of each, by position). The copy comes from `freeze` (the user's lock
held only for that); the package is written beside its destination and renamed when checked.
Media files whose names Anki's importer would refuse (it refuses the whole package then) are
left out and reported.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import time
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import zstandard

from ankihost.errors import BadRequest, ServerError
from ankihost.registry import UserState
from ankihost.snapshots.freeze import Frozen, freeze
from ankihost.snapshots.idle import WAIT_SECS, when_idle
from ankihost.snapshots.progress import Progress
from ankihost.storage import notetypes, schema, schema11
from ankihost.storage.collection import atomic, connect, now_millis
from ankihost.storage.paths import publish_new, remove_sidecars

PACKAGE_VERSION_LATEST = 3
COLLECTION_MEMBER = "collection.anki21b"
LEGACY_MEMBER = "collection.anki2"
MEDIA_LIST_MEMBER = "media"
META_MEMBER = "meta"
# Anki truncates longer media names, so its importer refuses them (spec: MAX_MEDIA_FILENAME_LENGTH).
MAX_MEDIA_NAME_BYTES = 120
# Members this large or larger are written with zip64 sizes.
ZIP64_FROM_BYTES = 1 << 30
CHUNK_BYTES = 1024 * 1024
_UNIX_FILE = 0o100644 << 16
_MADE_ON_UNIX = 3
_DISALLOWED = frozenset('[]<>:"/?*^\\|')
_WINDOWS_DEVICE = re.compile(r"(?i)^(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\.|$)")
UPDATE_NOTE = ("Please update to the latest Anki version, then import the .colpkg/.apkg file "
               "again.")


@dataclass
class Written:
    notes: int = 0
    cards: int = 0
    media_files: int = 0
    media_bytes: int = 0
    skipped: list[str] = field(default_factory=list)


async def export(state: UserState, dest: Path, *, media: bool, progress: Progress,
                 wait_secs: float = WAIT_SECS) -> dict[str, Any]:
    """Write the package of the user's collection (with their media unless `media` is False)
    to the new file `dest`; what it holds. SessionConflict when the user is still syncing
    after `wait_secs`."""
    _check_destination(dest)
    await state.ensure_prepared()  # prepared first: a crash's leftovers gone
    frozen = await when_idle(state, lambda: freeze(state, media=media, others=False, create=True),
                             wait_secs=wait_secs)
    try:
        written = await anyio.to_thread.run_sync(_write_package, frozen, dest, progress)
    finally:
        await anyio.to_thread.run_sync(frozen.remove)
    return {"path": str(dest), "notes": written.notes, "cards": written.cards,
            "media_files": written.media_files, "media_bytes": written.media_bytes,
            "skipped": written.skipped[:20], "skipped_count": len(written.skipped)}


def _check_destination(dest: Path) -> None:
    if not dest.is_absolute():
        raise BadRequest(f"{dest} is not an absolute path")
    if not dest.parent.is_dir():
        raise BadRequest(f"the folder {dest.parent} does not exist")
    if dest.exists() or dest.is_symlink():
        raise BadRequest(f"{dest} already exists; choose another name (nothing is overwritten)")


def _write_package(frozen: Frozen, dest: Path, progress: Progress) -> Written:
    collection = frozen.collection
    assert collection is not None
    part = dest.with_name(f".{dest.name}.ankihost-partial-{os.getpid()}-{secrets.token_hex(4)}")
    legacy = frozen.root / "legacy.anki2"
    try:
        build_update_notice(legacy, frozen.root / "legacy-scratch.anki2")
        written = _counts(collection)
        with zipfile.ZipFile(part, "x", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            _member_bytes(zf, META_MEMBER, _meta())
            _member_zstd(zf, COLLECTION_MEMBER, collection, progress)
            _member_file(zf, LEGACY_MEMBER, legacy)
            entries = _media_members(zf, frozen.media, written, progress)
            _member_bytes(zf, MEDIA_LIST_MEMBER, zstandard.ZstdCompressor().compress(entries))
        _check_and_publish(part, dest)
    except OSError as exc:
        raise ServerError(f"could not write {dest}: {exc.strerror or exc}; nothing was written") from exc
    finally:
        part.unlink(missing_ok=True)
    return written


def _counts(collection: Path) -> Written:
    db = sqlite3.connect(f"{collection.as_uri()}?immutable=1", uri=True)
    try:
        notes = db.execute("select count() from notes").fetchone()[0]
        cards = db.execute("select count() from cards").fetchone()[0]
    finally:
        db.close()
    return Written(notes=notes, cards=cards)


def _info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = _UNIX_FILE
    info.create_system = _MADE_ON_UNIX
    return info


def _member_bytes(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    zf.writestr(_info(name), data)


def _member_file(zf: zipfile.ZipFile, name: str, path: Path) -> None:
    with open(path, "rb") as source, zf.open(_info(name), "w") as out:
        while chunk := source.read(CHUNK_BYTES):
            out.write(chunk)


def _member_zstd(zf: zipfile.ZipFile, name: str, path: Path, progress: Progress) -> tuple[int, bytes]:
    """`path` zstd-compressed as member `name`; its size and SHA-1."""
    size, sha1 = 0, hashlib.sha1()
    big = path.stat().st_size >= ZIP64_FROM_BYTES
    with open(path, "rb") as source, zf.open(_info(name), "w", force_zip64=big) as out:
        with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as zstd:
            while chunk := source.read(CHUNK_BYTES):
                zstd.write(chunk)
                size += len(chunk)
                sha1.update(chunk)
                progress.add(len(chunk))
    return size, sha1.digest()


def _media_members(zf: zipfile.ZipFile, folder: Path, written: Written, progress: Progress) -> bytes:
    """Each media file as member "0", "1", …; the encoded list of them."""
    entries = bytearray()
    for name, path in _media_files(folder):
        if not desktop_accepts(name):
            written.skipped.append(name)
            continue
        size, sha1 = _member_zstd(zf, str(written.media_files), path, progress)
        entries += _field_bytes(1, _media_entry(name, size, sha1))
        written.media_files += 1
        written.media_bytes += size
    return bytes(entries)


def _media_files(folder: Path) -> Iterator[tuple[str, Path]]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_file(follow_symlinks=False):
            yield entry.name, Path(entry.path)


def desktop_accepts(name: str) -> bool:
    """Whether Anki's importer takes a media file of this name as it is (it refuses a whole
    package with a name its own normalisation would change)."""
    if name in ("", ".", "..") or not unicodedata.is_normalized("NFC", name):
        return False
    if any(c in _DISALLOWED or ord(c) < 0x20 or c == "\x7f" or c == "\xa0"
           or unicodedata.category(c) == "Cn" for c in name):
        return False
    if _WINDOWS_DEVICE.match(name) or name.endswith((" ", ".")):
        return False
    return len(name.encode("utf-8", "surrogatepass")) <= MAX_MEDIA_NAME_BYTES


def _check_and_publish(part: Path, dest: Path) -> None:
    with zipfile.ZipFile(part) as zf:
        if (bad := zf.testzip()) is not None:
            raise ServerError(f"the package just written is damaged ({bad}); nothing was written")
    if not publish_new(part, dest):
        raise BadRequest(f"{dest} appeared meanwhile; the package was not kept")


# -- protobuf (PackageMetadata and MediaEntries of Anki's import_export.proto) ---------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _field_bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data if data else b""


def _meta() -> bytes:
    return _field_varint(1, PACKAGE_VERSION_LATEST)


def _media_entry(name: str, size: int, sha1: bytes) -> bytes:
    size = size if size < 1 << 32 else 0  # a u32 there; Anki writes 0 when it does not fit
    return _field_bytes(1, name.encode("utf-8")) + _field_varint(2, size) + _field_bytes(3, sha1)


# -- the note for old versions -------------------------------------------------------------

_BASIC = {
    "id": 1, "name": "Basic", "type": 0, "mod": 0, "usn": 0, "sortf": 0, "did": 1,
    "css": ".card {\n  font-family: arial;\n  font-size: 20px;\n  text-align: center;\n"
           "  color: black;\n  background-color: white;\n}\n",
    "latexPre": "\\documentclass[12pt]{article}\n\\special{papersize=3in,5in}\n"
                "\\usepackage[utf8]{inputenc}\n\\usepackage{amssymb,amsmath}\n"
                "\\pagestyle{empty}\n\\setlength{\\parindent}{0in}\n\\begin{document}\n",
    "latexPost": "\\end{document}", "latexsvg": False, "req": [[0, "any", [0]]],
    "flds": [{"name": field, "ord": i, "sticky": False, "rtl": False, "font": "Arial", "size": 20}
             for i, field in enumerate(("Front", "Back"))],
    "tmpls": [{"name": "Card 1", "ord": 0, "qfmt": "{{Front}}",
               "afmt": "{{FrontSide}}\n\n<hr id=answer>\n\n{{Back}}", "bqfmt": "", "bafmt": "",
               "did": None, "bfont": "", "bsize": 0}],
}


def build_update_notice(path: Path, scratch: Path) -> None:
    """At `path`, the schema-11 collection a package carries for versions older than 2.1.50:
    one Basic note asking to update (what Anki itself puts there)."""
    scratch.touch()
    schema.create_empty(path, scratch)
    db = connect(path)
    try:
        with atomic(db):
            notetypes.from_legacy(db, _BASIC)
            _add_note(db, UPDATE_NOTE)
    finally:
        db.close()
    schema11.downgrade_in_place(path)
    db = sqlite3.connect(str(path))
    try:
        db.executescript("pragma page_size = 512; vacuum;")
    finally:
        db.close()
    remove_sidecars(path)


def _add_note(db: sqlite3.Connection, text: str) -> None:
    now = now_millis()
    checksum = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
    db.execute("insert into notes values (?, ?, 1, ?, -1, '', ?, ?, ?, 0, '')",
               (now, secrets.token_urlsafe(8)[:10], now // 1000, text + "\x1f", text, checksum))
    db.execute("insert into cards values (?, ?, 1, 0, ?, -1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, '{}')",
               (now, now, now // 1000))
