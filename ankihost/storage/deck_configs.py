"""Deck options presets: the `deck_config` rows ↔ the legacy "dconf" JSON the sync exchanges.

Owns all SQL on `deck_config`, the conversion of spec 02 §4.8 / §5.3.3 (including unknown keys
at the top level and inside `new`/`rev`/`lapse`), and the read-time clamping of out-of-range
values that clients apply whenever they load a preset.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from ankihost.errors import BadRequest
from ankihost.storage import legacy_json as lj
from ankihost.storage import protobuf as pb
from ankihost.storage.collection import atomic

TOP_KEYS = (
    "id", "mod", "name", "usn", "maxTaken", "autoplay", "timer", "replayq", "dyn", "newMix",
    "newPerDayMinimum", "interdayLearningMix", "reviewOrder", "newSortOrder",
    "newGatherPriority", "buryInterdayLearning", "fsrsWeights", "fsrsParams5", "fsrsParams6",
    "desiredRetention", "ignoreRevlogsBeforeDate", "easyDaysPercentages", "stopTimerOnAnswer",
    "secondsToShowQuestion", "secondsToShowAnswer", "questionAction", "answerAction",
    "waitForAudio", "sm2Retention", "weightSearch",
)  # fmt: skip
NEW_KEYS = ("bury", "delays", "initialFactor", "ints", "order", "perDay")
REV_KEYS = ("bury", "ease4", "ivlFct", "maxIvl", "perDay", "hardFactor")
LAPSE_KEYS = ("delays", "leechAction", "leechFails", "minInt", "mult")
_SECTIONS = {"new": NEW_KEYS, "rev": REV_KEYS, "lapse": LAPSE_KEYS}

INSERT_ORDER_RANDOM = 1  # protobuf numbering; the JSON `new.order` numbers it the other way
LEECH_TAG_ONLY = 1

# Read-time clamp: (field, lowest, highest, default). Outside the range, or NaN ⇒ default.
CLAMPS: tuple[tuple[str, float, float, float], ...] = (
    ("new_per_day", 0, 9999, 20),
    ("reviews_per_day", 0, 9999, 200),
    ("new_per_day_minimum", 0, 9999, 0),
    ("initial_ease", 1.31, 5.0, 2.5),
    ("easy_multiplier", 1.0, 5.0, 1.3),
    ("hard_multiplier", 0.5, 1.3, 1.2),
    ("lapse_multiplier", 0.0, 1.0, 0.0),
    ("interval_multiplier", 0.5, 2.0, 1.0),
    ("maximum_review_interval", 1, 36_500, 36_500),
    ("minimum_lapse_interval", 1, 36_500, 1),
    ("graduating_interval_good", 1, 36_500, 1),
    ("graduating_interval_easy", 1, 36_500, 4),
    ("leech_threshold", 1, 9999, 8),
    ("cap_answer_time_to_secs", 1, 9999, 60),
    ("desired_retention", 0.7, 0.99, 0.9),
    ("historical_retention", 0.7, 0.97, 0.9),
)

_U16, _U32, _I32 = lj.integer(lj.U16), lj.integer(lj.U32), lj.integer(lj.I32)
_json = lj.f32_to_json
_jsons = lj.f32_list_to_json


def clamp(config: Any) -> None:
    """Replace out-of-range values by their defaults, as every client does when it loads one."""
    for name, lowest, highest, default in CLAMPS:
        value = getattr(config, name)
        if math.isnan(value) or not lj.f32(lowest) <= value <= lj.f32(highest):
            setattr(config, name, default)


# --- row → JSON -------------------------------------------------------------------------------


def to_legacy(db: sqlite3.Connection, id: int) -> dict[str, Any]:
    """The preset as the official server sends it (clamped); KeyError if there is none."""
    row = db.execute(
        "select name, mtime_secs, usn, config from deck_config where id = ?", (id,)
    ).fetchone()
    if row is None:
        raise KeyError(id)
    name, mtime_secs, usn, blob = row
    c = pb.parse(pb.DeckConfigConfig, blob)
    clamp(c)
    other = lj.decode_other(c.other)
    nested = {k: _section_other(other.pop(k, None), keys) for k, keys in _SECTIONS.items()}
    obj: dict[str, Any] = {
        "id": id,
        "mod": mtime_secs,
        "name": name,
        "usn": usn,
        "maxTaken": lj.wrap(c.cap_answer_time_to_secs, 32, signed=True),
        "autoplay": not c.disable_autoplay,
        "timer": 1 if c.show_timer else 0,
        "replayq": not c.skip_question_when_replaying_answer,
        "new": _new_to_legacy(c, nested["new"]),
        "rev": _rev_to_legacy(c, nested["rev"]),
        "lapse": _lapse_to_legacy(c, nested["lapse"]),
        "dyn": False,
        **_scheduler_to_legacy(c),
    }
    lj.merge_other(obj, {k: v for k, v in other.items() if k not in TOP_KEYS})
    return obj


def _section_other(value: Any, reserved: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if k not in reserved}


def _new_to_legacy(c: Any, other: dict[str, Any]) -> dict[str, Any]:
    initial_factor = lj.f32_to_int(lj.f32(c.initial_ease * 1000), lj.U16)  # f32 product
    new = {
        "bury": c.bury_new,
        "delays": _jsons(c.learn_steps),
        "initialFactor": initial_factor,
        "ints": [
            lj.wrap(c.graduating_interval_good, 16, signed=False),
            lj.wrap(c.graduating_interval_easy, 16, signed=False),
            0,
        ],
        "order": 0 if c.new_card_insert_order == INSERT_ORDER_RANDOM else 1,
        "perDay": c.new_per_day,
    }
    lj.merge_other(new, other)
    return new


def _rev_to_legacy(c: Any, other: dict[str, Any]) -> dict[str, Any]:
    rev = {
        "bury": c.bury_reviews,
        "ease4": _json(c.easy_multiplier),
        "ivlFct": _json(c.interval_multiplier),
        "maxIvl": c.maximum_review_interval,
        "perDay": c.reviews_per_day,
        "hardFactor": _json(c.hard_multiplier),
    }
    lj.merge_other(rev, other)
    return rev


def _lapse_to_legacy(c: Any, other: dict[str, Any]) -> dict[str, Any]:
    lapse = {
        "delays": _jsons(c.relearn_steps),
        "leechAction": 1 if c.leech_action == LEECH_TAG_ONLY else 0,
        "leechFails": c.leech_threshold,
        "minInt": c.minimum_lapse_interval,
        "mult": _json(c.lapse_multiplier),
    }
    lj.merge_other(lapse, other)
    return lapse


def _scheduler_to_legacy(c: Any) -> dict[str, Any]:
    """The keys added after schema 11 (v3 scheduler, FSRS, auto-advance)."""
    return {
        "newMix": c.new_mix,
        "newPerDayMinimum": c.new_per_day_minimum,
        "interdayLearningMix": c.interday_learning_mix,
        "reviewOrder": c.review_order,
        "newSortOrder": c.new_card_sort_order,
        "newGatherPriority": c.new_card_gather_priority,
        "buryInterdayLearning": c.bury_interday_learning,
        "fsrsWeights": _jsons(c.fsrs_params_4),
        "fsrsParams5": _jsons(c.fsrs_params_5),
        "fsrsParams6": _jsons(c.fsrs_params_6),
        "desiredRetention": _json(c.desired_retention),
        "ignoreRevlogsBeforeDate": c.ignore_revlogs_before_date,
        "easyDaysPercentages": _jsons(c.easy_days_percentages),
        "stopTimerOnAnswer": c.stop_timer_on_answer,
        "secondsToShowQuestion": _json(c.seconds_to_show_question),
        "secondsToShowAnswer": _json(c.seconds_to_show_answer),
        "questionAction": 1 if c.question_action == 1 else 0,
        "answerAction": c.answer_action if 1 <= c.answer_action <= 4 else 0,
        "waitForAudio": c.wait_for_audio,
        "sm2Retention": _json(c.historical_retention),
        "weightSearch": c.param_search,
    }


# --- JSON → row -------------------------------------------------------------------------------

_NEW_DEFAULT = {"bury": False, "delays": [1.0, 10.0], "initialFactor": 2500, "ints": [1, 4],
                "order": 1, "perDay": 20}  # fmt: skip
_REV_DEFAULT = {"bury": False, "ease4": 1.3, "ivlFct": 1.0, "maxIvl": 36500, "perDay": 200,
                "hardFactor": 1.2}  # fmt: skip
_LAPSE_DEFAULT = {"delays": [10.0], "leechAction": 1, "leechFails": 8, "minInt": 1, "mult": 0.0}


def from_legacy(db: sqlite3.Connection, obj: dict[str, Any]) -> None:
    """Insert or replace the preset row from a legacy object, `usn`/`mod` as given."""
    if not isinstance(obj, dict):
        raise BadRequest("deck config: expected an object")
    config = pb.DeckConfigConfig()
    other = lj.unknown_keys(obj, TOP_KEYS + tuple(_SECTIONS))
    for key, read, default in (
        ("new", _new_from_legacy, _NEW_DEFAULT),
        ("rev", _rev_from_legacy, _REV_DEFAULT),
        ("lapse", _lapse_from_legacy, _LAPSE_DEFAULT),
    ):
        if section_other := _read_section(obj, key, read, default, config):
            other[key] = section_other
    _top_from_legacy(obj, config)
    config.other = lj.encode_other(other)
    row = (
        lj.field(obj, "id", lj.num_or_str),
        lj.field(obj, "name", lj.string),
        lj.field(obj, "mod", lj.num_or_str),
        lj.field(obj, "usn", _I32),
        pb.serialize(config),
    )
    with atomic(db):
        db.execute(
            "insert or replace into deck_config (id, name, mtime_secs, usn, config)"
            " values (?,?,?,?,?)",
            row,
        )


def _read_section(
    obj: dict[str, Any], key: str, read: Any, default: dict[str, Any], config: Any
) -> dict[str, Any]:
    """Apply one of `new`/`rev`/`lapse` to `config`; a malformed section reads as the defaults
    (and loses its unknown keys), as in the reference. Returns the section's unknown keys."""
    section = lj.field(obj, key, lambda v, _k: v)
    scratch = pb.DeckConfigConfig()
    try:
        read(lj.json_object(section, key), scratch)
        unknown = lj.unknown_keys(section, _SECTIONS[key])
    except BadRequest:
        read(default, scratch)
        unknown = {}
    config.MergeFrom(scratch)
    return unknown


