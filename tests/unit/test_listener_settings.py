"""ListenerLimits from the ANKIHOST_… settings of config.py; the connection cap under a low
descriptor limit."""

from __future__ import annotations

import pytest

from ankihost.config import ConfigError, Settings
from ankihost.web.listener import FD_RESERVE, MAX_CONNECTIONS, ListenerLimits, connection_cap

BASE = {"HOME": "/home/x", "SYNC_USER1": "a:b"}
LIMITS = {"ANKIHOST_MAX_CONNECTIONS": "50", "ANKIHOST_HEADER_TIMEOUT": "7.5",
          "ANKIHOST_BODY_IDLE_TIMEOUT": "120", "ANKIHOST_KEEPALIVE_TIMEOUT": "30",
          "ANKIHOST_SHUTDOWN_GRACE": "0"}


def test_defaults_when_nothing_is_set() -> None:
    assert ListenerLimits.from_settings(Settings.from_env(BASE)) == ListenerLimits()
    assert ListenerLimits().max_connections == MAX_CONNECTIONS


def test_every_setting_is_read() -> None:
    limits = ListenerLimits.from_settings(Settings.from_env({**BASE, **LIMITS}))
    assert (limits.max_connections, limits.header_timeout, limits.body_idle_timeout,
            limits.keep_alive_timeout, limits.shutdown_grace) == (50, 7.5, 120, 30, 0)


@pytest.mark.parametrize(("name", "value", "words"), [
    ("ANKIHOST_MAX_CONNECTIONS", "2.5", "whole number"),
    ("ANKIHOST_MAX_CONNECTIONS", "0", "between 1 and"),
    ("ANKIHOST_HEADER_TIMEOUT", "fast", "number of seconds"),
    ("ANKIHOST_BODY_IDLE_TIMEOUT", "4", "between 5 and"),
])
def test_bad_values_name_the_setting(name: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({**BASE, name: value})
    assert name in str(error.value) and words in str(error.value)


def test_settings_document_their_defaults() -> None:
    from ankihost.config import SETTINGS

    defaults = {s.name: s.default for s in SETTINGS}
    assert defaults["ANKIHOST_MAX_CONNECTIONS"] == str(MAX_CONNECTIONS)
    assert set(LIMITS) <= set(defaults)
    assert all(s.help for s in SETTINGS)


def test_connection_cap_leaves_room_for_files() -> None:
    assert connection_cap(ListenerLimits(max_connections=5000), 1024) == 1024 - FD_RESERVE
    assert connection_cap(ListenerLimits(max_connections=10), 1 << 20) == 10
