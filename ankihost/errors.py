"""The small exception tree every layer raises, and the HTTP status each carries.

    SyncError (status 500)            base; also "something went wrong on our side"
    ├── BadRequest (400)              malformed input, or a sync step that failed and was rolled back
    ├── AuthFailed (403)              bad credentials or unknown host key; clients log the user out
    ├── NotFound (404)                no such route
    ├── MethodNotAllowed (405)        a route asked with the wrong HTTP method; carries `allow`
    ├── SessionConflict (409)         no sync session, or another device's session
    ├── PayloadTooLarge (413)         body over the configured limit (used where 400 is not required)
    ├── TooManyRequests (429)         too many failed logins; clients show a network error, stay logged in
    ├── ClientTooOld (501)            meta body version outside the supported range
    └── ServerError (500)             transient or internal failure; the client says "try later"

Third-party errors (zstd, zip, sqlite3, orjson) are turned into these where they happen.
`web/app.py: error_response` is the only place that maps them to responses of the sync
surface.
"""

from __future__ import annotations


class SyncError(Exception):
    status = 500

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(SyncError):
    status = 400


class AuthFailed(SyncError):
    status = 403


class NotFound(SyncError):
    status = 404


class MethodNotAllowed(SyncError):
    status = 405

    def __init__(self, allow: tuple[str, ...]) -> None:
        super().__init__(f"allowed: {', '.join(allow)}")
        self.allow = allow


class SessionConflict(SyncError):
    status = 409


class PayloadTooLarge(SyncError):
    status = 413


class TooManyRequests(SyncError):
    status = 429


class ClientTooOld(SyncError):
    status = 501


class ServerError(SyncError):
    status = 500
