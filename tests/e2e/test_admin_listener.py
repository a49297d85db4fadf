"""The admin listener in a real server process: start-up refusals, JSON logs of a real sync,
and a clean stop of both listeners on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.support.client import SyncClient, is_auth_error
from tests.support.server import REPO_ROOT, SyncServer, free_port

pytestmark = pytest.mark.e2e


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "ANKIHOST_"))}
    return subprocess.run([sys.executable, "-m", "ankihost"], env={**clean, **env}, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_admin_port_in_use_stops_start_up_before_the_data_folder(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = start({"SYNC_BASE": str(tmp_path), "SYNC_USER1": "a:b", "SYNC_HOST": "127.0.0.1",
                        "SYNC_PORT": "0", "ANKIHOST_ADMIN_PASSWORD": "admin-secret",
                        "ANKIHOST_ADMIN_PORT": str(port)})
    assert result.returncode == 1 and "ANKIHOST_ADMIN_PORT" in result.stderr
    assert "Traceback" not in result.stderr and "admin-secret" not in result.stderr + result.stdout
    assert not (tmp_path / ".ankihost").exists()


def test_both_admin_password_settings_stop_start_up(tmp_path):
    secret = tmp_path / "admin"
    secret.write_text("from-file")
    result = start({"SYNC_BASE": str(tmp_path), "SYNC_USER1": "a:b", "ANKIHOST_ADMIN_PASSWORD": "x",
                    "ANKIHOST_ADMIN_PASSWORD_FILE": str(secret)})
    assert result.returncode == 1 and "ANKIHOST_ADMIN_PASSWORD_FILE" in result.stderr


def test_json_logs_of_a_real_sync_and_a_clean_stop(clients: dict[str, SyncClient]):
    admin_port = free_port()
    env = {"ANKIHOST_LOG_FORMAT": "json", "ANKIHOST_ADMIN_PASSWORD": "admin-pw",
           "ANKIHOST_ADMIN_PORT": str(admin_port)}
    with SyncServer("ankihost", [("alice", "alice-pw")], env=env) as server, server.log_on_failure():
        client = clients["A"] = SyncClient(server, "alice", "alice-pw", name="A")
        note = client.col.new_note(client.col.models.by_name("Basic"))
        note["Front"] = "x"
        client.col.add_note(note, 1)
        assert client.sync().action == "upload"
        wrong = clients["W"] = SyncClient(server, "alice\n{\"forged\": 1}", "nope", name="W")
        with pytest.raises(Exception) as refused:
            wrong.login()
        assert is_auth_error(refused.value)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as response:
            assert response.status == 200
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        for port in (server.port, admin_port):
            with pytest.raises(urllib.error.URLError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        lines = [line for line in server.log_text().splitlines() if line and not line.startswith("=====")]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    requests = [e for e in entries if e["logger"] == "ankihost.request" and "target" in e]
    upload = next(e for e in requests if e["target"] == "/sync/upload")
    assert (upload["method"], upload["user"], upload["status"]) == ("POST", "alice", 200)
    assert upload["client"].startswith("26.09.3,") and isinstance(upload["ms"], int)
    audit = [e for e in entries if e["logger"] == "ankihost.audit"]
    failed = next(e for e in audit if e["event"] == "login.failed")
    assert failed["user"] == 'alice\\n{"forged": 1}' and "forged" not in [k for e in entries for k in e]
    assert any(e["message"] == "shutdown complete" for e in entries)
    assert not any(e["target"] == "/admin/metrics" for e in requests)  # scrapes are not logged
