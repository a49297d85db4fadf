"""The normal-sync steps end to end in process: whole sequences on real-client collections,
the session state machine's statuses (spec 01 §4), and rollback on every way a sync can end
early (error, bad sanity check, abort, a killed process)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from anki.collection import Collection

from ankihost.errors import BadRequest, ServerError, SessionConflict
from ankihost.registry import UserState
from ankihost.sync.handlers import INLINE_BODY_BYTES, INLINE_CHUNK_OBJECTS, STEPS
from ankihost.sync.messages import IncomingChunk
from tests.support.content import build_rich_collection
from tests.support.sync_steps import (
    StepClient,
    call,
    content,
    mark_uploaded,
    new_client,
    server_content,
    sync_request,
    user_state,
)

SAME_ROW_TABLES = ("notes", "cards", "revlog", "graves")


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty client collection right after its full upload (server and client hold it)."""
    path = new_client(tmp_path_factory.mktemp("base") / "collection.anki2")
    mark_uploaded(path)
    return path


@pytest.fixture
def device(uploaded: Path, tmp_path: Path) -> Path:
    path = tmp_path / "device.anki2"
    shutil.copyfile(uploaded, path)
    return path


@pytest.fixture
def state(uploaded: Path, tmp_path: Path) -> UserState:
    s = user_state(tmp_path / "server", uploaded)
    yield s
    s.collection.close()


def add_basic_note(col: Collection, front: str, tags: list[str] | None = None) -> int:
    note = col.new_note(col.models.by_name("Basic"))
    note["Front"], note["Back"] = front, "back"
    note.tags = tags or []
    col.add_note(note, col.decks.id("Default"))
    return int(note.id)


def finish_on_client(col: Collection, server_usn: int, finished_at: int) -> None:
    """The client's own bookkeeping after a successful sync (spec 02 §2 step 8)."""
    for table in (
        "notes",
        "cards",
        "revlog",
        "graves",
        "tags",
        "decks",
        "deck_config",
        "notetypes",
    ):
        col.db.execute(f"update {table} set usn = ? where usn = -1", server_usn)
    col.db.execute(
        "update col set usn = ?, mod = ?, ls = ?", server_usn + 1, finished_at, finished_at
    )


def legacy_objects(col: Collection) -> dict[str, Any]:
    """Notetypes, decks and deck configs as the real client decodes them."""
    return {
        "notetypes": sorted(col.models.all(), key=lambda x: x["id"]),
        "decks": sorted(col.decks.all(), key=lambda x: x["id"]),
        "deck_configs": sorted(col.decks.all_config(), key=lambda x: x["id"]),
        "config": col.all_config(),
        "tags": sorted(col.tags.all()),
    }


def server_as_client(state: UserState, tmp_path: Path) -> Collection:
    state.collection.close()
    copy = tmp_path / "server-copy.anki2"
    shutil.copyfile(state.folder.collection, copy)
    return Collection(str(copy))


# --- whole sequences ---------------------------------------------------------------------


@pytest.mark.parametrize("follow_ups", [False, True], ids=["on-next-request", "after-reply"])
def test_full_sequence_stores_everything_the_client_sent(
    device: Path, state: UserState, tmp_path: Path, follow_ups: bool
) -> None:
    """Chunks written after their replies (as the web layer does) or only when the next
    request comes: the server ends with exactly what the client sent, either way."""
    col = Collection(str(device))
    build_rich_collection(col, notes=700, reviews=60)
    client = StepClient(col, state, follow_ups=follow_ups)
    replies = client.sync_upward()

    assert replies["start"] == {"cards": [], "decks": [], "notes": []}
    assert replies["sanity"]["status"] == "ok", replies["sanity"]
    assert len(client.replies["chunks"]) == 1  # nothing pending on the server
    finish_on_client(col, client.server_usn, replies["finish"])
    col.close()
    mine = content(device)
    theirs = server_content(state)
    for table in SAME_ROW_TABLES:
        assert theirs[table] == mine[table], table
    col_row = theirs["col"][0]
    assert col_row[2] == replies["finish"]  # mod is exactly what finish returned
    assert col_row[6] == client.server_usn + 1  # usn bumped once
    assert col_row[1] == mine["col"][0][1]  # crt

    decoded_server = server_as_client(state, tmp_path)
    col = Collection(str(device))
    try:
        assert legacy_objects(decoded_server) == legacy_objects(col)
    finally:
        decoded_server.close()
        col.close()


