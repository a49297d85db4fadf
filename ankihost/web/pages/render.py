"""Rendering: the Jinja2 environment (autoescaped), the security headers every page carries,
redirects, the stylesheet, and the HTML error page of a `PageError`.

The Content-Security-Policy allows no scripts at all and styles only from the stylesheet
served here, so HTML that slips into a value could neither run nor restyle a page (and every
value is escaped anyway). Pages are never cached: they show accounts and devices.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse, Response

from ankihost.web.pages.errors import PageError, WrongMethod

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
STYLESHEET = "pages.css"
MIB = 1024 * 1024

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
NO_STORE = {"Cache-Control": "no-store"}


def size(value: int | None) -> str:
    """Bytes as people read them (MB are MiB, as quotas and the command line count them)."""
    if value is None:
        return "—"
    if value < 1024:
        return f"{value} B"
    if value < MIB:
        return f"{value / 1024:.1f} KB"
    if value < 1024 * MIB:
        return f"{value / MIB:.1f} MB"
    return f"{value / (1024 * MIB):.2f} GB"


def when(at: int | float | None) -> str:
    if not at:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def ago(at: int | float | None) -> str:
    if not at:
        return ""
    secs = max(0, int(time.time() - at))
    for unit, length in (("day", 86400), ("h", 3600), ("min", 60)):
        if secs >= length:
            count = secs // length
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return "just now"


def duration(secs: float) -> str:
    secs = int(secs)
    days, hours, minutes = secs // 86400, secs % 86400 // 3600, secs % 3600 // 60
    return f"{days} d {hours} h" if days else f"{hours} h {minutes} min" if hours else f"{minutes} min"


def percent(used: int, quota: int | None) -> int | None:
    return None if not quota else min(999, round(100 * used / quota))


class Renderer:
    """Pages of one area ("admin" or "account"): the templates see `area` and `stylesheet`."""

    def __init__(self, area: str) -> None:
        self.area = area
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(size=size, when=when, ago=ago, duration=duration)
        self.env.globals.update(area=area, percent=percent)
        self.stylesheet = (STATIC / STYLESHEET).read_bytes()

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("flash", [])
        context.setdefault("signed_in", False)
        context.setdefault("csrf", "")
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **NO_STORE})

    def error(self, error: PageError, signed_in: bool = False) -> HTMLResponse:
        response = self.page("error.html", error.status, error=error, signed_in=signed_in)
        if isinstance(error, WrongMethod):
            response.headers["Allow"] = ", ".join(error.allow)
        return response

    def css(self) -> Response:
        return Response(self.stylesheet, media_type="text/css",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


def see_other(location: str, cookies: list[str] | None = None) -> Response:
    """303 to a relative location (the pages never know the proxy's prefix)."""
    response = Response(status_code=303, headers={"Location": location, **SECURITY_HEADERS, **NO_STORE})
    for cookie in cookies or []:
        response.headers.append("Set-Cookie", cookie)
    return response
