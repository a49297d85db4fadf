"""The decoded request every handler receives, whatever envelope it came in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from ankihost.errors import BadRequest


@dataclass
class SyncRequest:
    method: str
    sync_version: int
    host_key: str
    client_version: str
    session_key: str
    client_ip: str
    # The decompressed payload: a seekable binary file (spooled to disk when large).
    body: IO[bytes]
    body_size: int
    # Legacy GET /msync/begin passes the client version here instead of in the body.
    extra: dict[str, str] = field(default_factory=dict)

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
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None

    def json_object(self) -> dict[str, Any]:
        value = self.json()
        if not isinstance(value, dict):
            raise BadRequest("JSON body must be an object")
        return value
