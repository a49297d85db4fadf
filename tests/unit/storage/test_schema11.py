"""storage/schema11: schema 18 ↔ 11 on collections made by real clients.

The reference for every comparison is the real thing: `Collection.close(downgrade=True)` of
anki 26.9.3 for 18 → 11, the same library opening a schema-11 file for 11 → 18, and the
old client (anki 2.1.54, in its own venv) for what a protocol-10 device makes and reads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anki.collection import Collection

from ankihost.errors import ServerError
from ankihost.storage import schema, schema11
from ankihost.storage.collection import connect
from tests.support.content import build_rich_collection
from tests.support.old_client import OldClient, comparable, differences, new_client_dump
from tests.support.sync_steps import content

LEGACY_COLUMNS = ("conf", "models", "decks", "dconf", "tags")


# --- collections made by real clients ---------------------------------------------------------


def _add_extras(col: Collection) -> None:
    """What build_rich_collection lacks: an image occlusion note, a deck with description and
    limits, an unknown notetype key, an expanded tag, deletions (graves)."""
    io = col.models.by_name("Image Occlusion")
    note = col.new_note(io)
    note["Occlusion"] = "{{c1::image-occlusion:rect:left=.1:top=.1:width=.2:height=.2:oi=1}}"
    note["Image"] = '<img src="occlusion.png">'
    note.tags = ["io"]
    col.add_note(note, col.decks.id("Science::Physics"))
    deck = col.decks.get(col.decks.id("History"))
    deck.update(desc="**Dates** and *people*", md=True, reviewLimit=123, newLimit=7)
    col.decks.save(deck)
    vocab = col.models.by_name("ankihost Vocab")
    vocab["ankihostCustomKey"] = {"kept": [1, "two"]}
    col.models.update_dict(vocab)
    col.tags.set_collapsed("chapter", collapsed=False)
    col.remove_notes(col.find_notes("tag:german")[:3])


@pytest.fixture(scope="module")
def rich18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A schema-18 collection made by anki 26.9.3 (stock, cloze, image occlusion and a custom
    notetype; nested, filtered and described decks; custom options; tags; config; reviews;
    graves), closed as a client leaves it."""
    path = tmp_path_factory.mktemp("rich") / "collection.anki2"
    col = Collection(str(path))
    build_rich_collection(col, notes=120, reviews=40)
    _add_extras(col)
    col.close(downgrade=False)
    return path


