"""Requests of one user wait for that user's lock only, never for another user's."""

import anyio
import httpx2
import orjson
import pytest
import zstandard

from ankihost.server import build
from tests.conftest import ALICE_KEY, BOB_KEY


def meta_request(key: str) -> dict:
    header = orjson.dumps({"v": 11, "k": key, "c": "test", "s": "x"}).decode()
    return {"content": zstandard.ZstdCompressor().compress(b'{"v":11}'), "headers": {"anki-sync": header}}


@pytest.mark.anyio
async def test_a_busy_user_does_not_block_another(settings):
    app = build(settings)
    alice = app.registry.by_name("alice")
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        results: dict[str, int] = {}

        async def call(name: str, key: str) -> None:
            results[name] = (await client.post("/sync/meta", **meta_request(key))).status_code

        async with anyio.create_task_group() as tasks:
            await alice.lock.acquire()  # as if a long upload of alice's were running
            tasks.start_soon(call, "alice", ALICE_KEY)
            with anyio.fail_after(30):
                await call("bob", BOB_KEY)
            assert results == {"bob": 200}  # bob is served while alice's request waits
            alice.lock.release()
        assert results == {"bob": 200, "alice": 200}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_inline_work_runs_on_the_event_loop_and_other_work_in_a_worker_thread(settings):
    import threading

    alice = build(settings).registry.by_name("alice")
    loop_thread = threading.get_ident()
    asked: list[bool] = []

    def inline() -> bool:
        asked.append(alice.lock.locked())  # asked while the lock is held
        return True

    assert await alice.locked(threading.get_ident, inline=inline) == loop_thread
    assert asked == [True]
    assert await alice.locked(threading.get_ident, inline=lambda: False) != loop_thread
    assert await alice.locked(threading.get_ident) != loop_thread
    assert not alice.lock.locked()


@pytest.mark.anyio
async def test_meta_runs_inline_only_with_everything_open_and_no_session(settings):
    """The first `meta` opens the databases (worker thread); later ones are small reads,
    unless a session is open (`meta` then rolls it back, which can take a while)."""
    from ankihost.sync import meta
    from ankihost.sync.session import SyncSession
    from tests.support.sync_steps import sync_request

    app = build(settings)
    alice = app.registry.by_name("alice")
    request = sync_request("meta", {"v": 11})
    assert not meta.runs_inline(alice, request)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/sync/meta", **meta_request(ALICE_KEY))).status_code == 200
    assert meta.runs_inline(alice, request)
    alice.collection.session = SyncSession("s", 0, 0, False)
    assert not meta.runs_inline(alice, request)
    alice.collection.session = None
    assert not meta.runs_inline(alice, sync_request("meta", {"v": 11, "pad": "x" * 5000}))
    alice.collection.close()
    assert not meta.runs_inline(alice, request)
