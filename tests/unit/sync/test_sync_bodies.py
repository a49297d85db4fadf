"""Streamed readers of start/applyGraves/applyChanges/applyChunk bodies against today's parsers.

Every body here goes through both: orjson + `parse_*` (what the handlers did), and the
method's reader over random splits of the bytes. They must give the same message (compared by
repr, so 1, 1.0 and True differ) or both refuse it; only the new limits may refuse more.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.protocol.bounded_json import Scanner
from ankihost.protocol.request import SyncRequest
from ankihost.sync import bodies, changes, chunks, start
from ankihost.sync.messages import Graves
from tests.support.sync_steps import sync_request

MiB = 1 << 20
OLD: dict[str, Callable[[dict[str, Any]], object]] = {
    "start": start.parse_start,
    "applyGraves": start.parse_apply_graves,
    "applyChanges": changes.parse_apply_changes,
    "applyChunk": chunks.parse_apply_chunk,
}
REFUSED = "refused"


def old_outcome(method: str, data: bytes) -> str:
    try:
        return repr(OLD[method](sync_request(method, data).json_object()))
    except BadRequest:
        return REFUSED


def pieces(data: bytes, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    at = 0
    while at < len(data):
        size = rng.choice((1, 2, 3, 5, 8, 13, 64, 1000))
        yield data[at : at + size]
        at += size


def new_outcome(method: str, data: bytes, seed: int = 0) -> str:
    try:
        return repr(bodies.READERS[method](Scanner(pieces(data, seed))))
    except BadRequest as exc:
        return f"{REFUSED}: {exc.reason}"


NEW_LIMITS = ("given twice", "more than", "longer than", "nested deeper")


def assert_same(method: str, data: bytes, seeds: tuple[int, ...] = (0, 1)) -> None:
    old = old_outcome(method, data)
    for seed in seeds:
        new = new_outcome(method, data, seed)
        if old == REFUSED or any(limit in new for limit in NEW_LIMITS):
            assert new.startswith(REFUSED), (method, data[:300], new)
        else:
            assert new == old, (method, data[:300])


# --- bodies a real client sends, and their neighbours ------------------------------------

CARD = [1711999000111, 1711999000100, 1, 0, 1712000000, -1, 2, 2, 812, 4, 2500, 3, 0, 0, 0, 0, 0,
        '{"s":12.3456,"d":5.123,"lrt":1712000000}']
NOTE = [1711999000100, "Ab3#xY/9k", 1711000000001, 1712000000, -1, " spanish verbs ",
        "hablar\x1fto speak \u00e9\U0001f600", "", "", 0, ""]
REVLOG = [1712000300456, 1711999000111, -1, 1, -60, 4, 2500, 9000, 2]
DECK = {"id": 1796430364930, "mod": 1796430365, "name": "Filtered", "usn": -1, "dyn": 1,
        "terms": [["tag:hard -is:suspended", 40, 1]], "newToday": [0, 0], "desc": ""}
REAL = {
    "start": [{"minUsn": 55, "lnewer": True, "graves": None},
              {"minUsn": 0, "lnewer": "false", "graves": {"cards": ["12", 13], "notes": [], "decks": [" 7 "]}}],
    "applyGraves": [{"chunk": {"cards": [1711999000333], "decks": [], "notes": [1711999000300]}}],
    "applyChanges": [{"changes": {"models": [], "decks": [[DECK], [{"id": 1, "mod": 5, "new": {"delays": [1.0]}}]],
                                  "tags": ["tag1", "Parent::Child"], "conf": {"curDeck": 1, "x": {"y": [1, [2]]}},
                                  "crt": 1711929600}}],
    "applyChunk": [{"chunk": {"done": False, "revlog": [REVLOG] * 3, "cards": [CARD] * 3, "notes": [NOTE] * 3}},
                   {"chunk": {"done": True, "cards": [CARD], "revlog": None}}],
}


def texts(value: Any) -> list[bytes]:
    """`value` as several writers would send it (spacing, escapes)."""
    return [json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), json.dumps(value, indent=1).encode(),
            json.dumps(value, ensure_ascii=True, separators=(" ,", ": ")).encode()]


@pytest.mark.parametrize("method", list(REAL))
def test_real_bodies_give_the_same_messages(method: str) -> None:
    for value in REAL[method]:
        for data in texts(value):
            assert not old_outcome(method, data).startswith(REFUSED)
            assert_same(method, data, seeds=(0, 1, 2, 3))


def mutated(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    byte = bytes([rng.choice(b'[]{}",:\\ 0123456789.-+eatrufnlx\x00\x0b\xff\xc3')])
    op = rng.randrange(3)
    if op == 0:
        return data[:at] + data[at + 1 :]
    if op == 1:
        return data[:at] + byte + data[at:]
    return data[:at] + byte + data[at + 1 :]


@pytest.mark.parametrize("method", list(REAL))
def test_mutated_bodies_are_judged_alike(method: str) -> None:
    rng = random.Random(method)
    for value in REAL[method]:
        for data in texts(value):
            for _ in range(150):
                body = data
                for _ in range(rng.randint(1, 3)):
                    body = mutated(body, rng)
                assert_same(method, body, seeds=(rng.randrange(100),))


ODD_BODIES = {
    "start": [b"", b"   ", b"\x0b", b"[]", b"null", b'{"minUsn":0}', b'{"minUsn":0,"lnewer":1,"graves":5}',
              b'{"minUsn":0,"lnewer":1,"graves":[]}', b'{"minUsn":[1],"lnewer":true}', b'{"minUsn":1.0,"lnewer":true}',
              b'{"minUsn":0,"lnewer":"1.0","graves":{"cards":[],"notes":[],"decks":[],"x":[[[]]]}}',
              b'{"minUsn":0,"lnewer":true,"graves":{"cards":[[1]],"notes":[],"decks":[]}}',
              b'{"minUsn":0,"lnewer":true,"graves":{"cards":[1.5],"notes":[],"decks":[]}}',
              b'{"minUsn":0,"lnewer":true,"graves":{"cards":null,"notes":[],"decks":[]}}',
              b'{"minUsn":0,"lnewer":true,"graves":{"cards":["1_0"," +5"],"notes":[true],"decks":[]}}',
              b'{"\\u006dinUsn":3,"lnewer":false}', b'{"minUsn":18446744073709551616,"lnewer":false}'],
    "applyGraves": [b'{"chunk":null}', b'{"chunk":[]}', b'{"chunk":{"cards":[],"notes":[]}}', b'{}',
                    b'{"chunk":{"cards":{},"notes":[],"decks":[]}}'],
    "applyChanges": [b'{"changes":[]}', b'{"changes":{"models":[],"decks":[[]],"tags":[]}}',
                     b'{"changes":{"models":[],"decks":[[],[],[]],"tags":[]}}',
                     b'{"changes":{"models":[1],"decks":[[],[]],"tags":[]}}',
                     b'{"changes":{"models":[],"decks":[[],{}],"tags":[]}}',
                     b'{"changes":{"models":[],"decks":[[],[]],"tags":[1]}}',
                     b'{"changes":{"models":[],"decks":[[],[]],"tags":[[]]}}',
                     b'{"changes":{"models":[],"decks":[[],[]],"tags":[],"conf":[],"crt":null}}',
                     b'{"changes":{"models":[],"decks":[[],[]],"tags":[],"conf":null,"crt":1.5}}',
                     b'{"changes":{"models":[],"decks":[[],[]],"tags":[],"crt":[1]}}',
                     b'{"changes":{"models":null,"decks":[[],[]],"tags":[]}}'],
    "applyChunk": [b'{"chunk":null}', b'{"chunk":[]}', b'{"chunk":{}}', b'{"chunk":{"revlog":{}}}',
                   b'{"chunk":{"revlog":[[1,2,3,4,5,6,7,8,[[9]]]]}}', b'{"chunk":{"revlog":[[1,2,3,4,5,6,7,8,true]]}}',
                   b'{"chunk":{"revlog":[[1,2,3,4,5.5,6,7,8]]}}', b'{"chunk":{"revlog":[[1,2,3,4,5,6,7,8,9,10]]}}',
                   b'{"chunk":{"revlog":[[1,2,3,4,5,6,7]]}}', b'{"chunk":{"revlog":[1]}}',
                   b'{"chunk":{"notes":[[1,"g",2,3,{"u":[1]},"","a",{"x":1},[],null,7]]}}',
                   b'{"chunk":{"notes":[[1,"g",2,3.0,0,"","a"]]}}', b'{"chunk":{"cards":[[' + b"0," * 17 + b'""]]}}',
                   b'{"chunk":{"cards":[[' + b"0," * 17 + b"[]]]}}",
                   b'{"chunk":{"cards":[[' + b"1e300," * 17 + b'""]]}}',
                   b'{"chunk":{"cards":[[' + b"0," * 8 + b"-5.7," + b"0," * 8 + b'""]]}}',
                   b'{"chunk":{"done":[[[[]]]],"x":{"y":"z"}}}'],
}


@pytest.mark.parametrize(("method", "data"), [(m, d) for m, ds in ODD_BODIES.items() for d in ds])
def test_odd_bodies_are_judged_alike(method: str, data: bytes) -> None:
    assert_same(method, data, seeds=(0, 1, 2))


# --- generated bodies ------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
    st.sampled_from(["1", " 2 ", "1.5", "true", "FALSE", "0", "x", "1_0", "٣"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=4), inner, max_size=4), max_leaves=10)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `strategy`, sometimes any other value."""
    return st.one_of(strategy, strategy, strategy, values)


