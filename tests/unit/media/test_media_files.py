"""Media file names, streamed staging under a limit, and the undoable file journal."""

from __future__ import annotations

import hashlib
import io
import os
import unicodedata
from pathlib import Path

import pytest

from ankihost.errors import BadRequest
from ankihost.media import files


@pytest.mark.parametrize(
    "name",
    ["a.jpg", "ünïcödé.png", "x" * 251 + ".jpg", "co:lon.png", "日本語.mp3", ".hidden",
     "a..b"],
)
def test_acceptable_additions(name: str) -> None:
    assert files.addition_problem(name) is None
    assert files.path_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        (".", "empty"),
        ("..", "empty"),
        ("../etc/passwd", "'/'"),
        ("a/b.png", "'/'"),
        ("/abs.png", "'/'"),
        ("a\\b.png", "'\\'"),
        ("..\\x.png", "'\\'"),
        ("nul\x00.png", "NUL"),
        ("line\nbreak.png", "control"),
        ("del\x7f.png", "control"),
        (unicodedata.normalize("NFD", "café.png"), "NFC"),
        ("x" * 256, "255 bytes"),
        ("é" * 128, "255 bytes"),  # 256 bytes of UTF-8
    ],
)
def test_refused_additions(name: str, why: str) -> None:
    problem = files.addition_problem(name)
    assert problem is not None and why in problem


def test_protocol_rules_match_the_official_server() -> None:
    # These three apply to deletions too; '\\', NUL and control characters do not.
    assert files.protocol_problem("x" * 255) is None
    assert files.protocol_problem("x" * 256) is not None
    assert files.protocol_problem(unicodedata.normalize("NFD", "é")) is not None
    assert files.protocol_problem("a/b") is not None
    assert files.protocol_problem("a\\b") is None
    assert files.protocol_problem("") is None


def test_media_path_never_leaves_the_folder(tmp_path: Path) -> None:
    assert files.media_path(tmp_path, "a.png") == tmp_path / "a.png"
    assert files.media_path(tmp_path, "a\\b.png").parent == tmp_path
    for bad in ["", ".", "..", "../x", "a/b", "x\x00"]:
        with pytest.raises(BadRequest):
            files.media_path(tmp_path, bad)


def test_stage_stream_hashes_and_fsyncs_a_temp_file(tmp_path: Path) -> None:
    data = os.urandom(3 * files.COPY_CHUNK_BYTES + 5)
    staged = files.stage_stream(tmp_path, io.BytesIO(data), max_bytes=len(data))
    assert staged.path.parent == tmp_path and files.is_temp_name(staged.path.name)
    assert staged.path.read_bytes() == data
    assert (staged.sha1, staged.size) == (hashlib.sha1(data).digest(), len(data))
    staged.discard()
    assert list(tmp_path.iterdir()) == []


def test_stage_stream_refuses_one_byte_over_the_limit_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        files.stage_stream(tmp_path, io.BytesIO(b"x" * 11), max_bytes=10)
    assert list(tmp_path.iterdir()) == []


def _staged(folder: Path, data: bytes) -> files.StagedFile:
    return files.stage_stream(folder, io.BytesIO(data), max_bytes=len(data))


def test_journal_success_places_files_and_removes_backups(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_bytes(b"old")
    (tmp_path / "gone.txt").write_bytes(b"bye")
    with files.FileJournal(tmp_path) as journal:
        journal.place(_staged(tmp_path, b"new"), "old.txt")
        journal.place(_staged(tmp_path, b"fresh"), "fresh.txt")
        journal.remove("gone.txt")
        journal.remove("never-existed.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.txt", "old.txt"]
    assert (tmp_path / "old.txt").read_bytes() == b"new"


def test_journal_error_restores_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"A")
    (tmp_path / "b.txt").write_bytes(b"B")
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError), files.FileJournal(tmp_path) as journal:
        journal.place(_staged(tmp_path, b"A2"), "a.txt")
        journal.remove("b.txt")
        journal.place(_staged(tmp_path, b"C"), "c.txt")
        journal.place(_staged(tmp_path, b"A3"), "a.txt")  # same name twice
        journal.place(_staged(tmp_path, b"D"), "dir")  # fails: a directory is in the way
    names = sorted(p.name for p in tmp_path.iterdir() if not files.is_temp_name(p.name))
    assert names == ["a.txt", "b.txt", "dir"]
    assert (tmp_path / "a.txt").read_bytes() == b"A"
    assert (tmp_path / "b.txt").read_bytes() == b"B"


def test_remove_stray_temps_spares_names_in_use_and_other_files(tmp_path: Path) -> None:
    stray = files.new_temp_path(tmp_path)
    stray.write_bytes(b"crash leftover")
    claimed = files.new_temp_path(tmp_path)
    claimed.write_bytes(b"a user's file that happens to look like a temp")
    (tmp_path / ".ankihost-tmp-not-hex").write_bytes(b"user file")
    (tmp_path / "photo.jpg").write_bytes(b"user file")
    removed = files.remove_stray_temps(tmp_path, lambda name: name == claimed.name)
    assert removed == 1 and not stray.exists() and claimed.exists()
    assert (tmp_path / ".ankihost-tmp-not-hex").exists() and (tmp_path / "photo.jpg").exists()


def test_sha1_of_file_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"abc")
    assert files.sha1_of_file(tmp_path / "real") == hashlib.sha1(b"abc").digest()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError):
        files.open_for_reading(tmp_path / "link")
