"""Benchmark: 8 users syncing at once, with the clients' own work taken off the machine.

`bench_concurrent.py` runs 8 real clients on the same 2 cores as the server. There the
clients' own CPU (answering cards, building and checking collection files, compressing)
is about three times the server's, so the wall time follows the clients whatever the
server does, and how a server handles 8 users at once barely shows. In a real deployment
the clients are phones and desktops elsewhere: the server has its cores to itself.

This benchmark gives it that. The real client's traffic for one user's cycle is recorded
once through a forwarding proxy (against the official server), the same cycle as
`bench_concurrent.py`:

1. A full-uploads its collection (5,000 notes / 10,000 cards, 400 cards review-due)
2. A answers 100 cards and adds 20 notes, then syncs      (normal sync, push)
3. B (empty) syncs: the server asks for a full download   (meta + full download)
4. B answers 50 cards, then syncs                          (normal sync, push)
5. A syncs and pulls B's reviews                           (normal sync, pull)

(logins are not replayed: the devices are logged in already). Each round, a fresh server
with 8 users gets that recording from 8 worker processes at once, one per user, byte for
byte except the host key in each request's `anki-sync` header, which becomes that user's.
The workers only send bytes and read answers, so nearly all the CPU left is the server's.
Every answer must have the status it had when recorded, every `sanityCheck2` answer must say
"ok", and B's full download must be as large as when recorded.

The metric is the wall time from the start barrier to the last user done
(``all users (wall)``), with the median per-user time, the server's CPU seconds and the
workers' (``replay CPU``). Fresh server per round, alternating ankihost/official.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_concurrent_replay.py [--rounds 7] [--users 8]
        [--notes 5000] [--json out.json]
"""

from __future__ import annotations

import hashlib
import http.client
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import zstandard
from bench_concurrent import Workers, machine_busy_seconds, tree_cpu_seconds, user_template
from common import (
    Results,
    add_new_notes,
    answer_reviews,
    bench_server,
    client_from_template,
    parse_args,
    round_order,
)

from tests.support.proxy import Exchange, ForwardingProxy
from tests.support.server import ServerKind

RECORD_USER, RECORD_PASSWORD = "recorded", "recorded-password"
SKIPPED_PATHS = ("/sync/hostKey",)

# A request as the workers send it: method, path, headers, body; and what must come back.
Request = tuple[str, str, dict[str, str], bytes]
Expected = tuple[int, str, int]  # status, path, size of the recorded answer body


# -- recording ----------------------------------------------------------------------------
def record_cycle(template: Path) -> list[Exchange]:
    """One user's cycle through a recording proxy in front of the official server."""
    with bench_server("official", users=[(RECORD_USER, RECORD_PASSWORD)]) as server:
        proxy = ForwardingProxy(server.server, record=True)
        with proxy:
            a = client_from_template(template, server, "A", RECORD_USER, RECORD_PASSWORD)
            b = client_from_template(None, server, "B", RECORD_USER, RECORD_PASSWORD)
            try:
                for client in (a, b):
                    client.use_server(proxy)
                    client.login()
                a.full_upload()
                answer_reviews(a.col, 100, seed=1)
                add_new_notes(a.col, 20, seed=1)
                expect(a.sync().action, "normal", "A push")
                expect(b.sync().action, "download", "B first sync")
                answer_reviews(b.col, 50, seed=2)
                expect(b.sync().action, "normal", "B push")
                expect(a.sync().action, "normal", "A pull")
            finally:
                a.cleanup()
                b.cleanup()
        assert proxy.exchanges is not None
        return [e for e in proxy.exchanges if e.path not in SKIPPED_PATHS]


def expect(action: str, wanted: str, what: str) -> None:
    if action != wanted:
        raise AssertionError(f"{what}: expected a {wanted} sync, got {action}")


def requests_for(exchanges: list[Exchange], user: str, password: str) -> tuple[list[Request], list[Expected]]:
    """The recording as `user` sends it: only the host key in `anki-sync` changes."""
    host_key = hashlib.sha1(f"{user}:{password}".encode()).hexdigest()
    requests: list[Request] = []
    expected: list[Expected] = []
    for e in exchanges:
        headers = {name: value for name, value in e.headers if name.lower() not in ("host", "content-length")}
        for name in headers:
            if name.lower() == "anki-sync":
                sync_header = orjson.loads(headers[name])
                sync_header["k"] = host_key
                headers[name] = orjson.dumps(sync_header).decode()
        requests.append((e.method, e.path, headers, e.body))
        expected.append((e.status, e.path, len(e.response_body)))
    return requests, expected


