"""Benchmark: server CPU per small request and per normal sync, for each HTTP server ankihost
could run on, against the official server, in one run.

Candidates (``--variants``, default all):

* ``official``            ``python -m anki.syncserver`` (Rust: axum/hyper)
* ``uvicorn-httptools``   ankihost on uvicorn with httptools and uvloop (until this benchmark)
* ``uvicorn-h11``         the same with uvicorn's pure-Python h11 parser
* ``granian-asgi``        ankihost on granian (Rust hyper) through its ASGI interface, uvloop
* ``listener``            ankihost on its own server, ``ankihost/web/listener.py``
                          (asyncio.Protocol + httptools on uvloop)

and, with ``--floor``, the same servers running a trivial ASGI app (read the body, answer
113 bytes) instead of ankihost, plus ``granian-rsgi`` with the same trivial app written for
RSGI: what each server costs by itself.

Two workloads, both the real client's own bytes (recorded once through a forwarding proxy
from the real client against the official server, then replayed by this process, request
bodies chunked as the real client sends them):

1. ``meta`` ``--requests`` times (default 2,000) over one keep-alive connection: the
   smallest real request (protocol-11 envelope, zstd body, a collection read); then as many
   again spread over ``--connections`` (default 8) connections at once.
2. ``--syncs`` normal syncs (default 2 x 15): device A answers 5 cards and adds a note, then
   syncs (push); device B syncs (pull). Each round first replays A's full upload and B's
   full download (untimed) onto a fresh server, so the normal syncs replay against the state
   they were recorded on. Every answer must have its recorded status; every `sanityCheck2`
   must say "ok".

Server CPU is the user+system time of the server's process tree (/proc), read before and
after each workload; the table shows milliseconds of server CPU per request / per sync
(median over rounds), the ratio to the official server's, and the wall time per request.
Rounds alternate the order of the variants (ABC, CBA, ...), each on a fresh server.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_http_server.py [--rounds 5]
        [--variants official,uvicorn-httptools,listener] [--requests 2000] [--connections 8]
        [--syncs 15] [--floor] [--json out.json]

This script is also the server process for the ankihost variants:
``bench_http_server.py --serve VARIANT [--app ankihost|echo]`` (environment as for ankihost).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
for entry in (str(REPO_ROOT), str(REPO_ROOT / "benchmarks")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

ANKIHOST_VARIANTS = ("uvicorn-httptools", "uvicorn-h11", "granian-asgi", "listener")
VARIANTS = ("official", *ANKIHOST_VARIANTS)
FLOOR_VARIANTS = (*ANKIHOST_VARIANTS, "granian-rsgi")
USER, PASSWORD = "bench", "bench-password"
REPLY = b"x" * 113  # the size of a real meta reply


# -- server side ------------------------------------------------------------------------------
async def echo_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """The trivial ASGI app of the floor runs: read the body, answer a fixed reply."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"113")]})
    await send({"type": "http.response.body", "body": REPLY})


class EchoRsgi:
    """The same trivial app for granian's RSGI interface."""

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        await protocol()
        protocol.response_bytes(200, [("content-type", "application/octet-stream")], REPLY)


def build_app(kind: str) -> Any:
    if kind == "echo":
        return echo_app
    from ankihost import log as logsetup
    from ankihost.config import Settings
    from ankihost.server import build

    logsetup.setup()
    return build(Settings.from_env(os.environ))


def serve(variant: str, app_kind: str) -> None:
    host, port = os.environ["SYNC_HOST"], int(os.environ["SYNC_PORT"])
    if variant == "granian-rsgi":
        return _serve_granian(EchoRsgi(), host, port, "rsgi")
    app = build_app(app_kind)
    if variant.startswith("uvicorn-"):
        import uvicorn

        uvicorn.run(app, host=host, port=port, log_config=None, http=variant.split("-")[1],
                    loop="uvloop", timeout_graceful_shutdown=10, proxy_headers=False)
    elif variant == "granian-asgi":
        _serve_granian(app, host, port, "asgi")
    elif variant == "listener":
        from ankihost.web import listener

        listener.run(app, host, port, listener.ListenerLimits(), None)
    else:
        raise SystemExit(f"unknown variant {variant}")


def _serve_granian(app: Any, host: str, port: int, interface: str) -> None:
    import uvloop
    from granian.constants import Interfaces
    from granian.server.embed import Server

    async def main() -> None:
        server = Server(app, address=host, port=port, interface=Interfaces(interface),
                        log_enabled=False)
        await server.serve()

    uvloop.run(main())


