"""Benchmark: hostile requests against ankihost and the official server (issue #15).

Each attack runs against a freshly started server of each kind, one at a time, while another
user ("victim", logged in before) sends `meta` requests in a loop with the real protocol-11
envelope, each on a new connection. For every attack and server it prints:

* the answer to the attack request (status, "closed", "timeout"; for connection attacks what
  a legitimate login + meta + normal sync with the real client met) and how long it took;
* the server's RSS before, at its peak (psutil, sampled every 10 ms) and 3 s after;
* the victim's worst `meta` latency while the attack ran, and how many of its metas failed;
* whether the server still answers `/health` afterwards, and attack-specific notes (log growth,
  forged log lines, connections the server closed, temp disk used).

Attacks (sizes with --big-mb, default 280):

    a    start: graves.cards = [[[]],[[]],...] (~26 KB zstd, 280 MB JSON), after a real login
    a2   the same, 28 MB
    a3   applyChunk: revlog = [[[]],...] 280 MB, inside a started session
    a4d  start: graves.cards = [[[[...]]]] nested 140 M deep (280 MB)
    a4k  start: one object key of 280 MB
    a4c  applyChanges: conf = {"k": [{"a":0},{"a":0},...]} 280 MB
    a4g  applyGraves: cards = [[[]],...] 280 MB
    a4i  start: an unknown key holding [[[]],...] 280 MB (valid JSON the parser ignores)
    L    a legitimate large applyChunk: 250 cards with 1 MiB of `data` each (250 MiB)
    a5m  ten `meta` requests at once, each 1 MiB of [[[]],...] (the small-body limit)
    a5l  ten protocol-10 logins at once (no password needed), each 3 MiB of [[[]],...] gzipped
    b64  a 64 MB header (no login)
    b10k / b200k   10,000 / 200,000 headers
    bline          a 16 MB request line
    c8m  ten requests with an 8 MB `c` (client version) in anki-sync, refused (bad key)
    cnl  a `c` holding "\\n" and a forged log line
    d2k  2,000 idle connections, then a legitimate login + meta + normal sync
    dslow  500 slowloris connections (a header line every 5 s per connection) for 20 s
    dchunk an endless chunked upload at 10 MiB/s for 25 s (disk of the server's open files watched)

A server whose RSS passes --rss-cap-mb (default 8192) is killed; the row then says so. Servers
start with --server-nofile (default 1024, the usual systemd default) as their open-file soft
limit; this process raises its own.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_abuse.py [--kinds ankihost,official]
        [--attacks a,a3,...] [--big-mb 280] [--rss-cap-mb 8192] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import tree_rss_bytes

from tests.support.raw_wire import (
    META_BODY,
    MetaLoop,
    graves_bomb,
    legit_cards,
    login,
    meta,
    nested,
    open_session,
    post,
    repeated,
    revlog_bomb,
    sync_headers,
    zstd_stream,
)
from tests.support.server import SyncServer, health_ok

KINDS = ("ankihost", "official")
USERS = [("attacker", "attacker-pw"), ("victim", "victim-pw"), ("carol", "carol-pw")]
MiB = 1 << 20
REQUEST_TIMEOUT = 150.0
SETTLE_SECS = 3.0
FORGED = "2026-01-01 00:00:00,000 INFO ankihost.request: POST /sync/upload user=alice client=forged"


_BODIES: dict[str, bytes] = {}


def body(name: str, make: Callable[[], Iterable[bytes]]) -> bytes:
    if name not in _BODIES:
        _BODIES[name] = zstd_stream(make())
    return _BODIES[name]


# -- watching the server ------------------------------------------------------------------
class Watch(threading.Thread):
    """Samples the server's RSS every 10 ms; kills it (process group) past `cap_mb`."""

    def __init__(self, server: SyncServer, cap_mb: float) -> None:
        super().__init__(daemon=True)
        assert server.pid is not None
        self.pid, self.cap = server.pid, cap_mb * MiB
        self.peak = 0
        self.killed = False
        self._stop_event = threading.Event()

    def now_mb(self) -> float:
        return tree_rss_bytes(self.pid) / MiB

    def reset(self) -> None:
        self.peak = tree_rss_bytes(self.pid)

    def run(self) -> None:
        while not self._stop_event.wait(0.01):
            rss = tree_rss_bytes(self.pid)
            self.peak = max(self.peak, rss)
            if rss > self.cap and not self.killed:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        self._stop_event.set()


