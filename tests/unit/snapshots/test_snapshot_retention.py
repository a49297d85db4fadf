"""Retention: which snapshots go, by count and by age, never the newest."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ankihost.snapshots.retention import DAY_SECS, Retention, expired

NOW = 1_800_000_000


@dataclass(frozen=True)
class Snap:
    id: str
    taken: int


def days_ago(*ages: float) -> list[Snap]:
    return [Snap(f"s{i}", int(NOW - age * DAY_SECS)) for i, age in enumerate(ages)]


def ids(snaps: list[Snap]) -> list[str]:
    return [s.id for s in snaps]


def test_nothing_goes_while_within_count_and_age() -> None:
    assert expired(days_ago(0, 1, 2), NOW, Retention(keep=3, keep_days=10)) == []


def test_the_oldest_go_beyond_the_count() -> None:
    snaps = days_ago(0.1, 5, 1, 3, 2)  # s0 newest, then s2, s4, s3, s1
    assert ids(expired(snaps, NOW, Retention(keep=3, keep_days=100))) == ["s1", "s3"]


def test_snapshots_older_than_the_age_go() -> None:
    snaps = days_ago(1, 29.9, 30.1, 400)
    assert ids(expired(snaps, NOW, Retention(keep=100, keep_days=30))) == ["s3", "s2"]


def test_count_and_age_both_apply() -> None:
    snaps = days_ago(0, 1, 2, 50)
    assert ids(expired(snaps, NOW, Retention(keep=2, keep_days=30))) == ["s3", "s2"]


def test_the_newest_is_kept_however_old() -> None:
    snaps = days_ago(200, 300)
    assert ids(expired(snaps, NOW, Retention(keep=1, keep_days=1))) == ["s1"]
    assert expired(days_ago(500), NOW, Retention(keep=1, keep_days=1)) == []


def test_snapshots_of_the_same_second_are_ordered_by_id() -> None:
    snaps = [Snap("20270101-000000", NOW), Snap("20270101-000000-2", NOW)]
    assert ids(expired(snaps, NOW, Retention(keep=1, keep_days=1))) == ["20270101-000000"]


def test_an_empty_list_expires_nothing() -> None:
    assert expired([], NOW, Retention(keep=1, keep_days=1)) == []


@pytest.mark.parametrize(("keep", "days"), [(0, 1), (1, 0), (1, -2)])
def test_a_policy_that_keeps_nothing_is_refused(keep: int, days: float) -> None:
    with pytest.raises(ValueError):
        Retention(keep=keep, keep_days=days)
