"""Benchmark: legacy (protocol 10) full upload and full download of a large collection.

With the OLD real client (Anki 2.1.54, in its own venv: tests/support/old_client.py), for
each round and server kind (alternating order): start a fresh server; old client A (a copy
of the generated 20,000-note collection) logs in and full-uploads it (a gzipped schema-11
file in a multipart form, which the server checks and upgrades to schema 18); an empty old
client B logs in and full-downloads it (the server converts a copy to schema 11 and sends
it raw). Logins and client start-up are not timed. Reports median seconds per kind, the
ratio ankihost/official, and each server's peak RSS during the transfers.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_legacy_full_sync.py [--rounds 7] [--notes 20000]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from common import PASSWORD, USER, Results, bench_server, large_template, parse_args, round_order, timed

from tests.support.old_client import OldClient
from tests.support.server import ServerKind


def one_round(kind: ServerKind, template: Path, results: Results, work: Path) -> None:
    """Upload the template via old client A, download it into an empty old client B."""
    folder = Path(tempfile.mkdtemp(prefix="old-A-", dir=work))
    shutil.copyfile(template, folder / "collection.anki2")
    with bench_server(kind) as server, OldClient(folder=folder, name="A") as uploader, \
            OldClient(folder=Path(tempfile.mkdtemp(prefix="old-B-", dir=work)), name="B") as downloader:  # fmt: skip
        uploader.login(USER, PASSWORD, server.endpoint)
        downloader.login(USER, PASSWORD, server.endpoint)
        server.rss.reset()
        results.add_time("legacy full upload", kind, timed(uploader.full_upload))
        results.add_time("legacy full download", kind, timed(downloader.full_download))
        results.add_peak(kind, server.rss.peak_mb, server.rss.hwm_mb)
        cards = downloader.sql("select count() from cards")[0][0]
        if cards != results.info["cards"]:
            raise AssertionError(f"{kind}: downloaded {cards} cards, expected {results.info['cards']}")
    shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], rounds=7)
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-legacy-"))
    try:
        results = Results(f"legacy full sync (Anki 2.1.54), {args.notes} notes, {args.rounds} rounds")
        template = large_template(work, args.notes, results)
        for _ in range(args.warmup):  # untimed: first-use costs (imports, caches)
            for kind in args.kinds:
                one_round(kind, template, Results("warm-up", info=dict(results.info)), work)
        for r, kind in round_order(args.rounds, args.kinds):
            one_round(kind, template, results, work)
            up = results.times["legacy full upload"][kind][-1]
            down = results.times["legacy full download"][kind][-1]
            print(f"round {r + 1} {kind:<9} upload {up:.3f}s download {down:.3f}s "
                  f"peak RSS {results.peaks[kind][-1]:.1f} MB (VmHWM {results.hwms[kind][-1]:.1f} MB)",
                  flush=True)
        results.print_table()
        results.write_json(args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
