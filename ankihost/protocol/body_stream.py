"""A zstd request body as a stream of decompressed pieces, for readers that parse as it comes.

`zstd_pieces` decompresses the body's one frame in bounded pieces, stopping at `limit`
decompressed bytes; its own errors come wrapped in `BodyUnreadable`, so a caller can tell
them from a reader's refusal of the content (`guarded_pieces` does the same for pieces
decoded elsewhere, such as a legacy gzip payload). `head` takes the first pieces of a body to see
whether it is small.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import IO, cast

import zstandard

from ankihost.errors import BadRequest, PayloadTooLarge, SyncError
from ankihost.protocol.compression import (
    DECOMPRESS_PIECE_BYTES,
    MAX_WINDOW_BYTES,
    READ_PIECE_BYTES,
    first_frame_length,
)


class BodyUnreadable(Exception):
    """Decompressing the body failed (not zstd, truncated, over the limit): `error` says how."""

    def __init__(self, error: SyncError) -> None:
        super().__init__(error.reason)
        self.error = error


def zstd_pieces(
    raw: IO[bytes], limit: int
) -> Generator[bytes, None, None]:
    """The decompressed pieces of the first zstd frame of `raw` (checked whole first)."""
    try:
        frame = _FirstBytes(raw, first_frame_length(raw))
    except BadRequest as exc:
        raise BodyUnreadable(exc) from None
    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
    size = 0
    reader = cast(IO[bytes], frame)
    try:
        for piece in decompressor.read_to_iter(reader, read_size=READ_PIECE_BYTES, write_size=DECOMPRESS_PIECE_BYTES):
            size += len(piece)
            if size > limit:
                raise BodyUnreadable(PayloadTooLarge(f"decompressed body exceeds {limit} bytes"))
            yield piece
    except zstandard.ZstdError as exc:
        raise BodyUnreadable(BadRequest(f"invalid zstd body: {exc}")) from None


class _FirstBytes:
    """A reader over the first `length` bytes of a file, from its start."""

    def __init__(self, f: IO[bytes], length: int) -> None:
        f.seek(0)
        self._f, self._left = f, length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        return data


def guarded_pieces(pieces: Iterator[bytes]) -> Generator[bytes, None, None]:
    """`pieces` (of a body decoded some other way: a legacy gzip payload) with the errors
    of their decoding wrapped in `BodyUnreadable`, as `zstd_pieces` wraps its own."""
    try:
        yield from pieces
    except SyncError as exc:
        raise BodyUnreadable(exc) from None


def head(pieces: Iterator[bytes], limit: int) -> tuple[bytes, Iterator[bytes] | None]:
    """The whole body and None if it is at most `limit` bytes; else its first pieces (more
    than `limit` bytes) and the iterator of the rest."""
    parts: list[bytes] = []
    size = 0
    for piece in pieces:
        parts.append(piece)
        size += len(piece)
        if size > limit:
            return b"".join(parts), pieces
    return b"".join(parts), None
