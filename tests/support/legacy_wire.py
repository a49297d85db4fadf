"""The legacy (protocol 8–10) request envelope, for tests: build one, send one, or read a recorded one.

Old clients POST `multipart/form-data` with the fields `data` (the payload, a file part named
"data", gzipped when `c` is not "0"), `c`, `k` (host key), `s` (session key); media requests
send `sk` instead of `k` and no `c`. See /work/notes/legacy-protocol.md for the details.
"""

from __future__ import annotations

import gzip
import re
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from tests.support.proxy import Exchange
from tests.support.sync_steps import StepClient


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


class LegacyWire:
    """Legacy requests against the in-process app (a Starlette TestClient), as old clients
    send them: collection methods with `data` gzipped and `c`, `k`, `s`; media methods with
    `data` raw and `sk`."""

    def __init__(self, http: Any, key: str) -> None:
        self.http = http
        self.key = key

    def post(self, method: str, payload: Any = None, *, key: str | None = None,
             session: str = "C]w7|ht4>5", compressed: bool = True) -> Any:
        """A collection-sync method (`hostKey` without a key)."""
        data = payload if isinstance(payload, bytes) else orjson.dumps({} if payload is None else payload)
        host_key = None if method == "hostKey" else (self.key if key is None else key)
        content_type, body = legacy_request(data, host_key=host_key, session=session, compressed=compressed)
        return self.send(f"/sync/{method}", content_type, body)

    def media(self, method: str, payload: Any = None, *, key: str | None = None) -> Any:
        """A media method as Anki 2.1.54 sends it: `data` uncompressed, then `sk`."""
        data = payload if isinstance(payload, bytes) else orjson.dumps({} if payload is None else payload)
        sk = (self.key if key is None else key).encode()
        return self.send(f"/msync/{method}", *multipart_body([("data", data), ("sk", sk)]))

    def send(self, path: str, content_type: str, body: bytes) -> Any:
        return self.http.post(path, content=body, headers={"content-type": content_type})

    @staticmethod
    def payload(response: Any) -> bytes:
        """A legacy reply's bytes: 200, raw, no anki-original-size."""
        assert response.status_code == 200, (response.status_code, response.text)
        assert "anki-original-size" not in response.headers
        assert response.headers["content-type"] == "application/octet-stream"
        return bytes(response.content)

    def json(self, response: Any) -> Any:
        return orjson.loads(self.payload(response))


class LegacyStepClient(StepClient):
    """`StepClient`'s normal sync over the legacy envelope, through the app: `meta` is asked
    over the wire; with `graves_in_start`, `start` carries the client's graves (string ids, as
    old AnkiMobile sends them) instead of a separate `applyGraves`, as AnkiDroid's Java sync
    does, else they go in `applyGraves` as Anki 2.1.54 sends them."""

    def __init__(self, col: Any, wire: LegacyWire, key: str = "C]w7|ht4>5", graves_in_start: bool = True) -> None:
        super().__init__(col, None, key)  # type: ignore[arg-type]
        self.wire = wire
        self.graves_in_start = graves_in_start

    def _call(self, method: str, body: Any = None) -> Any:
        return self.wire.json(self.wire.post(method, {} if body is None else body, session=self.key))

    def meta(self) -> tuple[int, bool]:
        meta = self.wire.json(self.wire.post("meta", {"v": 10, "cv": "ankidroid,2.15.6,test"}))
        assert meta["cont"] is True, meta
        self.server_usn = meta["usn"]
        return meta["usn"], self.col.db.scalar("select mod from col") > meta["mod"]

    def start(self) -> dict[str, Any]:
        _, self.lnewer = self.meta()
        graves = {kind: [str(oid) for oid in oids] for kind, oids in self.graves().items()}
        min_usn = self.col.db.scalar("select usn from col")
        body = {"minUsn": min_usn, "lnewer": self.lnewer, "graves": graves if self.graves_in_start else None}
        self.replies["start"] = self._call("start", body)
        return self.replies["start"]

    def apply_graves(self) -> None:
        if not self.graves_in_start:
            super().apply_graves()
