import shutil
import sqlite3

import pytest

from ankihost.storage import schema
from ankihost.storage.collection import connect, read_col, unicase
from ankihost.storage.paths import UserFolder, atomic_replace, unsafe_name_reason


def test_unicase_folds_case_like_the_client():
    assert unicase("Straße", "STRASSE") == 0
    assert unicase("apple", "Banana") < 0
    db = connect(":memory:", exclusive=False)
    db.execute("create table t (name text collate unicase unique)")
    db.execute("insert into t values ('Default')")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("insert into t values ('default')")


@pytest.mark.parametrize("name", ["alice", "Bob Smith", "zoë", "a.b", "user@example.org"])
def test_safe_user_names(name):
    assert unsafe_name_reason(name) is None


def test_new_collection_is_empty_schema_18_with_mod_zero(tmp_path):
    path = tmp_path / "collection.anki2"
    schema.create_empty(path, path.with_name('.new-test.anki2'))
    assert schema.upload_problem(path) is None
    db = connect(path)
    col = read_col(db)
    assert (col.ver, col.mod, col.usn, col.ls) == (18, 0, 0, 0)
    assert col.scm > 0 and col.crt == schema.day_start_secs()
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert db.execute("select count() from cards").fetchone()[0] == 0
    assert db.execute("select name from decks").fetchall() == [("Default",)]
    assert db.execute("select val from config where key='schedVer'").fetchone()[0] == b"2"
    assert db.execute("select typeof(val) from config limit 1").fetchone()[0] == "blob"
    db.close()


def test_new_collection_opens_in_the_real_client(tmp_path):
    from anki.collection import Collection

    path = tmp_path / "collection.anki2"
    schema.create_empty(path, path.with_name('.new-test.anki2'))
    col = Collection(str(path))
    try:
        assert col.decks.id_for_name("Default") == 1
        assert col.v3_scheduler()
        assert col.card_count() == 0
    finally:
        col.close()


def test_real_client_collection_passes_upload_check(tmp_path):
    from anki.collection import Collection

    col = Collection(str(tmp_path / "c.anki2"))
    col.decks.id("Ärger::straße")
    col.decks.id("STRASSE2")
    col.close()
    assert schema.upload_problem(tmp_path / "c.anki2") is None


def _collection(tmp_path):
    path = tmp_path / "collection.anki2"
    schema.create_empty(path, path.with_name('.new-test.anki2'))
    return path


def test_upload_check_refuses_non_collections(tmp_path):
    random_file = tmp_path / "random"
    random_file.write_bytes(b"SQLite format 3\x00" + b"\x01" * 5000)
    assert schema.upload_problem(random_file)
    other_db = tmp_path / "other.db"
    sqlite3.connect(other_db).execute("create table x (y)").connection.close()
    assert "missing" in schema.upload_problem(other_db)


def test_upload_check_refuses_other_schema_versions(tmp_path):
    path = _collection(tmp_path)
    db = connect(path)
    db.execute("update col set ver = 11")
    db.close()
    assert "version 11" in schema.upload_problem(path)


def test_upload_check_finds_index_corruption(tmp_path):
    path = _collection(tmp_path)
    db = sqlite3.connect(path)  # binary collation: the index order no longer holds
    db.create_collation("unicase", lambda a, b: (a > b) - (a < b))
    for name in ["b", "A", "c", "B2", "a3"]:
        db.execute("insert into decks values (?, ?, 0, 0, x'', x'')", (hash(name) % 10**9, name))
    db.commit()
    db.close()
    assert "integrity" in schema.upload_problem(path)


def test_upload_check_refuses_truncated_files(tmp_path):
    from anki.collection import Collection

    col = Collection(str(tmp_path / "c.anki2"))
    for i in range(300):
        note = col.new_note(col.models.by_name("Basic"))
        note["Front"] = f"q{i}" * 50
        col.add_note(note, 1)
    col.close()
    data = (tmp_path / "c.anki2").read_bytes()
    cut = tmp_path / "cut.anki2"
    cut.write_bytes(data[: len(data) // 2])
    assert schema.upload_problem(cut)


def test_atomic_replace_and_folder_layout(tmp_path):
    folder = UserFolder(tmp_path / "alice")
    folder.ensure()
    assert folder.media.is_dir() and folder.media_db.name == "media.db"
    src = folder.root / "new"
    src.write_bytes(b"new")
    folder.collection.write_bytes(b"old")
    atomic_replace(src, folder.collection)
    assert folder.collection.read_bytes() == b"new" and not src.exists()


def test_open_or_create_refuses_unknown_schema(tmp_path):
    path = _collection(tmp_path)
    db = connect(path)
    db.execute("update col set ver = 19")
    db.close()
    from ankihost.errors import ServerError

    with pytest.raises(ServerError):
        schema.open_or_create(UserFolder(path.parent))
    shutil.copy(path, tmp_path / "x")
