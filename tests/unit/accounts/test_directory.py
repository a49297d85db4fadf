"""The account directory over real environment settings and a real SQLite store: which host key
belongs to whom, per-device keys, revocation, and what a change does to keys already handed out."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ankihost.accounts.audit import Audit
from ankihost.accounts.directory import AccountDirectory, StoreAccount
from ankihost.accounts.env import EnvAccount, EnvAccounts
from ankihost.accounts.sqlite import SqliteAccountStore
from ankihost.accounts.store import UnknownAccount
from ankihost.config import Settings
from ankihost.errors import AuthFailed

ENV = {"HOME": "/h", "SYNC_USER1": "alice:secret"}


class Directories:
    """Directories over one store file, opened as a server would open them (one at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[AccountDirectory] = []

    def open(self, env: dict[str, str] | None = None, *, env_device_keys: bool = False) -> AccountDirectory:
        for directory in self.opened:
            directory.flush()
            directory.store.close()
        self.opened.clear()
        store = SqliteAccountStore.open(self.path)
        settings = Settings.from_env(ENV if env is None else env)
        directory = AccountDirectory(EnvAccounts.from_settings(settings), store, Audit(store, "test"),
                                     env_device_keys=env_device_keys)
        self.opened.append(directory)
        return directory


@pytest.fixture
def directories(tmp_path: Path) -> Iterator[Directories]:
    made = Directories(tmp_path / "accounts.db")
    yield made
    for directory in made.opened:
        directory.store.close()


@pytest.fixture
def directory(directories: Directories) -> AccountDirectory:
    return directories.open()


def test_an_env_account_gets_the_official_derived_key(directory: AccountDirectory) -> None:
    key = directory.login("alice", "secret", "26.09.3,abc,linux", "10.0.0.1")
    assert key == hashlib.sha1(b"alice:secret").hexdigest()
    assert directory.login("alice", "secret") == key  # the same on every device
    credential = directory.credential(key)
    assert credential is not None and isinstance(credential.account, EnvAccount)
    assert credential.account.name == "alice" and credential.device is None
    assert directory.devices("alice") == []


def test_a_store_account_gets_a_new_key_per_login(directory: AccountDirectory) -> None:
    directory.add("carol", "pw", None)
    phone = directory.login("carol", "pw", "26.09.3,abc,android", "10.0.0.2")
    laptop = directory.login("carol", "pw", "26.09.3,abc,linux", "10.0.0.3")
    assert phone != laptop and len(phone) >= 40
    assert phone != hashlib.sha1(b"carol:pw").hexdigest()
    one, two = directory.credential(phone), directory.credential(laptop)
    assert one is not None and two is not None
    assert isinstance(one.account, StoreAccount) and one.account.name == "carol"
    assert one.device is not None and two.device is not None and one.device.id != two.device.id
    assert one.device.client == "26.09.3,abc,android" and one.device.last_ip == "10.0.0.2"
    assert [d.id for d in directory.devices("carol")] == [one.device.id, two.device.id]
    assert directory.credential("") is None and directory.credential(phone + "x") is None


def test_device_keys_survive_a_restart(directories: Directories) -> None:
    first = directories.open()
    first.add("carol", "pw", None)
    key = first.login("carol", "pw", "client", "ip")
    second = directories.open()
    credential = second.credential(key)
    assert credential is not None and credential.account.name == "carol"


def test_wrong_passwords_and_unknown_names_fail(directory: AccountDirectory) -> None:
    directory.add("carol", "pw", None)
    for name, password in [("carol", "PW"), ("carol", ""), ("Carol", "pw"), ("nobody", "pw"),
                           ("alice", "wrong"), ("ALICE", "secret")]:
        with pytest.raises(AuthFailed):
            directory.login(name, password)
    assert directory.devices("carol") == []


def test_env_accounts_get_device_keys_when_asked(directories: Directories) -> None:
    directory = directories.open(env_device_keys=True)
    official = hashlib.sha1(b"alice:secret").hexdigest()
    one = directory.login("alice", "secret", "a", "ip")
    two = directory.login("alice", "secret", "b", "ip")
    assert len({one, two, official}) == 3
    assert directory.credential(official) is None  # the shared key no longer works
    assert directory.revoke("alice", [d.id for d in directory.devices("alice")][:1])
    assert directory.credential(one) is None and directory.credential(two) is not None


def test_switching_env_device_keys_off_again_ends_those_device_keys(directories: Directories) -> None:
    """Devices of an env account are shown and revoked only while ANKIHOST_ENV_DEVICE_KEYS is
    on: with it off they would be keys nobody can list or revoke, so they stop working."""
    key = directories.open(env_device_keys=True).login("alice", "secret", "a", "ip")
    directory = directories.open(env_device_keys=False)
    assert directory.credential(key) is None
    assert directory.credential(hashlib.sha1(b"alice:secret").hexdigest()) is not None


def test_revoke_one_device_or_all(directory: AccountDirectory) -> None:
    directory.add("carol", "pw", None)
    keys = [directory.login("carol", "pw", f"c{i}", "ip") for i in range(3)]
    ids = [d.id for d in directory.devices("carol")]
    assert directory.revoke("carol", [ids[1]]) == [ids[1]]
    assert [directory.credential(k) is not None for k in keys] == [True, False, True]
    assert sorted(directory.revoke("carol", None)) == sorted([ids[0], ids[2]])
    assert all(directory.credential(k) is None for k in keys)
    assert directory.store.devices() == []


def test_a_new_password_revokes_every_key(directory: AccountDirectory) -> None:
    directory.add("carol", "old", None)
    keys = [directory.login("carol", "old") for _ in range(2)]
    assert directory.set_password("carol", "new") == 2
    assert all(directory.credential(k) is None for k in keys)
    with pytest.raises(AuthFailed):
        directory.login("carol", "old")
    assert directory.credential(directory.login("carol", "new")) is not None


def test_removing_forgets_keys_and_activity(directories: Directories) -> None:
    directory = directories.open()
    directory.add("carol", "pw", 10)
    key = directory.login("carol", "pw")
    directory.synced("carol", "ok", "client", "ip")
    directory.flush()
    directory.remove("carol")
    directory.synced("carol", "meta failed (403)", "client", "ip")  # a request that was in flight
    directory.flush()
    assert directory.credential(key) is None and directory.by_name("carol") is None
    assert directory.activity("carol") is None and directory.store.activity() == {}
    with pytest.raises(AuthFailed):
        directory.login("carol", "pw")


def test_changes_to_an_account_that_is_gone_say_so(directory: AccountDirectory) -> None:
    """Two admin commands racing (`passwd` while another removes the account): the loser is told
    the account does not exist, and nothing is changed."""
    directory.add("carol", "pw", None)
    directory.remove("carol")
    for change in (lambda: directory.set_password("carol", "new"), lambda: directory.set_quota("carol", 5),
                   lambda: directory.remove("carol"), lambda: directory.revoke("carol", None)):
        with pytest.raises(UnknownAccount, match="carol"):
            change()
    assert directory.store.accounts() == []


def test_a_new_account_never_inherits_the_devices_of_an_old_one_of_that_name(directories: Directories) -> None:
    """bob was a SYNC_USERn account with device keys; the variable is dropped and `user add bob`
    makes a new account: the old phone's key must not open it."""
    old_key = directories.open({**ENV, "SYNC_USER2": "bob:old"}, env_device_keys=True).login("bob", "old")
    directory = directories.open(env_device_keys=True)
    assert directory.credential(old_key) is None
    directory.add("bob", "new", None)
    assert directory.credential(old_key) is None
    assert directory.devices("bob") == []


def test_device_use_is_kept_in_memory_and_flushed(directory: AccountDirectory) -> None:
    directory.add("carol", "pw", None)
    key = directory.login("carol", "pw", "first", "10.0.0.1")
    credential = directory.credential(key)
    assert credential is not None and credential.device is not None
    time.sleep(1.05)  # last_seen has a resolution of one second
    directory.seen(credential, "26.09.3,abc,linux", "10.0.0.7")
    stored = [d for _, d in directory.store.devices()][0]
    assert stored.last_ip == "10.0.0.1"  # not yet written
    directory.flush()
    stored = [d for _, d in directory.store.devices()][0]
    assert (stored.last_ip, stored.client) == ("10.0.0.7", "26.09.3,abc,linux")
    assert stored.last_seen > stored.first_seen


def _seconds(work) -> float:
    start = time.perf_counter()
    try:
        work()
    except AuthFailed:
        pass
    return time.perf_counter() - start


def test_an_unknown_name_costs_what_a_wrong_password_costs(directory: AccountDirectory) -> None:
    """So a failed login does not tell whether the name exists (argon2id takes tens of ms)."""
    directory.add("carol", "pw", None)
    wrong = min(_seconds(lambda: directory.login("carol", "nope")) for _ in range(3))
    unknown = statistics.median(_seconds(lambda: directory.login("nobody", "nope")) for _ in range(5))
    assert wrong > 0.005, wrong
    assert unknown > 0.4 * wrong, (unknown, wrong)


def test_accounts_never_show_their_secrets(directory: AccountDirectory) -> None:
    account = directory.add("carol", "pa55word", None)
    env = directory.by_name("alice")
    assert "pa55word" not in repr(account) and "argon2" not in repr(account)
    assert "secret" not in repr(env)


def test_a_changed_sync_user_value_ends_that_accounts_device_keys(directories: Directories) -> None:
    """With ANKIHOST_ENV_DEVICE_KEYS, changing the password in SYNC_USERn and restarting logs the
    devices out, as the shared derived key does without it (and with the official server)."""
    env = {**ENV, "SYNC_USER2": "bob:bob-pw"}
    first = directories.open(env, env_device_keys=True)
    assert first.end_keys_of_changed_env_passwords() == []  # first start: fingerprints noted
    alice_key, bob_key = first.login("alice", "secret"), first.login("bob", "bob-pw")
    same = directories.open(env, env_device_keys=True)
    assert same.end_keys_of_changed_env_passwords() == []
    assert same.credential(alice_key) is not None
    changed = directories.open({**env, "SYNC_USER1": "alice:new-secret"}, env_device_keys=True)
    assert changed.end_keys_of_changed_env_passwords() == ["alice"]
    assert changed.credential(alice_key) is None and changed.credential(bob_key) is not None
    assert [e.event for e in changed.store.audit("alice")][0] == "account.env_password_changed"
    assert changed.credential(changed.login("alice", "new-secret")) is not None
    fingerprints = changed.store.env_fingerprints()
    assert set(fingerprints) == {"alice", "bob"}
    assert all(f.startswith("$argon2id$") and "secret" not in f for f in fingerprints.values())
