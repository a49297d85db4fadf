"""Legacy-JSON converters against collections made by the real client (anki 26.9.3).

Every notetype, deck and deck config of a client-built collection must (a) convert to exactly the
JSON the client's own rslib produces and (b) survive JSON → rows unchanged; unknown keys must
survive JSON → rows → JSON; the client must read back what we wrote.
"""

from __future__ import annotations

import copy
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from anki.collection import Collection

from ankihost.errors import BadRequest
from ankihost.storage import deck_configs, decks, notetypes
from ankihost.storage import protobuf as pb
from ankihost.storage.collection import connect

KINDS = {"notetypes": notetypes, "decks": decks, "deck_configs": deck_configs}
FSRS6 = [0.212, 1.2931, 2.3065, 8.2956, 6.4133, 0.8334, 3.0194, 0.001, 1.8722, 0.1666,
         0.796, 1.4835, 0.0614, 0.2629, 1.6483, 0.6014, 1.8729, 0.5425, 0.0912, 0.0658,
         0.1542]  # fmt: skip


def _custom_notetype(col: Collection) -> None:
    mm = col.models
    nt = mm.copy(mm.by_name("Basic"), add=False)
    nt.update(name="Vocab ünïcode", css=".card { color: red; }\n/* ✓ */", sortf=1,
              latexPre="\\pre", latexsvg=True, futureNotetypeKey={"x": [1, 2.5]})  # fmt: skip
    field = mm.new_field("Extra")
    field.update(sticky=True, rtl=True, size=31, font="Noto", description="d", plainText=True,
                 collapsed=True, excludeFromSearch=True, preventDeletion=True,
                 futureField=[7])  # fmt: skip
    mm.add_field(nt, field)
    template = mm.new_template("Reverse")
    template.update(qfmt="{{Back}}", afmt="{{FrontSide}}<hr>{{Front}}", bqfmt="bq", bafmt="ba",
                    bfont="Courier", bsize=12, futureTemplate="t")  # fmt: skip
    mm.add_template(nt, template)
    mm.add(nt)


def _custom_deck_config(col: Collection) -> int:
    conf_id = col.decks.add_config_returning_id("Custom ⚙")
    c = col.decks.get_config(conf_id)
    c["new"].update(delays=[0.5, 3.0, 15.25], perDay=33, initialFactor=2350, ints=[2, 5, 0],
                    order=0, bury=True, futureNew=1)  # fmt: skip
    c["rev"].update(perDay=321, ease4=1.45, ivlFct=0.93, maxIvl=9000, hardFactor=1.15, bury=True,
                    futureRev="r")  # fmt: skip
    c["lapse"].update(delays=[5.0, 20.0], leechAction=0, leechFails=6, minInt=2, mult=0.3,
                      futureLapse=None)  # fmt: skip
    c.update(maxTaken=90, autoplay=False, timer=1, replayq=False, fsrsParams6=FSRS6,
             fsrsParams5=[0.4, 0.6], fsrsWeights=[1.5], desiredRetention=0.87, sm2Retention=0.83,
             weightSearch="deck:x", ignoreRevlogsBeforeDate="2024-01-02",
             easyDaysPercentages=[1.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.7], newMix=1,
             interdayLearningMix=2, reviewOrder=3, newSortOrder=4, newGatherPriority=5,
             newPerDayMinimum=3, buryInterdayLearning=True, stopTimerOnAnswer=True,
             secondsToShowQuestion=2.5, secondsToShowAnswer=1.1, questionAction=1,
             answerAction=3, waitForAudio=False, futureConfig={"a": [1, "x"]})  # fmt: skip
    col.decks.update_config(c)
    return conf_id


def _decks(col: Collection, conf_id: int) -> None:
    verbs = col.decks.id("Languages::Spanish::Verbs")
    col.decks.id("Languages::French")
    deck = col.decks.get(verbs)
    deck.update(desc="Some **desc**", md=True, collapsed=True, browserCollapsed=True,
                reviewLimit=50, newLimit=7, reviewLimitToday={"limit": 3, "today": 800},
                desiredRetention=87, extendNew=4, newToday=[800, 4], revToday=[800, 2],
                lrnToday=[799, 9], timeToday=[800, 6000], futureDeck={"z": [1]})  # fmt: skip
    col.decks.save(deck)
    col.decks.set_config_id_for_deck_dict(col.decks.get(verbs), conf_id)
    basic = col.models.by_name("Basic")
    for i in range(3):
        note = col.new_note(basic)
        note["Front"], note["Back"] = f"front {i}", "back"
        col.add_note(note, verbs)
    filtered = col.sched.get_or_create_filtered_deck(0)
    filtered.name = "Languages::Cram ⚡"
    del filtered.config.search_terms[:]
    filtered.config.search_terms.add(search="deck:Languages is:new", limit=77, order=6)
    filtered.config.search_terms.add(search="tag:none", limit=5, order=1)
    filtered.config.delays.extend([1.5, 10.0])
    filtered.config.reschedule = False
    filtered.config.preview_good_secs = 30
    col.sched.add_or_update_filtered_deck(filtered)


