"""Reading one JSON document from decompressed pieces, as a reader for a known shape asks.

`Scanner` hands out the document part by part (an object's keys, an array's items, a scalar,
a flat row, or a free-form value charged to a `Budget`), so a reader refuses the first element
that does not fit after reading little more than it, and nothing is built that was not asked
for. Every scalar and every flat row is decoded by orjson itself, so values are exactly those
of `orjson.loads` over the whole body. It knows no sync message; `sync/bodies.py` does.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from ankihost.errors import BadRequest

# Arrays and objects nest at most this deep (the real client's bodies: 8 at most).
MAX_DEPTH = 64
# A number or true/false/null longer than this is refused before it is read whole.
MAX_WORD_BYTES = 4096
# Rows and free-form values shorter than this are found by regex and decoded by one orjson
# call each; longer ones are read token by token.
FAST_ROW_BYTES = 64 * 1024
FAST_VALUE_BYTES = 64 * 1024
# A string's closing quote is looked for with `bytes.find` this many times (and this many
# backslashes before it); a string with more escaped quotes is matched by regex instead.
FIND_QUOTE_TRIES = 16
# What `Budget` charges for values built from the document (CPython's sizes, rounded up).
DICT_BYTES, DICT_ENTRY_BYTES = 64, 48
LIST_BYTES, LIST_ITEM_BYTES = 56, 8
SCALAR_BYTES = 32
# A value decoded whole is charged its length, this per array or object, and this per
# item or member (a `,` or `:`), which is more than the token-by-token charges come to.
WHOLE_CONTAINER_BYTES, WHOLE_ITEM_BYTES = 64, 96

_LBRACE, _RBRACE, _LBRACKET, _RBRACKET, _QUOTE, _COLON, _COMMA, _BACKSLASH = b'{}[]":,\\'
_OPENERS = frozenset((_LBRACE, _LBRACKET))
END = -1  # what `peek` returns at the end of the document

_WS = re.compile(rb"[ \t\n\r]*")
# A complete string token; no match means the buffer ends inside the string.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
# Numbers, true, false, null (and anything else orjson must then refuse).
_WORD = re.compile(rb"[-+.0-9A-Za-z]++")
# One or more strings, numbers, true, false or null, separated by commas.
_SCALAR = rb'(?:"(?:[^"\\]++|\\.)*+"|[-+.0-9A-Za-z]++)'
_SCALARS = re.compile(_SCALAR + rb"(?:[ \t\n\r]*,[ \t\n\r]*" + _SCALAR + rb")*+", re.DOTALL)
# Everything up to the next bracket (or to a string that does not end in the buffer).
_TO_BRACKET = re.compile(rb'(?:[^\[\]{}"]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)


# One or more flat arrays (no array or object inside), separated by commas; orjson checks
# what this matched, and the window it is matched in bounds what that may cost.
_ROW = rb'\[[^\[\]{}"]*+(?:"(?:[^"\\]++|\\.)*+"[^\[\]{}"]*+)*+\]'
_FLAT_ROWS = re.compile(_ROW + rb"(?:[ \t\n\r]*,[ \t\n\r]*" + _ROW + rb")*+", re.DOTALL)


class Budget:
    """A cap on the memory of values built from one document (an estimate in bytes)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.remaining, self.what = limit, limit, what

    def charge(self, size: int) -> None:
        self.remaining -= size
        if self.remaining < 0:
            raise BadRequest(f"{self.what}: more than {self.limit} bytes of parsed values")


# Bodies up to this size are parsed whole without a look at their cost: ~40 bytes of objects
# per byte at worst, so 2.6 MB and a few ms.
UNCHECKED_BYTES = 64 * 1024
# What `parse_cost` counts: orjson first parses into a document of its own (up to ~16 bytes
# per input byte), then builds the objects (CPython's sizes with their GC headers, rounded up).
PARSE_BYTES_PER_BYTE = 16
PARSE_CONTAINER_BYTES, PARSE_ITEM_BYTES, PARSE_STRING_BYTES = 96, 96, 64
# What a body parsed whole may cost (`loads_within`): a real 26 KB chunk comes to ~0.8 MB,
# 256 KiB of the costliest shape to ~18 MB (~25 ms of parsing); 3 MiB of it would be ~140 MB.
MAX_WHOLE_PARSE_BYTES = 32 << 20


