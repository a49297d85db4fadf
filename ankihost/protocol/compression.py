"""zstd bodies as clients send and expect them, with limits on both sides of decompression.

Requests: one zstd frame, streamed without a content size. It is checked to be one whole
frame (a truncated body is a 400, not silently short data) and decompressed in bounded
pieces into a file, stopping at `limit` decompressed bytes. Responses: one frame, always.
"""

from __future__ import annotations

import struct
import threading
from typing import IO, cast

import zstandard

from ankihost.errors import BadRequest, PayloadTooLarge

MAX_WINDOW_BYTES = 1 << 27  # the client never uses --long; larger windows are refused
READ_PIECE_BYTES = 1 << 16
WRITE_PIECE_BYTES = 1 << 20
# Decompressed output comes in pieces of this size: small enough that the buffer for a tiny
# body costs nothing, large enough that a big upload needs few Python-level writes.
DECOMPRESS_PIECE_BYTES = 1 << 17
ZSTD_MAGIC = 0xFD2FB528
ZSTD_MAGIC_BYTES = struct.pack("<I", ZSTD_MAGIC)  # how every frame a client sends starts
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50


def first_frame_length(f: IO[bytes]) -> int:
    """The byte length of the first zstd frame in `f` (from offset 0), walking block headers.

    Raises BadRequest if `f` does not start with a complete zstd frame.
    """
    f.seek(0)
    header = f.read(6)
    if len(header) < 5 or struct.unpack_from("<I", header)[0] != ZSTD_MAGIC:
        raise BadRequest("body is not zstd-compressed")
    descriptor = header[4]
    fcs_code, single_segment = descriptor >> 6, (descriptor >> 5) & 1
    has_checksum, dict_code = (descriptor >> 2) & 1, descriptor & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_code]
    pos += (1 if single_segment else 0, 2, 4, 8)[fcs_code]
    while True:
        f.seek(pos)
        block = f.read(3)
        if len(block) < 3:
            raise BadRequest("zstd body is truncated")
        value = int.from_bytes(block, "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:
            raise BadRequest("zstd body has a reserved block type")
        pos += 3 + (1 if kind == 1 else size)
        if last:
            break
    end = pos + (4 if has_checksum else 0)
    f.seek(0, 2)
    if f.tell() < end:
        raise BadRequest("zstd body is truncated")
    return end


def decompress_into(source: IO[bytes], target: IO[bytes], limit: int) -> int:
    """Decompress the first frame of `source` into `target`; return the decompressed size.

    Raises BadRequest for anything that is not one complete zstd frame and PayloadTooLarge
    once more than `limit` bytes come out.
    """
    frame_end = first_frame_length(source)
    source.seek(0)
    written = 0
    try:
        frame = cast(IO[bytes], _Bounded(source, frame_end))
        pieces = _CONTEXTS.decompressor.read_to_iter(
            frame, read_size=READ_PIECE_BYTES, write_size=DECOMPRESS_PIECE_BYTES
        )
        for piece in pieces:
            written += len(piece)
            if written > limit:
                raise PayloadTooLarge(f"decompressed body exceeds {limit} bytes")
            target.write(piece)
    except zstandard.ZstdError as exc:
        raise BadRequest(f"invalid zstd body: {exc}") from None
    target.flush()
    return written


class _Bounded:
    """A reader over the first `length` bytes of a file."""

    def __init__(self, f: IO[bytes], length: int) -> None:
        self._f, self._left = f, length

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._left:
            size = self._left
        data = self._f.read(size)
        self._left -= len(data)
        return data


def compress(data: bytes) -> bytes:
    """One zstd frame with the content size, at the default level, as clients expect."""
    return _CONTEXTS.compressor.compress(data)


class _Contexts(threading.local):
    """One compressor and one decompressor per thread, reused: making a zstd context costs
    10-30 µs, far more than compressing the small bodies of most requests. Each operation
    starts by resetting the context, and a thread runs one operation at a time."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor()
        self.decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)


_CONTEXTS = _Contexts()