def _legacy_from_client(path: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """What the client's own rslib gives for every object (schema-11 JSON, as parsed dicts)."""
    col = Collection(str(path))
    try:
        return {
            "notetypes": {nt["id"]: nt for nt in col.models.all()},
            "decks": {d["id"]: d for d in col.decks.all()},
            "deck_configs": {c["id"]: c for c in col.decks.all_config()},
        }
    finally:
        col.close()


@pytest.fixture(scope="module")
def client_col(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("client") / "collection.anki2"
    col = Collection(str(path))
    col.add_image_occlusion_notetype()
    _custom_notetype(col)
    _decks(col, _custom_deck_config(col))
    col.close()
    return path, _legacy_from_client(path)


def assert_same_json(ours: Any, theirs: Any, path: str = "$") -> None:
    """Equal values of equal JSON types (1 ≠ 1.0 ≠ True); objects with the same key order."""
    assert type(ours) is type(theirs), f"{path}: {ours!r} vs {theirs!r}"
    if isinstance(ours, dict):
        assert list(ours) == list(theirs), path
        for key in ours:
            assert_same_json(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(ours, list):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_json(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, path


@pytest.mark.parametrize("kind", KINDS)
def test_to_legacy_equals_the_clients_json(client_col: tuple[Path, Any], kind: str) -> None:
    path, reference = client_col
    db = connect(path, exclusive=False)
    module = KINDS[kind]
    assert sorted(module.all_ids(db)) == sorted(reference[kind])
    for id in module.all_ids(db):
        # The client's dicts carry no client-side-only keys for these three objects, so no
        # exception is needed: key order, values and JSON types must all match.
        assert_same_json(module.to_legacy(db, id), reference[kind][id], f"{kind}[{id}]")
        wire = json.dumps(module.to_legacy(db, id), allow_nan=False)
        assert json.loads(wire) == reference[kind][id]
    db.close()


def test_fixture_covers_what_it_claims(client_col: tuple[Path, Any]) -> None:
    _, reference = client_col
    notetypes_by_name = {nt["name"]: nt for nt in reference["notetypes"].values()}
    assert {"Cloze", "Image Occlusion", "Vocab ünïcode"} <= set(notetypes_by_name)
    assert notetypes_by_name["Cloze"]["type"] == 1
    assert notetypes_by_name["Vocab ünïcode"]["flds"][2]["futureField"] == [7]
    assert any(d["dyn"] == 1 for d in reference["decks"].values())
    assert any(c.get("futureConfig") for c in reference["deck_configs"].values())


TABLES = {
    "notetypes": ("notetypes", "id, name, mtime_secs, usn, config"),
    "fields": ("fields", "ntid, ord, name, config"),
    "templates": ("templates", "ntid, ord, name, config"),
    "decks": ("decks", "id, name, mtime_secs, usn, common, kind"),
    "deck_config": ("deck_config", "id, name, mtime_secs, usn, config"),
}
BLOB_MESSAGE = {("deck_config", 4): pb.DeckConfigConfig}


def _rows(db: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    name, columns = TABLES[table]
    return db.execute(f"select {columns} from {name} order by 1, 2").fetchall()


def _canonical_other(blob: bytes) -> bytes:
    """A deck config blob with its `other` JSON re-serialised with sorted keys: the client
    writes that object from a hash map, so its key order is arbitrary."""
    message = pb.parse(pb.DeckConfigConfig, blob)
    if message.other:
        message.other = json.dumps(json.loads(message.other), sort_keys=True).encode()
    return pb.serialize(message)


@pytest.fixture()
def round_trip(client_col: tuple[Path, Any], tmp_path: Path) -> Any:
    """Every object converted to JSON from the client's file and back into an emptied copy."""
    source_path, _ = client_col
    target_path = tmp_path / "copy.anki2"
    shutil.copy(source_path, target_path)
    source, target = connect(source_path, exclusive=False), connect(target_path)
    for table in ("notetypes", "fields", "templates", "decks", "deck_config"):
        target.execute(f"delete from {table}")
    for module in KINDS.values():
        for id in module.all_ids(source):
            module.from_legacy(target, copy.deepcopy(module.to_legacy(source, id)))
    yield source, target
    source.close()
    target.close()


@pytest.mark.parametrize("table", TABLES)
def test_rows_survive_json_round_trip(round_trip: Any, table: str) -> None:
    source, target = round_trip
    before, after = _rows(source, table), _rows(target, table)
    assert len(before) == len(after) > 0
    for old, new in zip(before, after, strict=True):
        if table == "deck_config" and old[4] != new[4]:
            assert _canonical_other(old[4]) == _canonical_other(new[4])
            assert len(json.loads(pb.parse(pb.DeckConfigConfig, old[4]).other)) > 1
            old, new = old[:4], new[:4]
        assert old == new
        assert all(type(v) is bytes for v in new if not isinstance(v, (int, str)))


def test_templates_get_zero_mtime_and_usn_like_the_reference(round_trip: Any) -> None:
    _, target = round_trip
    assert target.execute("select distinct mtime_secs, usn from templates").fetchall() == [(0, 0)]


def test_blobs_are_stored_as_blob(round_trip: Any) -> None:
    _, target = round_trip
    for table, column in (("notetypes", "config"), ("fields", "config"),
                          ("templates", "config"), ("decks", "common"), ("decks", "kind"),
                          ("deck_config", "config")):  # fmt: skip
        types = {t for (t,) in target.execute(f"select typeof({column}) from {table}")}
        assert types == {"blob"}, (table, column)
    assert {t for (t,) in target.execute("select typeof(name) from decks")} == {"text"}


def test_client_reads_back_what_we_wrote(client_col: tuple[Path, Any], round_trip: Any) -> None:
    _, reference = client_col
    source, target = round_trip
    target_path = Path(target.execute("pragma database_list").fetchone()[2])
    target.close()
    assert _legacy_from_client(target_path) == reference


def _add_unknown_keys(kind: str, obj: dict[str, Any]) -> None:
    obj["zzTop"] = {"nested": [1, 2.5, None, "ß"]}
    if kind == "notetypes":
        obj["flds"][0]["zzField"] = [True]
        obj["tmpls"][0]["zzTemplate"] = "x"
    if kind == "deck_configs":
        for section in ("new", "rev", "lapse"):
            obj[section][f"zz_{section}"] = {"v": 1}


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_keys_survive_json_rows_json(round_trip: Any, kind: str) -> None:
    _, target = round_trip
    module = KINDS[kind]
    for id in module.all_ids(target):
        obj = module.to_legacy(target, id)
        _add_unknown_keys(kind, obj)
        module.from_legacy(target, copy.deepcopy(obj))
        back = module.to_legacy(target, id)
        assert back == obj
        assert back["zzTop"] == {"nested": [1, 2.5, None, "ß"]}


# --- the conversion rules of spec 02 §4–5, one by one ---------------------------------------


@pytest.fixture()
def db(client_col: tuple[Path, Any], tmp_path: Path) -> Any:
    shutil.copy(client_col[0], tmp_path / "c.anki2")
    connection = connect(tmp_path / "c.anki2")
    yield connection
    connection.close()


def _first(db: sqlite3.Connection, module: Any, **match: Any) -> dict[str, Any]:
    for id in module.all_ids(db):
        obj = module.to_legacy(db, id)
        if all(obj.get(k) == v for k, v in match.items()):
            return obj
    raise LookupError(match)


def _through_rows(db: sqlite3.Connection, module: Any, obj: dict[str, Any]) -> dict[str, Any]:
    module.from_legacy(db, obj)
    return module.to_legacy(db, int(obj["id"]))


def test_deck_today_counters_keep_only_the_latest_day(db: sqlite3.Connection) -> None:
    deck = _first(db, decks, name="Default")
    deck.update(newToday=[5, 2], revToday=[6, 4], lrnToday=[7, 3], timeToday=[7, 1000])
    back = _through_rows(db, decks, deck)
    assert [back[k] for k in ("lrnToday", "revToday", "newToday", "timeToday")] == [
        [7, 3], [7, 0], [7, 0], [7, 1000]
    ]  # fmt: skip
    deck.update(lrnToday=[9, 3])  # the learning day does not count towards the latest day
    back = _through_rows(db, decks, deck)
    assert (back["lrnToday"], back["timeToday"]) == ([7, 0], [7, 1000])


@pytest.mark.parametrize("sent, returned", [(85, 85), (29, 29), (53, 52), (59, 58), (None, None)])
def test_deck_desired_retention_goes_through_float32(db: Any, sent: Any, returned: Any) -> None:
    deck = _first(db, decks, name="Default")
    deck["desiredRetention"] = sent
    assert _through_rows(db, decks, deck)["desiredRetention"] == returned


@pytest.mark.parametrize("dyn", [1.0, "1", -1, 256, None])
def test_deck_with_invalid_dyn_is_rejected(db: sqlite3.Connection, dyn: Any) -> None:
    deck = _first(db, decks, name="Default")
    deck["dyn"] = dyn
    with pytest.raises(BadRequest):
        decks.from_legacy(db, deck)


def test_deck_dyn_false_or_other_small_integer_is_normal(db: sqlite3.Connection) -> None:
    for dyn in (False, 2):
        deck = _first(db, decks, name="Default")
        deck["dyn"] = dyn
        assert _through_rows(db, decks, deck)["dyn"] == 0
    filtered = _first(db, decks, dyn=1)
    filtered["dyn"] = True
    assert _through_rows(db, decks, filtered)["dyn"] == 1


@pytest.mark.parametrize("sent, stored", [("A::::B", "A\x1fblank\x1fB"), ("A:::B", "A\x1fB"),
                                          (" Top :: Sub\u0007 ", "Top\x1fSub")])  # fmt: skip
def test_deck_names_are_normalised(db: sqlite3.Connection, sent: str, stored: str) -> None:
    deck = _first(db, decks, name="Default")
    deck["name"] = sent
    assert _through_rows(db, decks, deck)["name"] == stored.replace("\x1f", "::")
    assert db.execute("select name from decks where id = 1").fetchone()[0] == stored


def test_stray_variant_keys_follow_the_reference(db: sqlite3.Connection) -> None:
    normal = _first(db, decks, name="Default")
    normal.update(terms=[["x", 1, 0]], **{"return": 1})
    back = _through_rows(db, decks, normal)
    assert back["terms"] == [["x", 1, 0]] and "return" not in back
    filtered = _first(db, decks, dyn=1)
    filtered.update(conf=5, desc="dropped", md=True)
    back = _through_rows(db, decks, filtered)
    assert "conf" not in back and "md" not in back and back["desc"] == ""


def test_deck_config_values_are_clamped_on_read(db: sqlite3.Connection) -> None:
    conf = _first(db, deck_configs, id=1)
    conf["new"].update(initialFactor=1000, perDay=20000)
    conf["rev"].update(hardFactor=3.0, ease4=10**400)
    conf.update(desiredRetention=0.5, sm2Retention=0.98, maxTaken=-3)
    back = _through_rows(db, deck_configs, conf)
    assert (back["new"]["initialFactor"], back["new"]["perDay"]) == (2500, 20)
    assert (back["rev"]["hardFactor"], back["rev"]["ease4"]) == (1.2, 1.3)
    assert (back["desiredRetention"], back["sm2Retention"], back["maxTaken"]) == (0.9, 0.9, 60)


@pytest.mark.parametrize(
    "ints, returned", [([3, 9], [3, 9, 0]), ([4], [1, 4, 0]), ([-5, 4, 3], [1, 4, 0])]
)
def test_deck_config_new_intervals(db: sqlite3.Connection, ints: Any, returned: Any) -> None:
    conf = _first(db, deck_configs, id=1)
    conf["new"]["ints"] = ints
    assert _through_rows(db, deck_configs, conf)["new"]["ints"] == returned


def test_deck_config_malformed_section_becomes_defaults(db: sqlite3.Connection) -> None:
    conf = _first(db, deck_configs, name="Custom ⚙")
    del conf["new"]["initialFactor"]
    back = _through_rows(db, deck_configs, conf)
    assert back["new"] == {"bury": False, "delays": [1.0, 10.0], "initialFactor": 2500,
                           "ints": [1, 4, 0], "order": 1, "perDay": 20}  # fmt: skip
    assert back["rev"]["futureRev"] == "r"  # the other sections are untouched


def test_deck_config_accepts_string_numbers_and_rejects_bad_enums(db: sqlite3.Connection) -> None:
    conf = _first(db, deck_configs, id=1)
    conf.update(id="1", mod="1700000000")
    assert _through_rows(db, deck_configs, conf)["mod"] == 1700000000
    conf["answerAction"] = 5
    with pytest.raises(BadRequest):
        deck_configs.from_legacy(db, conf)


def test_notetype_with_duplicate_field_names_is_rejected_atomically(db: sqlite3.Connection) -> None:
    nt = _first(db, notetypes, name="Basic")
    before = notetypes.to_legacy(db, nt["id"])
    nt["flds"][1]["name"] = nt["flds"][0]["name"].upper()
    with pytest.raises(BadRequest):
        notetypes.from_legacy(db, nt)
    assert notetypes.to_legacy(db, nt["id"]) == before


@pytest.mark.parametrize("key, value", [("type", 2), ("sortf", -1), ("flds", {}), ("id", 1.5)])
def test_notetype_with_malformed_key_is_rejected(db: Any, key: str, value: Any) -> None:
    nt = _first(db, notetypes, name="Basic")
    nt[key] = value
    with pytest.raises(BadRequest):
        notetypes.from_legacy(db, nt)


def test_notetype_lenient_keys_fall_back_to_defaults(db: sqlite3.Connection) -> None:
    nt = _first(db, notetypes, name="Basic")
    nt.update(css=5, req=[[0, ["any"], [0]]], did="x")
    nt["tmpls"][0].update(bsize=None, did=-4)
    nt["flds"][0].update(tag="x", sticky="1")
    back = _through_rows(db, notetypes, nt)
    assert (back["css"], back["req"], back["did"]) == ("", [], None)
    assert (back["tmpls"][0]["bsize"], back["tmpls"][0]["did"]) == (0, None)
    assert (back["flds"][0]["tag"], back["flds"][0]["sticky"]) == (None, True)


def test_stale_reserved_keys_in_other_are_not_emitted(db: sqlite3.Connection) -> None:
    ntid = _first(db, notetypes, name="Basic")["id"]
    blob = db.execute("select config from notetypes where id = ?", (ntid,)).fetchone()[0]
    config = pb.parse(pb.NotetypeConfig, blob)
    config.other = b'{"name":"stale","css":"stale","keep":1}'
    db.execute("update notetypes set config = ? where id = ?", (pb.serialize(config), ntid))
    back = notetypes.to_legacy(db, ntid)
    assert (back["name"], back["keep"]) == ("Basic", 1) and back["css"] != "stale"


@pytest.mark.parametrize("module, name", [(notetypes, "basic"), (decks, "languages::FRENCH")])
def test_ensure_unique_name_appends_plus(db: sqlite3.Connection, module: Any, name: str) -> None:
    existing = _first(db, module, name=name.title() if module is notetypes else "Languages::French")
    newcomer = dict(existing, id=42, name=name, mod=1, usn=3)
    module.ensure_unique_name(db, newcomer, usn=9, now_secs=1234)
    assert (newcomer["name"], newcomer["mod"], newcomer["usn"]) == (name + "+", 1234, 9)
    unchanged = dict(existing)
    module.ensure_unique_name(db, unchanged, usn=9, now_secs=1234)
    assert unchanged == existing


def test_notetype_shape_and_sort_field(db: sqlite3.Connection) -> None:
    nt = _first(db, notetypes, name="Vocab ünïcode")
    assert notetypes.shape(db, nt["id"]) == (3, 2)
    assert notetypes.sort_field_index(db, nt["id"]) == nt["sortf"] == 1
    assert notetypes.shape(db, 999) is None and notetypes.sort_field_index(db, 999) is None


@pytest.mark.parametrize("module", KINDS.values())
def test_usn_queries(db: sqlite3.Connection, module: Any) -> None:
    ids = module.all_ids(db)
    assert module.count(db) == len(ids) > 0
    assert set(module.ids_pending(db)) | set(module.ids_with_usn_at_least(db, 0)) == set(ids)
    obj = module.to_legacy(db, ids[-1])
    module.from_legacy(db, dict(obj, usn=77, mod=5))
    assert module.ids_with_usn_at_least(db, 77) == [ids[-1]]
    assert module.mtime_secs(db, ids[-1]) == 5
    with pytest.raises(KeyError):
        module.to_legacy(db, 999)


def test_reviewed_collection_from_the_shared_content_builder(tmp_path: Path) -> None:
    """Real reviews (non-zero "today" counters), presets and a filtered deck from tests.support."""
    from tests.support.content import build_rich_collection

    path = tmp_path / "rich.anki2"
    col = Collection(str(path))
    build_rich_collection(col, notes=60, reviews=20)
    col.close()
    reference = _legacy_from_client(path)
    assert any(d["newToday"][1] > 0 for d in reference["decks"].values())
    db = connect(path)
    for kind, module in KINDS.items():
        for id in module.all_ids(db):
            obj = module.to_legacy(db, id)
            assert_same_json(obj, reference[kind][id], f"{kind}[{id}]")
            module.from_legacy(db, copy.deepcopy(obj))
            assert_same_json(module.to_legacy(db, id), obj)
    db.close()
