"""Password hashes: the PHC pbkdf2 strings the official server accepts, and argon2id.

`parse_hash` reads a stored PHC string into something that can `verify` a password:
`PasswordHash` follows the official server's rules for pbkdf2 `PASSWORDS_HASHED` values,
`Argon2Hash` wraps argon2-cffi. New passwords of the account store are argon2id
(`hash_new_password`); `hash_password` makes a pbkdf2 string both servers accept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

DEFAULT_ROUNDS = 600_000
DEFAULT_HASH_BYTES = 32
SALT_BYTES = 16

_PHC = re.compile(r"^\$(pbkdf2-sha256|pbkdf2-sha512)(?:\$([^$]*))?\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")
_ALGORITHMS = {"pbkdf2-sha256": "sha256", "pbkdf2-sha512": "sha512"}


# argon2id for new passwords: OWASP's first recommended setting (19 MiB, 2 passes, 1 lane),
# ~40 ms here; the memory is what makes guessing expensive, and bounds a burst of logins.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1
_ARGON2 = argon2.PasswordHasher(
    time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM
)
_LOOKS_LIKE_PHC = re.compile(r"^\$(pbkdf2-sha256|pbkdf2-sha512|argon2id|argon2i|argon2d)\$")


class HashFormatError(ValueError):
    """A password hash is not a PHC pbkdf2-sha256/sha512 or argon2id string we can verify."""


class Verifier(Protocol):
    def verify(self, password: str) -> bool: ...


def looks_like_hash(secret: str) -> bool:
    """Whether `secret` is shaped like a PHC hash (a likely forgotten PASSWORDS_HASHED)."""
    return bool(_LOOKS_LIKE_PHC.match(secret))


def parse_hash(phc: str) -> Verifier:
    """A pbkdf2 (official rules) or argon2id PHC string, ready to verify; HashFormatError."""
    if phc.startswith("$argon2"):
        return Argon2Hash.parse(phc)
    return PasswordHash.parse(phc)


@dataclass(frozen=True)
class Argon2Hash:
    phc: str

    @classmethod
    def parse(cls, phc: str) -> Argon2Hash:
        try:
            params = argon2.extract_parameters(phc)
        except (InvalidHashError, ValueError) as exc:
            raise HashFormatError(f"not a valid argon2 hash: {exc}") from None
        if params.type is not argon2.Type.ID:
            raise HashFormatError("only argon2id hashes are accepted")
        return cls(phc)

    def verify(self, password: str) -> bool:
        try:
            return _ARGON2.verify(self.phc, password)
        except (VerificationError, InvalidHashError):
            return False


def hash_new_password(password: str) -> str:
    """An argon2id PHC string for a password of the account store."""
    return _ARGON2.hash(password)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise HashFormatError(f"bad base64: {exc}") from None


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class PasswordHash:
    algorithm: str  # hashlib name
    salt: bytes
    rounds: int
    digest: bytes

    @classmethod
    def parse(cls, phc: str) -> PasswordHash:
        """Parse a PHC string with the rules of the official server; raise HashFormatError."""
        match = _PHC.match(phc)
        if not match:
            raise HashFormatError("expected $pbkdf2-sha256$i=<rounds>,l=<bytes>$<salt>$<hash>")
        ident, params, salt_text, digest_text = match.groups()
        options = _parse_params(params)
        if not 4 <= len(salt_text) <= 64:
            raise HashFormatError("salt must be 4 to 64 characters")
        digest = _b64decode(digest_text)
        length = options.get("l", DEFAULT_HASH_BYTES)
        if length != len(digest) or not 10 <= len(digest) <= 64:
            raise HashFormatError(f"hash is {len(digest)} bytes but l={length}")
        rounds = options.get("i", DEFAULT_ROUNDS)
        if rounds < 1:
            raise HashFormatError("rounds must be positive")
        return cls(_ALGORITHMS[ident], _b64decode(salt_text), rounds, digest)

    def verify(self, password: str) -> bool:
        computed = hashlib.pbkdf2_hmac(
            self.algorithm, password.encode(), self.salt, self.rounds, len(self.digest)
        )
        return hmac.compare_digest(computed, self.digest)


def _parse_params(params: str | None) -> dict[str, int]:
    if not params:
        return {}
    options: dict[str, int] = {}
    for item in params.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in ("i", "l") or key in options or not value.isdigit():
            raise HashFormatError(f"unsupported parameter {item!r} (only i and l are allowed)")
        if int(value) >= 2**32:
            raise HashFormatError(f"parameter {key} is too large")
        options[key] = int(value)
    return options


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """A PHC pbkdf2-sha256 string that both ankihost and the official server accept."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds, DEFAULT_HASH_BYTES)
    return f"$pbkdf2-sha256$i={rounds},l={DEFAULT_HASH_BYTES}${_b64encode(salt)}${_b64encode(digest)}"


def plain_matches(stored: str, given: str) -> bool:
    return hmac.compare_digest(stored.encode(), given.encode())
