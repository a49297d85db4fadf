"""Every setting ankihost reads, declared once: name, default, meaning, how it is parsed.

`Settings.from_env(environ)` reads the same environment variables, with the same defaults,
as the official sync server, validates all of them at start-up and fails with a
`ConfigError` naming the variable. It takes the mapping as a parameter, so tests pass a dict.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
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


def _days(value: str) -> int:
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


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


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
    Setting("ANKIHOST_MEDIA_TRASH_DAYS", "30", "days a media file deleted or replaced by a sync "
            "is kept in the user's trash (`ankihost media trash`/`restore`); 0: no trash", _days),
)


def describe_settings() -> str:
    """Every setting, one per line, with its default: the `environment:` part of `--help`."""
    lines = []
    for setting in SETTINGS:
        default = f" (default: {setting.default})" if setting.default is not None else ""
        lines.append(f"  {setting.name:<22} {setting.help}{default}")
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
            if raw is None:
                raise ConfigError(f"{setting.name} is not set and there is no home folder")
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
            media_trash_days=values["ANKIHOST_MEDIA_TRASH_DAYS"],
        )


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
