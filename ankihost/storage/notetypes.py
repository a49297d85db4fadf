"""Notetypes: the `notetypes`, `fields` and `templates` rows ↔ the legacy JSON the sync exchanges.

Owns all SQL on those three tables and the key-by-key conversion of spec 02 §4.6 / §5.3.1,
including unknown keys (`other`). It does not decide whether an incoming notetype wins over the
stored one (mtime, schema-change checks): the sync layer does, with the helpers below.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ankihost.errors import BadRequest
from ankihost.storage import legacy_json as lj
from ankihost.storage import protobuf as pb
from ankihost.storage.collection import atomic

# Keys this module emits itself; a stale `other` entry with one of these names is dropped.
NOTETYPE_KEYS = (
    "id", "name", "type", "mod", "usn", "sortf", "did", "tmpls", "flds", "css",
    "latexPre", "latexPost", "latexsvg", "req", "originalStockKind", "originalId",
)  # fmt: skip
FIELD_KEYS = (
    "name", "ord", "sticky", "rtl", "plainText", "font", "size", "collapsed", "description",
    "excludeFromSearch", "id", "tag", "preventDeletion",
)  # fmt: skip
TEMPLATE_KEYS = ("name", "ord", "did", "qfmt", "afmt", "bqfmt", "bafmt", "bfont", "bsize", "id")

KIND_CLOZE = 1
_REQ_KIND_NAMES = {1: "any", 2: "all"}  # anything else reads as "none" (0)
_REQ_KIND_VALUES = {"none": 0, "any": 1, "all": 2}

_U16 = lj.integer(lj.U16)
_OPT_I64 = lj.lenient(lj.optional(lj.integer(lj.I64)), None)


# --- rows → JSON ------------------------------------------------------------------------------


def to_legacy(db: sqlite3.Connection, id: int) -> dict[str, Any]:
    """The notetype as the official server sends it; KeyError if there is no such notetype."""
    row = db.execute(
        "select name, mtime_secs, usn, config from notetypes where id = ?", (id,)
    ).fetchone()
    if row is None:
        raise KeyError(id)
    name, mtime_secs, usn, blob = row
    config = pb.parse(pb.NotetypeConfig, blob)
    obj: dict[str, Any] = {
        "id": id,
        "name": name,
        "type": 1 if config.kind == KIND_CLOZE else 0,
        "mod": mtime_secs,
        "usn": usn,
        "sortf": lj.wrap(config.sort_field_idx, 16, signed=False),
        "did": config.target_deck_id_unused or None,
        "tmpls": _templates_to_legacy(db, id),
        "flds": _fields_to_legacy(db, id),
        "css": config.css,
        "latexPre": config.latex_pre,
        "latexPost": config.latex_post,
        "latexsvg": config.latex_svg,
        "req": [_requirement_to_legacy(r) for r in config.reqs],
    }
    if config.original_stock_kind:
        obj["originalStockKind"] = config.original_stock_kind
    if config.HasField("original_id"):
        obj["originalId"] = config.original_id
    lj.merge_other(obj, lj.decode_other(config.other, NOTETYPE_KEYS))
    return obj


def _requirement_to_legacy(req: Any) -> list[Any]:
    return [
        lj.wrap(req.card_ord, 16, signed=False),
        _REQ_KIND_NAMES.get(req.kind, "none"),
        [lj.wrap(o, 16, signed=False) for o in req.field_ords],
    ]


def _fields_to_legacy(db: sqlite3.Connection, ntid: int) -> list[dict[str, Any]]:
    rows = db.execute("select ord, name, config from fields where ntid = ? order by ord", (ntid,))
    return [_field_to_legacy(ord, name, pb.parse(pb.FieldConfig, blob)) for ord, name, blob in rows]


def _field_to_legacy(ord: int, name: str, config: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "name": name,
        "ord": lj.wrap(ord, 16, signed=False),
        "sticky": config.sticky,
        "rtl": config.rtl,
        "font": config.font_name,
        "size": lj.wrap(config.font_size, 16, signed=False),
        "description": config.description,
        "plainText": config.plain_text,
        "collapsed": config.collapsed,
        "excludeFromSearch": config.exclude_from_search,
        "id": config.id if config.HasField("id") else None,
        "tag": config.tag if config.HasField("tag") else None,
        "preventDeletion": config.prevent_deletion,
    }
    lj.merge_other(obj, lj.decode_other(config.other, FIELD_KEYS))
    return obj


def _templates_to_legacy(db: sqlite3.Connection, ntid: int) -> list[dict[str, Any]]:
    rows = db.execute(
        "select ord, name, config from templates where ntid = ? order by ord", (ntid,)
    )
    return [
        _template_to_legacy(ord, name, pb.parse(pb.TemplateConfig, blob))
        for ord, name, blob in rows
    ]


def _template_to_legacy(ord: int, name: str, config: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "name": name,
        "ord": lj.wrap(ord, 16, signed=False),
        "qfmt": config.q_format,
        "afmt": config.a_format,
        "bqfmt": config.q_format_browser,
        "bafmt": config.a_format_browser,
        "did": config.target_deck_id if config.target_deck_id > 0 else None,
        "bfont": config.browser_font_name,
        "bsize": lj.wrap(config.browser_font_size, 8, signed=False),
        "id": config.id if config.HasField("id") else None,
    }
    lj.merge_other(obj, lj.decode_other(config.other, TEMPLATE_KEYS))
    return obj


# --- JSON → rows ------------------------------------------------------------------------------


def from_legacy(db: sqlite3.Connection, obj: dict[str, Any]) -> None:
    """Insert or replace the notetype and all its field and template rows, `usn`/`mod` as given.

    The caller makes the name unique first (`ensure_unique_name`): REPLACE would otherwise
    silently delete another notetype holding that name. Two fields (or templates) whose names
    are equal ignoring case violate a unique index: BadRequest.
    """
    if not isinstance(obj, dict):
        raise BadRequest("notetype: expected an object")
    ntid = lj.field(obj, "id", lj.num_or_str)
    name = lj.field(obj, "name", lj.string)
    mtime_secs = lj.field(obj, "mod", lj.integer(lj.I64))
    usn = lj.field(obj, "usn", lj.integer(lj.I32))
    config = _config_from_legacy(obj)
    fields = [_field_from_legacy(f) for f in lj.field(obj, "flds", lj.json_array)]
    templates = [_template_from_legacy(t) for t in lj.field(obj, "tmpls", lj.json_array)]
    with atomic(db):
        db.execute(
            "insert or replace into notetypes (id, name, mtime_secs, usn, config)"
            " values (?,?,?,?,?)",
            (ntid, name, mtime_secs, usn, pb.serialize(config)),
        )
        _write_fields(db, ntid, fields)
        _write_templates(db, ntid, templates)


def _config_from_legacy(obj: dict[str, Any]) -> Any:
    kind = lj.field(obj, "type", lj.integer((0, 1)))
    config = pb.NotetypeConfig(
        kind=kind,
        sort_field_idx=lj.field(obj, "sortf", _U16),
        css=lj.field(obj, "css", lj.lenient(lj.string, "")),
        target_deck_id_unused=lj.field(obj, "did", _OPT_I64) or 0,
        latex_pre=lj.field(obj, "latexPre", lj.string, ""),
        latex_post=lj.field(obj, "latexPost", lj.string, ""),
        latex_svg=lj.field(obj, "latexsvg", lj.lenient(lj.boolean, False), False),
        original_stock_kind=lj.field(obj, "originalStockKind", lj.integer(lj.I32), 0),
        other=lj.encode_other(lj.unknown_keys(obj, NOTETYPE_KEYS)),
    )
    config.reqs.extend(lj.field(obj, "req", lj.lenient(_requirements, []), []))
    original_id = lj.field(obj, "originalId", lj.optional(lj.integer(lj.I64)), None)
    if original_id is not None:
        config.original_id = original_id
    return config


def _requirements(value: Any, key: str) -> list[Any]:
    reqs = []
    for item in lj.json_array(value, key):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], str)):
            raise lj.Invalid(f"{key!r}: malformed requirement {item!r}")
        if item[1] not in _REQ_KIND_VALUES:
            raise lj.Invalid(f"{key!r}: malformed requirement {item!r}")
        ords = [_U16(o, key) for o in lj.json_array(item[2], key)]
        reqs.append(
            pb.CardRequirement(
                card_ord=_U16(item[0], key), kind=_REQ_KIND_VALUES[item[1]], field_ords=ords
            )
        )
    return reqs


def _field_from_legacy(obj: Any) -> tuple[str, Any]:
    if not isinstance(obj, dict):
        raise BadRequest("notetype field: expected an object")
    lj.field(obj, "ord", lj.optional(_U16), None)  # validated, then ignored: position wins
    flag = lj.lenient(lj.boolean, False)
    config = pb.FieldConfig(
        sticky=lj.field(obj, "sticky", lj.bool_ish),
        rtl=lj.field(obj, "rtl", lj.bool_ish),
        font_name=lj.field(obj, "font", lj.string),
        font_size=lj.field(obj, "size", _U16),
        description=lj.field(obj, "description", lj.lenient(lj.string, ""), ""),
        plain_text=lj.field(obj, "plainText", flag, False),
        collapsed=lj.field(obj, "collapsed", flag, False),
        exclude_from_search=lj.field(obj, "excludeFromSearch", flag, False),
        prevent_deletion=lj.field(obj, "preventDeletion", flag, False),
        other=lj.encode_other(lj.unknown_keys(obj, FIELD_KEYS)),
    )
    field_id = lj.field(obj, "id", _OPT_I64, None)
    if field_id is not None:
        config.id = field_id
    tag = lj.field(obj, "tag", lj.lenient(lj.optional(lj.integer(lj.U32)), None), None)
    if tag is not None:
        config.tag = tag
    return lj.field(obj, "name", lj.string), config


def _template_from_legacy(obj: Any) -> tuple[str, Any]:
    if not isinstance(obj, dict):
        raise BadRequest("notetype template: expected an object")
    lj.field(obj, "ord", lj.optional(_U16), None)  # validated, then ignored: position wins
    config = pb.TemplateConfig(
        q_format=lj.field(obj, "qfmt", lj.string),
        a_format=lj.field(obj, "afmt", lj.string, ""),
        q_format_browser=lj.field(obj, "bqfmt", lj.string, ""),
        a_format_browser=lj.field(obj, "bafmt", lj.string, ""),
        target_deck_id=lj.field(obj, "did", _OPT_I64, None) or 0,
        browser_font_name=lj.field(obj, "bfont", lj.lenient(lj.string, ""), ""),
        browser_font_size=lj.field(obj, "bsize", lj.lenient(lj.integer(lj.U8), 0), 0),
        other=lj.encode_other(lj.unknown_keys(obj, TEMPLATE_KEYS)),
    )
    template_id = lj.field(obj, "id", _OPT_I64, None)
    if template_id is not None:
        config.id = template_id
    return lj.field(obj, "name", lj.string), config


def _write_fields(db: sqlite3.Connection, ntid: int, fields: list[tuple[str, Any]]) -> None:
    db.execute("delete from fields where ntid = ?", (ntid,))
    for ord, (name, config) in enumerate(fields):
        try:
            db.execute(
                "insert into fields (ntid, ord, name, config) values (?,?,?,?)",
                (ntid, ord, name, pb.serialize(config)),
            )
        except sqlite3.IntegrityError as exc:
            raise BadRequest(f"notetype {ntid}: duplicate field name {name!r}") from exc


def _write_templates(db: sqlite3.Connection, ntid: int, templates: list[tuple[str, Any]]) -> None:
    # The legacy JSON has no per-template mtime/usn; the reference writes zeros too.
    db.execute("delete from templates where ntid = ?", (ntid,))
    for ord, (name, config) in enumerate(templates):
        try:
            db.execute(
                "insert into templates (ntid, ord, name, mtime_secs, usn, config)"
                " values (?,?,?,0,0,?)",
                (ntid, ord, name, pb.serialize(config)),
            )
        except sqlite3.IntegrityError as exc:
            raise BadRequest(f"notetype {ntid}: duplicate template name {name!r}") from exc


# --- queries for the sync layer ---------------------------------------------------------------


def all_ids(db: sqlite3.Connection) -> list[int]:
    return [id for (id,) in db.execute("select id from notetypes order by id")]


def ids_with_usn_at_least(db: sqlite3.Connection, min_usn: int) -> list[int]:
    """Notetypes changed in or after `min_usn` (what the server sends at `applyChanges`)."""
    rows = db.execute("select id from notetypes where usn >= ? order by id", (min_usn,))
    return [id for (id,) in rows]


def ids_pending(db: sqlite3.Connection) -> list[int]:
    """Notetypes with `usn = -1` (never on a healthy server; the sanity check rejects them)."""
    return [id for (id,) in db.execute("select id from notetypes where usn = -1 order by id")]


def count(db: sqlite3.Connection) -> int:
    return int(db.execute("select count() from notetypes").fetchone()[0])


def mtime_secs(db: sqlite3.Connection, id: int) -> int | None:
    row = db.execute("select mtime_secs from notetypes where id = ?", (id,)).fetchone()
    return None if row is None else int(row[0])


def shape(db: sqlite3.Connection, id: int) -> tuple[int, int] | None:
    """(field count, template count) of a stored notetype, for the schema-change guard."""
    if mtime_secs(db, id) is None:
        return None
    fields = db.execute("select count() from fields where ntid = ?", (id,)).fetchone()[0]
    templates = db.execute("select count() from templates where ntid = ?", (id,)).fetchone()[0]
    return int(fields), int(templates)


def sort_field_index(db: sqlite3.Connection, id: int) -> int | None:
    """The stored notetype's sort field (`sortf`), for computing `notes.sfld`."""
    row = db.execute("select config from notetypes where id = ?", (id,)).fetchone()
    return None if row is None else int(pb.parse(pb.NotetypeConfig, row[0]).sort_field_idx)


def ensure_unique_name(
    db: sqlite3.Connection, obj: dict[str, Any], usn: int, now_secs: int
) -> None:
    """Append "+" to `obj["name"]` while another notetype holds it (ignoring case, spec 02 §5.5.4);
    a renamed object is marked modified with `mod = now_secs`, `usn = usn`."""
    ntid = lj.field(obj, "id", lj.num_or_str)
    name = lj.field(obj, "name", lj.string)
    renamed = False
    while (owner := _id_for_name(db, name)) is not None and owner != ntid:
        name += "+"
        renamed = True
    if renamed:
        obj.update(name=name, mod=now_secs, usn=usn)


def _id_for_name(db: sqlite3.Connection, name: str) -> int | None:
    row = db.execute("select id from notetypes where name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])
