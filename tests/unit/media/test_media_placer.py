"""The background placer: one user's batches in commit order, waits, and errors kept."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from ankihost.media import placer
from ankihost.media.placer import Placer

WAIT_SECS = 30


class Batch:
    """Stands for a committed `FileJournal`: its names, and a `place` that can be held."""

    def __init__(self, done: list[str], label: str, names: set[str], *, fail: bool = False) -> None:
        self.done, self.label, self.names, self.fail = done, label, frozenset(names), fail
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def place(self) -> None:
        self.started.set()
        assert self.gate.wait(WAIT_SECS)
        if self.fail:
            raise OSError(f"{self.label} could not be placed")
        self.done.append(self.label)


def add(p: Placer, batch: Batch) -> None:
    p.add(cast(Any, batch))


def test_batches_are_placed_in_commit_order() -> None:
    done: list[str] = []
    p = Placer()
    batches = [Batch(done, f"b{i}", {f"n{i}"}) for i in range(10)]
    batches[0].gate.clear()
    for batch in batches:
        add(p, batch)
    assert done == []
    batches[0].gate.set()
    p.wait()
    assert done == [f"b{i}" for i in range(10)]


def test_an_upload_waits_only_for_batches_that_change_its_names() -> None:
    done: list[str] = []
    p = Placer()
    slow = Batch(done, "slow", {"a.txt", "b.txt"})
    slow.gate.clear()
    add(p, slow)
    assert slow.started.wait(WAIT_SECS)
    p.wait(["c.txt", "d.txt"])  # nothing in common: goes ahead while "slow" is placed
    assert done == []
    waiting = threading.Thread(target=p.wait, args=(["b.txt"],))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()  # b.txt is still being placed
    slow.gate.set()
    waiting.join(WAIT_SECS)
    assert not waiting.is_alive() and done == ["slow"]


def test_a_long_queue_makes_uploads_wait() -> None:
    done: list[str] = []
    p = Placer()
    first = Batch(done, "first", {"x"})
    first.gate.clear()
    add(p, first)
    for i in range(placer.MAX_QUEUED_BATCHES):
        add(p, Batch(done, f"b{i}", {f"n{i}"}))
    waiting = threading.Thread(target=p.wait, args=(["other"],))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()  # MAX_QUEUED_BATCHES + 1 still to place
    first.gate.set()
    waiting.join(WAIT_SECS)
    assert not waiting.is_alive()


def test_a_failed_placement_is_raised_once_and_drops_the_rest() -> None:
    done: list[str] = []
    p = Placer()
    add(p, Batch(done, "ok", {"a"}))
    add(p, Batch(done, "bad", {"b"}, fail=True))
    add(p, Batch(done, "after", {"c"}))  # left to recovery, which the caller starts
    with pytest.raises(OSError, match="bad could not be placed"):
        p.wait()
    assert done == ["ok"]
    p.wait()  # reported once
    add(p, Batch(done, "later", {"d"}))
    p.wait()
    assert done == ["ok", "later"]
