"""The text rules a note row must follow: field cleaning, tag strings, sort field and checksum.

Pure functions over strings (spec 02 §5.3.5, §5.5.2); no SQL. The stored `sfld`/`csum` never
travel in normal sync but reach clients in full downloads, so they follow the reference rules.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from html.entities import name2codepoint

import re2

FIELD_SEPARATOR = "\x1f"
_TAG_SEPARATORS = re.compile("[ \u3000]")
# ASCII control characters (U+0000–U+001F and U+007F), except TAB and LF for note fields.
_FIELD_JUNK = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_TAG_JUNK = re.compile("[\x00-\x1f\x7f \u3000]")

# The client's own patterns, run by RE2: linear time whatever the text, with the same
# leftmost-first matching as the client's Rust engine (Python's `re` backtracks exponentially
# on crafted notes). One difference: RE2's \b is ASCII-only, which only matters for a
# non-ASCII letter glued to a tag or attribute name.
# <img|audio|video|object|source …> carrying a src= or data= attribute: keep the file name.
_MEDIA_TAG = re2.compile(
    r"""(?is)<\b(?:img|audio|video|object|source)\b(?:[^>]|"[^"]+?"|'[^']+?')+?"""
    r"""\b(?:src|data)\b=(?:"([^"]+?)"[^>]*>|'([^']+?)'[^>]*>|([^ >]+?)(?:\x20[^>]*>|>))"""
)
# One character reference; every `&` of a text must start one, or nothing is decoded.
_ENTITY = re.compile(r"&(?:#([0-9]+)|#x([0-9a-fA-F]+)|([A-Za-z][A-Za-z0-9]*));")
_MAX_CODEPOINT = 0x10FFFF
_HTML = re2.compile(r"(?is)(<!--.*?-->)|(<style.*?>.*?</style>)|(<script.*?>.*?</script>)|(<.*?>)")


def clean_field(text: str) -> str:
    """Drop ASCII control characters other than TAB and LF (no Unicode normalisation)."""
    return _FIELD_JUNK.sub("", text)


def split_fields(flds: str) -> list[str]:
    return [clean_field(f) for f in flds.split(FIELD_SEPARATOR)]


def join_fields(fields: list[str]) -> str:
    return FIELD_SEPARATOR.join(fields)


def split_tags(tags: str) -> list[str]:
    return [t for t in _TAG_SEPARATORS.split(tags) if t]


def join_tags(tags: list[str]) -> str:
    return f" {' '.join(tags)} " if tags else ""


def canonical_tag_string(tags: str) -> str:
    """A note's tag column: the tags re-split and re-joined, order and case kept."""
    return join_tags(split_tags(tags))


def strip_media_html(text: str) -> str:
    """HTML to plain text, keeping media file names; entities decoded only when `&` occurs."""
    if "<" in text:  # both patterns start with "<": a text without one is left as it is
        text = _MEDIA_TAG.sub(lambda m: f" {m.group(1) or m.group(2) or m.group(3)} ", text)
        text = _HTML.sub("", text)
    if "&" in text:
        decoded = decode_entities(text)
        if decoded is not None:
            text = decoded.replace("\u00a0", " ")
    return text


def decode_entities(text: str) -> str | None:
    """Decode HTML 4 named and numeric character references, strictly: a bare `&`, an
    unknown name, `&#X…`, a surrogate or an out-of-range number makes the whole text
    undecodable (None), which is how the reference treats it."""
    out: list[str] = []
    pos = 0
    while (amp := text.find("&", pos)) != -1:
        match = _ENTITY.match(text, amp)
        char = _entity_char(match) if match else None
        if char is None:
            return None
        out += [text[pos:amp], char]
        pos = match.end()  # type: ignore[union-attr]
    out.append(text[pos:])
    return "".join(out)


def _entity_char(match: re.Match[str]) -> str | None:
    decimal, hexadecimal, name = match.groups()
    if name is not None:
        code = name2codepoint.get(name)
        return None if code is None else chr(code)
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code > _MAX_CODEPOINT or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def field_checksum(first_field: str) -> int:
    """First 4 bytes, big-endian, of the SHA-1 of the stripped first field."""
    digest = hashlib.sha1(strip_media_html(first_field).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def sort_field(fields: list[str], sort_index: int) -> str:
    if 0 <= sort_index < len(fields):
        return strip_media_html(fields[sort_index])
    return ""


def normalize_tag_name(name: str) -> str:
    """One tag as registered: per `::` component NFC, junk removed, trimmed, empty → `blank`."""
    parts = []
    for component in name.split("::"):
        component = _TAG_JUNK.sub("", unicodedata.normalize("NFC", component)).strip()
        parts.append(component or "blank")
    return "::".join(parts)
