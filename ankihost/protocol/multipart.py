"""The legacy envelope of protocols 8–10: a `multipart/form-data` body with a gzipped payload.

`FormParser` is fed the body piece by piece (no I/O of its own) and keeps only what a legacy
request may carry: the text fields `c`, `k`, `sk`, `s`, `v` (each a few bytes, capped), and the
`data` part, written as it arrives to a file the caller supplies (so a 100 MiB upload never
sits in memory). Unknown parts are skipped. `LegacyForm.write_payload` then turns `data` into
the request's payload: gunzipped unless `c` is absent or "0", capped, `{}` when empty (spec 01
§1.6). Everything malformed is a `BadRequest`; the web layer caps the body's size.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ankihost.errors import BadRequest, PayloadTooLarge

# Parts a request may have (real clients send at most five) and the size of a part's headers.
MAX_PARTS = 16
MAX_PART_HEADER_BYTES = 4096
# A text field: a host key, session key, client version string, or the compression flag.
MAX_FIELD_BYTES = 8 * 1024
TEXT_FIELDS = ("c", "k", "sk", "s", "v")
DATA_FIELD = "data"
EMPTY_PAYLOAD = b"{}"  # what an absent or empty `data` stands for (AnkiDroid's `download`)
READ_PIECE_BYTES = 1 << 16
GUNZIP_PIECE_BYTES = 1 << 20


def boundary_of(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data` content type; 400 for anything else."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not boundary or len(boundary) > 200:
        raise BadRequest("request has neither an anki-sync header nor a multipart/form-data body")
    return boundary


@dataclass
class LegacyForm:
    """The fields of a parsed legacy request; `data` holds the raw `data` part (or None)."""

    fields: dict[str, str] = field(default_factory=dict)
    data: IO[bytes] | None = None
    data_size: int = 0
    # `k` or `sk`, whichever came last (the official server treats them alike)
    host_key: str = ""

    @property
    def compressed(self) -> bool:
        """`data` is gzipped unless `c` is absent or exactly "0"."""
        return self.fields.get("c", "0") != "0"

    @property
    def session_key(self) -> str:
        return self.fields.get("s", "")

    @property
    def client_version(self) -> str | None:
        """The `v` field: media `begin`'s client version, sent outside the JSON payload."""
        return self.fields.get("v")

    def write_payload(self, target: IO[bytes], limit: int) -> int:
        """Write the request's payload to `target`; returns its size. PayloadTooLarge past
        `limit` bytes, BadRequest for gzip that does not decompress."""
        return sum(target.write(piece) for piece in self.payload_pieces(limit))

    def payload_pieces(self, limit: int) -> Iterator[bytes]:
        """The request's payload in bounded pieces, with `write_payload`'s errors."""
        if self.data is None or self.data_size == 0:
            yield EMPTY_PAYLOAD
            return
        self.data.seek(0)
        if self.compressed:
            yield from gunzip_pieces(self.data, limit)
            return
        if self.data_size > limit:
            raise PayloadTooLarge(f"payload of {self.data_size} bytes exceeds {limit}")
        yield from iter(partial(self.data.read, READ_PIECE_BYTES), b"")

    def close(self) -> None:
        if self.data is not None:
            self.data.close()


class FormParser:
    """A push parser for one legacy body: `feed` it the pieces, then `finish`.

    `new_file()` makes the file each `data` part is written to (a repeated `data` part
    replaces the one before, as upstream).
    """

    def __init__(self, boundary: bytes, new_file: Callable[[], IO[bytes]]) -> None:
        self.form = LegacyForm()
        self._new_file = new_file
        self._parts = 0
        self._ended = False
        self._header: list[bytearray] = []  # [name, value] of the header being read
        self._headers: dict[str, bytes] = {}
        self._header_bytes = 0
        self._name: str | None = None
        self._text: bytearray | None = None
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })

    def feed(self, piece: bytes) -> None:
        try:
            self._parser.write(piece)
        except MultipartParseError as exc:
            raise BadRequest(f"invalid multipart body: {exc}") from None
        except BaseException:
            self.form.close()
            raise

    def finish(self) -> LegacyForm:
        """The form, once the closing boundary was read; 400 for a body that stops short."""
        if not self._ended:
            self.form.close()
            raise BadRequest("multipart body ends before its closing boundary")
        return self.form

    def abandon(self) -> None:
        self.form.close()

    # --- python-multipart callbacks ----------------------------------------------------------
    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise BadRequest(f"multipart body has more than {MAX_PARTS} parts")
        self._headers, self._header_bytes = {}, 0
        self._name, self._text = None, None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        if not self._header:
            self._header = [bytearray(), bytearray()]
        self._add_header_bytes(0, data[start:end])

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        if not self._header:
            self._header = [bytearray(), bytearray()]
        self._add_header_bytes(1, data[start:end])

    def _add_header_bytes(self, which: int, piece: bytes) -> None:
        self._header_bytes += len(piece)
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise BadRequest(f"multipart part headers exceed {MAX_PART_HEADER_BYTES} bytes")
        self._header[which] += piece

    def _header_end(self) -> None:
        if self._header:
            name, value = self._header
            self._headers[name.decode("latin-1").lower()] = bytes(value)
        self._header = []

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        raw_name = params.get(b"name")
        self._name = raw_name.decode("latin-1") if raw_name is not None else None
        if self._name == DATA_FIELD:
            self.form.close()
            self.form.data, self.form.data_size = self._new_file(), 0
        elif self._name in TEXT_FIELDS:
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == DATA_FIELD and self.form.data is not None:
            self.form.data_size += self.form.data.write(data[start:end])
        elif self._text is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise BadRequest(f"multipart field {self._name!r} exceeds {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._text is None or self._name is None:
            return
        try:
            value = self._text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"multipart field {self._name!r} is not UTF-8") from None
        self.form.fields[self._name] = value
        if self._name in ("k", "sk"):
            self.form.host_key = value
        self._text = None

    def _end(self) -> None:
        self._ended = True


def gunzip_pieces(source: IO[bytes], limit: int) -> Iterator[bytes]:
    """The gzip stream in `source`, decompressed in bounded pieces. PayloadTooLarge past
    `limit` bytes; BadRequest for data that is not one complete gzip member (bytes after it
    are ignored, as upstream's decoder does)."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    written, pending = 0, False  # pending: the last piece filled up, more output may wait
    while not decoder.eof:
        compressed = decoder.unconsumed_tail or source.read(READ_PIECE_BYTES)
        if not compressed and not pending:
            break
        try:
            piece = decoder.decompress(compressed, GUNZIP_PIECE_BYTES)
        except zlib.error as exc:
            raise BadRequest(f"invalid gzip body: {exc}") from None
        pending = len(piece) == GUNZIP_PIECE_BYTES
        written += len(piece)
        if written > limit:
            raise PayloadTooLarge(f"decompressed body exceeds {limit} bytes")
        if piece:
            yield piece
    if not decoder.eof:
        raise BadRequest("gzip body is truncated")
