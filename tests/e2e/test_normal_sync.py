"""End-to-end normal (incremental) sync with the real Anki client against ankihost.

Two devices of one user, A and B, start from a first full sync (A builds rich
content and full-uploads, B full-downloads). Every round then changes one or both
devices with the client's own API, syncs them through ``python -m ankihost`` and
compares the two collections with :func:`round_snapshot`: the full snapshot of
tests/support/snapshot.py (every table, every column, decoded decks, deck configs,
notetypes with fields and templates, tags, config) minus the few per-device
bookkeeping columns listed in :data:`NORMAL_SYNC_IGNORED` - each measured to differ
the same way with the official server. On top of equality, each round checks that
every change made (:class:`Made`) is present on *both* devices, so a change lost on
the way (or undone on the device that made it) fails even when A and B agree.

Scenarios (issue: "e2e tests for normal sync"):

1. changes on A reach B; 2. changes on B reach A;
3. both change different things, the same note edited on both (newer edit wins);
4. a notetype schema change (new field) requires a full sync;
5. 1,000 reviews + 200 new notes travel in several chunks both ways;
6. server restarts between rounds, and a SIGKILL mid-sync (after applyChunk,
   before/while finish) loses nothing;
7. two devices syncing at the same time: one clean sync, one clear conflict;
   and one device's whole sync between the other's `meta` and `start`.

Requests are counted in the server's log (one line per request); the kill and
race scenarios put tests/support/proxy.py between client A and the server.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
import zstandard
from anki.collection import Collection
from anki.decks import DeckId
from anki.errors import NetworkError, SyncError
from anki.models import NotetypeDict
from anki.scheduler_pb2 import CardAnswer

from tests.support.client import FULL_SYNC, NO_CHANGES, FullSyncRequired, SyncClient
from tests.support.content import VOCAB_NOTETYPE, build_rich_collection
from tests.support.proxy import DROP, ForwardingProxy
from tests.support.server import SyncServer
from tests.support.snapshot import Snapshot, assert_same, snapshot

USER, PASSWORD = "alice", "n0rmal sync ☃"
USERS = [(USER, PASSWORD)]

pytestmark = pytest.mark.e2e

# Columns that legitimately differ between two devices after a *normal* sync
# (beyond snapshot.IGNORED_COLUMNS). Each was measured with the official server
# (anki.syncserver from the same wheel) running the round of
# test_changes_on_a_reach_b: it shows exactly these differences and no other.
NORMAL_SYNC_IGNORED: dict[tuple[str, str], str] = {
    ("config", "usn"): "the receiving device stores the config map with its own usn; the "
    "sender resets the usns (rslib changes.rs); config *values* are compared",
    ("config", "mtime_secs"): "stamped with the time each device (or the server) stored the map",
    ("graves", "usn"): "the deleting device stamps the server usn of its sync, the receiving "
    "device its own usn of the session that applied the deletion; the grave rows "
    "(oid, type) themselves are compared",
    ("tags", "usn"): "a received tag is registered with the receiving device's usn; tag names "
    "and the other columns are compared",
}


def round_snapshot(col: Collection, *, without_usns: bool = False) -> Snapshot:
    """snapshot() without the per-device columns of NORMAL_SYNC_IGNORED; with
    ``without_usns`` also without any row's ``usn`` (see
    test_server_killed_after_commit_before_reply for the one place that needs it)."""
    snap = snapshot(col)
    for table, column in NORMAL_SYNC_IGNORED:
        for row in snap["tables"].get(table, {}).values():
            row.pop(column, None)
    if without_usns:
        for rows in snap["tables"].values():
            for row in rows.values():
                row.pop("usn", None)
        for group in ("decks", "deck_configs", "notetypes"):
            for obj in snap["decoded"][group].values():
                obj.pop("usn", None)
    return snap


def assert_devices_equal(a: SyncClient, b: SyncClient, what: str, *, without_usns: bool = False) -> None:
    assert_same(
        round_snapshot(a.col, without_usns=without_usns),
        round_snapshot(b.col, without_usns=without_usns),
        what,
    )


# --- devices ------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[SyncServer]:
    with SyncServer("ankihost", USERS) as srv, srv.log_on_failure():
        yield srv


@dataclass
class Pair:
    server: SyncServer
    a: SyncClient
    b: SyncClient


@pytest.fixture
def pair(server: SyncServer) -> Iterator[Pair]:
    """A (rich content, full upload) and B (full download), equal."""
    a = SyncClient(server, USER, PASSWORD, name="A")
    b = SyncClient(server, USER, PASSWORD, name="B")
    try:
        build_rich_collection(a.col, notes=250, reviews=30)
        wait_past_ids(a.col)
        assert a.sync().action == "upload"
        assert b.sync().action == "download"
        assert_devices_equal(a, b, "A and B after the first full sync")
        yield Pair(server, a, b)
    finally:
        a.cleanup()
        b.cleanup()


def wait_past_ids(col: Collection) -> None:
    """Wait until the clock passes every id in the collection. Batch-added notes and
    cards get ids counting up from 'now' in ms, i.e. into the future; a note added on
    A and one added on B before the clock catches up would otherwise get the same id
    (ids are timestamps, unique per collection only) - a test artefact, since real
    devices add notes seconds apart."""
    newest = max(col.db.scalar(f"select coalesce(max(id), 0) from {t}") for t in ("notes", "cards", "revlog"))
    while time.time() * 1000 <= newest + 1:
        time.sleep(0.01)


def sync_normal(client: SyncClient) -> None:
    """A sync that ends without needing a full sync."""
    result = client.sync()
    assert (result.required, result.action) == (NO_CHANGES, "normal"), f"expected a normal sync, got {result}"


def sessions(server: SyncServer) -> int:
    """Normal-sync sessions the server committed so far (one `finish` each)."""
    return request_count(server, "finish")


def assert_in_sync(client: SyncClient, server: SyncServer) -> None:
    """The server's `meta` tells ``client`` there is nothing to sync (its `mod` equals
    the client's), so the client starts no session."""
    before = request_count(server, "start")
    sync_normal(client)
    assert request_count(server, "start") == before, "meta reported changes; a session was started"


