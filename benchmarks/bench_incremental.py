"""Benchmark: an incremental (normal) sync of 1,000 reviews + 200 new notes.

With the real client, for each round and server kind (alternating order):
start a fresh server; client A (a copy of a prepared 20,000-note collection)
full-uploads and an empty client B full-downloads it (untimed set-up). A then
answers 1,000 cards with the real v3 scheduler (review cards made due today
with ``set_due_date`` when the template was prepared) and adds 200 notes
(untimed). Timed: A's normal sync that pushes those changes ("push"), then B's
normal sync that pulls them ("pull"). After each round B must hold exactly A's
cards, notes and review log.

Reports median seconds per kind, the ratio ankihost/official, and each
server's peak RSS during the two timed syncs.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_incremental.py [--rounds 7] [--notes 20000]
        [--reviews 1000] [--new-notes 200] [--json out.json]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import (
    Results,
    add_new_notes,
    answer_reviews,
    bench_server,
    build_template,
    client_from_template,
    make_reviews_due,
    parse_args,
    round_order,
    timed,
)

from tests.support.client import SyncClient, SyncResult
from tests.support.content import build_large_collection
from tests.support.server import ServerKind

PUSH, PULL = "push (A normal sync)", "pull (B normal sync)"


def counts(client: SyncClient) -> tuple[int, int, int]:
    db = client.col.db
    return (db.scalar("select count() from cards"), db.scalar("select count() from notes"),
            db.scalar("select count() from revlog"))


def one_round(kind: ServerKind, template: Path, results: Results, reviews: int, new_notes: int,
              seed: int) -> None:
    with bench_server(kind) as server:
        a = client_from_template(template, server, "A")
        b = client_from_template(None, server, "B")
        try:
            a.login()
            b.login()
            a.full_upload()
            b.full_download()
            answered = answer_reviews(a.col, reviews, seed=seed)
            if answered != reviews:
                raise AssertionError(f"only {answered} cards to review, wanted {reviews}")
            cards_before = a.col.card_count()
            add_new_notes(a.col, new_notes, seed=seed)
            new_cards = a.col.card_count() - cards_before
            server.rss.reset()
            before = counts(b)
            outputs: list[SyncResult] = []
            results.add_time(PUSH, kind, timed(lambda: outputs.append(a.sync())))
            results.add_time(PULL, kind, timed(lambda: outputs.append(b.sync())))
            results.add_peak(kind, server.rss.peak_mb, server.rss.hwm_mb)
            if [o.action for o in outputs] != ["normal", "normal"]:
                raise AssertionError(f"{kind}: expected two normal syncs, got {outputs}")
            expected = (before[0] + new_cards, before[1] + new_notes, before[2] + reviews)
            if not counts(a) == counts(b) == expected:
                raise AssertionError(f"{kind}: cards/notes/revlog: A {counts(a)}, B {counts(b)}, "
                                     f"expected {expected}")
        finally:
            a.cleanup()
            b.cleanup()


def prepare_template(work: Path, notes: int, due: int) -> Path:
    """The 20,000-note collection with ``due`` cards made review-due today."""
    from anki.collection import Collection

    template = build_template(work, build_large_collection, notes=notes)
    col = Collection(str(template))
    try:
        make_reviews_due(col, due)
    finally:
        col.close()
    return template


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], rounds=7, extra=[
        (("--reviews",), dict(type=int, default=1000, help="cards A answers (default 1000)")),
        (("--new-notes",), dict(type=int, default=200, help="notes A adds (default 200)")),
    ])
    work = Path(tempfile.mkdtemp(prefix="ankihost-bench-incr-"))
    try:
        started = time.perf_counter()
        # a margin over --reviews: "Again" answers are re-shown as relearning cards
        template = prepare_template(work, args.notes, due=args.reviews + args.reviews // 2)
        results = Results(f"incremental sync: {args.reviews} reviews + {args.new_notes} new notes "
                          f"on {args.notes} notes, {args.rounds} rounds")
        from anki.collection import Collection

        col = Collection(str(shutil.copyfile(template, work / "probe.anki2")))
        results.info.update(notes=col.note_count(), cards=col.card_count(),
                            collection_mb=round(template.stat().st_size / 2**20, 1),
                            reviews=args.reviews, new_notes=args.new_notes)
        col.close()
        print(f"prepared template in {time.perf_counter() - started:.1f}s: {results.info}", flush=True)
        for w in range(args.warmup):  # untimed: first-use costs (imports, caches)
            for kind in args.kinds:
                one_round(kind, template, Results("warm-up"), args.reviews, args.new_notes, seed=1000 + w)
        for r, kind in round_order(args.rounds, args.kinds):
            one_round(kind, template, results, args.reviews, args.new_notes, seed=r)
            push, pull = results.times[PUSH][kind][-1], results.times[PULL][kind][-1]
            print(f"round {r + 1} {kind:<9} push {push:.3f}s pull {pull:.3f}s "
                  f"peak RSS {results.peaks[kind][-1]:.1f} MB", flush=True)
        results.print_table()
        results.write_json(args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
