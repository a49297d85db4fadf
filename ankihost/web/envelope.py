"""Reading request bodies and writing responses in the sync protocol's envelope.

`Envelope` is what the routes see of a request, whatever its protocol; `HeaderEnvelope` is
protocol 11's (the legacy ones are in `web/legacy.py`). Bodies are streamed: the compressed
bytes are spooled (memory up to 1 MiB, then disk) with a size cap, then decompressed in a
worker thread into a file. Replies are compressed as one zstd frame while they are sent, so a
large download never sits whole in memory; legacy replies are sent raw.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import AsyncIterator
from typing import IO

import anyio
import zstandard
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.protocol.compression import WRITE_PIECE_BYTES, ZSTD_MAGIC_BYTES, compress, decompress_into
from ankihost.protocol.header import ORIGINAL_SIZE_HEADER, SyncHeader
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply
from ankihost.sync import bodies

SPOOL_MEMORY_BYTES = 1 << 20
# Bodies and replies up to these sizes are handled on the event loop (cheaper than a
# thread hop); larger ones go to a worker thread so other users are never held up.
INLINE_COMPRESS_BYTES = 64 * 1024
INLINE_DECOMPRESS_BYTES = 16 * 1024
INLINE_DECOMPRESS_LIMIT = 1024 * 1024


def spooled() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)


async def read_raw_body(request: Request, limit: int) -> IO[bytes]:
    """The request body of a protocol-11 request as received, refused past `limit` bytes
    (declared or actual); a body that does not start as a zstd frame is refused (400) as soon
    as its first bytes arrive, not after all of it was received and stored."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds {limit}")
    raw: IO[bytes] = io.BytesIO()  # most bodies are small: no temp-file object for them
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raw.close()
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        if size > SPOOL_MEMORY_BYTES and isinstance(raw, io.BytesIO):
            raw = _on_disk(raw)
        raw.write(chunk)
        if size - len(chunk) < len(ZSTD_MAGIC_BYTES) <= size:
            _check_magic(raw)
    raw.seek(0)
    return raw


def _check_magic(raw: IO[bytes]) -> None:
    end = raw.tell()
    raw.seek(0)
    start = raw.read(len(ZSTD_MAGIC_BYTES))
    raw.seek(end)
    if start != ZSTD_MAGIC_BYTES:
        raw.close()
        raise BadRequest("body is not zstd-compressed")


def _on_disk(buffer: io.BytesIO) -> IO[bytes]:
    disk = tempfile.TemporaryFile()
    disk.write(buffer.getbuffer())
    buffer.close()
    return disk


async def decompress_body(raw: IO[bytes], target: IO[bytes], limit: int) -> int:
    """Decompress in a worker thread, or right here for a small body (cheaper than a hop;
    the output is still capped at `limit`).

    A small body is first decompressed here with its output capped at
    INLINE_DECOMPRESS_LIMIT; only if it turns out larger than that (and `limit` allows more)
    is it decompressed again, whole, in a worker thread."""
    try:
        if raw.seek(0, 2) <= INLINE_DECOMPRESS_BYTES:
            if limit <= INLINE_DECOMPRESS_LIMIT:
                return decompress_into(raw, target, limit)
            try:
                return decompress_into(raw, target, INLINE_DECOMPRESS_LIMIT)
            except PayloadTooLarge:
                target.seek(0)
                target.truncate()
        return await anyio.to_thread.run_sync(decompress_into, raw, target, limit)
    finally:
        raw.close()


