"""Benchmark: `ankihost backup` of a 20,000-note collection with 200 MiB of media — time and
peak memory — and of checking and unpacking the archive.

Set-up (untimed): a fresh ankihost server; the real client full-uploads the 20,000-note
collection of `tests/support/content.py` (`build_large_collection`) and media-syncs N MiB of
incompressible files of ~200 KiB; a second user has a small collection. Then, per round:

* `backup (server runs)`: `ankihost backup DEST` while the server runs: the server does the
  work (each user's lock held only for the copy) and its RSS is sampled every 20 ms;
* `verify`: `ankihost backup --verify DEST`;
* `unpack`: `ankihost backup --restore DEST NEW_BASE`;
* `backup (no server)`: the server stopped, the command does the work itself.

Peak memory of a command is its kernel max RSS (`wait4`). Every size in `--media-mib`
(default 50 and 200) runs the whole, so the figures show whether peak memory grows with the
data: it must not.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_backup.py [--rounds 3] [--media-mib 50,200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT, RssSampler, build_template, tree_hwm_bytes

from tests.support.client import SyncClient
from tests.support.content import build_large_collection
from tests.support.server import SyncServer, users_env

USERS = [("big", "big-password"), ("small", "small-password")]
FILE_BYTES = 200 * 1024
MIB = 1024 * 1024


def make_media(folder: Path, mib: int, seed: int = 5) -> int:
    rng = random.Random(seed)
    count = mib * MIB // FILE_BYTES
    for i in range(count):
        (folder / f"image {i:05}.jpg").write_bytes(rng.randbytes(FILE_BYTES))
    return count


def command(base: Path, *args: str) -> tuple[float, float, str]:
    """Run `ankihost ARGS`; (seconds, its peak RSS in MB, stdout). Fails on a non-zero exit.
    The peak is the kernel's VmHWM of the command's own memory, read every 20 ms while it runs
    (wait4's max RSS would count the parent's memory at fork: Linux carries it over exec)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "ANKIHOST_"))}
    env.update(SYNC_BASE=str(base), PYTHONPATH=str(REPO_ROOT), **users_env(USERS))
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "ankihost", *args], cwd=REPO_ROOT, env=env,
                                stdout=out, stderr=err)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_hwm_bytes(proc.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"ankihost {' '.join(args)} failed: {err.read().decode()}")
        return seconds, peak / MIB, out.read().decode()


def populate(server: SyncServer, template: Path, media: Path, work: Path) -> None:
    big_folder = Path(tempfile.mkdtemp(prefix="device-big-", dir=work))
    small_folder = Path(tempfile.mkdtemp(prefix="device-small-", dir=work))
    shutil.copyfile(template, big_folder / "collection.anki2")
    big = SyncClient(server, *USERS[0], folder=big_folder, name="big")
    small = SyncClient(server, *USERS[1], folder=small_folder, name="small")
    try:
        for entry in os.scandir(media):
            os.link(entry.path, big.media_dir / entry.name)
        big.col.media.check()
        big.sync(media=True)
        big.sync_media(timeout=1200)
        basic = small.col.models.by_name("Basic")
        for i in range(100):
            note = small.col.new_note(basic)
            note["Front"], note["Back"] = f"small {i}", "x"
            small.col.add_note(note, 1)
        small.sync()
    finally:
        big.cleanup()
        small.cleanup()


def one_size(mib: int, rounds: int, template: Path, work: Path) -> dict[str, object]:
    media = work / f"media-{mib}"
    media.mkdir()
    files = make_media(media, mib)
    figures: dict[str, list[float]] = {}

    def note(metric: str, value: float) -> None:
        figures.setdefault(metric, []).append(value)

    server = SyncServer("ankihost", USERS, base=work / f"base-{mib}")
    with server, server.log_on_failure():
        populate(server, template, media, work)
        assert server.pid is not None
        sampler = RssSampler(server.pid)
        sampler.start()
        try:
            for r in range(rounds):
                dest = work / f"b-{mib}-{r}.tar.zst"
                time.sleep(1)
                sampler.reset()
                idle = sampler.peak_mb
                seconds, cli_mb, _ = command(server.base, "backup", str(dest))
                note("backup (server runs) s", seconds)
                note("server RSS before MB", idle)
                note("server RSS peak MB", sampler.peak_mb)
                note("command peak RSS (server runs) MB", cli_mb)
                note("archive MB", dest.stat().st_size / MIB)
                seconds, cli_mb, _ = command(server.base, "backup", "--verify", str(dest))
                note("verify s", seconds)
                note("verify peak RSS MB", cli_mb)
                target = work / f"unpacked-{mib}-{r}"
                seconds, cli_mb, _ = command(server.base, "backup", "--restore", str(dest), str(target))
                note("unpack s", seconds)
                note("unpack peak RSS MB", cli_mb)
                shutil.rmtree(target)
                dest.unlink()
                print(f"{mib} MiB round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in figures.items()),
                      flush=True)
        finally:
            sampler.stop()
        server.stop()
        for r in range(rounds):
            dest = work / f"c-{mib}-{r}.tar.zst"
            seconds, cli_mb, _ = command(server.base, "backup", str(dest))
            note("backup (no server) s", seconds)
            note("backup (no server) peak RSS MB", cli_mb)
            dest.unlink()
    shutil.rmtree(media)
    return {"media_mib": mib, "media_files": files,
            "median": {k: round(statistics.median(v), 3) for k, v in figures.items()},
            "rounds": figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--notes", type=int, default=20_000)
    parser.add_argument("--media-mib", default="50,200", help="media sizes in MiB, comma-separated")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-backup-"))
    try:
        template = build_template(work / "template", build_large_collection, notes=args.notes)
        print(f"collection: {args.notes} notes, {template.stat().st_size / MIB:.1f} MB", flush=True)
        results = [one_size(int(m), args.rounds, template, work) for m in args.media_mib.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    metrics = list(results[0]["median"])  # type: ignore[arg-type]
    print(f"{'metric (median)':<36}" + "".join(f"{str(r['media_mib']) + ' MiB':>12}" for r in results))
    for metric in metrics:
        print(f"{metric:<36}" + "".join(f"{r['median'][metric]:>12.2f}" for r in results))  # type: ignore[index]
    if args.json:
        Path(args.json).write_text(json.dumps({"notes": args.notes, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
