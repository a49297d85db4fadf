"""The admin pages in process: sign-in, every page and form, and every refusal (4xx, nothing
changed). Changes are checked against the account directory, the same state sync uses."""

from __future__ import annotations

import logging

import pytest

from ankihost.server import build
from tests.conftest import make_settings
from tests.protocol.pages.conftest import ADMIN, ADMIN_PASSWORD, Site, csrf_of


def test_admin_listener_is_off_without_a_password_or_token(tmp_path):
    app = build(make_settings(tmp_path / "base"))
    assert app.admin_app is None


def test_metrics_token_alone_serves_metrics_but_no_pages(tmp_path):
    from starlette.testclient import TestClient

    app = build(make_settings(tmp_path / "base", ANKIHOST_METRICS_TOKEN="tok-123"))
    assert app.admin_app is not None and app.admin_app.pages is None
    with TestClient(app.admin_app) as http:
        assert http.get("/").status_code == 404
        assert "ANKIHOST_ADMIN_PASSWORD" in http.get("/signin").text
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer tok-123"}).status_code == 200


def test_pages_need_a_sign_in(site: Site):
    for page in ("", "user?name=alice", "add", "audit"):
        response = site.admin(page, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "signin")
    response = site.http.post(f"{ADMIN}/revoke", data={"name": "alice", "all": "1"}, follow_redirects=False)
    assert response.status_code == 403 and "not signed in" in response.text.lower()


def test_wrong_admin_password_is_403_and_audited_without_the_password(site: Site, caplog):
    caplog.set_level(logging.INFO)
    response = site.admin_signin("wrong-guess-xyz")
    assert response.status_code == 403 and "Wrong password" in response.text
    assert "ankihost_admin=" not in response.headers.get("set-cookie", "")
    assert site.admin("", follow_redirects=False).status_code == 303
    assert "wrong-guess-xyz" not in caplog.text
    events = [e.event for e in site.app.accounts.store.audit()]
    assert "admin_page.signin_failed" in events


def test_admin_sign_in_is_throttled(site: Site):
    for _ in range(5):
        assert site.admin_signin("nope").status_code == 403
    response = site.admin_signin()  # even the right password, from this address, for a while
    assert response.status_code == 429 and "Too many" in response.text


def test_sign_in_form_needs_its_own_token(site: Site):
    site.admin("signin")
    response = site.http.post(f"{ADMIN}/signin", data={"csrf": "x" * 43, "password": ADMIN_PASSWORD},
                              follow_redirects=False)
    assert response.status_code == 403
    site.http.cookies.clear()
    token = csrf_of(site.admin("signin").text)
    site.http.cookies.clear()  # a form posted from another site has the token but not the cookie
    response = site.http.post(f"{ADMIN}/signin", data={"csrf": token, "password": ADMIN_PASSWORD},
                              follow_redirects=False)
    assert response.status_code == 403


def test_session_cookie_flags_and_security_headers(site: Site):
    response = site.admin_signin()
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("ankihost_admin="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert "Path" not in cookie
    page = site.admin("")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "style-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text and "style=" not in page.text
    css = site.admin("static/pages.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_cookie_is_secure_behind_an_https_proxy(site: Site):
    token = csrf_of(site.admin("signin").text)
    response = site.http.post(f"{ADMIN}/signin", data={"csrf": token, "password": ADMIN_PASSWORD},
                              headers={"X-Forwarded-Proto": "https"}, follow_redirects=False)
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("ankihost_admin="))
    assert "; Secure" in cookie


def test_overview_shows_every_user_and_the_server(admin: Site):
    admin.add_user("carol", "pw-carol", quota_mb="5")
    admin.device_key("carol", "pw-carol", client="anki,26.9.3 (abc),linux")
    admin.app.accounts.synced("carol", "ok", "anki,26.9.3 (abc),linux", "127.0.0.1")
    page = admin.admin("")
    assert page.status_code == 200
    for text in ("alice", "bob", "carol", "env", "store", "anki,26.9.3 (abc),linux", "of 5.0 MB",
                 "shared login", "ankihost 0.1.0", "Disk free", "Up for"):
        assert text in page.text, text


def test_recent_errors_are_shown(admin: Site):
    logging.getLogger("ankihost.test").error("the disk <b>is</b> on fire")
    page = admin.admin("")
    assert "the disk &lt;b&gt;is&lt;/b&gt; on fire" in page.text


def test_add_user_then_it_can_sync(admin: Site):
    admin.add_user("dave", "pw-dave")
    assert admin.app.accounts.by_name("dave") is not None
    assert admin.sync_login("dave", "pw-dave").status_code == 200
    page = admin.admin("user?name=dave")
    assert "User dave added" in page.text and "anki,26.9.3 (test),linux" in page.text
    assert "User dave added" not in admin.admin("user?name=dave").text  # shown once


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"name": "erin", "password": "a", "again": "b"}, 400, "differ"),
        ({"name": "erin", "password": "", "again": ""}, 400, "password is missing"),
        ({"name": "", "password": "a", "again": "a"}, 400, "name is missing"),
        ({"name": " erin", "password": "a", "again": "a"}, 400, "starts or ends with a space"),
        ({"name": "a/b", "password": "a", "again": "a"}, 400, "contains"),
        ({"name": "ALICE", "password": "a", "again": "a"}, 409, "already exists"),
        ({"name": "erin", "password": "a", "again": "a", "quota_mb": "lots"}, 400, "whole number"),
        ({"name": "erin", "password": "a", "again": "a", "quota_mb": "0"}, 400, "at least 1"),
        ({"name": "erin", "password": "x" * 1025, "again": "x" * 1025}, 400, "longer than 1024"),
    ],
)
def test_add_user_refusals_change_nothing(admin: Site, fields, status, message):
    before = sorted(admin.app.accounts.names())
    response = admin.admin_post("add", **fields)
    assert response.status_code == status and message in response.text
    assert sorted(admin.app.accounts.names()) == before


