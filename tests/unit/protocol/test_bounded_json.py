"""The incremental JSON scanner: values exactly as orjson gives them, in any split of the
input, with every limit refused before what it limits is read whole."""

from __future__ import annotations

import contextlib
import random
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from ankihost.errors import BadRequest
from ankihost.protocol import bounded_json
from ankihost.protocol.bounded_json import Budget, Scanner

MiB = 1 << 20


def pieces(data: bytes, seed: int = 0, largest: int = 7) -> Iterator[bytes]:
    """`data` in random pieces of 1..largest bytes."""
    rng = random.Random(seed)
    at = 0
    while at < len(data):
        size = rng.randint(1, largest)
        yield data[at : at + size]
        at += size


def endless(prefix: bytes, unit: bytes, pulled: list[int]) -> Iterator[bytes]:
    """`prefix`, then `unit` repeated for ever; `pulled` counts the bytes handed out."""
    block = unit * (64 * 1024 // len(unit))
    pulled[0] += len(prefix)
    yield prefix
    while True:
        pulled[0] += len(block)
        yield block


def whole_value(data: bytes, seed: int = 0, budget: int = MiB, largest: int = 7) -> Any:
    sc = Scanner(pieces(data, seed, largest))
    value = sc.value(Budget(budget, "test"))
    sc.end()
    return value


VALUES = [
    b'{"a": [1, 2.5, -0, -0.0, 1e2, "x\\"y", "\\u00e9\\ud83d\\ude00", true, false, null], "b": {}}',
    b'[[], {}, [[["deep"]]], {"k": {"k": [1, {"k": null}]}}, 18446744073709551615, 18446744073709551616]',
    b' \t\n\r[ 1 , "two" , [ 3 ] ] \n',
    '{"é": "ü", "\\u0063": "c", "c": "dup last wins"}'.encode(),
    b'"just a string"',
    b'["a\\\\", "\\\\\\\"q", "' + b'\\"' * 40 + b'", "' + b"\\\\" * 40 + b'", "' + b'x\\\\\\"' * 20 + b'"]',
    b"12345678901234567890123",
]


@pytest.mark.parametrize("data", VALUES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_are_those_of_orjson_in_any_split(data: bytes, seed: int) -> None:
    assert repr(whole_value(data, seed)) == repr(orjson.loads(data))


@pytest.mark.parametrize("data", VALUES)
def test_values_whole_and_token_by_token_agree(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = whole_value(data, largest=1 << 20)
    monkeypatch.setattr(bounded_json, "FAST_VALUE_BYTES", 0)  # every container by token
    assert repr(whole_value(data, largest=1 << 20)) == repr(whole) == repr(orjson.loads(data))


@pytest.mark.parametrize(
    "data",
    [b"[1,]", b'{"a":1,}', b"[1 2]", b"[01]", b"[1.]", b"[.5]", b"[+1]", b"[NaN]", b"[1e400]",
     b'["\\ud800"]', b'["a\x01b"]', b'["\xff"]', b'{"a" 1}', b"{1:2}", b"[", b"[1", b'"abc', b"[}",
     b"[1]]", b"[1] x", b"\xef\xbb\xbf[]", b"[tru]", b"[-]", b'["\\x"]', b"[1\x0b]"],
)
def test_invalid_json_is_refused(data: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(data)
    for seed in (0, 1):
        with pytest.raises(BadRequest):
            whole_value(data, seed)


def test_end_allows_only_json_whitespace() -> None:
    Scanner([b"{} \r\n\t"]).value(Budget(1000, "t"))
    sc = Scanner([b"{}\x0b"])
    sc.value(Budget(1000, "t"))
    with pytest.raises(BadRequest):
        sc.end()


def test_nesting_deeper_than_the_limit_is_refused_early() -> None:
    pulled = [0]
    sc = Scanner(endless(b"", b"[", pulled))
    with pytest.raises(BadRequest, match="nested deeper"):
        sc.value(Budget(MiB, "t"))
    assert pulled[0] < 200 * 1024
    ok = b"[" * bounded_json.MAX_DEPTH + b"]" * bounded_json.MAX_DEPTH
    assert whole_value(ok) == orjson.loads(ok)


def test_budget_refuses_many_small_values_after_reading_a_bounded_amount() -> None:
    pulled = [0]
    sc = Scanner(endless(b"[", b"{},", pulled))
    tracemalloc.start()
    try:
        with pytest.raises(BadRequest, match="more than 1048576 bytes"):
            sc.value(Budget(MiB, "conf"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pulled[0] < 2 * MiB
    assert peak < 4 * MiB


def test_a_long_string_is_refused_once_it_exceeds_what_the_budget_has_left() -> None:
    pulled = [0]
    sc = Scanner(endless(b'{"', b"a", pulled))
    with pytest.raises(BadRequest, match="longer than"):
        sc.value(Budget(MiB, "keys"))
    assert pulled[0] < 3 * MiB


def test_a_long_number_is_refused_early() -> None:
    pulled = [0]
    with pytest.raises(BadRequest, match="number longer"):
        Scanner(endless(b"[", b"1", pulled)).value(Budget(MiB, "t"))
    assert pulled[0] < 200 * 1024


def test_a_long_string_in_small_pieces_costs_linear_time() -> None:
    text = 'ab"c\\' * (2 * MiB)  # escapes all along: 14 MiB of JSON
    data = orjson.dumps(text)
    started = time.perf_counter()
    sc = Scanner(data[at : at + 4096] for at in range(0, len(data), 4096))
    assert sc.scalar("text") == text
    assert time.perf_counter() - started < 3  # re-reading the partial string per piece: minutes
    assert sc.bytes_in == len(data)


def test_scalar_refuses_containers_without_reading_them() -> None:
    pulled = [0]
    sc = Scanner(endless(b"", b"[[]],", pulled))
    with pytest.raises(BadRequest, match="not an array or object"):
        sc.scalar("id")
    assert pulled[0] < 100 * 1024


def test_members_and_items_walk_in_step_with_the_caller() -> None:
    sc = Scanner(pieces(b' { "a" : [1, "b"] , "c" : null } '))
    seen: list[Any] = []
    keys = Budget(1000, "keys")
    for key in sc.members(keys):
        if key == "a":
            for _ in sc.items():
                seen.append(sc.scalar("item"))
        else:
            seen.append((key, sc.scalar(key)))
    sc.end()
    assert seen == [1, "b", ("c", None)]
    assert sc.depth == 0
    assert keys.remaining < 1000


ROWS = b'[[1,2,"x"], [3, {"n": [4]}, 5] ,[], [6,7,8,9]]'


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rows_fast_and_slow_give_orjson_rows(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for fast in (bounded_json.FAST_ROW_BYTES, 0):
        monkeypatch.setattr(bounded_json, "FAST_ROW_BYTES", fast)
        sc = Scanner(pieces(ROWS, seed, largest=9))
        rows = list(sc.rows(4, frozenset({1}), Budget(MiB, "t"), "row"))
        sc.end()
        assert rows == orjson.loads(ROWS)


def test_rows_refuse_containers_at_strict_positions_and_too_many_values() -> None:
    with pytest.raises(BadRequest, match="not an array or object"):
        list(Scanner([b'[[1, {"a": 1}]]']).rows(4, frozenset(), Budget(MiB, "t"), "row"))
    with pytest.raises(BadRequest, match="more than 2 values"):
        list(Scanner([b"[[1, [2], 3]]"]).rows(2, frozenset({1}), Budget(MiB, "t"), "row"))
    with pytest.raises(BadRequest, match="expected a list"):
        list(Scanner([b"[5]"]).rows(2, frozenset(), Budget(MiB, "t"), "row"))


def test_a_row_with_a_string_longer_than_the_fast_window() -> None:
    big = "é" * (200 * 1024)
    data = orjson.dumps([[1, big, 2], [3]])
    sc = Scanner(pieces(data, largest=50_000))
    assert list(sc.rows(3, frozenset(), Budget(10, "t"), "row")) == [[1, big, 2], [3]]


def test_errors_of_the_pieces_pass_through() -> None:
    class Broken(Exception):
        pass

    def broken() -> Iterator[bytes]:
        yield b"[1,"
        raise Broken

    with pytest.raises(Broken):
        Scanner(broken()).value(Budget(MiB, "t"))


@pytest.mark.parametrize("tail", [b"]", b""])
def test_many_short_scalars_at_the_end_of_the_body_cost_linear_time(tail: bytes) -> None:
    data = b"[" + b",".join([b"1"] * 30_000) + tail
    started = time.perf_counter()
    sc = Scanner([data])
    values = []
    with pytest.raises(BadRequest) if not tail else contextlib.nullcontext():
        values.extend(sc.scalars("n"))
    assert time.perf_counter() - started < 1
    assert len(values) == 30_000


WORST_SHAPES = [b"[[]]", b"[]", b"{}", b'{"":0}', b"[0]", b"0", b"0.0", b'""', b'"a"', b"[[[[[[[[]]]]]]]]",
                b"1111111111111", b'{"k":[1,"x",{"y":null}]}', b"true"]


@pytest.mark.parametrize("unit", WORST_SHAPES)
def test_parse_cost_is_at_least_what_orjson_builds(unit: bytes) -> None:
    data = b"[" + b",".join([unit] * (256 * 1024 // (len(unit) + 1))) + b"]"
    tracemalloc.start()
    try:
        value = orjson.loads(data)
        built = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del value
    assert bounded_json.parse_cost(data) >= built


def test_loads_within_refuses_costly_bodies_only() -> None:
    nested = b"[" + b"[[]]," * (200 * 1024) + b"[[]]]"
    with pytest.raises(BadRequest, match="once parsed"):
        bounded_json.loads_within(nested, 16 * MiB)
    assert bounded_json.loads_within(nested, 128 * MiB) == orjson.loads(nested)
    small = b"[" + b"[[]]," * 1000 + b"[]]"
    assert bounded_json.loads_within(small, 1) == orjson.loads(small)  # too small to look at