TRICKY_FIELDS = [
    ('<img src="cat dog.jpg"> Cat', "x"),
    ("<b>Héllo</b>&nbsp;world &amp; more", "<i>y</i>"),
    ("literal\u00a0nbsp <!-- hidden --> <style>p {}</style>shown", ""),
    ("<audio src=a.mp3><div>line</div>\nnext", "&lt;tag&gt;"),
    ("42", "<script>x()</script>num"),
]


def test_sort_field_and_checksum_match_the_client(device: Path, state: UserState) -> None:
    col = Collection(str(device))
    basic = col.models.by_name("Basic")
    basic["sortf"] = 1
    col.models.update_dict(basic)
    for front, back in TRICKY_FIELDS:
        note = col.new_note(col.models.by_name("Basic"))
        note["Front"], note["Back"] = front, back
        col.add_note(note, 1)
    client = StepClient(col, state)
    client.sync_upward()
    finish_on_client(col, client.server_usn, client.replies["finish"])
    col.close()
    assert server_content(state)["notes"] == content(device)["notes"]


def test_second_device_receives_the_first_devices_changes(
    uploaded: Path, device: Path, state: UserState, tmp_path: Path
) -> None:
    col = Collection(str(device))
    build_rich_collection(col, notes=300, reviews=30)
    first = StepClient(col, state)
    first.sync_upward()
    finish_on_client(col, first.server_usn, first.replies["finish"])
    sent = legacy_objects(col)
    note_count = col.note_count()
    col.close()

    other = tmp_path / "other.anki2"
    shutil.copyfile(uploaded, other)
    col2 = Collection(str(other))
    second = StepClient(col2, state, key="other")
    second.start()
    second.lnewer = False
    assert second.apply_changes()["conf"] == sent["config"]
    second.fetch_chunks()
    col2.close()

    changes = second.replies["changes"]
    received_notes = [n for c in second.replies["chunks"] for n in c.get("notes", [])]
    assert len(received_notes) == note_count
    assert all(n[4] == first.server_usn and n[7:] == ["", "", 0, ""] for n in received_notes)
    assert len(second.replies["chunks"]) >= 3  # 300 notes + 600 cards + reviews, ~250 a chunk
    assert [c["done"] for c in second.replies["chunks"]][-1] is True
    by_id = {nt["id"]: nt for nt in sent["notetypes"]}
    for nt in changes["models"]:
        assert {**nt, "usn": 0} == {**by_id[nt["id"]], "usn": 0}
    assert {d["name"] for d in changes["decks"][0]} <= {d["name"] for d in sent["decks"]}
    assert sorted(changes["tags"]) == sent["tags"]


def test_deletions_travel_as_graves(device: Path, state: UserState) -> None:
    col = Collection(str(device))
    keep, drop = add_basic_note(col, "keep"), add_basic_note(col, "drop")
    first = StepClient(col, state)
    first.sync_upward()
    finish_on_client(col, first.server_usn, first.replies["finish"])
    dropped_cards = list(col.card_ids_of_note(drop))
    col.remove_notes([drop])
    again = StepClient(col, state)
    again.sync_upward()
    col.close()

    assert again.replies["sanity"]["status"] == "ok"
    rows = server_content(state)
    assert [r[0] for r in rows["notes"]] == [keep]
    assert sorted(r[:2] for r in rows["graves"]) == sorted(
        [(drop, 1)] + [(cid, 0) for cid in dropped_cards]
    )


def test_legacy_string_graves_in_start_are_applied_not_echoed(
    device: Path, state: UserState
) -> None:
    col = Collection(str(device))
    nid = add_basic_note(col, "x")
    StepClient(col, state).sync_upward()
    cards = list(col.card_ids_of_note(nid))
    col.close()
    usn = state.collection.connection().execute("select usn from col").fetchone()[0]
    graves = {"cards": [str(c) for c in cards], "notes": [str(nid)], "decks": []}
    reply = call(state, "start", {"minUsn": usn, "lnewer": False, "graves": graves}, key="old")
    assert reply == {"cards": [], "decks": [], "notes": []}
    db = state.collection.connection()
    assert db.execute("select count() from notes").fetchone()[0] == 0
    assert db.execute("select count() from graves where usn = ?", (usn,)).fetchone()[0] == 1 + len(
        cards
    )