# --- changes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Which part of the rich collection one device touches (disjoint per device, so
    two devices changing 'at the same time' never edit the same object - except the
    shared note of scenario 3, on purpose)."""

    label: str
    note_deck: str  # notes edited/deleted/tagged and cards reviewed/rescheduled here
    rename_deck: str
    remove_deck: str
    deck_config: str  # name of the preset whose options change ("Default" = id 1)
    notetype: str  # its first template is renamed and its CSS changed
    seed: int


PLAN_A = Plan(
    "A", "Languages::French", "Languages::French::Verbs", "Science::Physics", "Default", VOCAB_NOTETYPE, 11
)
PLAN_B = Plan("B", "History", "History", "Languages::German", "Languages options", "Cloze", 22)


@dataclass
class Made:
    """What a device changed, to be found on every device after syncing."""

    added: dict[int, str] = field(default_factory=dict)  # note id -> first field
    edited: dict[int, list[str]] = field(default_factory=dict)  # note id -> fields
    deleted_notes: list[int] = field(default_factory=list)
    deleted_cards: list[int] = field(default_factory=list)
    revlog: list[int] = field(default_factory=list)  # new revlog ids
    cards: dict[int, tuple[int, ...]] = field(default_factory=dict)  # id -> queue, type, due, flags
    decks: dict[int, str] = field(default_factory=dict)  # id -> name (added or renamed)
    removed_decks: list[int] = field(default_factory=list)
    deck_configs: dict[int, int] = field(default_factory=dict)  # id -> rev per day
    tagged: dict[int, set[str]] = field(default_factory=dict)  # note id -> tags it must have
    untagged: dict[int, str] = field(default_factory=dict)  # note id -> tag it must not have
    notetypes: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> 1st template name, css marker

    def merge(self, other: Made) -> Made:
        merged = Made()
        for name in ("added", "edited", "cards", "decks", "tagged", "untagged", "deck_configs", "notetypes"):
            getattr(merged, name).update(getattr(self, name))
            getattr(merged, name).update(getattr(other, name))
        for name in ("deleted_notes", "deleted_cards", "revlog", "removed_decks"):
            getattr(merged, name).extend(getattr(self, name) + getattr(other, name))
        return merged


def notetype(col: Collection, name: str) -> NotetypeDict:
    nt = col.models.by_name(name)
    assert nt is not None, name
    return nt


def review(
    col: Collection, deck: str, count: int, rng: random.Random, ratings: tuple[int, ...] = (CardAnswer.GOOD,)
) -> list[int]:
    """Answer up to ``count`` cards of ``deck`` with the real v3 scheduler; the new revlog ids."""
    col.decks.select(col.decks.id(deck))
    before = set(col.db.list("select id from revlog"))
    for _ in range(count):
        queued = col.sched.get_queued_cards(fetch_limit=1)
        if not queued.cards:
            break
        top = queued.cards[0]
        card = col.get_card(top.card.id)
        card.start_timer()
        col.sched.answer_card(
            col.sched.build_answer(card=card, states=top.states, rating=rng.choice(ratings))
        )
    col.decks.select(DeckId(1))
    return sorted(set(col.db.list("select id from revlog")) - before)


def _card_state(col: Collection, cid: int) -> tuple[int, int, int, int]:
    queue, ctype, due, flags = col.db.first("select queue, type, due, flags from cards where id = ?", cid)
    return queue, ctype, due, flags


def make_changes(client: SyncClient, plan: Plan) -> Made:
    """Every kind of change a user makes between syncs, through the client's own API."""
    col, label, made = client.col, plan.label, Made()
    rng = random.Random(plan.seed)
    deck_ids = {
        name: int(col.decks.id(name, create=False) or 0)
        for name in (plan.note_deck, plan.rename_deck, plan.remove_deck)
    }
    assert all(deck_ids.values()), deck_ids

    # notes: add (into a new deck and subdeck), edit, delete
    new_sub = f"{label} added::{label} subdeck"
    basic = notetype(col, "Basic")
    for i in range(4):
        note = col.new_note(basic)
        note["Front"], note["Back"] = f"{label} added note {i} ✓", f"back {i}"
        note.tags = [f"added_{label}"]
        col.add_note(note, col.decks.id(new_sub if i % 2 else f"{label} added"))
        made.added[int(note.id)] = note["Front"]
    for name in (f"{label} added", new_sub):
        made.decks[int(col.decks.id(name))] = name
    nids = sorted(col.find_notes(f'deck:"{plan.note_deck}" -deck:"{plan.note_deck}::*"'))
    assert len(nids) >= 25, f"too few notes in {plan.note_deck}: {len(nids)}"
    for nid in nids[:3]:
        note = col.get_note(nid)
        note.fields[0] = f"{note.fields[0]} <i>edited on {label}</i>"
        col.update_note(note)
        made.edited[nid] = list(note.fields)
    for nid in nids[3:5]:
        made.deleted_cards += col.card_ids_of_note(nid)
    col.remove_notes(nids[3:5])
    made.deleted_notes += nids[3:5]

    # tags: add to some notes, remove one from others
    col.tags.bulk_add(nids[5:10], f"tag_{label} shared::{label}")
    for nid in nids[5:10]:
        made.tagged[nid] = {f"tag_{label}", f"shared::{label}"}
    tagged = [nid for nid in nids[10:] if col.get_note(nid).tags]
    for nid in tagged[:4]:
        tag = col.get_note(nid).tags[0]
        col.tags.bulk_remove([nid], tag)
        made.untagged[nid] = tag

    # scheduling: review with the real scheduler, set due date, suspend, bury
    made.revlog = review(col, plan.note_deck, 12, rng, (CardAnswer.AGAIN, CardAnswer.GOOD, CardAnswer.EASY))
    assert len(made.revlog) >= 8, "the scheduler offered too few cards"
    new_cards = sorted(col.find_cards(f'deck:"{plan.note_deck}" is:new -is:buried -is:suspended'))
    assert len(new_cards) >= 10
    col.sched.set_due_date(new_cards[:2], "3")
    col.sched.suspend_cards(new_cards[2:4])
    col.sched.bury_cards(new_cards[4:6], manual=True)
    col.set_user_flag_for_cards(plan.seed % 7 + 1, new_cards[6:8])
    reviewed = col.db.list(f"select distinct cid from revlog where id in ({','.join(map(str, made.revlog))})")
    for cid in [*new_cards[:8], *reviewed]:
        made.cards[cid] = _card_state(col, cid)

    # decks: rename one, delete one (with its cards and notes), add a filtered deck
    new_name = f"{plan.rename_deck} renamed by {label}"
    col.decks.rename(DeckId(deck_ids[plan.rename_deck]), new_name)
    made.decks[deck_ids[plan.rename_deck]] = new_name
    removed = [
        deck_ids[plan.remove_deck],
        *(int(d) for _, d in col.decks.children(DeckId(deck_ids[plan.remove_deck]))),
    ]
    doomed_cards = col.find_cards(f'deck:"{plan.remove_deck}"')
    made.deleted_cards += doomed_cards
    col.decks.remove([DeckId(deck_ids[plan.remove_deck])])
    made.removed_decks += removed
    filtered = col.sched.get_or_create_filtered_deck(deck_id=DeckId(0))
    filtered.name = f"Filtered by {label}"
    filtered.config.search_terms[0].search = f"did:{deck_ids[plan.note_deck]} is:new"
    filtered.config.search_terms[0].limit = 5
    filtered_id = int(col.sched.add_or_update_filtered_deck(filtered).id)
    made.decks[filtered_id] = filtered.name
    for cid in col.find_cards(f"did:{filtered_id}"):
        made.cards[cid] = _card_state(col, cid)
    assert col.find_cards(f"did:{filtered_id}"), "the filtered deck pulled in no cards"

    # deck options
    conf = next(c for c in col.decks.all_config() if c["name"] == plan.deck_config)
    conf["rev"]["perDay"] = 1000 + plan.seed
    conf["new"]["delays"] = [3.0, 30.0]
    col.decks.update_config(conf)
    made.deck_configs[int(conf["id"])] = 1000 + plan.seed

    # notetype: rename a template, change the CSS (no schema change)
    nt = notetype(col, plan.notetype)
    template_name = f"{nt['tmpls'][0]['name']} renamed by {label}"
    nt["tmpls"][0]["name"] = template_name
    marker = f"/* css changed by {label} */"
    nt["css"] += f"\n.card {{ font-size: {20 + plan.seed}px; }}\n{marker}\n"
    col.models.update_dict(nt)
    made.notetypes[int(nt["id"])] = (template_name, marker)
    return made


