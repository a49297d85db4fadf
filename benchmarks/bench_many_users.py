"""Benchmark: hundreds of users with small collections on one small machine.

A school or community server has many users, each with a small collection, who sync now and
then: one after another, and in bursts (a class ending). What matters there is the server's
CPU per sync, its memory once users have gone idle, how late syncs finish in a burst, and how
often two devices of one user syncing at the same moment get "only one copy of Anki can sync
at once" (409).

The real client's traffic is recorded once (against the official server, through a recording
proxy): device A full-uploads a collection of a few hundred notes and device B downloads it
(set-up), then A answers some cards, adds two notes and syncs (push), and B syncs (pull).
Each round, a fresh server with `--users` accounts gets that traffic replayed, byte for byte
but for each request's host key, from light worker processes, so nearly all the CPU measured
is the server's:

1. set-up: every user's upload and download (not timed);
2. in turn: half the users, one after another, push then pull (two normal syncs each);
3. burst: the other half all at once (push then pull each);
4. idle: the server's memory after every user has synced and then been idle `--idle` seconds
   (ankihost closes idle users' databases: it runs with ANKIHOST_IDLE_CLOSE_SECS=`--idle`/2);
   compared with its memory right after start-up;
5. overlap: for `--overlap` users, both devices sync at the same moment; a device whose
   request gets 409 stops, as the app does. The share of such syncs is the conflict rate.

Every answer of phases 1–3 must have its recorded status, and every sanityCheck2 must say "ok".

    PYTHONPATH=. .venv/bin/python benchmarks/bench_many_users.py [--rounds 3] [--users 200]
        [--notes 300] [--idle 20] [--overlap 40] [--json out.json]
"""

from __future__ import annotations

import concurrent.futures
import http.client
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import zstandard
from bench_concurrent import tree_cpu_seconds
from bench_concurrent_replay import requests_for
from common import (
    Results,
    add_new_notes,
    answer_reviews,
    bench_server,
    build_template,
    client_from_template,
    parse_args,
    round_order,
    tree_rss_bytes,
)

from tests.support.content import build_large_collection
from tests.support.proxy import Exchange, ForwardingProxy
from tests.support.server import ServerKind

RECORD_USER, RECORD_PASSWORD = "recorded", "recorded-password"
Request = tuple[str, str, dict[str, str], bytes, int]  # method, path, headers, body, status
PROCESSES = 4  # worker processes; each runs its users in threads


# -- recording ----------------------------------------------------------------------------
def record(template: Path) -> dict[str, list[Exchange]]:
    """The set-up, push and pull of one user, through a recording proxy."""
    with bench_server("official", users=[(RECORD_USER, RECORD_PASSWORD)]) as server:
        proxy = ForwardingProxy(server.server, record=True)
        with proxy:
            a = client_from_template(template, server, "A", RECORD_USER, RECORD_PASSWORD)
            b = client_from_template(None, server, "B", RECORD_USER, RECORD_PASSWORD)
            try:
                for client in (a, b):
                    client.use_server(proxy)
                    client.login()
                phases: dict[str, list[Exchange]] = {}
                mark = 0

                def phase(name: str) -> None:
                    nonlocal mark
                    assert proxy.exchanges is not None
                    phases[name] = [e for e in proxy.exchanges[mark:] if e.path != "/sync/hostKey"]
                    mark = len(proxy.exchanges)

                phase("login")
                a.full_upload()
                if b.sync().action != "download":
                    raise AssertionError("B's first sync should be a full download")
                phase("setup")
                answer_reviews(a.col, 10, seed=1)
                add_new_notes(a.col, 2, seed=1)
                if a.sync().action != "normal":
                    raise AssertionError("A's sync should be normal")
                phase("push")
                if b.sync().action != "normal":
                    raise AssertionError("B's sync should be normal")
                phase("pull")
                return phases
            finally:
                a.cleanup()
                b.cleanup()


def as_user(exchanges: list[Exchange], user: str) -> list[Request]:
    """The recording as `user` (password "pw-<user>") sends it, with the recorded statuses."""
    requests, expected = requests_for(exchanges, user, f"pw-{user}")
    return [(*request, want[0]) for request, want in zip(requests, expected, strict=True)]


# -- replay (in worker processes) ---------------------------------------------------------
def replay(port: int, requests: list[Request], strict: bool) -> tuple[float, float, bool]:
    """(start, end, conflicted): send the requests on one connection; with `strict`, every
    status must be as recorded and every sanity check "ok"; else stop at the first 409."""
    link = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.monotonic()
    try:
        for method, path, headers, body, status in requests:
            link.request(method, path, body=body, headers=headers)
            response = link.getresponse()
            answer = response.read()
            if response.status == 409 and not strict:
                return start, time.monotonic(), True
            if strict and response.status != status:
                raise AssertionError(f"{path}: {response.status}, recorded {status}: {answer[:200]!r}")
            if strict and path.endswith("/sanityCheck2"):
                reply = orjson.loads(zstandard.ZstdDecompressor().decompressobj().decompress(answer))
                if reply.get("status") != "ok":
                    raise AssertionError(f"sanity check failed: {reply}")
        return start, time.monotonic(), False
    finally:
        link.close()


