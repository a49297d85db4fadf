"""Protocol-11 requests built by hand, for abuse tests and benchmarks against a server process.

Logins, `meta`, the first steps of a normal sync (as the real client sends them), another
user's `meta` loop that records its latencies, an RSS sampler for the server process, and
the hostile bodies of issue #15 (zstd bombs of nested arrays, deep nesting, huge keys), made
in pieces so that a 280 MB body never sits in memory.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import psutil
import zstandard

MiB = 1 << 20
CLIENT_VERSION = "anki,26.9.3 (test),linux"
REQUEST_TIMEOUT = 150.0


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def zstd_stream(parts: Iterable[bytes]) -> bytes:
    """One zstd frame of the concatenated `parts` (compressed as they come)."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    out = [compressor.compress(part) for part in parts]
    out.append(compressor.flush())
    return b"".join(out)


def sync_headers(hkey: str = "", session: str = "", client: str = CLIENT_VERSION) -> dict[str, str]:
    header = orjson.dumps({"v": 11, "k": hkey, "c": client, "s": session}).decode()
    return {"anki-sync": header, "Content-Type": "application/octet-stream"}


def post(port: int, method: str, body: bytes, hkey: str = "", session: str = "",
         timeout: float = REQUEST_TIMEOUT, client: str = CLIENT_VERSION) -> tuple[int, bytes]:
    """One request on a new connection; `body` is already compressed. (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", f"/sync/{method}", body=body, headers=sync_headers(hkey, session, client))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def reply_json(data: bytes) -> Any:
    return orjson.loads(zstandard.ZstdDecompressor().decompressobj().decompress(data))


def login(port: int, user: str, password: str) -> str:
    status, data = post(port, "hostKey", zstd(orjson.dumps({"u": user, "p": password})))
    if status != 200:
        raise RuntimeError(f"login of {user}: {status}")
    return str(reply_json(data)["key"])


META_BODY = zstd(orjson.dumps({"v": 11, "cv": CLIENT_VERSION}))


def meta(port: int, hkey: str, timeout: float = REQUEST_TIMEOUT) -> int:
    return post(port, "meta", META_BODY, hkey, timeout=timeout)[0]


FIRST_STEPS: list[tuple[str, Any]] = [
    ("start", {"minUsn": 0, "lnewer": False, "graves": None}),
    ("applyGraves", {"chunk": {"cards": [], "notes": [], "decks": []}}),
    ("applyChanges", {"changes": {"models": [], "decks": [[], []], "tags": []}}),
]


def open_session(port: int, hkey: str, session: str, until: str) -> None:
    """A normal sync's first steps as the real client sends them, up to (not including)
    `until`: meta, start, applyGraves, applyChanges, then chunk until done."""
    if meta(port, hkey) != 200:
        raise RuntimeError("meta failed")
    for method, payload in FIRST_STEPS:
        if method == until:
            return
        status, data = post(port, method, zstd(orjson.dumps(payload)), hkey, session)
        if status != 200:
            raise RuntimeError(f"{method}: {status} {data[:200]!r}")
    for _ in range(1000):
        status, data = post(port, "chunk", zstd(b'{"_pad":null}'), hkey, session)
        if status != 200:
            raise RuntimeError(f"chunk: {status}")
        if reply_json(data).get("done"):
            return


def abort(port: int, hkey: str, session: str) -> int:
    return post(port, "abort", zstd(b"{}"), hkey, session)[0]


# -- hostile bodies -------------------------------------------------------------------------


def repeated(prefix: bytes, unit: bytes, size: int, last: bytes, suffix: bytes) -> Iterator[bytes]:
    """prefix, `unit` repeated to about `size` bytes, then `last` and `suffix`."""
    yield prefix
    block = unit * max(1, MiB // len(unit))
    for _ in range(max(1, size // len(block))):
        yield block
    yield last + suffix


def nested(prefix: bytes, size: int, suffix: bytes) -> Iterator[bytes]:
    """prefix, `[[[…]]]` of about `size` bytes, suffix."""
    yield prefix
    for byte in (b"[", b"]"):
        for _ in range(max(1, size // 2 // MiB)):
            yield byte * MiB
    yield suffix


def graves_bomb(size: int) -> Iterator[bytes]:
    """`start` whose graves.cards is `[[]],[[]],…` (issue #15, attack 1)."""
    return repeated(b'{"minUsn":0,"lnewer":false,"graves":{"cards":[', b"[[]],", size,
                    b"[[]]", b'],"notes":[],"decks":[]}}')


def revlog_bomb(size: int) -> Iterator[bytes]:
    """`applyChunk` whose revlog is `[[]],[[]],…`."""
    return repeated(b'{"chunk":{"done":false,"revlog":[', b"[[]],", size, b"[[]]", b"]}}")


def legit_cards(count: int, data_bytes: int) -> Iterator[bytes]:
    """A well-formed `applyChunk` of `count` cards with `data_bytes` of card data each."""
    yield b'{"chunk":{"done":true,"cards":['
    data = orjson.dumps({"pad": "x" * data_bytes}).decode()
    for i in range(count):
        card = [1_700_000_000_000 + i, 1_700_000_000_000, 1, 0, 1_700_000_000, -1, 0, 0, i, 0, 0, 0, 0, 0, 0, 0, 0,
                data]
        yield (b"," if i else b"") + orjson.dumps(card)
    yield b"]}}"


# -- watching a server ---------------------------------------------------------------------


class RssPeak(threading.Thread):
    """The RSS of one process, sampled every 10 ms: `base` when started, `peak` since."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.base = self.peak = self.now()
        self._stop_event = threading.Event()

    def now(self) -> int:
        with contextlib.suppress(psutil.Error):
            return int(self.process.memory_info().rss)
        return 0

    def run(self) -> None:
        while not self._stop_event.wait(0.01):
            self.peak = max(self.peak, self.now())

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


class MetaLoop(threading.Thread):
    """Another user's `meta` requests in a loop, each on a new connection."""

    def __init__(self, port: int, hkey: str, pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.port, self.hkey, self.pause = port, hkey, pause
        self.samples: list[tuple[float, float, bool]] = []  # start, seconds, ok
        self.failures: dict[str, int] = {}
        self.in_flight: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = self.in_flight = time.monotonic()
            try:
                status = meta(self.port, self.hkey)
                ok, reason = status == 200, str(status)
            except (OSError, http.client.HTTPException) as exc:
                ok, reason = False, type(exc).__name__
            if not ok:
                self.failures[reason] = self.failures.get(reason, 0) + 1
            self.in_flight = None
            self.samples.append((started, time.monotonic() - started, ok))
            self._stop_event.wait(self.pause)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(REQUEST_TIMEOUT)

    def during(self, start: float, end: float) -> tuple[float, int, int]:
        """Worst latency (ms) of the requests overlapping [start, end] (one still running
        counts with its time so far), how many failed, how many there were."""
        hits = [(s, d, ok) for s, d, ok in self.samples if s <= end and s + d >= start]
        if self.in_flight is not None:
            hits.append((self.in_flight, time.monotonic() - self.in_flight, True))
        worst = max((d for _, d, _ in hits), default=0.0) * 1000
        return worst, sum(1 for *_, ok in hits if not ok), len(hits)
