"""The envelopes of protocols 8–10: requests without the `anki-sync` header.

Desktop before 2.1.57 and AnkiDroid before 2.16 send every method as `multipart/form-data`
(`MultipartEnvelope`): the host key, session key and compression flag are form fields, the
payload is the gzipped `data` part. Rust clients 2.1.28–2.1.56 start a media sync with
`GET /msync/begin?k=…&v=…` (`QueryEnvelope`). Both are protocol 10 for every method, as
upstream assumes, and their replies are raw. The routes and steps are those of protocol 11.
"""

from __future__ import annotations

import io
from typing import IO

import anyio
import orjson
from starlette.requests import Request

from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.protocol import body_stream, multipart
from ankihost.protocol.header import LEGACY_SYNC_VERSION
from ankihost.protocol.request import SyncRequest
from ankihost.sync import bodies
from ankihost.web.envelope import INLINE_DECOMPRESS_BYTES, INLINE_DECOMPRESS_LIMIT, Envelope, spooled

# What the request log and the device list show for a legacy request's client.
LEGACY_CLIENT = "legacy"
# The most characters of a client version taken from a legacy `meta` payload (`cv`), and the
# largest payload read for it (a real one is a few dozen bytes).
MAX_CLIENT_CHARS = 200
META_PAYLOAD_BYTES = 64 * 1024
BEGIN = "begin"


class MultipartEnvelope(Envelope):
    """A multipart form: read whole by `receive` (the `data` part spooled, memory up to
    1 MiB), its payload gunzipped by `decode`. The body is capped at MAX_SYNC_PAYLOAD_MEGS
    (`max_body`), and 400 above it, as upstream answers."""

    version = LEGACY_SYNC_VERSION
    client_version = LEGACY_CLIENT

    def __init__(self, request: Request, max_body: int) -> None:
        self.request = request
        self.max_body = max_body
        self.form: multipart.LegacyForm | None = None

    async def receive(self, limit: int) -> None:
        self.form = await read_form(self.request, min(self.max_body, limit))
        self.host_key = self.form.host_key
        self.session_key = self.form.session_key
        self.client_version = self.form.client_version or LEGACY_CLIENT

    @property
    def named_client(self) -> str:
        return "" if self.client_version == LEGACY_CLIENT else self.client_version

    def client_from_meta(self) -> None:
        """Old clients name their version only inside `meta`'s payload (`cv`): take it from
        there, for the request's log line and the device's record. A payload that does not
        parse is left for the step to refuse."""
        form = self.form
        if form is None or form.client_version is not None:
            return
        try:
            payload = _small_payload(form, META_PAYLOAD_BYTES)
            body = orjson.loads(payload) if payload is not None else None
        except (BadRequest, orjson.JSONDecodeError):
            return
        version = body.get("cv") if isinstance(body, dict) else None
        if isinstance(version, str) and version.strip():
            self.client_version = version[:MAX_CLIENT_CHARS]

    async def decode(self, method: str, limit: int, target: IO[bytes] | None = None) -> SyncRequest:
        form = self.form
        assert form is not None, "receive() first"
        body = target or spooled()
        try:
            if method == BEGIN and form.client_version is not None:
                # old clients name their version in the form; it stands for begin's body
                size = body.write(orjson.dumps({"v": form.client_version}))
            else:
                size = await _write_payload(form, body, limit)
        except BaseException:
            body.close()
            raise
        return self.sync_request(method, body, size)

    async def decode_checked(self, method: str, limit: int) -> SyncRequest:
        """As protocol 11's: a small payload whole, a larger one read with its shape checked
        while it is gunzipped, in a worker thread."""
        form = self.form
        assert form is not None, "receive() first"
        read = None
        if form.data_size <= INLINE_DECOMPRESS_BYTES:
            whole = _small_payload(form, min(limit, bodies.STREAM_ABOVE_BYTES))
            read = None if whole is None else bodies.ReadBody(len(whole), whole=whole)
        if read is None:
            pieces = body_stream.guarded_pieces(form.payload_pieces(limit))
            read = await anyio.to_thread.run_sync(bodies.read_pieces, method, pieces)
        return self.read_request(method, read)

    def close(self) -> None:
        if self.form is not None:
            self.form.close()


def _small_payload(form: multipart.LegacyForm, limit: int) -> bytes | None:
    """The payload if it is at most `limit` bytes, else None; gzip errors raise."""
    out = io.BytesIO()
    try:
        form.write_payload(out, limit)
    except PayloadTooLarge:
        return None
    return out.getvalue()


async def _write_payload(form: multipart.LegacyForm, body: IO[bytes], limit: int) -> int:
    """`form.write_payload` right here for a small `data` part whose payload turns out small
    (cheaper than a thread hop), else in a worker thread, as `decompress_body` does."""
    if form.data_size <= INLINE_DECOMPRESS_BYTES:
        try:
            return form.write_payload(body, min(limit, INLINE_DECOMPRESS_LIMIT))
        except PayloadTooLarge:
            if limit <= INLINE_DECOMPRESS_LIMIT:
                raise
            body.seek(0)
            body.truncate()
    return await anyio.to_thread.run_sync(form.write_payload, body, limit)


async def read_form(request: Request, limit: int) -> multipart.LegacyForm:
    """Parse the body as it arrives; 400 for a body over `limit` bytes (declared or actual),
    not multipart, or malformed."""
    parser = multipart.FormParser(
        multipart.boundary_of(request.headers.get("content-type", "")), spooled
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"legacy body of {declared} bytes exceeds {limit}")
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"legacy body exceeds {limit} bytes")
            parser.feed(chunk)
    except BaseException:
        parser.abandon()
        raise
    return parser.finish()


class QueryEnvelope(Envelope):
    """`GET /msync/begin?k=<host key>&v=<client version>`: both required; the payload is
    `{"v": <client version>}`, as upstream maps it."""

    version = LEGACY_SYNC_VERSION

    def __init__(self, request: Request) -> None:
        params = request.query_params
        host_key, client_version = params.get("k"), params.get("v")
        if host_key is None or client_version is None:
            raise BadRequest("GET begin needs the query parameters k and v")
        self.host_key = host_key
        self.client_version = client_version

    async def decode(self, method: str, limit: int, target: IO[bytes] | None = None) -> SyncRequest:
        body = target or spooled()
        size = body.write(orjson.dumps({"v": self.client_version}))
        return self.sync_request(method, body, size)
