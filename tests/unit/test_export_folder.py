"""The folder a download's collection package is written in (`UserFolder.new_export_dir`): a
transient name that a crash's leftover sweep removes and no backup carries."""

from __future__ import annotations

from pathlib import Path

from ankihost.storage.paths import EXPORT_PREFIX, UserFolder, is_transient


def test_an_export_folder_left_by_a_crash_is_removed_and_never_backed_up(tmp_path: Path) -> None:
    folder = UserFolder(tmp_path / "alice")
    folder.ensure()
    made = folder.new_export_dir()
    assert made.parent == folder.root and made.name.startswith(EXPORT_PREFIX) and made.is_dir()
    (made / "alice.colpkg").write_bytes(b"half a package")
    (folder.root / "notes-of-the-admin.txt").write_text("mine")
    assert is_transient(made.name)
    assert [p.name for p in folder.backup_entries(snapshots=False)] == ["notes-of-the-admin.txt"]
    assert folder.remove_leftovers() == [made.name]
    assert sorted(p.name for p in folder.root.iterdir()) == ["media", "notes-of-the-admin.txt"]


def test_a_file_named_like_the_prefix_is_not_taken_for_a_leftover(tmp_path: Path) -> None:
    folder = UserFolder(tmp_path / "alice")
    folder.ensure()
    (folder.root / ".export-list.txt").write_text("an operator's file, not a folder")
    assert folder.remove_leftovers() == []
    assert (folder.root / ".export-list.txt").exists()
