"""Password checks for every sign-in surface (sync login, legacy login, the pages), throttled.

A try from an address or for a name with too many recent failures is refused with 429 before
any password is checked, or answered late (see `accounts/throttle.py`). Password checks (argon2id
or PBKDF2, 40–300 ms each) share a few threads of their own, so a burst of logins never takes the
worker threads that logged-in users' sync steps need. Failures and lockouts go to the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio

from ankihost.accounts.directory import AccountDirectory
from ankihost.accounts.store import Account
from ankihost.accounts.throttle import LoginThrottle, Throttled
from ankihost.errors import AuthFailed, TooManyRequests

LOGIN_THREADS = 4
T = TypeVar("T")


class LoginGate:
    def __init__(self, directory: AccountDirectory) -> None:
        self.directory = directory
        self.throttle = LoginThrottle()
        self.slots = anyio.CapacityLimiter(LOGIN_THREADS)

    async def login(self, name: str, password: str, client: str, ip: str) -> str:
        """The host key for a right name and password; AuthFailed (403) or TooManyRequests."""
        return await self._throttled(name, ip, client, self.directory.login, name, password, client, ip)

    async def check(self, name: str, password: str, ip: str, surface: str) -> Account:
        """The account for a right name and password, no device key made (a page's sign-in,
        or a password confirmed before a change); AuthFailed or TooManyRequests, counted
        against the same limits as sync logins."""
        return await self._throttled(name, ip, surface, self.directory.check_password, name, password)

    async def _throttled(self, name: str, ip: str, client: str, work: Callable[..., T], *args: object) -> T:
        try:
            wait = self.throttle.check(name, ip)
        except Throttled as refused:
            raise TooManyRequests(refused.reason) from None
        if wait:
            await anyio.sleep(wait)
        try:
            result = await anyio.to_thread.run_sync(work, *args, limiter=self.slots)
        except AuthFailed as failure:
            locked = self.throttle.failed(name, ip)
            await anyio.to_thread.run_sync(self._audit_failure, name, ip, client, failure.reason, locked)
            raise
        self.throttle.succeeded(name, ip)
        return result

    def _audit_failure(self, name: str, ip: str, client: str, reason: str, locked: bool) -> None:
        account = name if self.directory.by_name(name) is not None else None
        audit = self.directory.audit
        audit.record("login.failed", account, user=name, ip=ip, client=client, reason=reason)
        if locked:
            audit.record("login.throttled", account, user=name, ip=ip)
