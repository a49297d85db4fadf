"""The admin's page for one user, on their data: snapshots (restore one, after a confirmation
page), the media trash (restore the ticked files), and downloading their collection package.

Each runs the admin operation the command line runs (`snapshot.list`/`snapshot.restore`,
`media.trash`/`media.restore`, `export.create` through `downloads.py`). A restore waits for
the user's sync to end for WAIT_SECS at most, then is refused (409) with nothing changed, so the
browser always gets an answer. Every refusal (unknown snapshot, damaged snapshot, a file not in
the trash or whose name now holds other content) is a 4xx page and nothing changed.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ankihost.admin.operations import AdminContext, operations
from ankihost.web.pages.admin_users import user_page
from ankihost.web.pages.area import PageRequest, Route
from ankihost.web.pages.downloads import Exports
from ankihost.web.pages.errors import NotFoundPage, PageError, run_operation
from ankihost.web.pages.render import Renderer, see_other

# How long a restore waits for the user's sync to end before it is refused (409).
WAIT_SECS = 30
# Names of the media trash listed on the page (the command line lists them all).
TRASH_ROWS = 500
# Names a result message spells out.
NAMES_SHOWN = 10


def names(files: list[str]) -> str:
    shown = ", ".join(files[:NAMES_SHOWN])
    return shown + (f" and {len(files) - NAMES_SHOWN} more" if len(files) > NAMES_SHOWN else "")


def trash_rows(listing: dict[str, Any]) -> dict[str, Any]:
    """The trash as the page lists it: one row per name, its newest version (the one a restore
    puts back) with how many older ones are kept, newest first, at most TRASH_ROWS."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in listing["files"]:  # newest first
        row = rows.get(entry["file"])
        if row is None:
            rows[entry["file"]] = {**entry, "older": 0}
        else:
            row["older"] += 1
    files = list(rows.values())
    return {"days": listing["days"], "total_bytes": listing["total_bytes"], "entries": len(listing["files"]),
            "files": files[:TRASH_ROWS], "more": max(0, len(files) - TRASH_ROWS)}


class UserData:
    def __init__(self, context: AdminContext, renderer: Renderer) -> None:
        self.context = context
        self.renderer = renderer
        self.ops = operations()
        self.exports = Exports(context)
        self.wait_secs: float = WAIT_SECS

    def routes(self) -> dict[str, Route]:
        return {
            "restore": Route(("GET", "POST"), self.restore),
            "restore-media": Route(("POST",), self.restore_media, lists=("file",)),
            "export": Route(("GET",), self.export),
        }

    async def _op(self, name: str, args: dict[str, Any], back: str) -> Any:
        return await run_operation(self.ops[name], self.context, args, back)

    async def listings(self, name: str) -> dict[str, Any]:
        """What the user's page shows of their data: `snapshots` and `trash`."""
        snapshots = await self._op("snapshot.list", {"name": name}, "./")
        trash = await self._op("media.trash", {"name": name}, "./")
        return {"snapshots": snapshots, "trash": trash_rows(trash), "wait_secs": self.wait_secs}

    async def restore(self, page: PageRequest) -> Response:
        """GET: what restoring the snapshot does, and the button; POST: restore it."""
        session, form = page.signed_in, page.form
        name = form.required("name", "The user's name")
        id = form.required("id", "The snapshot")
        back = user_page(name)
        if page.request.method != "POST":
            snapshot = await self._snapshot(name, id, back)
            summary = (await self._op("user.list", {"name": name}, back))[0]
            return self.renderer.page("admin_restore.html", name=name, snapshot=snapshot, summary=summary,
                                      wait_secs=self.wait_secs, signed_in=True, csrf=session.csrf)
        args = {"name": name, "id": id, "wait_secs": self.wait_secs}
        result = await self._op("snapshot.restore", args, back)
        kept = (f"The collection it replaced is kept as snapshot {result['saved']}." if result["saved"]
                else "There was no collection to keep.")
        session.flash.append(f"Snapshot {id} restored: {result['notes']} notes, {result['cards']} cards. {kept} "
                             f"At their next sync each of {name}'s devices says a full sync is required: "
                             "choose Download on every one.")
        return see_other(back)

    async def _snapshot(self, name: str, id: str, back: str) -> dict[str, Any]:
        listing = await self._op("snapshot.list", {"name": name}, back)
        snapshot: dict[str, Any] | None = next((s for s in listing["snapshots"] if s["id"] == id), None)
        if snapshot is None:
            raise NotFoundPage(f"{name} has no snapshot {id!r} (it may have been removed by the "
                               "retention rules meanwhile).", back=back)
        if snapshot["damaged"]:
            raise PageError(f"Snapshot {id} is damaged (its header cannot be read), so it cannot be "
                            "restored. Nothing was changed.", back=back)
        return snapshot

    async def restore_media(self, page: PageRequest) -> Response:
        session, form = page.signed_in, page.form
        name = form.required("name", "The user's name")
        back = user_page(name)
        files = form.values("file")
        if not files:
            raise PageError("Tick the files to restore. Nothing was changed.", back=back)
        result = await self._op("media.restore", {"name": name, "files": files}, back)
        if result["restored"]:
            session.flash.append(f"Restored {len(result['restored'])} media file(s): {names(result['restored'])}. "
                                 f"Each of {name}'s devices downloads them at its next media sync.")
        if result["already_there"]:
            session.flash.append("Already on the server with the same content, so left as they are: "
                                 f"{names(result['already_there'])}.")
        return see_other(back)

    async def export(self, page: PageRequest) -> Response:
        name = page.form.required("name", "The user's name")
        return await self.exports.download(name, media=page.form.get("media") != "0", back=user_page(name),
                                           head=page.request.method == "HEAD")
