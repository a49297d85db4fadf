"""Reading forms and query strings: bounded, strict UTF-8, one value per name.

Forms are the browser's default encoding, `application/x-www-form-urlencoded`, read with a
size cap before parsing. Anything else is refused with a page error and nothing is changed:
another encoding (415), a body over MAX_FORM_BYTES (413), a field that is not UTF-8, repeated,
longer than MAX_FIELD_CHARS, or too many fields (400). Only the list fields a route names (the
ticked boxes of one list) may repeat, up to MAX_LIST_VALUES times.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from ankihost.web.pages.errors import PageError, TooLarge, WrongType

MAX_FORM_BYTES = 64 * 1024
MAX_QUERY_BYTES = 4 * 1024
MAX_FIELDS = 16
# Values of one list field (ticked boxes): the media trash page lists at most this many files.
MAX_LIST_VALUES = 500
# Passwords may be up to 1024 characters (admin/accounts.py); nothing a form sends is longer.
MAX_FIELD_CHARS = 2048
FORM_TYPE = "application/x-www-form-urlencoded"


class Form:
    """The fields of one form or query string."""

    def __init__(self, fields: dict[str, str], lists: dict[str, list[str]] | None = None) -> None:
        self.fields = fields
        self.lists = lists or {}

    def get(self, name: str) -> str:
        """The field's value, "" when it is missing."""
        return self.fields.get(name, "")

    def required(self, name: str, label: str) -> str:
        value = self.fields.get(name, "")
        if value == "":
            raise PageError(f"{label} is missing.")
        return value

    def checked(self, name: str) -> bool:
        """A checkbox: present (with any value) means checked."""
        return name in self.fields

    def values(self, name: str) -> list[str]:
        """Every value of list field `name` (the ticked boxes), in the form's order."""
        return self.lists.get(name, [])


async def read_form(request: Request, lists: tuple[str, ...] = ()) -> Form:
    """The form POSTed; the fields named in `lists` may repeat."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise WrongType(f"Forms are sent as {FORM_TYPE}; this one came as "
                        f"{content_type or 'nothing'}. Nothing was changed.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise TooLarge(f"The form is larger than {MAX_FORM_BYTES // 1024} KB. Nothing was changed.")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_FORM_BYTES:
            raise TooLarge(f"The form is larger than {MAX_FORM_BYTES // 1024} KB. Nothing was changed.")
    return parse(bytes(body), lists)


def read_query(request: Request) -> Form:
    raw = request.scope.get("query_string", b"")
    if len(raw) > MAX_QUERY_BYTES:
        raise PageError(f"The address is longer than {MAX_QUERY_BYTES} bytes.")
    return parse(raw)


def parse(raw: bytes, lists: tuple[str, ...] = ()) -> Form:
    """Fields of an urlencoded body or query string (those named in `lists` may repeat);
    PageError for anything unusable."""
    most = MAX_FIELDS + (MAX_LIST_VALUES if lists else 0)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                          errors="strict", max_num_fields=most)
    except UnicodeDecodeError:
        raise PageError("A field is not valid UTF-8 text. Nothing was changed.") from None
    except ValueError:
        raise PageError(f"The form has more than {most} fields. Nothing was changed.") from None
    fields: dict[str, str] = {}
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if len(value) > MAX_FIELD_CHARS:
            raise PageError(f"A field is longer than {MAX_FIELD_CHARS} characters. Nothing was changed.")
        if name in lists:
            values.setdefault(name, []).append(value)
        elif name in fields:
            raise PageError("A field was sent twice. Nothing was changed.")
        else:
            fields[name] = value
    if len(fields) > MAX_FIELDS or any(len(v) > MAX_LIST_VALUES for v in values.values()):
        raise PageError(f"The form has more than {MAX_FIELDS} fields, or more than {MAX_LIST_VALUES} "
                        "ticked boxes. Nothing was changed.")
    return Form(fields, values)
