"""The server's media upkeep through the real app in process: a user's last media batch is
made durable once they are idle, and expired trash is purged, each under the user's lock."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest

from ankihost.media.trash import SECONDS_PER_DAY
from ankihost.web import app as web_app
from tests.conftest import Wire

SETTLE_WAIT_SECS = 10


def upload_zip(entries: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    listed: list[list[str | None]] = []
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, content) in enumerate(entries):
            if content is not None:
                zf.writestr(str(i), content)
            listed.append([name, None if content is None else str(i)])
        zf.writestr("_meta", json.dumps(listed))
    return buf.getvalue()


def upload(wire: Wire, entries: list[tuple[str, bytes | None]]) -> list[int]:
    reply = wire.json(wire.post("uploadChanges", upload_zip(entries), area="msync"))
    assert reply["err"] == ""
    result: list[int] = reply["data"]
    return result


def test_the_last_batch_is_settled_once_the_user_is_idle(wire: Wire) -> None:
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
    assert state is not None and len(state.media.trash.entries()) == 2
    portal = wire.http.portal  # the app's own event loop
    assert portal is not None
    portal.call(web_app.purge_media_trash, registry)
    assert len(state.media.trash.entries()) == 2  # 30 days to go
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 31 * SECONDS_PER_DAY)
    portal.call(web_app.purge_media_trash, registry)
    assert state.media.trash.entries() == []
