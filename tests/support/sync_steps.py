"""Drive the normal-sync steps in process, without HTTP, against real collection files.

Collections are made with the real client (`anki`), "uploaded" by applying the client's own
pre-upload bookkeeping, and copied into a user folder. `StepClient` plays the client side of
one normal sync from an open client collection: it sends exactly what the client would send
(pending rows, legacy JSON from the client's own API) and records what the server replied.
"""

from __future__ import annotations

import io
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from anki.collection import Collection

from ankihost.protocol.request import SyncRequest
from ankihost.registry import UserState
from ankihost.storage.collection import connect
from ankihost.sync.handlers import STEPS
from tests.support.states import make_state

USN_TABLES = ("notes", "cards", "revlog", "tags", "decks", "deck_config", "notetypes")
CONTENT_TABLES = (
    "col",
    "notes",
    "cards",
    "revlog",
    "graves",
    "deck_config",
    "config",
    "fields",
    "templates",
    "notetypes",
    "decks",
    "tags",
)


def new_client(path: Path, build: Callable[[Collection], Any] | None = None) -> Path:
    col = Collection(str(path))
    if build is not None:
        build(col)
    col.close()
    return path


def mark_uploaded(path: Path, usn: int = 1, now_ms: int = 1_700_000_000_000) -> None:
    """What the client does to its file before a full upload (spec 01 §3.2)."""
    db = connect(path, exclusive=False)
    try:
        db.execute("begin")
        for table in USN_TABLES:
            db.execute(f"update {table} set usn = 0")
        db.execute("delete from graves")
        db.execute(
            "update col set usn = ?, scm = ?, ls = ?, mod = ?", (usn, now_ms, now_ms, now_ms)
        )
        db.execute("commit")
    finally:
        db.close()


def user_state(root: Path, source: Path) -> UserState:
    """A user whose server collection is a copy of `source`."""
    state = make_state(root)
    state.folder.ensure()
    shutil.copyfile(source, state.folder.collection)
    return state


def sync_request(method: str, body: Any, key: str = "sess1") -> SyncRequest:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return SyncRequest(
        method=method,
        sync_version=11,
        host_key="hostkey",
        client_version="test",
        session_key=key,
        body=io.BytesIO(data),
        body_size=len(data),
    )


def call(
    state: UserState, method: str, body: Any = None, key: str = "sess1", follow_up: bool = False
) -> Any:
    """Run one step like the web layer would and decode its JSON reply; with `follow_up`,
    also the work the web layer runs after sending the reply (as it would, before the
    client's next request)."""
    reply = STEPS[method].run(
        state, sync_request(method, {"_pad": None} if body is None else body, key)
    )
    if follow_up and reply.follow_up is not None:
        reply.follow_up()
    return orjson.loads(reply.data)


def content(path: Path, tables: Sequence[str] = CONTENT_TABLES) -> dict[str, list[tuple]]:
    """Every row of every collection table (or of `tables`), for before/after comparisons."""
    db = connect(path, exclusive=False)
    try:
        return {t: sorted(db.execute(f"select * from {t}").fetchall(), key=repr) for t in tables}
    finally:
        db.close()


def server_content(state: UserState) -> dict[str, list[tuple]]:
    state.collection.close()
    return content(state.folder.collection)


