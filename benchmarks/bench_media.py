"""Benchmark: media upload and download with the real client, ankihost vs the official server.

Two scenarios, each on a fresh server per round and kind (alternating order):

* many small files - client A uploads 500 files of ~20 KB (incompressible) with
  `sync_media`; an empty client B downloads them. Median seconds and ratio per direction.
* a 200 MB set - 100 files of 2 MB (incompressible) up, then down, while the server's
  RSS is sampled: peak RSS per kind (and the kernel's VmHWM), plus the seconds.

The clients' folder scan is done before the clock starts (`col.media.check()` registers every
file in the client's media DB), so the timed `sync_media` is network + server + the client's
zip work. Logins are not timed. Every download is checked against the uploaded bytes.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_media.py [--rounds 5] [--big-rounds 3]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import BenchServer, Results, bench_server, client_from_template, parse_args, round_order

from tests.support.client import SyncClient

SMALL_FILES, SMALL_BYTES = 500, 20_000
BIG_FILES, BIG_BYTES = 100, 2 * 1024 * 1024
POLL_SECONDS = 0.002


# -- media sets -------------------------------------------------------------------------------------
def make_set(folder: Path, count: int, size: int, seed: int, jitter: float = 0.0) -> dict[str, str]:
    """`count` incompressible files of ~`size` bytes in `folder`; returns name → sha1."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    digests = {}
    for i in range(count):
        n = size if not jitter else rng.randint(int(size * (1 - jitter)), int(size * (1 + jitter)))
        data = rng.randbytes(n)
        name = f"media {i:04}.bin"
        (folder / name).write_bytes(data)
        digests[name] = hashlib.sha1(data).hexdigest()
    return digests


def stock_client(client: SyncClient, source: Path) -> None:
    """Hard-link the set into the client's media folder (no copy) and let the client register it
    (its folder scan and hashing happen here, outside the timed sync)."""
    for entry in os.scandir(source):
        os.link(entry.path, client.media_dir / entry.name)
    client.col.media.check()


def sync_media(client: SyncClient, timeout: float = 600.0) -> float:
    """One `sync_media` to completion, timed; polls finely so the poll interval does not skew
    the figure. The sync's error is re-raised by `media_sync_status`."""
    auth = client.auth()
    start = time.perf_counter()
    client.col.sync_media(auth)
    while client.col.media_sync_status().active:
        if time.perf_counter() - start > timeout:
            client.col.abort_media_sync()
            raise TimeoutError("media sync did not finish")
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - start


def check_received(client: SyncClient, source: Path, expected: dict[str, str], *, full: bool) -> None:
    """B's folder holds exactly the set: by SHA-1 when `full`, else by name and size."""
    names = sorted(os.listdir(client.media_dir))
    if names != sorted(expected):
        raise AssertionError(f"downloaded {len(names)} files, expected {len(expected)}")
    for name, sha1 in expected.items():
        path = client.media_dir / name
        same = (hashlib.sha1(path.read_bytes()).hexdigest() == sha1 if full
                else path.stat().st_size == (source / name).stat().st_size)
        if not same:
            raise AssertionError(f"{name}: content differs after download")


# -- one round ---------------------------------------------------------------------------------------
# `--baseline PATH`: an ankihost source tree (say a worktree of main) run as a third server,
# "baseline", in the same rounds, so that a change is measured against the official server and
# against the code before it under the same load.
BASELINE = "baseline"
_baseline_tree: list[str] = []


def _server(kind: str) -> contextlib.AbstractContextManager[BenchServer]:
    if kind != BASELINE:
        return bench_server(kind)  # type: ignore[arg-type]
    # -P: not the current folder (this tree) first on sys.path, the baseline tree instead
    return bench_server("ankihost", command=[sys.executable, "-P", "-m", "ankihost"],
                        env={"PYTHONPATH": _baseline_tree[0]})