def _new_from_legacy(new: dict[str, Any], c: Any) -> None:
    c.bury_new = lj.field(new, "bury", lj.boolean, False)
    c.learn_steps[:] = lj.field(new, "delays", lj.lenient(lj.number_list, list[float]()))
    c.initial_ease = lj.f32(lj.field(new, "initialFactor", _U16)) / 1000
    c.graduating_interval_good, c.graduating_interval_easy = lj.field(new, "ints", _new_intervals)
    order = lj.field(new, "order", lj.lenient(lj.integer((0, 1)), 1))
    c.new_card_insert_order = INSERT_ORDER_RANDOM if order == 0 else 0
    c.new_per_day = lj.field(new, "perDay", lj.lenient(_U32, 0))


def _new_intervals(value: Any, key: str) -> tuple[int, int]:
    """`[good, easy, unused]`; some clients wrote two elements; anything malformed ⇒ (1, 4)."""
    try:
        ints = [_U16(v, key) for v in lj.json_array(value, key)]
    except lj.Invalid:
        ints = []
    return (ints[0], ints[1]) if len(ints) >= 2 else (1, 4)


def _rev_from_legacy(rev: dict[str, Any], c: Any) -> None:
    c.bury_reviews = lj.field(rev, "bury", lj.boolean, False)
    c.easy_multiplier = lj.field(rev, "ease4", lj.number)
    c.interval_multiplier = lj.field(rev, "ivlFct", lj.number)
    c.maximum_review_interval = lj.field(rev, "maxIvl", _U32)
    c.reviews_per_day = lj.field(rev, "perDay", lj.lenient(_U32, 0))
    c.hard_multiplier = lj.field(rev, "hardFactor", lj.number, 1.2)