def assert_made(client: SyncClient, made: Made, where: str) -> None:
    """Every change in ``made`` is present in ``client``'s collection."""
    col = client.col
    col.models._clear_cache()
    notes = {nid: (flds, tags) for nid, flds, tags in col.db.all("select id, flds, tags from notes")}
    problems: list[str] = []
    for nid, front in made.added.items():
        if nid not in notes or notes[nid][0].split("\x1f")[0] != front:
            problems.append(f"added note {nid} missing or changed: {notes.get(nid)}")
    for nid, fields in made.edited.items():
        if nid not in notes or notes[nid][0].split("\x1f") != fields:
            problems.append(f"edited note {nid}: {notes.get(nid)} != {fields}")
    problems += [f"deleted note {nid} still present" for nid in made.deleted_notes if nid in notes]
    cards = set(col.db.list("select id from cards"))
    problems += [f"deleted card {cid} still present" for cid in made.deleted_cards if cid in cards]
    revlog = set(col.db.list("select id from revlog"))
    problems += [f"revlog {rid} missing" for rid in made.revlog if rid not in revlog]
    for cid, state in made.cards.items():
        if cid not in cards or _card_state(col, cid) != state:
            found = _card_state(col, cid) if cid in cards else None
            problems.append(f"card {cid}: (queue, type, due, flags) {found} != {state}")
    for did, name in made.decks.items():
        deck = col.decks.get(DeckId(did), default=False)
        if deck is None or deck["name"] != name:
            problems.append(f"deck {did}: {deck and deck['name']!r} != {name!r}")
    for did in made.removed_decks:
        if col.decks.get(DeckId(did), default=False) is not None:
            problems.append(f"removed deck {did} still present")
    for dcid, per_day in made.deck_configs.items():
        conf = col.decks.get_config(dcid)
        if conf is None or conf["rev"]["perDay"] != per_day:
            problems.append(f"deck config {dcid}: rev/day {conf and conf['rev']['perDay']} != {per_day}")
    all_tags = {t.lower() for t in col.tags.all()}
    for nid, tags in made.tagged.items():
        have = set(notes[nid][1].split()) if nid in notes else set()
        if not tags <= have:
            problems.append(f"note {nid} lacks tags {tags - have}")
        problems += [f"tag {t} not registered" for t in tags if t.lower() not in all_tags]
    for nid, tag in made.untagged.items():
        if nid in notes and tag in notes[nid][1].split():
            problems.append(f"note {nid} still has removed tag {tag}")
    for ntid, (template, marker) in made.notetypes.items():
        nt = col.models.get(ntid)
        if nt is None or nt["tmpls"][0]["name"] != template or marker not in nt["css"]:
            problems.append(f"notetype {ntid}: template/css change missing")
    assert not problems, f"changes missing on {where}:\n  " + "\n  ".join(problems[:20])


