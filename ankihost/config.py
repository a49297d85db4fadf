"""Every setting ankihost reads, declared once: name, default, meaning, how it is parsed.

`Settings.from_env(environ)` reads the same environment variables, with the same defaults,
as the official sync server, validates all of them at start-up and fails with a
`ConfigError` naming the variable. It takes the mapping as a parameter, so tests pass a dict.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
LOG_FORMATS = ("text", "json")
# Secret settings read by `_secret` (the value, or NAME_FILE naming a file that holds it).
ADMIN_PASSWORD = "ANKIHOST_ADMIN_PASSWORD"
METRICS_TOKEN = "ANKIHOST_METRICS_TOKEN"
# ANKIHOST_MEDIA_TRASH_DAYS: the most days a deleted media file may be kept (100 years).
MAX_TRASH_DAYS = 36_500

# Where the client's IP address for the log comes from (same names as the official server).
IP_HEADERS: dict[str, str | None] = {
    "ConnectInfo": None,
    "RightmostXForwardedFor": "x-forwarded-for",
    "XRealIp": "x-real-ip",
    "CfConnectingIp": "cf-connecting-ip",
    "TrueClientIp": "true-client-ip",
    "FlyClientIp": "fly-client-ip",
    "CloudFrontViewerAddress": "cloudfront-viewer-address",
}


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


def _ip_literal(value: str) -> str:
    ipaddress.ip_address(value)
    return value


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be between 0 and 65535")
    return port


def _megs(value: str) -> int:
    megs = int(value)
    if megs < 1:
        raise ValueError("must be a whole number of MiB, at least 1")
    return megs


def _trash_days(value: str) -> int:
    days = int(value)
    if not 0 <= days <= MAX_TRASH_DAYS:
        raise ValueError(f"must be a whole number of days from 0 to {MAX_TRASH_DAYS}")
    return days


def _ip_header(value: str) -> str:
    if value not in IP_HEADERS:
        raise ValueError("must be one of " + ", ".join(IP_HEADERS))
    return value


def _base(value: str) -> Path:
    return Path(value).expanduser()


def _seconds(value: str) -> int:
    seconds = int(value)
    if seconds < 0:
        raise ValueError("must be a whole number of seconds, 0 or more")
    return seconds


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number
    return parse


def _secs(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError("must be a number of seconds") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g} seconds")
        return number
    return parse


def _file(value: str) -> Path | None:
    return Path(value).expanduser() if value else None


def _hours(value: str) -> float:
    hours = float(value)
    if not (hours >= 0 and hours != float("inf")):
        raise ValueError("must be a number of hours, 0 or more")
    return hours


def _count(value: str) -> int:
    count = int(value)
    if count < 1:
        raise ValueError("must be a whole number, at least 1")
    return count


def _days(value: str) -> float:
    days = float(value)
    if not (days > 0 and days != float("inf")):
        raise ValueError("must be a number of days, more than 0")
    return days


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise ValueError("must be one of " + ", ".join(LOG_FORMATS))
    return value


def _flag(value: str) -> bool:
    """A strict yes/no: 1/true/yes/on or 0/false/no/off (any case), or empty for no."""
    lowered = value.strip().lower()
    if lowered not in _TRUE + _FALSE:
        raise ValueError("must be one of 1, true, yes, on, 0, false, no, off")
    return lowered in _TRUE


@dataclass(frozen=True)
class Setting:
    name: str
    # the default as `--help` shows it (None: required, or unset)
    default: str | None
    help: str
    # how a value is read and checked; None for the two that have readers of their own below
    parse: Callable[[str], Any] | None = None


def _default_base(environ: Mapping[str, str]) -> str | None:
    home = environ.get("HOME") or (os.path.expanduser("~") if environ is os.environ else "")
    return None if home in ("", "~") else str(Path(home) / ".syncserver")


SETTINGS = (
    Setting("SYNC_USERn", None, "SYNC_USER1, SYNC_USER2, …: 'username:password' (or "
            "'username:<PHC hash>'), numbered from 1 without gaps; SYNC_USERn_FILE instead names "
            "a file holding that value (Docker and systemd secrets)"),
    Setting("PASSWORDS_HASHED", None, "if set (to anything), every SYNC_USERn holds a PHC hash "
            "(see `ankihost hash-password`)"),
    Setting("SYNC_BASE", "~/.syncserver", "data folder; one sub-folder per user", _base),
    Setting("SYNC_HOST", "0.0.0.0", "address to listen on: an IPv4 or IPv6 literal", _ip_literal),
    Setting("SYNC_PORT", "8080", "TCP port to listen on (0-65535)", _port),
    Setting("MAX_SYNC_PAYLOAD_MEGS", "100", "largest upload in MiB, at least 1 (collections up to "
            "3x this)", _megs),
    Setting("SYNC_IP_HEADER", "ConnectInfo", "where the client IP in the log comes from: "
            + ", ".join(IP_HEADERS), _ip_header),
    Setting("ANKIHOST_ENV_DEVICE_KEYS", "0", "1: SYNC_USERn accounts get a key per device, "
            "revocable one by one (devices then log in again once, and no longer share a login "
            "with the official server)", _flag),
    Setting("ANKIHOST_IDLE_CLOSE_SECS", "60", "close a user's databases after this many seconds "
            "without a request, so idle users cost no memory (0: never)", _seconds),
    Setting("ANKIHOST_TLS_CERT", None, "serve SYNC_PORT over HTTPS (TLS 1.2 and 1.3) with this PEM "
            "certificate file (the server's certificate first, then its chain; renewals are "
            "picked up while running); needs ANKIHOST_TLS_KEY", _file),
    Setting("ANKIHOST_TLS_KEY", None, "the PEM private key (unencrypted) of ANKIHOST_TLS_CERT", _file),
    Setting("ANKIHOST_MAX_CONNECTIONS", "1000", "open connections at most (1-1000000); past it idle "
            "ones are closed, else new ones get 503", _whole(1, 1_000_000)),
    Setting("ANKIHOST_HEADER_TIMEOUT", "20", "seconds a client has to send a request's head or "
            "finish a TLS handshake (1-3600)", _secs(1, 3600)),
    Setting("ANKIHOST_BODY_IDLE_TIMEOUT", "90", "seconds without data while receiving a body or "
            "sending a reply (5-86400; clients stall for up to 60 s)", _secs(5, 86400)),
    Setting("ANKIHOST_KEEPALIVE_TIMEOUT", "60", "seconds an idle connection stays open between "
            "requests (1-86400)", _secs(1, 86400)),
    Setting("ANKIHOST_SHUTDOWN_GRACE", "10", "seconds requests under way get to finish on SIGTERM "
            "(0-3600)", _secs(0, 3600)),
    Setting("ANKIHOST_SNAPSHOT_INTERVAL_HOURS", "24", "snapshot each user's collection this "
            "often when it changed since the last snapshot (0: only before full uploads and "
            "restores)", _hours),
    Setting("ANKIHOST_SNAPSHOT_KEEP", "20", "the most snapshots kept per user (the oldest go "
            "first)", _count),
    Setting("ANKIHOST_SNAPSHOT_KEEP_DAYS", "90", "snapshots older than this many days are "
            "deleted (the newest is always kept)", _days),
    Setting(ADMIN_PASSWORD, None, "turns the admin web pages on: their password, plain or a PHC "
            "hash (`ankihost hash-password`); ANKIHOST_ADMIN_PASSWORD_FILE instead names a file "
            "holding it"),
    Setting("ANKIHOST_ADMIN_HOST", "127.0.0.1", "address of the admin listener (admin pages and "
            "/metrics): an IPv4 or IPv6 literal", _ip_literal),
    Setting("ANKIHOST_ADMIN_PORT", "8081", "TCP port of the admin listener", _port),
    Setting(METRICS_TOKEN, None, "a bearer token /metrics then requires (it also starts the admin "
            "listener for /metrics alone); unset: /metrics is open on the admin listener; "
            "ANKIHOST_METRICS_TOKEN_FILE instead names a file holding it"),
    Setting("ANKIHOST_METRICS_PER_USER", "0", "1: /metrics gives syncs, bytes and storage per user "
            "(a series per user)", _flag),
    Setting("ANKIHOST_LOG_FORMAT", "text", "text: one line per event; json: one JSON object per "
            "line", _log_format),
    Setting("ANKIHOST_MEDIA_TRASH_DAYS", "30", "days a media file deleted or replaced by a sync "
            "is kept in the user's trash (`ankihost media trash`/`restore`); 0: no trash", _trash_days),
)


def describe_settings() -> str:
    """Every setting, one per line, with its default: the `environment:` part of `--help`."""
    lines = []
    for setting in SETTINGS:
        default = f" (default: {setting.default})" if setting.default is not None else ""
        lines.append(f"  {setting.name:<26} {setting.help}{default}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Settings:
    base: Path
    host: str
    port: int
    max_payload_megs: int
    ip_header: str
    # (name, secret) for each SYNC_USERn; the secret is a password or a PHC hash.
    users: tuple[tuple[str, str], ...]
    passwords_hashed: bool
    env_device_keys: bool = False
    idle_close_secs: int = 60
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_connections: int = 1000
    header_timeout: float = 20.0
    body_idle_timeout: float = 90.0
    keepalive_timeout: float = 60.0
    shutdown_grace: float = 10.0
    snapshot_interval_hours: float = 24.0
    snapshot_keep: int = 20
    snapshot_keep_days: float = 90.0
    # The admin listener (admin pages, /metrics): it runs when either secret is set.
    admin_password: Secret | None = None
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    metrics_token: Secret | None = None
    metrics_per_user: bool = False
    log_format: str = "text"

    @property
    def admin_listener(self) -> bool:
        return self.admin_password is not None or self.metrics_token is not None
    media_trash_days: int = 30

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_megs * MIB

    @property
    def max_decompressed_bytes(self) -> int:
        """Largest decompressed body or collection the server accepts (3 x the limit)."""
        return 3 * self.max_payload_bytes

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if setting.parse is None:
                continue
            raw = environ.get(setting.name)
            if raw is None:
                raw = _default_base(environ) if setting.name == "SYNC_BASE" else setting.default
            if raw is None and setting.name == "SYNC_BASE":
                raise ConfigError(f"{setting.name} is not set and there is no home folder")
            if raw is None:  # an optional setting without a default: unset
                values[setting.name] = None
                continue
            try:
                values[setting.name] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.name}={raw!r} is invalid: {exc}") from None
        return cls(
            base=values["SYNC_BASE"],
            host=values["SYNC_HOST"],
            port=values["SYNC_PORT"],
            max_payload_megs=values["MAX_SYNC_PAYLOAD_MEGS"],
            ip_header=values["SYNC_IP_HEADER"],
            users=read_user_entries(environ),
            passwords_hashed="PASSWORDS_HASHED" in environ,
            env_device_keys=values["ANKIHOST_ENV_DEVICE_KEYS"],
            idle_close_secs=values["ANKIHOST_IDLE_CLOSE_SECS"],
            tls_cert=values["ANKIHOST_TLS_CERT"],
            tls_key=values["ANKIHOST_TLS_KEY"],
            max_connections=values["ANKIHOST_MAX_CONNECTIONS"],
            header_timeout=values["ANKIHOST_HEADER_TIMEOUT"],
            body_idle_timeout=values["ANKIHOST_BODY_IDLE_TIMEOUT"],
            keepalive_timeout=values["ANKIHOST_KEEPALIVE_TIMEOUT"],
            shutdown_grace=values["ANKIHOST_SHUTDOWN_GRACE"],
            snapshot_interval_hours=values["ANKIHOST_SNAPSHOT_INTERVAL_HOURS"],
            snapshot_keep=values["ANKIHOST_SNAPSHOT_KEEP"],
            snapshot_keep_days=values["ANKIHOST_SNAPSHOT_KEEP_DAYS"],
            admin_password=_admin_password(environ),
            admin_host=values["ANKIHOST_ADMIN_HOST"],
            admin_port=values["ANKIHOST_ADMIN_PORT"],
            metrics_token=_secret(environ, METRICS_TOKEN),
            metrics_per_user=values["ANKIHOST_METRICS_PER_USER"],
            log_format=values["ANKIHOST_LOG_FORMAT"],
            media_trash_days=values["ANKIHOST_MEDIA_TRASH_DAYS"],
        )._checked()

    def _checked(self) -> Settings:
        if self.admin_listener and self.admin_port == self.port and self.admin_port != 0:
            raise ConfigError(f"ANKIHOST_ADMIN_PORT={self.admin_port} is also SYNC_PORT: the admin "
                              "listener needs a port of its own")
        return self


@dataclass(frozen=True)
class Secret:
    """A secret setting's value, never shown by `repr` or `str` (so never in a log)."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "**********"


