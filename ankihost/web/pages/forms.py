"""Reading forms and query strings: bounded, strict UTF-8, one value per name.

Forms are the browser's default encoding, `application/x-www-form-urlencoded`, read with a
size cap before parsing. Anything else is refused with a page error and nothing is changed:
another encoding (415), a body over MAX_FORM_BYTES (413), a field that is not UTF-8, repeated,
longer than MAX_FIELD_CHARS, or too many fields (400).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from ankihost.web.pages.errors import PageError, TooLarge, WrongType

MAX_FORM_BYTES = 64 * 1024
MAX_QUERY_BYTES = 4 * 1024
MAX_FIELDS = 16
# Passwords may be up to 1024 characters (admin/accounts.py); nothing a form sends is longer.
MAX_FIELD_CHARS = 2048
FORM_TYPE = "application/x-www-form-urlencoded"


class Form:
    """The fields of one form or query string."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields

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


async def read_form(request: Request) -> Form:
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
    return parse(bytes(body))


def read_query(request: Request) -> Form:
    raw = request.scope.get("query_string", b"")
    if len(raw) > MAX_QUERY_BYTES:
        raise PageError(f"The address is longer than {MAX_QUERY_BYTES} bytes.")
    return parse(raw)


def parse(raw: bytes) -> Form:
    """Fields of an urlencoded body or query string; PageError for anything unusable."""
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                          errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise PageError("A field is not valid UTF-8 text. Nothing was changed.") from None
    except ValueError:
        raise PageError(f"The form has more than {MAX_FIELDS} fields. Nothing was changed.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise PageError("A field was sent twice. Nothing was changed.")
        if len(value) > MAX_FIELD_CHARS:
            raise PageError(f"A field is longer than {MAX_FIELD_CHARS} characters. Nothing was changed.")
        fields[name] = value
    return Form(fields)
