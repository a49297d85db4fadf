"""The admin and account pages in real headless Chromium (JavaScript off), against a real
server process and real Anki clients; every page is saved as a screenshot in
`test-artifacts/screenshots/`, on a desktop and on a phone-sized window."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.accounts import add_user
from tests.support.browser import DESKTOP, PHONE, Browser, ensure_chromium
from tests.support.client import SyncClient, is_auth_error
from tests.support.content import build_rich_collection
from tests.support.server import SyncServer, free_port

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "browser-admin-pw"


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