@pytest.fixture(scope="module")
def old_made11(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A schema-11 file as anki 2.1.54 uploads it, and the old client's own dump of it."""
    folder = tmp_path_factory.mktemp("old")
    with OldClient(folder=folder / "device") as old:
        old.add_notes([{"fields": {"Front": f"front {i}", "Back": "bäck"}, "tags": ["a::b", "Ü"],
                        "deck": "Lang::Fr"} for i in range(12)])  # fmt: skip
        old.add_notes([{"notetype": "Cloze", "fields": {"Text": "{{c1::x}} {{c2::y}}"},
                        "deck": "Lang::De"}])  # fmt: skip
        old.add_deck_options("Old options", "Lang::Fr", 44, [3.0, 30.0])
        old.review("Lang::Fr", 6)
        old.add_filtered_deck("Filtered old", "deck:Lang::Fr", 5)
        old.set_config("oldKey", {"a": [1, 2.5, "ß"]})
        old.remove_notes(old.find_notes("front 3"))
        dump = old.dump()
        old.close(downgrade=True)
        path = folder / "old11.anki2"
        shutil.copyfile(old.path, path)
    return path, dump


@pytest.fixture
def copy_of(tmp_path: Path) -> Callable[[Path], Path]:
    def copy(source: Path) -> Path:
        target = tmp_path / f"copy-{source.name}"
        shutil.copyfile(source, target)
        return target

    return copy


# --- reading files back -----------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _legacy_col(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(path)
    try:
        row = db.execute(f"select {', '.join(LEGACY_COLUMNS)}, ver from col").fetchone()
        names = db.execute("select type, name from sqlite_master where name not like 'sqlite_%'")
        return {
            **{c: json.loads(v) for c, v in zip(LEGACY_COLUMNS, row, strict=False)},
            "ver": row[-1],
            "journal_mode": db.execute("pragma journal_mode").fetchone()[0],
            "page_size": db.execute("pragma page_size").fetchone()[0],
            "schema": sorted(names.fetchall()),
            **{t: sorted(db.execute(f"select * from {t}").fetchall())
               for t in ("notes", "cards", "revlog", "graves")},  # fmt: skip
        }
    finally:
        db.close()


def _new_client_dump(path: Path) -> dict[str, Any]:
    col = Collection(str(path))
    try:
        assert col.db.scalar("pragma integrity_check") == "ok"
        return new_client_dump(col)
    finally:
        col.close()


def _assert_same_content(a: dict[str, Any], b: dict[str, Any]) -> None:
    x, y = comparable(a, b)
    assert not differences(x, y), "\n".join(differences(x, y))


@pytest.fixture
def official11(rich18: Path, copy_of: Callable[[Path], Path]) -> Path:
    """The official downgrade of rich18: 26.9.3's `close(downgrade=True)`."""
    path = copy_of(rich18)
    Collection(str(path)).close(downgrade=True)
    return path


# --- 18 → 11 ----------------------------------------------------------------------------------


def test_downgrade_writes_what_the_official_downgrade_writes(
    rich18: Path, official11: Path, tmp_path: Path
) -> None:
    ours = tmp_path / "ours11.anki2"
    schema11.downgrade(rich18, ours)
    mine, official = _legacy_col(ours), _legacy_col(official11)
    assert mine["ver"] == 11 and mine["journal_mode"] == "delete"
    assert mine["graves"], "the fixture has deletions"
    for key in official:
        assert mine[key] == official[key], key
    assert ours.read_bytes()[18:20] == b"\x01\x01"  # rollback journal in the file header


def test_downgrade_never_changes_its_source(rich18: Path, tmp_path: Path) -> None:
    before = _digest(rich18)
    schema11.downgrade(rich18, tmp_path / "out.anki2")
    assert _digest(rich18) == before
    assert not Path(f"{rich18}-wal").exists() and not Path(f"{rich18}-journal").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.anki2"]


def test_downgraded_copy_opens_in_the_old_client_with_equal_content(
    rich18: Path, tmp_path: Path
) -> None:
    ours = tmp_path / "ours11.anki2"
    schema11.downgrade(rich18, ours)
    expected = _new_client_dump(rich18)
    with OldClient(folder=tmp_path / "old") as old:
        assert old.open(ours) == 18  # the old client upgrades it as it opens it
        assert old.sql("pragma integrity_check") == [["ok"]]
        _assert_same_content(old.dump(), expected)


def test_downgrade_in_place_of_a_snapshot_of_the_live_collection(
    rich18: Path, copy_of: Callable[[Path], Path], tmp_path: Path
) -> None:
    live_path = copy_of(rich18)
    live = connect(live_path)  # exclusive, as the server holds it
    try:
        live.execute("pragma journal_mode = wal")
        live.execute("update notes set flds = 'committed, still in the WAL' where id = "
                     "(select min(id) from notes)")  # fmt: skip
        snap = tmp_path / "snapshot.anki2"
        schema11.snapshot(live, snap)
        schema11.downgrade_in_place(snap)
        live.execute("update notes set flds = 'written after the snapshot'")  # still usable
    finally:
        live.close()
    db = sqlite3.connect(snap)
    texts = {flds for (flds,) in db.execute("select flds from notes")}
    assert db.execute("select ver from col").fetchone()[0] == 11
    db.close()
    assert "committed, still in the WAL" in texts and "written after the snapshot" not in texts


def test_downgrade_refuses_a_file_that_is_not_schema_18(
    official11: Path, tmp_path: Path
) -> None:
    with pytest.raises(ServerError, match="table deck_config is missing"):
        schema11.downgrade(official11, tmp_path / "out.anki2")
    not_sqlite = tmp_path / "junk.anki2"
    not_sqlite.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ServerError):
        schema11.downgrade(not_sqlite, tmp_path / "out.anki2")
    assert not (tmp_path / "out.anki2").exists()


# --- 11 → 18 ----------------------------------------------------------------------------------


