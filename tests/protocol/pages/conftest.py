"""Both listeners of one in-process server, driven like a browser (forms, cookies, redirects)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from starlette.testclient import TestClient

from ankihost.server import build
from ankihost.web.app import SyncApp
from tests.conftest import make_settings

ADMIN = "http://admin.test"
ADMIN_PASSWORD = "admin-Pa55word"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, html
    return match[1]


class Site:
    """One server; `http` is a browser with one cookie jar for both listeners (the sync
    listener at http://testserver, the admin listener at http://admin.test)."""

    def __init__(self, app: SyncApp, http: TestClient) -> None:
        self.app = app
        self.http = http

    # -- the admin pages ----------------------------------------------------------------------

    def admin(self, path: str, **kwargs: Any):
        return self.http.get(f"{ADMIN}/{path}", **kwargs)

    def admin_signin(self, password: str = ADMIN_PASSWORD):
        token = csrf_of(self.admin("signin").text)
        return self.http.post(f"{ADMIN}/signin", data={"csrf": token, "password": password},
                              follow_redirects=False)

    def admin_post(self, page: str, csrf: str | None = None, **fields: Any):
        token = csrf if csrf is not None else csrf_of(self.admin("add").text)
        return self.http.post(f"{ADMIN}/{page}", data={"csrf": token, **fields}, follow_redirects=False)

    def add_user(self, name: str, password: str, quota_mb: str = "") -> None:
        response = self.admin_post("add", name=name, password=password, again=password, quota_mb=quota_mb)
        assert response.status_code == 303, response.text

    # -- the account page ---------------------------------------------------------------------

    def account(self, path: str = "", **kwargs: Any):
        return self.http.get(f"/account/{path}", **kwargs)

    def account_signin(self, name: str, password: str):
        token = csrf_of(self.account("signin").text)
        return self.http.post("/account/signin", data={"csrf": token, "name": name, "password": password},
                              follow_redirects=False)

    def account_post(self, page: str, csrf: str | None = None, **fields: Any):
        token = csrf if csrf is not None else csrf_of(self.account().text)
        return self.http.post(f"/account/{page}", data={"csrf": token, **fields}, follow_redirects=False)

    # -- sync --------------------------------------------------------------------------------

    def sync_login(self, name: str, password: str, client: str = "anki,26.9.3 (test),linux"):
        body = zstandard.ZstdCompressor().compress(orjson.dumps({"u": name, "p": password}))
        header = orjson.dumps({"v": 11, "k": "", "c": client, "s": ""}).decode()
        return self.http.post("/sync/hostKey", content=body, headers={"anki-sync": header})

    def device_key(self, name: str, password: str, client: str = "anki,26.9.3 (test),linux") -> str:
        response = self.sync_login(name, password, client)
        assert response.status_code == 200, response.text
        data = zstandard.ZstdDecompressor().decompressobj().decompress(response.content)
        return str(orjson.loads(data)["key"])

    def meta(self, key: str):
        body = zstandard.ZstdCompressor().compress(orjson.dumps({"v": 11, "cv": "anki,26.9.3"}))
        header = orjson.dumps({"v": 11, "k": key, "c": "anki,26.9.3 (test),linux", "s": "s"}).decode()
        return self.http.post("/sync/meta", content=body, headers={"anki-sync": header})

    def devices(self, name: str) -> list[str]:
        return [d.id for d in self.app.accounts.devices(name)]


def make_site(base: Path, **env: str) -> Iterator[Site]:
    app = build(make_settings(base, ANKIHOST_ADMIN_PASSWORD=ADMIN_PASSWORD, **env))
    assert app.admin_app is not None

    async def both(scope: Any, receive: Any, send: Any) -> None:
        host = dict(scope.get("headers", [])).get(b"host", b"") if scope["type"] == "http" else b""
        await (app.admin_app if host.startswith(b"admin.test") else app)(scope, receive, send)

    with TestClient(both) as http:
        yield Site(app, http)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path / "base")


@pytest.fixture
def admin(site: Site) -> Site:
    """A site whose browser is signed in to the admin pages."""
    assert site.admin_signin().status_code == 303
    return site
