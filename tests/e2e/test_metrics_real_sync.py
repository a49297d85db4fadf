"""/metrics against real syncs: a real server process, the real Anki client syncing (full
upload, full download, normal syncs, media, a wrong password, an upload over quota), then a
scrape parsed with Prometheus' own parser whose counts must match what was done."""

from __future__ import annotations

import os
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounts import add_user
from tests.support.client import SyncClient, is_auth_error
from tests.support.content import build_rich_collection
from tests.support.server import SyncServer, free_port

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "alice-pw"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def count(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def note(client: SyncClient, text: str) -> None:
    new = client.col.new_note(client.col.models.by_name("Basic"))
    new["Front"], new["Back"] = text, "back"
    client.col.add_note(new, 1)


def test_metrics_count_real_syncs(clients: dict[str, SyncClient]) -> None:
    admin_port = free_port()
    env = {"ANKIHOST_ADMIN_PASSWORD": "admin-pw", "ANKIHOST_ADMIN_PORT": str(admin_port)}
    with SyncServer("ankihost", [(USER, PASSWORD)], env=env) as server, server.log_on_failure():
        a = clients["A"] = SyncClient(server, USER, PASSWORD, name="A")
        build_rich_collection(a.col, notes=200, reviews=30)
        (a.media_dir / "a.txt").write_bytes(b"media of a" * 100)
        assert a.sync().action == "upload"
        a.sync_media()
        b = clients["B"] = SyncClient(server, USER, PASSWORD, name="B")
        assert b.sync().action == "download"
        b.sync_media()
        for round_ in range(2):
            note(a, f"from a {round_}")
            assert a.sync().action == "normal"
            assert b.sync().action == "normal"
        wrong = clients["W"] = SyncClient(server, USER, "not-the-password", name="W")
        with pytest.raises(Exception) as refused:
            wrong.login()
        assert is_auth_error(refused.value)

        add_user(server, "quinn", "quinn-pw", quota_mb=1)
        q = clients["Q"] = SyncClient(server, "quinn", "quinn-pw", name="Q")
        build_rich_collection(q.col, notes=6000, reviews=10)
        assert os.path.getsize(q.path) > 1024 * 1024
        with pytest.raises(Exception, match="quota"):
            q.sync()

        samples = scrape(admin_port)
    assert count(samples, "ankihost_logins_total", surface="sync", result="ok") == 3
    assert count(samples, "ankihost_logins_total", surface="sync", result="failed") == 1
    assert count(samples, "ankihost_syncs_total", kind="full_upload", result="ok") == 1
    assert count(samples, "ankihost_syncs_total", kind="full_upload", result="refused") == 1
    assert count(samples, "ankihost_full_uploads_refused_total", reason="quota") == 1
    assert count(samples, "ankihost_syncs_total", kind="full_download", result="ok") == 1
    assert count(samples, "ankihost_syncs_total", kind="normal", result="ok") == 4
    assert count(samples, "ankihost_requests_total", endpoint="/sync/finish", method="POST", status="200") == 4
    assert count(samples, "ankihost_syncs_total", kind="media", result="ok") == 2
    assert count(samples, "ankihost_syncs_total", kind="normal", result="failed") == 0
    assert count(samples, "ankihost_users", source="env") == 1
    assert count(samples, "ankihost_users", source="store") == 1
    assert count(samples, "ankihost_devices") == 1  # quinn's; alice's devices share her key
    assert count(samples, "ankihost_sync_sessions_active") == 0
    assert count(samples, "ankihost_storage_bytes", kind="collection") > 100_000
    assert count(samples, "ankihost_storage_bytes", kind="media") == 1000
    assert count(samples, "ankihost_received_bytes_total", area="sync") > 50_000
    # the full download is streamed (no Content-Length): counted as sent; the rest is ~3 KB
    assert count(samples, "ankihost_sent_bytes_total", area="sync") > 20_000
    assert count(samples, "ankihost_received_bytes_total", area="msync") > 0
    assert count(samples, "ankihost_request_duration_seconds_count", endpoint="/sync/upload") == 2
