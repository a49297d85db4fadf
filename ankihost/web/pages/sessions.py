"""Sign-in sessions of the pages, in memory, and the CSRF tokens of their forms.

A session is a random id (256 bits) in a cookie that is `HttpOnly`, `SameSite=Strict` and,
over HTTPS, `Secure`; it has no `Path`, so the browser scopes it to the folder of the sign-in
page (`…/account` behind any proxy subpath, `/` on the admin listener). It ends after
IDLE_SECS without use, MAX_AGE_SECS after sign-in, at sign-out, or when the server restarts.
Every session has its own CSRF token, which each state-changing form carries; the sign-in
form, before any session exists, carries a token that must equal a cookie set with the form
(a double-submit token), so a page elsewhere cannot sign a browser in either.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

IDLE_SECS = 30 * 60
MAX_AGE_SECS = 12 * 60 * 60
# Sessions kept per area; past this the least recently used is ended.
MAX_SESSIONS = 10_000
TOKEN_BYTES = 32


def is_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS: the ASGI scheme (TLS here), or a proxy's
    `X-Forwarded-Proto: https`. The header can only add the Secure flag, never drop it, so a
    forged one makes a cookie stricter at worst; it is trusted for nothing else."""
    if request.scope.get("scheme") == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "")
    return forwarded.rsplit(",", 1)[-1].strip().lower() == "https"


def cookie_header(request: Request, name: str, value: str, *, clear: bool = False) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Strict, Secure over HTTPS, no Path."""
    parts = [f"{name}={'' if clear else value}", "HttpOnly", "SameSite=Strict"]
    if clear:
        parts.append("Max-Age=0")
    if is_https(request):
        parts.append("Secure")
    return "; ".join(parts)


def same_token(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_token(text: str) -> bool:
    """Shaped like a `new_token()` (43 URL-safe characters)."""
    return len(text) == 43 and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


@dataclass
class Session:
    id: str
    # who signed in: "admin", or the user's name on the account page
    who: str
    csrf: str
    created: float
    last_used: float
    # what the password was checked against at sign-in: the session ends when it changes
    proof: object = None
    # messages shown once, on the next page
    flash: list[str] = field(default_factory=list)

    def take_flash(self) -> list[str]:
        messages, self.flash = self.flash, []
        return messages


class Sessions:
    """The sessions of one area (admin or account), found by the cookie `cookie`."""

    def __init__(self, cookie: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.cookie = cookie
        self.signin_cookie = f"{cookie}_signin"
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def start(self, who: str, proof: object = None) -> Session:
        now = self.clock()
        session = Session(new_token(), who, new_token(), now, now, proof)
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def find(self, request: Request) -> Session | None:
        """The live session the request's cookie names; an expired one is ended."""
        key = request.cookies.get(self.cookie, "")
        session = self._sessions.get(key) if looks_like_token(key) else None
        if session is None:
            return None
        now = self.clock()
        if now - session.last_used > IDLE_SECS or now - session.created > MAX_AGE_SECS:
            self.end(session)
            return None
        session.last_used = now
        self._sessions.move_to_end(session.id)
        return session

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