def replay_many(port: int, jobs: list[list[list[Request]]], strict: bool) -> list[tuple[float, float, bool]]:
    """Each job (its sequences one after another) in a thread of its own, all at once."""
    out: list[tuple[float, float, bool]] = []
    lock = threading.Lock()

    def run(job: list[list[Request]]) -> None:
        for sequence in job:
            result = replay(port, sequence, strict)
            with lock:
                out.append(result)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def in_processes(pool: concurrent.futures.ProcessPoolExecutor, port: int,
                 jobs: list[list[list[Request]]], strict: bool) -> list[tuple[float, float, bool]]:
    shares = [jobs[i::PROCESSES] for i in range(PROCESSES)]
    futures = [pool.submit(replay_many, port, share, strict) for share in shares if share]
    return [result for future in futures for result in future.result()]


# -- one round ----------------------------------------------------------------------------
def one_round(kind: ServerKind, pool: concurrent.futures.ProcessPoolExecutor,
              phases: dict[str, list[Exchange]], args: Any, results: Results) -> None:
    users = [f"user{i + 1}" for i in range(args.users)]
    env = {"ANKIHOST_IDLE_CLOSE_SECS": str(max(1, args.idle // 2))} if kind == "ankihost" else {}
    with bench_server(kind, users=[(u, f"pw-{u}") for u in users], env=env) as server:
        port, pid = server.server.port, server.server.pid
        assert port is not None and pid is not None
        time.sleep(1.0)
        startup_rss = tree_rss_bytes(pid) / 2**20
        plan = {u: {name: as_user(phases[name], u) for name in ("setup", "push", "pull")} for u in users}
        in_processes(pool, port, [[plan[u]["setup"]] for u in users], strict=True)
        half = len(users) // 2
        server.rss.reset()
        cpu = tree_cpu_seconds(pid)
        one_after_another = [seq for u in users[:half] for seq in (plan[u]["push"], plan[u]["pull"])]
        turns = in_processes(pool, port, [one_after_another], strict=True)
        turn_cpu = tree_cpu_seconds(pid) - cpu
        cpu = tree_cpu_seconds(pid)
        burst = in_processes(pool, port, [[plan[u]["push"], plan[u]["pull"]] for u in users[half:]], strict=True)
        burst_cpu = tree_cpu_seconds(pid) - cpu
        peak = server.rss.peak_mb
        time.sleep(args.idle)
        idle_rss = tree_rss_bytes(pid) / 2**20
        overlap = in_processes(pool, port, [job for u in users[: args.overlap]
                                            for job in ([plan[u]["push"]], [plan[u]["pull"]])], strict=False)
    record_round(kind, results, turns, turn_cpu, burst, burst_cpu, overlap)
    results.add_time("startup RSS MB", kind, startup_rss)
    results.add_time("idle RSS MB", kind, idle_rss)
    results.add_time("idle - startup MB", kind, idle_rss - startup_rss)
    results.add_peak(kind, peak)


def record_round(kind: str, results: Results, turns: list[tuple[float, float, bool]], turn_cpu: float,
                 burst: list[tuple[float, float, bool]], burst_cpu: float,
                 overlap: list[tuple[float, float, bool]]) -> None:
    latencies = sorted(end - start for start, end, _ in turns)
    results.add_time("CPU ms / sync (turn)", kind, 1000 * turn_cpu / len(turns))
    results.add_time("sync p50 s (turn)", kind, statistics.median(latencies))
    burst_latencies = sorted(end - start for start, end, _ in burst)
    results.add_time("CPU ms / sync (burst)", kind, 1000 * burst_cpu / len(burst))
    results.add_time("sync p95 s (burst)", kind, burst_latencies[int(0.95 * (len(burst_latencies) - 1))])
    results.add_time("burst wall s", kind, max(e for _, e, _ in burst) - min(s for s, _, _ in burst))
    results.add_time("conflict rate (overlap)", kind, sum(c for _, _, c in overlap) / len(overlap))


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], rounds=3, notes=300, extra=[
        (("--users",), dict(type=int, default=200, help="accounts (default 200)")),
        (("--idle",), dict(type=int, default=20, help="seconds idle before measuring memory (default 20)")),
        (("--overlap",), dict(type=int, default=40, help="users whose two devices sync at once (default 40)")),
    ])
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-many-"))
    try:
        template = build_template(work, build_large_collection, notes=args.notes, reviews=30)
        phases = record(template)
        info = {"users": args.users, "notes_per_user": args.notes, "collection_kb": template.stat().st_size // 1024,
                "requests_per_sync": (len(phases["push"]) + len(phases["pull"])) / 2, "idle_s": args.idle}
        print(f"recorded: {info}", flush=True)
        results = Results(f"{args.users} users, replayed traffic, {args.rounds} rounds", info=info)
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(PROCESSES, mp_context=spawn) as pool:
            for r, kind in round_order(args.rounds, args.kinds):
                one_round(kind, pool, phases, args, results)
                print(f"round {r + 1} {kind:<9} CPU/sync {results.times['CPU ms / sync (turn)'][kind][-1]:.2f} ms "
                      f"idle RSS {results.times['idle RSS MB'][kind][-1]:.1f} MB", flush=True)
        results.print_table()
        results.write_json(args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
