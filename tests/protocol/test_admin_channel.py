"""Admin operations through the running app's admin channel (what `ankihost user …` sends when a
server runs): every bad input gets a clear refusal and changes nothing; concurrent changes;
and an account store the server cannot use stops start-up with a clear error."""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from ankihost.accounts.sqlite import SCHEMA_VERSION, SqliteAccountStore
from ankihost.admin import channel
from ankihost.admin.operations import AdminError
from ankihost.config import ConfigError, Settings
from ankihost.server import build
from ankihost.storage.paths import DataFolder
from ankihost.web.app import SyncApp
from tests.conftest import make_settings


class Admin:
    def __init__(self, settings: Settings, app: SyncApp) -> None:
        self.settings = settings
        self.app = app
        self.folder = DataFolder(settings.base)

    def __call__(self, op: str, **args: Any) -> Any:
        return channel.call(self.folder, op, args)

    def refused(self, op: str, **args: Any) -> AdminError:
        with pytest.raises(AdminError) as refusal:
            self(op, **args)
        return refusal.value

    def audit(self) -> list[str]:
        return [e.event for e in reversed(self.app.accounts.store.audit())]


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    settings = make_settings(tmp_path / "base")
    app = build(settings)
    with TestClient(app):
        made = Admin(settings, app)
        made("user.add", name="carol", password="pw", quota_mb=5)
        yield made


def test_add_list_set_passwd_remove(admin: Admin) -> None:
    assert admin("user.add", name="dave", password="pw") == {
        "name": "dave", "folder": str(admin.settings.base / "dave")}
    listed = {u["name"]: u for u in admin("user.list")}
    assert sorted(listed) == ["alice", "bob", "carol", "dave"]
    assert listed["carol"]["source"] == "store" and listed["carol"]["quota_bytes"] == 5 * 1024 * 1024
    assert listed["alice"]["source"] == "env" and listed["alice"]["devices"] is None
    assert listed["dave"]["last_sync"] is None and listed["dave"]["devices"] == 0
    assert admin("user.set", name="dave", quota_mb=7)["quota_bytes"] == 7 * 1024 * 1024
    assert admin("user.passwd", name="dave", password="new") == {"name": "dave", "devices_revoked": 0}
    assert admin("user.remove", name="dave")["data_deleted"] is False
    assert [u["name"] for u in admin("user.list")] == ["alice", "bob", "carol"]
    assert admin.audit() == ["account.added", "account.added", "account.quota_set",
                             "account.password_changed", "account.removed"]


def test_remove_with_delete_data(admin: Admin) -> None:
    folder = admin.settings.base / "carol"
    folder.mkdir(exist_ok=True)
    (folder / "collection.anki2").write_bytes(b"x")
    assert admin("user.remove", name="carol", delete_data=True)["data_deleted"] is True
    assert not folder.exists()
    assert (admin.settings.base / "alice").is_dir()


@pytest.mark.parametrize(("op", "args"), [
    ("user.passwd", {"name": "nobody", "password": "x"}),
    ("user.remove", {"name": "nobody"}),
    ("user.set", {"name": "nobody", "quota_mb": 1}),
    ("device.list", {"name": "nobody"}),
    ("device.revoke", {"name": "nobody", "ids": None}),
    ("user.passwd", {"name": "Carol", "password": "x"}),  # names are exact
])
def test_unknown_users_are_404_naming_them(admin: Admin, op: str, args: dict[str, Any]) -> None:
    refusal = admin.refused(op, **args)
    assert refusal.status == 404 and repr(args["name"]) in refusal.message


def test_unknown_devices_are_404_and_nothing_is_revoked(admin: Admin) -> None:
    admin.app.accounts.login("carol", "pw", "c", "ip")
    refusal = admin.refused("device.revoke", name="carol", ids=["0123456789ab"])
    assert refusal.status == 404 and "0123456789ab" in refusal.message
    assert len(admin("device.list", name="carol")["devices"]) == 1
    for ids in ([], "abc", [1], {"a": 1}):
        assert admin.refused("device.revoke", name="carol", ids=ids).status == 400