def test_revoke_one_device_then_all(admin: Site):
    admin.add_user("frank", "pw-frank")
    keys = [admin.device_key("frank", "pw-frank") for _ in range(3)]
    first, *others = admin.devices("frank")
    response = admin.admin_post("revoke", name="frank", device=first)
    assert response.status_code == 303 and response.headers["location"] == "user?name=frank"
    assert admin.devices("frank") == others
    assert admin.meta(keys[0]).status_code == 403 and admin.meta(keys[1]).status_code == 200
    assert admin.admin_post("revoke", name="frank", all="1").status_code == 303
    assert admin.devices("frank") == []
    assert admin.meta(keys[2]).status_code == 403


def test_revoke_refusals(admin: Site):
    admin.add_user("gina", "pw-gina")
    admin.device_key("gina", "pw-gina")
    assert admin.admin_post("revoke", name="gina").status_code == 400
    assert admin.admin_post("revoke", name="gina", device="000000000000").status_code == 404
    assert admin.admin_post("revoke", name="nobody", all="1").status_code == 404
    response = admin.admin_post("revoke", name="alice", all="1")  # SYNC_USERn: one shared login
    assert response.status_code == 400 and "SYNC_USERn" in response.text
    assert len(admin.devices("gina")) == 1


def test_set_password_and_quota(admin: Site):
    admin.add_user("hank", "old-pw")
    admin.device_key("hank", "old-pw")
    assert admin.admin_post("passwd", name="hank", password="a", again="b").status_code == 400
    assert admin.sync_login("hank", "old-pw").status_code == 200
    assert admin.admin_post("passwd", name="hank", password="new-pw", again="new-pw").status_code == 303
    assert admin.devices("hank") == []
    assert admin.sync_login("hank", "old-pw").status_code == 403
    assert admin.sync_login("hank", "new-pw").status_code == 200
    assert admin.admin_post("quota", name="hank", quota_mb="12").status_code == 303
    assert admin.app.accounts.by_name("hank").quota_bytes == 12 * 1024 * 1024
    assert 'value="12"' in admin.admin("user?name=hank").text
    assert admin.admin_post("quota", name="hank", quota_mb="-3").status_code == 400
    assert admin.admin_post("quota", name="hank", quota_mb="").status_code == 303
    assert admin.app.accounts.by_name("hank").quota_bytes is None


def test_env_users_cannot_be_changed_here(admin: Site):
    page = admin.admin("user?name=alice")
    assert "SYNC_USERn" in page.text and 'action="passwd"' not in page.text
    for form, fields in (("passwd", {"password": "x", "again": "x"}), ("quota", {"quota_mb": "3"}),
                         ("remove", {"confirm": "alice"})):
        response = admin.admin_post(form, name="alice", **fields)
        assert response.status_code == 400 and "SYNC_USERn" in response.text
    assert admin.sync_login("alice", "secret").status_code == 200


def test_remove_needs_the_name_typed(admin: Site):
    admin.add_user("ivan", "pw-ivan")
    admin.device_key("ivan", "pw-ivan")
    folder = admin.app.admin.folder.user("ivan").root
    folder.mkdir(parents=True, exist_ok=True)
    for confirm in ("", "IVAN", "ivan "):
        response = admin.admin_post("remove", name="ivan", confirm=confirm)
        assert response.status_code == 400 and "type their name" in response.text
    assert admin.app.accounts.by_name("ivan") is not None
    assert admin.admin_post("remove", name="ivan", confirm="ivan").status_code == 303
    assert admin.app.accounts.by_name("ivan") is None and folder.exists()
    assert "User ivan removed" in admin.admin("").text
    assert admin.admin("user?name=ivan").status_code == 404
    admin.add_user("jane", "pw-jane")
    jane = admin.app.admin.folder.user("jane").root
    jane.mkdir(parents=True, exist_ok=True)
    assert admin.admin_post("remove", name="jane", confirm="jane", delete_data="1").status_code == 303
    assert not jane.exists()


