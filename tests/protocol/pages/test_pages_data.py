"""The pages on a user's data, in process: snapshots (restore after a confirmation page), the
media trash (restore ticked files), and downloading a collection package from the admin page
and from `/account/` (the user's own only). Every refusal is a 4xx page with nothing changed;
a download leaves nothing behind, even when the client goes away mid-way."""

from __future__ import annotations

import io
import os
import sqlite3
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from prometheus_client.parser import text_string_to_metric_families

from ankihost.server import build
from ankihost.web.pages.forms import MAX_LIST_VALUES
from tests.conftest import ALICE_KEY, Wire, make_settings
from tests.protocol.pages.conftest import ADMIN, Site, csrf_of
from tests.support.media_files import media_zip

MEDIA_BYTES = 600 * 1024  # more than one piece of a download (downloads.CHUNK_BYTES)


def upload(site: Site, collection: bytes, key: str = ALICE_KEY) -> None:
    assert Wire(site.http).payload(Wire(site.http).post("upload", collection, key=key)) == b"OK"


def upload_media(site: Site, entries: list[tuple[str, bytes | None]], key: str = ALICE_KEY) -> None:
    wire = Wire(site.http)
    assert wire.json(wire.post("uploadChanges", media_zip(entries), area="msync", key=key))["err"] == ""


def server_notes(site: Site, key: str = ALICE_KEY) -> int:
    wire = Wire(site.http)
    return _count(wire.payload(wire.post("download", {}, key=key)))


def _count(data: bytes) -> int:
    """Notes in a collection file's bytes (written out: a WAL-mode file cannot be deserialized)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "copy.anki2"
        path.write_bytes(data)
        db = sqlite3.connect(path)
        try:
            return int(db.execute("select count() from notes").fetchone()[0])
        finally:
            db.close()


def meta(site: Site) -> dict[str, Any]:
    """alice's collection as `meta` reports it (without the server's clock)."""
    wire = Wire(site.http)
    result: dict[str, Any] = wire.json(wire.post("meta", {"v": 11, "cv": "test"}))
    del result["ts"]
    return result


def snapshot_ids(site: Site, name: str = "alice") -> list[str]:
    return [s.id for s in site.app.registry.by_name(name).snapshots.list()]


def media_files(site: Site, name: str = "alice") -> dict[str, bytes]:
    folder = site.app.admin.folder.user(name).media
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def leftovers(site: Site, name: str) -> list[str]:
    root = site.app.admin.folder.user(name).root
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def wait_for_trash(site: Site, count: int, name: str = "alice") -> None:
    """Trashed files are placed after the reply: wait until the trash lists them."""
    state = site.app.registry.by_name(name)
    deadline = time.monotonic() + 10
    while len(state.media.trash.entries()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(state.media.trash.entries()) == count


@pytest.fixture
def snapshotted(admin: Site, client_collection: bytes, fewer_notes: bytes) -> tuple[Site, str]:
    """alice's 40-note collection replaced by a 30-note one: the snapshot of the 40 notes."""
    upload(admin, client_collection)
    upload(admin, fewer_notes)
    [id] = snapshot_ids(admin)
    return admin, id


# -- snapshots -----------------------------------------------------------------------------


def test_the_user_page_lists_snapshots_trash_and_export(snapshotted: tuple[Site, str]) -> None:
    site, id = snapshotted
    upload_media(site, [("cat.jpg", b"cat" * 100), ("dog.jpg", b"dog")])
    upload_media(site, [("cat.jpg", None)])
    wait_for_trash(site, 1)
    page = site.admin("user?name=alice")
    assert page.status_code == 200
    snapshots = page.text.split('id="snapshots"', 1)[1].split("</section>", 1)[0]
    assert f"<code>{id}</code>" in snapshots and "upload" in snapshots
    assert '<td data-label="Notes">40</td>' in snapshots
    assert f'href="restore?name=alice&amp;id={id}"' in snapshots and "Download" in snapshots
    trash = page.text.split('id="trash"', 1)[1].split("</section>", 1)[0]
    assert 'name="file" value="cat.jpg"' in trash and "dog.jpg" not in trash and "300 B" in trash
    assert 'action="restore-media"' in trash and "30 days" in trash
    assert 'href="export?name=alice"' in page.text and 'href="export?name=alice&amp;media=0"' in page.text
    assert "Empty. Media files a sync deletes or replaces are kept here 30 days." in site.admin("user?name=bob").text


