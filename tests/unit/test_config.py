import re
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


def test_a_name_typed_in_two_unicode_forms_is_one_user():
    composed, decomposed = "Jos\u00e9", "Jose\u0301"  # "José" both ways
    with pytest.raises(ConfigError, match="SYNC_USER2.*twice"):
        load_accounts(settings(SYNC_USER1=f"{composed}:pw", SYNC_USER2=f"{decomposed.upper()}:pw"))


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


def test_admin_listener_is_off_unless_a_secret_is_set():
    s = settings()
    assert (s.admin_password, s.metrics_token, s.admin_listener) == (None, None, False)
    assert (s.admin_host, s.admin_port, s.metrics_per_user, s.log_format) == ("127.0.0.1", 8081, False, "text")
    assert settings(ANKIHOST_METRICS_TOKEN="t0ken").admin_listener is True


def test_admin_password_from_a_file_and_never_shown(tmp_path):
    secret = tmp_path / "admin"
    secret.write_text("s3cret-admin\n")
    s = settings(ANKIHOST_ADMIN_PASSWORD_FILE=str(secret))
    assert s.admin_password is not None and s.admin_password.value == "s3cret-admin"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.admin_password)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ANKIHOST_ADMIN_PASSWORD": "a", "ANKIHOST_ADMIN_PASSWORD_FILE": "/x"}, "both set"),
        ({"ANKIHOST_ADMIN_PASSWORD": ""}, "ANKIHOST_ADMIN_PASSWORD is empty"),
        ({"ANKIHOST_ADMIN_PASSWORD_FILE": "/nonexistent/admin"}, "ANKIHOST_ADMIN_PASSWORD_FILE"),
        ({"ANKIHOST_ADMIN_PASSWORD": "$pbkdf2-sha256$i=1000$c2FsdA$bad"}, "ANKIHOST_ADMIN_PASSWORD"),
        ({"ANKIHOST_ADMIN_PASSWORD": "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA"}, "ANKIHOST_ADMIN_PASSWORD"),
        ({"ANKIHOST_ADMIN_PASSWORD": "x", "ANKIHOST_ADMIN_PORT": "8080"}, "ANKIHOST_ADMIN_PORT"),
        ({"ANKIHOST_ADMIN_PORT": "99999"}, "ANKIHOST_ADMIN_PORT"),
        ({"ANKIHOST_ADMIN_HOST": "localhost"}, "ANKIHOST_ADMIN_HOST"),
        ({"ANKIHOST_LOG_FORMAT": "xml"}, "ANKIHOST_LOG_FORMAT"),
        ({"ANKIHOST_METRICS_PER_USER": "maybe"}, "ANKIHOST_METRICS_PER_USER"),
        ({"ANKIHOST_METRICS_TOKEN": "a", "ANKIHOST_METRICS_TOKEN_FILE": "/x"}, "both set"),
    ],
)
def test_bad_admin_and_metrics_settings_stop_start_up(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(**env)


def test_admin_password_may_be_a_phc_hash():
    from ankihost.accounts.passwords import hash_new_password, hash_password

    for phc in (hash_password("pw", rounds=1000), hash_new_password("pw")):
        s = settings(ANKIHOST_ADMIN_PASSWORD=phc)
        assert s.admin_password is not None and s.admin_password.value == phc


def test_the_readme_documents_every_setting():
    from ankihost.config import SETTINGS

    text = (Path(__file__).parents[2] / "README.md").read_text()
    for setting in SETTINGS:
        name = "SYNC_USER1" if setting.name == "SYNC_USERn" else setting.name
        assert f"`{name}`" in text, setting.name
