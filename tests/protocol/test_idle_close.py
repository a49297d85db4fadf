"""Idle users' databases are closed (ANKIHOST_IDLE_CLOSE_SECS) and reopened on their next
request; never under a running sync, which sees every request answered as without closing."""

from __future__ import annotations

import anyio
import httpx2
import orjson
import pytest
import zstandard

from ankihost.server import build
from tests.conftest import ALICE_KEY, make_settings

NO_CHANGES = {"changes": {"models": [], "decks": [[], []], "tags": []}}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _request(method: str, payload: object, session: str) -> dict:
    header = orjson.dumps({"v": 11, "k": ALICE_KEY, "c": "test,1,linux", "s": session}).decode()
    body = zstandard.ZstdCompressor().compress(orjson.dumps(payload))
    return {"url": f"/sync/{method}", "content": body, "headers": {"anki-sync": header}}


async def _call(client: httpx2.AsyncClient, method: str, payload: object, session: str = "s1"):
    await anyio.sleep(0.002)  # a client's pause between requests: other tasks run meanwhile
    response = await client.post(**_request(method, payload, session))
    assert response.status_code == 200, (method, response.status_code)
    data = zstandard.ZstdDecompressor().decompressobj().decompress(response.content)
    return orjson.loads(data)


async def _normal_sync(client: httpx2.AsyncClient, session: str) -> int:
    """One sync without changes, every step; returns the new modification time."""
    await _call(client, "meta", {"v": 11, "cv": "test"}, session)
    await _call(client, "start", {"minUsn": 0, "lnewer": False, "graves": None}, session)
    await _call(client, "applyChanges", NO_CHANGES, session)
    while not (await _call(client, "chunk", {}, session))["done"]:
        pass
    await _call(client, "applyChunk", {"chunk": {"done": True}}, session)
    return int(await _call(client, "finish", {}, session))


@pytest.mark.anyio
async def test_databases_close_when_idle_and_reopen_on_the_next_request(tmp_path, client_collection):
    app = build(make_settings(tmp_path / "base"))
    alice = app.registry.by_name("alice")
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        upload = zstandard.ZstdCompressor().compress(client_collection)
        header = orjson.dumps({"v": 11, "k": ALICE_KEY, "c": "test", "s": "u"}).decode()
        assert (await client.post("/sync/upload", content=upload, headers={"anki-sync": header})).status_code == 200
        mod = await _normal_sync(client, "s1")
        assert alice.has_open_databases()
        assert await app.registry.close_idle(3600, 3600) == []  # not idle long enough
        assert await app.registry.close_idle(0, 3600) == ["alice"]
        assert not alice.has_open_databases()
        assert (await _call(client, "meta", {"v": 11, "cv": "test"}))["mod"] == mod  # reopened


@pytest.mark.anyio
async def test_a_sync_session_is_never_closed_unless_abandoned(tmp_path, client_collection):
    app = build(make_settings(tmp_path / "base"))
    alice = app.registry.by_name("alice")
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        upload = zstandard.ZstdCompressor().compress(client_collection)
        header = orjson.dumps({"v": 11, "k": ALICE_KEY, "c": "test", "s": "u"}).decode()
        await client.post("/sync/upload", content=upload, headers={"anki-sync": header})
        await _call(client, "meta", {"v": 11, "cv": "test"})
        await _call(client, "start", {"minUsn": 0, "lnewer": False, "graves": None})
        assert await app.registry.close_idle(0, 3600) == []  # a session is running
        assert alice.collection.session is not None
        assert await app.registry.close_idle(0, 0) == ["alice"]  # given up by its client
        response = await client.post(**_request("applyChanges", NO_CHANGES, "s1"))
        assert response.status_code == 409  # rolled back: the client starts over


@pytest.mark.anyio
async def test_closing_while_syncs_run_never_cuts_a_session(tmp_path, client_collection):
    app = build(make_settings(tmp_path / "base"))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        upload = zstandard.ZstdCompressor().compress(client_collection)
        header = orjson.dumps({"v": 11, "k": ALICE_KEY, "c": "test", "s": "u"}).decode()
        await client.post("/sync/upload", content=upload, headers={"anki-sync": header})
        closes = 0
        done = anyio.Event()

        async def closer() -> None:
            nonlocal closes
            while not done.is_set():
                closes += len(await app.registry.close_idle(0, 3600))
                await anyio.sleep(0)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(closer)
            mods = [await _normal_sync(client, f"s{i}") for i in range(15)]
            done.set()
        assert mods == sorted(set(mods))  # every sync committed, each after the last
        assert closes > 0  # closed between syncs, and reopened by the next one
        assert (await _call(client, "meta", {"v": 11, "cv": "test"}, "x"))["mod"] == mods[-1]