class Envelope:
    """How one request carries its credentials and payload, and how its reply is framed.

    `HeaderEnvelope` is protocol 11 (the anki-sync header, a zstd body, zstd replies); the
    legacy envelopes of protocols 8–10 are in `web/legacy.py`. The routes call `receive`
    before they authenticate (a legacy request's host key is inside its body), then `decode`
    for the payload; the app calls `close` when the request ends.
    """

    version: int
    host_key: str = ""
    session_key: str = ""
    client_version: str = ""

    @property
    def compressed(self) -> bool:
        """Replies are one zstd frame with anki-original-size (else raw)."""
        return self.version >= 11

    async def receive(self, limit: int) -> None:
        """Read what must be read before authenticating (a legacy form: the body, capped
        by `limit` and MAX_SYNC_PAYLOAD_MEGS); nothing for protocol 11."""

    async def decode(self, method: str, limit: int, target: IO[bytes] | None = None) -> SyncRequest:
        """The payload (into `target`, else a spool); PayloadTooLarge past `limit` bytes."""
        raise NotImplementedError

    async def decode_checked(self, method: str, limit: int) -> SyncRequest:
        """`decode` for a method of `bodies.READERS`: a large body is read with its shape
        checked while it is decoded, in a worker thread (the whole body by default)."""
        return await self.decode(method, limit)

    @property
    def named_client(self) -> str:
        """The client's version as the request names it; "" when it names none."""
        return self.client_version

    def client_from_meta(self) -> None:
        """After `receive`, for `meta`: learn the client's version from the payload where the
        envelope does not carry it (the legacy form); nothing for protocol 11."""

    def close(self) -> None:
        """Release what `receive` kept."""

    def sync_request(self, method: str, body: IO[bytes], size: int) -> SyncRequest:
        body.seek(0)
        return SyncRequest(
            method=method, sync_version=self.version, host_key=self.host_key,
            client_version=self.client_version, session_key=self.session_key,
            body=body, body_size=size,
        )

    def read_request(self, method: str, read: bodies.ReadBody) -> SyncRequest:
        """The request for a body `decode_checked` read (held whole only when small)."""
        return bodies.ReadSyncRequest(
            method=method, sync_version=self.version, host_key=self.host_key,
            client_version=self.client_version, session_key=self.session_key,
            body=io.BytesIO(read.whole or b""), body_size=read.size, read=read,
        )


class HeaderEnvelope(Envelope):
    """Protocol 11 (and header requests of 8–10): credentials in the anki-sync header."""

    def __init__(self, request: Request, header: SyncHeader) -> None:
        self.request = request
        self.version = header.version
        self.host_key = header.host_key
        self.session_key = header.session_key
        self.client_version = header.client_version

    async def decode(self, method: str, limit: int, target: IO[bytes] | None = None) -> SyncRequest:
        """Read and decompress the body, refused past `limit` bytes before or after
        decompression (PayloadTooLarge)."""
        raw = await read_raw_body(self.request, limit)
        body = target or spooled()
        try:
            size = await decompress_body(raw, body, limit)
        except BaseException:
            body.close()
            raise
        return self.sync_request(method, body, size)

    async def decode_checked(self, method: str, limit: int) -> SyncRequest:
        """A small body whole, right here (the step parses it, as any other); a larger one
        read with its shape checked while it is decompressed, in a worker thread, never on
        disk."""
        raw = await read_raw_body(self.request, limit)
        try:
            read = None
            if raw.seek(0, 2) <= INLINE_DECOMPRESS_BYTES:
                whole = bodies.read_small_body(raw)
                read = None if whole is None else bodies.ReadBody(len(whole), whole=whole)
            if read is None:
                read = await anyio.to_thread.run_sync(bodies.read_body, method, raw, limit)
        finally:
            raw.close()
        return self.read_request(method, read)


async def framed_response(
    reply: Reply, compressed: bool, after: BackgroundTask | None = None
) -> Response:
    """A 200 carrying `reply`: one zstd frame plus anki-original-size, or raw for legacy.
    `after` runs once the response is sent."""
    if reply.path is None:
        data = reply.data
        if compressed:
            small = len(data) <= INLINE_COMPRESS_BYTES
            data = compress(data) if small else await anyio.to_thread.run_sync(compress, data)
        headers = {ORIGINAL_SIZE_HEADER: str(len(reply.data))} if compressed else {}
        return Response(data, headers=headers, media_type="application/octet-stream", background=after)
    # a raw file's length is known up front: legacy clients get it, as upstream sends it
    size = str(reply.size)
    headers = {ORIGINAL_SIZE_HEADER: size} if compressed else {"content-length": size}
    return StreamingResponse(
        _stream_file(reply, compressed), headers=headers, media_type="application/octet-stream",
        background=after,
    )


async def _stream_file(reply: Reply, compressed: bool) -> AsyncIterator[bytes]:
    assert reply.path is not None
    try:
        with open(reply.path, "rb") as f:
            compressor = zstandard.ZstdCompressor().compressobj() if compressed else None

            def next_piece() -> bytes | None:
                """Read, and compress, the next piece in one worker-thread hop."""
                piece = f.read(WRITE_PIECE_BYTES)
                if compressor is None:
                    return piece or None
                return compressor.compress(piece) if piece else None

            while (out := await anyio.to_thread.run_sync(next_piece)) is not None:
                if out:
                    yield out
            if compressor is not None:
                yield compressor.flush()
    finally:
        if reply.delete_after:
            reply.path.unlink(missing_ok=True)
