"""The legacy (protocol 8–10) request envelope, for tests: build one, or read a recorded one.

Old clients POST `multipart/form-data` with the fields `data` (the payload, a file part named
"data", gzipped when `c` is not "0"), `c`, `k` (host key), `s` (session key); media requests
send `sk` instead of `k` and no `c`. See /work/notes/legacy-protocol.md for the details.
"""

from __future__ import annotations

import gzip
import re
import uuid
from collections.abc import Iterable

from tests.support.proxy import Exchange


def multipart_body(fields: Iterable[tuple[str, bytes]], boundary: str | None = None) -> tuple[str, bytes]:
    """(content type, body) of a form as the old client sends it: `data` as a file part."""
    boundary = boundary or uuid.uuid4().hex
    body = b""
    for name, value in fields:
        filename = '; filename="data"' if name == "data" else ""
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
        body += value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def legacy_request(payload: bytes, *, host_key: str | None = None, session: str | None = None,
                   compressed: bool = True) -> tuple[str, bytes]:
    """A collection-sync request as Anki 2.1.54 builds it (`data`, `c`, then `k` and `s`)."""
    fields = [("data", gzip.compress(payload) if compressed else payload),
              ("c", b"1" if compressed else b"0")]  # fmt: skip
    if host_key is not None:
        fields += [("k", host_key.encode()), ("s", (session or "").encode())]
    return multipart_body(fields)


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart body (the last one wins for a repeated name)."""
    match = re.search(r"boundary=([^;\s]+)", content_type)
    if match is None:
        raise ValueError(f"not multipart: {content_type!r}")
    fields: dict[str, bytes] = {}
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name is not None:
            fields[name.group(1).decode()] = value[:-2] if value.endswith(b"\r\n") else value
    return fields


def recorded_payload(exchange: Exchange) -> bytes:
    """The payload of a recorded legacy request: `data`, gunzipped unless `c` is absent or "0"."""
    content_type = dict((k.lower(), v) for k, v in exchange.headers)["content-type"]
    fields = parse_multipart(content_type, exchange.body)
    data = fields.get("data", b"")
    return gzip.decompress(data) if fields.get("c", b"0") != b"0" and data else data
