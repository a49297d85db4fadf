"""The TLS context from PEM files: checks with clear errors, and renewal by CertificateStore."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from ankihost.config import ConfigError, Settings
from ankihost.tls.context import CertificateStore, TlsFiles, check_files, load_context
from tests.support.certs import PrivateCA


def _files(**env: str) -> TlsFiles | None:
    settings = Settings.from_env({"HOME": "/home/x", **env})
    return TlsFiles.from_settings(settings.tls_cert, settings.tls_key)


def test_the_settings_need_both_or_neither(tmp_path: Path) -> None:
    assert _files() is None
    files = _files(ANKIHOST_TLS_CERT="~/c.pem", ANKIHOST_TLS_KEY="/k.pem")
    assert files is not None and files.cert == Path("~/c.pem").expanduser()
    with pytest.raises(ConfigError, match="ANKIHOST_TLS_CERT is not set"):
        _files(ANKIHOST_TLS_KEY="/k.pem")


def test_context_speaks_tls_1_2_and_up_with_the_chain(tmp_path: Path) -> None:
    ca = PrivateCA.create(tmp_path / "ca")
    issued = ca.issue(tmp_path / "a", ["sync.example"], ips=["192.0.2.7"])
    context, info = load_context(TlsFiles(issued.cert, issued.key))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert info.names == ("DNS:sync.example", "IP:192.0.2.7") and info.chain_length == 2


def test_expired_certificate_is_refused(tmp_path: Path) -> None:
    ca = PrivateCA.create(tmp_path / "ca")
    old = ca.issue(tmp_path / "a", ["x"], days=-1)
    with pytest.raises(ConfigError, match="ANKIHOST_TLS_CERT=.*expired on"):
        check_files(TlsFiles(old.cert, old.key))


def test_store_swaps_in_renewed_files_and_keeps_the_old_ones_on_a_bad_renewal(tmp_path: Path) -> None:
    ca = PrivateCA.create(tmp_path / "ca")
    first = ca.issue(tmp_path / "live", ["x"])
    store = CertificateStore(TlsFiles(first.cert, first.key))
    served = store.context
    assert not store.check() and store.current is served
    second = ca.issue(tmp_path / "new", ["x"])
    os.replace(second.cert, first.cert)  # half a renewal: the key does not match yet
    assert not store.check() and store.current is served
    os.replace(second.key, first.key)
    assert store.check() and store.current is not served and store.loads == 2
    assert store.context is served  # the listener's context stays; the SNI callback switches
