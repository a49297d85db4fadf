"""Reading and writing the values of legacy (schema-11) JSON objects, shared by the converters.

Owns the typed readers for incoming keys (strict, lenient and "num-or-str" forms, spec 02 §4),
float32 rounding and its shortest JSON form, and the `other` catch-all for unknown keys (§5.4).
It knows nothing about tables: `notetypes.py`, `decks.py` and `deck_configs.py` do the SQL.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ankihost.errors import BadRequest

T = TypeVar("T")

I32 = (-(2**31), 2**31 - 1)
I64 = (-(2**63), 2**63 - 1)
U8 = (0, 2**8 - 1)
U16 = (0, 2**16 - 1)
U32 = (0, 2**32 - 1)

_MISSING = object()


class Invalid(BadRequest):
    """A value of the wrong type or range; lenient readers turn it into a default."""


def field(
    obj: Mapping[str, Any], key: str, read: Callable[[Any, str], T], default: Any = _MISSING
) -> T:
    """`read(obj[key])`; a missing key is an error unless a default is given."""
    if key not in obj:
        if default is _MISSING:
            raise BadRequest(f"missing key {key!r}")
        return default  # type: ignore[no-any-return]
    return read(obj[key], key)


def lenient(read: Callable[[Any, str], T], default: T) -> Callable[[Any, str], T]:
    """A reader that yields `default` instead of failing on a malformed value."""

    def read_or_default(value: Any, key: str) -> T:
        try:
            return read(value, key)
        except Invalid:
            return default

    return read_or_default


def integer(bounds: tuple[int, int]) -> Callable[[Any, str], int]:
    """A JSON integer within `bounds` (floats and bools are rejected)."""

    def read(value: Any, key: str) -> int:
        if type(value) is not int or not bounds[0] <= value <= bounds[1]:
            raise Invalid(f"{key!r}: expected an integer in {bounds}, got {value!r}")
        return value

    return read


def num_or_str(value: Any, key: str) -> int:
    """An i64 given as a JSON integer or as a string holding one (ids, `mod`, `conf`)."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise Invalid(f"{key!r}: not a number: {value!r}") from None
    return integer(I64)(value, key)


def num_or_str_i32(value: Any, key: str) -> int:
    number = num_or_str(value, key)
    return integer(I32)(number, key)


def optional(read: Callable[[Any, str], T]) -> Callable[[Any, str], T | None]:
    """`null` or a value accepted by `read`."""

    def read_optional(value: Any, key: str) -> T | None:
        return None if value is None else read(value, key)

    return read_optional


def boolean(value: Any, key: str) -> bool:
    if type(value) is not bool:
        raise Invalid(f"{key!r}: expected a boolean, got {value!r}")
    return value


def bool_ish(value: Any, key: str) -> bool:
    """true/false, 0/1 (also 0.0/1.0), "true"/"false" in any case, or a string holding 0/1."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return text == "true"
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"{key!r}: not a boolean: {value!r}") from None
    if type(value) in (bool, int, float) and value in (0, 1):
        return bool(value)
    raise Invalid(f"{key!r}: not a boolean: {value!r}")


def string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{key!r}: expected a string, got {value!r}")
    return value


def number(value: Any, key: str) -> float:
    """A JSON number read into a float32 slot."""
    if type(value) not in (int, float):
        raise Invalid(f"{key!r}: expected a number, got {value!r}")
    try:
        return f32(float(value))
    except OverflowError:  # an integer too large for a double: as far out of range as infinity
        return math.inf if value > 0 else -math.inf


def number_list(value: Any, key: str) -> list[float]:
    if not isinstance(value, list):
        raise Invalid(f"{key!r}: expected an array, got {value!r}")
    return [number(item, key) for item in value]


def json_array(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(f"{key!r}: expected an array, got {value!r}")
    return value


def json_object(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{key!r}: expected an object, got {value!r}")
    return value


def f32(value: float) -> float:
    """`value` rounded to the nearest IEEE single, as Rust's `as f32` does."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def f32_to_json(value: float) -> float | None:
    """The shortest decimal that reads back as the same float32 (0.9, not 0.8999999761581421).

    Non-finite values become None (`null`), as the reference's serializer writes them.
    """
    if not math.isfinite(value):
        return None
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if f32(candidate) == value:
            return candidate
    return value


def f32_list_to_json(values: Iterable[float]) -> list[float | None]:
    return [f32_to_json(v) for v in values]


def f32_to_int(value: float, bounds: tuple[int, int]) -> int:
    """Rust's saturating float-to-int `as` cast: truncate, NaN → 0, clamp to `bounds`."""
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return bounds[0] if value < 0 else bounds[1]
    return max(bounds[0], min(bounds[1], int(value)))


def wrap(value: int, bits: int, signed: bool) -> int:
    """Rust's integer `as` cast between widths (two's-complement wrap)."""
    value &= (1 << bits) - 1
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def unknown_keys(obj: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    known_set = set(known)
    return {k: v for k, v in obj.items() if k not in known_set}


def encode_other(other: Mapping[str, Any]) -> bytes:
    """The `other` (field 255) bytes: compact UTF-8 JSON of the unknown keys, empty if none."""
    if not other:
        return b""
    try:
        text = json.dumps(other, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise BadRequest(f"unknown keys hold a non-finite number: {exc}") from None
    return text.encode("utf-8")


def decode_other(blob: bytes, reserved: Iterable[str] = ()) -> dict[str, Any]:
    """The unknown keys stored in `other`, without any key the converter emits itself."""
    if not blob:
        return {}
    try:
        other = json.loads(bytes(blob).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}  # like the reference: a corrupt catch-all is dropped, not fatal
    if not isinstance(other, dict):
        return {}
    reserved_set = set(reserved)
    return {k: v for k, v in other.items() if k not in reserved_set}


def merge_other(obj: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Add the unknown keys to an outgoing object without overwriting a key it already has."""
    for key, value in other.items():
        obj.setdefault(key, value)