# -- one attack against one server -----------------------------------------------------
@dataclass
class Ctx:
    server: SyncServer
    port: int
    keys: dict[str, str]
    tmpdir: Path
    args: argparse.Namespace
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    attack: str
    kind: str
    status: str = "-"
    seconds: float | None = None
    base_mb: float = 0.0
    peak_mb: float = 0.0
    after_mb: float = 0.0
    victim_worst_ms: float = 0.0
    victim_failed: int = 0
    victim_count: int = 0
    alive: bool = True
    notes: dict[str, Any] = field(default_factory=dict)


Attack = Callable[[Ctx], str]


@contextlib.contextmanager
def fresh_server(kind: str, args: argparse.Namespace, tmpdir: Path) -> Iterator[SyncServer]:
    """A server started with the open-file soft limit of a default deployment."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.server_nofile, hard), hard))
    try:
        server = SyncServer(kind, USERS, env={"TMPDIR": str(tmpdir)})  # type: ignore[arg-type]
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield server
    finally:
        server.cleanup()


def run_one(name: str, attack: Attack, kind: str, args: argparse.Namespace) -> Outcome:
    outcome = Outcome(name, kind)
    tmpdir = Path(tempfile.mkdtemp(prefix="ankihost-abuse-tmp-"))
    try:
        with fresh_server(kind, args, tmpdir) as server:
            assert server.port is not None
            keys = {user: login(server.port, user, pw) for user, pw in USERS[:2]}
            ctx = Ctx(server, server.port, keys, tmpdir, args)
            _measure(ctx, attack, outcome)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return outcome


def _measure(ctx: Ctx, attack: Attack, outcome: Outcome) -> None:
    watch, victim = Watch(ctx.server, ctx.args.rss_cap_mb), MetaLoop(ctx.port, ctx.keys["victim"])
    watch.start()
    try:
        time.sleep(0.3)
        outcome.base_mb = watch.now_mb()
        watch.reset()
        victim.start()
        time.sleep(0.3)
        started = time.monotonic()
        try:
            outcome.status = attack(ctx)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            outcome.status = f"error: {type(exc).__name__}: {str(exc)[:80]}"
        ended = time.monotonic()
        outcome.seconds = ended - started
        outcome.victim_worst_ms, outcome.victim_failed, outcome.victim_count = victim.during(started, ended)
        if victim.failures:
            ctx.notes["victim_failures"] = dict(victim.failures)
        time.sleep(SETTLE_SECS)
        outcome.after_mb = watch.now_mb()
        outcome.peak_mb = watch.peak / MiB
    finally:
        victim.stop()
        watch.stop()
    outcome.alive = ctx.server.alive() and health_ok(ctx.port, timeout=5)
    if watch.killed:
        outcome.status = f"killed at {ctx.args.rss_cap_mb} MB"
    outcome.notes = ctx.notes


# -- body attacks (a) ----------------------------------------------------------------------
def body_attack(method: str, name: str, make: Callable[[], Iterable[bytes]], until: str | None = None) -> Attack:
    def attack(ctx: Ctx) -> str:
        data = body(f"{name}-{ctx.args.big_mb}", make)
        ctx.notes["zstd_kb"] = round(len(data) / 1024, 1)
        hkey = ctx.keys["attacker"]
        if until is not None:
            open_session(ctx.port, hkey, "attack-session", until)
        try:
            status, _ = post(ctx.port, method, data, hkey, "attack-session")
        except TimeoutError:
            return "timeout"
        except (OSError, http.client.HTTPException) as exc:
            return f"closed ({type(exc).__name__})"
        return str(status)
    return attack


def big(args: argparse.Namespace, fraction: float = 1.0) -> int:
    return int(args.big_mb * fraction * MiB)


def attacks_a(args: argparse.Namespace) -> dict[str, Attack]:
    size, small = big(args), big(args, 0.1)
    start_prefix = b'{"minUsn":0,"lnewer":false,'
    return {
        "a": body_attack("start", "graves", lambda: graves_bomb(size)),
        "a2": body_attack("start", "graves-small", lambda: graves_bomb(small)),
        "a3": body_attack("applyChunk", "revlog", lambda: revlog_bomb(size), until="applyChunk"),
        "a4d": body_attack("start", "deep", lambda: nested(
            start_prefix + b'"graves":{"cards":', size, b',"notes":[],"decks":[]}}')),
        "a4k": body_attack("start", "key", lambda: repeated(
            start_prefix + b'"', b"a", size, b"", b'":0}')),
        "a4c": body_attack("applyChanges", "conf", lambda: repeated(
            b'{"changes":{"models":[],"decks":[[],[]],"tags":[],"conf":{"k":[', b'{"a":0},', size, b'{"a":0}',
            b"]}}}"), until="applyChanges"),
        "a4g": body_attack("applyGraves", "applygraves", lambda: repeated(
            b'{"chunk":{"cards":[', b"[[]],", size, b"[[]]", b'],"notes":[],"decks":[]}}'), until="applyGraves"),
        "a4i": body_attack("start", "ignored", lambda: repeated(
            start_prefix + b'"graves":null,"x":[', b"[[]],", size, b"[[]]", b"]}"), until=None),
        "L": body_attack("applyChunk", "legit", lambda: legit_cards(250, MiB), until="applyChunk"),
        "a5m": at_once(SMALL_BOMBS, lambda ctx: post(ctx.port, "meta", small_bomb(MiB - 64 * 1024),
                                                     ctx.keys["attacker"])[0]),
        "a5l": at_once(SMALL_BOMBS, legacy_login_bomb),
    }


# Small-body methods (meta, chunk, ... and legacy logins) get this many bombs at once.
SMALL_BOMBS = 10


def small_bomb(size: int) -> bytes:
    """A zstd body of `size` bytes of `[[[]],[[]],...]`."""
    return body(f"small-{size}", lambda: [b"[" + b"[[]]," * (size // 5 - 1) + b"[[]]]"])


def at_once(times: int, send: Callable[[Ctx], object]) -> Attack:
    """`send` from `times` threads at once; the answers seen."""
    def attack(ctx: Ctx) -> str:
        answers: list[Any] = []
        threads = [threading.Thread(target=lambda: answers.append(_capture(lambda: send(ctx))), daemon=True)
                   for _ in range(times)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT)
        return ",".join(sorted({type(a).__name__ if isinstance(a, BaseException) else str(a) for a in answers}))
    return attack


def legacy_login_bomb(ctx: Ctx) -> int:
    """A protocol-10 login (multipart, gzip) whose data is 3 MiB of nested arrays, before any
    password check (a login's form and its gunzipped payload are capped at 64 KiB each)."""
    data = gzip.compress(b"[" + b"[[]]," * (3 * MiB // 5 - 1) + b"[[]]]", compresslevel=9)
    boundary = "bench-boundary"
    parts = [(b'name="c"', b"1"), (b'name="data"; filename="data"', data)]
    body_bytes = b"".join(b"--%s\r\nContent-Disposition: form-data; %s\r\n\r\n%s\r\n" % (boundary.encode(), d, v)
                          for d, v in parts) + b"--%s--\r\n" % boundary.encode()
    conn = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("POST", "/sync/hostKey", body=body_bytes,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return conn.getresponse().status
    finally:
        conn.close()


# -- header attacks (b) -----------------------------------------------------------------
def raw_exchange(port: int, chunks: Iterable[bytes], timeout: float = 60.0) -> str:
    """Send `chunks` on one connection, then read the status line of the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for chunk in chunks:
                sock.sendall(chunk)
        return _status_line(sock)
    except TimeoutError:
        return "timeout"
    finally:
        sock.close()


def _status_line(sock: socket.socket) -> str:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
    if not data:
        return "closed"
    parts = data.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].decode() if len(parts) > 1 else repr(data[:40])


def request_head(extra: Iterable[bytes], target: bytes = b"/sync/meta") -> Iterator[bytes]:
    yield b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
    yield from extra
    yield b"\r\n"


def big_header(size: int) -> Iterator[bytes]:
    yield b"X-Pad: "
    for _ in range(size // MiB):
        yield b"a" * MiB
    yield b"\r\n"


def many_headers(count: int) -> Iterator[bytes]:
    batch = 1000
    for start in range(0, count, batch):
        yield b"".join(b"X-H%d: v\r\n" % i for i in range(start, min(count, start + batch)))


def long_line(size: int) -> Iterator[bytes]:
    yield b"GET /sync/meta?"
    for _ in range(size // MiB):
        yield b"a" * MiB
    yield b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def attacks_b() -> dict[str, Attack]:
    return {
        "b64": lambda ctx: raw_exchange(ctx.port, request_head(big_header(64 * MiB))),
        "b10k": lambda ctx: raw_exchange(ctx.port, request_head(many_headers(10_000))),
        "b200k": lambda ctx: raw_exchange(ctx.port, request_head(many_headers(200_000))),
        "bline": lambda ctx: raw_exchange(ctx.port, long_line(16 * MiB)),
    }


# -- log attacks (c) ------------------------------------------------------------------------
def log_attack(client: str, times: int) -> Attack:
    def attack(ctx: Ctx) -> str:
        before = ctx.server.log_path.stat().st_size
        statuses = []
        for _ in range(times):
            try:
                statuses.append(str(post(ctx.port, "meta", META_BODY, "not-a-key", client=client, timeout=60)[0]))
            except (OSError, http.client.HTTPException) as exc:
                statuses.append(type(exc).__name__)
        time.sleep(0.5)
        text = ctx.server.log_path.read_bytes()[before:].decode(errors="replace")
        ctx.notes["log_growth_mb"] = round(len(text.encode()) / MiB, 2)
        ctx.notes["forged_line"] = any(line.startswith(FORGED) for line in text.splitlines())
        return ",".join(sorted(set(statuses)))
    return attack


def attacks_c() -> dict[str, Attack]:
    return {
        "c8m": log_attack("x" * (8 * MiB), 10),
        "cnl": log_attack(f"anki,26.9.3\n{FORGED} status=200 ms=1 ip=6.6.6.6", 1),
    }


# -- connection attacks (d) -------------------------------------------------------------------
def legit_ops(ctx: Ctx, client: Any) -> str:
    """A legitimate user's login, meta and normal sync (real client), each timed."""
    times = []
    try:
        started = time.monotonic()
        hkey = login(ctx.port, "carol", "carol-pw")
        times.append(f"login {time.monotonic() - started:.2f}s")
        started = time.monotonic()
        times.append(f"meta {meta(ctx.port, hkey, timeout=60)} {time.monotonic() - started:.2f}s")
        started = time.monotonic()
        _add_note(client)
        action = _in_thread(lambda: client.sync().action, 90)
        times.append(f"sync {action} {time.monotonic() - started:.2f}s")
    except Exception as exc:  # noqa: BLE001 - reported in the table
        times.append(f"FAILED {type(exc).__name__}: {str(exc)[:60]}")
    return "; ".join(times)


def _in_thread(work: Callable[[], Any], timeout: float) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(_capture(work)), daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise TimeoutError(f"no answer within {timeout}s")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def _capture(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
        return exc


def _add_note(client: Any) -> None:
    note = client.col.new_note(client.col.models.by_name("Basic"))
    note["Front"] = f"front {random.random()}"
    client.col.add_note(note, client.col.decks.id("Default"))


@contextlib.contextmanager
def legit_client(ctx: Ctx) -> Iterator[Any]:
    """The legitimate user's device, its collection uploaded before the attack starts."""
    from tests.support.client import SyncClient

    client = SyncClient(ctx.server, "carol", "carol-pw", name="carol")
    try:
        _add_note(client)
        client.login()
        client.sync()
        yield client
    finally:
        client.cleanup()


def closed_count(socks: list[socket.socket]) -> int:
    closed = 0
    for sock in socks:
        try:
            sock.setblocking(False)
            if sock.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def open_sockets(port: int, count: int, first: bytes = b"") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if first:
                sock.sendall(first)
            socks.append(sock)
        except OSError:
            break
    return socks


def idle_attack(ctx: Ctx) -> str:
    with legit_client(ctx) as client:
        socks = open_sockets(ctx.port, 2000)
        try:
            ctx.notes["opened"] = len(socks)
            time.sleep(2)
            result = legit_ops(ctx, client)
            ctx.notes["closed_by_server"] = closed_count(socks)
            return result
        finally:
            for sock in socks:
                sock.close()


def slowloris_attack(ctx: Ctx) -> str:
    with legit_client(ctx) as client:
        socks = open_sockets(ctx.port, 500, b"POST /sync/meta HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        stop = threading.Event()
        trickler = threading.Thread(target=_trickle, args=(socks, stop), daemon=True)
        trickler.start()
        try:
            ctx.notes["opened"] = len(socks)
            time.sleep(5)
            result = legit_ops(ctx, client)
            stop.wait(max(0.0, 20 - 5))
            ctx.notes["closed_by_server_after_20s"] = closed_count(socks)
            return result
        finally:
            stop.set()
            trickler.join(10)
            for sock in socks:
                sock.close()


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    while not stop.wait(5):
        for i, sock in enumerate(socks):
            with contextlib.suppress(OSError):
                sock.send(b"X-Slow-%d: a\r\n" % i)


def chunked_attack(ctx: Ctx) -> str:
    """An upload that never ends, 10 MiB/s for 25 s; temp disk and legit ops watched."""
    with legit_client(ctx) as client:
        stop = threading.Event()
        state: dict[str, Any] = {"sent": 0, "status": "still sending"}
        sender = threading.Thread(target=_send_chunked, args=(ctx, stop, state), daemon=True)
        sender.start()
        assert ctx.server.pid is not None
        disk_base = disk_peak = _open_file_bytes(ctx.server.pid)
        legit = "-"
        started = time.monotonic()
        while time.monotonic() - started < 25 and (sender.is_alive() or legit == "-"):
            disk_peak = max(disk_peak, _open_file_bytes(ctx.server.pid))
            if legit == "-" and (time.monotonic() - started > 5 or not sender.is_alive()):
                legit = legit_ops(ctx, client)
            time.sleep(0.5)
        stop.set()
        sender.join(30)
        ctx.notes.update(sent_mb=round(state["sent"] / MiB), upload=state["status"],
                         open_files_growth_mb=round((disk_peak - disk_base) / MiB))
        return legit


def _send_chunked(ctx: Ctx, stop: threading.Event, state: dict[str, Any]) -> None:
    headers = sync_headers(ctx.keys["attacker"])
    head = b"POST /sync/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
    piece = os.urandom(MiB)
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", ctx.port), timeout=30)
    try:
        sock.sendall(head)
        while not stop.is_set():
            started = time.monotonic()
            sock.sendall(chunk)
            state["sent"] += len(piece)
            stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))
        state["status"] = "client stopped"
    except OSError as exc:
        state["status"] = f"server ended it after {state['sent'] // MiB} MiB ({type(exc).__name__}): " + \
            _status_or_closed(sock)
    finally:
        sock.close()


def _status_or_closed(sock: socket.socket) -> str:
    try:
        return _status_line(sock)
    except OSError:
        return "closed"


def _open_file_bytes(pid: int) -> int:
    """Disk used by the regular files the server has open (temp files are often unlinked)."""
    total = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                if stat.S_ISREG(st.st_mode):
                    total += st.st_blocks * 512
    return total


def attacks_d() -> dict[str, Attack]:
    return {"d2k": idle_attack, "dslow": slowloris_attack, "dchunk": chunked_attack}


# -- running and printing -------------------------------------------------------------------
def all_attacks(args: argparse.Namespace) -> dict[str, Attack]:
    return {**attacks_a(args), **attacks_b(), **attacks_c(), **attacks_d()}


def print_table(outcomes: list[Outcome]) -> None:
    print(f"\n{'attack':<7}{'server':<10}{'answer':<42}{'secs':>7}{'base MB':>9}{'peak MB':>9}"
          f"{'after MB':>9}{'victim worst ms':>16}{'fail/n':>8}  alive  notes")
    for o in outcomes:
        secs = "-" if o.seconds is None else f"{o.seconds:.2f}"
        notes = ", ".join(f"{k}={v}" for k, v in o.notes.items())
        print(f"{o.attack:<7}{o.kind:<10}{o.status[:41]:<42}{secs:>7}{o.base_mb:>9.0f}{o.peak_mb:>9.0f}"
              f"{o.after_mb:>9.0f}{o.victim_worst_ms:>16.0f}{f'{o.victim_failed}/{o.victim_count}':>8}  "
              f"{'yes' if o.alive else 'NO ':<5}  {notes}")
        if len(o.status) > 41:
            print(f"{'':<17}{o.status}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--attacks", default="all", help="comma-separated names (default all)")
    parser.add_argument("--big-mb", type=float, default=280, help="size of the big bodies, MiB (default 280)")
    parser.add_argument("--rss-cap-mb", type=float, default=8192, help="kill a server past this RSS")
    parser.add_argument("--server-nofile", type=int, default=1024, help="servers' open-file soft limit")
    parser.add_argument("--json", metavar="PATH")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attacks = all_attacks(args)
    names = list(attacks) if args.attacks == "all" else args.attacks.split(",")
    outcomes = []
    for name in names:
        for kind in args.kinds.split(","):
            print(f"-- {name} against {kind}", flush=True)
            outcomes.append(run_one(name, attacks[name], kind, args))
            print_table(outcomes[-1:])
    print_table(outcomes)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