# --- session statuses (spec 01 §4.2/4.3) ---------------------------------------------------


def start(state: UserState, key: str = "sess1") -> Any:
    return call(state, "start", {"minUsn": 0, "lnewer": False, "graves": None}, key=key)


@pytest.mark.parametrize(
    "method", ["applyGraves", "applyChanges", "chunk", "applyChunk", "sanityCheck2", "finish"]
)
def test_steps_without_a_session_are_409(state: UserState, method: str) -> None:
    with pytest.raises(SessionConflict):
        call(state, method, {})


@pytest.mark.parametrize("method", ["start", "chunk", "finish"])
def test_empty_session_key_is_400_and_changes_nothing(state: UserState, method: str) -> None:
    start(state)
    with pytest.raises(BadRequest):
        call(state, method, {"minUsn": 0, "lnewer": False}, key="")
    assert state.collection.session is not None and state.collection.session.key == "sess1"


def test_other_key_is_409_and_the_session_survives(state: UserState) -> None:
    start(state)
    with pytest.raises(SessionConflict):
        call(state, "chunk", key="intruder")
    assert call(state, "chunk")["done"] is True


def test_finish_twice_is_409(state: UserState) -> None:
    start(state)
    assert isinstance(call(state, "finish"), int)
    with pytest.raises(SessionConflict):
        call(state, "finish")


def test_new_start_replaces_the_running_session(state: UserState) -> None:
    start(state, key="first")
    start(state, key="second")
    with pytest.raises(SessionConflict):
        call(state, "applyGraves", {"chunk": {"cards": [], "notes": [], "decks": []}}, key="first")
    assert call(state, "chunk", key="second") == {"done": True}


def test_abort_from_a_new_key_ends_the_session(state: UserState) -> None:
    start(state, key="first")
    state.collection.close()  # what the web layer's `abort` (any key) does
    with pytest.raises(SessionConflict):
        call(state, "chunk", key="first")


def inline(method: str):
    """A step's `inline` check (every step these tests ask about has one)."""
    check = STEPS[method].inline
    assert check is not None
    return check


SESSION_STEPS = ("applyGraves", "applyChanges", "chunk", "applyChunk", "sanityCheck2")


def test_which_steps_run_on_the_event_loop(state: UserState) -> None:
    """`Step.inline`: bounded steps run on the event loop; a step with a chunk still to write
    first, with a big body, or that may roll back or commit goes to a worker thread."""
    small = {name: sync_request(name, {"_pad": None}) for name in ("start", *SESSION_STEPS)}
    big = {name: sync_request(name, {"pad": "x" * INLINE_BODY_BYTES}) for name in small}
    assert STEPS["finish"].inline is None  # its commit waits for an fsync
    assert not inline("start")(state, small["start"])  # the collection is not open yet
    state.collection.connection()
    assert inline("start")(state, small["start"])
    assert not inline("start")(state, big["start"])
    for name in SESSION_STEPS:
        assert not inline(name)(state, small[name]), name  # no session
    start(state)
    assert not inline("start")(state, small["start"])  # it would roll this session back
    for name in SESSION_STEPS:
        assert inline(name)(state, small[name]), name
        assert not inline(name)(state, big[name]), name
    current = state.collection.session
    current.unapplied.append(IncomingChunk(revlog=[], cards=[], notes=[]))
    for name in SESSION_STEPS:
        assert not inline(name)(state, small[name]), name  # a chunk to write first
    current.unapplied.clear()
    current.apply_error = BadRequest("writing a chunk failed")
    for name in SESSION_STEPS:
        assert not inline(name)(state, small[name]), name  # the error rolls it back
    current.apply_error = None
    current.next_chunk = ServerError("failed while made ahead")
    assert not inline("chunk")(state, small["chunk"])  # raised by this request
    current.next_chunk = None
    many_graves = {"chunk": {"cards": list(range(10**12, 10**12 + 400)), "notes": [], "decks": []}}
    assert not inline("applyGraves")(state, sync_request("applyGraves", many_graves))