def assert_none_of(client: SyncClient, made: Made, where: str) -> None:
    """None of the changes in ``made`` is in ``client``'s collection (they were never
    committed on the server)."""
    col = client.col
    col.models._clear_cache()
    nids = set(col.find_notes(""))
    problems = [f"added note {nid} present" for nid in made.added if nid in nids]
    problems += [
        f"note {nid} edited"
        for nid, fields in made.edited.items()
        if nid in nids and col.get_note(nid).fields == fields
    ]
    problems += [f"deleted note {nid} gone" for nid in made.deleted_notes if nid not in nids]
    revlog = set(col.db.list("select id from revlog"))
    problems += [f"revlog {rid} present" for rid in made.revlog if rid in revlog]
    for did, name in made.decks.items():
        deck = col.decks.get(DeckId(did), default=False)
        if deck is not None and deck["name"] == name:
            problems.append(f"deck {did} {name!r} present")
    problems += [
        f"removed deck {did} gone"
        for did in made.removed_decks
        if col.decks.get(DeckId(did), default=False) is None
    ]
    for dcid, per_day in made.deck_configs.items():
        conf = col.decks.get_config(dcid)
        if conf is not None and conf["rev"]["perDay"] == per_day:
            problems.append(f"deck config {dcid} changed")
    for ntid, (template, marker) in made.notetypes.items():
        nt = col.models.get(ntid)
        if nt is not None and (nt["tmpls"][0]["name"] == template or marker in nt["css"]):
            problems.append(f"notetype {ntid} changed")
    assert not problems, f"uncommitted changes found on {where}:\n  " + "\n  ".join(problems[:20])


