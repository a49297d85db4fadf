"""Where a small request's server CPU goes: kernel, HTTP server, and each part of the app.

Three measurements of the real client's `meta` request (recorded as in `bench_http_server.py`):

1. The server as it runs (``--variant``, default ``listener``): user and kernel CPU per request
   of its process, from /proc, for ankihost and for the same server with a trivial app (what
   the server alone costs, with its share of socket work in the kernel).
2. The app alone, in this process, driven through ASGI without sockets: CPU per request.
3. The same app calls under cProfile, the time of each part as a share of the app's own time:
   the envelope (body read, spool, zstd), the step (SQLite, file stat), JSON, the reply
   (zstd, Starlette), logging, routing and locks.

    PYTHONPATH=. .venv/bin/python benchmarks/profile_request.py [--variant listener] [--requests 5000]

cProfile slows Python code more than C code, so its shares are approximate; the first two
measurements are not profiled.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
for entry in (str(REPO_ROOT), str(REPO_ROOT / "benchmarks")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import bench_http_server as bench  # noqa: E402

# (part, substrings of "file:function" in cProfile's keys); the first match wins.
PARTS = (
    ("logging (format + write)", ("logging/", "ankihost/log.py")),
    ("zstd (decompress body, compress reply)", ("zstandard", "compression.py")),
    ("SQLite reads (collection, media index)", ("sqlite3", "storage/collection.py", "media/index.py")),
    ("file stat of the collection", ("posix.stat", "pathlib.py")),
    ("JSON (orjson)", ("orjson", "protocol/request.py", "protocol/response.py")),
    ("body spool (SpooledTemporaryFile)", ("tempfile.py",)),
    ("Starlette Request/Response", ("starlette/",)),
    ("anyio / asyncio (locks, tasks)", ("anyio/", "asyncio/")),
    ("anki-sync header", ("protocol/header.py",)),
    ("sync step (meta)", ("ankihost/sync/",)),
    ("envelope (web/envelope.py)", ("web/envelope.py",)),
    ("routing, dispatch, request log (web/app.py, sync_routes.py)", ("ankihost/web/", "ankihost/registry.py")),
)


def server_split(variant: str, app_kind: str, recording: dict[str, Any], requests: int) -> tuple[float, float]:
    """(user ms, kernel ms) of server CPU per meta, from /proc/PID/stat."""
    from common import bench_server

    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_http_server.py"), "--serve", variant,
               "--app", app_kind]
    with bench_server("ankihost", users=[(bench.USER, bench.PASSWORD)], command=command) as server:
        pid = server.server.pid
        assert pid is not None and server.server.port is not None
        link = bench.Replayer(server.server.port)
        for exchange in recording["setup"] if app_kind == "ankihost" else ():
            link.send(exchange)
        for _ in range(200):
            link.send(recording["meta"])
        before = _user_system(pid)
        for _ in range(requests):
            link.send(recording["meta"])
        after = _user_system(pid)
        link.close()
    tick = os.sysconf("SC_CLK_TCK")
    return tuple((a - b) * 1000 / tick / requests for a, b in zip(after, before, strict=True))  # type: ignore[return-value]


def _user_system(pid: int) -> tuple[int, int]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]), int(fields[12])


class InProcess:
    """The real app, called through ASGI without any server or socket."""

    def __init__(self, recording: dict[str, Any]) -> None:
        from ankihost import log as logsetup
        from ankihost.config import Settings
        from ankihost.server import build

        logsetup.setup()
        handler = logging.getLogger().handlers[0]
        handler.stream = open(os.devnull, "w")  # noqa: SIM115 - kept open for the run  # type: ignore[attr-defined]
        self.base = tempfile.mkdtemp(prefix="ankihost-profile-")
        env = {"SYNC_USER1": f"{bench.USER}:{bench.PASSWORD}", "SYNC_BASE": self.base}
        self.app = build(Settings.from_env(env))
        self.recording = recording

    async def call(self, exchange: Any) -> int:
        headers = [(k.lower().encode(), v.encode()) for k, v in exchange.headers if k.lower() != "content-length"]
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
                 "method": exchange.method, "path": exchange.path, "raw_path": exchange.path.encode(),
                 "query_string": b"", "root_path": "", "scheme": "http", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}
        messages = [{"type": "http.request", "body": exchange.body, "more_body": False}]
        status = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, send)
        return status[0]

    async def run(self, requests: int, profile: cProfile.Profile | None = None) -> float:
        for exchange in self.recording["setup"]:
            assert await self.call(exchange) == 200
        meta = self.recording["meta"]
        for _ in range(300):
            await self.call(meta)
        if profile is not None:
            profile.enable()
        started = time.process_time()
        for _ in range(requests):
            await self.call(meta)
        elapsed = time.process_time() - started
        if profile is not None:
            profile.disable()
        return elapsed * 1000 / requests


def parts(profile: cProfile.Profile) -> list[tuple[str, float]]:
    """Own (not cumulative) time per part, as fractions of the app's total. Built-in and frozen
    functions (orjson, sqlite3, str methods, os.path) count for the part that called them; the
    driver's own time (this file) is left out."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for func, (_, _, own, _, callers) in stats.items():
        if _is_opaque(func):
            for caller, edge in callers.items():
                _add(totals, _part(caller, stats), edge[2])
        else:
            _add(totals, _part(func, stats), own)
    totals.pop("(the driver)", None)
    whole = sum(totals.values()) or 1.0
    return sorted(((p, t / whole) for p, t in totals.items()), key=lambda item: -item[1])


def _is_opaque(func: tuple[str, int, str]) -> bool:
    return func[0] == "~" or func[0].startswith("<frozen")


def _part(func: tuple[str, int, str], stats: dict[Any, Any], depth: int = 0) -> str:
    if _is_opaque(func) and depth < 3:  # a built-in calling a built-in: ask its own caller
        callers = stats.get(func, (0, 0, 0, 0, {}))[4]
        if callers:
            return _part(max(callers, key=lambda c: callers[c][2]), stats, depth + 1)
    key = f"{func[0]}:{func[2]}"
    if "profile_request.py" in key:
        return "(the driver)"
    return next((name for name, needles in PARTS if any(n in key for n in needles)), "other")


def _add(totals: dict[str, float], part: str, seconds: float) -> None:
    totals[part] = totals.get(part, 0.0) + seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="listener", choices=bench.ANKIHOST_VARIANTS)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ankihost-profile-rec-"))
    recording = bench.record(work, 1)
    print(f"\n== server CPU per meta, {args.variant} (ms, from /proc) ==")
    for app_kind in ("ankihost", "echo"):
        user, kernel = server_split(args.variant, app_kind, recording, args.requests)
        print(f"  {app_kind + ' app':<14} user {user:.3f}  kernel {kernel:.3f}  total {user + kernel:.3f}")
    alone = InProcess(recording)
    app_ms = asyncio.run(alone.run(args.requests))
    print(f"\n== the app alone, in process, no sockets: {app_ms:.3f} ms CPU per meta ==")
    profile = cProfile.Profile()
    asyncio.run(InProcess(recording).run(args.requests, profile))
    print("  share of the app's own time (cProfile), and that share of the unprofiled figure:")
    for part, share in parts(profile):
        print(f"  {part:<62}{share * 100:5.1f} %  {share * app_ms * 1000:6.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
