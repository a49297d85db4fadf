"""The private CA and server certificate of `ankihost tls self-signed`: the chain verifies for
each name, the extensions are what clients (iOS included) require, a TLS handshake trusting
only the CA succeeds, keys are private and nothing is overwritten unless asked."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from ankihost.tls import instructions
from ankihost.tls.selfsigned import (
    SERVER_VALIDITY_DAYS,
    CertificateSetupError,
    issue,
    parse_names,
    self_signed_command,
)

HOST = "sync.example.org"


def _chain(folder: Path) -> tuple[x509.Certificate, list[x509.Certificate], x509.Certificate]:
    leaf, *rest = x509.load_pem_x509_certificates((folder / "server.crt").read_bytes())
    return leaf, rest, x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())


def _verify(folder: Path, name: x509.GeneralName) -> None:
    leaf, intermediates, ca = _chain(folder)
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(name)  # type: ignore[arg-type]
    verifier.verify(leaf, intermediates)


@pytest.fixture
def made(tmp_path: Path) -> Path:
    folder = tmp_path / "tls"
    issue(folder, parse_names(HOST, ["192.168.1.10", "fd00::5"]))
    return folder


def test_the_server_certificate_verifies_for_each_name_against_the_ca(made):
    _verify(made, x509.DNSName(HOST))
    _verify(made, x509.IPAddress(ipaddress.ip_address("192.168.1.10")))
    _verify(made, x509.IPAddress(ipaddress.ip_address("fd00::5")))
    with pytest.raises(VerificationError):
        _verify(made, x509.DNSName("other.example.org"))
    with pytest.raises(VerificationError):
        _verify(made, x509.IPAddress(ipaddress.ip_address("192.168.1.11")))


def test_a_certificate_from_another_ca_does_not_verify(made, tmp_path):
    other = tmp_path / "other"
    issue(other, parse_names(HOST, []))
    leaf, intermediates, _ = _chain(other)
    _, _, ca = _chain(made)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName(HOST)).verify(leaf, intermediates)


def test_the_extensions_are_what_clients_require(made):
    leaf, chain_rest, ca = _chain(made)
    assert chain_rest == [ca]  # server.crt is the full chain
    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_constraints.critical and ca_constraints.value.ca and ca_constraints.value.path_length == 0
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign and ca_usage.crl_sign
    leaf_constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert leaf_constraints.critical and not leaf_constraints.value.ca
    leaf_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert leaf_usage.critical and leaf_usage.value.digital_signature and not leaf_usage.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]  # iOS 13+ requires serverAuth
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [HOST]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.10"),
                                                         ipaddress.ip_address("fd00::5")]


def test_validity_fits_apples_limit_and_is_backdated(made):
    leaf, _, ca = _chain(made)
    now = datetime.datetime.now(datetime.UTC)
    assert leaf.not_valid_before_utc < now - datetime.timedelta(minutes=30)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert datetime.timedelta(days=365) < lifetime <= datetime.timedelta(days=825)
    assert leaf.not_valid_after_utc >= now + datetime.timedelta(days=SERVER_VALIDITY_DAYS - 1)
    assert ca.not_valid_after_utc > leaf.not_valid_after_utc + datetime.timedelta(days=365)


def _handshake(folder: Path, server_hostname: str, client: ssl.SSLContext) -> str:
    """A real TLS handshake over a socket pair: the server uses server.crt/server.key; returns
    the negotiated version, or raises the client's error."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(folder / "server.crt", folder / "server.key")
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(right, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(left, server_hostname=server_hostname) as tls:
            version = tls.version()
            tls.sendall(b"x")
    finally:
        left.close()
        thread.join(timeout=10)
        right.close()
    assert version is not None
    return version


@pytest.mark.parametrize("name", [HOST, "192.168.1.10", "fd00::5"])
def test_a_tls_client_trusting_only_the_ca_completes_a_handshake(made, name):
    client = ssl.create_default_context(cafile=made / "ca.crt")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        client.minimum_version = client.maximum_version = version
        assert _handshake(made, name, client) == {ssl.TLSVersion.TLSv1_2: "TLSv1.2"}.get(version, "TLSv1.3")


def test_a_client_without_the_ca_refuses_the_certificate(made):
    client = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(made, HOST, client)
    trusting = ssl.create_default_context(cafile=made / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(made, "other.example.org", trusting)


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_keys_are_private_and_certificates_readable_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        issue(tmp_path, parse_names(HOST, []))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"ca.key": 0o600, "server.key": 0o600, "ca.crt": 0o644, "server.crt": 0o644}
    key = serialization.load_pem_private_key((tmp_path / "server.key").read_bytes(), password=None)
    leaf, _, _ = _chain(tmp_path)
    assert key.public_key() == leaf.public_key()


def test_existing_server_files_are_kept_unless_forced_and_the_ca_is_reused(made):
    before = {p.name: p.read_bytes() for p in made.iterdir()}
    with pytest.raises(CertificateSetupError, match="--force"):
        issue(made, parse_names("new.example.org", []))
    assert {p.name: p.read_bytes() for p in made.iterdir()} == before
    files = issue(made, parse_names("new.example.org", []), overwrite=True)
    assert files.ca_reused
    assert (made / "ca.crt").read_bytes() == before["ca.crt"]  # devices keep trusting the same CA
    assert (made / "ca.key").read_bytes() == before["ca.key"]
    assert (made / "server.key").read_bytes() != before["server.key"]
    assert stat.S_IMODE((made / "server.key").stat().st_mode) == 0o600
    _verify(made, x509.DNSName("new.example.org"))
    assert sorted(p.name for p in made.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]


def test_a_half_present_or_mismatched_ca_is_refused(tmp_path):
    issue(tmp_path / "a", parse_names(HOST, []))
    issue(tmp_path / "b", parse_names(HOST, []))
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(CertificateSetupError, match="is not the key of"):
        issue(tmp_path / "a", parse_names(HOST, []), overwrite=True)
    (tmp_path / "b" / "ca.key").unlink()
    with pytest.raises(CertificateSetupError, match="ca.key is missing"):
        issue(tmp_path / "b", parse_names(HOST, []), overwrite=True)


@pytest.mark.parametrize(
    ("host", "ips", "message"),
    [
        ("bad_name.example.org", [], "--host 'bad_name.example.org' is not a valid DNS name"),
        ("-x.example.org", [], "not a valid DNS name"),
        ("a" * 64 + ".org", [], "not a valid DNS name"),
        (HOST, ["192.168.1.300"], "--ip '192.168.1.300' is not an IP address"),
        (HOST, ["sync.example.org"], "is not an IP address"),
    ],
)
def test_bad_names_are_refused_with_the_option_named(host, ips, message):
    with pytest.raises(CertificateSetupError, match=message.replace("(", r"\(")):
        parse_names(host, ips)


def test_names_are_normalised():
    names = parse_names("Sync.Example.ORG.", ["10.0.0.1", "10.0.0.1"])
    assert (names.dns, [str(ip) for ip in names.ips]) == (("sync.example.org",), ["10.0.0.1"])
    as_ip = parse_names("10.0.0.2", ["10.0.0.1"])
    assert as_ip.dns == () and [str(ip) for ip in as_ip.ips] == ["10.0.0.2", "10.0.0.1"]
    assert parse_names("bücher.example", []).dns == ("xn--bcher-kva.example",)


def test_an_ip_only_certificate_verifies_for_that_address(tmp_path):
    issue(tmp_path, parse_names("192.168.1.10", []))
    _verify(tmp_path, x509.IPAddress(ipaddress.ip_address("192.168.1.10")))
    leaf, _, _ = _chain(tmp_path)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == []


def test_the_command_prints_how_each_app_trusts_the_ca(tmp_path, capsys):
    assert self_signed_command(tmp_path / "tls", HOST, ["192.168.1.10"], port=27701) == 0
    out = capsys.readouterr().out
    ca = tmp_path / "tls" / "ca.crt"
    assert f"SSL_CERT_FILE={ca}" in out
    assert "Custom root certificate (PEM)" in out
    assert "Certificate Trust Settings" in out
    assert "https://sync.example.org:27701/" in out
    assert f"ANKIHOST_TLS_CERT={tmp_path / 'tls' / 'server.crt'}" in out
    fingerprint = x509.load_pem_x509_certificate(ca.read_bytes()).fingerprint(hashes.SHA256())
    assert fingerprint.hex(":").upper() in out
    assert self_signed_command(tmp_path / "tls", HOST, []) == 1
    assert "already exist" in capsys.readouterr().err


def test_the_url_brackets_ipv6_and_drops_port_443(made):
    files = issue(made, parse_names("fd00::5", []), overwrite=True)
    assert instructions.url(files, 443) == "https://[fd00::5]/"
    assert instructions.url(files, 8443) == "https://[fd00::5]:8443/"