class StepClient:
    """The client side of one normal sync, over an open client collection."""

    def __init__(
        self, col: Collection, state: UserState, key: str = "sess1", follow_ups: bool = False
    ) -> None:
        self.col, self.state, self.key, self.follow_ups = col, state, key, follow_ups
        self.replies: dict[str, Any] = {"chunks": []}

    def _call(self, method: str, body: Any = None) -> Any:
        return call(self.state, method, body, self.key, follow_up=self.follow_ups)

    def _pending(self, table: str) -> list[int]:
        return self.col.db.list(f"select id from {table} where usn = -1")

    def meta(self) -> tuple[int, bool]:
        server = self.state.collection.connection().execute("select usn, mod from col").fetchone()
        self.server_usn = server[0]
        client_mod = self.col.db.scalar("select mod from col")
        return server[0], client_mod > server[1]

    def start(self) -> dict[str, Any]:
        _, lnewer = self.meta()
        self.lnewer = lnewer
        min_usn = self.col.db.scalar("select usn from col")
        self.replies["start"] = self._call(
            "start", {"minUsn": min_usn, "lnewer": lnewer, "graves": None}
        )
        return self.replies["start"]

    def graves(self) -> dict[str, list[int]]:
        kinds = {0: "cards", 1: "notes", 2: "decks"}
        out: dict[str, list[int]] = {"cards": [], "notes": [], "decks": []}
        for oid, kind in self.col.db.all("select oid, type from graves where usn = -1"):
            out[kinds[kind]].append(oid)
        return out

    def apply_graves(self) -> None:
        self._call("applyGraves", {"chunk": self.graves()})

    def changes(self) -> dict[str, Any]:
        usn = self.server_usn
        stamp = lambda obj: {**obj, "usn": usn}  # noqa: E731
        changes: dict[str, Any] = {
            "models": [stamp(self.col.models.get(i)) for i in self._pending("notetypes")],
            "decks": [
                [stamp(self.col.decks.get(i)) for i in self._pending("decks")],
                [stamp(self.col.decks.get_config(i)) for i in self._pending("deck_config")],
            ],
            "tags": self.col.db.list("select tag from tags where usn = -1"),
        }
        if self.lnewer:
            changes["conf"] = self.col.all_config()
            changes["crt"] = self.col.db.scalar("select crt from col")
        return changes

    def apply_changes(self) -> dict[str, Any]:
        self.replies["changes"] = self._call("applyChanges", {"changes": self.changes()})
        return self.replies["changes"]

    def fetch_chunks(self) -> None:
        for _ in range(10_000):
            reply = self._call("chunk")
            self.replies["chunks"].append(reply)
            if reply.get("done"):
                return
        raise AssertionError("chunk never reported done")

    def rows(self, table: str) -> list[list[Any]]:
        rows = [list(r) for r in self.col.db.all(f"select * from {table} where usn = -1")]
        usn_index = {"revlog": 2, "cards": 5, "notes": 4}[table]
        for row in rows:
            row[usn_index] = self.server_usn
            if table == "notes":
                row[7:11] = ["", "", 0, ""]
        return rows

    def send_chunks(self, size: int = 250) -> int:
        entries = [("revlog", r) for r in self.rows("revlog")]
        entries += [("cards", r) for r in self.rows("cards")] + [
            ("notes", r) for r in self.rows("notes")
        ]
        batches = [entries[i : i + size] for i in range(0, len(entries), size)] or [[]]
        for n, batch in enumerate(batches):
            chunk: dict[str, Any] = {"done": n == len(batches) - 1}
            for table, row in batch:
                chunk.setdefault(table, []).append(row)
            self._call("applyChunk", {"chunk": chunk})
        return len(batches)

    def counts(self) -> list[Any]:
        tables = ("cards", "notes", "revlog", "graves", "notetypes", "decks", "deck_config")
        return [[0, 0, 0], *(self.col.db.scalar(f"select count() from {t}") for t in tables)]

    def sanity(self, counts: list[Any] | None = None) -> dict[str, Any]:
        self.replies["sanity"] = self._call("sanityCheck2", {"client": counts or self.counts()})
        return self.replies["sanity"]

    def finish(self) -> int:
        self.replies["finish"] = self._call("finish")
        return self.replies["finish"]

    def through_changes(self) -> None:
        """The steps before the chunks: `start`, `applyGraves`, `applyChanges`."""
        self.start()
        self.apply_graves()
        self.apply_changes()

    def sync_upward(self) -> dict[str, Any]:
        """A whole sync where the server has nothing the client lacks."""
        self.through_changes()
        self.fetch_chunks()
        self.send_chunks()
        self.sanity()
        self.finish()
        return self.replies


def open_db(path: Path) -> sqlite3.Connection:
    return connect(path, exclusive=False)
