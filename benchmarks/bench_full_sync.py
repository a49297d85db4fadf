"""Benchmark: full upload and full download of a large collection.

With the real client, for each round and server kind (alternating order):
start a fresh server; client A (a copy of a generated 20,000-note collection)
logs in and full-uploads; an empty client B logs in and full-downloads.
Logins are not timed. Reports median seconds per kind, the ratio
ankihost/official, and each server's peak RSS during the transfers.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_full_sync.py [--rounds 9] [--notes 20000]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from common import (
    Results,
    bench_server,
    client_from_template,
    large_template,
    parse_args,
    round_order,
    timed,
)

from tests.support.server import ServerKind


def one_round(kind: ServerKind, template: Path, results: Results) -> None:
    """Upload the template via A, download it into an empty B, on a fresh server."""
    with bench_server(kind) as server:
        uploader = client_from_template(template, server, "A")
        downloader = client_from_template(None, server, "B")
        try:
            uploader.login()
            downloader.login()
            server.rss.reset()
            results.add_time("full upload", kind, timed(uploader.full_upload))
            results.add_time("full download", kind, timed(downloader.full_download))
            results.add_peak(kind, server.rss.peak_mb, server.rss.hwm_mb)
            cards = downloader.col.card_count()
            if cards != results.info["cards"]:
                raise AssertionError(f"{kind}: downloaded {cards} cards, expected {results.info['cards']}")
        finally:
            uploader.cleanup()
            downloader.cleanup()


def server_hwm(results: Results, kind: str) -> str:
    values = results.hwms.get(kind)
    return f"{values[-1]:.1f} MB" if values else "n/a"


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-full-"))
    try:
        results = Results(f"full sync, {args.notes} notes, {args.rounds} rounds")
        template = large_template(work, args.notes, results)
        for _ in range(args.warmup):  # untimed: first-use costs (imports, caches)
            for kind in args.kinds:
                one_round(kind, template, Results("warm-up", info=dict(results.info)))
        for r, kind in round_order(args.rounds, args.kinds):
            one_round(kind, template, results)
            up, down = results.times["full upload"][kind][-1], results.times["full download"][kind][-1]
            print(f"round {r + 1} {kind:<9} upload {up:.3f}s download {down:.3f}s "
                  f"peak RSS {results.peaks[kind][-1]:.1f} MB (VmHWM {server_hwm(results, kind)})", flush=True)
        results.print_table()
        results.write_json(args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
