"""Drives an old Anki client (the `anki` 2.1.54 wheel) on behalf of the test suite.

Runs inside the old client's own virtual environment, never in the test process: it imports
only the standard library and the old `anki` package. `tests/support/old_client.py` starts it
and talks to it in JSON lines: one command object per line on stdin, one reply per line on the
protocol stream (the process's original stdout; anything else printing to stdout is moved to
stderr). A reply is `{"ok": <result>}` or `{"error": {"type", "kind", "message"}}`.

The 2.1.54 client takes its server from the environment at each request (`SYNC_ENDPOINT` for
collection sync, `SYNC_ENDPOINT_MEDIA` for media), speaks protocol 10 (multipart + gzip), and
full-syncs schema-11 files. Its calls block until done, media sync included.
"""

from __future__ import annotations

import base64
import json
import os
import random
import sys
import traceback
from typing import Any

from anki.collection import Collection
from anki.sync import SyncAuth, SyncOutput

REQUIRED_NAMES = {
    SyncOutput.NO_CHANGES: "NO_CHANGES",
    SyncOutput.NORMAL_SYNC: "NORMAL_SYNC",
    SyncOutput.FULL_SYNC: "FULL_SYNC",
    SyncOutput.FULL_DOWNLOAD: "FULL_DOWNLOAD",
    SyncOutput.FULL_UPLOAD: "FULL_UPLOAD",
}
SYNC_TABLES = ("notes", "cards", "revlog")