def test_upgrade_writes_what_the_official_upgrade_writes(
    official11: Path, copy_of: Callable[[Path], Path], tmp_path: Path
) -> None:
    ours = tmp_path / "ours18.anki2"
    assert schema11.upgrade(official11, ours) is None
    theirs = copy_of(official11)
    Collection(str(theirs)).close(downgrade=False)  # 26.9.3 upgrades a schema-11 file on open
    assert content(ours) == content(theirs)
    assert schema.upload_problem(ours) is None
    assert ours.read_bytes()[18:20] == b"\x02\x02"  # WAL


def test_round_trip_18_to_11_to_18_keeps_every_object(rich18: Path, tmp_path: Path) -> None:
    schema11.downgrade(rich18, tmp_path / "11.anki2")
    assert schema11.upgrade(tmp_path / "11.anki2", tmp_path / "18.anki2") is None
    before, after = content(rich18), content(tmp_path / "18.anki2")
    for table in ("col", "notes", "cards", "revlog", "graves", "notetypes", "fields", "decks",
                  "deck_config"):  # fmt: skip
        assert after[table] == before[table], table
    # Schema 11 has no template mtime/usn, config row usn/mtime or tag collapse state, so the
    # official round trip loses them as well; everything the sync protocol carries is equal.
    assert _new_client_dump(tmp_path / "18.anki2") == _new_client_dump(rich18)
    assert [(t[0], t[1]) for t in after["tags"]] == [(t[0], t[1]) for t in before["tags"]]
    assert [t[:3] + t[5:] for t in after["templates"]] == [
        t[:3] + t[5:] for t in before["templates"]
    ]


def test_old_client_collection_upgrades_and_opens_in_the_new_client(
    old_made11: tuple[Path, dict[str, Any]], copy_of: Callable[[Path], Path], tmp_path: Path
) -> None:
    path, old_dump = old_made11
    ours = tmp_path / "ours18.anki2"
    assert schema11.upgrade(path, ours) is None
    assert schema.upload_problem(ours) is None
    _assert_same_content(_new_client_dump(ours), old_dump)
    theirs = copy_of(path)
    Collection(str(theirs)).close(downgrade=False)
    assert content(ours) == content(theirs)


def test_upgrade_in_place_converts_the_file_itself(
    old_made11: tuple[Path, dict[str, Any]], copy_of: Callable[[Path], Path]
) -> None:
    path = copy_of(old_made11[0])
    assert schema11.upgrade_in_place(path) is None
    assert schema.upload_problem(path) is None


# --- memory ------------------------------------------------------------------------------------

BIG_ROWS = 200_000  # revlog rows, and a tenth as many notes of 1 KB each: a file of ~35 MB
PYTHON_PEAK_LIMIT = 4 * 1024 * 1024  # bytes of Python allocations