def request_count(server: SyncServer, method: str) -> int:
    """Successful requests for /sync/<method> in the server's log (one line each)."""
    pattern = re.compile(rf"POST /sync/{method} user={USER} .*status=200\b")
    return sum(1 for line in server.log_text().splitlines() if pattern.search(line))


# --- 1-3: one-sided and two-sided changes --------------------------------------------------


def test_changes_on_a_reach_b(pair: Pair) -> None:
    made = make_changes(pair.a, PLAN_A)
    assert pair.a.sync_status() != NO_CHANGES
    sync_normal(pair.a)
    sync_normal(pair.b)
    assert_made(pair.a, made, "A")
    assert_made(pair.b, made, "B")
    assert_devices_equal(pair.a, pair.b, "A and B after A's changes")
    assert_in_sync(pair.b, pair.server)


def test_changes_on_b_reach_a(pair: Pair) -> None:
    made = make_changes(pair.b, PLAN_A)  # the same kinds of change, now on B
    sync_normal(pair.b)
    sync_normal(pair.a)
    assert_made(pair.a, made, "A")
    assert_made(pair.b, made, "B")
    assert_devices_equal(pair.a, pair.b, "A and B after B's changes")
    assert_in_sync(pair.a, pair.server)


def _edit_note(client: SyncClient, nid: int, text: str, backdate: int = 0) -> list[str]:
    """Edit the first field; ``backdate`` s moves the edit's note mod into the past
    (the edit still pending), i.e. it happened that much earlier."""
    note = client.col.get_note(nid)
    note.fields[0] = text
    client.col.update_note(note)
    if backdate:
        client.col.db.execute("update notes set mod = mod - ? where id = ?", backdate, nid)
    return list(note.fields)


def test_both_change_different_things(pair: Pair) -> None:
    a, b = pair.a, pair.b
    made_a = make_changes(a, PLAN_A)
    made_b = make_changes(b, PLAN_B)
    # two notes edited on both devices; the edit with the newer note mod must win
    # everywhere, whichever device syncs first (A syncs first here)
    shared = sorted(a.col.find_notes('deck:"Languages::French::Verbs*"'))[:2]
    older_on_b = _edit_note(b, shared[0], "edited on B, older", backdate=3)
    newer_on_a = _edit_note(a, shared[0], "edited on A, newer")
    older_on_a = _edit_note(a, shared[1], "edited on A, older", backdate=3)
    newer_on_b = _edit_note(b, shared[1], "edited on B, newer")
    assert older_on_b != newer_on_a and older_on_a != newer_on_b

    sync_normal(a)
    sync_normal(b)
    sync_normal(a)
    expected = made_a.merge(made_b)
    expected.edited.update({shared[0]: newer_on_a, shared[1]: newer_on_b})
    for client, name in ((a, "A"), (b, "B")):
        assert_made(client, expected, name)
        for nid, fields in ((shared[0], newer_on_a), (shared[1], newer_on_b)):
            assert client.col.get_note(nid).fields == fields, f"{name}: the newer edit of {nid} lost"
    # nothing lost: every note added on either side is on both
    assert set(made_a.added) | set(made_b.added) <= set(a.col.find_notes("")) & set(b.col.find_notes(""))
    assert_devices_equal(a, b, "A and B after both changed")
    assert_in_sync(a, pair.server)