def test_a_name_in_another_unicode_form_is_a_duplicate(admin: Admin) -> None:
    admin("user.add", name="Jos\u00e9", password="pw")
    refusal = admin.refused("user.add", name="jose\u0301", password="pw")
    assert refusal.status == 409 and "already exists" in refusal.message


@pytest.mark.parametrize("name", ["carol", "CAROL", "Alice", "bob"])
def test_duplicate_names_are_409(admin: Admin, name: str) -> None:
    refusal = admin.refused("user.add", name=name, password="pw")
    assert refusal.status == 409 and "already exists" in refusal.message
    if name.lower() != "carol":
        assert "SYNC_USERn" in refusal.message
    assert [u["name"] for u in admin("user.list")] == ["alice", "bob", "carol"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", " carol2", "dave ", "da\u200bve", "x\ny",
                                  ".ankihost", "x" * 201])
def test_unsafe_names_are_refused(admin: Admin, name: str) -> None:
    refusal = admin.refused("user.add", name=name, password="pw")
    assert refusal.status == 400 and "user name" in refusal.message
    assert [u["name"] for u in admin("user.list")] == ["alice", "bob", "carol"]


@pytest.mark.parametrize(("op", "args"), [
    ("user.passwd", {"password": "x"}),
    ("user.remove", {}),
    ("user.set", {"quota_mb": 5}),
])
def test_env_accounts_cannot_be_changed_here_and_the_refusal_says_how(
    admin: Admin, op: str, args: dict[str, Any]
) -> None:
    refusal = admin.refused(op, name="alice", **args)
    assert refusal.status == 400
    assert "SYNC_USERn" in refusal.message and "restart" in refusal.message


def test_env_devices_share_one_key_and_cannot_be_revoked_one_by_one(admin: Admin) -> None:
    refusal = admin.refused("device.revoke", name="alice", ids=None)
    assert "ANKIHOST_ENV_DEVICE_KEYS=1" in refusal.message and "SYNC_USERn" in refusal.message


@pytest.mark.parametrize("quota", [0, -1, "10", 1.5, True, [1]])
def test_bad_quotas_are_refused(admin: Admin, quota: Any) -> None:
    assert admin.refused("user.set", name="carol", quota_mb=quota).status == 400
    assert admin.refused("user.add", name="dave", password="pw", quota_mb=quota).status == 400
    assert {u["name"]: u["quota_bytes"] for u in admin("user.list")}["carol"] == 5 * 1024 * 1024


@pytest.mark.parametrize("password", [None, "", 5, "x" * 1025])
def test_bad_passwords_are_refused(admin: Admin, password: Any) -> None:
    assert admin.refused("user.add", name="dave", password=password).status == 400
    assert admin.refused("user.passwd", name="carol", password=password).status == 400
    assert admin.app.accounts.login("carol", "pw")  # unchanged


def _raw(admin: Admin, line: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(admin.folder.control_socket))
        sock.sendall(line)
        reply: dict[str, Any] = orjson.loads(sock.makefile("rb").readline())
        return reply


@pytest.mark.parametrize("line", [b"not json\n", b'{"op": "user.drop", "args": {}}\n', b'{"args": {}}\n',
                                  b'{"op": "user.list", "args": []}\n', b"[1, 2]\n"])
def test_malformed_channel_requests_are_400(admin: Admin, line: bytes) -> None:
    reply = _raw(admin, line)
    assert reply["ok"] is False and reply["status"] == 400


def test_the_channel_socket_is_for_its_owner_only(admin: Admin) -> None:
    assert admin.folder.control_socket.stat().st_mode & 0o777 == 0o600