def test_chunk_follow_ups_run_inline_when_bounded(state: UserState) -> None:
    no_changes = {"changes": {"models": [], "decks": [[], []], "tags": []}}
    start(state)
    reply = STEPS["applyChanges"].run(state, sync_request("applyChanges", no_changes))
    assert reply.follow_up is not None and reply.follow_up_inline  # makes the first chunk
    revlog = [[10**12 + i, 1, 0, 3, 1, 1, 2500, 100, 1] for i in range(INLINE_CHUNK_OBJECTS + 1)]
    padded = {"pad": "x" * INLINE_BODY_BYTES}  # few objects, but a big body
    for rows, extra, inline in ((revlog[:-1], {}, True), (revlog, {}, False), (revlog[:1], padded, False)):
        body = {"chunk": {"done": False, "revlog": rows}, **extra}
        reply = STEPS["applyChunk"].run(state, sync_request("applyChunk", body))
        assert reply.follow_up is not None and reply.follow_up_inline is inline, len(rows)


def test_malformed_body_is_400_and_keeps_the_session(state: UserState) -> None:
    start(state)
    with pytest.raises(BadRequest):
        call(state, "applyGraves", {"chunk": {"cards": []}})  # lists are required
    with pytest.raises(BadRequest):
        call(state, "applyChunk", b"{not json")
    assert call(state, "chunk")["done"] is True


def test_start_with_malformed_body_keeps_the_old_session(state: UserState) -> None:
    start(state, key="first")
    with pytest.raises(BadRequest):
        call(state, "start", {"lnewer": False}, key="second")
    assert call(state, "chunk", key="first")["done"] is True


# --- rollback ------------------------------------------------------------------------------


def prepared_client(device: Path, state: UserState) -> tuple[Collection, StepClient]:
    col = Collection(str(device))
    build_rich_collection(col, notes=80, reviews=10)
    return col, StepClient(col, state)


@pytest.mark.parametrize("next_step", ["applyChunk", "sanityCheck2", "finish"])
def test_failed_chunk_write_is_400_on_the_next_step_and_rolls_back(
    device: Path, state: UserState, next_step: str
) -> None:
    """A chunk is written after it is answered: an error writing it fails the session's next
    request (whichever it is), and the whole session is rolled back."""
    before = server_content(state)
    col, client = prepared_client(device, state)
    client.through_changes()
    good, bad = client.rows("notes")[:2]
    bad[2] = 424242  # a notetype the server never received
    assert call(state, "applyChunk", {"chunk": {"done": False, "notes": [good, bad]}}) is None
    assert state.collection.session is not None and state.collection.session.unapplied
    bodies = {"applyChunk": {"chunk": {"done": True}}, "sanityCheck2": {"client": client.counts()}}
    with pytest.raises(BadRequest, match="missing notetype 424242"):
        call(state, next_step, bodies.get(next_step))
    col.close()
    assert state.collection.session is None
    assert server_content(state) == before
    with pytest.raises(SessionConflict):
        call(state, "finish")


def test_chunk_write_failing_after_the_reply_fails_the_next_step(
    device: Path, state: UserState
) -> None:
    before = server_content(state)
    col, client = prepared_client(device, state)
    client.through_changes()
    bad = client.rows("notes")[0]
    bad[2] = 424242
    call(state, "applyChunk", {"chunk": {"done": True, "notes": [bad]}}, follow_up=True)
    session = state.collection.session
    assert session is not None and not session.unapplied  # tried, and failed
    assert isinstance(session.apply_error, BadRequest)
    with pytest.raises(BadRequest, match="missing notetype 424242"):
        client.sanity()
    col.close()
    assert state.collection.session is None
    assert server_content(state) == before


