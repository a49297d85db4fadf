"""The admin password (ANKIHOST_ADMIN_PASSWORD: plain, or a PHC pbkdf2/argon2id hash) and the
admin sign-in, throttled like sync logins: per address, with the same limits and lockout.

Failures and sign-ins go to the audit trail (actor "admin page"), never with the password.
"""

from __future__ import annotations

import anyio

from ankihost.accounts import passwords
from ankihost.accounts.throttle import LoginThrottle, Throttled
from ankihost.config import Secret

# The throttle counts admin sign-ins under this name, per address.
ADMIN_NAME = "admin"


class AdminPassword:
    def __init__(self, secret: Secret) -> None:
        value = secret.value
        self._hash = passwords.parse_hash(value) if passwords.looks_like_hash(value) else None
        self._plain = None if self._hash is not None else value

    def matches(self, given: str) -> bool:
        """Blocking (a hash takes 40–300 ms): run it in a worker thread."""
        if self._hash is not None:
            return self._hash.verify(given)
        return passwords.plain_matches(self._plain or "", given)


class SignInRefused(Exception):
    """A wrong password ("failed") or a throttled try ("throttled")."""

    def __init__(self, result: str) -> None:
        super().__init__(result)
        self.result = result


class AdminGate:
    def __init__(self, password: AdminPassword) -> None:
        self.password = password
        self.throttle = LoginThrottle()

    async def check(self, given: str, ip: str) -> bool:
        """Whether the password is right, after any wait the throttle asks for; SignInRefused
        ("throttled"), without checking it, while this address is locked out."""
        try:
            wait = self.throttle.check(ADMIN_NAME, ip)
        except Throttled:
            raise SignInRefused("throttled") from None
        if wait:
            await anyio.sleep(wait)
        if await anyio.to_thread.run_sync(self.password.matches, given):
            self.throttle.succeeded(ADMIN_NAME, ip)
            return True
        return False

    def failed(self, ip: str) -> bool:
        """Count a failure; whether it locked this address out."""
        return self.throttle.failed(ADMIN_NAME, ip)
