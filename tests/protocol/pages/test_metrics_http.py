"""/metrics in process: parsed with Prometheus' own parser; bounded labels; the token; sign-in
counts of all three surfaces; series per user only when asked for."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.protocol.pages.conftest import ADMIN, Site, make_site


def scrape(site: Site, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = site.http.get(f"{ADMIN}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_open_without_a_token_and_count_sign_ins(site: Site):
    assert site.sync_login("alice", "secret").status_code == 200
    assert site.sync_login("alice", "wrong").status_code == 403
    site.account_signin("bob", "hunter2")
    site.admin_signin("wrong")
    site.admin_signin()
    samples = scrape(site)
    assert value(samples, "ankihost_logins_total", surface="sync", result="ok") == 1
    assert value(samples, "ankihost_logins_total", surface="sync", result="failed") == 1
    assert value(samples, "ankihost_logins_total", surface="account", result="ok") == 1
    assert value(samples, "ankihost_logins_total", surface="admin", result="failed") == 1
    assert value(samples, "ankihost_logins_total", surface="admin", result="ok") == 1
    assert value(samples, "ankihost_requests_total", endpoint="/sync/hostKey", method="POST", status="403") == 1
    assert value(samples, "ankihost_users", source="env") == 2
    assert value(samples, "ankihost_received_bytes_total", area="sync") > 0
    assert value(samples, "ankihost_sent_bytes_total", area="account") > 0
    assert value(samples, "ankihost_request_duration_seconds_count", endpoint="/sync/hostKey") == 2
    assert value(samples, "ankihost_data_folder_free_bytes") > 0
    assert value(samples, "process_resident_memory_bytes") > 0


def test_throttled_logins_are_counted(site: Site):
    for _ in range(6):
        site.sync_login("alice", "wrong")
    samples = scrape(site)
    assert value(samples, "ankihost_logins_total", surface="sync", result="failed") == 5
    assert value(samples, "ankihost_logins_total", surface="sync", result="throttled") == 1


def test_labels_stay_bounded(site: Site):
    for i in range(5):
        site.http.post(f"/sync/made-up-{i}")
        site.http.request("PROPFIND", f"/whatever/{i}")
    samples = scrape(site)
    endpoints = {dict(labels).get("endpoint") for name, labels in samples if name == "ankihost_requests_total"}
    assert not any(e and "made-up" in e for e in endpoints) and "other" in endpoints
    assert value(samples, "ankihost_requests_total", endpoint="other", method="other", status="404") == 5
    assert not any(dict(labels).get("user") for _, labels in samples)


def test_a_token_is_asked_for_when_set(tmp_path: Path):
    for site in make_site(tmp_path / "base", ANKIHOST_METRICS_TOKEN="s3cret-token"):
        response = site.http.get(f"{ADMIN}/metrics")
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
        assert site.http.get(f"{ADMIN}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert scrape(site, Authorization="Bearer s3cret-token")
        assert site.http.post(f"{ADMIN}/metrics").status_code == 405


def test_series_per_user_when_asked_for(tmp_path: Path):
    for site in make_site(tmp_path / "base", ANKIHOST_METRICS_PER_USER="1"):
        site.sync_login("alice", "secret")
        site.sync_login("random-name-1", "x")
        site.meta(site.device_key("bob", "hunter2"))
        samples = scrape(site)
        users = {dict(labels).get("user") for name, labels in samples if "user" in dict(labels)}
        assert users == {"alice", "bob", "-"}
        assert value(samples, "ankihost_storage_bytes", kind="collection", user="bob") >= 0
        assert ("ankihost_storage_bytes", (("kind", "media"), ("user", "alice"))) in samples