def _secret(environ: Mapping[str, str], name: str) -> Secret | None:
    """NAME or NAME_FILE (a file holding the value; one trailing newline is dropped); both set,
    an empty value or an unreadable file is a ConfigError."""
    value, path = environ.get(name), environ.get(f"{name}_FILE")
    if value is not None and path is not None:
        raise ConfigError(f"{name} and {name}_FILE are both set; set only one")
    if path is not None:
        try:
            value = Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}_FILE={path!r} cannot be read: {exc}") from None
    if value is None:
        return None
    if value == "":
        raise ConfigError(f"{name} is empty; unset it to turn this off")
    return Secret(value)


def _admin_password(environ: Mapping[str, str]) -> Secret | None:
    """The admin password, plain or a PHC hash; a malformed hash stops start-up here."""
    from ankihost.accounts import passwords

    secret = _secret(environ, ADMIN_PASSWORD)
    if secret is not None and passwords.looks_like_hash(secret.value):
        try:
            passwords.parse_hash(secret.value)
        except passwords.HashFormatError as exc:
            raise ConfigError(f"{ADMIN_PASSWORD}: the password hash is invalid: {exc}") from None
    return secret


def read_user_entries(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """SYNC_USER1, SYNC_USER2, … (or SYNC_USERn_FILE naming a file holding the value) up to
    the first number with neither, split at the first ':'. None at all is allowed here: the
    server refuses to start only if the account store has no accounts either."""
    entries = []
    n = 1
    while (value := _user_value(environ, n)) is not None:
        name, sep, secret = value.partition(":")
        if not sep:
            raise ConfigError(f"SYNC_USER{n} must be 'username:password'")
        entries.append((name, secret))
        n += 1
    return tuple(entries)


def _user_value(environ: Mapping[str, str], n: int) -> str | None:
    value, path = environ.get(f"SYNC_USER{n}"), environ.get(f"SYNC_USER{n}_FILE")
    if value is not None and path is not None:
        raise ConfigError(f"SYNC_USER{n} and SYNC_USER{n}_FILE are both set; set only one")
    if path is None:
        return value
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"SYNC_USER{n}_FILE={path!r} cannot be read: {exc}") from None
    return text.removesuffix("\n").removesuffix("\r")