# --- 4: schema change ---------------------------------------------------------------------


def test_new_field_requires_full_sync(pair: Pair) -> None:
    a, b = pair.a, pair.b
    mm = a.col.models
    nt = notetype(a.col, VOCAB_NOTETYPE)
    mm.add_field(nt, mm.new_field("Added field"))
    mm.update_dict(nt)
    nid = a.col.find_notes(f'"note:{VOCAB_NOTETYPE}"')[0]
    note = a.col.get_note(nid)
    note["Added field"] = "filled on A"
    a.col.update_note(note)

    assert a.sync_status() == FULL_SYNC
    with pytest.raises(FullSyncRequired):
        a.sync()
    assert a.sync(on_conflict="upload").action == "upload"
    # B still has the old schema: the server tells it a full sync is required
    # (b.sync_status() would answer from the client's 5-minute cache: not asked)
    with pytest.raises(FullSyncRequired):
        b.sync()
    assert b.sync(on_conflict="download").action == "download"
    assert [f["name"] for f in notetype(b.col, VOCAB_NOTETYPE)["flds"]][-1] == "Added field"
    assert b.col.get_note(nid)["Added field"] == "filled on A"
    assert_devices_equal(a, b, "A and B after the schema change")
    # the download bumped the server's mod (as the official server does): A's next
    # sync is a normal one, after which the devices are still equal
    sync_normal(a)
    assert_devices_equal(a, b, "A and B after A's first normal sync on the new schema")
    assert_in_sync(a, pair.server)


# --- 5: many chunks -----------------------------------------------------------------------


def test_reviews_and_notes_span_several_chunks(pair: Pair) -> None:
    a, b, server = pair.a, pair.b, pair.server
    rng = random.Random(5)
    basic = notetype(a.col, "Basic")
    added: dict[int, str] = {}
    for i in range(200):
        note = a.col.new_note(basic)
        note["Front"], note["Back"] = f"bulk {i}", f"bulk back {i}"
        a.col.add_note(note, DeckId(1))
        added[int(note.id)] = note["Front"]
    revlog = review(
        a.col, "Default", 1000, rng, (CardAnswer.AGAIN, CardAnswer.HARD, CardAnswer.HARD, CardAnswer.GOOD)
    )
    assert len(revlog) == 1000, f"only {len(revlog)} reviews"
    made = Made(added=added, revlog=revlog)

    apply_before = request_count(server, "applyChunk")
    sync_normal(a)
    apply_chunks = request_count(server, "applyChunk") - apply_before
    chunk_before = request_count(server, "chunk")
    sync_normal(b)
    chunks = request_count(server, "chunk") - chunk_before
    assert apply_chunks > 1, f"A's upload of 1,000 reviews + 200 notes used {apply_chunks} applyChunk"
    assert chunks > 1, f"B's download of 1,000 reviews + 200 notes used {chunks} chunk"
    assert_made(a, made, "A")
    assert_made(b, made, "B")
    assert_devices_equal(a, b, "A and B after the multi-chunk sync")


# --- 6: restarts and a killed server -------------------------------------------------------


def test_server_restart_between_rounds(pair: Pair) -> None:
    a, b, server = pair.a, pair.b, pair.server
    made_a = make_changes(a, PLAN_A)
    server.restart()
    sync_normal(a)
    server.restart()
    sync_normal(b)
    assert_devices_equal(a, b, "A and B after round 1 with restarts")
    made_b = make_changes(b, PLAN_B)
    server.restart()
    sync_normal(b)
    server.restart()
    sync_normal(a)
    for client, name in ((a, "A"), (b, "B")):
        assert_made(client, made_a.merge(made_b), name)
    assert_devices_equal(a, b, "A and B after round 2 with restarts")


def killer(server: SyncServer) -> Callable[[str], str]:
    """A proxy hook: SIGKILL the server's process group (no shutdown of any kind),
    reap it, and drop the client's connection."""

    def kill(_path: str) -> str:
        assert server.pid is not None
        os.killpg(server.pid, signal.SIGKILL)
        server.stop()  # only reaps: the group is already gone
        return DROP

    return kill


