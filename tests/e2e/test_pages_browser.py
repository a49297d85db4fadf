"""The admin and account pages in real headless Chromium (JavaScript off), against a real
server process and real Anki clients; every page is saved as a screenshot in
`test-artifacts/screenshots/`, on a desktop and on a phone-sized window. The admin restores a
snapshot and a trashed media file from the pages, and the user downloads their collection
package, which the real client's importer opens as the server's collection."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from anki._backend import RustBackend
from anki.collection import Collection

from tests.support.accounts import add_user
from tests.support.browser import DESKTOP, PHONE, Browser, ensure_chromium
from tests.support.client import FullSyncRequired, SyncClient, is_auth_error
from tests.support.content import build_rich_collection
from tests.support.media_files import write_media
from tests.support.server import SyncServer, free_port
from tests.support.snapshot import assert_same, only_tables, snapshot

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "browser-admin-pw"
# What a restore or a package must carry exactly (every column of every row).
CONTENT = ("notes", "cards", "revlog", "decks", "deck_config", "notetypes", "fields", "templates", "tags")
MEDIA = {"cat.jpg": b"\xff\xd8 a cat " * 400, "dog.jpg": b"\xff\xd8 a dog " * 300, "sound 1.mp3": b"\xff\xfb" * 900}


@pytest.fixture(scope="module")
def chromium() -> None:
    ensure_chromium()  # apt-get install, as root, when missing (CI: a fresh Debian machine)


@pytest.fixture(scope="module")
def server() -> Iterator[SyncServer]:
    env = {"ANKIHOST_ADMIN_PASSWORD": ADMIN_PASSWORD, "ANKIHOST_ADMIN_PORT": str(free_port())}
    with SyncServer("ankihost", [("alice", "alice-pw")], env=env) as srv:
        yield srv


@pytest.fixture
def admin_url(server: SyncServer) -> str:
    return f"http://127.0.0.1:{server.extra_env['ANKIHOST_ADMIN_PORT']}/"


@pytest.fixture
def desktop(chromium: None) -> Iterator[Browser]:
    browser = Browser(DESKTOP, "desktop")
    yield browser
    browser.quit()


@pytest.fixture
def phone(chromium: None) -> Iterator[Browser]:
    browser = Browser(PHONE, "phone")
    yield browser
    browser.quit()


def admin_sign_in(browser: Browser, admin_url: str, shot: str | None = None) -> None:
    browser.open(admin_url)
    assert browser.url.endswith("/signin") and "Sign in" in browser.title()
    if shot:
        browser.screenshot(shot)
    browser.submit("form[action=signin]", password=ADMIN_PASSWORD)
    assert browser.find("h1").text.startswith("Users"), browser.text


def test_admin_adds_a_user_who_syncs_then_revokes_the_device(
    server: SyncServer, admin_url: str, desktop: Browser, clients: dict[str, SyncClient]
) -> None:
    desktop.open("data:text/html,<title>off</title><script>document.title = 'on'</script>")
    assert desktop.title() == "off"  # JavaScript is off: every step below is plain HTML forms
    with server.log_on_failure():
        desktop.open(admin_url)
        desktop.submit("form[action=signin]", password="not-it")
        assert "Wrong password" in desktop.text
        desktop.screenshot("admin-signin-wrong-password")
        admin_sign_in(desktop, admin_url, shot="admin-signin")

        desktop.click(desktop.find("nav a[href=add]"))
        desktop.fill("form[action=add]", name="maria", password="maria-pw", again="maria-pw", quota_mb="100")
        desktop.screenshot("admin-add-user")
        desktop.click(desktop.find("form[action=add] button[type=submit]"))
        assert "User maria added" in desktop.text and desktop.find("h1").text.startswith("maria")

        maria = clients["maria"] = SyncClient(server, "maria", "maria-pw", name="maria")
        build_rich_collection(maria.col, notes=150, reviews=20)
        (maria.media_dir / "picture.txt").write_bytes(b"x" * 2048)
        assert maria.sync().action == "upload"
        maria.sync_media()

        desktop.click(desktop.find("nav a[href='./']"))
        row = next(r for r in desktop.finds("table.users tbody tr") if r.text.startswith("maria"))
        assert "just now" in row.text and "ok" in row.text and "store" in row.text
        assert "26.09.3," in row.text and "of 100.0 MB" in row.text and "2.0 KB" in row.text
        assert "alice" in desktop.text and "shared login" in desktop.text
        desktop.screenshot("admin-overview")

        desktop.click(row.find_element("css selector", "a"))
        devices = desktop.finds("table.cards tbody tr")
        assert len(devices) == 1 and "26.09.3," in devices[0].text
        desktop.screenshot("admin-user")
        device_id = devices[0].find_element("css selector", "code").text
        desktop.click(devices[0].find_element("css selector", "button"))
        assert f"Logged out: {device_id}" in desktop.text
        assert "No device has logged in yet" in desktop.text
        desktop.screenshot("admin-user-after-revoke")
        with pytest.raises(Exception) as refused:
            maria.sync()
        assert is_auth_error(refused.value)

        desktop.click(desktop.find("nav a[href=audit]"))
        assert "device.revoked" in desktop.text and "admin page" in desktop.text
        desktop.screenshot("admin-audit")
        desktop.open(admin_url + "user?name=nobody")
        assert "Not found" in desktop.text and "there is no user" in desktop.text.lower()
        desktop.screenshot("admin-error-404")


def test_user_revokes_a_lost_phone_on_the_account_page(
    server: SyncServer, admin_url: str, phone: Browser, desktop: Browser, clients: dict[str, SyncClient]
) -> None:
    add_user(server, "nico", "nico-pw", quota_mb=20)
    lost = clients["lost"] = SyncClient(server, "nico", "nico-pw", name="lost")
    build_rich_collection(lost.col, notes=80, reviews=10)
    with server.log_on_failure():
        assert lost.sync().action == "upload"
        laptop = clients["laptop"] = SyncClient(server, "nico", "nico-pw", name="laptop")
        assert laptop.sync().action == "download"

        phone.open(server.endpoint + "account/")
        assert phone.url.endswith("/account/signin")
        phone.screenshot("account-signin-phone")
        phone.submit("form[action=signin]", name="nico", password="wrong")
        assert "Wrong name or password" in phone.text
        phone.submit("form[action=signin]", name="nico", password="nico-pw")
        assert phone.find("h1").text == "nico"
        devices = phone.finds("table.cards tbody tr")
        assert len(devices) == 2 and "of 20.0 MB" in phone.text
        assert phone.horizontal_overflow() <= 0
        phone.screenshot("account-phone")

        first = devices[0].find_element("css selector", "code").text
        phone.click(devices[0].find_element("css selector", "button"))
        assert f"Device {first} is logged out" in phone.text
        assert len(phone.finds("table.cards tbody tr")) == 1
        phone.screenshot("account-phone-after-revoke")
        with pytest.raises(Exception) as refused:
            lost.sync()
        assert is_auth_error(refused.value)
        assert laptop.sync().required is not None  # the other device syncs on

        desktop.open(server.endpoint + "account/")
        desktop.submit("form[action=signin]", name="nico", password="nico-pw")
        desktop.screenshot("account-desktop")
        admin_sign_in(phone, admin_url)
        assert phone.horizontal_overflow() <= 0
        phone.screenshot("admin-overview-phone")
        phone.open(admin_url + "user?name=nico")
        assert phone.horizontal_overflow() <= 0
        phone.screenshot("admin-user-phone")


def add_notes(client: SyncClient, count: int, prefix: str) -> None:
    basic = client.col.models.by_name("Basic")
    for i in range(count):
        note = client.col.new_note(basic)
        note["Front"], note["Back"] = f"{prefix} {i}", "back"
        client.col.add_note(note, 1)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def imported(package: Path, target: Path) -> tuple[dict[str, object], dict[str, str]]:
    """The package opened by the real client's importer: its collection and its media."""
    target.mkdir()
    RustBackend().import_collection_package(
        col_path=str(target / "collection.anki2"), backup_path=str(package),
        media_folder=str(target / "collection.media"), media_db=str(target / "collection.media.db2"))
    col = Collection(str(target / "collection.anki2"))
    try:
        return only_tables(snapshot(col), *CONTENT), digests(target / "collection.media")
    finally:
        col.close()