def _lapse_from_legacy(lapse: dict[str, Any], c: Any) -> None:
    c.relearn_steps[:] = lj.field(lapse, "delays", lj.lenient(lj.number_list, list[float]()))
    c.leech_action = lj.field(lapse, "leechAction", lj.lenient(lj.integer((0, 1)), LEECH_TAG_ONLY))
    c.leech_threshold = lj.field(lapse, "leechFails", _U32)
    c.minimum_lapse_interval = lj.field(lapse, "minInt", _U32)
    c.lapse_multiplier = lj.field(lapse, "mult", lj.number)


def _top_from_legacy(obj: dict[str, Any], c: Any) -> None:
    c.cap_answer_time_to_secs = max(0, lj.field(obj, "maxTaken", _I32))
    c.disable_autoplay = not lj.field(obj, "autoplay", lj.boolean)
    c.show_timer = lj.field(obj, "timer", lj.lenient(lj.integer(lj.U8), 0)) != 0
    c.skip_question_when_replaying_answer = not lj.field(obj, "replayq", lj.boolean, False)
    lj.field(obj, "dyn", lj.lenient(lj.boolean, False), False)  # ignored
    for key, name in (("newMix", "new_mix"), ("interdayLearningMix", "interday_learning_mix"),
                      ("reviewOrder", "review_order"), ("newSortOrder", "new_card_sort_order"),
                      ("newGatherPriority", "new_card_gather_priority")):  # fmt: skip
        setattr(c, name, lj.field(obj, key, _I32, 0))
    c.new_per_day_minimum = lj.field(obj, "newPerDayMinimum", _U32, 0)
    c.bury_interday_learning = lj.field(obj, "buryInterdayLearning", lj.boolean, False)
    c.fsrs_params_4[:] = lj.field(obj, "fsrsWeights", lj.number_list, [])
    c.fsrs_params_5[:] = lj.field(obj, "fsrsParams5", lj.number_list, [])
    c.fsrs_params_6[:] = lj.field(obj, "fsrsParams6", lj.number_list, [])
    c.desired_retention = lj.field(obj, "desiredRetention", lj.number, 0.0)
    c.ignore_revlogs_before_date = lj.field(obj, "ignoreRevlogsBeforeDate", lj.string, "")
    c.easy_days_percentages[:] = lj.field(obj, "easyDaysPercentages", lj.number_list, [])
    c.stop_timer_on_answer = lj.field(obj, "stopTimerOnAnswer", lj.boolean, False)
    c.seconds_to_show_question = lj.field(obj, "secondsToShowQuestion", lj.number, 0.0)
    c.seconds_to_show_answer = lj.field(obj, "secondsToShowAnswer", lj.number, 0.0)
    c.question_action = lj.field(obj, "questionAction", lj.integer((0, 1)), 0)
    c.answer_action = lj.field(obj, "answerAction", lj.integer((0, 4)), 0)
    c.wait_for_audio = lj.field(obj, "waitForAudio", lj.boolean, True)
    c.historical_retention = lj.field(obj, "sm2Retention", lj.number, 0.0)
    c.param_search = lj.field(obj, "weightSearch", lj.string, "")


# --- queries for the sync layer ---------------------------------------------------------------


def all_ids(db: sqlite3.Connection) -> list[int]:
    return [id for (id,) in db.execute("select id from deck_config order by id")]


def ids_with_usn_at_least(db: sqlite3.Connection, min_usn: int) -> list[int]:
    """Presets changed in or after `min_usn` (what the server sends at `applyChanges`)."""
    rows = db.execute("select id from deck_config where usn >= ? order by id", (min_usn,))
    return [id for (id,) in rows]


def ids_pending(db: sqlite3.Connection) -> list[int]:
    """Presets with `usn = -1` (never on a healthy server; the sanity check rejects them)."""
    return [id for (id,) in db.execute("select id from deck_config where usn = -1 order by id")]


def count(db: sqlite3.Connection) -> int:
    return int(db.execute("select count() from deck_config").fetchone()[0])


def mtime_secs(db: sqlite3.Connection, id: int) -> int | None:
    row = db.execute("select mtime_secs from deck_config where id = ?", (id,)).fetchone()
    return None if row is None else int(row[0])