@pytest.fixture(scope="module")
def big18(rich18: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "collection.anki2"
    shutil.copyfile(rich18, path)
    numbers = (f"(with recursive n(value) as (select 1 union all select value + 1 from n "
               f"where value < {BIG_ROWS}) select value from n)")  # fmt: skip
    db = connect(path)
    db.execute(f"insert into revlog select 1000000 + value, 1, 0, 3, 10, 5, 2500, 6000, 1 from {numbers}")
    db.execute(
        "insert into notes select 1000000 + value, 'guid' || value, (select mid from notes limit 1),"
        f" 1, 0, '', printf('%.1000c', 'x') || value, 'x', 1, 0, '' from {numbers} where value % 10 = 0"
    )
    db.close()
    return path


def _python_peak(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_both_directions_keep_big_tables_out_of_python(big18: Path, tmp_path: Path) -> None:
    assert big18.stat().st_size > 5 * PYTHON_PEAK_LIMIT
    down = _python_peak(lambda: schema11.downgrade(big18, tmp_path / "11.anki2"))
    up = _python_peak(lambda: schema11.upgrade(tmp_path / "11.anki2", tmp_path / "18.anki2"))
    assert down < PYTHON_PEAK_LIMIT and up < PYTHON_PEAK_LIMIT, (down, up)
    assert content(tmp_path / "18.anki2", ("revlog", "notes")) == content(big18, ("revlog", "notes"))


# --- bad uploads --------------------------------------------------------------------------------


def _edit(sql: str, *args: Any) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        db.execute(sql, args)

    return run


def _script(script: str) -> Callable[[sqlite3.Connection], None]:
    return lambda db: db.executescript(script)


def _break_index(db: sqlite3.Connection) -> None:
    """An index whose entries no longer match its table: integrity_check reports it."""
    db.execute("pragma writable_schema = 1")
    db.execute("update sqlite_master set sql = replace(sql, '(usn)', '(mod)') "
               "where name = 'ix_notes_usn'")  # fmt: skip


BAD_SCHEMA11 = {
    "version 18": (_edit("update col set ver = 18"), "schema version 18 is not 11"),
    "version 10": (_edit("update col set ver = 10"), "schema version 10 is not 11"),
    "version 14": (_edit("update col set ver = 14"), "schema version 14 is not 11"),
    "two col rows": (_script("insert into col select 2, crt, mod, scm, ver, dty, usn, ls, conf, "
                             "models, decks, dconf, tags from col"), "col has 2 rows"),  # fmt: skip
    "no col rows": (_script("delete from col"), "col has 0 rows"),
    "missing table": (_script("drop table revlog"), "table revlog is missing"),
    "missing column": (_script("alter table cards drop column odid"), "lacks columns ['odid']"),
    "missing json column": (_script("alter table col drop column dconf"), "lacks columns ['dconf']"),
    "schema-18 table": (_script("create table notetypes (id integer)"), "schema-18 tables"),
    "broken models json": (_edit("update col set models = '{\"1\": {'"), "col.models is not valid JSON"),
    "decks not an object": (_edit("update col set decks = '[]'"), "col.decks is not a JSON object"),
    "NaN in config": (_edit("update col set conf = '{\"x\": NaN}'"), "col.conf is not valid JSON"),
    "tag usn not a number": (_edit("update col set tags = '{\"t\": \"x\"}'"), "usn of 't'"),
    "deck without name": (_edit("update col set decks = json_remove(decks, "
                                "'$.' || json_quote((select key from json_each(decks) limit 1)) "
                                "|| '.name')"), "is not a deck object"),  # fmt: skip
    "notetype without fields": (_edit("update col set models = json_remove(models, '$.' || "
                                      "json_quote((select key from json_each(models) limit 1)) "
                                      "|| '.flds')"), "missing key 'flds'"),  # fmt: skip
    "broken index": (_break_index, "integrity check failed"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCHEMA11))
def test_bad_schema11_uploads_get_a_reason_and_write_nothing(
    case: str, official11: Path, tmp_path: Path
) -> None:
    spoil, reason = BAD_SCHEMA11[case]
    db = sqlite3.connect(official11, isolation_level=None)
    spoil(db)
    db.close()
    before = _digest(official11)
    out = tmp_path / "out" / "collection.anki2"
    out.parent.mkdir()
    problem = schema11.upgrade(official11, out)
    assert problem is not None and reason in problem, problem
    assert list(out.parent.iterdir()) == []
    assert _digest(official11) == before


@pytest.mark.parametrize("content", [b"", b"definitely not SQLite" * 50, b"SQLite format 3\x00" + b"\x00" * 84])
def test_non_sqlite_uploads_get_a_reason(content: bytes, tmp_path: Path) -> None:
    source = tmp_path / "upload"
    source.write_bytes(content)
    out = tmp_path / "out.anki2"
    problem = schema11.upgrade(source, out)
    assert problem, problem
    assert not out.exists()
    assert schema11.upgrade_in_place(source) == problem


def test_a_sqlite_file_that_is_no_collection_gets_a_reason(tmp_path: Path) -> None:
    source = tmp_path / "other.db"
    db = sqlite3.connect(source)
    db.execute("create table something (x)")
    db.close()
    assert schema11.upgrade(source, tmp_path / "out.anki2") == "table col is missing"
    assert not (tmp_path / "out.anki2").exists()


@pytest.fixture(autouse=True)
def _no_stray_sidecars(tmp_path: Path) -> Iterator[None]:
    yield
    strays = [p.name for p in tmp_path.rglob("*") if p.name.endswith((".part", "-wal", "-shm", "-journal"))]
    assert not strays, strays
