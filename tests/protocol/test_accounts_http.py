"""Accounts through the real app in process: per-device keys, revocation, password changes,
removal mid-sync, throttled logins and quotas, with every refusal checked on the wire and on
disk. Changes go through the app's own admin channel, as `ankihost user …` sends them."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from ankihost.accounts import throttle
from ankihost.admin import channel
from ankihost.admin.operations import AdminError
from ankihost.config import Settings
from ankihost.server import build
from ankihost.storage import schema
from ankihost.storage.paths import DataFolder
from ankihost.web.app import SyncApp
from tests.conftest import ALICE_KEY, Wire, make_settings
from tests.support.media_files import media_zip

MIB = 1024 * 1024
CLIENT = "26.09.3,29bb700b,linux"


class Server:
    """The app in process with its lifespan running (admin channel and activity flushing)."""

    def __init__(self, settings: Settings, http: TestClient, app: SyncApp) -> None:
        self.settings = settings
        self.http = http
        self.app = app
        self.wire = Wire(http)
        self.folder = DataFolder(settings.base)

    def admin(self, op: str, **args: Any) -> Any:
        return channel.call(self.folder, op, args)

    def login(self, name: str, password: str, ip: str | None = None) -> Any:
        header = orjson.dumps({"v": 11, "k": "", "c": CLIENT, "s": "x"}).decode()
        headers = {"anki-sync": header, **({"X-Real-IP": ip} if ip else {})}
        body = __import__("zstandard").ZstdCompressor().compress(orjson.dumps({"u": name, "p": password}))
        return self.http.post("/sync/hostKey", content=body, headers=headers)

    def key(self, name: str, password: str, ip: str | None = None) -> str:
        response = self.login(name, password, ip)
        key: str = self.wire.json(response)["key"]
        return key

    def meta(self, key: str) -> int:
        return self.wire.post("meta", {"v": 11}, key=key).status_code

    def user_root(self, name: str) -> Path:
        return self.settings.base / name


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    settings = make_settings(tmp_path / "base", SYNC_IP_HEADER="XRealIp")
    app = build(settings)
    with TestClient(app) as http:
        made = Server(settings, http, app)
        made.admin("user.add", name="carol", password="carol-pw")
        yield made


def _names(folder: Path) -> list[str]:
    """What a user folder holds, but SQLite's -wal/-shm files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))


def digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


