"""Work done after a reply is sent, through the real app.

`chunk`: the next chunk is made after each reply, and the client still gets every pending row
exactly once, in order, whatever ends a session. `applyChunk`: a chunk is written after its
reply, and an error writing it fails the session's next request and rolls the session back.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Wire


@pytest.fixture(scope="module")
def large_collection(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real-client collection with 300 notes and 300 cards: three chunks' worth."""
    from anki.collection import Collection

    path = tmp_path_factory.mktemp("large") / "collection.anki2"
    col = Collection(str(path))
    basic = col.models.by_name("Basic")
    for i in range(300):
        note = col.new_note(basic)
        note["Front"], note["Back"] = f"front {i}", f"back {i}"
        col.add_note(note, col.decks.id("Default"))
    col.close(downgrade=False)
    db = sqlite3.connect(path)  # as after a full upload: every row synced, at usn 0
    with db:
        for table in ("notes", "cards"):
            db.execute(f"update {table} set usn = 0")
    db.close()
    return path.read_bytes()


def start(wire: Wire, session: str) -> None:
    response = wire.post("start", {"minUsn": 0, "lnewer": False, "graves": None}, session=session)
    assert response.status_code == 200, response.text


def chunks(wire: Wire, session: str, limit: int = 100) -> list[dict]:
    replies = []
    while len(replies) < limit:
        replies.append(wire.json(wire.post("chunk", {}, session=session)))
        if replies[-1]["done"]:
            break
    return replies


def prepared(wire: Wire):
    return wire.http.app.registry.by_name("alice").collection.session.next_chunk


def test_every_pending_row_arrives_once_in_order(
    wire: Wire, large_collection: bytes, tmp_path: Path
) -> None:
    assert wire.payload(wire.post("upload", large_collection)) == b"OK"
    wire.json(wire.post("meta", {"v": 11}))
    start(wire, "s1")
    first = wire.json(wire.post("chunk", {}, session="s1"))
    assert first["done"] is False and prepared(wire) is not None  # made after the reply
    replies = [first, *chunks(wire, "s1")]
    assert len(replies) == 3 and prepared(wire) is None
    uploaded = tmp_path / "uploaded.anki2"  # the server holds its file exclusively
    uploaded.write_bytes(large_collection)
    db = sqlite3.connect(uploaded)
    for table, key in (("cards", "cards"), ("notes", "notes")):
        sent = [row[0] for reply in replies for row in reply.get(key, [])]
        assert sorted(sent) == [r[0] for r in db.execute(f"select id from {table} order by id")]
        assert len(set(sent)) == len(sent)


def test_a_session_ended_mid_way_starts_over_without_the_prepared_chunk(
    wire: Wire, large_collection: bytes
) -> None:
    assert wire.payload(wire.post("upload", large_collection)) == b"OK"
    start(wire, "s1")
    whole = chunks(wire, "s1")
    start(wire, "s2")
    wire.json(wire.post("chunk", {}, session="s2"))
    assert prepared(wire) is not None
    assert wire.post("abort", {}, session="s2").status_code == 200
    start(wire, "s3")  # a new session: its first chunk is made fresh, from the start
    assert chunks(wire, "s3") == whole
    start(wire, "s4")
    wire.json(wire.post("chunk", {}, session="s4"))
    assert wire.post("chunk", {}, session="other").status_code == 409  # another device's key
    assert chunks(wire, "s4")[-1]["done"] is True  # the running session carries on


def test_the_first_chunk_is_made_after_apply_changes(wire: Wire, large_collection: bytes) -> None:
    assert wire.payload(wire.post("upload", large_collection)) == b"OK"
    start(wire, "s1")
    whole = chunks(wire, "s1")
    start(wire, "s2")
    assert prepared(wire) is None
    no_changes = {"changes": {"models": [], "decks": [[], []], "tags": []}}
    assert "models" in wire.json(wire.post("applyChanges", no_changes, session="s2"))
    assert prepared(wire) is not None  # the client's next request is its first chunk
    assert chunks(wire, "s2") == whole


