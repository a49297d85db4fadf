"""The pages' own errors and their statuses; `render.Renderer.error` turns each into an HTML
page (the sync surface's `web/app.py: error_response` is separate and never sees these).

    PageError (400)          a form or query that cannot be used; nothing was changed
    ├── NotSignedIn (403)    no session, or it expired, on a form that changes something
    ├── Forbidden (403)      a missing or wrong CSRF token, a form of another session
    ├── NotFoundPage (404)   no such page, user or device
    ├── WrongMethod (405)    a page asked with a method it does not answer; carries `allow`
    ├── Conflict (409)       the change clashes with what exists (a name taken)
    ├── TooLarge (413)       a form body over the limit
    ├── WrongType (415)      a form not sent as application/x-www-form-urlencoded
    ├── SlowDown (429)       too many failed sign-ins
    ├── ServerFailure (500)  anything unexpected (logged with its traceback)
    └── Busy (503)           the server does as much of this at once as it will (downloads)
"""

from __future__ import annotations

from typing import Any

from ankihost.admin.operations import AdminContext, AdminError, Operation


class PageError(Exception):
    status = 400
    title = "This request cannot be used"

    def __init__(self, message: str, *, back: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # a relative link to the page to go back to
        self.back = back


class NotSignedIn(PageError):
    status = 403
    title = "Not signed in"


class Forbidden(PageError):
    status = 403
    title = "Refused"


class NotFoundPage(PageError):
    status = 404
    title = "Not found"


class WrongMethod(PageError):
    status = 405
    title = "Method not allowed"

    def __init__(self, allow: tuple[str, ...]) -> None:
        super().__init__(f"This page answers {' and '.join(allow)} only.")
        self.allow = allow


class Conflict(PageError):
    status = 409
    title = "Conflict"


class TooLarge(PageError):
    status = 413
    title = "Too large"


class WrongType(PageError):
    status = 415
    title = "Unsupported form encoding"


class SlowDown(PageError):
    status = 429
    title = "Too many failed sign-ins"


class ServerFailure(PageError):
    status = 500
    title = "Server error"


class Busy(PageError):
    status = 503
    title = "Busy"


_BY_STATUS: dict[int, type[PageError]] = {403: Forbidden, 404: NotFoundPage, 409: Conflict,
                                          500: ServerFailure}


def from_admin_error(error: AdminError, back: str | None = None) -> PageError:
    """An admin operation's refusal as a page error with the same status and message."""
    return _BY_STATUS.get(error.status, PageError)(_sentence(error.message), back=back)


async def run_operation(op: Operation, context: AdminContext, args: dict[str, Any],
                        back: str | None = None) -> Any:
    """An admin operation run for a page: its refusal is the page error of the same status and
    message, with a link `back`."""
    try:
        return await op(context, args)
    except AdminError as error:
        raise from_admin_error(error, back=back) from None


def _sentence(message: str) -> str:
    text = message[:1].upper() + message[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
