"""Fixtures shared by the end-to-end tests (real server process, real client)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.client import SyncClient


@pytest.fixture
def clients() -> Iterator[dict[str, SyncClient]]:
    """A place for the test's clients (devices); all are closed at teardown."""
    made: dict[str, SyncClient] = {}
    yield made
    for client in made.values():
        client.cleanup()