def test_admin_restores_a_snapshot_and_a_trashed_file_and_the_user_downloads_the_package(
    server: SyncServer, admin_url: str, desktop: Browser, phone: Browser, clients: dict[str, SyncClient],
    tmp_path: Path,
) -> None:
    add_user(server, "olga", "olga-pw")
    laptop = clients["olga-laptop"] = SyncClient(server, "olga", "olga-pw", name="olga-laptop")
    build_rich_collection(laptop.col, notes=90, reviews=25)
    write_media(laptop.media_dir, MEDIA)
    with server.log_on_failure():
        assert laptop.sync().action == "upload"
        laptop.sync_media()
        tablet = clients["olga-tablet"] = SyncClient(server, "olga", "olga-pw", name="olga-tablet")
        assert tablet.sync().action == "download"
        add_notes(laptop, 12, "made on the laptop after the tablet last synced")
        assert laptop.sync().action == "normal"
        wanted = only_tables(snapshot(laptop.col), *CONTENT)
        add_notes(tablet, 1, "stale tablet")
        tablet.full_upload()  # Upload chosen on the stale tablet: the laptop's 12 notes are gone
        # the cat picture deleted by mistake, the dog picture replaced
        write_media(laptop.media_dir, {"cat.jpg": None, "dog.jpg": b"\xff\xd8 another dog"})
        laptop.sync_media()

        admin_sign_in(desktop, admin_url)
        desktop.open(admin_url + "user?name=olga")
        [row] = [r for r in desktop.finds("table.snapshots tbody tr") if "upload" in r.text]
        assert str(wanted["counts"]["notes"]) in row.text
        trash = desktop.find("table.trash").text
        assert "cat.jpg" in trash and "dog.jpg" in trash and "sound" not in trash
        desktop.screenshot("admin-user-data")
        admin_sign_in(phone, admin_url)
        phone.open(admin_url + "user?name=olga")
        assert phone.horizontal_overflow() <= 0
        phone.screenshot("admin-user-data-phone")
        phone.click(phone.find("table.snapshots a.button"))
        assert "choose Download on every device" in phone.text and phone.horizontal_overflow() <= 0
        phone.screenshot("admin-restore-confirm-phone")
        phone.click(phone.find("form[action=restore] a.button"))  # Cancel
        assert phone.find("h1").text.startswith("olga")

        desktop.click(row.find_element("css selector", "a.button"))
        assert "choose Download on every device" in desktop.text
        desktop.screenshot("admin-restore-confirm")
        desktop.click(desktop.find("form[action=restore] button[type=submit]"))
        assert "restored" in desktop.find(".flash").text and "choose Download" in desktop.find(".flash").text
        desktop.screenshot("admin-user-after-restore")
        for device in (tablet, laptop):
            with pytest.raises(FullSyncRequired):
                device.sync()
            assert device.sync(on_conflict="download").action == "download"
            assert_same(wanted, only_tables(snapshot(device.col), *CONTENT), "the snapshot and the restore")

        for name in ("cat.jpg", "dog.jpg"):  # the old dog picture's name holds the new one now
            desktop.find(f"table.trash input[value='{name}']").click()
        desktop.click(desktop.find("form[action=restore-media] button[type=submit]"))
        assert "Conflict" in desktop.find("h1").text and "another file under this name" in desktop.text
        desktop.screenshot("admin-media-restore-refused")
        desktop.click(desktop.find("a.button"))  # Back: nothing was restored
        assert len(desktop.finds("table.trash tbody tr")) == 2
        desktop.find("table.trash input[value='cat.jpg']").click()
        desktop.click(desktop.find("form[action=restore-media] button[type=submit]"))
        assert "Restored 1 media file(s): cat.jpg" in desktop.find(".flash").text
        assert [r.text.split()[0] for r in desktop.finds("table.trash tbody tr")] == ["dog.jpg"]
        desktop.screenshot("admin-user-after-media-restore")
        laptop.sync_media()
        expected = {**MEDIA, "dog.jpg": b"\xff\xd8 another dog"}
        assert digests(laptop.media_dir) == {n: hashlib.sha256(d).hexdigest() for n, d in expected.items()}

        phone.open(server.endpoint + "account/")
        phone.submit("form[action=signin]", name="olga", password="olga-pw")
        assert "Download my collection" in phone.text and phone.horizontal_overflow() <= 0
        phone.screenshot("account-download-phone")
        desktop.open(server.endpoint + "account/")
        desktop.submit("form[action=signin]", name="olga", password="olga-pw")
        desktop.screenshot("account-download-desktop")
        package = desktop.download(desktop.find("#export a.button"))
        assert package.name == "olga.colpkg"
        content, media = imported(package, tmp_path / "imported")
        assert_same(only_tables(snapshot(laptop.col), *CONTENT), content, "the server's collection and the package")
        assert media == digests(laptop.media_dir)