def test_a_chunk_that_fails_after_its_reply_fails_the_next_request(
    wire: Wire, large_collection: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ankihost")
    assert wire.payload(wire.post("upload", large_collection)) == b"OK"
    uploaded = tmp_path / "uploaded.anki2"
    uploaded.write_bytes(large_collection)
    db = sqlite3.connect(uploaded)
    card = list(db.execute("select * from cards order by id limit 1").fetchone())
    note = list(db.execute("select * from notes order by id limit 1").fetchone())
    db.close()
    card[4], card[8] = card[4] + 1000, 99_999  # newer: the server would take it
    note[0], note[2] = 1, 424242  # a new note of a notetype the server lacks
    start(wire, "s1")
    assert chunks(wire, "s1")[-1]["done"] is True
    assert wire.json(wire.post("applyChunk", {"chunk": {"done": False, "cards": [card]}}, session="s1")) is None
    assert wire.json(wire.post("applyChunk", {"chunk": {"done": True, "notes": [note]}}, session="s1")) is None
    failed = wire.post("sanityCheck2", {"client": [[0, 0, 0], 300, 300, 0, 0, 1, 1, 1]}, session="s1")
    assert failed.status_code == 400
    assert "answered earlier in this sync could not be written" in caplog.text
    [line] = [line for line in caplog.text.splitlines() if "/sync/sanityCheck2 user=alice" in line]
    assert "status=400" in line and line.endswith("reason=note uses missing notetype 424242")
    assert wire.post("finish", {}, session="s1").status_code == 409  # rolled back and ended

    downloaded = tmp_path / "downloaded.anki2"
    downloaded.write_bytes(wire.payload(wire.post("download", {})))
    db = sqlite3.connect(downloaded)
    try:
        assert db.execute("select due, mod from cards where id = ?", (card[0],)).fetchone() != (99_999, card[4])
        assert db.execute("select count() from notes").fetchone() == (300,)
    finally:
        db.close()


def test_steps_run_on_the_event_loop_or_in_worker_threads_as_inline_says(
    wire: Wire, large_collection: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `run_step` hands `UserState.locked`: `start` right after an upload (the
    collection is not open yet) and `finish` (an fsync) in worker threads (anyio names them
    "AnyIO worker thread"); the other steps of a session on the event loop."""
    import threading

    from ankihost.protocol.request import Step
    from ankihost.sync import chunks as chunks_module

    ran: list[tuple[str, bool]] = []
    names = ("start", "applyChanges", "chunk", "applyChunk", "sanityCheck2", "finish")
    methods = wire.http.app.sync_routes.methods
    for name in names:
        def spy(state, request, step=methods[name], name=name):
            ran.append((name, threading.current_thread().name == "AnyIO worker thread"))
            return step.run(state, request)

        monkeypatch.setitem(methods, name, Step(spy, methods[name].inline, methods[name].small_body))
    follow_ups = {  # both bounded here
        "prepare_next_chunk": chunks_module.prepare_next_chunk,
        "apply_unapplied": chunks_module.apply_unapplied,
    }
    for name, work in follow_ups.items():
        def follow_up_spy(*args, work=work, name=name):
            ran.append((name, threading.current_thread().name == "AnyIO worker thread"))
            return work(*args)

        monkeypatch.setattr(chunks_module, name, follow_up_spy)
    assert wire.payload(wire.post("upload", large_collection)) == b"OK"
    start(wire, "s1")
    no_changes = {"changes": {"models": [], "decks": [[], []], "tags": []}}
    wire.json(wire.post("applyChanges", no_changes, session="s1"))
    assert len(chunks(wire, "s1")) == 3
    assert wire.json(wire.post("applyChunk", {"chunk": {"done": True}}, session="s1")) is None
    sanity = {"client": [[0, 0, 0], 300, 300, 0, 0, 6, 1, 1]}
    assert wire.json(wire.post("sanityCheck2", sanity, session="s1"))["status"] == "ok"
    assert isinstance(wire.json(wire.post("finish", {}, session="s1")), int)
    start(wire, "s2")  # the collection is open now, and no session is running
    assert ran == [
        ("start", True), ("applyChanges", False), ("prepare_next_chunk", False),
        ("chunk", False), ("prepare_next_chunk", False),
        ("chunk", False), ("prepare_next_chunk", False), ("chunk", False),
        ("applyChunk", False), ("apply_unapplied", False),
        ("sanityCheck2", False), ("finish", True), ("start", False),
    ]
