"""Test certificates made with `cryptography`: a private CA and server certificates it signs.

    ca = PrivateCA.create(folder)                      # ca.pem (trust this), its key in memory
    files = ca.issue(folder / "a", ["localhost"], ips=["127.0.0.1"])   # ServerFiles(cert, key)
    files.cert: the server certificate followed by the CA certificate (a chain, as certbot writes)

Variants for bad-input tests: ``days=-1`` (expired), ``passphrase=b"..."`` (encrypted key),
``ca.issue(..., key_of=other)`` to pair a certificate with another certificate's key.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ServerFiles:
    cert: Path
    key: Path
    certificate: x509.Certificate

    @property
    def fingerprint(self) -> bytes:
        return self.certificate.fingerprint(hashes.SHA256())

    def env(self) -> dict[str, str]:
        return {"ANKIHOST_TLS_CERT": str(self.cert), "ANKIHOST_TLS_KEY": str(self.key)}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class PrivateCA:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    pem_path: Path

    @classmethod
    def create(cls, folder: Path, name: str = "ankihost test CA") -> PrivateCA:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        pem = folder / "ca.pem"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, pem)

    def issue(self, folder: Path, names: list[str], ips: list[str] = (), *,  # type: ignore[assignment]
              days: int = 30, passphrase: bytes | None = None,
              key_of: ServerFiles | None = None) -> ServerFiles:
        """A server certificate (chain: it, then the CA) and its key, in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        start = _now() - datetime.timedelta(days=2)
        cert = (
            x509.CertificateBuilder().subject_name(_name(names[0] if names else ips[0]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(_now() + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
        pem = serialization.Encoding.PEM
        chain = cert.public_bytes(pem) + self.certificate.public_bytes(pem)
        cert_path.write_bytes(chain)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               encryption))
        if key_of is not None:
            key_path.write_bytes(key_of.key.read_bytes())
        key_path.chmod(0o600)
        return ServerFiles(cert_path, key_path, cert)