@pytest.mark.parametrize("kill_at", ["sanityCheck2", "finish"])
def test_server_killed_mid_sync_loses_nothing(pair: Pair, kill_at: str) -> None:
    """The server dies (SIGKILL) after A's applyChunk, when A's sanityCheck2 or
    finish arrives and before it is processed: the session was never committed."""
    a, b, server = pair.a, pair.b, pair.server
    made = make_changes(a, PLAN_A)
    b_before = round_snapshot(b.col)
    with ForwardingProxy(server) as proxy:
        a.use_server(proxy)
        proxy.on(f"/sync/{kill_at}", killer(server), times=1)
        with pytest.raises((NetworkError, SyncError)):
            a.sync()
        assert proxy.count("/sync/applyChunk") >= 1, proxy.paths
        assert proxy.count(f"/sync/{kill_at}") == 1 and not server.alive()
        assert_made(a, made, "A after its failed sync (client rolled back, changes kept)")

        server.start()
        # the server rolled A's session back: the server's state did not change...
        assert_in_sync(b, server)
        assert_same(b_before, round_snapshot(b.col), "B before and after its check with the restarted server")
        # ...and a real session of B (with a change of its own) brings B none of A's changes
        made_b = Made()
        note = b.col.new_note(notetype(b.col, "Basic"))
        note["Front"] = "added on B after the kill"
        b.col.add_note(note, DeckId(1))
        made_b.added[int(note.id)] = note["Front"]
        committed = sessions(server)
        sync_normal(b)
        assert sessions(server) == committed + 1
        assert_none_of(b, made, "B after the kill")
        sync_normal(a)  # through the proxy again, now without a hook
        sync_normal(b)
    assert_made(a, made.merge(made_b), "A")
    assert_made(b, made.merge(made_b), "B")
    assert_devices_equal(a, b, f"A and B after a server killed at {kill_at}")


def test_server_killed_after_commit_before_reply(pair: Pair) -> None:
    """The server commits A's finish and dies before A hears back: A's next sync
    re-sends what the server already has, and both devices end with the same content.

    Only the usn stamps of the replayed objects differ, by protocol: A (still holding
    them as pending, usn -1) and the server (holding them since the lost session) each
    keep their own copy of a card/note/revlog on an equal mod, and each take the other's
    copy of a deck/deck config/notetype on an equal mod, so A and B end up with
    different usns on those rows. Measured identically with the official server;
    harmless, since both usns are past every device's last sync."""
    a, b, server = pair.a, pair.b, pair.server
    made = make_changes(a, PLAN_A)
    with ForwardingProxy(server) as proxy:
        a.use_server(proxy)
        proxy.after("/sync/finish", killer(server), times=1)
        with pytest.raises((NetworkError, SyncError)):
            a.sync()
        assert not server.alive()
        server.start()
        sync_normal(b)  # the committed session: B has A's changes already
        assert_made(b, made, "B (A's session was committed before the kill)")
        sync_normal(a)
        sync_normal(b)
    assert_made(a, made, "A")
    assert_devices_equal(a, b, "A and B after a server killed after commit", without_usns=True)
    assert_in_sync(b, server)


def bogus_note_added(body: bytes) -> bytes:
    """An applyChunk body with one more note, of a notetype no device has: the server
    answers the chunk at once and only meets the problem when it writes it."""
    chunk = orjson.loads(zstandard.ZstdDecompressor().decompressobj().decompress(body))
    chunk["chunk"].setdefault("notes", []).append(
        [1, "bogus-guid", 424242, 1, -1, "", "front\x1fback", "", "", 0, ""]
    )
    return zstandard.ZstdCompressor().compress(orjson.dumps(chunk))


def test_chunk_that_cannot_be_written_fails_the_sync_and_loses_nothing(pair: Pair) -> None:
    """The server writes each applyChunk after answering it. One that then fails to be
    written fails the client's next request instead: the client reports the failed sync,
    the server rolls the whole session back, and the next sync goes through whole."""
    a, b, server = pair.a, pair.b, pair.server
    made = make_changes(a, PLAN_A)
    b_before = round_snapshot(b.col)
    committed = sessions(server)
    with ForwardingProxy(server) as proxy:
        a.use_server(proxy)
        proxy.edit("/sync/applyChunk", bogus_note_added, times=1)
        with pytest.raises(SyncError):
            a.sync()
        after_chunk = proxy.paths[proxy.paths.index("/sync/applyChunk") + 1]
        assert after_chunk in ("/sync/applyChunk", "/sync/sanityCheck2"), proxy.paths
        log = server.log_text()
        assert re.search(rf"POST /sync/applyChunk user={USER} .*status=200", log)
        assert re.search(rf"POST {after_chunk} user={USER} .*status=400", log)
        assert "note uses missing notetype 424242" in log
        assert sessions(server) == committed
        assert_made(a, made, "A after its failed sync (client rolled back, changes kept)")
        assert_in_sync(b, server)  # the server's collection did not change
        assert_same(b_before, round_snapshot(b.col), "B after checking with the server")
        sync_normal(a)  # the same changes again, unedited
    sync_normal(b)
    assert_made(b, made, "B")
    assert_devices_equal(a, b, "A and B after a failed and a clean sync")


