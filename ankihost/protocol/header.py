"""The `anki-sync` request header of protocol 11 and the supported protocol versions."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ankihost.errors import BadRequest

HEADER_NAME = "anki-sync"
ORIGINAL_SIZE_HEADER = "anki-original-size"
MIN_SYNC_VERSION = 8
MAX_SYNC_VERSION = 11
# Legacy multipart requests carry no version; the official server assumes 10.
LEGACY_SYNC_VERSION = 10


@dataclass(frozen=True)
class SyncHeader:
    version: int
    host_key: str
    client_version: str
    session_key: str


def parse_header(value: str) -> SyncHeader:
    """Parse the header JSON; `v` is required, `k`/`c`/`s` default to "" (spec 01 D4)."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise BadRequest("bad sync header: not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("bad sync header: not an object")
    version = data.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadRequest("bad sync header: v must be an integer")
    if not MIN_SYNC_VERSION <= version <= MAX_SYNC_VERSION:
        raise BadRequest(f"unsupported sync version: {version}")
    fields = {name: data.get(name, "") for name in ("k", "c", "s")}
    if not all(isinstance(v, str) for v in fields.values()):
        raise BadRequest("bad sync header: k, c and s must be strings")
    return SyncHeader(version, fields["k"], fields["c"], fields["s"])
