"""Benchmark: 8 users syncing at the same time, each from its own client process.

One server with 8 users; 8 worker processes (multiprocessing, "spawn"), each
running the real client for one user with its own collection (a copy of a
generated 5,000-note / 10,000-card collection, ≈2.4 MB, 400 cards made
review-due).
Before the start barrier (untimed) every worker copies the collection for
its two devices A and B and logs both in. Then, timed, all users at once run
this cycle:

1. A full-uploads its collection                           (full upload)
2. A answers 100 cards and adds 20 notes, then syncs       (normal sync, push)
3. B (empty) syncs: the server asks for a full download    (normal start + full download)
4. B answers 50 cards, then syncs                          (normal sync, push)
5. A syncs and pulls B's reviews                           (normal sync, pull)

Checked afterwards: A and B hold the same cards, notes and review log.
With ``--mix fullsync`` the timed cycle is instead a burst of full syncs, as when a group
sets up its devices at once (or restores after moving servers):

1. A full-uploads its collection                           (full upload)
2. B (empty) syncs and full-downloads it                   (normal start + full download)

This mix puts the server's own work (validating and storing uploads, preparing downloads)
in front: the official server runs it for one user at a time behind its global lock.
With ``--mix normal`` only normal syncs are timed, as on an ordinary day when a group's
devices sync at once. Before the barrier (untimed) A full-uploads, B downloads, A answers
100 cards and adds 20 notes, B answers 50 cards; then, timed:

1. A syncs                                                  (normal sync, push)
2. B syncs                                                  (normal sync, push and pull)
3. A syncs                                                  (normal sync, pull)

With ``--mix incremental`` (meant with ``--notes 20000``), every user runs the scenario of
`bench_incremental.py` at once: untimed, A answers 1,000 cards and adds 200 notes; timed,
A's normal sync pushes them and B's pulls them.

The metric is the wall time from the barrier to the last user done
(``all users (wall)``); per step, the median over users of its duration is
reported too (``step1`` ... ``step5``; the client's own work, e.g. answering
cards, is inside its step). Fresh server per round, alternating
ankihost/official; the worker processes are reused across rounds (imports are
not timed). Also reported, over the timed window: each server's peak RSS, the
CPU seconds of the server and of all clients, and ``other CPU`` (the rest of
the machine's busy time: this script's own sampler, the kernel, other work on
the machine - if large, the figures are disturbed).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_concurrent.py [--rounds 5] [--users 8] [--notes 5000]
        [--json out.json]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from common import (
    Results,
    bench_server,
    build_template,
    make_reviews_due,
    parse_args,
    round_order,
)

from tests.support.content import build_large_collection
from tests.support.server import ServerKind

# metric names of the steps of each mix (each the median over users)
STEPS = {
    "cycle": ("step1 full upload", "step2 push", "step3 download", "step4 push", "step5 pull"),
    "fullsync": ("step1 full upload", "step2 download"),
    "normal": ("step1 A push", "step2 B push+pull", "step3 A pull"),
    "incremental": ("step1 A push", "step2 B pull"),
}
# The mixes that time normal syncs only: (device, what) per timed sync.
NORMAL_ONLY = {
    "normal": (("A", "A push"), ("B", "B push and pull"), ("A", "A pull")),
    "incremental": (("A", "A push"), ("B", "B pull")),
}
BARRIER_TIMEOUT = 120.0
ROUND_TIMEOUT = 600.0


@dataclass
class Endpoint:
    """What SyncClient needs from a server: its endpoint and start counter."""

    endpoint: str
    starts: int = 1


# -- worker process ---------------------------------------------------------------------
def worker_main(index: int, conn: Connection, barrier: mp.synchronize.Barrier) -> None:
    """Serve rounds until told to stop: ("round", task) -> ("done", report) | ("error", text)."""
    # imported here: the worker is spawned, so this runs in the fresh process
    from common import add_new_notes, answer_reviews

    from tests.support.client import SyncClient

    while True:
        message = conn.recv()
        if message is None:
            return
        task = message
        a = b = None
        try:
            folder = Path(task["folder"])
            for device in ("A", "B"):
                (folder / device).mkdir(parents=True)
            shutil.copyfile(task["template"], folder / "A" / "collection.anki2")
            server = Endpoint(task["endpoint"])
            a = SyncClient(server, task["user"], task["password"], folder=folder / "A", name="A")
            b = SyncClient(server, task["user"], task["password"], folder=folder / "B", name="B")
            a.login()
            b.login()
            seed = task["seed"]
            timed = NORMAL_ONLY.get(task["mix"])
            if timed is not None:  # untimed: both devices set up, reviews done
                a.full_upload()
                if b.sync().action != "download":
                    raise AssertionError("B: expected a full download")
                if task["mix"] == "normal":
                    answer_reviews(a.col, 100, seed=seed)
                    add_new_notes(a.col, 20, seed=seed)
                    answer_reviews(b.col, 50, seed=seed + 1)
                else:
                    if answer_reviews(a.col, 1000, seed=seed) != 1000:
                        raise AssertionError("A: fewer than 1,000 cards to answer")
                    add_new_notes(a.col, 200, seed=seed)
            barrier.wait(BARRIER_TIMEOUT)
            cpu = time.process_time()  # all threads of this client process
            marks = [time.monotonic()]
            if timed is not None:
                for device, what in timed:
                    expect_normal((a if device == "A" else b).sync(), what)
                    marks.append(time.monotonic())
                finish_round(conn, task, a, b, marks, cpu)
                continue
            a.full_upload()
            marks.append(time.monotonic())
            if task["mix"] == "fullsync":
                if b.sync().action != "download":
                    raise AssertionError("B: expected a full download")
                marks.append(time.monotonic())
                finish_round(conn, task, a, b, marks, cpu)
                continue
            answer_reviews(a.col, 100, seed=seed)
            add_new_notes(a.col, 20, seed=seed)
            expect_normal(a.sync(), "A push")
            marks.append(time.monotonic())
            if b.sync().action != "download":
                raise AssertionError("B: expected a full download")
            marks.append(time.monotonic())
            answer_reviews(b.col, 50, seed=seed + 1)
            expect_normal(b.sync(), "B push")
            marks.append(time.monotonic())
            expect_normal(a.sync(), "A pull")
            marks.append(time.monotonic())
            finish_round(conn, task, a, b, marks, cpu)
        except BaseException:  # noqa: BLE001 - reported to the parent
            barrier.abort()
            conn.send(("error", f"worker {index} ({task.get('user')}):\n{traceback.format_exc()}"))
        finally:
            for client in (a, b):
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # noqa: BLE001
                        pass
            shutil.rmtree(task["folder"], ignore_errors=True)


def finish_round(conn: Connection, task: dict[str, Any], a: Any, b: Any, marks: list[float],
                 cpu_start: float) -> None:
    """Check both devices agree, then report the round to the parent."""
    ca, cb = counts(a), counts(b)
    if ca != cb:
        raise AssertionError(f"user {task['user']}: cards/notes/revlog A {ca} != B {cb}")
    conn.send(("done", {"marks": marks, "counts": ca, "cpu": time.process_time() - cpu_start}))


def expect_normal(result: object, what: str) -> None:
    if getattr(result, "action", None) != "normal":
        raise AssertionError(f"{what}: expected a normal sync, got {result}")


def counts(client: object) -> tuple[int, int, int]:
    db = client.col.db  # type: ignore[attr-defined]
    return (db.scalar("select count() from cards"), db.scalar("select count() from notes"),
            db.scalar("select count() from revlog"))


# -- parent -------------------------------------------------------------------------------------
def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine so far (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds of the server process (all its threads) and its
    live children, from /proc (0 where unavailable)."""
    if pid is None or not os.path.isdir("/proc"):
        return 0.0
    from common import _proc_children

    children = _proc_children()
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            fields = stat[stat.rfind(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except (OSError, ValueError, IndexError):
            pass
        stack.extend(children.get(current, []))
    return float(total / os.sysconf("SC_CLK_TCK"))


class Workers:
    """N spawned client processes, reused across rounds; always stopped."""

    def __init__(self, n: int, target: Callable[[int, Connection, Any], None] | None = None) -> None:
        """``target(index, conn, barrier)`` serves the rounds (default: `worker_main`)."""
        ctx = mp.get_context("spawn")
        self.barrier = ctx.Barrier(n + 1)  # the workers and this process
        self.conns: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for i in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target or worker_main, args=(i, child, self.barrier), name=f"bench-user-{i + 1}",
                               daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, tasks: list[dict[str, Any]], on_start: Callable[[], None]) -> list[dict[str, Any]]:
        """Hand out one task per worker; ``on_start`` runs as the barrier releases them."""
        self.barrier.reset()
        for conn, task in zip(self.conns, tasks, strict=True):
            conn.send(task)
        try:
            self.barrier.wait(BARRIER_TIMEOUT)
        except threading.BrokenBarrierError:
            pass  # a worker failed during its set-up: its report says why
        else:
            on_start()
        reports: list[dict[str, Any]] = []
        errors: list[str] = []
        deadline = time.monotonic() + ROUND_TIMEOUT
        for conn, proc in zip(self.conns, self.procs, strict=True):
            while not conn.poll(0.5):
                if not proc.is_alive():
                    raise RuntimeError(f"{proc.name} died (exit code {proc.exitcode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{proc.name} did not finish within {ROUND_TIMEOUT}s")
            status, payload = conn.recv()
            (reports if status == "done" else errors).append(payload)
        if errors:
            # a worker that failed aborted the barrier: the others report BrokenBarrierError
            real = [e for e in errors if "BrokenBarrierError" not in e] or errors
            raise RuntimeError("\n".join(real))
        return reports

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()


def user_template(work: Path, notes: int, users: int, due: int = 400) -> tuple[Path, dict[str, Any]]:
    """Each user's collection (copied per round): ``notes`` generated notes, ``due`` cards due."""
    from anki.collection import Collection

    template = build_template(work, build_large_collection, notes=notes, reviews=60)
    col = Collection(str(template))
    try:
        make_reviews_due(col, due)
        info: dict[str, Any] = dict(users=users, notes_per_user=col.note_count(),
                                    cards_per_user=col.card_count())
    finally:
        col.close()
    info.update(collection_mb=round(template.stat().st_size / 2**20, 1), cpus=os.cpu_count())
    return template, info


def one_round(kind: ServerKind, workers: Workers, template: Path, work: Path, users: int,
              results: Results, seed: int, mix: str) -> float:
    """Run one round; returns the wall time from the barrier to the last user done."""
    accounts = [(f"user{i + 1}", f"password-{i + 1}") for i in range(users)]
    with bench_server(kind, users=accounts) as server:
        tasks = [dict(folder=str(work / f"r{seed}-{kind}-{user}"), template=str(template),
                      endpoint=server.endpoint, user=user, password=password, seed=seed * 100 + i,
                      mix=mix)
                 for i, (user, password) in enumerate(accounts)]
        before: dict[str, float] = {}

        def on_start() -> None:
            server.rss.reset()
            before.update(server=tree_cpu_seconds(server.server.pid), machine=machine_busy_seconds())

        reports = workers.run(tasks, on_start)
        server_cpu = tree_cpu_seconds(server.server.pid) - before["server"]
        machine_cpu = machine_busy_seconds() - before["machine"]
        results.add_peak(kind, server.rss.peak_mb, server.rss.hwm_mb)
    marks = [r["marks"] for r in reports]
    start = min(m[0] for m in marks)
    wall = float(max(m[-1] for m in marks) - start)
    results.add_time("all users (wall)", kind, wall)
    for step_index, step in enumerate(STEPS[mix]):
        per_user = [m[step_index + 1] - m[step_index] for m in marks]
        results.add_time(step, kind, statistics.median(per_user))
    results.add_time("barrier skew", kind, max(m[0] for m in marks) - start)
    clients_cpu = sum(r["cpu"] for r in reports)
    results.add_time("server CPU", kind, server_cpu)
    results.add_time("clients CPU (sum)", kind, clients_cpu)
    results.add_time("other CPU", kind, max(0.0, machine_cpu - server_cpu - clients_cpu))
    return wall


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], rounds=5, notes=5000, extra=[
        (("--users",), dict(type=int, default=8, help="concurrent users / client processes (default 8)")),
        (("--mix",), dict(choices=sorted(STEPS), default="cycle",
                          help="cycle: full upload, pushes, download, pull (default); "
                               "fullsync: a burst of full uploads and downloads; "
                               "normal: only normal syncs (set-up untimed); incremental: "
                               "bench_incremental's push and pull for every user at once")),
    ])
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-conc-"))
    workers = None
    try:
        started = time.perf_counter()
        # "incremental": 1,000 answers, and "Again" answers come back as relearning cards
        due = 1500 if args.mix == "incremental" else 400
        template, info = user_template(work, args.notes, args.users, due=due)
        workers = Workers(args.users)
        print(f"prepared template and {args.users} workers in {time.perf_counter() - started:.1f}s: {info}",
              flush=True)
        results = Results(f"{args.users} concurrent users, mix {args.mix}, {args.notes} notes each, "
                          f"{args.rounds} rounds", info=info)
        for w in range(args.warmup):  # untimed: first-use costs in the workers and servers
            for kind in args.kinds:
                one_round(kind, workers, template, work, args.users, Results("warm-up"), seed=1000 + w,
                          mix=args.mix)
        for r, kind in round_order(args.rounds, args.kinds):
            wall = one_round(kind, workers, template, work, args.users, results, seed=r, mix=args.mix)
            print(f"round {r + 1} {kind:<9} all users {wall:.3f}s "
                  f"peak RSS {results.peaks[kind][-1]:.1f} MB", flush=True)
        results.print_table()
        results.write_json(args.json)
    finally:
        if workers is not None:
            workers.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