def test_unwritten_chunk_of_a_replaced_session_is_never_written(
    device: Path, state: UserState
) -> None:
    col, client = prepared_client(device, state)
    client.through_changes()
    revlog, cards = client.rows("revlog"), client.rows("cards")
    sent = STEPS["applyChunk"].run(
        state, sync_request("applyChunk", {"chunk": {"done": True, "revlog": revlog, "cards": cards}})
    )
    col.close()
    call(state, "start", {"minUsn": 0, "lnewer": False, "graves": None}, key="other")
    assert sent.follow_up is not None
    sent.follow_up()  # runs after the other device's `start`: too late, and harmless
    assert state.collection.session is not None and state.collection.session.key == "other"
    assert not state.collection.session.unapplied and state.collection.session.apply_error is None
    db = state.collection.connection()  # inside the other session's transaction
    for table, rows in (("revlog", revlog), ("cards", cards)):
        assert rows and db.execute(f"select 1 from {table} where id = ?", (rows[0][0],)).fetchone() is None


def test_a_late_follow_up_after_the_session_committed_writes_nothing(
    device: Path, state: UserState
) -> None:
    """The follow-up of `applyChunk` can run after the client's next requests (another
    connection, or a pipelined one): by then `settle` wrote the chunk, and if the session
    has even finished, the follow-up must not write anything (again) or fail."""
    col, client = prepared_client(device, state)
    client.through_changes()
    client.fetch_chunks()
    rows = client.rows("revlog")
    first = STEPS["applyChunk"].run(
        state, sync_request("applyChunk", {"chunk": {"done": False, "revlog": rows}})
    )
    rest = {"done": True, "cards": client.rows("cards"), "notes": client.rows("notes")}
    call(state, "applyChunk", {"chunk": rest})
    assert client.sanity()["status"] == "ok"
    client.finish()
    col.close()
    after_commit = server_content(state)
    assert first.follow_up is not None
    first.follow_up()  # stale: the session it belongs to has ended
    assert state.collection.session is None and not state.collection.connection().in_transaction
    assert server_content(state) == after_commit
    assert len(after_commit["revlog"]) == len(rows)


def test_notetype_field_count_change_is_400_and_rolls_back(device: Path, state: UserState) -> None:
    col = Collection(str(device))
    basic = col.models.by_name("Basic")
    basic["flds"].append({**basic["flds"][1], "name": "Extra", "ord": 2, "id": None})
    basic["mod"] += 10
    col.close()
    before = server_content(state)
    start(state)
    call(state, "applyGraves", {"chunk": {"cards": [], "notes": [], "decks": []}})
    with pytest.raises(BadRequest):
        call(
            state,
            "applyChanges",
            {"changes": {"models": [basic], "decks": [[], []], "tags": ["t"]}},
        )
    assert state.collection.session is None
    assert server_content(state) == before


def test_bad_sanity_check_rolls_back_and_ends_the_session(device: Path, state: UserState) -> None:
    before = server_content(state)
    col, client = prepared_client(device, state)
    client.through_changes()
    client.fetch_chunks()
    client.send_chunks()
    counts = client.counts()
    counts[1] += 1
    reply = client.sanity(counts)
    col.close()
    assert reply["status"] == "bad" and reply["s"] is not None
    assert state.collection.session is None
    assert server_content(state) == before
    with pytest.raises(SessionConflict):
        call(state, "finish")


def test_abandoned_session_leaves_the_collection_as_before_start(
    device: Path, state: UserState
) -> None:
    before = server_content(state)
    col, client = prepared_client(device, state)
    client.through_changes()
    client.fetch_chunks()
    client.send_chunks(size=50)
    col.close()
    state.collection.close()  # abort, meta, upload, download or shutdown
    assert server_content(state) == before


def _sync_then_die(device: str, root: str) -> None:
    from tests.support.states import make_state

    state = make_state(Path(root))
    col = Collection(device)
    client = StepClient(col, state)
    client.through_changes()
    client.fetch_chunks()
    client.send_chunks()
    client.sanity()
    os.kill(os.getpid(), signal.SIGKILL)


def test_killed_process_mid_sync_leaves_the_collection_as_before(
    device: Path, state: UserState
) -> None:
    col = Collection(str(device))
    build_rich_collection(col, notes=60, reviews=5)
    col.close()
    before = server_content(state)
    child = multiprocessing.get_context("spawn").Process(
        target=_sync_then_die, args=(str(device), str(state.folder.root))
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert server_content(state) == before