def parse_cost(data: bytes) -> int:
    """An upper estimate of the memory `orjson.loads(data)` takes at its peak, from counts of
    brackets, separators and quotes (a few passes of `bytes.count`: ~1 ms per MB)."""
    containers = data.count(b"[") + data.count(b"{")
    items = data.count(b",") + data.count(b":") + 1
    strings = data.count(b'"') // 2
    return (len(data) * PARSE_BYTES_PER_BYTE + containers * PARSE_CONTAINER_BYTES
            + items * PARSE_ITEM_BYTES + strings * PARSE_STRING_BYTES)


def loads_within(data: bytes, budget: int = MAX_WHOLE_PARSE_BYTES) -> Any:
    """`orjson.loads(data)`, refused with 400 first if what it would build may exceed
    `budget` bytes (looked at only for bodies over UNCHECKED_BYTES)."""
    if len(data) > UNCHECKED_BYTES and parse_cost(data) > budget:
        raise BadRequest(f"JSON body would take more than {budget} bytes once parsed")
    return orjson.loads(data)


def invalid(reason: str) -> BadRequest:
    return BadRequest(f"invalid JSON body: {reason}")


class Scanner:
    """One JSON document read from `pieces` (an iterator of bytes), as the caller asks.

    Keeps only the bytes not yet read (at least doubling the buffer when a token does not
    fit yet, so a long token costs linear time). `bytes_in` counts the bytes taken from
    `pieces`. Errors from `pieces` pass through unchanged."""

    def __init__(self, pieces: Iterable[bytes], max_depth: int = MAX_DEPTH) -> None:
        self._pieces: Iterator[bytes] = iter(pieces)
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.depth = 0
        self.max_depth = max_depth
        self.bytes_in = 0

    # --- the buffer ------------------------------------------------------------------

    def _more(self, at_least: int = 1) -> bool:
        """Append pieces: at least `at_least` bytes and at least as many as are left."""
        left = memoryview(self._buf)[self._pos :]
        want = max(at_least, len(left))
        parts: list[bytes | memoryview] = [left]
        got = 0
        while got < want:
            piece = next(self._pieces, None)
            if piece is None:
                self._eof = True
                break
            parts.append(piece)
            got += len(piece)
        if got:
            self._buf, self._pos = b"".join(parts), 0
            self.bytes_in += got
        return got > 0

    def _available(self) -> int:
        return len(self._buf) - self._pos

    def _ensure(self, size: int) -> None:
        while self._available() < size and not self._eof:
            self._more(size - self._available())

    def peek(self) -> int:
        """The next byte after whitespace, or END."""
        while True:
            self._pos = _WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more():
                return END

    def next_is(self, char: bytes) -> bool:
        """Whether the next thing (after whitespace) starts with `char`, e.g. b"[" or b"{"."""
        return self.peek() == char[0]

    def _expect(self, byte: int, what: str) -> None:
        if self.peek() != byte:
            raise invalid(f"expected {what}")
        self._pos += 1

    def end(self) -> None:
        """After the document: only whitespace up to the end of the body."""
        if self.peek() != END:
            raise invalid("unexpected content after the document")

    # --- tokens ----------------------------------------------------------------------

    def _decode(self, end: int) -> Any:
        try:
            value = orjson.loads(memoryview(self._buf)[self._pos : end])
        except orjson.JSONDecodeError as exc:
            raise invalid(str(exc)) from None
        self._pos = end
        return value

    def _string(self, max_bytes: int | None) -> str:
        """The string token at the current position (a `"` is there)."""
        scanned = 1  # from the token's start, bytes known to hold no closing quote
        while (end := self._string_end(self._pos + scanned)) is None:
            scanned = self._available()
            if max_bytes is not None and scanned > max_bytes:
                raise BadRequest(f"a string longer than {max_bytes} bytes")
            if not self._more():
                raise invalid("unterminated string")
        value: str = self._decode(end)
        return value

    def _string_end(self, at: int) -> int | None:
        """Where the string token at the current position ends (after its closing quote:
        the first `"` after an even run of backslashes), looking from `at`; None if it does
        not end in the buffer. `find` is fast; a string full of escaped quotes goes to the
        regex."""
        buf = self._buf
        for _ in range(FIND_QUOTE_TRIES):
            quote = buf.find(b'"', at)
            if quote < 0:
                return None
            escapes = self._backslashes_before(quote)
            if escapes is None:
                break
            if escapes % 2 == 0:
                return quote + 1
            at = quote + 1
        match = _STRING.match(buf, self._pos)
        return None if match is None else match.end()

    def _backslashes_before(self, at: int) -> int | None:
        """How many backslashes stand right before `at` (None: FIND_QUOTE_TRIES or more).
        Stops at the string's opening quote at the latest."""
        count = 0
        while self._buf[at - 1 - count] == _BACKSLASH:
            count += 1
            if count == FIND_QUOTE_TRIES:
                return None
        return count

    def _word(self) -> Any:
        """A number, true, false or null at the current position."""
        while True:
            match = _WORD.match(self._buf, self._pos)
            if match is None:
                raise invalid("expected a value")
            if match.end() - self._pos > MAX_WORD_BYTES:
                raise BadRequest(f"a number longer than {MAX_WORD_BYTES} bytes")
            if match.end() < len(self._buf) or self._eof:
                return self._decode(match.end())
            self._more()

    def scalar(self, what: str, max_bytes: int | None = None) -> Any:
        """A string, number, true, false or null; an array or object here is refused."""
        byte = self.peek()
        if byte == _QUOTE:
            return self._string(max_bytes)
        if byte in _OPENERS:
            raise BadRequest(f"{what}: expected a single value, not an array or object")
        return self._word()

    # --- containers ------------------------------------------------------------------

    def _open(self, byte: int, what: str) -> None:
        self._expect(byte, what)
        self.depth += 1
        if self.depth > self.max_depth:
            raise BadRequest(f"JSON body nested deeper than {self.max_depth}")

    def _close_or_next(self, closer: int) -> bool:
        """After an item: True at `,` (another follows), False at the closer."""
        byte = self.peek()
        self._pos += 1
        if byte == _COMMA:
            return True
        if byte == closer:
            self.depth -= 1
            return False
        raise invalid(f"expected ',' or '{chr(closer)}'")

    def members(self, keys: Budget) -> Iterator[str]:
        """An object's keys, each charged to `keys`; the caller reads each key's value."""
        self._open(_LBRACE, "an object")
        if self.peek() == _RBRACE:
            self._pos += 1
            self.depth -= 1
            return
        while True:
            if self.peek() != _QUOTE:
                raise invalid("expected an object key")
            key = self._string(max(keys.remaining, 0))
            keys.charge(sys.getsizeof(key) + DICT_ENTRY_BYTES)
            self._expect(_COLON, "':'")
            yield key
            if not self._close_or_next(_RBRACE):
                return

    def items(self) -> Iterator[None]:
        """An array's positions; the caller reads one value at each."""
        self._open(_LBRACKET, "an array")
        if self.peek() == _RBRACKET:
            self._pos += 1
            self.depth -= 1
            return
        while True:
            yield None
            if not self._close_or_next(_RBRACKET):
                return

    def value(self, budget: Budget) -> Any:
        """Any JSON value, built, with everything it holds charged to `budget`."""
        byte = self.peek()
        if byte in _OPENERS and (end := self._short_value_end()) is not None:
            commas = self._buf.count(b",", self._pos, end) + self._buf.count(b":", self._pos, end)
            openers = self._buf.count(b"[", self._pos, end) + self._buf.count(b"{", self._pos, end)
            budget.charge(end - self._pos + openers * WHOLE_CONTAINER_BYTES + (commas + 1) * WHOLE_ITEM_BYTES)
            return self._decode(end)
        if byte == _LBRACE:
            budget.charge(DICT_BYTES)
            obj: dict[str, Any] = {}
            for key in self.members(budget):
                obj[key] = self.value(budget)
            return obj
        if byte == _LBRACKET:
            budget.charge(LIST_BYTES)
            items: list[Any] = []
            for _ in self.items():
                budget.charge(LIST_ITEM_BYTES)
                items.append(self.value(budget))
            return items
        return self.charged_scalar(budget, "value")

    def charged_scalar(self, budget: Budget, what: str) -> Any:
        """`scalar`, charged to `budget` (a string longer than what is left is refused early)."""
        value = self.scalar(what, max(budget.remaining, 0))
        budget.charge(sys.getsizeof(value) if isinstance(value, str) else SCALAR_BYTES)
        return value

    def _short_value_end(self) -> int | None:
        """Where the array or object at the current position ends, if that is within
        FAST_VALUE_BYTES; None if not (or if it may be too deep: then it is read by token)."""
        self._ensure(FAST_VALUE_BYTES)
        stop = min(len(self._buf), self._pos + FAST_VALUE_BYTES)
        depth, at = 0, self._pos
        while True:
            at = _TO_BRACKET.match(self._buf, at, stop).end()  # type: ignore[union-attr]
            if at >= stop or self._buf[at] == _QUOTE:
                return None
            depth += 1 if self._buf[at] in _OPENERS else -1
            if depth == 0:
                return at + 1
            if self.depth + depth > self.max_depth:
                return None
            at += 1

    def rows(self, arity: int, loose: frozenset[int], budget: Budget, what: str) -> Iterator[list[Any]]:
        """The items of an array of rows: arrays of at most `arity` values, arrays or objects
        only at `loose` positions (built and charged to `budget`). Runs of short flat rows
        are decoded by one orjson call each."""
        if self.depth + 1 >= self.max_depth:
            raise BadRequest(f"JSON body nested deeper than {self.max_depth}")
        for _ in self.items():
            if self.peek() != _LBRACKET:
                raise BadRequest(f"{what}: expected a list")
            self._ensure(FAST_ROW_BYTES)
            stop = min(len(self._buf), self._pos + FAST_ROW_BYTES)
            match = _FLAT_ROWS.match(self._buf, self._pos, stop)
            if match is None:
                yield self._slow_row(arity, loose, budget, what)
                continue
            yield from self._decode_run(match.end())

    def scalars(self, what: str) -> Iterator[Any]:
        """The items of an array of strings, numbers, true, false or null (an array or
        object among them is refused). Runs of short items are decoded by one orjson call."""
        for _ in self.items():
            if self.peek() in _OPENERS:
                raise BadRequest(f"{what}: expected a single value, not an array or object")
            self._ensure(FAST_ROW_BYTES)
            stop = min(len(self._buf), self._pos + FAST_ROW_BYTES)
            match = _SCALARS.match(self._buf, self._pos, stop)
            cut = stop < len(self._buf) or not self._eof  # a word may go on past `stop`
            if match is None or (match.end() == stop and cut):
                yield self.scalar(what)
                continue
            yield from self._decode_run(match.end())

    def _decode_run(self, end: int) -> list[Any]:
        """The comma-separated values from here to `end`, as a list."""
        try:
            values: list[Any] = orjson.loads(b"[" + self._buf[self._pos : end] + b"]")
        except orjson.JSONDecodeError as exc:
            raise invalid(str(exc)) from None
        self._pos = end
        return values

    def _slow_row(self, arity: int, loose: frozenset[int], budget: Budget, what: str) -> list[Any]:
        row: list[Any] = []
        for _ in self.items():
            if len(row) == arity:
                raise BadRequest(f"{what}: more than {arity} values")
            if self.peek() in _OPENERS and len(row) in loose:
                row.append(self.value(budget))
            else:
                row.append(self.scalar(what))
        return row

