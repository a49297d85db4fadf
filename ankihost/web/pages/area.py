"""One area of pages (admin, account): its route table, and how each request runs.

A request reads top to bottom: find the page in the table (404), check the method (405; HEAD
is GET), find the session (a page that needs one redirects GETs to `signin`, refuses POSTs
with 403), read the form and check its CSRF token (403), then run the handler. Every
`PageError` becomes an HTML page with its status here, so nothing of the pages reaches the
sync surface's error mapping; anything unexpected is logged and shown as a 500 page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from ankihost.web.pages.errors import Forbidden, NotFoundPage, NotSignedIn, PageError, ServerFailure, WrongMethod
from ankihost.web.pages.forms import Form, read_form, read_query
from ankihost.web.pages.render import Renderer, see_other
from ankihost.web.pages.sessions import Session, Sessions, cookie_header, looks_like_token, new_token, same_token
from ankihost.web.request_log import RequestLog

log = logging.getLogger("ankihost.pages")


@dataclass
class PageRequest:
    request: Request
    record: RequestLog
    session: Session | None
    # the POSTed form, or for a GET the query string
    form: Form
    ip: str

    @property
    def signed_in(self) -> Session:
        assert self.session is not None  # the route is not public
        return self.session


Handler = Callable[[PageRequest], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    handler: Handler
    # reachable without a session: the sign-in form, the stylesheet
    public: bool = False
    # fields of the POSTed form that may repeat (the ticked boxes of a list; `forms.py`)
    lists: tuple[str, ...] = ()


class Area:
    def __init__(self, renderer: Renderer, sessions: Sessions, routes: dict[str, Route]) -> None:
        self.renderer = renderer
        self.sessions = sessions
        self.routes = routes

    async def handle(self, request: Request, page: str, record: RequestLog, ip: str) -> Response:
        """The response to a request for `page`; never raises."""
        session: Session | None = None
        try:
            session = self.session_of(request)
            if session is not None:
                record.user = session.who
            return await self._run(request, page, record, ip, session)
        except PageError as error:
            return self.renderer.error(error, signed_in=session is not None)
        except Exception:
            log.exception("internal error on the %s page %r", self.renderer.area, page)
            failure = ServerFailure("Something went wrong on the server. The server's log says what.")
            return self.renderer.error(failure, signed_in=session is not None)

    async def _run(self, request: Request, page: str, record: RequestLog, ip: str,
                   session: Session | None) -> Response:
        route = self.routes.get(page)
        if route is None:
            raise NotFoundPage("There is no such page here.", back="./")
        method = "GET" if request.method == "HEAD" else request.method
        if method not in route.methods:
            raise WrongMethod(route.methods)
        if session is None and not route.public:
            if method == "GET":
                return see_other("signin")
            raise NotSignedIn("You are not signed in, or your session ended (after "
                              "30 minutes without use). Sign in again; nothing was changed.",
                              back="signin")
        form = await read_form(request, route.lists) if method == "POST" else read_query(request)
        if method == "POST" and not route.public:
            assert session is not None
            if not same_token(form.get("csrf"), session.csrf):
                raise Forbidden("This form's security token is missing or out of date (was the "
                                "page open from before you signed in again?). Nothing was "
                                "changed: reload the page and try again.", back="./")
        return await route.handler(PageRequest(request, record, session, form, ip))

    def session_of(self, request: Request) -> Session | None:
        session = self.sessions.find(request)
        if session is not None and not self.still_valid(session):
            self.sessions.end(session)
            return None
        return session

    def still_valid(self, session: Session) -> bool:
        """Whether what the session was signed in with still holds (the account page ends
        sessions of a removed account or a changed password)."""
        return True

    async def stylesheet(self, page: PageRequest) -> Response:
        return self.renderer.css()

    # -- signing in and out, the same in both areas ------------------------------------------

    def signin_form(self, page: PageRequest, status: int = 200, **context: object) -> Response:
        """The sign-in form with its double-submit token, in the form and in a cookie."""
        token = page.request.cookies.get(self.sessions.signin_cookie, "")
        token = token if looks_like_token(token) else new_token()
        context.setdefault("error", "")
        context.setdefault("name", "")
        response = self.renderer.page("signin.html", status, csrf=token, **context)
        response.headers.append("Set-Cookie", cookie_header(page.request, self.sessions.signin_cookie, token))
        return response

    def check_signin_token(self, page: PageRequest) -> None:
        if not same_token(page.form.get("csrf"), page.request.cookies.get(self.sessions.signin_cookie, "")):
            raise Forbidden("The sign-in form is out of date (or cookies are off for this site). "
                            "Reload it and try again.", back="signin")

    def signed_in(self, page: PageRequest, session: Session) -> Response:
        page.record.login, page.record.user = "ok", session.who
        return see_other("./", [cookie_header(page.request, self.sessions.cookie, session.id),
                                cookie_header(page.request, self.sessions.signin_cookie, "", clear=True)])

    async def signout(self, page: PageRequest) -> Response:
        self.sessions.end(page.signed_in)
        return see_other("signin", [cookie_header(page.request, self.sessions.cookie, "", clear=True)])