class Device:
    """One collection (a profile) and the login it uses."""

    def __init__(self) -> None:
        self.col: Collection | None = None
        self.auth: SyncAuth | None = None

    @property
    def c(self) -> Collection:
        if self.col is None or self.col.db is None:
            raise RuntimeError("no collection is open")
        return self.col

    # -- collection -----------------------------------------------------------------------
    def open(self, path: str) -> dict[str, Any]:
        self.close_quietly()
        self.col = Collection(path)
        return {"ver": self.c.db.scalar("select ver from col"), "path": self.c.path}

    def close(self, downgrade: bool = False) -> None:
        self.c.close(downgrade=downgrade)
        self.col = None

    def close_quietly(self) -> None:
        if self.col is not None and self.col.db is not None:
            self.col.close()
        self.col = None

    # -- sync -------------------------------------------------------------------------------
    def login(self, username: str, password: str, endpoint: str, media_endpoint: str = "") -> dict:
        os.environ["SYNC_ENDPOINT"] = endpoint + "sync/"
        os.environ["SYNC_ENDPOINT_MEDIA"] = media_endpoint or endpoint + "msync/"
        self.auth = self.c.sync_login(username, password)
        return {"hkey": self.auth.hkey, "host_number": self.auth.host_number}

    def use_endpoint(self, endpoint: str, media_endpoint: str = "") -> None:
        """Point the logged-in device at another address (the host key is kept)."""
        os.environ["SYNC_ENDPOINT"] = endpoint + "sync/"
        os.environ["SYNC_ENDPOINT_MEDIA"] = media_endpoint or endpoint + "msync/"

    def _auth(self) -> SyncAuth:
        if self.auth is None:
            raise RuntimeError("not logged in")
        return self.auth

    def sync(self) -> dict[str, Any]:
        col = self.c
        col.save(trx=False)  # as Anki 2.1.54 does: the sync opens its own transaction
        try:
            out = col.sync_collection(self._auth())
        finally:
            col.db.begin()
        self.auth = SyncAuth(hkey=self._auth().hkey, host_number=out.host_number)
        self.c.models._clear_cache()
        return {
            "required": REQUIRED_NAMES[out.required],
            "server_message": out.server_message,
            "host_number": out.host_number,
        }

    def sync_status(self) -> str:
        return str(self.c.sync_status(self._auth()).required)

    def full_upload(self) -> None:
        self._full(upload=True)

    def full_download(self) -> None:
        self._full(upload=False)

    def _full(self, upload: bool) -> None:
        col = self.c
        auth = self._auth()
        col.close_for_full_sync()
        try:
            if upload:
                col.full_upload(auth)
            else:
                col.full_download(auth)
        finally:
            col.reopen(after_full_sync=True)  # the backend reopened it, whatever happened
            col.models._clear_cache()

    def sync_media(self) -> None:
        self.c.sync_media(self._auth())

    # -- content ----------------------------------------------------------------------------
    def add_notes(self, notes: list[dict[str, Any]]) -> list[int]:
        ids = []
        for spec in notes:
            col = self.c
            note = col.new_note(col.models.by_name(spec.get("notetype", "Basic")))
            for name, value in spec["fields"].items():
                note[name] = value
            note.tags = list(spec.get("tags", []))
            col.add_note(note, col.decks.id(spec.get("deck", "Default")))
            ids.append(int(note.id))
        return ids

    def remove_notes(self, ids: list[int]) -> int:
        return int(self.c.remove_notes(ids).count)

    def find_notes(self, query: str) -> list[int]:
        return [int(nid) for nid in self.c.find_notes(query)]

    def edit_note(self, id: int, fields: dict[str, str], tags: list[str] | None = None) -> None:
        note = self.c.get_note(id)
        for name, value in fields.items():
            note[name] = value
        if tags is not None:
            note.tags = tags
        self.c.update_note(note)

    def review(self, deck: str, count: int, seed: int = 1) -> int:
        col, rng = self.c, random.Random(seed)
        col.decks.select(col.decks.id(deck))
        col.reset()
        done = 0
        while done < count and (card := col.sched.getCard()) is not None:
            col.sched.answerCard(card, rng.choice((1, 3, 3, 4)))
            done += 1
        return done

    def add_deck(self, name: str) -> int:
        return int(self.c.decks.id(name))

    def add_deck_options(self, name: str, deck: str, new_per_day: int, steps: list[float]) -> int:
        decks = self.c.decks
        conf = decks.add_config(name, clone_from=decks.get_config(1))
        conf["new"]["perDay"] = new_per_day
        conf["new"]["delays"] = steps
        decks.update_config(conf)
        target = decks.get(decks.id(deck))
        target["conf"] = conf["id"]
        decks.save(target)
        return int(conf["id"])

    def add_filtered_deck(self, name: str, search: str, limit: int) -> int:
        sched = self.c.sched
        deck = sched.get_or_create_filtered_deck(deck_id=0)
        deck.name = name
        deck.config.search_terms[0].search = search
        deck.config.search_terms[0].limit = limit
        return int(sched.add_or_update_filtered_deck(deck).id)

    def set_config(self, key: str, value: Any) -> None:
        self.c.set_config(key, value)

    def add_media(self, name: str, data_b64: str) -> str:
        return self.c.media.write_data(name, base64.b64decode(data_b64))

    def remove_media(self, names: list[str]) -> None:
        self.c.media.trash_files(names)

    def media_names(self) -> list[str]:
        return sorted(os.listdir(self.c.media.dir()))

    def media_dir(self) -> str:
        return self.c.media.dir()

    def sql(self, sql: str, args: list[Any] | None = None) -> list[list[Any]]:
        return [list(row) for row in self.c.db.all(sql, *(args or []))]

    def dump(self) -> dict[str, Any]:
        """The collection's content in the comparable form of tests/support/old_client.py."""
        col = self.c
        col.models._clear_cache()
        rows = {t: {str(r[0]): list(r) for r in col.db.all(f"select * from {t}")} for t in SYNC_TABLES}
        return {
            "col": dict(zip(("crt", "scm"), col.db.first("select crt, scm from col"), strict=True)),
            **rows,
            "graves": sorted(col.db.all("select oid, type from graves")),
            "decks": {str(d["id"]): d for d in col.decks.all()},
            "deck_configs": {str(c["id"]): c for c in col.decks.all_config()},
            "notetypes": {str(m["id"]): m for m in col.models.all()},
            "tags": dict(col.db.all("select tag, usn from tags")),
            "config": col.all_config(),
            "media": self.media_names(),
        }


def run(device: Device, line: str) -> dict[str, Any]:
    try:
        request = json.loads(line)
        method = getattr(device, request.pop("cmd"))
        return {"ok": method(**request)}
    except Exception as exc:  # every failure goes back to the caller, the driver lives on
        return {
            "error": {
                "type": type(exc).__name__,
                "kind": str(getattr(exc, "kind", "")),
                "message": str(exc),
                "trace": traceback.format_exc(limit=6),
            }
        }


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints (ours or the library's) go to stderr, not into the protocol
    sys.stdout = sys.stderr
    device = Device()
    for line in sys.stdin:
        if line.strip():
            protocol.write(json.dumps(run(device, line), default=_plain) + "\n")
            protocol.flush()
    device.close_quietly()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON: {type(value).__name__}")


if __name__ == "__main__":
    main()