# -- recording the real client's traffic -------------------------------------------------------
def record(folder: Path, iterations: int) -> dict[str, Any]:
    """The real client's requests: set-up (A uploads, B downloads), then `iterations` x
    (A answers 5 cards + adds a note and syncs; B syncs). Logins are not kept."""
    from common import (
        add_new_notes,
        answer_reviews,
        bench_server,
        build_template,
        client_from_template,
        make_reviews_due,
    )

    from tests.support.content import build_large_collection
    from tests.support.proxy import ForwardingProxy

    def content(col: Any, notes: int) -> None:
        build_large_collection(col, notes=notes)
        make_reviews_due(col, 5 * iterations + 20)

    template = build_template(folder, content, notes=300)
    with bench_server("official", users=[(USER, PASSWORD)]) as server:
        proxy = ForwardingProxy(server.server, record=True)
        with proxy:
            a = client_from_template(template, server, "A")
            b = client_from_template(None, server, "B")
            try:
                for client in (a, b):
                    client.use_server(proxy)
                    client.login()
                a.full_upload()
                b.sync()
                assert proxy.exchanges is not None
                setup_end = len(proxy.exchanges)
                for i in range(iterations):
                    answer_reviews(a.col, 5, seed=i)
                    add_new_notes(a.col, 1, seed=i)
                    _expect(a.sync().action, "normal")
                    _expect(b.sync().action, "normal")
                syncs_end = len(proxy.exchanges)
                a.sync()  # a meta exactly as the client sends it, no changes left
            finally:
                a.cleanup()
                b.cleanup()
    setup = [e for e in proxy.exchanges[:setup_end] if e.path != "/sync/hostKey"]
    metas = [e for e in proxy.exchanges[syncs_end:] if e.path == "/sync/meta"]
    return {"setup": setup, "syncs": proxy.exchanges[setup_end:syncs_end], "meta": metas[-1],
            "syncs_count": 2 * iterations}


def _expect(action: str, wanted: str) -> None:
    if action != wanted:
        raise AssertionError(f"expected a {wanted} sync, got {action}")


# -- replaying ----------------------------------------------------------------------------------
class Replayer:
    """Sends recorded requests over one keep-alive connection, bodies chunked."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reconnects = 0
        self._connect()

    def _connect(self) -> None:
        self.link = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.link.connect()
        self.link.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, exchange: Any) -> bytes:
        """Send on the open connection; if the server had closed it (as the official server
        does after a download), once more on a new one, as the client's pool does."""
        try:
            return self._send(exchange)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.link.close()
            self.reconnects += 1
            self._connect()
            return self._send(exchange)

    def _send(self, exchange: Any, chunked: bool = True) -> bytes:
        headers = {k: v for k, v in exchange.headers if k.lower() not in ("host", "content-length")}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
            self.link.request(exchange.method, exchange.path, body=iter((exchange.body,)),
                              headers=headers, encode_chunked=True)
        else:
            self.link.request(exchange.method, exchange.path, body=exchange.body, headers=headers)
        response = self.link.getresponse()
        answer = response.read()
        if response.status != exchange.status:
            raise AssertionError(f"{exchange.path}: {response.status}, recorded {exchange.status}: {answer[:200]!r}")
        if exchange.path.endswith("/sanityCheck2"):
            import orjson
            import zstandard

            reply = orjson.loads(zstandard.ZstdDecompressor().decompressobj().decompress(answer))
            if reply.get("status") != "ok":
                raise AssertionError(f"sanity check failed on replay: {reply}")
        return answer

    def close(self) -> None:
        self.link.close()


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the server's process tree: the kernel's nanosecond run times of its live
    threads (/proc/*/task/*/schedstat), which clock-tick accounting (10 ms) would blur."""
    from common import _proc_children

    children = _proc_children()
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            tasks = []
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        stack.extend(children.get(current, []))
    return total / 1e9


def tick_cpu_seconds(pid: int) -> float:
    from bench_concurrent import tree_cpu_seconds as ticks

    return ticks(pid)


class CpuWindow:
    """Server CPU over a window: nanosecond run times, unless threads ended in the window (their
    time would be lost), then the clock-tick totals, which keep ended threads' time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.precise, self.ticks = tree_cpu_seconds(pid), tick_cpu_seconds(pid)

    def seconds(self) -> float:
        precise = tree_cpu_seconds(self.pid) - self.precise
        ticks = tick_cpu_seconds(self.pid) - self.ticks
        return precise if abs(precise - ticks) < 0.03 else ticks


