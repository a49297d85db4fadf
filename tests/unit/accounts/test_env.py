"""SYNC_USERn as the server reads them: values or _FILE secrets, argon2id and pbkdf2 hashes,
and every refusal, each naming the variable."""

from __future__ import annotations

from pathlib import Path

import argon2
import pytest

from ankihost.accounts import passwords
from ankihost.accounts.env import load_accounts
from ankihost.config import ConfigError, Settings

HOME = {"HOME": "/home/x"}


def accounts(**env: str):
    return load_accounts(Settings.from_env({**HOME, **env}))


def test_argon2id_round_trip() -> None:
    phc = passwords.hash_new_password("correct horse")
    assert phc.startswith("$argon2id$")
    parameters = argon2.extract_parameters(phc)
    assert parameters.memory_cost == passwords.ARGON2_MEMORY_KIB
    assert parameters.time_cost == passwords.ARGON2_TIME_COST
    verifier = passwords.parse_hash(phc)
    assert verifier.verify("correct horse")
    assert not verifier.verify("correct horse ") and not verifier.verify("")
    assert passwords.hash_new_password("correct horse") != phc  # salted


def test_passwords_hashed_accepts_argon2id_and_pbkdf2() -> None:
    argon = passwords.hash_new_password("pw1")
    pbkdf2 = passwords.hash_password("pw2", rounds=1000)
    alice, bob = accounts(SYNC_USER1=f"alice:{argon}", SYNC_USER2=f"bob:{pbkdf2}", PASSWORDS_HASHED="1")
    assert alice.check_password("pw1") and not alice.check_password("pw2")
    assert bob.check_password("pw2") and not bob.check_password("pw1")


@pytest.mark.parametrize("kind", [argon2.Type.I, argon2.Type.D])
def test_other_argon2_variants_are_refused(kind: argon2.Type) -> None:
    phc = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=kind).hash("pw")
    with pytest.raises(ConfigError, match="SYNC_USER1.*argon2id"):
        accounts(SYNC_USER1=f"alice:{phc}", PASSWORDS_HASHED="1")


def test_a_value_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "alice"
    secret.write_text("alice:pa:ss word\n")
    (alice,) = accounts(SYNC_USER1_FILE=str(secret))
    assert alice.name == "alice" and alice.check_password("pa:ss word")
    assert not alice.check_password("pa:ss word\n")


def test_a_hash_from_a_file(tmp_path: Path) -> None:
    hashed = tmp_path / "bob"
    hashed.write_text("bob:" + passwords.hash_new_password("pw"))  # no newline at the end
    (bob,) = accounts(SYNC_USER1_FILE=str(hashed), PASSWORDS_HASHED="1")
    assert bob.name == "bob" and bob.check_password("pw")


def test_files_and_values_mix_and_number_on(tmp_path: Path) -> None:
    second = tmp_path / "s"
    second.write_text("bob:pw2\r\n")
    names = [a.name for a in accounts(SYNC_USER1="alice:pw", SYNC_USER2_FILE=str(second), SYNC_USER3="carol:pw")]
    assert names == ["alice", "bob", "carol"]


def test_a_value_and_a_file_for_one_number_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("alice:pw")
    with pytest.raises(ConfigError) as refused:
        accounts(SYNC_USER1="alice:pw", SYNC_USER1_FILE=str(secret))
    assert "SYNC_USER1 " in str(refused.value) and "SYNC_USER1_FILE" in str(refused.value)


@pytest.mark.parametrize("problem", ["missing", "folder", "symlink loop", "not utf-8"])
def test_an_unreadable_file_is_named(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "secret"
    if problem == "folder":
        path.mkdir()
    elif problem == "not utf-8":
        path.write_bytes(b"alice:\xff\xfe")
    elif problem == "symlink loop":  # (unreadable even for root, unlike a chmod 0 file)
        path.symlink_to(path)
    with pytest.raises(ConfigError) as refused:
        accounts(SYNC_USER1_FILE=str(path))
    assert "SYNC_USER1_FILE" in str(refused.value) and str(path) in str(refused.value)


def test_an_empty_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="SYNC_USER2.*empty"):
        accounts(SYNC_USER1="alice:pw", SYNC_USER2="demo:")


@pytest.mark.parametrize("phc", [
    "$pbkdf2-sha256$i=1000,l=32$c2FsdHNhbHQ$XceQo3ytJ+IKPmy62TRaxWY/ORD+m+4GcWmiygQiUIc",
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0TOGHnrxR1r3GjX1GmUyAdSFsHsL0wYc9fj5hM6hO4s",
])
def test_a_hash_without_passwords_hashed_stops_start_up_with_a_hint(phc: str) -> None:
    with pytest.raises(ConfigError) as refused:
        accounts(SYNC_USER1=f"alice:{phc}")
    message = str(refused.value)
    assert "SYNC_USER1" in message and "PASSWORDS_HASHED=1" in message
    assert phc not in message  # the hash is not repeated in the message


@pytest.mark.parametrize("name", [
    " alice", "alice ", "alice\t", "\u00a0alice", "ali\u200bce", "alice\u2028", "ali\u00adce",
    "\ufeffalice", "ali\u3000ce", "ali\u202ece",
])
def test_names_with_spaces_at_the_ends_or_invisible_characters_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="SYNC_USER1"):
        accounts(SYNC_USER1=f"{name}:pw")


@pytest.mark.parametrize("name", [".ankihost", ".ANKIHOST", ".AnkiHost"])
def test_the_state_folder_name_is_reserved(name: str) -> None:
    with pytest.raises(ConfigError, match="SYNC_USER1.*reserved"):
        accounts(SYNC_USER1=f"{name}:pw")


@pytest.mark.parametrize("name", ["alice smith", "José", "名前", "a.b-c_d", ".hidden", "x" * 200])
def test_ordinary_names_are_accepted(name: str) -> None:
    assert [a.name for a in accounts(SYNC_USER1=f"{name}:pw")] == [name]