def test_restore_asks_first_then_restores_and_says_what_to_do_next(snapshotted: tuple[Site, str]) -> None:
    site, id = snapshotted
    before = meta(site)
    confirm = site.admin(f"restore?name=alice&id={id}")
    assert confirm.status_code == 200
    assert "choose Download on every device" in confirm.text and "40 notes" in confirm.text
    assert meta(site) == before and server_notes(site) == 30  # the GET changed nothing
    response = site.admin_post("restore", csrf=csrf_of(confirm.text), name="alice", id=id)
    assert (response.status_code, response.headers["location"]) == (303, "user?name=alice")
    page = site.admin("user?name=alice").text
    assert f"Snapshot {id} restored: 40 notes" in page and "choose Download on every one" in page
    assert server_notes(site) == 40
    after = meta(site)
    assert after["scm"] != before["scm"]  # every device is told to full-sync
    assert len(snapshot_ids(site)) == 2  # the 30-note collection kept as a snapshot
    [event] = [e for e in site.app.accounts.store.audit("alice") if e.event == "snapshot.restored"]
    assert event.actor == "admin page"


def test_restore_refusals_change_nothing(snapshotted: tuple[Site, str]) -> None:
    site, id = snapshotted
    before = meta(site)
    token = csrf_of(site.admin("user?name=alice").text)
    cases = [
        (site.admin("restore?name=alice&id=20200101-000000"), 404, "no snapshot"),
        (site.admin_post("restore", csrf=token, name="alice", id="20200101-000000"), 404, "no snapshot"),
        (site.admin_post("restore", csrf=token, name="nobody", id=id), 404, "there is no user"),
        (site.admin_post("restore", csrf=token, name="alice"), 400, "snapshot is missing"),
        (site.admin_post("restore", csrf="forged-" + "x" * 36, name="alice", id=id), 403, "security token"),
        (site.admin_post("restore", csrf="", name="alice", id=id), 403, "security token"),
        (site.http.post(f"{ADMIN}/restore", data={"name": "alice", "id": id}, follow_redirects=False), 403, ""),
    ]
    for response, status, message in cases:
        assert response.status_code == status and message in response.text.lower(), (status, response.text)
    assert meta(site) == before and server_notes(site) == 30 and snapshot_ids(site) == [id]


def test_a_damaged_snapshot_is_refused_with_nothing_changed(snapshotted: tuple[Site, str]) -> None:
    site, id = snapshotted
    [path] = site.app.registry.by_name("alice").snapshots.folder.snapshots.glob("*.zst")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # the header reads, the content fails its checksum
    path.write_bytes(bytes(data))
    before = meta(site)
    token = csrf_of(site.admin(f"restore?name=alice&id={id}").text)
    response = site.admin_post("restore", csrf=token, name="alice", id=id)
    assert response.status_code == 400 and f"snapshot {id} is damaged" in response.text.lower()
    assert "nothing was changed" in response.text.lower() and "user?name=alice" in response.text
    path.write_bytes(bytes(data[:20]))  # now not even the header reads
    page = site.admin("user?name=alice").text
    assert "damaged: cannot be read" in page and "restore?name=alice" not in page
    response = site.admin(f"restore?name=alice&id={id}")
    assert response.status_code == 400 and "is damaged" in response.text
    assert meta(site) == before and server_notes(site) == 30
    assert snapshot_ids(site) == [id] and leftovers(site, "alice") == []


def test_a_restore_during_a_sync_gives_up_with_a_409_page(snapshotted: tuple[Site, str]) -> None:
    site, id = snapshotted
    site.app.admin_app.pages.data.wait_secs = 1
    token = csrf_of(site.admin(f"restore?name=alice&id={id}").text)
    wire = Wire(site.http)
    wire.post("meta", {"v": 11, "cv": "test"})
    assert wire.post("start", {"minUsn": 0, "lnewer": False, "graves": None}).status_code == 200
    try:
        started = time.monotonic()
        response = site.admin_post("restore", csrf=token, name="alice", id=id)
        assert response.status_code == 409 and "did not end within 1 s" in response.text
        assert "nothing was changed" in response.text and time.monotonic() - started < 10
    finally:
        wire.post("abort", {})
    assert server_notes(site) == 30 and snapshot_ids(site) == [id]


