"""Login throttling, with explicit clock values: lockouts per address and per (name, address),
the per-name slow-down, the sliding window, and bounded memory."""

from __future__ import annotations

import pytest

from ankihost.accounts.throttle import (
    ADDRESS_LIMIT,
    LOCKOUT_SECS,
    MAX_SLOW_SECS,
    MAX_TRACKED,
    NAME_SLOW_AFTER,
    PAIR_LIMIT,
    SLOW_SECS,
    WINDOW_SECS,
    LoginThrottle,
    Throttled,
)

T0 = 10_000.0


def fail(gate: LoginThrottle, name: str, address: str, times: int, now: float = T0) -> list[bool]:
    return [gate.failed(name, address, now) for _ in range(times)]


def test_a_name_failing_from_one_address_is_refused_there_only() -> None:
    gate = LoginThrottle()
    locked = fail(gate, "alice", "10.0.0.1", PAIR_LIMIT)
    assert locked == [False] * (PAIR_LIMIT - 1) + [True]
    with pytest.raises(Throttled) as refused:
        gate.check("alice", "10.0.0.1", T0 + 1)
    assert "alice" in refused.value.reason and refused.value.retry_after == pytest.approx(LOCKOUT_SECS - 1)
    # the owner elsewhere is let through (slowed: the name has failures), others from there too
    assert gate.check("alice", "10.0.0.2", T0 + 1) >= 0
    assert gate.check("bob", "10.0.0.1", T0 + 1) == 0


def test_an_address_failing_for_many_names_is_refused_for_every_name() -> None:
    gate = LoginThrottle()
    for i in range(ADDRESS_LIMIT - 1):
        assert gate.failed(f"user{i}", "10.0.0.9", T0) is False
    assert gate.failed("one-more", "10.0.0.9", T0) is True
    for name in ("alice", "user0", "someone-new"):
        with pytest.raises(Throttled, match="10.0.0.9"):
            gate.check(name, "10.0.0.9", T0 + 5)
    assert gate.check("alice", "10.0.0.10", T0 + 5) == 0


def test_failures_for_a_name_from_anywhere_slow_every_try_down_without_refusing() -> None:
    gate = LoginThrottle()
    for i in range(NAME_SLOW_AFTER - 1):
        gate.failed("alice", f"10.1.0.{i}", T0)
    assert gate.check("alice", "10.2.0.1", T0) == 0
    gate.failed("alice", "10.1.1.1", T0)
    assert gate.check("alice", "10.2.0.1", T0) == SLOW_SECS  # slowed, not refused
    for i in range(200):
        gate.failed("alice", f"10.3.{i // 250}.{i % 250}", T0)
    assert gate.check("alice", "10.2.0.1", T0) == MAX_SLOW_SECS  # capped
    assert gate.check("bob", "10.2.0.1", T0) == 0


def test_lockouts_and_counts_expire() -> None:
    gate = LoginThrottle()
    fail(gate, "alice", "10.0.0.1", PAIR_LIMIT)
    with pytest.raises(Throttled):
        gate.check("alice", "10.0.0.1", T0 + LOCKOUT_SECS - 1)
    later = T0 + max(LOCKOUT_SECS, WINDOW_SECS) + 1
    assert gate.check("alice", "10.0.0.1", later) == 0
    # the old failures are out of the window: it takes PAIR_LIMIT new ones to lock again
    assert fail(gate, "alice", "10.0.0.1", PAIR_LIMIT - 1, later) == [False] * (PAIR_LIMIT - 1)
    assert gate.check("alice", "10.0.0.1", later) >= 0


def test_failures_spread_over_more_than_the_window_never_lock() -> None:
    gate = LoginThrottle()
    step = WINDOW_SECS / (PAIR_LIMIT - 1) + 1
    for i in range(PAIR_LIMIT * 3):
        assert gate.failed("alice", "10.0.0.1", T0 + i * step) is False
        gate.check("alice", "10.0.0.1", T0 + i * step)


def test_a_success_clears_that_name_at_that_address() -> None:
    gate = LoginThrottle()
    fail(gate, "alice", "10.0.0.1", PAIR_LIMIT - 1)
    gate.succeeded("alice", "10.0.0.1")
    assert fail(gate, "alice", "10.0.0.1", PAIR_LIMIT - 1) == [False] * (PAIR_LIMIT - 1)


def test_memory_is_bounded() -> None:
    """Failures for ever new names from ever new addresses (a spread-out attack) keep at most
    MAX_TRACKED entries per table; the newest are the ones kept."""
    gate = LoginThrottle()
    for i in range(MAX_TRACKED + 2_000):
        gate.failed(f"name{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", T0)
    tables = (gate._addresses, gate._pairs, gate._names)
    assert [len(t._tracks) for t in tables] == [MAX_TRACKED] * 3
    assert gate._names.count("name0", T0) == 0 and gate._names.count(f"name{MAX_TRACKED}", T0) == 1
    fail(gate, "victim", "10.9.9.9", PAIR_LIMIT)
    with pytest.raises(Throttled):
        gate.check("victim", "10.9.9.9", T0)