@pytest.fixture(scope="module")
def big_collection(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real collection of about 1.5 MB (past a 1 MB quota)."""
    from anki.collection import Collection

    folder = tmp_path_factory.mktemp("big")
    col = Collection(str(folder / "collection.anki2"))
    basic = col.models.by_name("Basic")
    for i in range(150):
        note = col.new_note(basic)
        note["Front"], note["Back"] = f"front {i}", os.urandom(5000).hex()
        col.add_note(note, col.decks.id("Default"))
    col.close(downgrade=False)
    data = (folder / "collection.anki2").read_bytes()
    assert len(data) > 1.3 * MIB
    return data


# -- keys and devices -------------------------------------------------------------------------

def test_each_login_of_a_cli_account_is_a_device_with_its_own_key(server: Server) -> None:
    phone, laptop = server.key("carol", "carol-pw"), server.key("carol", "carol-pw")
    assert phone != laptop
    listed = server.admin("device.list", name="carol")
    assert listed["shared_key"] is False
    assert [d["client"] for d in listed["devices"]] == [CLIENT, CLIENT]  # from the login's header
    assert server.meta(phone) == 200 and server.meta(laptop) == 200
    listed = server.admin("device.list", name="carol")
    assert [d["client"] for d in listed["devices"]] == ["test,1,linux"] * 2  # the latest request's
    assert {u["name"]: u["devices"] for u in server.admin("user.list")} == {"alice": None, "bob": None, "carol": 2}


@pytest.mark.parametrize("area", ["sync", "msync"])
def test_a_revoked_device_is_refused_and_the_others_keep_syncing(server: Server, area: str) -> None:
    phone, laptop = server.key("carol", "carol-pw"), server.key("carol", "carol-pw")
    method, payload = ("meta", {"v": 11}) if area == "sync" else ("begin", {"v": CLIENT})
    assert server.wire.post(method, payload, area=area, key=phone).status_code == 200
    phone_id = server.admin("device.list", name="carol")["devices"][0]["id"]
    assert server.admin("device.revoke", name="carol", ids=[phone_id]) == {"name": "carol", "revoked": [phone_id]}
    refused = server.wire.post(method, payload, area=area, key=phone)
    assert (refused.status_code, refused.text) == (403, "403")
    assert server.wire.post(method, payload, area=area, key=laptop).status_code == 200
    assert server.wire.post(method, payload, area=area, key="not-a-key-at-all").status_code == 403
    assert server.wire.post(method, payload, area=area, key=ALICE_KEY).status_code == 200


def test_revoking_a_device_rolls_back_the_sync_it_started_but_not_another_devices(server: Server) -> None:
    phone, laptop = server.key("carol", "carol-pw"), server.key("carol", "carol-pw")
    start = {"minUsn": 0, "lnewer": False, "graves": None}
    assert server.wire.post("start", start, key=phone, session="p").status_code == 200
    state = server.app.registry.by_name("carol")
    phone_id = server.admin("device.list", name="carol")["devices"][0]["id"]
    assert state.collection.session is not None
    server.admin("device.revoke", name="carol", ids=[phone_id])
    assert state.collection.session is None and not state.collection.connection().in_transaction
    tablet = server.key("carol", "carol-pw")
    assert server.wire.post("start", start, key=laptop, session="l").status_code == 200
    tablet_id = server.admin("device.list", name="carol")["devices"][-1]["id"]
    server.admin("device.revoke", name="carol", ids=[tablet_id])  # not the laptop's sync
    assert state.collection.session is not None and state.collection.session.key == "l"
    assert server.wire.post("chunk", {}, key=laptop, session="l").status_code == 200
    assert server.meta(tablet) == 403


def test_a_new_password_refuses_every_old_key_and_the_old_password(server: Server) -> None:
    keys = [server.key("carol", "carol-pw") for _ in range(2)]
    assert server.admin("user.passwd", name="carol", password="new-pw")["devices_revoked"] == 2
    assert [server.meta(k) for k in keys] == [403, 403]
    assert server.login("carol", "carol-pw").status_code == 403
    assert server.meta(server.key("carol", "new-pw")) == 200


def test_env_accounts_keep_the_official_key(server: Server) -> None:
    assert server.key("alice", "secret") == ALICE_KEY == hashlib.sha1(b"alice:secret").hexdigest()
    assert server.admin("device.list", name="alice") == {"name": "alice", "shared_key": True, "devices": []}


def test_env_accounts_with_device_keys(tmp_path: Path) -> None:
    """ANKIHOST_ENV_DEVICE_KEYS=1: an env account gets a key per login, revocable one by one;
    a new password in SYNC_USERn logs its devices out at the next start, an unchanged one not."""
    base = tmp_path / "base"

    def start(alice: str) -> tuple[SyncApp, TestClient]:
        app = build(make_settings(base, SYNC_USER1=f"alice:{alice}", ANKIHOST_ENV_DEVICE_KEYS="1"))
        return app, TestClient(app)

    app, http = start("secret")
    with http:
        server = Server(app.settings, http, app)
        phone, laptop = server.key("alice", "secret"), server.key("alice", "secret")
        assert len({phone, laptop, ALICE_KEY}) == 3 and server.meta(ALICE_KEY) == 403
        ids = [d["id"] for d in server.admin("device.list", name="alice")["devices"]]
        server.admin("device.revoke", name="alice", ids=ids[:1])
        assert (server.meta(phone), server.meta(laptop)) == (403, 200)
    app, http = start("secret")
    with http:
        assert Server(app.settings, http, app).meta(laptop) == 200
    app, http = start("changed")
    with http:
        server = Server(app.settings, http, app)
        assert server.meta(laptop) == 403
        assert server.meta(server.key("alice", "changed")) == 200


# -- removal mid-sync -------------------------------------------------------------------------

def _sync_until_graves(server: Server, key: str, card_ids: list[int]) -> None:
    meta = server.wire.json(server.wire.post("meta", {"v": 11}, key=key))
    assert server.wire.post("start", {"minUsn": meta["usn"], "lnewer": True}, key=key).status_code == 200
    graves = {"chunk": {"cards": card_ids[:5], "notes": [], "decks": []}}
    assert server.wire.post("applyGraves", graves, key=key).status_code == 200


def test_removing_a_user_mid_sync_rolls_it_back_refuses_them_and_keeps_their_data(
    server: Server, client_collection: bytes
) -> None:
    key = server.key("carol", "carol-pw")
    assert server.wire.payload(server.wire.post("upload", client_collection, key=key)) == b"OK"
    stored = server.user_root("carol") / "collection.anki2"
    with contextlib.closing(sqlite3.connect(stored)) as db:  # (the server opens it exclusively)
        cards = [row[0] for row in db.execute("select id from cards")]
    _sync_until_graves(server, key, cards)
    result = server.admin("user.remove", name="carol")
    assert result == {"name": "carol", "folder": str(server.user_root("carol")), "data_deleted": False}
    for method, payload in [("applyChanges", {"changes": {}}), ("meta", {"v": 11}), ("finish", {})]:
        assert server.wire.post(method, payload, key=key).status_code == 403
    assert server.wire.post("begin", {"v": CLIENT}, area="msync", key=key).status_code == 403
    assert server.login("carol", "carol-pw").status_code == 403
    assert schema.upload_problem(stored) is None  # a whole, valid collection
    with contextlib.closing(sqlite3.connect(stored)) as db:
        assert db.execute("select count() from cards").fetchone()[0] == len(cards)  # graves rolled back
        assert db.execute("select count() from graves").fetchone()[0] == 0
    assert stored.read_bytes()[:16] == b"SQLite format 3\x00"
    assert server.meta(ALICE_KEY) == 200  # others are served on
    assert [u["name"] for u in server.admin("user.list")] == ["alice", "bob"]


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except Exception as exc:  # (handed to the test)
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _waiters(server: Server, name: str) -> int:
    lock = server.app.registry._states[name].lock
    return len(lock._waiters or ())


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("method", ["meta", "upload"])
def test_a_request_waiting_for_the_lock_of_a_user_being_removed_is_refused(
    server: Server, client_collection: bytes, method: str
) -> None:
    """carol's lock is held (a long step of hers is running); her next request is queued behind
    it, then `user remove carol` comes in. When the lock is free the queued request must be
    refused (403), not run for a removed account, and an upload must leave no file behind."""
    key = server.key("carol", "carol-pw")
    assert server.meta(key) == 200
    state = server.app.registry._states["carol"]
    server.http.portal.call(state.lock.acquire)  # type: ignore[union-attr]
    body = client_collection if method == "upload" else {"v": 11}
    request, answered = _in_thread(lambda: server.wire.post(method, body, key=key))
    _until(lambda: _waiters(server, "carol") == 1, "the request waits for the lock")
    removal, removed = _in_thread(lambda: server.admin("user.remove", name="carol"))
    _until(lambda: _waiters(server, "carol") == 2, "the removal waits for the lock")
    server.http.portal.call(state.lock.release)  # type: ignore[union-attr]
    request.join(30)
    removal.join(30)
    assert removed[0]["name"] == "carol"
    assert answered[0].status_code == 403
    folder = server.user_root("carol")
    assert _names(folder) == ["collection.anki2", "media", "media.db"]  # no upload left behind
    with contextlib.closing(sqlite3.connect(folder / "collection.anki2")) as db:
        assert db.execute("select count() from notes").fetchone()[0] == 0  # not installed


@pytest.mark.parametrize("change", ["device.revoke", "user.passwd"])
def test_a_request_that_waited_for_the_lock_while_its_key_was_revoked_is_refused(
    server: Server, change: str
) -> None:
    phone, laptop = server.key("carol", "carol-pw"), server.key("carol", "carol-pw")
    assert server.meta(phone) == 200
    phone_id = server.admin("device.list", name="carol")["devices"][0]["id"]
    state = server.app.registry._states["carol"]
    server.http.portal.call(state.lock.acquire)  # type: ignore[union-attr]
    queued, answered = _in_thread(lambda: server.meta(phone))
    _until(lambda: _waiters(server, "carol") == 1, "the request waits for the lock")
    args = {"ids": [phone_id]} if change == "device.revoke" else {"password": "new-pw"}
    changing, changed = _in_thread(lambda: server.admin(change, name="carol", **args))
    if change == "device.revoke":  # (a revocation does not wait for the lock)
        changing.join(30)
    else:  # the new password is set, and its eviction of carol's session waits for the lock
        _until(lambda: _waiters(server, "carol") == 2, "the password change waits for the lock")
    server.http.portal.call(state.lock.release)  # type: ignore[union-attr]
    queued.join(30)
    changing.join(30)
    assert not isinstance(changed[0], Exception), changed
    assert answered == [403]
    assert server.meta(laptop) == (200 if change == "device.revoke" else 403)


# -- throttling -------------------------------------------------------------------------------

def test_throttled_logins_are_429_never_403_and_the_right_password_from_elsewhere_works(
    server: Server,
) -> None:
    attacker, owner = "203.0.113.66", "198.51.100.7"
    for _ in range(throttle.PAIR_LIMIT):
        assert server.login("carol", "guess", attacker).status_code == 403
    for password in ("guess", "carol-pw"):  # refused before any password is looked at
        refused = server.login("carol", password, attacker)
        assert (refused.status_code, refused.text) == (429, "429")
    started = time.monotonic()
    assert server.login("carol", "carol-pw", owner).status_code == 200
    assert time.monotonic() - started >= throttle.SLOW_SECS * 0.9  # slowed, as the name is attacked
    assert server.login("alice", "secret", attacker).status_code == 200  # other names from there
    events = [(e.event, e.detail) for e in server.app.accounts.store.audit("carol")]
    assert [e for e, _ in events].count("login.failed") == throttle.PAIR_LIMIT
    assert any(e == "login.throttled" and attacker in d for e, d in events)
    assert all("guess" not in d and "carol-pw" not in d for _, d in events)


def test_an_address_failing_for_many_names_is_refused_for_all(server: Server) -> None:
    address = "203.0.113.99"
    for i in range(throttle.ADDRESS_LIMIT):
        assert server.login(f"user{i}", "pw", address).status_code == 403
    assert server.login("carol", "carol-pw", address).status_code == 429
    assert server.login("carol", "carol-pw", "203.0.113.100").status_code == 200


def test_legacy_logins_are_throttled_too(server: Server) -> None:
    def legacy_login(password: str) -> int:
        files = {"data": ("data", orjson.dumps({"u": "carol", "p": password}))}
        return server.http.post("/sync/hostKey", files=files, data={"c": "0"},
                                headers={"X-Real-IP": "192.0.2.5"}).status_code

    assert [legacy_login("wrong") for _ in range(throttle.PAIR_LIMIT)] == [403] * throttle.PAIR_LIMIT
    assert legacy_login("carol-pw") == 429


# -- quotas -----------------------------------------------------------------------------------

def test_a_full_upload_past_the_quota_is_refused_with_a_message_and_changes_nothing(
    server: Server, client_collection: bytes, big_collection: bytes
) -> None:
    key = server.key("carol", "carol-pw")
    assert server.wire.payload(server.wire.post("upload", client_collection, key=key)) == b"OK"
    stored = server.user_root("carol") / "collection.anki2"
    before = digest(stored)
    assert server.admin("user.set", name="carol", quota_mb=1) == {"name": "carol", "quota_bytes": MIB}
    refused = server.wire.payload(server.wire.post("upload", big_collection, key=key)).decode()
    assert "storage quota of 1.0 MB" in refused and "Nothing was changed" in refused
    assert digest(stored) == before
    assert _names(server.user_root("carol")) == ["collection.anki2", "media", "media.db"]
    # downloading and normal syncs go on
    assert server.wire.payload(server.wire.post("download", {"_pad": None}, key=key))[:16] == b"SQLite format 3\x00"
    assert server.meta(key) == 200
    server.admin("user.set", name="carol", quota_mb=None)
    assert server.wire.payload(server.wire.post("upload", big_collection, key=key)) == b"OK"


def _media(server: Server, key: str, method: str, payload: Any = None, body: bytes | None = None) -> Any:
    if body is not None:
        body = __import__("zstandard").ZstdCompressor().compress(body)
    return server.wire.json(server.wire.post(method, payload, area="msync", key=key, body=body))


def test_a_media_upload_past_the_quota_is_refused_with_a_message_and_changes_nothing(server: Server) -> None:
    key = server.key("carol", "carol-pw")
    server.admin("user.set", name="carol", quota_mb=1)
    assert _media(server, key, "begin", {"v": CLIENT})["err"] == ""
    small = _media(server, key, "uploadChanges", body=media_zip([("a.jpg", b"a" * 400_000)]))
    assert small == {"data": [1, 1], "err": ""}
    media = server.user_root("carol") / "media"
    refused = _media(server, key, "uploadChanges",
                     body=media_zip([("b.jpg", os.urandom(400_000)), ("c.jpg", os.urandom(400_000))]))
    assert set(refused) == {"err"} and "storage quota of 1.0 MB" in refused["err"]
    assert sorted(os.listdir(media)) == ["a.jpg"]
    a_sha1 = hashlib.sha1(b"a" * 400_000).hexdigest()
    assert _media(server, key, "mediaChanges", {"lastUsn": 0})["data"] == [["a.jpg", 1, a_sha1]]
    # deleting, and replacing a file by a smaller one, go through over the quota
    assert _media(server, key, "uploadChanges", body=media_zip([("a.jpg", b"small")]))["err"] == ""
    assert _media(server, key, "uploadChanges", body=media_zip([("a.jpg", None)]))["err"] == ""
    assert os.listdir(media) == []


# -- the lock held by an app in process -------------------------------------------------------

def test_an_app_holds_the_data_folder_until_its_lifespan_ends(tmp_path: Path) -> None:
    from ankihost.config import ConfigError

    settings = make_settings(tmp_path / "base")
    with TestClient(build(settings)):
        with pytest.raises(ConfigError) as busy:
            build(settings)
        assert f"pid {os.getpid()}" in str(busy.value) and str(settings.base) in str(busy.value)
    with TestClient(build(settings)) as http:  # released at shutdown
        assert Wire(http).post("meta", {"v": 11}).status_code == 200


def test_admin_errors_cross_the_channel(server: Server) -> None:
    with pytest.raises(AdminError) as refused:
        server.admin("user.passwd", name="nobody", password="x")
    assert refused.value.status == 404 and "nobody" in refused.value.message
