"""Shared machinery for ankihost's benchmark scripts.

A benchmark compares ankihost with the official server (``anki.syncserver``
from the same ``anki`` wheel) using the real client, by running the same
scenario against each server kind in alternating order (ABBA...) for several
rounds, and reporting per metric the median seconds of each kind and the ratio
ankihost/official, plus each server's peak resident memory.

Building blocks, meant to be reused by sibling scripts (incremental sync,
concurrent users, media ...):

* :func:`parse_args`        - the common CLI (``--rounds --warmup --kinds --notes --json``)
* :func:`bench_server`      - a started :class:`SyncServer` with an
  :class:`RssSampler` watching its process tree
* :func:`build_template`    - build a collection once; :func:`client_from_template`
  gives every round a fresh copy of it
* :func:`round_order`       - the alternating schedule of (round, kind)
* :class:`Results`          - collect timings/peaks, print the table, dump JSON

Peak RSS is sampled every ~20 ms over the server's whole process tree, with
psutil if importable, else straight from ``/proc`` (Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.client import SyncClient  # noqa: E402
from tests.support.server import ServerKind, SyncServer  # noqa: E402

try:  # optional: /proc is the fallback
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

KINDS: tuple[ServerKind, ...] = ("ankihost", "official")
USER, PASSWORD = "bench", "bench-password"


# -- resident memory ------------------------------------------------------------
def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    return children


def _proc_rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss_bytes(pid: int) -> int:
    """Summed RSS of pid and all its descendants (0 if gone)."""
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total
    children = _proc_children()
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _proc_rss_bytes(current)
        stack.extend(children.get(current, []))
    return total


def tree_hwm_bytes(pid: int) -> int:
    """Summed kernel high-water mark (VmHWM) of pid and its descendants: the
    peak RSS of each process over its lifetime, which polling can miss.
    0 where /proc is unavailable."""
    children = _proc_children() if os.path.isdir("/proc") else {}
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{current}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        total += int(line.split()[1]) * 1024
        stack.extend(children.get(current, []))
    return total


class RssSampler(threading.Thread):
    """Polls the RSS of a process tree; :meth:`reset` starts a new window,
    :attr:`peak_mb` is the maximum seen in the current window."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name=f"rss-{pid}")
        self.pid = pid
        self.interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        rss = tree_rss_bytes(self.pid)
        with self._lock:
            self._peak = max(self._peak, rss)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def reset(self) -> None:
        with self._lock:
            self._peak = 0
        self.sample()

    @property
    def peak_mb(self) -> float:
        """Max of the sampled RSS in this window (MB)."""
        self.sample()
        with self._lock:
            return self._peak / 2**20

    @property
    def hwm_mb(self) -> float:
        """Kernel lifetime peak of the tree (MB); see :func:`tree_hwm_bytes`."""
        return tree_hwm_bytes(self.pid) / 2**20

    def stop(self) -> None:
        self._stop_event.set()


@dataclass
class BenchServer:
    server: SyncServer
    rss: RssSampler

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def starts(self) -> int:
        return self.server.starts


@contextlib.contextmanager
def bench_server(kind: ServerKind, users: Sequence[tuple[str, str]] = ((USER, PASSWORD),),
                 **kwargs: object) -> Iterator[BenchServer]:
    """A running server of ``kind`` with an RSS sampler on its process tree;
    stopped (and its temp SYNC_BASE removed) on exit."""
    server = SyncServer(kind, users, **kwargs)  # type: ignore[arg-type]
    with server, server.log_on_failure():
        assert server.pid is not None
        sampler = RssSampler(server.pid)
        sampler.start()
        try:
            yield BenchServer(server, sampler)
        finally:
            sampler.stop()


# -- collections ---------------------------------------------------------------------
def build_template(folder: Path, builder: Callable[..., object], **kwargs: object) -> Path:
    """Build a collection once with ``builder(col, **kwargs)``; returns the
    closed .anki2 file, to be copied per round."""
    from anki.collection import Collection

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "template.anki2"
    col = Collection(str(path))
    try:
        builder(col, **kwargs)
    finally:
        col.close()
    return path


