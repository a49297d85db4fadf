"""Upload zips (validation, limits, staging) and download zips (layout)."""

from __future__ import annotations

import hashlib
import io
import json
import unicodedata
import zipfile
from pathlib import Path

import pytest

from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.media import archive, staging
from ankihost.storage.paths import is_media_temp_name


def upload_zip(
    entries: list[tuple[str, bytes | None]],
    *,
    meta: object = None,
    method: int = zipfile.ZIP_STORED,
) -> io.BytesIO:
    """An upload zip as the client builds it: members named by entry index, `_meta` last."""
    buf = io.BytesIO()
    listed = []
    with zipfile.ZipFile(buf, "w", method) as zf:
        for i, (name, data) in enumerate(entries):
            if data is None:
                listed.append([name, None])
            else:
                zf.writestr(str(i), data)
                listed.append([name, str(i)])
        zf.writestr("_meta", json.dumps(listed if meta is None else meta))
    buf.seek(0)
    return buf


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_reads_additions_and_deletions_in_order(tmp_path: Path) -> None:
    body = upload_zip([("a.txt", b"hello"), ("gone.txt", None), ("b.txt", b"world!")])
    upload = archive.read_upload(body, tmp_path)
    assert [e.name for e in upload.entries] == ["a.txt", "gone.txt", "b.txt"]
    a, gone, b = (e.staged for e in upload.entries)
    assert gone is None and a is not None and b is not None
    assert (a.sha1, a.size) == (hashlib.sha1(b"hello").digest(), 5)
    assert (b.path, b.data) == (None, b"world!")  # small: held in memory, nothing on disk
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_large_files_and_files_past_the_memory_budget_go_to_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: int
) -> None:
    monkeypatch.setattr(archive, "IN_MEMORY_FILE_BYTES", 10)
    monkeypatch.setattr(archive, "UPLOAD_IN_MEMORY_BYTES", 15)
    body = upload_zip([("big", b"B" * 11), ("a", b"A" * 10), ("b", b"C" * 6), ("c", b"D" * 5)],
                      method=method)
    upload = archive.read_upload(body, tmp_path)
    big, a, b, c = (e.staged for e in upload.entries)
    assert big is not None and big.data is None and big.path is not None
    assert big.path.read_bytes() == b"B" * 11 and is_media_temp_name(big.path.name)
    assert a is not None and a.data == b"A" * 10 and a.path is None
    assert b is not None and b.data is None and b.path is not None  # 10 + 6 is over 15
    assert c is not None and c.data == b"D" * 5  # 10 + 5 fits
    assert (c.sha1, c.size) == (hashlib.sha1(b"D" * 5).digest(), 5)
    upload.discard()
    assert leftovers(tmp_path) == []


