"""The backup archive: what it holds, and every way a damaged or foreign one is refused."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
from pathlib import Path

import orjson
import pytest
import zstandard

from ankihost.errors import BadRequest
from ankihost.snapshots import archive, backup
from ankihost.snapshots.archive import ArchiveWriter
from ankihost.snapshots.progress import Silent


def tree(root: Path) -> Path:
    (root / "media").mkdir(parents=True)
    (root / "collection.anki2").write_bytes(os.urandom(5000))
    (root / "media" / "a.jpg").write_bytes(b"a" * 70_000)
    (root / "media" / "naïve é.mp3").write_bytes(os.urandom(300))
    (root / "trash").mkdir()
    return root


def write(path: Path, *trees: tuple[str, Path]) -> archive.Totals:
    with open(path, "wb") as out:
        writer = ArchiveWriter(out, ankihost="test")
        for name, root in trees:
            writer.add_tree(name, root)
        return writer.finish()


def read(path: Path) -> tuple[archive.About, dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    folders: list[str] = []

    def on_file(name: str, size: int, reader: archive.MemberReader) -> None:
        files[name] = b"".join(iter(reader.read, b""))

    with open(path, "rb") as f:
        about = archive.read(f, on_file=on_file, on_folder=folders.append)
    return about, files, folders


def unzstd(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read()


def test_what_is_written_is_read_back(tmp_path: Path) -> None:
    totals = write(tmp_path / "a.tar.zst", ("alice", tree(tmp_path / "alice")), ("bob", tree(tmp_path / "bob")))
    about, files, folders = read(tmp_path / "a.tar.zst")
    assert about.files == totals.files == 6 and about.bytes == totals.bytes == 2 * 75_300
    assert about.users == {"alice": {"files": 3, "bytes": 75_300}, "bob": {"files": 3, "bytes": 75_300}}
    assert files["alice/media/naïve é.mp3"] == (tmp_path / "alice/media/naïve é.mp3").read_bytes()
    assert sorted(folders) == ["alice/media", "alice/trash", "bob/media", "bob/trash"]
    assert about.header["format"] == archive.FORMAT and about.header["ankihost"] == "test"


def test_the_archive_is_plain_tar_in_zstd(tmp_path: Path) -> None:
    write(tmp_path / "a.tar.zst", ("alice", tree(tmp_path / "alice")))
    raw = unzstd(tmp_path / "a.tar.zst")
    names = tarfile.open(fileobj=io.BytesIO(raw)).getnames()
    assert names[0] == archive.HEADER_NAME and names[-1] == archive.TRAILER_NAME
    assert "alice/collection.anki2" in names


def test_a_flipped_byte_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "a.tar.zst"
    write(path, ("alice", tree(tmp_path / "alice")))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BadRequest, match="damaged"):
        read(path)


@pytest.mark.parametrize("keep", [0.2, 0.6, 0.99])
def test_a_truncated_archive_is_noticed(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "a.tar.zst"
    write(path, ("alice", tree(tmp_path / "alice")))
    os.truncate(path, int(path.stat().st_size * keep))
    with pytest.raises(BadRequest, match="damaged|incomplete"):
        read(path)


def raw_archive(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> None:
    """A tar.zst made by hand (not by ArchiveWriter), for archives ours would never write."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    path.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))


HEADER = (archive.HEADER_NAME, orjson.dumps({"format": archive.FORMAT}))


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "alice/../../x", "alice//x", "./alice/x",
                                  " alice/x", "al\u200bice/x", ".ankihost/lock"])
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str) -> None:
    raw_archive(tmp_path / "a.tar.zst", [HEADER, (name, b"x")])
    with pytest.raises(BadRequest, match="unsafe|outside|none of ankihost"):
        read(tmp_path / "a.tar.zst")


def test_links_and_devices_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("alice/media/x")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    raw_archive(tmp_path / "a.tar.zst", [HEADER, link])
    with pytest.raises(BadRequest, match="not a file or folder"):
        read(tmp_path / "a.tar.zst")


def test_a_tar_that_is_not_a_backup_is_refused(tmp_path: Path) -> None:
    raw_archive(tmp_path / "a.tar.zst", [("alice/collection.anki2", b"x")])
    with pytest.raises(BadRequest, match="not an ankihost backup"):
        read(tmp_path / "a.tar.zst")


