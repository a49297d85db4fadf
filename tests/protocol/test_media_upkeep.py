"""The server's media upkeep through the real app in process: a user's media log is
checkpointed once they are idle, expired trash is purged (each under the user's lock), and
ANKIHOST_MEDIA_TRASH_DAYS=0 keeps nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ankihost.media.trash import SECONDS_PER_DAY
from ankihost.server import build
from ankihost.web import app as web_app
from tests.conftest import Wire, make_settings
from tests.support.media_files import media_zip

SETTLE_WAIT_SECS = 10


def upload(wire: Wire, entries: list[tuple[str, bytes | None]]) -> list[int]:
    reply = wire.json(wire.post("uploadChanges", media_zip(entries), area="msync"))
    assert reply["err"] == ""
    result: list[int] = reply["data"]
    return result


def test_the_media_log_is_checkpointed_once_the_user_is_idle(wire: Wire) -> None:
    upload(wire, [("a.txt", b"A"), ("b.txt", b"B")])
    state = wire.http.app.registry.by_name("alice")  # type: ignore[attr-defined]
    assert state is not None
    log = state.folder.media_journal
    assert log.read_bytes() != b""  # not checkpointed yet: the log still covers it
    deadline = time.monotonic() + SETTLE_WAIT_SECS
    while state.media.unsettled_for() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.media.unsettled_for() is None
    assert log.read_bytes() == b""
    assert upload(wire, [("b.txt", None)]) == [1, 3]  # and the user syncs on as before


def test_expired_trash_is_purged_under_the_users_lock(
    wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(wire, [("a.txt", b"A"), ("b.txt", b"B")])
    upload(wire, [("a.txt", None), ("b.txt", b"B2")])
    registry = wire.http.app.registry  # type: ignore[attr-defined]
    state = registry.by_name("alice")
    assert state is not None and len(state.media.trash_entries()) == 2  # once placed
    portal = wire.http.portal  # the app's own event loop
    assert portal is not None
    portal.call(web_app.purge_media_trash, registry)
    assert len(state.media.trash.entries()) == 2  # 30 days to go
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 31 * SECONDS_PER_DAY)
    portal.call(web_app.purge_media_trash, registry)
    assert state.media.trash.entries() == []


def test_with_the_trash_off_deleted_files_are_removed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "base", ANKIHOST_MEDIA_TRASH_DAYS="0")
    with TestClient(build(settings)) as http:
        wire = Wire(http)
        upload(wire, [("a.txt", b"A"), ("b.txt", b"B")])
        upload(wire, [("a.txt", None), ("b.txt", b"B2")])
        state = http.app.registry.by_name("alice")  # type: ignore[attr-defined]
        assert state is not None and state.media.trash_entries() == []
        assert sorted(p.name for p in state.folder.media.iterdir()) == ["b.txt"]
        assert not state.folder.media_trash.exists()
