"""The admin's page for one user and its forms: log devices out (one or all), set the password,
set the quota, remove the user (typing the name to confirm); and adding a user.

Each form posts the user's name and runs one admin operation; a refusal (no such user or
device, a SYNC_USERn account, a bad quota) is a 4xx page with the operation's message and
nothing changed. After a change the browser is sent back to the user's page (303), which shows
what was done once. The page's sections on the user's data (snapshots, media trash, export)
and their forms are in `admin_data.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.responses import Response

from ankihost.admin.operations import AdminContext, operations
from ankihost.web.pages.area import PageRequest, Route
from ankihost.web.pages.errors import PageError, run_operation
from ankihost.web.pages.render import Renderer, see_other

if TYPE_CHECKING:
    from ankihost.web.pages.admin_data import UserData


def user_page(name: str) -> str:
    """The relative address of a user's page."""
    return "user?" + urlencode({"name": name})


def quota_mb(text: str) -> int | None:
    """A quota field: empty for none, else a whole number of MB (the operation checks >= 1)."""
    text = text.strip()
    if text == "":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise PageError("The quota must be a whole number of MB, or empty for none. Nothing was changed.")
    return int(text)


class UserPages:
    def __init__(self, context: AdminContext, renderer: Renderer, data: UserData) -> None:
        self.context = context
        self.renderer = renderer
        self.data = data
        self.ops = operations()

    def routes(self) -> dict[str, Route]:
        return {
            "user": Route(("GET",), self.user),
            "add": Route(("GET", "POST"), self.add),
            "revoke": Route(("POST",), self.revoke),
            "passwd": Route(("POST",), self.passwd),
            "quota": Route(("POST",), self.quota),
            "remove": Route(("POST",), self.remove),
        }

    async def _op(self, name: str, args: dict[str, Any], back: str) -> Any:
        return await run_operation(self.ops[name], self.context, args, back)

    async def user(self, page: PageRequest) -> Response:
        session = page.signed_in
        name = page.form.required("name", "The user's name")
        summary = (await self._op("user.list", {"name": name}, "./"))[0]
        devices = await self._op("device.list", {"name": name}, "./")
        return self.renderer.page(
            "admin_user.html", name=name, summary=summary, devices=devices,
            used=summary["collection_bytes"] + summary["media_bytes"],
            store=summary["source"] == "store", signed_in=True, csrf=session.csrf,
            flash=session.take_flash(), **await self.data.listings(name),
        )

    async def add(self, page: PageRequest) -> Response:
        session, form = page.signed_in, page.form
        if page.request.method != "POST":
            return self.renderer.page("admin_add.html", signed_in=True, csrf=session.csrf)
        name = form.required("name", "The user's name")
        password = form.required("password", "The password")
        if password != form.get("again"):
            raise PageError("The two passwords differ. Nothing was changed.", back="add")
        quota = quota_mb(form.get("quota_mb"))
        await self._op("user.add", {"name": name, "password": password, "quota_mb": quota}, "add")
        session.flash.append(f"User {name} added. They can sync now with this name and password.")
        return see_other(user_page(name))

    async def revoke(self, page: PageRequest) -> Response:
        session, form = page.signed_in, page.form
        name = form.required("name", "The user's name")
        device = form.get("device")
        if not device and not form.checked("all"):
            raise PageError("Name the device to log out, or all of them.", back=user_page(name))
        args: dict[str, Any] = {"name": name} if form.checked("all") else {"name": name, "ids": [device]}
        result = await self._op("device.revoke", args, user_page(name))
        revoked = ", ".join(result["revoked"]) or "none"
        session.flash.append(f"Logged out: {revoked}. Each device's next sync asks for the password.")
        return see_other(user_page(name))

    async def passwd(self, page: PageRequest) -> Response:
        session, form = page.signed_in, page.form
        name = form.required("name", "The user's name")
        password = form.required("password", "The new password")
        if password != form.get("again"):
            raise PageError("The two passwords differ. Nothing was changed.", back=user_page(name))
        result = await self._op("user.passwd", {"name": name, "password": password}, user_page(name))
        session.flash.append(f"Password changed; {result['devices_revoked']} device(s) logged out.")
        return see_other(user_page(name))

    async def quota(self, page: PageRequest) -> Response:
        session, form = page.signed_in, page.form
        name = form.required("name", "The user's name")
        quota = quota_mb(form.get("quota_mb"))
        await self._op("user.set", {"name": name, "quota_mb": quota}, user_page(name))
        session.flash.append(f"Quota set to {'none' if quota is None else f'{quota} MB'}.")
        return see_other(user_page(name))

    async def remove(self, page: PageRequest) -> Response:
        session, form = page.signed_in, page.form
        name = form.required("name", "The user's name")
        if form.get("confirm") != name:
            raise PageError("To remove a user, type their name exactly as shown. Nothing was changed.",
                            back=user_page(name))
        delete = form.checked("delete_data")
        result = await self._op("user.remove", {"name": name, "delete_data": delete}, user_page(name))
        kept = "and their data deleted" if delete else f"their data is kept in {result['folder']}"
        session.flash.append(f"User {name} removed; {kept}.")
        return see_other("./")