# --- 7: two devices at the same time ------------------------------------------------------


@pytest.mark.parametrize("interrupt_at", ["applyChanges", "applyChunk", "finish"])
def test_simultaneous_syncs_one_wins_cleanly(pair: Pair, interrupt_at: str) -> None:
    """While A's session is open (A's `interrupt_at` request is on its way), B runs a
    whole sync. B's sync is clean; A's fails with a conflict and changes nothing on
    the server (no mixed state); A's next sync then merges both."""
    a, b, server = pair.a, pair.b, pair.server
    made_a = make_changes(a, PLAN_A)
    made_b = make_changes(b, PLAN_B)
    results: list[object] = []
    committed = sessions(server)

    def b_syncs_now(_path: str) -> None:
        try:
            results.append(b.sync())
        except Exception as exc:  # reported below, not swallowed
            results.append(exc)

    with ForwardingProxy(server) as proxy:
        a.use_server(proxy)
        proxy.on(f"/sync/{interrupt_at}", b_syncs_now, times=1)
        with pytest.raises(SyncError) as conflict:
            a.sync()
        assert len(results) == 1 and getattr(results[0], "action", None) == "normal", results
        assert sessions(server) == committed + 1, "B's session was not committed (or A's was)"
        # the client's wording for HTTP 409, and the server's own record of refusing A
        assert "only one copy of anki can sync" in str(conflict.value).lower(), conflict.value
        assert re.search(rf"POST /sync/{interrupt_at} user={USER} .*status=409", server.log_text())

        # the server holds exactly B's sync: a fresh device downloads B's state
        c = SyncClient(server, USER, PASSWORD, name="C")
        try:
            assert c.sync().action == "download"
            assert_devices_equal(b, c, "B and a fresh download after the race")
            assert_none_of(c, made_a, "a fresh download after the race")
            assert_made(c, made_b, "a fresh download after the race")
        finally:
            c.cleanup()

        sync_normal(a)  # A's changes were kept locally and now go through
        sync_normal(b)
    expected = made_a.merge(made_b)
    assert_made(a, expected, "A")
    assert_made(b, expected, "B")
    assert_devices_equal(a, b, "A and B after the race and a clean re-sync")


def test_other_device_syncs_between_meta_and_start(pair: Pair) -> None:
    """B runs a whole sync after A's `meta` and before A's `start`: the two sessions do
    not overlap, so both succeed - and B's next sync must still bring it A's changes
    (the server stamps A's objects with the usn of A's session, not the stale one A
    read in `meta`; spec 02 §10.2).

    usns are left out of the final comparison: A stamped its own rows with the stale
    usn from `meta`; its cards/notes/decks are corrected when the server echoes them
    back, but revlog rows are insert-or-ignore on the client, so A's revlog keeps the
    stale usn (N) and B's the server's (N+1) - harmless, both are past every device's
    last sync. (With the official server, B's next sync fails here with "Please use
    the Check Database function" - the hazard described in spec 02 §10.2.)"""
    a, b, server = pair.a, pair.b, pair.server
    made_a = make_changes(a, PLAN_A)
    made_b = make_changes(b, PLAN_B)
    results: list[object] = []

    def b_syncs_now(_path: str) -> None:
        try:
            results.append(b.sync())
        except Exception as exc:  # reported below, not swallowed
            results.append(exc)

    committed = sessions(server)
    with ForwardingProxy(server) as proxy:
        a.use_server(proxy)
        proxy.on("/sync/start", b_syncs_now, times=1)
        sync_normal(a)
        assert len(results) == 1 and getattr(results[0], "action", None) == "normal", results
        assert sessions(server) == committed + 2
        assert_made(a, made_a.merge(made_b), "A (its session came after B's)")
        sync_normal(b)
        assert_made(b, made_a.merge(made_b), "B")
        sync_normal(a)
    assert_devices_equal(a, b, "A and B after back-to-back sessions", without_usns=True)
