"""The account page, `…/account/` on the sync listener: a user signs in with their sync name
and password and sees their storage, quota and devices, logs a device out (a lost phone),
changes their password (accounts of the account store; SYNC_USERn accounts are explained), and
downloads their own collection package (`downloads.py`).

Sign-in goes through the sync logins' `LoginGate` (same throttle, no device key made). Every
change is an admin operation run for the signed-in user's own name only (actor "account page"),
so a form naming another user's device finds no such device. A session ends when its account
is removed or its password changes (here, on the admin page or with `ankihost user passwd`).
"""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from ankihost.accounts.directory import StoreAccount
from ankihost.accounts.store import Account
from ankihost.admin.operations import AdminContext, operations
from ankihost.errors import AuthFailed, TooManyRequests
from ankihost.web.logins import LoginGate
from ankihost.web.pages.area import Area, PageRequest, Route
from ankihost.web.pages.downloads import Exports
from ankihost.web.pages.errors import Forbidden, PageError, SlowDown, run_operation
from ankihost.web.pages.render import STYLESHEET, Renderer, see_other
from ankihost.web.pages.sessions import Session, Sessions
from ankihost.web.request_log import RequestLog

ACTOR = "account page"
COOKIE = "ankihost_account"
# `…/account/<page>` at the end of the path, whatever prefix a proxy leaves in front.
_PATH = re.compile(r"(?:^|/)account(?:/((?:static/)?[A-Za-z0-9._-]*))?$")


def account_page(path: str) -> str | None:
    """The page of the account area a path asks for ("" is the account page itself), or None
    when the path is not the account area's."""
    match = _PATH.search(path)
    if match is None:
        return None
    return match[1] or ""


def _proof(account: Account) -> object:
    """What a sign-in was checked against: a store account's password hash (replaced when
    the password changes), or the SYNC_USERn account itself (fixed while the server runs)."""
    return account.verifier if isinstance(account, StoreAccount) else account


class AccountPages(Area):
    def __init__(self, context: AdminContext, logins: LoginGate) -> None:
        self.context = context.acting_as(ACTOR)
        self.directory = context.directory
        self.logins = logins
        self.ops = operations()
        self.exports = Exports(self.context)
        super().__init__(Renderer("account"), Sessions(COOKIE), {
            "": Route(("GET",), self.home),
            "signin": Route(("GET", "POST"), self.signin, public=True),
            "signout": Route(("POST",), self.signout),
            "revoke": Route(("POST",), self.revoke),
            "password": Route(("POST",), self.password),
            "export": Route(("GET",), self.export),
            f"static/{STYLESHEET}": Route(("GET",), self.stylesheet, public=True),
        })

    def still_valid(self, session: Session) -> bool:
        account = self.directory.by_name(session.who)
        return account is not None and _proof(account) is session.proof

    async def _op(self, name: str, args: dict[str, Any]) -> Any:
        return await run_operation(self.ops[name], self.context, args, back="./")

    async def handle(self, request: Request, page: str, record: RequestLog, ip: str) -> Response:
        if page == "" and not request.scope["path"].endswith("/"):
            return see_other("account/")  # `…/account`: relative links need the slash
        return await super().handle(request, page, record, ip)

    async def home(self, page: PageRequest) -> Response:
        session = page.signed_in
        name = session.who
        summary = (await self._op("user.list", {"name": name}))[0]
        devices = await self._op("device.list", {"name": name})
        used = summary["collection_bytes"] + summary["media_bytes"]
        return self.renderer.page(
            "account.html", name=name, summary=summary, used=used, devices=devices,
            store=summary["source"] == "store", csrf=session.csrf, signed_in=True,
            flash=session.take_flash(),
        )

    async def signin(self, page: PageRequest) -> Response:
        if page.session is not None:
            return see_other("./")
        if page.request.method != "POST":
            return self.signin_form(page)
        self.check_signin_token(page)
        name = page.form.required("name", "The name")
        password = page.form.required("password", "The password")
        try:
            account = await self.logins.check(name, password, page.ip, ACTOR)
        except TooManyRequests:
            page.record.login = "throttled"
            raise SlowDown("Too many failed sign-ins from here, or for this name. Wait 15 minutes "
                           "and try again.", back="signin") from None
        except AuthFailed:
            page.record.login = "failed"
            return self.signin_form(page, 403, error="Wrong name or password.", name=name)
        await anyio.to_thread.run_sync(lambda: self.context.audit("account_page.signin", account.name,
                                                                  ip=page.ip))
        return self.signed_in(page, self.sessions.start(account.name, _proof(account)))

    async def revoke(self, page: PageRequest) -> Response:
        session = page.signed_in
        device = page.form.required("device", "The device")
        await self._op("device.revoke", {"name": session.who, "ids": [device]})
        session.flash.append(f"Device {device} is logged out: its next sync asks for the password.")
        return see_other("./")

    async def password(self, page: PageRequest) -> Response:
        session, form = page.signed_in, page.form
        account = self.directory.by_name(session.who)
        if not isinstance(account, StoreAccount):
            raise PageError("Your account is defined in the server's settings (a SYNC_USERn "
                            "variable), so its password can only be changed there: ask the "
                            "server's admin.", back="./")
        current = form.required("current", "Your current password")
        new = form.required("new", "The new password")
        if new != form.get("again"):
            raise PageError("The two new passwords differ. Nothing was changed.", back="./")
        try:
            await self.logins.check(session.who, current, page.ip, ACTOR)
        except TooManyRequests:
            raise SlowDown("Too many wrong passwords. Wait 15 minutes and try again.", back="./") from None
        except AuthFailed:
            raise Forbidden("Your current password is wrong. Nothing was changed.", back="./") from None
        result = await self._op("user.passwd", {"name": session.who, "password": new})
        changed = self.directory.by_name(session.who)
        session.proof = None if changed is None else _proof(changed)
        session.flash.append(f"Your password is changed. Your devices ({result['devices_revoked']}) are "
                             "logged out: sync on each and sign in with the new password.")
        return see_other("./")

    async def export(self, page: PageRequest) -> Response:
        """The signed-in user's own collection package: the name comes from the session only."""
        media = page.form.get("media") != "0"
        return await self.exports.download(page.signed_in.who, media=media, back="./",
                                           head=page.request.method == "HEAD")
