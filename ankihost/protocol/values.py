"""The one set of readers for the fields of JSON request bodies (collection and media sync).

Lenient where the reference's decoders are (spec 02 §4: string ids, truncated floats, 0/1
booleans), and raising `BadRequest` for anything else, so a malformed body fails with 400
before any state changes.
"""

from __future__ import annotations

from typing import Any

from ankihost.errors import BadRequest


def field(obj: dict[str, Any], key: str) -> Any:
    """A required key of a request object."""
    if not isinstance(obj, dict) or key not in obj:
        raise BadRequest(f"missing key {key!r}")
    return obj[key]


def as_int(value: Any, what: str = "value") -> int:
    """A plain integer (no floats, no bools)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BadRequest(f"{what}: expected an integer, got {value!r}")


def all_plain_ints(values: list[Any]) -> bool:
    """Whether every value is exactly an `int` (not a bool, float or subclass).

    The cheap whole-row check of the chunk parsers: such a row passes `as_int` and
    `as_truncated_int` unchanged, so the per-field readers are needed only when it fails."""
    for value in values:  # a plain loop: cheaper than all() over a generator
        if type(value) is not int:
            return False
    return True


def int_in_range(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    """A required integer field within [low, high]."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{key!r} must be an integer in [{low}, {high}], got {value!r:.50}")
    return value


def as_id(value: Any, what: str = "id") -> int:
    """An integer or a decimal string holding one (old clients send string ids)."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise BadRequest(f"{what}: not a number: {value!r}") from None
    return as_int(value, what)


def as_truncated_int(value: Any, what: str = "value") -> int:
    """An integer, or a float truncated toward zero."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise BadRequest(f"{what}: not a finite number")
        return int(value)
    return as_int(value, what)


def as_bool(value: Any, what: str = "flag") -> bool:
    """true/false, 0/1 (also 0.0/1.0) or the same spelled as a string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        try:
            value = float(lowered)
        except ValueError:
            raise BadRequest(f"{what}: not a boolean: {value!r}") from None
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise BadRequest(f"{what}: not a boolean: {value!r}")


def as_list(value: Any, what: str = "list") -> list[Any]:
    if isinstance(value, list):
        return value
    raise BadRequest(f"{what}: expected a list")


def optional_list(obj: dict[str, Any], key: str) -> list[Any]:
    """A list that may be absent or null (chunk containers)."""
    value = obj.get(key)
    return [] if value is None else as_list(value, key)


def as_str(value: Any, what: str = "text") -> str:
    if isinstance(value, str):
        return value
    raise BadRequest(f"{what}: expected a string")