def large_template(work: Path, notes: int, results: Results) -> Path:
    """The generated collection of the full-sync benchmarks (`build_large_collection`), built
    once in `work`; its card count and size go into `results.info`."""
    from anki.collection import Collection

    from tests.support.content import build_large_collection

    started = time.perf_counter()
    template = build_template(work, build_large_collection, notes=notes)
    col = Collection(str(shutil.copyfile(template, work / "probe.anki2")))
    results.info.update(cards=col.card_count(), collection_mb=round(template.stat().st_size / 2**20, 1))
    col.close()
    print(f"built template in {time.perf_counter() - started:.1f}s: {results.info}", flush=True)
    return template


def client_from_template(template: Path | None, server: BenchServer, name: str,
                         user: str = USER, password: str = PASSWORD) -> SyncClient:
    """A client in a fresh temp folder; its collection is a copy of
    ``template`` (or empty if None)."""
    folder = Path(tempfile.mkdtemp(prefix=f"ankihost-bench-{name}-"))
    if template is not None:
        shutil.copyfile(template, folder / "collection.anki2")
    client = SyncClient(server, user, password, folder=folder, name=name)
    client._own_folder = True  # delete the copy in cleanup()
    return client


# -- scheduling and timing ----------------------------------------------------------------
def round_order(rounds: int, kinds: Sequence[ServerKind] = KINDS) -> Iterator[tuple[int, ServerKind]]:
    """(round, kind) pairs, alternating the order every round (ABBA...)."""
    for r in range(rounds):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        for kind in order:
            yield r, kind


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Results:
    """Timings (seconds) per metric and kind, and peak RSS (MB) per kind."""

    title: str
    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    peaks: dict[str, list[float]] = field(default_factory=dict)
    hwms: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    def add_time(self, metric: str, kind: str, seconds: float) -> None:
        self.times.setdefault(metric, {}).setdefault(kind, []).append(seconds)

    def add_peak(self, kind: str, megabytes: float, hwm_megabytes: float | None = None) -> None:
        """Sampled peak RSS of a window; optionally the kernel VmHWM too."""
        self.peaks.setdefault(kind, []).append(megabytes)
        if hwm_megabytes:
            self.hwms.setdefault(kind, []).append(hwm_megabytes)

    def summary(self) -> dict[str, object]:
        metrics = {}
        for metric, per_kind in self.times.items():
            medians = {kind: statistics.median(values) for kind, values in per_kind.items()}
            ratio = None
            if medians.get("official") and "ankihost" in medians:
                ratio = medians["ankihost"] / medians["official"]
            metrics[metric] = {"median_s": medians, "ratio_ankihost_official": ratio, "runs_s": per_kind}
        peaks = {kind: max(values) for kind, values in self.peaks.items()}
        hwms = {kind: max(values) for kind, values in self.hwms.items()}
        return {"title": self.title, "info": self.info, "metrics": metrics, "peak_rss_mb": peaks,
                "vm_hwm_mb": hwms}

    def print_table(self) -> None:
        data = self.summary()
        print(f"\n== {self.title} ==")
        for key, value in self.info.items():
            print(f"  {key}: {value}")
        print(f"  {'metric':<22}{'ankihost s':>12}{'official s':>12}{'ratio':>8}")
        for metric, m in data["metrics"].items():  # type: ignore[union-attr]
            med = m["median_s"]
            ratio = m["ratio_ankihost_official"]
            print(f"  {metric:<22}{_fmt(med.get('ankihost')):>12}{_fmt(med.get('official')):>12}"
                  f"{_fmt(ratio, 2):>8}")
        for label, key in (("peak RSS sampled MB", "peak_rss_mb"), ("peak RSS VmHWM MB", "vm_hwm_mb")):
            peaks = data[key]
            if not peaks:
                continue
            ratio = peaks["ankihost"] / peaks["official"] if peaks.get("official") and "ankihost" in peaks else None
            print(f"  {label:<22}{_fmt(peaks.get('ankihost'), 1):>12}"
                  f"{_fmt(peaks.get('official'), 1):>12}{_fmt(ratio, 2):>8}")

    def write_json(self, path: str | None) -> None:
        if path:
            Path(path).write_text(json.dumps(self.summary(), indent=2))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def parse_args(description: str, *, rounds: int = 9, notes: int = 20_000,
               extra: Sequence[tuple[tuple[str, ...], dict[str, object]]] = ()) -> argparse.Namespace:
    """The options every benchmark script understands, plus a script's own
    ``extra`` options as ``((flags...), add_argument-kwargs)`` pairs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds per server (default {rounds})")
    parser.add_argument("--notes", type=int, default=notes, help=f"notes in the collection (default {notes})")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="comma-separated server kinds to run (default: ankihost,official)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed warm-up rounds per server before measuring (default 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    for flags, kwargs in extra:
        parser.add_argument(*flags, **kwargs)  # type: ignore[arg-type]
    args = parser.parse_args()
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {sorted(unknown)}")
    return args


# -- client-side workload (incremental and concurrent benchmarks) ------------------------
def make_reviews_due(col: object, count: int, seed: int = 11) -> int:
    """Prepare ``col`` (an ``anki.collection.Collection``) for real reviews:
    ``count`` random new cards (not suspended, not in a filtered deck) become
    review cards due today via ``col.sched.set_due_date(cids, "0")``, and
    every options preset gets a review limit of 9999 and a new-card limit of 0,
    so the scheduler serves those review cards (and nothing new). Returns the
    number of cards made due."""
    import random

    for conf in col.decks.all_config():  # type: ignore[attr-defined]
        conf["rev"]["perDay"] = 9999
        conf["new"]["perDay"] = 0
        col.decks.update_config(conf)  # type: ignore[attr-defined]
    candidates = sorted(col.find_cards("is:new -is:suspended -deck:filtered"))  # type: ignore[attr-defined]
    chosen = random.Random(seed).sample(candidates, min(count, len(candidates)))
    col.sched.set_due_date(chosen, "0")  # type: ignore[attr-defined]
    return len(chosen)


def answer_reviews(col: object, count: int, seed: int = 12) -> int:
    """Answer up to ``count`` cards with the real v3 scheduler (ratings mostly
    Good, some Again/Hard/Easy), deck by deck over the top-level normal decks.
    With :func:`make_reviews_due` these are review (and relearning) cards.
    Returns the number of answers."""
    import random

    from anki.decks import DeckId

    rng = random.Random(seed)
    decks = [d for d in col.decks.all_names_and_ids(include_filtered=False)  # type: ignore[attr-defined]
             if "::" not in d.name]
    done = 0
    for deck in decks:
        col.decks.select(DeckId(deck.id))  # type: ignore[attr-defined]
        while done < count:
            card = col.sched.getCard()  # type: ignore[attr-defined]
            if card is None:
                break
            col.sched.answerCard(card, rng.choice((1, 2, 3, 3, 3, 3, 4)))  # type: ignore[attr-defined]
            done += 1
        if done >= count:
            break
    col.decks.select(DeckId(1))  # type: ignore[attr-defined]
    return done


def add_new_notes(col: object, count: int, seed: int = 13) -> int:
    """Add ``count`` notes like the generated content (vocab/cloze, tags) to
    its note decks; returns ``count``."""
    from tests.support.content import NOTE_DECKS, add_notes

    deck_ids = [int(col.decks.id(name)) for name in NOTE_DECKS]  # type: ignore[attr-defined]
    return add_notes(col, count, deck_ids, seed=seed)  # type: ignore[arg-type]
