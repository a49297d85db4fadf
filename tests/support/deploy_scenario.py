"""What a deployment must carry, driven with the real client: the same round for every recipe
(reverse proxies, the container image, HTTPS).

`sync_round()` has device A full-upload a collection, make a normal sync, and media-sync files
over 2 MiB (each goes alone in its upload zip, so request bodies are that large and sent
chunked); device B then downloads the collection and the media and must equal A, and a change
made on B reaches A by a normal sync. `Endpoint` points a `SyncClient` at any URL.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass

from tests.support.client import NO_CHANGES, SyncClient
from tests.support.content import build_rich_collection
from tests.support.media_files import write_media
from tests.support.snapshot import assert_same, only_tables, snapshot

MiB = 1024 * 1024
# Random bytes do not compress: the zips and request bodies are this large on the wire.
BIG_MEDIA_BYTES = (3 * MiB, 2 * MiB + 300 * 1024)
# What a normal sync carries row for row (config and tag usns differ per device by design).
NORMAL_SYNC_TABLES = ("notes", "cards", "revlog")


@dataclass
class Endpoint:
    """A sync URL a client uses (a proxy's, a container's published port) in place of a SyncServer."""

    endpoint: str
    starts: int = 1


def media_files(seed: int = 5) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"big{i}.bin": rng.randbytes(size) for i, size in enumerate(BIG_MEDIA_BYTES)}
    files["small ünïcödé.txt"] = b"a small file next to the big ones"
    return files


def media_of(client: SyncClient) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in client.media_dir.iterdir() if p.is_file()}


def add_note(client: SyncClient, front: str) -> None:
    note = client.col.new_note(client.col.models.by_name("Basic"))
    note["Front"], note["Back"] = front, "back"
    client.col.add_note(note, 1)


def wait_for_background_media_sync(client: SyncClient, timeout: float = 60.0) -> None:
    """A full sync given the server's media USN starts a media sync in the background (rslib
    full_sync_inner), and `sync_media()` does nothing while one runs: files written meanwhile
    could be missed by its folder scan, so wait for it (it re-raises its error)."""
    deadline = time.monotonic() + timeout
    while client.col.media_sync_status().active:
        assert time.monotonic() < deadline, "background media sync did not finish"
        time.sleep(0.01)


def sync_round(endpoint: Endpoint, user: str, password: str, clients: dict[str, SyncClient],
               prefix: str = "") -> None:
    """Full upload and media on A, full download and media on B (equal), then normal syncs
    both ways (equal notes, cards and review log)."""
    a = clients[f"{prefix}A"] = SyncClient(endpoint, user, password, name=f"{prefix}A")
    build_rich_collection(a.col, notes=60, reviews=12)
    a.login()
    assert a.sync().action == "upload"
    wait_for_background_media_sync(a)
    write_media(a.media_dir, media_files())
    a.sync_media()

    b = clients[f"{prefix}B"] = SyncClient(endpoint, user, password, name=f"{prefix}B")
    b.login()
    assert b.sync().action == "download"
    wait_for_background_media_sync(b)
    b.sync_media()
    assert_same(snapshot(a.col), snapshot(b.col), "uploader A and downloader B")
    assert media_of(b) == media_of(a) and len(media_of(a)) == len(BIG_MEDIA_BYTES) + 1

    for source, target in ((a, b), (b, a)):
        add_note(source, f"made on {source.folder.name}")
        assert source.sync().action == "normal"
        assert target.sync().action == "normal"
        assert_same(*(only_tables(snapshot(c.col), *NORMAL_SYNC_TABLES) for c in (a, b)), "after a normal sync")
    assert a.sync().required == NO_CHANGES and b.sync().required == NO_CHANGES