def row(template: list[Any]) -> st.SearchStrategy[Any]:
    @st.composite
    def build(draw: st.DrawFn) -> Any:
        values_ = list(template)
        for _ in range(draw(st.integers(0, 2))):
            values_[draw(st.integers(0, len(values_) - 1))] = draw(values)
        return values_[: draw(st.integers(len(values_) - 3, len(values_)))]
    return maybe(build())


def keyed(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Objects with some of `fields` and maybe an unknown key."""
    return st.fixed_dictionaries({}, optional={**fields, "zz": values})


ids = st.lists(maybe(st.integers(0, 2**53) | st.integers(0, 99).map(str)), max_size=5)
graves = maybe(keyed({"cards": maybe(ids), "notes": maybe(ids), "decks": maybe(ids)}))
BODIES = {
    "start": keyed({"minUsn": maybe(st.integers(-5, 2**40)), "lnewer": maybe(st.booleans()),
                    "graves": st.none() | graves}),
    "applyGraves": keyed({"chunk": graves}),
    "applyChanges": keyed({"changes": maybe(keyed({
        "models": maybe(st.lists(maybe(st.dictionaries(st.text(max_size=4), values, max_size=4)), max_size=3)),
        "decks": maybe(st.lists(maybe(st.lists(maybe(st.just(DECK)), max_size=2)), min_size=1, max_size=3)),
        "tags": maybe(st.lists(maybe(st.text(max_size=5)), max_size=3)),
        "conf": st.none() | maybe(st.dictionaries(st.text(max_size=4), values, max_size=4)),
        "crt": st.none() | maybe(st.integers(0, 2**40)),
    }))}),
    "applyChunk": keyed({"chunk": maybe(keyed({
        "revlog": st.none() | maybe(st.lists(row(REVLOG), max_size=3)),
        "cards": st.none() | maybe(st.lists(row(CARD), max_size=3)),
        "notes": st.none() | maybe(st.lists(row(NOTE), max_size=3)),
        "done": st.booleans(),
    }))}),
}


@pytest.mark.parametrize("method", list(BODIES))
def test_generated_bodies_are_judged_alike(method: str) -> None:
    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(body=BODIES[method], style=st.integers(0, 2), seed=st.integers(0, 1000))
    def check(body: Any, style: int, seed: int) -> None:
        assert_same(method, texts(body)[style], seeds=(seed,))

    check()


# --- the new limits -------------------------------------------------------------------------

def rows_body(count: int) -> bytes:
    return b'{"chunk":{"revlog":[' + b",".join([b"[1,2,3,4,5,6,7,8]"] * count) + b"]}}"


def graves_body(count: int) -> bytes:
    return b'{"chunk":{"cards":[' + b",".join([b"1"] * count) + b'],"notes":[],"decks":[]}}'


def test_row_and_grave_caps_in_both_paths() -> None:
    assert len(bodies.READERS["applyChunk"](Scanner([rows_body(bodies.MAX_CHUNK_ROWS)])).revlog) == 10_000
    assert len(bodies.apply_chunk_message(sync_request("applyChunk", rows_body(10_000))).revlog) == 10_000
    with pytest.raises(BadRequest, match="more than 10000 rows"):
        bodies.READERS["applyChunk"](Scanner([rows_body(10_001)]))
    with pytest.raises(BadRequest, match="more than 10000 rows"):
        bodies.apply_chunk_message(sync_request("applyChunk", rows_body(10_001)))
    assert len(bodies.READERS["applyGraves"](Scanner([graves_body(100_000)])).cards) == 100_000
    with pytest.raises(BadRequest, match="more than 100000 graves"):
        bodies.READERS["applyGraves"](Scanner([graves_body(100_001)]))
    with pytest.raises(BadRequest, match="more than 100000 graves"):
        bodies.apply_graves_message(sync_request("applyGraves", graves_body(100_001)))


def test_a_known_key_given_twice_is_refused() -> None:
    with pytest.raises(BadRequest, match="given twice"):
        bodies.read_start(Scanner([b'{"minUsn":1,"lnewer":true,"minUsn":2}']))


def test_applychanges_budget() -> None:
    conf = b'{"changes":{"models":[],"decks":[[],[]],"tags":[],"conf":{"k":[' + b",".join(
        [b'{"a":0}'] * 400_000) + b"]}}}"
    with pytest.raises(BadRequest, match="applyChanges: more than"):
        bodies.read_apply_changes(Scanner(pieces(conf, 0)))


# --- refused early, in bounded memory ------------------------------------------------------------

def endless(prefix: bytes, unit: bytes, pulled: list[int]) -> Iterator[bytes]:
    block = unit * (128 * 1024 // len(unit))
    pulled[0] += len(prefix)
    yield prefix
    for _ in range(280 * MiB // len(block)):  # what a 280 MB bomb would go on with
        pulled[0] += len(block)
        yield block


BOMBS = [
    ("start", b'{"minUsn":0,"lnewer":false,"graves":{"cards":[', b"[[]],"),
    ("start", b'{"minUsn":0,"lnewer":false,"graves":{"cards":', b"["),
    ("start", b'{"minUsn":0,"lnewer":false,"', b"a"),
    ("start", b'{"minUsn":0,"lnewer":false,"graves":null,"x":[', b"[[]],"),
    ("applyGraves", b'{"chunk":{"cards":[', b"[[]],"),
    ("applyChanges", b'{"changes":{"models":[],"decks":[[],[]],"tags":[],"conf":{"k":[', b'{"a":0},'),
    ("applyChanges", b'{"changes":{"models":[', b"[],"),
    ("applyChanges", b'{"changes":{"tags":[', b'"t",'),
    ("applyChunk", b'{"chunk":{"revlog":[', b"[[]],"),
    ("applyChunk", b'{"chunk":{"cards":[', b"[0],"),
    ("applyChunk", b'{"chunk":{"notes":[[1,"g",2,3,', b"["),
    ("applyChunk", b'{"chunk":{"notes":[', b"[1,2],"),
]


@pytest.mark.parametrize(("method", "prefix", "unit"), BOMBS)
def test_bombs_are_refused_after_a_bounded_read_in_bounded_memory(method: str, prefix: bytes, unit: bytes) -> None:
    pulled = [0]
    tracemalloc.start()
    try:
        with pytest.raises(BadRequest):
            bodies.READERS[method](Scanner(endless(prefix, unit, pulled)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the applyChanges budget (64 MiB of objects) is the largest allowance
    assert pulled[0] < 8 * MiB, pulled[0]
    assert peak < 80 * MiB, peak


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [compressor.compress(b'{"minUsn":0,"lnewer":false,"graves":{"cards":[')]
    block = b"[[]]," * (MiB // 5)
    parts += [compressor.compress(block) for _ in range(280)]
    parts += [compressor.compress(b'[[]]],"notes":[],"decks":[]}}'), compressor.flush()]
    return b"".join(parts)


def raw(data: bytes) -> Any:
    import io
    return io.BytesIO(data)


def test_read_body_refuses_a_280_mb_bomb_after_a_few_hundred_kb(zstd_bomb: bytes) -> None:
    assert len(zstd_bomb) < 64 * 1024
    started = time.perf_counter()
    read = bodies.read_body("start", raw(zstd_bomb), 300 * MiB)
    assert time.perf_counter() - started < 1
    assert read.error is not None and read.message is None and read.whole is None
    assert read.size < MiB


def test_read_body_small_whole_large_streamed_and_errors() -> None:
    small = orjson.dumps(REAL["applyChunk"][0])
    read = bodies.read_body("applyChunk", raw(zstandard.ZstdCompressor().compress(small)), 300 * MiB)
    assert read.whole == small and read.size == len(small)
    padded = b"{" + b" " * (bodies.STREAM_ABOVE_BYTES + 10) + small[1:]
    read = bodies.read_body("applyChunk", raw(zstandard.ZstdCompressor().compress(padded)), 300 * MiB)
    assert read.whole is None and read.error is None and read.size == len(padded)
    assert repr(read.message) == repr(chunks.parse_apply_chunk(orjson.loads(small)))
    with pytest.raises(BadRequest, match="not zstd"):
        bodies.read_body("applyChunk", raw(b"not zstd at all"), 300 * MiB)
    with pytest.raises(BadRequest, match="truncated"):
        bodies.read_body("applyChunk", raw(zstandard.ZstdCompressor().compress(padded)[:-10]), 300 * MiB)
    with pytest.raises(PayloadTooLarge):
        limit = bodies.STREAM_ABOVE_BYTES + 100
        bodies.read_body("applyChunk", raw(zstandard.ZstdCompressor().compress(padded)), limit)


def test_read_small_body() -> None:
    small = zstandard.ZstdCompressor().compress(b'{"a":1}')
    assert bodies.read_small_body(raw(small)) == b'{"a":1}'
    big = zstandard.ZstdCompressor().compress(b" " * (bodies.STREAM_ABOVE_BYTES + 1))
    assert bodies.read_small_body(raw(big)) is None
    with pytest.raises(BadRequest):
        bodies.read_small_body(raw(b"\x28\xb5\x2f\xfd garbage"))


def read_request(method: str, read: bodies.ReadBody) -> SyncRequest:
    base = sync_request(method, b"")
    return bodies.ReadSyncRequest(**{**base.__dict__, "read": read})


def test_messages_for_the_handlers() -> None:
    graves = Graves(cards=[1], notes=[], decks=[])
    assert bodies.apply_graves_message(read_request("applyGraves", bodies.ReadBody(9, message=graves))) is graves
    with pytest.raises(BadRequest, match="chunk must be an object"):
        bodies.apply_graves_message(read_request("applyGraves", bodies.ReadBody(9, error=BadRequest(
            "chunk must be an object"))))
    small = orjson.dumps(REAL["start"][1])
    request = read_request("start", bodies.ReadBody(len(small), whole=small))
    request.body.write(small)
    assert bodies.start_message(request) == start.parse_start(orjson.loads(small))
    assert bodies.start_message(sync_request("start", small)) == start.parse_start(orjson.loads(small))