# -- worker process -----------------------------------------------------------------------
def replay_worker(index: int, conn: Connection, barrier: Any) -> None:
    """Serve rounds until told to stop: a task -> ("done", report) | ("error", text)."""
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            requests, expected = task["requests"], task["expected"]
            link = http.client.HTTPConnection("127.0.0.1", task["port"], timeout=300)
            link.connect()
            barrier.wait(120)
            cpu = time.process_time()
            started = time.monotonic()
            for (method, path, headers, body), want in zip(requests, expected, strict=True):
                link.request(method, path, body=body, headers=headers)
                response = link.getresponse()
                answer = response.read()
                check_answer(path, response, answer, want)
            finished = time.monotonic()
            link.close()
            conn.send(("done", {"start": started, "end": finished, "cpu": time.process_time() - cpu}))
        except BaseException:  # noqa: BLE001 - reported to the parent
            barrier.abort()
            conn.send(("error", f"worker {index} ({task.get('user')}):\n{traceback.format_exc()}"))


def check_answer(path: str, response: http.client.HTTPResponse, answer: bytes, want: Expected) -> None:
    status, _, recorded_size = want
    if response.status != status:
        raise AssertionError(f"{path}: status {response.status}, recorded {status}: {answer[:200]!r}")
    if path.endswith("/sanityCheck2"):
        reply = orjson.loads(zstandard.ZstdDecompressor().decompressobj().decompress(answer))
        if reply.get("status") != "ok":
            raise AssertionError(f"sanity check failed on replay: {reply}")
    if path.endswith("/download") and len(answer) != recorded_size:
        # the same collection file, compressed the same way: sizes differ only by framing
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(answer)
        if int(response.getheader("anki-original-size") or -1) != len(plain):
            raise AssertionError(f"download: {len(plain)} bytes, header says otherwise")


# -- parent -------------------------------------------------------------------------------
def one_round(kind: ServerKind, workers: Workers, exchanges: list[Exchange], users: int,
              results: Results) -> float:
    accounts = [(f"user{i + 1}", f"password-{i + 1}") for i in range(users)]
    with bench_server(kind, users=accounts) as server:
        tasks = []
        for user, password in accounts:
            requests, expected = requests_for(exchanges, user, password)
            tasks.append(dict(user=user, port=server.server.port, requests=requests, expected=expected))
        before: dict[str, float] = {}

        def on_start() -> None:
            server.rss.reset()
            before.update(server=tree_cpu_seconds(server.server.pid), machine=machine_busy_seconds())

        reports = workers.run(tasks, on_start)
        server_cpu = tree_cpu_seconds(server.server.pid) - before["server"]
        machine_cpu = machine_busy_seconds() - before["machine"]
        results.add_peak(kind, server.rss.peak_mb, server.rss.hwm_mb)
    start = min(r["start"] for r in reports)
    wall = float(max(r["end"] for r in reports) - start)
    replay_cpu = sum(r["cpu"] for r in reports)
    results.add_time("all users (wall)", kind, wall)
    results.add_time("per user (median)", kind, statistics.median(r["end"] - r["start"] for r in reports))
    results.add_time("server CPU", kind, server_cpu)
    results.add_time("replay CPU (sum)", kind, replay_cpu)
    results.add_time("other CPU", kind, max(0.0, machine_cpu - server_cpu - replay_cpu))
    return wall


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], rounds=7, notes=5000, extra=[
        (("--users",), dict(type=int, default=8, help="concurrent users / replay processes (default 8)")),
    ])
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-replay-"))
    workers = None
    try:
        started = time.perf_counter()
        template, info = user_template(work, args.notes, args.users)
        exchanges = record_cycle(template)
        info.update(requests_per_user=len(exchanges),
                    upload_mb=round(sum(len(e.body) for e in exchanges) / 2**20, 2),
                    download_mb=round(sum(len(e.response_body) for e in exchanges) / 2**20, 2))
        workers = Workers(args.users, target=replay_worker)
        print(f"recorded one cycle and started {args.users} workers in "
              f"{time.perf_counter() - started:.1f}s: {info}", flush=True)
        results = Results(f"{args.users} users at once, replayed client traffic, {args.notes} notes each, "
                          f"{args.rounds} rounds", info=info)
        for _ in range(args.warmup):  # untimed: first-use costs in the workers and servers
            for kind in args.kinds:
                one_round(kind, workers, exchanges, args.users, Results("warm-up"))
        for r, kind in round_order(args.rounds, args.kinds):
            wall = one_round(kind, workers, exchanges, args.users, results)
            print(f"round {r + 1} {kind:<9} all users {wall:.3f}s "
                  f"server CPU {results.times['server CPU'][kind][-1]:.2f}s", flush=True)
        results.print_table()
        results.write_json(args.json)
    finally:
        if workers is not None:
            workers.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    sys.exit(main())
