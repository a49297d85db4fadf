"""The deployment sub-commands as a user runs them: `ankihost tls self-signed` and the
`--help` of both new commands."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
from cryptography import x509

from tests.support.server import REPO_ROOT

pytestmark = pytest.mark.e2e


def _ankihost(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ankihost", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_tls_self_signed_writes_the_files_and_refuses_to_overwrite_them(tmp_path):
    out = tmp_path / "tls"
    made = _ankihost("tls", "self-signed", "--host", "anki.home.arpa", "--ip", "192.168.1.10", "--ip", "::1",
                     "--out", str(out), env={"SYNC_PORT": "27701"})
    assert made.returncode == 0, made.stderr
    assert "https://anki.home.arpa:27701/" in made.stdout
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600}
    leaf = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v) for v in sans.get_values_for_type(x509.IPAddress)] == ["192.168.1.10", "::1"]
    again = _ankihost("tls", "self-signed", "--host", "anki.home.arpa", "--out", str(out))
    assert again.returncode == 1 and "--force" in again.stderr
    assert _ankihost("tls", "self-signed", "--host", "anki.home.arpa", "--out", str(out), "--force").returncode == 0


def test_bad_arguments_are_named():
    done = _ankihost("tls", "self-signed", "--host", "x.example", "--ip", "300.1.1.1", "--out", "/nonexistent/x")
    assert done.returncode == 1 and "--ip '300.1.1.1' is not an IP address" in done.stderr
    missing = _ankihost("tls", "self-signed", "--out", "/tmp/x")
    assert missing.returncode == 2 and "--host" in missing.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (("healthcheck", "--help"), "GET /health"),
    (("tls", "self-signed", "--help"), "--ip ADDR"),
    (("--help",), "healthcheck"),
])
def test_help_describes_the_commands(args, expected):
    done = _ankihost(*args)
    assert done.returncode == 0 and expected in done.stdout
