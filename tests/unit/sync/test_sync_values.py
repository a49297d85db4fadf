"""Request-body parsing: lenient where the reference is, 400 where it is not."""

from __future__ import annotations

from typing import Any

import pytest

from ankihost.errors import BadRequest
from ankihost.protocol import values
from ankihost.sync import chunks, start


@pytest.mark.parametrize(
    ("raw", "parsed"), [(True, True), (0, False), (1.0, True), ("TRUE", True), ("0", False)]
)
def test_bool_ish(raw: Any, parsed: bool) -> None:
    assert values.as_bool(raw) is parsed


@pytest.mark.parametrize("raw", [2, "yes", None, [], -1])
def test_not_bool_ish(raw: Any) -> None:
    with pytest.raises(BadRequest):
        values.as_bool(raw)


def test_start_accepts_null_absent_int_and_string_graves() -> None:
    assert start.parse_start({"minUsn": 1, "lnewer": True}).legacy_graves is None
    assert start.parse_start({"minUsn": 1, "lnewer": 0, "graves": None}).legacy_graves is None
    graves = start.parse_start(
        {"minUsn": 1, "lnewer": 0, "graves": {"cards": ["12"], "notes": [3], "decks": []}}
    )
    assert graves.legacy_graves == start.Graves(cards=[12], notes=[3], decks=[])


@pytest.mark.parametrize(
    "body",
    [
        {"lnewer": True},
        {"minUsn": 1},
        {"minUsn": 1.5, "lnewer": True},
        {"minUsn": 1, "lnewer": True, "graves": {"cards": []}},
        {"minUsn": 1, "lnewer": True, "graves": {"cards": ["x"], "notes": [], "decks": []}},
    ],
)
def test_start_rejects(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        start.parse_start(body)


def test_card_numbers_are_truncated_and_enums_checked() -> None:
    parsed = chunks.parse_card(
        [1, 2, 3, 0, 5.7, 1, 2, 2, 9.9, -3.5, 2500, 1, 0, 0, 1.2, 0, 0, "{}"]
    )
    assert parsed[4] == 5 and parsed[8] == 9 and parsed[9] == 0 and parsed[14] == 1
    with pytest.raises(BadRequest):
        chunks.parse_card([1, 2, 3, 0, 5, 1, 9, 2, 9, 0, 2500, 1, 0, 0, 0, 0, 0, "{}"])
    with pytest.raises(BadRequest):
        chunks.parse_card([1, 2, 3])


def test_revlog_kind_may_be_absent_or_invalid() -> None:
    assert chunks.parse_revlog([1, 2, 3, 4, 5.5, 6, 7, 8])[-1] == 0
    assert chunks.parse_revlog([1, 2, 3, 4, 5, 6, 7, 8, 42])[-1] == 0
    assert chunks.parse_revlog([1, 2, 3, 4, 5, 6, 7, 8, 5])[-1] == 5


def test_chunk_lists_and_done_are_optional() -> None:
    parsed = chunks.parse_apply_chunk({"chunk": {}})
    assert parsed == chunks.IncomingChunk(revlog=[], cards=[], notes=[])
    with pytest.raises(BadRequest):
        chunks.parse_apply_chunk({})
