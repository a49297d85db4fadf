"""The decoded request every handler receives, whatever envelope it came in, and the row that
says how a method's handler runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import orjson

from ankihost.errors import BadRequest
from ankihost.protocol.bounded_json import loads_within
from ankihost.protocol.response import Reply


@dataclass
class SyncRequest:
    method: str
    sync_version: int
    host_key: str
    client_version: str
    session_key: str
    # The decompressed payload: a seekable binary file (spooled to disk when large).
    body: IO[bytes]
    body_size: int

    def __enter__(self) -> SyncRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.body.close()

    @property
    def is_legacy(self) -> bool:
        return self.sync_version < 11

    def read_bytes(self) -> bytes:
        self.body.seek(0)
        return self.body.read()

    def json(self) -> Any:
        """The payload as JSON; `{}` for an empty body, 400 for anything unparsable."""
        data = self.read_bytes()
        if not data.strip():
            return {}
        try:
            return loads_within(data)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None

    def json_object(self) -> dict[str, Any]:
        value = self.json()
        if not isinstance(value, dict):
            raise BadRequest("JSON body must be an object")
        return value


@dataclass(frozen=True)
class Step:
    """One method of `/sync/` or `/msync/`: its handler `run(user_state, request)`; when it may
    run on the event loop (`inline(user_state, request)`, asked under the user's lock; None:
    always in a worker thread); and whether its body is only a few small fields."""

    run: Callable[[Any, SyncRequest], Reply]
    inline: Callable[[Any, SyncRequest], bool] | None = None
    small_body: bool = False
