"""Decks: the `decks` rows (protobuf `common` + `kind`) ↔ the legacy JSON the sync exchanges.

Owns all SQL on `decks` and the conversion of spec 02 §4.7 / §5.3.2 for normal and filtered
decks, including deck-name normalisation (`::` ↔ U+001F) and unknown keys (`other`). It does not
decide whether an incoming deck wins over the stored one: the sync layer does.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from typing import Any

from ankihost.errors import BadRequest
from ankihost.storage import legacy_json as lj
from ankihost.storage import protobuf as pb
from ankihost.storage.collection import atomic

SEPARATOR = "\x1f"  # between name components in `decks.name`

COMMON_KEYS = (
    "id", "mod", "name", "usn", "lrnToday", "revToday", "newToday", "timeToday",
    "collapsed", "browserCollapsed", "desc", "md", "dyn",
)  # fmt: skip
NORMAL_KEYS = (
    "conf", "extendNew", "extendRev", "reviewLimit", "newLimit", "reviewLimitToday",
    "newLimitToday", "desiredRetention",
)  # fmt: skip
FILTERED_KEYS = (
    "resched", "terms", "separate", "delays", "previewDelay", "previewAgainSecs",
    "previewHardSecs", "previewGoodSecs",
)  # fmt: skip
# Stale `other` entries with these names are never re-emitted (the reference's list: it
# leaves out `md` and the filtered keys, so a normal deck re-emits stray `terms` etc.).
RESERVED_KEYS = tuple(k for k in COMMON_KEYS + NORMAL_KEYS if k != "md")
_OBSOLETE_KEYS = ("return",)

_U32 = lj.integer(lj.U32)
_WHITE_SPACE = (*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                0x2028, 0x2029, 0x202F, 0x205F, 0x3000)  # fmt: skip
_STRIP = "".join(map(chr, _WHITE_SPACE)) + ":"  # trimmed from both ends of a name component


# --- names ------------------------------------------------------------------------------------


def native_name(human_name: str) -> str:
    """`A::B` → `A<U+001F>B`, each component normalised as clients do (spec 02 §5.5.1)."""
    return SEPARATOR.join(_component(c) for c in human_name.split("::"))


def _component(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if not (ord(ch) < 0x20 or ord(ch) == 0x7F))
    return text.strip(_STRIP) or "blank"


def human_name(native: str) -> str:
    return native.replace(SEPARATOR, "::")


# --- row → JSON -------------------------------------------------------------------------------


def to_legacy(db: sqlite3.Connection, id: int) -> dict[str, Any]:
    """The deck as the official server sends it; KeyError if there is no such deck."""
    row = db.execute(
        "select name, mtime_secs, usn, common, kind from decks where id = ?", (id,)
    ).fetchone()
    if row is None:
        raise KeyError(id)
    name, mtime_secs, usn, common_blob, kind_blob = row
    common = pb.parse(pb.DeckCommon, common_blob)
    kind = pb.parse(pb.DeckKindContainer, kind_blob)
    filtered = kind.WhichOneof("kind") == "filtered"
    normal = None if filtered else kind.normal
    day = lj.wrap(common.last_day_studied, 32, signed=True)
    obj: dict[str, Any] = {
        "id": id,
        "mod": mtime_secs,
        "name": human_name(name),
        "usn": usn,
        "lrnToday": [day, common.learning_studied],
        "revToday": [day, common.review_studied],
        "newToday": [day, common.new_studied],
        "timeToday": [day, common.milliseconds_studied],
        "collapsed": common.study_collapsed,
        "browserCollapsed": common.browser_collapsed,
        "desc": "" if normal is None else normal.description,
    }
    if normal is not None and normal.markdown_description:
        obj["md"] = True
    obj["dyn"] = 1 if filtered else 0
    lj.merge_other(obj, lj.decode_other(common.other, RESERVED_KEYS))
    obj.update(_filtered_to_legacy(kind.filtered) if filtered else _normal_to_legacy(kind.normal))
    return obj


def _normal_to_legacy(normal: Any) -> dict[str, Any]:
    retention = None
    if normal.HasField("desired_retention"):
        percent = lj.f32(normal.desired_retention * 100)  # the reference multiplies in f32
        retention = lj.f32_to_int(percent, lj.U32)
    return {
        "conf": normal.config_id,
        "extendNew": lj.wrap(normal.extend_new, 32, signed=True),
        "extendRev": lj.wrap(normal.extend_review, 32, signed=True),
        "reviewLimit": normal.review_limit if normal.HasField("review_limit") else None,
        "newLimit": normal.new_limit if normal.HasField("new_limit") else None,
        "reviewLimitToday": _day_limit_to_legacy(normal, "review_limit_today"),
        "newLimitToday": _day_limit_to_legacy(normal, "new_limit_today"),
        "desiredRetention": retention,
    }


def _day_limit_to_legacy(normal: Any, name: str) -> dict[str, int] | None:
    if not normal.HasField(name):
        return None
    limit = getattr(normal, name)
    return {"limit": limit.limit, "today": limit.today}


def _filtered_to_legacy(filtered: Any) -> dict[str, Any]:
    return {
        "resched": filtered.reschedule,
        "terms": [
            [t.search, lj.wrap(t.limit, 32, signed=True), t.order] for t in filtered.search_terms
        ],
        "separate": True,
        "delays": lj.f32_list_to_json(filtered.delays) or None,
        "previewDelay": filtered.preview_delay,
        "previewAgainSecs": filtered.preview_again_secs,
        "previewHardSecs": filtered.preview_hard_secs,
        "previewGoodSecs": filtered.preview_good_secs,
    }


# --- JSON → row -------------------------------------------------------------------------------


def from_legacy(db: sqlite3.Connection, obj: dict[str, Any]) -> None:
    """Insert or replace the deck row, `usn`/`mod` as given; the name is normalised.

    The caller makes the name unique first (`ensure_unique_name`): REPLACE would otherwise
    silently delete another deck holding that name.
    """
    if not isinstance(obj, dict):
        raise BadRequest("deck: expected an object")
    filtered = _is_filtered(obj)
    variant_keys = FILTERED_KEYS if filtered else NORMAL_KEYS
    other = lj.unknown_keys(obj, COMMON_KEYS + variant_keys + _OBSOLETE_KEYS)
    common = _common_from_legacy(obj, other)
    description = lj.field(obj, "desc", lj.string, "")
    markdown = lj.field(obj, "md", lj.boolean, False)
    kind = pb.DeckKindContainer()
    if filtered:  # a filtered deck drops `desc` and `md`
        kind.filtered.CopyFrom(_filtered_from_legacy(obj))
    else:
        kind.normal.CopyFrom(_normal_from_legacy(obj, description, markdown))
    row = (
        lj.field(obj, "id", lj.num_or_str),
        native_name(lj.field(obj, "name", lj.string)),
        lj.field(obj, "mod", lj.num_or_str, 0),
        lj.field(obj, "usn", lj.integer(lj.I32)),
        pb.serialize(common),
        pb.serialize(kind),
    )
    with atomic(db):
        db.execute(
            "insert or replace into decks (id, name, mtime_secs, usn, common, kind)"
            " values (?,?,?,?,?,?)",
            row,
        )


def _is_filtered(obj: dict[str, Any]) -> bool:
    value = lj.field(obj, "dyn", lambda v, _key: v)
    if type(value) is bool:
        return value
    return lj.integer(lj.U8)(value, "dyn") == 1


def _today(value: Any, key: str) -> tuple[int, int]:
    """A `[day, amount]` pair; the last element is the amount, missing or odd ones read as 0."""
    items = list(lj.json_array(value, key))
    amount = items.pop() if items else 0
    day = items.pop() if items else 0
    as_i64 = [v if type(v) is int and lj.I64[0] <= v <= lj.I64[1] else 0 for v in (day, amount)]
    return lj.wrap(as_i64[0], 32, signed=True), lj.wrap(as_i64[1], 32, signed=True)


def _common_from_legacy(obj: dict[str, Any], other: dict[str, Any]) -> Any:
    lrn, rev = lj.field(obj, "lrnToday", _today), lj.field(obj, "revToday", _today)
    new, time = lj.field(obj, "newToday", _today), lj.field(obj, "timeToday", _today)
    last_day = max(time[0], new[0], rev[0])  # lrnToday's day is not part of the max

    def on_last_day(pair: tuple[int, int]) -> int:
        return pair[1] if pair[0] == last_day else 0

    return pb.DeckCommon(
        study_collapsed=lj.field(obj, "collapsed", lj.boolean),
        browser_collapsed=lj.field(obj, "browserCollapsed", lj.boolean, False),
        last_day_studied=lj.wrap(last_day, 32, signed=False),
        new_studied=on_last_day(new),
        review_studied=on_last_day(rev),
        learning_studied=on_last_day(lrn),
        milliseconds_studied=time[1],
        other=lj.encode_other(other),
    )


def _normal_from_legacy(obj: dict[str, Any], description: str, markdown: bool) -> Any:
    def opt_u32(key: str) -> int | None:
        return lj.field(obj, key, lj.lenient(lj.optional(_U32), None), None)

    normal = pb.DeckNormal(
        config_id=lj.field(obj, "conf", lj.num_or_str),
        extend_new=max(0, lj.field(obj, "extendNew", lj.lenient(lj.integer(lj.I32), 0), 0)),
        extend_review=max(0, lj.field(obj, "extendRev", lj.lenient(lj.integer(lj.I32), 0), 0)),
        description=description,
        markdown_description=markdown,
    )
    for key, name in (("reviewLimit", "review_limit"), ("newLimit", "new_limit")):
        if (limit := opt_u32(key)) is not None:
            setattr(normal, name, limit)
    for key, name in (("reviewLimitToday", "review_limit_today"),
                      ("newLimitToday", "new_limit_today")):  # fmt: skip
        day_limit = lj.field(obj, key, lj.lenient(lj.optional(_day_limit), None), None)
        if day_limit is not None:
            getattr(normal, name).CopyFrom(day_limit)
    if (percent := opt_u32("desiredRetention")) is not None:
        normal.desired_retention = lj.f32(percent) / 100  # exact f32 division, then f32 storage
    return normal


def _day_limit(value: Any, key: str) -> Any:
    limits = lj.json_object(value, key)
    if "limit" not in limits or "today" not in limits:
        raise lj.Invalid(f"{key!r}: needs 'limit' and 'today'")
    return pb.DayLimit(limit=_U32(limits["limit"], key), today=_U32(limits["today"], key))


def _filtered_from_legacy(obj: dict[str, Any]) -> Any:
    lj.field(obj, "separate", lj.boolean, True)  # validated, then ignored
    filtered = pb.DeckFiltered(
        reschedule=lj.field(obj, "resched", lj.bool_ish),
        search_terms=[_search_term(t) for t in lj.field(obj, "terms", lj.json_array)],
        delays=lj.field(obj, "delays", lj.lenient(lj.optional(lj.number_list), None), None) or [],
        preview_delay=lj.field(obj, "previewDelay", _U32, 0),
        preview_again_secs=lj.field(obj, "previewAgainSecs", _U32, 0),
        preview_hard_secs=lj.field(obj, "previewHardSecs", _U32, 0),
        preview_good_secs=lj.field(obj, "previewGoodSecs", _U32, 0),
    )
    return filtered


def _search_term(term: Any) -> Any:
    if not isinstance(term, list) or len(term) != 3:
        raise BadRequest(f"filtered deck term: expected [search, limit, order], got {term!r}")
    search = lj.string(term[0], "terms")
    limit = lj.num_or_str_i32(term[1], "terms")
    order = lj.integer(lj.I32)(term[2], "terms")
    return pb.SearchTerm(search=search, limit=max(0, limit), order=order)


# --- queries for the sync layer ---------------------------------------------------------------


def all_ids(db: sqlite3.Connection) -> list[int]:
    return [id for (id,) in db.execute("select id from decks order by id")]


def ids_with_usn_at_least(db: sqlite3.Connection, min_usn: int) -> list[int]:
    """Decks changed in or after `min_usn` (what the server sends at `applyChanges`)."""
    rows = db.execute("select id from decks where usn >= ? order by id", (min_usn,))
    return [id for (id,) in rows]


def ids_pending(db: sqlite3.Connection) -> list[int]:
    """Decks with `usn = -1` (never on a healthy server; the sanity check rejects them)."""
    return [id for (id,) in db.execute("select id from decks where usn = -1 order by id")]


def count(db: sqlite3.Connection) -> int:
    return int(db.execute("select count() from decks").fetchone()[0])


def mtime_secs(db: sqlite3.Connection, id: int) -> int | None:
    row = db.execute("select mtime_secs from decks where id = ?", (id,)).fetchone()
    return None if row is None else int(row[0])


def remove(db: sqlite3.Connection, id: int) -> None:
    """Delete a deck row (a deck grave). Its cards are the sync layer's business."""
    db.execute("delete from decks where id = ?", (id,))


def ensure_unique_name(
    db: sqlite3.Connection, obj: dict[str, Any], usn: int, now_secs: int
) -> None:
    """Append "+" to `obj["name"]` while another deck holds its native form (ignoring case,
    spec 02 §5.5.4); a renamed object is marked modified with `mod = now_secs`, `usn = usn`."""
    did = lj.field(obj, "id", lj.num_or_str)
    name = native_name(lj.field(obj, "name", lj.string))
    renamed = False
    while (owner := _id_for_native_name(db, name)) is not None and owner != did:
        name += "+"
        renamed = True
    if renamed:
        obj.update(name=human_name(name), mod=now_secs, usn=usn)


def _id_for_native_name(db: sqlite3.Connection, name: str) -> int | None:
    row = db.execute("select id from decks where name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])
