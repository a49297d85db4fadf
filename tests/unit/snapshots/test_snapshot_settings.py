"""The snapshot settings: defaults, accepted values, and refusals that name the variable."""

from __future__ import annotations

import pytest

from ankihost.config import ConfigError, Settings
from ankihost.snapshots.retention import Retention, retention_of


def settings(**env: str) -> Settings:
    return Settings.from_env({"SYNC_USER1": "a:b", "SYNC_BASE": "/tmp/x", **env})


def test_defaults() -> None:
    s = settings()
    assert (s.snapshot_interval_hours, s.snapshot_keep, s.snapshot_keep_days) == (24.0, 20, 90.0)
    assert retention_of(s) == Retention(keep=20, keep_days=90)


def test_fractions_and_zero() -> None:
    s = settings(ANKIHOST_SNAPSHOT_INTERVAL_HOURS="0.5", ANKIHOST_SNAPSHOT_KEEP_DAYS="1.5")
    assert (s.snapshot_interval_hours, s.snapshot_keep_days) == (0.5, 1.5)
    assert settings(ANKIHOST_SNAPSHOT_INTERVAL_HOURS="0").snapshot_interval_hours == 0


@pytest.mark.parametrize(("variable", "value"), [
    ("ANKIHOST_SNAPSHOT_INTERVAL_HOURS", "-1"),
    ("ANKIHOST_SNAPSHOT_INTERVAL_HOURS", "daily"),
    ("ANKIHOST_SNAPSHOT_INTERVAL_HOURS", "nan"),
    ("ANKIHOST_SNAPSHOT_INTERVAL_HOURS", "inf"),
    ("ANKIHOST_SNAPSHOT_KEEP", "0"),
    ("ANKIHOST_SNAPSHOT_KEEP", "2.5"),
    ("ANKIHOST_SNAPSHOT_KEEP_DAYS", "0"),
    ("ANKIHOST_SNAPSHOT_KEEP_DAYS", "nan"),
])
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        settings(**{variable: value})
