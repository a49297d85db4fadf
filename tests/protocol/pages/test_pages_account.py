"""The account page (`…/account/` on the sync listener) in process: sign-in through the sync
logins' gate, devices, password, storage; every refusal is a 4xx page with nothing changed,
and syncing goes on."""

from __future__ import annotations

import pytest

from tests.protocol.pages.conftest import Site, csrf_of


@pytest.fixture
def user(admin: Site) -> Site:
    """A store account `sam` (password pw-sam, quota 50 MB) with two devices, and `tess` with one."""
    admin.add_user("sam", "pw-sam", quota_mb="50")
    admin.add_user("tess", "pw-tess")
    for _ in range(2):
        admin.device_key("sam", "pw-sam", client="anki,26.9.3 (sam),android")
    admin.device_key("tess", "pw-tess")
    return admin


def test_sign_in_and_see_storage_devices_and_quota(user: Site):
    response = user.account_signin("sam", "pw-sam")
    assert (response.status_code, response.headers["location"]) == (303, "./")
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("ankihost_account="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path" not in cookie
    page = user.account()
    assert page.status_code == 200
    for text in ("sam", "of 50.0 MB", "anki,26.9.3 (sam),android", *user.devices("sam")):
        assert text in page.text
    assert user.devices("tess")[0] not in page.text
    assert len(user.devices("sam")) == 2  # signing in to the page made no device key
    assert "script" not in page.headers["content-security-policy"]


def test_account_without_a_slash_and_behind_a_proxy_prefix(user: Site):
    response = user.http.get("/account", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "account/")
    response = user.http.get("/anki/account/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "signin")
    token = csrf_of(user.http.get("/anki/account/signin").text)
    response = user.http.post("/anki/account/signin", data={"csrf": token, "name": "sam", "password": "pw-sam"},
                              follow_redirects=False)
    assert response.status_code == 303
    assert "sam" in user.http.get("/anki/account/").text
    assert user.http.get("/anki/account/static/pages.css").status_code == 200


def test_wrong_password_and_unknown_name_are_403(user: Site):
    for name, password in (("sam", "nope"), ("nobody", "pw-sam"), ("<b>x</b>", "pw")):
        response = user.account_signin(name, password)
        assert response.status_code == 403 and "Wrong name or password" in response.text
        assert "<b>x</b>" not in response.text
    assert user.account("", follow_redirects=False).status_code == 303
    failures = [e for e in user.app.accounts.store.audit("sam") if e.event == "login.failed"]
    assert len(failures) == 1 and "client=account page" in failures[0].detail


def test_sign_in_is_throttled_like_sync_logins(user: Site):
    for _ in range(5):
        assert user.account_signin("sam", "bad").status_code == 403
    response = user.account_signin("sam", "pw-sam")
    assert response.status_code == 429 and "Too many" in response.text
    assert user.sync_login("sam", "pw-sam").status_code == 429  # the same throttle
    assert user.sync_login("tess", "pw-tess").status_code == 200


def test_revoke_own_device(user: Site):
    keys = [user.device_key("sam", "pw-sam") for _ in range(1)]
    user.account_signin("sam", "pw-sam")
    first, second, third = user.devices("sam")
    response = user.account_post("revoke", device=third)
    assert response.status_code == 303
    assert user.devices("sam") == [first, second]
    assert user.meta(keys[0]).status_code == 403
    assert f"Device {third} is logged out" in user.account().text


def test_a_form_for_another_users_device_is_refused(user: Site):
    user.account_signin("sam", "pw-sam")
    theirs = user.devices("tess")[0]
    response = user.account_post("revoke", device=theirs)
    assert response.status_code == 404 and "no device" in response.text
    assert user.devices("tess") == [theirs]
    response = user.account_post("revoke", device=theirs, name="tess")  # a name field is ignored
    assert response.status_code in (400, 404) and user.devices("tess") == [theirs]


def test_change_password(user: Site):
    user.account_signin("sam", "pw-sam")
    response = user.account_post("password", current="wrong", new="n1", again="n1")
    assert response.status_code == 403 and "current password is wrong" in response.text
    response = user.account_post("password", current="pw-sam", new="n1", again="n2")
    assert response.status_code == 400 and "differ" in response.text
    assert user.sync_login("sam", "pw-sam").status_code == 200
    response = user.account_post("password", current="pw-sam", new="new-pw-sam", again="new-pw-sam")
    assert response.status_code == 303
    assert user.devices("sam") == []
    assert user.sync_login("sam", "pw-sam").status_code == 403
    assert user.sync_login("sam", "new-pw-sam").status_code == 200
    page = user.account()  # this session goes on
    assert page.status_code == 200 and "password is changed" in page.text
    assert ("account.password_changed", "account page") in [
        (e.event, e.actor) for e in user.app.accounts.store.audit("sam")]


def test_a_password_changed_elsewhere_ends_the_session(user: Site):
    user.account_signin("sam", "pw-sam")
    assert user.account().status_code == 200
    admin_token = csrf_of(user.admin("add").text)
    assert user.admin_post("passwd", csrf=admin_token, name="sam", password="x2", again="x2").status_code == 303
    assert user.account("", follow_redirects=False).status_code == 303
    assert user.admin_post("quota", csrf=admin_token, name="tess", quota_mb="9").status_code == 303
    user.account_signin("tess", "pw-tess")
    assert user.account().status_code == 200  # a quota change keeps tess signed in


def test_env_account_gets_explanations(user: Site):
    user.account_signin("alice", "secret")
    page = user.account()
    assert page.status_code == 200 and "share one login" in page.text and 'action="password"' not in page.text
    response = user.account_post("password", current="secret", new="x", again="x")
    assert response.status_code == 400 and "defined in the server" in response.text
    assert user.sync_login("alice", "secret").status_code == 200


def test_removed_account_ends_the_session(user: Site):
    user.account_signin("tess", "pw-tess")
    assert user.admin_post("remove", name="tess", confirm="tess").status_code == 303
    assert user.account("", follow_redirects=False).status_code == 303
    response = user.account_post("revoke", csrf="x" * 43, device="000000000000")
    assert response.status_code == 403


def test_csrf_and_methods(user: Site):
    user.account_signin("sam", "pw-sam")
    before = user.devices("sam")
    for token in ("", "x" * 43):
        assert user.account_post("revoke", csrf=token, device=before[0]).status_code == 403
        assert user.account_post("password", csrf=token, current="pw-sam", new="a", again="a").status_code == 403
    assert user.http.post("/account/revoke", data={"device": before[0]}, follow_redirects=False).status_code == 403
    assert user.devices("sam") == before
    response = user.account("revoke")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert user.account("nothing-here").status_code == 404


def test_expired_session(user: Site):
    user.account_signin("sam", "pw-sam")
    token = csrf_of(user.account().text)
    sessions = user.app.account_pages.sessions
    now = sessions.clock()
    sessions.clock = lambda: now + 12 * 3600 + 1
    before = user.devices("sam")
    response = user.account_post("revoke", csrf=token, device=before[0])
    assert response.status_code == 403 and "Sign in again" in response.text
    assert user.devices("sam") == before


def test_bad_input_is_a_clear_4xx_and_sync_goes_on(user: Site):
    user.account_signin("sam", "pw-sam")
    token = csrf_of(user.account().text)
    cases = [
        (f"csrf={token}&device=%C3%28".encode(), "application/x-www-form-urlencoded", 400),
        (f"csrf={token}&device={'d' * 5000}".encode(), "application/x-www-form-urlencoded", 400),
        (b"x=" + b"y" * 70000, "application/x-www-form-urlencoded", 413),
        (b"--b\r\n", "multipart/form-data; boundary=b", 415),
    ]
    for body, content_type, status in cases:
        response = user.http.post("/account/revoke", content=body, headers={"content-type": content_type},
                                  follow_redirects=False)
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
    assert len(user.devices("sam")) == 2
    assert user.sync_login("sam", "pw-sam").status_code == 200


def test_sign_out(user: Site):
    user.account_signin("sam", "pw-sam")
    response = user.account_post("signout")
    assert response.status_code == 303 and "Max-Age=0" in response.headers["set-cookie"]
    assert user.account("", follow_redirects=False).status_code == 303


def test_sync_routes_are_untouched(user: Site):
    response = user.http.post("/sync/account")
    assert response.status_code == 400 and response.text == "400"  # the sync surface's mapping
    assert user.http.get("/nothing").text == "404"
