"""What a sync or media handler returns, before the web layer frames it for the client.

A handler returns a `Reply` holding the uncompressed payload, either in memory or in a file
(streamed and, if `delete_after`, removed once sent). The web layer compresses it as one zstd
frame with `anki-original-size` for protocol 11, or sends it raw to legacy clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Reply:
    data: bytes = b""
    path: Path | None = None
    delete_after: bool = False

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None else len(self.data)


def json_reply(value: Any) -> Reply:
    return Reply(orjson.dumps(value))


def text_reply(text: str) -> Reply:
    return Reply(text.encode("utf-8"))


def file_reply(path: Path, *, delete_after: bool) -> Reply:
    return Reply(path=path, delete_after=delete_after)
