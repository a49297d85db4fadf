"""A small private CA and a server certificate it signs, for HTTPS without a public name.

`issue()` writes `ca.crt`/`ca.key` (made once, reused afterwards so devices keep trusting it)
and `server.crt` (the server certificate followed by the CA) / `server.key` into one folder;
keys are 0600 and nothing is overwritten unless asked. It does not serve TLS (see
`tls/context.py`) and does not install the CA anywhere (see `tls/instructions.py`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ankihost.tls.instructions import describe

# The CA outlives several server certificates, so renewing one needs no new trust on devices.
CA_VALIDITY_DAYS = 10 * 365
# Apple platforms refuse TLS server certificates valid for more than 825 days.
SERVER_VALIDITY_DAYS = 820
# Backdating covers devices whose clock runs a little behind the server's.
BACKDATE = datetime.timedelta(hours=1)
MAX_DNS_NAME_CHARS = 253
DEFAULT_PORT = 8080  # SYNC_PORT's default, for the printed URL

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"

_DNS_NAME = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CertificateSetupError(Exception):
    """The certificate files cannot be made as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServerNames:
    """What the server certificate is for: DNS names and IP addresses (its SANs)."""

    dns: tuple[str, ...]
    ips: tuple[IpAddress, ...]

    @property
    def first(self) -> str:
        return self.dns[0] if self.dns else str(self.ips[0])


@dataclass(frozen=True)
class IssuedFiles:
    folder: Path
    names: ServerNames
    ca_reused: bool
    ca_name: str  # the CA's common name, as devices show it
    ca_fingerprint: str  # SHA-256 of the CA certificate, "AB:CD:…", to compare on a device
    server_not_after: datetime.datetime

    @property
    def ca_cert(self) -> Path:
        return self.folder / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.folder / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.folder / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.folder / SERVER_KEY


def parse_names(host: str, ips: Sequence[str]) -> ServerNames:
    """`--host` (a DNS name, or an IP address) and `--ip` values, checked and de-duplicated."""
    host_ip = _ip_or_none(host)
    addresses = [host_ip] if host_ip else []
    for value in ips:
        address = _ip_or_none(value)
        if address is None:
            raise CertificateSetupError(f"--ip {value!r} is not an IP address")
        if address not in addresses:
            addresses.append(address)
    return ServerNames(() if host_ip else (_dns_name(host),), tuple(addresses))


def _ip_or_none(value: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _dns_name(value: str) -> str:
    name = value.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        raise CertificateSetupError(f"--host {value!r} is not a valid DNS name") from None
    if len(name) > MAX_DNS_NAME_CHARS or not _DNS_NAME.fullmatch(name):
        raise CertificateSetupError(f"--host {value!r} is not a valid DNS name")
    return name


def issue(folder: Path, names: ServerNames, *, overwrite: bool = False,
          now: datetime.datetime | None = None) -> IssuedFiles:
    """Make (or reuse) the CA in `folder` and a new server certificate for `names`."""
    now = now or datetime.datetime.now(datetime.UTC)
    _check_server_files_free(folder, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    loaded = _load_ca(folder)
    ca_key, ca_cert = loaded or _new_ca(names, now)
    if loaded is None:
        _write(folder / CA_KEY, _key_pem(ca_key), private=True, overwrite=False)
        _write(folder / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), private=False, overwrite=False)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _server_certificate(server_key, ca_key, ca_cert, names, now)
    chain = server_cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    _write(folder / SERVER_KEY, _key_pem(server_key), private=True, overwrite=overwrite)
    _write(folder / SERVER_CERT, chain, private=False, overwrite=overwrite)
    return IssuedFiles(folder, names, loaded is not None, common_name(ca_cert), fingerprint(ca_cert),
                       server_cert.not_valid_after_utc)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _check_server_files_free(folder: Path, overwrite: bool) -> None:
    existing = [name for name in (SERVER_CERT, SERVER_KEY) if (folder / name).exists()]
    if existing and not overwrite:
        raise CertificateSetupError(
            f"{', '.join(str(folder / name) for name in existing)} already exist(s); "
            "pass --force to replace the server certificate (the CA is kept either way)"
        )


def _load_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if not cert_path.exists() and not key_path.exists():
        return None
    if not (cert_path.exists() and key_path.exists()):
        missing = key_path if cert_path.exists() else cert_path
        raise CertificateSetupError(f"{missing} is missing; move the other CA file away to make a new CA")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise CertificateSetupError(f"cannot read the existing CA in {folder}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertificateSetupError(f"{key_path} is not the key of {cert_path}")
    return key, cert


def _new_ca(names: ServerNames, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ankihost"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"ankihost CA for {names.first} ({now:%Y-%m-%d})"),
    ])
    cert = (
        _base_builder(subject, subject, key.public_key(), now, CA_VALIDITY_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_certificate(key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey,
                        ca_cert: x509.Certificate, names: ServerNames, now: datetime.datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names.first)])
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in names.dns]
    sans += [x509.IPAddress(address) for address in names.ips]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        _base_builder(subject, ca_cert.subject, key.public_key(), now, SERVER_VALIDITY_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _base_builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
                  now: datetime.datetime, days: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool, overwrite: bool) -> None:
    """Create `path` with its final mode from the start (a key is never readable by others,
    even for a moment); with `overwrite`, a temp file renamed over the old one."""
    mode = 0o600 if private else 0o644
    target = path.with_name(f".{path.name}.new") if overwrite else path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        if overwrite:
            target.unlink(missing_ok=True)
        fd = os.open(target, flags, mode)
    except FileExistsError:
        raise CertificateSetupError(f"{path} already exists") from None
    except OSError as exc:
        raise CertificateSetupError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)  # the umask may have taken bits away from a public file
        out.write(data)
    if overwrite:
        os.replace(target, path)


def self_signed_command(folder: Path, host: str, ips: Sequence[str], *, force: bool = False,
                        port: int | None = None) -> int:
    """`ankihost tls self-signed --host NAME [--ip ADDR]… --out DIR [--force] [--port N]`: make
    the files and print how to use them (the URL with `port`, by default SYNC_PORT's);
    exit status 0, or 1 with the reason on stderr."""
    try:
        files = issue(folder, parse_names(host, ips), overwrite=force)
    except CertificateSetupError as exc:
        print(f"ankihost: {exc}", file=sys.stderr)
        return 1
    print(describe(files, port if port is not None else _sync_port()))
    return 0


def _sync_port() -> int:
    raw = os.environ.get("SYNC_PORT", "")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 65536 else DEFAULT_PORT
