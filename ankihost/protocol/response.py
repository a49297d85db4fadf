"""What a sync or media handler returns, before the web layer frames it for the client.

A handler returns a `Reply` holding the uncompressed payload, either in memory or in a file
(streamed and, if `delete_after`, removed once sent). The web layer compresses it as one zstd
frame with `anki-original-size` for protocol 11, or sends it raw to legacy clients. A reply
may carry a `follow_up`: work the web layer runs once the reply is sent, under the same
user's lock, like a step of its own (used to prepare the next `chunk` while the client is
still busy with this one, and to write an `applyChunk` after answering it), on the event loop
if `follow_up_inline`, else in a worker thread. A file reply may also carry `before_send`:
work on the file that must not hold the user's lock, run before the reply is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Reply:
    data: bytes = b""
    path: Path | None = None
    delete_after: bool = False
    follow_up: Callable[[], None] | None = None
    # run the follow-up on the event loop (bounded work) rather than in a worker thread
    follow_up_inline: bool = False
    # work that completes the reply's file once the user's lock is released, in a worker
    # thread, before anything is sent (a legacy download's schema-11 conversion)
    before_send: Callable[[], None] | None = None
    # a 200 that refuses what was asked, with a message the client shows (a full upload over
    # quota, too large, not a collection): what kind of refusal, and why, for the request log
    refused: str | None = None
    reason: str = ""

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None else len(self.data)


def json_reply(
    value: Any, follow_up: Callable[[], None] | None = None, follow_up_inline: bool = False
) -> Reply:
    return Reply(orjson.dumps(value), follow_up=follow_up, follow_up_inline=follow_up_inline)


def text_reply(text: str) -> Reply:
    return Reply(text.encode("utf-8"))


def refusal_reply(text: str, refused: str, reason: str) -> Reply:
    """A 200 whose text the client shows as the error; `refused` and `reason` go to the log."""
    return Reply(text.encode("utf-8"), refused=refused, reason=reason)


def file_reply(
    path: Path, *, delete_after: bool, before_send: Callable[[], None] | None = None
) -> Reply:
    return Reply(path=path, delete_after=delete_after, before_send=before_send)
