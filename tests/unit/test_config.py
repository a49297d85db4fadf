from pathlib import Path

import pytest

from ankihost.accounts.env import load_accounts
from ankihost.config import ConfigError, Settings

BASE = {"SYNC_USER1": "alice:secret", "HOME": "/home/alice"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_defaults_match_the_official_server():
    s = settings()
    assert (s.host, s.port, s.max_payload_megs, s.ip_header) == ("0.0.0.0", 8080, 100, "ConnectInfo")
    assert s.base == Path("/home/alice/.syncserver")
    assert s.max_decompressed_bytes == 300 * 1024 * 1024
    assert s.passwords_hashed is False


def test_users_are_contiguous_and_split_at_first_colon():
    s = settings(SYNC_USER2="bob:pa:ss", SYNC_USER4="ignored:x")
    assert s.users == (("alice", "secret"), ("bob", "pa:ss"))


def test_passwords_hashed_is_presence_not_value():
    assert settings(PASSWORDS_HASHED="0").passwords_hashed is True


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SYNC_PORT": "80a"}, "SYNC_PORT"),
        ({"SYNC_PORT": "70000"}, "SYNC_PORT"),
        ({"SYNC_HOST": "localhost"}, "SYNC_HOST"),
        ({"MAX_SYNC_PAYLOAD_MEGS": "1.5"}, "MAX_SYNC_PAYLOAD_MEGS"),
        ({"MAX_SYNC_PAYLOAD_MEGS": "0"}, "MAX_SYNC_PAYLOAD_MEGS"),
        ({"SYNC_IP_HEADER": "X-Forwarded-For"}, "SYNC_IP_HEADER"),
        ({"SYNC_USER1": "no-colon"}, "SYNC_USER1"),
        ({"ANKIHOST_MEDIA_TRASH_DAYS": "-1"}, "ANKIHOST_MEDIA_TRASH_DAYS"),
        ({"ANKIHOST_MEDIA_TRASH_DAYS": "2.5"}, "ANKIHOST_MEDIA_TRASH_DAYS"),
        ({"ANKIHOST_MEDIA_TRASH_DAYS": "36501"}, "ANKIHOST_MEDIA_TRASH_DAYS"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        settings(**env)


def test_no_users_at_all_stops_the_server_but_not_an_admin_command(tmp_path):
    from ankihost.server import build

    settings = Settings.from_env({"HOME": "/x", "SYNC_BASE": str(tmp_path)})  # `user add` needs this
    assert settings.users == ()
    with pytest.raises(ConfigError, match="SYNC_USER1"):
        build(settings)


def test_media_trash_days_default_to_30_and_0_turns_the_trash_off():
    assert settings().media_trash_days == 30
    assert settings(ANKIHOST_MEDIA_TRASH_DAYS="0").media_trash_days == 0
    assert settings(ANKIHOST_MEDIA_TRASH_DAYS="365").media_trash_days == 365


def test_ipv6_host_is_accepted():
    assert settings(SYNC_HOST="::").host == "::"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "a\x00b", "tab\tname"])
def test_unsafe_user_names_stop_start_up(name):
    with pytest.raises(ConfigError, match="SYNC_USER1"):
        load_accounts(settings(SYNC_USER1=f"{name}:pw"))


@pytest.mark.parametrize("second", ["alice", "ALICE", "Alice"])
def test_duplicate_user_names_stop_start_up(second):
    with pytest.raises(ConfigError, match="SYNC_USER2.*twice"):
        load_accounts(settings(SYNC_USER2=f"{second}:other"))


def test_bad_hash_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigError, match="SYNC_USER2"):
        load_accounts(settings(PASSWORDS_HASHED="1", SYNC_USER1="a:$pbkdf2-sha256$i=1000,l=32$c2FsdHNhbHQ$"
                            "XceQo3ytJ+IKPmy62TRaxWY/ORD+m+4GcWmiygQiUIc", SYNC_USER2="b:$argon2id$xyz"))


def test_env_example_lists_every_setting():
    from ankihost.config import SETTINGS

    text = (Path(__file__).parents[2] / ".env.example").read_text()
    for setting in SETTINGS:
        assert f"{setting.name}=" in text
    for name in ("SYNC_USER1=", "PASSWORDS_HASHED"):
        assert name in text