def test_empty_member_means_deletion_and_unlisted_members_are_ignored(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("7", b"not mentioned")
        zf.writestr("_meta", json.dumps([["x.png", ""]]))
    upload = archive.read_upload(buf, tmp_path)
    assert [(e.name, e.staged) for e in upload.entries] == [("x.png", None)]


def test_deflate_is_accepted(tmp_path: Path) -> None:
    body = upload_zip([("a.txt", b"z" * 10_000)], method=zipfile.ZIP_DEFLATED)
    upload = archive.read_upload(body, tmp_path)
    staged = upload.entries[0].staged
    assert staged is not None and staged.size == 10_000
    upload.discard()


def test_exactly_25_entries_are_accepted(tmp_path: Path) -> None:
    body = upload_zip([(f"f{i}.txt", b"x") for i in range(25)])
    assert len(archive.read_upload(body, tmp_path).entries) == 25


def _bzip2_zip() -> io.BytesIO:
    return upload_zip([("a.txt", b"data")], method=zipfile.ZIP_BZIP2)


def _crc_broken_zip() -> io.BytesIO:
    raw = bytearray(upload_zip([("a.txt", b"ABCDEFGHIJ")]).getvalue())
    at = raw.index(b"ABCDEFGHIJ")
    raw[at] ^= 0xFF  # flip content bytes; the CRC-32 in the headers no longer matches
    return io.BytesIO(bytes(raw))


def _local_header_patched(old: bytes, new: bytes) -> io.BytesIO:
    raw = bytearray(upload_zip([("a.txt", b"ABCDEFGHIJ")]).getvalue())
    at = raw.index(old)  # the first occurrence: in the member's local header
    raw[at : at + len(old)] = new
    return io.BytesIO(bytes(raw))


def _many_members_zip() -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(archive.MAX_ZIP_MEMBERS + 1):
            zf.writestr(f"m{i}", b"x")
        zf.writestr("_meta", "[]")
    buf.seek(0)
    return buf


BAD_UPLOADS = {
    "26 entries": lambda: upload_zip([(f"f{i}.txt", b"x") for i in range(26)]),
    "256-byte name": lambda: upload_zip([("x" * 256, b"x")]),
    "NFD name": lambda: upload_zip([(unicodedata.normalize("NFD", "café.png"), b"x")]),
    "NFD deletion": lambda: upload_zip([(unicodedata.normalize("NFD", "café.png"), None)]),
    "slash in deletion": lambda: upload_zip([("../x", None)]),
    "traversal": lambda: upload_zip([("../../evil.txt", b"x")]),
    "backslash": lambda: upload_zip([("..\\evil.txt", b"x")]),
    "dotdot": lambda: upload_zip([("..", b"x")]),
    "NUL": lambda: upload_zip([("a\x00.txt", b"x")]),
    "empty name": lambda: upload_zip([("", b"x")]),
    "empty member": lambda: upload_zip([("a.txt", b"")]),
    "missing member": lambda: upload_zip([], meta=[["a.txt", "0"]]),
    "missing _meta": lambda: io.BytesIO(_without_meta()),
    "_meta not a list": lambda: upload_zip([], meta={"a.txt": "0"}),
    "_meta entry not a pair": lambda: upload_zip([], meta=[["a.txt"]]),
    "_meta member not a string": lambda: upload_zip([], meta=[["a.txt", 0]]),
    "_meta over 50 KiB": lambda: upload_zip([], meta=[["x" * 200, None]] * 300),
    "not a zip": lambda: io.BytesIO(b"this is not a zip file at all"),
    "empty body": lambda: io.BytesIO(b""),
    "truncated": lambda: io.BytesIO(upload_zip([("a.txt", b"x" * 1000)]).getvalue()[:-30]),
    "CRC mismatch": _crc_broken_zip,
    "local header of another name": lambda: _local_header_patched(b"\x000ABCDEF", b"\x009ABCDEF"),
    "no local header": lambda: _local_header_patched(b"PK\x03\x04", b"PK\x07\x08"),
    "bzip2": _bzip2_zip,
    "too many members": _many_members_zip,
}


def _without_meta() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("0", b"x")
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_are_400_and_leave_nothing(case: str, tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        archive.read_upload(BAD_UPLOADS[case](), tmp_path)
    assert leftovers(tmp_path) == []


def test_a_later_bad_entry_removes_files_staged_before_it(tmp_path: Path) -> None:
    body = upload_zip([("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"")])
    with pytest.raises(BadRequest):
        archive.read_upload(body, tmp_path)
    assert leftovers(tmp_path) == []


def test_declared_size_over_the_file_limit_is_refused_before_reading(tmp_path: Path) -> None:
    # A 100 MiB + 1 zip bomb: tiny compressed, declared size over the limit.
    big = b"\0" * (archive.MAX_FILE_BYTES + 1)
    body = upload_zip([("big.bin", big)], method=zipfile.ZIP_DEFLATED)
    del big
    with pytest.raises(BadRequest, match="declares over"):
        archive.read_upload(body, tmp_path)
    assert leftovers(tmp_path) == []


def test_total_expanded_size_is_limited(tmp_path: Path) -> None:
    n = archive.MAX_UPLOAD_EXPANDED_BYTES // archive.MAX_FILE_BYTES + 1
    chunk = b"\0" * archive.MAX_FILE_BYTES
    body = upload_zip([(f"f{i}.bin", chunk) for i in range(n)], method=zipfile.ZIP_DEFLATED)
    del chunk
    with pytest.raises(PayloadTooLarge):
        archive.read_upload(body, tmp_path)
    assert leftovers(tmp_path) == []


def test_download_zip_layout(tmp_path: Path) -> None:
    out = archive.DownloadZip(tmp_path / "d.zip")
    assert out.add("b.txt", io.BytesIO(b"bee"), 3) == hashlib.sha1(b"bee").digest()
    out.add("ä.txt", io.BytesIO(b"ay"), 2)
    out.close()
    with zipfile.ZipFile(tmp_path / "d.zip") as zf:
        assert zf.namelist() == ["0", "1", "_meta"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert json.loads(zf.read("_meta")) == {"0": "b.txt", "1": "ä.txt"}
        assert zf.read("0") == b"bee" and zf.read("1") == b"ay"


def test_empty_download_zip_has_an_empty_meta_object(tmp_path: Path) -> None:
    out = archive.DownloadZip(tmp_path / "d.zip")
    out.close()
    with zipfile.ZipFile(tmp_path / "d.zip") as zf:
        assert zf.namelist() == ["_meta"] and json.loads(zf.read("_meta")) == {}


def test_download_zip_notices_a_file_changing_size(tmp_path: Path) -> None:
    out = archive.DownloadZip(tmp_path / "d.zip")
    with pytest.raises(ValueError):
        out.add("a", io.BytesIO(b"longer than said"), 4)
    out.abandon()
    assert leftovers(tmp_path) == []


def test_member_names_are_not_paths(tmp_path: Path) -> None:
    # A member may be called anything; it is only ever read, never extracted by name.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../escape", b"x")
        zf.writestr("_meta", json.dumps([["ok.txt", "../../escape"]]))
    upload = archive.read_upload(buf, tmp_path)
    staged = upload.entries[0].staged
    assert staged is not None and staged.data == b"x"
    upload.discard()
    assert leftovers(tmp_path) == [] and not (tmp_path.parent.parent / "escape").exists()


def test_in_memory_download_zip_and_a_streamed_big_member(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    out = archive.DownloadZip(buffer)
    big = bytes(range(256)) * (staging.COPY_CHUNK_BYTES // 256 * 2 + 3)  # streamed in pieces
    assert out.add("big.bin", io.BytesIO(big), len(big)) == hashlib.sha1(big).digest()
    assert out.add("s.txt", io.BytesIO(b"small"), 5) == hashlib.sha1(b"small").digest()
    out.close()
    assert leftovers(tmp_path) == []
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as zf:
        assert json.loads(zf.read("_meta")) == {"0": "big.bin", "1": "s.txt"}
        assert zf.read("0") == big and zf.read("1") == b"small"


@pytest.mark.parametrize("declared", [4, 2 * staging.COPY_CHUNK_BYTES, 3 * staging.COPY_CHUNK_BYTES])
def test_download_zip_notices_any_size_change(declared: int) -> None:
    data = b"z" * (2 * staging.COPY_CHUNK_BYTES + 1)
    out = archive.DownloadZip(io.BytesIO())
    with pytest.raises(ValueError):
        out.add("a", io.BytesIO(data), declared)
    out.abandon()


def test_in_memory_download_zip_is_byte_for_byte_what_zipfile_writes(tmp_path: Path) -> None:
    contents = [b"x", b"", bytes(range(256)) * 300, "ünï".encode() * 1000]
    names = ["a.txt", "empty", "big.bin", "ünïcödé.png"]
    ours = io.BytesIO()
    out = archive.DownloadZip(ours)
    for name, data in zip(names, contents, strict=True):
        assert out.add(name, io.BytesIO(data), len(data)) == hashlib.sha1(data).digest()
    out.close()
    theirs = archive.DownloadZip(tmp_path / "ref.zip")  # the zipfile-based writer
    for name, data in zip(names, contents, strict=True):
        theirs.add(name, io.BytesIO(data), len(data))
    theirs.close()
    assert ours.getvalue() == (tmp_path / "ref.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(ours.getvalue())) as zf:
        assert zf.testzip() is None
        assert [zf.read(str(i)) for i in range(len(contents))] == contents
        assert json.loads(zf.read("_meta")) == {str(i): n for i, n in enumerate(names)}