def one_round(kind: str, source: Path, expected: dict[str, str], results: Results,
              *, label: str, full_check: bool) -> tuple[float, float]:
    """Upload `source` via A, download into an empty B, on a fresh server."""
    with _server(kind) as server:
        uploader = client_from_template(None, server, "A")
        downloader = client_from_template(None, server, "B")
        try:
            uploader.login()
            downloader.login()
            stock_client(uploader, source)
            server.rss.reset()
            up = sync_media(uploader)
            down = sync_media(downloader)
            results.add_time(f"{label} upload", kind, up)
            results.add_time(f"{label} download", kind, down)
            results.add_peak(kind, server.rss.peak_mb, server.rss.hwm_mb)
            check_received(downloader, source, expected, full=full_check)
            return up, down
        finally:
            uploader.cleanup()
            downloader.cleanup()


def run(title: str, kinds: list[str], rounds: int, warmup: int, source: Path,
        expected: dict[str, str], label: str, full_check: bool) -> Results:
    results = Results(title)
    results.info.update(files=len(expected), megabytes=round(dir_bytes(source) / 2**20, 1))
    for _ in range(warmup):  # untimed: first-use costs
        for kind in kinds:
            one_round(kind, source, expected, Results("warm-up"), label=label, full_check=False)
    for r, kind in round_order(rounds, kinds):  # type: ignore[arg-type]
        up, down = one_round(kind, source, expected, results, label=label, full_check=full_check)
        hwm = results.hwms.get(kind)
        hwm_text = f" (VmHWM {hwm[-1]:.1f} MB)" if hwm else ""
        print(f"{label} round {r + 1} {kind:<9} upload {up:.3f}s download {down:.3f}s "
              f"peak RSS {results.peaks[kind][-1]:.1f} MB{hwm_text}", flush=True)
    return results


def dir_bytes(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(folder))


def print_baseline(results: Results) -> None:
    """Medians of the baseline, and each build's median of its per-round ratios to the official
    server (the servers of one round ran one after another, under about the same load)."""
    for metric, per_kind in results.times.items():
        official = per_kind.get("official", [])
        for kind in ("ankihost", BASELINE):
            runs = per_kind.get(kind, [])
            if official and runs:
                paired = statistics.median(a / o for a, o in zip(runs, official, strict=True))
                print(f"  {metric:<16} {kind:<9} median {statistics.median(runs):.3f} s, "
                      f"median of per-round ratios to official {paired:.2f}")


OPTIONS = (
    (("--big-rounds",), {"type": int, "default": 3,
                         "help": "rounds per server of the 200 MB set (default 3; 0 skips it)"}),
    (("--skip-small",), {"action": "store_true", "help": "only run the 200 MB set"}),
    (("--baseline",), {"metavar": "PATH", "help": "also run the ankihost of this source tree "
                       "(e.g. a worktree of main) as a third server, 'baseline'"}),
)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], rounds=5, extra=OPTIONS)
    kinds: list[str] = list(args.kinds)
    if args.baseline:
        _baseline_tree.append(str(Path(args.baseline).resolve()))
        kinds.append(BASELINE)
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-media-"))
    summaries = {}
    try:
        started = time.perf_counter()
        if not args.skip_small:
            small = make_set(work / "small", SMALL_FILES, SMALL_BYTES, seed=1, jitter=0.1)
            results = run(f"media sync, {SMALL_FILES} files of ~20 KB, {args.rounds} rounds",
                          kinds, args.rounds, args.warmup, work / "small", small,
                          "small", full_check=True)
            results.print_table()
            print_baseline(results)
            summaries["small"] = results.summary()
        if args.big_rounds:
            big = make_set(work / "big", BIG_FILES, BIG_BYTES, seed=2)
            results = run(f"media sync, {BIG_FILES} files of 2 MiB, {args.big_rounds} rounds",
                          kinds, args.big_rounds, 0, work / "big", big, "200MB",
                          full_check=False)
            results.print_table()
            print_baseline(results)
            summaries["big"] = results.summary()
        print(f"\ntotal {time.perf_counter() - started:.0f}s")
        if args.json:
            Path(args.json).write_text(json.dumps(summaries, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