def test_a_file_that_is_not_zstd_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.tar.zst").write_bytes(b"PK\x03\x04 certainly not a backup" * 100)
    with pytest.raises(BadRequest, match="damaged"):
        read(tmp_path / "a.tar.zst")


def test_members_changed_behind_the_closing_member_are_noticed(tmp_path: Path) -> None:
    """A member swapped for another of the same size, zstd and tar both intact."""
    path = tmp_path / "a.tar.zst"
    write(path, ("alice", tree(tmp_path / "alice")))
    raw = unzstd(path)
    original = (tmp_path / "alice/media/a.jpg").read_bytes()
    assert raw.count(original) == 1
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.replace(original, b"b" * len(original))))
    with pytest.raises(BadRequest, match="do not match its closing member"):
        read(path)


def test_members_after_the_closing_member_are_refused(tmp_path: Path) -> None:
    trailer = (archive.TRAILER_NAME, orjson.dumps({"files": 0, "bytes": 0, "digest": ""}))
    raw_archive(tmp_path / "a.tar.zst", [HEADER, trailer, ("alice/x", b"1")])
    with pytest.raises(BadRequest, match="after its closing member"):
        read(tmp_path / "a.tar.zst")


def test_memory_stays_bounded_however_many_files(tmp_path: Path) -> None:
    """tarfile keeps every member it has seen unless told not to: 2,400 files must not cost
    more than 400 do (writing, and reading back)."""

    def peak(count: int) -> int:
        root = tmp_path / f"t{count}" / "media"
        root.mkdir(parents=True)
        for i in range(count):
            (root / f"file-{i:06d}-with-a-long-name-like-real-media.jpg").write_bytes(b"x")
        path = tmp_path / f"t{count}.tar.zst"
        tracemalloc.start()
        try:
            with open(path, "wb") as out:
                writer = ArchiveWriter(out, Silent())
                writer.add_tree("alice", root.parent)
                writer.finish()
            with open(path, "rb") as f:
                archive.read(f)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(400), peak(2400)
    assert large < small * 1.5 + 256 * 1024, (small, large)


def test_unpacking_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    write(tmp_path / "a.tar.zst", ("alice", tree(tmp_path / "alice")))
    target = tmp_path / "base"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(BadRequest, match="not empty"):
        backup.unpack(tmp_path / "a.tar.zst", target, Silent())
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_a_failed_unpack_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.tar.zst"
    write(path, ("alice", tree(tmp_path / "alice")))
    os.truncate(path, path.stat().st_size - 100)
    with pytest.raises(BadRequest):
        backup.unpack(path, tmp_path / "base", Silent())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.zst", "alice"]


def test_verify_checks_every_database_in_the_archive(tmp_path: Path) -> None:
    """An intact archive whose collection is not a sound database is refused by --verify."""
    path = tmp_path / "a.tar.zst"
    write(path, ("alice", tree(tmp_path / "alice")))  # collection.anki2 holds random bytes
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(BadRequest, match="alice/collection.anki2 in the archive is not a readable database"):
        backup.verify(path, scratch, Silent())
    assert list(scratch.iterdir()) == []


def test_verify_reports_a_damaged_archive_as_such_when_the_damage_shows_in_a_database(
    tmp_path: Path, client_collection: bytes
) -> None:
    root = tmp_path / "alice"
    (root / "media").mkdir(parents=True)
    (root / "collection.anki2").write_bytes(client_collection)
    (root / "media" / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))  # read after the collection
    path = tmp_path / "a.tar.zst"
    write(path, ("alice", root))
    raw = bytearray(unzstd(path))
    raw[raw.index(client_collection) + 3] ^= 0xFF  # the database's magic: no longer SQLite
    compressor = zstandard.ZstdCompressor(write_checksum=True)
    good_checksum = compressor.compress(unzstd(path))[-4:]
    damaged = bytearray(compressor.compress(bytes(raw)))
    damaged[-4:] = good_checksum  # as if the data were damaged but the checksum not
    path.write_bytes(bytes(damaged))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(BadRequest, match="damaged"):
        backup.verify(path, scratch, Silent())
