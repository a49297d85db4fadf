"""``python -m ankihost hash-password`` makes hashes both servers accept.

The password is piped in (stdin is not a TTY, as in ``echo pw | ...``); the
tool prints one PHC line ``$pbkdf2-sha256$i=<n>,l=32$<salt>$<hash>``. With
``PASSWORDS_HASHED=1`` and ``SYNC_USER1=user:<that line>``, the real client
must log in to ankihost and to the official server, wrong passwords must be
refused by both, and both must hand out the same host key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import subprocess
import sys

import pytest

from tests.support.client import SyncClient, is_auth_error
from tests.support.server import REPO_ROOT, SyncServer

pytestmark = pytest.mark.e2e

USER = "carol"
PASSWORD = "pä ss wörd:42"
PHC_RE = re.compile(r"^\$pbkdf2-sha256\$i=(\d+),l=32\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


def hash_password(password: str) -> str:
    """Run the CLI as a user would: ``echo <password> | python -m ankihost hash-password``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "PASSWORDS_HASHED"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "ankihost", "hash-password"],
        input=(password + "\n").encode(),
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    error = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"hash-password failed ({proc.returncode}): {error}"
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1, f"expected one line on stdout, got {lines!r}"
    return lines[0]


def _b64decode(text: str) -> bytes:
    """PHC 'B64': standard alphabet, no padding."""
    return base64.b64decode(text + "=" * (-len(text) % 4))


def test_hash_is_a_pbkdf2_phc_string() -> None:
    phc = hash_password(PASSWORD)
    match = PHC_RE.match(phc)
    assert match, f"not a PHC pbkdf2-sha256 string: {phc!r}"
    iterations, salt, digest = int(match[1]), _b64decode(match[2]), _b64decode(match[3])
    assert iterations >= 10_000 and len(salt) >= 8 and len(digest) == 32
    expected = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, iterations, 32)
    assert hmac.compare_digest(digest, expected), "hash does not verify the password (trailing newline kept?)"
    assert hash_password(PASSWORD) != phc, "two hashes of one password must use different salts"


def test_both_servers_accept_the_hash() -> None:
    phc = hash_password(PASSWORD)
    env = {"PASSWORDS_HASHED": "1"}
    hkeys = {}
    for kind in ("ankihost", "official"):
        with SyncServer(kind, [(USER, phc)], env=env) as server, server.log_on_failure():
            client = SyncClient(server, USER, PASSWORD, name=f"hash-{kind}")
            try:
                hkeys[kind] = client.login()
                for wrong in ("wrong", PASSWORD + "x", phc):
                    with pytest.raises(Exception) as info:
                        client.login(wrong)
                    assert is_auth_error(info.value), f"{kind}: {wrong!r} not refused as auth: {info.value!r}"
            finally:
                client.cleanup()
    assert hkeys["ankihost"] == hkeys["official"]