def test_unknown_user_and_page(admin: Site):
    assert admin.admin("user?name=nobody").status_code == 404
    assert admin.admin("user").status_code == 400
    assert admin.admin("no-such-page").status_code == 404
    response = admin.admin("user@x")  # not even a page name: still "no such page", pages are on
    assert response.status_code == 404 and "Admin pages are off" not in response.text
    response = admin.admin("revoke")
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_csrf_is_checked_on_every_form(admin: Site):
    admin.add_user("kim", "pw-kim")
    admin.device_key("kim", "pw-kim")
    forms = (("revoke", {"name": "kim", "all": "1"}), ("passwd", {"name": "kim", "password": "x", "again": "x"}),
             ("quota", {"name": "kim", "quota_mb": "1"}), ("remove", {"name": "kim", "confirm": "kim"}),
             ("add", {"name": "lee", "password": "x", "again": "x"}), ("signout", {}))
    for page, fields in forms:
        for token in ("", "forged-token-" + "x" * 30):
            response = admin.admin_post(page, csrf=token, **fields)
            assert response.status_code == 403, (page, token)
    response = admin.http.post(f"{ADMIN}/quota", data={"name": "kim", "quota_mb": "1"}, follow_redirects=False)
    assert response.status_code == 403
    assert len(admin.devices("kim")) == 1 and admin.app.accounts.by_name("kim").quota_bytes is None
    assert admin.app.accounts.by_name("lee") is None and admin.admin("").status_code == 200


def test_expired_session(admin: Site):
    sessions = admin.app.admin_app.pages.sessions
    token = csrf_of(admin.admin("add").text)
    now = sessions.clock()
    sessions.clock = lambda: now + 31 * 60
    response = admin.admin_post("add", csrf=token, name="mia", password="x", again="x")
    assert response.status_code == 403 and "session ended" in response.text
    assert admin.app.accounts.by_name("mia") is None
    assert admin.admin("", follow_redirects=False).status_code == 303


def test_sign_out(admin: Site):
    token = csrf_of(admin.admin("").text)
    response = admin.admin_post("signout", csrf=token)
    assert response.status_code == 303 and "Max-Age=0" in response.headers["set-cookie"]
    assert admin.admin("", follow_redirects=False).status_code == 303


def test_bad_form_encodings_change_nothing(admin: Site):
    token = csrf_of(admin.admin("add").text)
    url = f"{ADMIN}/add"
    cases = [
        (f"csrf={token}&name=n%FF%FE&password=x&again=x".encode(), "application/x-www-form-urlencoded", 400),
        (f"csrf={token}&name=nn&password=x&again=x&name=mm".encode(), "application/x-www-form-urlencoded", 400),
        (f"csrf={token}&name={'n' * 3000}&password=x&again=x".encode(), "application/x-www-form-urlencoded", 400),
        (f"csrf={token}&name=nn&password=x&again=x&q={'z' * 70000}".encode(), "application/x-www-form-urlencoded", 413),
        (b"\xff\xfe\x00", "application/x-www-form-urlencoded", 400),
        (f'{{"csrf": "{token}", "name": "nn"}}'.encode(), "application/json", 415),
        ("&".join(f"f{i}=1" for i in range(40)).encode(), "application/x-www-form-urlencoded", 400),
    ]
    for body, content_type, status in cases:
        response = admin.http.post(url, content=body, headers={"content-type": content_type}, follow_redirects=False)
        assert response.status_code == status, (body[:60], response.text)
    assert sorted(admin.app.accounts.names()) == ["alice", "bob"]
    assert admin.admin("user?name=%FF").status_code == 400


def test_html_in_names_and_client_versions_is_escaped(admin: Site):
    name = '<img src=x onerror=alert(1)>"&'
    admin.add_user(name, "pw")
    client = "<script>alert('c')</script>,1,linux"
    admin.device_key(name, "pw", client=client)
    admin.app.accounts.synced(name, "ok", client, "127.0.0.1")
    for page in ("", "user?name=" + name.replace("&", "%26").replace(" ", "%20"), "audit"):
        html = admin.admin(page).text
        assert "<img src=x" not in html and "<script>" not in html, page
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, page


def test_audit_log_newest_first_and_filtered(admin: Site):
    admin.add_user("nora", "pw")
    admin.add_user("otto", "pw")
    admin.admin_post("quota", name="nora", quota_mb="3")
    page = admin.admin("audit").text
    assert page.index("account.quota_set") < page.index("account.added")
    assert "admin page" in page
    nora = admin.admin("audit?user=nora").text
    assert "account.quota_set" in nora and "otto" not in nora.split("<table", 1)[1]


def test_the_admin_password_is_never_shown(admin: Site, caplog):
    caplog.set_level(logging.DEBUG)
    admin.add_user("pat", "pw")
    for page in ("", "user?name=pat", "add", "audit", "metrics"):
        assert ADMIN_PASSWORD not in admin.admin(page).text
    assert ADMIN_PASSWORD not in caplog.text


def test_an_unexpected_failure_is_a_500_page_and_a_recent_error(admin: Site):
    admin.app.accounts.store.close()  # the audit query now fails inside the store
    response = admin.admin("audit")
    assert response.status_code == 500 and "Server error" in response.text
    assert "Traceback" not in response.text
    assert "internal error on the admin page &#39;audit&#39;" in admin.admin("").text