# -- the media trash -------------------------------------------------------------------------


@pytest.fixture
def trashed(admin: Site) -> Site:
    """alice's media: a.txt and c.txt deleted, b.txt replaced (its old content in the trash)."""
    upload_media(admin, [("a.txt", b"A"), ("b.txt", b"B"), ("c.txt", b"C"), ("keep.txt", b"K")])
    upload_media(admin, [("a.txt", None), ("b.txt", b"B2"), ("c.txt", None)])
    wait_for_trash(admin, 3)
    return admin


def test_ticked_trash_files_are_restored(trashed: Site) -> None:
    token = csrf_of(trashed.admin("user?name=alice").text)
    body = f"csrf={token}&name=alice&file=a.txt&file=c.txt"
    response = trashed.http.post(f"{ADMIN}/restore-media", content=body.encode(), follow_redirects=False,
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 303, response.text
    assert media_files(trashed) == {"a.txt": b"A", "b.txt": b"B2", "c.txt": b"C", "keep.txt": b"K"}
    page = trashed.admin("user?name=alice").text
    assert "Restored 2 media file(s): a.txt, c.txt" in page
    assert 'value="b.txt"' in page and 'value="a.txt"' not in page
    [event] = [e for e in trashed.app.accounts.store.audit("alice") if e.event == "media.restored"]
    assert event.actor == "admin page"


def test_trash_refusals_change_nothing(trashed: Site) -> None:
    token = csrf_of(trashed.admin("user?name=alice").text)
    before = media_files(trashed)
    cases = [
        ({"file": "b.txt"}, 409, "now has another file under this name"),
        ({"file": "zzz.txt"}, 409, "is not in the trash"),
        ({}, 400, "Tick the files"),
    ]
    for fields, status, message in cases:
        response = trashed.admin_post("restore-media", csrf=token, name="alice", **fields)
        assert response.status_code == status and message in response.text, response.text
        assert "Nothing was restored" in response.text or status == 400
    body = f"csrf={token}&name=alice&file=a.txt&file=b.txt".encode()  # one bad: neither
    response = trashed.http.post(f"{ADMIN}/restore-media", content=body, follow_redirects=False,
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 409 and "&#39;b.txt&#39;" in response.text
    for bad, status in (("csrf=forged&name=alice&file=a.txt", 403),
                        (f"csrf={token}&name=alice&name=bob&file=a.txt", 400),
                        (f"csrf={token}&name=alice&" + "&".join(["file=a.txt"] * (MAX_LIST_VALUES + 1)), 400)):
        response = trashed.http.post(f"{ADMIN}/restore-media", content=bad.encode(), follow_redirects=False,
                                     headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == status, bad[:80]
    assert trashed.admin_post("restore-media", csrf=token, name="nobody", file="a.txt").status_code == 404
    assert media_files(trashed) == before
    assert len(trashed.app.registry.by_name("alice").media.trash.entries()) == 3


def test_a_trash_that_is_off_or_empty_says_so(tmp_path: Path) -> None:
    from tests.protocol.pages.conftest import make_site

    for site in make_site(tmp_path / "off", ANKIHOST_MEDIA_TRASH_DAYS="0"):
        assert site.admin_signin().status_code == 303
        assert "The media trash is off" in site.admin("user?name=alice").text
        assert "No snapshot yet" in site.admin("user?name=bob").text
        assert "Empty. Media files a sync deletes" not in site.admin("user?name=bob").text


# -- downloads -------------------------------------------------------------------------------


def package(response) -> dict[str, Any]:
    """What a downloaded package holds: its members, its note count and its media."""
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["cache-control"] == "no-store"
    assert int(response.headers["content-length"]) == len(response.content)
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        members = [i.filename for i in zf.infolist()]
        collection = zstandard.ZstdDecompressor().decompressobj().decompress(zf.read("collection.anki21b"))
        media = {m: zstandard.ZstdDecompressor().decompressobj().decompress(zf.read(m))
                 for m in members if m.isdigit()}
    return {"members": members, "notes": _count(collection), "media": media,
            "disposition": response.headers["content-disposition"]}


def test_the_admin_downloads_an_env_users_and_a_store_users_package(
    admin: Site, client_collection: bytes, fewer_notes: bytes
) -> None:
    upload(admin, client_collection)
    picture = os.urandom(MEDIA_BYTES)
    upload_media(admin, [("picture.jpg", picture)])
    admin.add_user("sam", "pw-sam")
    sam = admin.device_key("sam", "pw-sam")
    upload(admin, fewer_notes, key=sam)
    got = package(admin.admin("export?name=alice"))
    assert got["notes"] == 40 and list(got["media"].values()) == [picture]
    assert got["disposition"] == "attachment; filename=\"alice.colpkg\"; filename*=UTF-8''alice.colpkg"
    bare = package(admin.admin("export?name=sam&media=0"))
    assert bare["notes"] == 30 and bare["members"] == ["meta", "collection.anki21b", "collection.anki2", "media"]
    assert "sam%20%28no%20media%29.colpkg" in bare["disposition"]
    assert leftovers(admin, "alice") == [] and leftovers(admin, "sam") == []
    events = [e for e in admin.app.accounts.store.audit() if e.event == "collection.exported"]
    assert [(e.account, e.actor) for e in events] == [("sam", "admin page"), ("alice", "admin page")]
    assert [e.detail for e in events] == ["media=False to=download", "media=True to=download"]


def test_head_of_a_download_answers_without_writing_a_package(admin: Site, client_collection: bytes) -> None:
    upload(admin, client_collection)
    response = admin.http.head(f"{ADMIN}/export?name=alice")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-disposition"].startswith('attachment; filename="alice.colpkg"')
    assert "content-length" not in response.headers
    assert admin.http.head(f"{ADMIN}/export?name=nobody").status_code == 404
    assert admin.account_signin("alice", "secret").status_code == 303
    response = admin.http.head("/account/export?media=0")
    assert response.status_code == 200 and "alice (no media).colpkg" in response.headers["content-disposition"]
    assert [e for e in admin.app.accounts.store.audit() if e.event == "collection.exported"] == []
    assert leftovers(admin, "alice") == []
    assert admin.admin("export?name=alice").status_code == 200  # and GET still sends the package


def test_download_refusals(admin: Site, client_collection: bytes) -> None:
    assert admin.admin("export?name=nobody").status_code == 404
    assert admin.admin("export").status_code == 400
    response = admin.http.post(f"{ADMIN}/export", data={"name": "alice"}, follow_redirects=False)
    assert response.status_code == 405
    admin.http.cookies.clear()
    response = admin.admin("export?name=alice", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "signin")
    assert admin.admin_signin().status_code == 303
    upload(admin, client_collection)
    admin.app.admin_app.pages.data.exports.wait_secs = 1
    wire = Wire(admin.http)
    wire.post("meta", {"v": 11, "cv": "test"})
    assert wire.post("start", {"minUsn": 0, "lnewer": False, "graves": None}).status_code == 200
    try:
        response = admin.admin("export?name=alice")
        assert response.status_code == 409 and "did not end within 1 s" in response.text
    finally:
        wire.post("abort", {})
    assert leftovers(admin, "alice") == []


def test_a_name_with_quotes_and_accents_downloads_under_its_own_name(admin: Site) -> None:
    name = 'Zoë "Z" Ünal'
    admin.add_user(name, "pw")
    key = admin.device_key(name, "pw")
    upload_media(admin, [("a.txt", b"a")], key=key)
    response = admin.admin("export", params={"name": name})
    disposition = package(response)["disposition"]
    assert disposition.startswith('attachment; filename="Zo_ _Z_ _nal.colpkg"; ')
    assert disposition.endswith("filename*=UTF-8''Zo%C3%AB%20%22Z%22%20%C3%9Cnal.colpkg")


def test_the_account_page_downloads_the_signed_in_users_own_package_only(
    admin: Site, client_collection: bytes, fewer_notes: bytes
) -> None:
    upload(admin, client_collection)  # alice: 40 notes
    admin.add_user("sam", "pw-sam")
    upload(admin, fewer_notes, key=admin.device_key("sam", "pw-sam"))  # sam: 30
    assert admin.account("export", follow_redirects=False).headers["location"] == "signin"
    assert admin.account_signin("sam", "pw-sam").status_code == 303
    page = admin.account().text
    assert 'href="export"' in page and 'href="export?media=0"' in page
    for query in ("", "?name=alice", "?user=alice&media=1"):
        got = package(admin.account("export" + query))
        assert got["notes"] == 30 and "filename=\"sam.colpkg\"" in got["disposition"], query
    assert package(admin.account("export?media=0"))["members"][-1] == "media"
    assert admin.http.post("/account/export", data={}, follow_redirects=False).status_code == 405
    [event, *_] = [e for e in admin.app.accounts.store.audit("sam") if e.event == "collection.exported"]
    assert event.actor == "account page"
    assert leftovers(admin, "sam") == []


def test_a_download_cut_off_by_the_client_leaves_no_file_behind(admin: Site, client_collection: bytes) -> None:
    upload(admin, client_collection)
    upload_media(admin, [("big.bin", os.urandom(3 * MEDIA_BYTES))])
    exports = admin.app.admin_app.pages.data.exports
    sent: list[dict[str, Any]] = []

    async def cut_off() -> None:
        response = await exports.download("alice", media=True, back="./")
        assert leftovers(admin, "alice") == []  # only the open file is left

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and len(sent) == 2:  # after one piece
                raise ConnectionResetError("the client went away")
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        with pytest.raises(ConnectionResetError):
            await response({"type": "http", "method": "GET"}, receive, send)
        assert response.file.closed

    admin.http.portal.call(cut_off)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert not [fd for fd in os.listdir("/proc/self/fd") if "colpkg" in _link(fd)]
    assert leftovers(admin, "alice") == []


def _link(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def test_an_export_folder_a_crash_left_is_removed_at_start_up(tmp_path: Path) -> None:
    base = tmp_path / "base"
    crashed = base / "alice" / ".export-k1ll3d"
    crashed.mkdir(parents=True)
    (crashed / "collection.colpkg").write_bytes(b"half a package")
    build(make_settings(base)).admin.close()
    assert not crashed.exists() and (base / "alice" / "media").is_dir()


def test_the_new_routes_have_endpoint_labels_and_downloads_count_as_sent_bytes(
    admin: Site, client_collection: bytes
) -> None:
    upload(admin, client_collection)
    admin.account_signin("alice", "secret")
    size = len(admin.account("export").content)
    admin.admin("export?name=alice")
    admin.admin("restore?name=alice&id=1")
    admin.admin_post("restore-media", name="alice")
    text = admin.http.get(f"{ADMIN}/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    for endpoint, method, status in (("/account/export", "GET", "200"), ("/admin/export", "GET", "200"),
                                     ("/admin/restore", "GET", "404"), ("/admin/restore-media", "POST", "400")):
        key = ("ankihost_requests_total", (("endpoint", endpoint), ("method", method), ("status", status)))
        assert samples.get(key) == 1, (endpoint, [k for k in samples if endpoint in str(k)])
    assert samples[("ankihost_sent_bytes_total", (("area", "account"),))] >= size


def test_one_download_per_user_and_two_at_once_per_area(admin: Site, client_collection: bytes) -> None:
    from functools import partial

    from tests.conftest import BOB_KEY

    admin.add_user("cleo", "pw-cleo")
    exports = admin.app.admin_app.pages.data.exports
    exports.wait_secs = 20
    wire = Wire(admin.http)
    for key in (ALICE_KEY, BOB_KEY):  # both syncing: their downloads wait
        upload(admin, client_collection, key=key)
        wire.post("meta", {"v": 11, "cv": "test"}, key=key)
        assert wire.post("start", {"minUsn": 0, "lnewer": False, "graves": None}, key=key).status_code == 200
    portal = admin.http.portal
    waiting = [portal.start_task_soon(partial(exports.download, name, media=False, back="./"))
               for name in ("alice", "bob")]
    try:
        deadline = time.monotonic() + 10
        while exports.writing != {"alice", "bob"} and time.monotonic() < deadline:
            time.sleep(0.02)
        response = admin.admin("export?name=alice")
        assert response.status_code == 409 and "being prepared for a download already" in response.text
        response = admin.admin("export?name=cleo")
        assert response.status_code == 503 and "preparing other downloads" in response.text
    finally:
        for key in (ALICE_KEY, BOB_KEY):
            wire.post("abort", {}, key=key)
    for future in waiting:
        future.result(timeout=30).file.close()
    assert exports.writing == set()
    assert package(admin.admin("export?name=cleo"))["members"][0] == "meta"
