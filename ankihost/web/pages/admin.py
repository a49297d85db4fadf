"""The admin pages (on the admin listener): sign-in, the overview of every user and of the
server, the audit log; the per-user page and its forms are in `admin_users.py` and
`admin_data.py` (snapshots, media trash, export).

Every change is an admin operation run in process with actor "admin page", the same code the
command line runs. Reading is through the operations too (`user.list`, `device.list`), plus the
account store's audit query and the server's own facts (version, uptime, disk, recent errors).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.responses import Response

from ankihost import __version__
from ankihost.admin.operations import AdminContext, operations
from ankihost.log import RecentError, RecentErrors
from ankihost.web.pages.admin_data import UserData
from ankihost.web.pages.admin_signin import AdminGate, SignInRefused
from ankihost.web.pages.admin_users import UserPages
from ankihost.web.pages.area import Area, PageRequest, Route
from ankihost.web.pages.errors import SlowDown, run_operation
from ankihost.web.pages.render import STYLESHEET, Renderer, see_other
from ankihost.web.pages.sessions import Sessions

ACTOR = "admin page"
COOKIE = "ankihost_admin"
WHO = "admin"
AUDIT_ROWS = 200


@dataclass(frozen=True)
class ServerFacts:
    version: str
    uptime_secs: float
    base: Path
    disk_free: int
    disk_total: int
    sessions: int
    errors: list[RecentError]


class AdminPages(Area):
    def __init__(self, context: AdminContext, gate: AdminGate, recent: RecentErrors, started: float) -> None:
        self.context = context.acting_as(ACTOR)
        self.gate = gate
        self.recent = recent
        self.started = started
        self.ops = operations()
        renderer = Renderer("admin")
        self.data = UserData(self.context, renderer)
        users = UserPages(self.context, renderer, self.data)
        super().__init__(renderer, Sessions(COOKIE), {
            "": Route(("GET",), self.overview),
            "audit": Route(("GET",), self.audit),
            "signin": Route(("GET", "POST"), self.signin, public=True),
            "signout": Route(("POST",), self.signout),
            **users.routes(),
            **self.data.routes(),
            f"static/{STYLESHEET}": Route(("GET",), self.stylesheet, public=True),
        })

    async def overview(self, page: PageRequest) -> Response:
        session = page.signed_in
        users = await run_operation(self.ops["user.list"], self.context, {})
        facts = await anyio.to_thread.run_sync(self._facts)
        return self.renderer.page("admin_overview.html", users=users, facts=facts, signed_in=True,
                                  csrf=session.csrf, flash=session.take_flash())

    def _facts(self) -> ServerFacts:
        base = self.context.folder.base
        disk = shutil.disk_usage(base)
        sessions = self.context.registry.syncing()
        return ServerFacts(__version__, time.monotonic() - self.started, base, disk.free, disk.total,
                           sessions, self.recent.newest_first())

    async def audit(self, page: PageRequest) -> Response:
        session = page.signed_in
        user = page.form.get("user")
        entries = await anyio.to_thread.run_sync(self.context.directory.store.audit, user or None, AUDIT_ROWS)
        names = sorted(self.context.directory.names(), key=str.casefold)
        return self.renderer.page("admin_audit.html", entries=entries, user=user, names=names,
                                  limit=AUDIT_ROWS, signed_in=True, csrf=session.csrf)

    async def signin(self, page: PageRequest) -> Response:
        if page.session is not None:
            return see_other("./")
        if page.request.method != "POST":
            return self.signin_form(page)
        self.check_signin_token(page)
        try:
            right = await self.gate.check(page.form.get("password"), page.ip)
        except SignInRefused:
            page.record.login = "throttled"
            raise SlowDown("Too many wrong passwords from this address. Wait 15 minutes and try "
                           "again (or restart the server).", back="signin") from None
        if not right:
            page.record.login = "failed"
            locked = self.gate.failed(page.ip)
            await self._audit("admin_page.signin_failed", ip=page.ip, locked="yes" if locked else "no")
            return self.signin_form(page, 403, error="Wrong password.")
        await self._audit("admin_page.signin", ip=page.ip)
        return self.signed_in(page, self.sessions.start(WHO))

    async def _audit(self, event: str, **detail: Any) -> None:
        await anyio.to_thread.run_sync(lambda: self.context.audit(event, None, **detail))
