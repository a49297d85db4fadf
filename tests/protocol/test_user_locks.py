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