def test_concurrent_adds(admin: Admin) -> None:
    """Several `user add` at once: different names all land; one name lands exactly once."""
    results: dict[str, Any] = {}

    def add(key: str, name: str) -> None:
        try:
            results[key] = admin("user.add", name=name, password="pw")
        except AdminError as exc:
            results[key] = exc

    threads = [threading.Thread(target=add, args=(f"u{i}", f"user{i}")) for i in range(4)]
    threads += [threading.Thread(target=add, args=(f"same{i}", "Zed" if i % 2 else "zed")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(results[f"u{i}"], dict) for i in range(4))
    same = [results[f"same{i}"] for i in range(4)]
    assert sum(isinstance(r, dict) for r in same) == 1
    assert all(r.status == 409 for r in same if isinstance(r, AdminError))
    names = [u["name"] for u in admin("user.list")]
    assert sorted(n for n in names if n.lower() == "zed") in (["Zed"], ["zed"])
    stored = [a.name for a in admin.app.accounts.store.accounts()]
    assert len(stored) == 1 + 4 + 1


def test_a_change_reaches_requests_at_once(admin: Admin) -> None:
    from tests.conftest import Wire

    http = TestClient(admin.app)  # (no lifespan: the fixture's client runs it)
    wire = Wire(http)
    body = {"u": "dave", "p": "pw"}
    assert wire.post("hostKey", body, key="").status_code == 403
    admin("user.add", name="dave", password="pw")
    key = wire.json(wire.post("hostKey", body, key=""))["key"]
    assert wire.post("meta", {"v": 11}, key=key).status_code == 200
    admin("device.revoke", name="dave", ids=None)
    assert wire.post("meta", {"v": 11}, key=key).status_code == 403


# -- an account store the server cannot use ------------------------------------------------------

def _start(settings: Settings) -> None:
    build(settings)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    (base / ".ankihost").mkdir(parents=True)
    return base


def test_a_newer_store_stops_start_up_clearly(base: Path) -> None:
    path = DataFolder(base).accounts_db
    SqliteAccountStore.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"pragma user_version = {SCHEMA_VERSION + 3}")
    with pytest.raises(ConfigError) as refused:
        _start(make_settings(base))
    assert str(path) in str(refused.value) and "newer ankihost" in str(refused.value)
    with pytest.raises(ConfigError, match="newer ankihost"):  # the lock was let go: same answer
        _start(make_settings(base))


@pytest.mark.parametrize("content", [b"garbage" * 1000, b"SQLite format 3\x00" + b"\xee" * 8000])
def test_a_corrupt_store_stops_start_up_clearly(base: Path, content: bytes) -> None:
    path = DataFolder(base).accounts_db
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        _start(make_settings(base))
    assert str(path) in str(refused.value)
    assert path.read_bytes() == content


def test_a_name_in_both_the_environment_and_the_store_stops_start_up(base: Path) -> None:
    store = SqliteAccountStore.open(DataFolder(base).accounts_db)
    store.add_account("Bob", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", None)
    store.close()
    with pytest.raises(ConfigError) as refused:
        _start(make_settings(base))
    message = str(refused.value)
    assert "SYNC_USER2" in message and "'bob'" in message and "'Bob'" in message
    assert "ankihost user remove Bob" in message


def test_no_env_users_but_store_users_starts(base: Path) -> None:
    from ankihost.accounts.passwords import hash_new_password

    store = SqliteAccountStore.open(DataFolder(base).accounts_db)
    store.add_account("carol", hash_new_password("pw"), None)
    store.close()
    settings = Settings.from_env({"HOME": str(base), "SYNC_BASE": str(base)})
    with TestClient(build(settings)) as http:
        from tests.conftest import Wire

        assert Wire(http).post("hostKey", {"u": "carol", "p": "pw"}, key="").status_code == 200


def test_an_account_store_deleted_while_the_server_runs_is_written_again(tmp_path: Path) -> None:
    import time

    settings = make_settings(tmp_path / "base")
    path = DataFolder(settings.base).accounts_db
    app = build(settings)
    with TestClient(app):
        admin = Admin(settings, app)
        admin("user.add", name="carol", password="pw")
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            name.unlink(missing_ok=True)
        admin("user.add", name="dave", password="pw")  # into the open store, as before
        deadline = time.monotonic() + 15
        while not path.exists():  # the activity flush, every 2 s, notices
            assert time.monotonic() < deadline, "the account store was not written again"
            time.sleep(0.1)
        admin("user.add", name="erin", password="pw")
    with TestClient(build(settings)) as http:  # after a restart, every account is there
        from tests.conftest import Wire

        for name in ("carol", "dave", "erin"):
            assert Wire(http).post("hostKey", {"u": name, "p": "pw"}, key="").status_code == 200