def measure(variant: str, recording: dict[str, Any], args: argparse.Namespace,
            app_kind: str) -> dict[str, float]:
    from common import bench_server

    kind = "official" if variant == "official" else "ankihost"
    command = None
    if kind == "ankihost":
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", variant, "--app", app_kind]
    with bench_server(kind, users=[(USER, PASSWORD)], command=command) as server:
        port, pid = server.server.port, server.server.pid
        assert port is not None and pid is not None
        out: dict[str, float] = {}
        link = Replayer(port)
        try:
            for exchange in recording["setup"] if app_kind == "ankihost" else ():
                link.send(exchange)
            meta = recording["meta"]
            for _ in range(50):  # warm-up
                link.send(meta)
            cpu, wall = CpuWindow(pid), time.perf_counter()
            for _ in range(args.requests):
                link.send(meta)
            out["meta wall ms"] = (time.perf_counter() - wall) * 1000 / args.requests
            out["meta CPU ms"] = cpu.seconds() * 1000 / args.requests
            if args.connections > 1:
                cpu = CpuWindow(pid)
                parallel_metas(port, meta, args.connections, args.requests)
                out[f"meta x{args.connections} CPU ms"] = cpu.seconds() * 1000 / args.requests
            if app_kind == "ankihost" and args.syncs:
                cpu, wall = CpuWindow(pid), time.perf_counter()
                for exchange in recording["syncs"]:
                    link.send(exchange)
                out["sync wall ms"] = (time.perf_counter() - wall) * 1000 / recording["syncs_count"]
                out["sync CPU ms"] = cpu.seconds() * 1000 / recording["syncs_count"]
        finally:
            link.close()
    return out


def parallel_metas(port: int, meta: Any, connections: int, requests: int) -> None:
    """`requests` metas spread over `connections` keep-alive connections at once."""
    import threading

    links = [Replayer(port) for _ in range(connections)]
    errors: list[BaseException] = []

    def work(link: Replayer) -> None:
        try:
            for _ in range(requests // connections):
                link.send(meta)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(link,)) for link in links]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for link in links:
        link.close()
    if errors:
        raise errors[0]


def round_order(rounds: int, variants: list[str]) -> Iterator[tuple[int, str]]:
    for r in range(rounds):
        for variant in variants if r % 2 == 0 else list(reversed(variants)):
            yield r, variant


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for variant, rows in runs.items():
        keys = sorted({k for row in rows for k in row})
        table[variant] = {k: statistics.median(row[k] for row in rows if k in row) for k in keys}
    return table


def print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    """Medians per variant; each CPU column is followed by its ratio to the official server."""
    base = table.get("official", {})
    keys = sorted({k for row in table.values() for k in row}, key=lambda k: (k.split()[0] == "sync", "wall" in k, k))
    print(f"\n== {title} ==")
    print(f"  {'variant':<20}" + "".join(f"{k:>16}" + ("   ratio" if "CPU" in k else "") for k in keys))
    for variant, row in table.items():
        cells = [f"  {variant:<20}"]
        for key in keys:
            value = row.get(key)
            cells.append(f"{'-' if value is None else f'{value:.3f}':>16}")
            if "CPU" in key:
                ratio = value / base[key] if value is not None and base.get(key) else None
                cells.append(f"{'-' if ratio is None else f'{ratio:.2f}':>8}")
        print("".join(cells))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--app", default="ankihost", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (default 5)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"default: {','.join(VARIANTS)}")
    parser.add_argument("--requests", type=int, default=2000, help="meta requests per round (default 2000)")
    parser.add_argument("--connections", type=int, default=8,
                        help="also send the metas over this many connections at once (default 8; 1: no)")
    parser.add_argument("--syncs", type=int, default=15, help="A push + B pull pairs per round (default 15)")
    parser.add_argument("--floor", action="store_true", help="also measure each server with a trivial app")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser.parse_args()


def run_rounds(variants: list[str], recording: dict[str, Any], args: argparse.Namespace,
               app_kind: str) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for r, variant in round_order(args.rounds, variants):
        row = measure(variant, recording, args, app_kind)
        runs[variant].append(row)
        print(f"round {r + 1} {app_kind:<8} {variant:<18} " +
              " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    return summarize(runs)


def main() -> int:
    args = parse_args()
    if args.serve:
        serve(args.serve, args.app)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {sorted(unknown)}")
    if any(v.startswith("granian") for v in variants) and importlib.util.find_spec("granian") is None:
        print("granian is not installed (pip install -e '.[bench]'): its variants are left out")
        variants = [v for v in variants if not v.startswith("granian")]
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-http-"))
    try:
        recording = record(work, args.syncs)
        print(f"recorded: {len(recording['setup'])} set-up requests, {len(recording['syncs'])} requests "
              f"in {recording['syncs_count']} normal syncs", flush=True)
        results = {"ankihost": run_rounds(variants, recording, args, "ankihost")}
        print_table(f"server CPU per request (meta) and per normal sync, {args.rounds} rounds", results["ankihost"])
        if args.floor:
            floor = [v for v in FLOOR_VARIANTS
                     if v in variants or (v == "granian-rsgi" and "granian-asgi" in variants)]
            results["floor"] = run_rounds(floor, recording, args, "echo")
            print_table("the servers alone: a trivial app answering the same meta request", results["floor"])
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
