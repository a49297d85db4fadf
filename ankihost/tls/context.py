"""The server's TLS context, built from ANKIHOST_TLS_CERT and ANKIHOST_TLS_KEY, and kept current.

`load_context` checks the PEM files first (readable, PEM, key matches the certificate, no
passphrase, not expired) and fails with a `ConfigError` naming the setting. `CertificateStore`
serves the context the listener was started with and swaps in a new one when the files change
(polled every few seconds, or at once on `check(force=True)`, e.g. on SIGHUP): new connections
get the new certificate, open ones keep theirs. Which certificate to use is decided here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ankihost.config import ConfigError

log = logging.getLogger("ankihost.tls")

# Settings (the integrator moves them into config.py's table): both set, or neither.
CERT_SETTING = "ANKIHOST_TLS_CERT"  # PEM: the server certificate first, then its chain
KEY_SETTING = "ANKIHOST_TLS_KEY"  # PEM: the private key, unencrypted

RELOAD_CHECK_SECS = 5.0  # how often the files are checked for a renewal
SETTLE_SECS = 1.0  # a change is read this long after it is seen: renewals write two files
EXPIRY_WARNING_DAYS = 14
ALPN_PROTOCOLS = ["http/1.1"]


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    @classmethod
    def from_settings(cls, cert: Path | None, key: Path | None) -> TlsFiles | None:
        """Both files, or None when neither is set; one without the other is an error."""
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            missing, given = (CERT_SETTING, KEY_SETTING) if cert is None else (KEY_SETTING, CERT_SETTING)
            raise ConfigError(f"{missing} is not set: {given} needs it (set both for HTTPS, or neither)")
        return cls(cert, key)

    def signature(self) -> tuple[tuple[int, ...], ...]:
        """What changes when either file is replaced or rewritten (missing file: empty)."""
        return tuple(_stat_signature(path) for path in (self.cert, self.key))


@dataclass(frozen=True)
class CertificateInfo:
    names: tuple[str, ...]
    not_after: datetime.datetime
    chain_length: int

    def describe(self) -> str:
        names = ", ".join(self.names) or "no subject alternative names"
        until = f"{self.not_after:%Y-%m-%d %H:%M}"
        return f"{names}; valid until {until} UTC; {self.chain_length} certificate(s) in the file"


def _stat_signature(path: Path) -> tuple[int, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}={path}: cannot read the file: {exc.strerror or exc}") from None


def _certificates(data: bytes, files: TlsFiles) -> list[x509.Certificate]:
    where = f"{CERT_SETTING}={files.cert}"
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(f"{where}: no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid PEM certificate: {exc}") from None


def _private_key(data: bytes, files: TlsFiles) -> PrivateKeyTypes:
    where = f"{KEY_SETTING}={files.key}"
    if b"ENCRYPTED" in data:
        raise ConfigError(f"{where}: the key is protected by a passphrase; ankihost needs it unencrypted "
                          f"(openssl pkey -in KEY -out KEY.plain, readable by ankihost only)")
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise ConfigError(f"{where}: no PEM private key in the file (expected -----BEGIN PRIVATE KEY-----)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{where}: the key is protected by a passphrase; ankihost needs it unencrypted") from None
    except (ValueError, exceptions.UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where}: not a usable PEM private key: {exc}") from None


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_files(files: TlsFiles, now: datetime.datetime | None = None) -> tuple[bytes, bytes, CertificateInfo]:
    """The cert and key bytes, checked; a `ConfigError` naming the setting if they are unusable."""
    cert_data, key_data = _read(files.cert, CERT_SETTING), _read(files.key, KEY_SETTING)
    chain = _certificates(cert_data, files)
    key = _private_key(key_data, files)
    leaf = chain[0]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise ConfigError(f"{KEY_SETTING}={files.key}: the key does not belong to the first certificate in "
                          f"{CERT_SETTING}={files.cert} (the server's own certificate must come first)")
    now = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        raise ConfigError(f"{CERT_SETTING}={files.cert}: the certificate expired on "
                          f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        log.warning("%s=%s: the certificate is not valid before %s UTC; clients refuse it until then",
                    CERT_SETTING, files.cert, f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M}")
    return cert_data, key_data, CertificateInfo(_names(leaf), leaf.not_valid_after_utc, len(chain))


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = [f"DNS:{name}" for name in san.get_values_for_type(x509.DNSName)]
    return tuple(dns + [f"IP:{ip}" for ip in san.get_values_for_type(x509.IPAddress)])


def new_server_context() -> ssl.SSLContext:
    """A server context for TLS 1.2 and 1.3 only, HTTP/1.1 by ALPN, no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def load_context(files: TlsFiles) -> tuple[ssl.SSLContext, CertificateInfo]:
    """A server context with the checked certificate chain and key of `files`."""
    cert_data, key_data, info = check_files(files)
    context = new_server_context()
    with _pem_path(cert_data + b"\n" + key_data) as combined:
        try:
            context.load_cert_chain(combined, password=_no_password)
        except ssl.SSLError as exc:
            raise ConfigError(f"{CERT_SETTING}={files.cert}, {KEY_SETTING}={files.key}: "
                              f"OpenSSL cannot use them: {exc.reason or exc}") from None
    return context, info


def _no_password() -> str:
    raise ConfigError(f"{KEY_SETTING}: the key is protected by a passphrase")


@contextlib.contextmanager
def _pem_path(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read `data` from, without writing the key to disk where possible:
    an anonymous in-memory file on Linux, else a private temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("ankihost-tls", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="ankihost-tls-") as f:  # mode 0600
        f.write(data)
        f.flush()
        yield f.name


class CertificateStore:
    """The listener's TLS context, and the current certificate behind it.

    `context` is given to the listening socket once; its SNI callback, which OpenSSL calls on
    every handshake, hands the connection the newest context loaded. A renewal that cannot be
    used (a half-written pair, a mismatch) is logged and the previous certificate stays.
    """

    def __init__(self, files: TlsFiles, check_secs: float = RELOAD_CHECK_SECS) -> None:
        self.files = files
        self.check_secs = check_secs
        self._signature = files.signature()
        self.current, self.info = load_context(files)
        self.context = self.current
        self.context.sni_callback = self._choose
        self.loads = 1
        self._warn_if_expiring()

    def _choose(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        current = self.current
        if current is not context:
            connection.context = current

    def check(self, force: bool = False) -> bool:
        """Load the files again if they changed (or `force`); True if a new certificate is in use."""
        signature = self.files.signature()
        if signature == self._signature and not force:
            return False
        self._signature = signature
        try:
            context, info = load_context(self.files)
        except ConfigError as exc:
            log.error("TLS certificate not renewed, still serving the previous one: %s", exc)
            return False
        self.current, self.info = context, info
        self.loads += 1
        log.info("TLS certificate renewed: %s", info.describe())
        self._warn_if_expiring()
        return True

    async def watch(self) -> None:
        """Check the files every `check_secs` until cancelled; a change is read once it settled."""
        while True:
            await asyncio.sleep(self.check_secs)
            if self.files.signature() != self._signature:
                await asyncio.sleep(min(SETTLE_SECS, self.check_secs))
                self.check()

    def _warn_if_expiring(self) -> None:
        left = self.info.not_after - datetime.datetime.now(datetime.UTC)
        if left < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
            log.warning("%s=%s: the certificate expires in %d day(s), on %s UTC", CERT_SETTING,
                        self.files.cert, left.days, f"{self.info.not_after:%Y-%m-%d %H:%M}")
