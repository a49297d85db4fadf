"""Which media file names a user may have, and the only way to turn one into a path.

The official server's rules (`protocol_problem`), the rules for joining a name to the media
folder safely (`path_problem`), and the stricter ones for storing a new file
(`addition_problem`). Every path into the media folder is built by `media_path` after its name
was checked. No I/O here.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from ankihost.errors import BadRequest

# The official server's limit on a media file name, in bytes of UTF-8 (clients use 120).
MAX_NAME_BYTES = 255
_CONTROL_CHARS = frozenset(chr(c) for c in [*range(0x20), 0x7F])


def protocol_problem(name: str) -> str | None:
    """Why the official server rejects `name` in any upload entry (addition or deletion)."""
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    if not unicodedata.is_normalized("NFC", name):
        return "is not in Unicode NFC"
    if "/" in name:
        return "contains '/'"
    return None


def path_problem(name: str) -> str | None:
    """Why `name` cannot be joined to the media folder, or None when it is a plain file name."""
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in name or "\x00" in name:
        return "contains '/' or NUL"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode"
    return None


def addition_problem(name: str) -> str | None:
    """Why we refuse to store a new file under `name` (the official rules, plus safety ones).

    Beyond the official server we refuse '\\' and ASCII control characters: no current client
    uploads such names (its own normalisation removes them), and they are unsafe on some hosts.
    """
    problem = protocol_problem(name) or path_problem(name)
    if problem is None and "\\" in name:
        problem = "contains '\\'"
    if problem is None and not _CONTROL_CHARS.isdisjoint(name):
        problem = "contains a control character"
    return problem


def require_path_name(name: str) -> None:
    """BadRequest when `name` is not a plain file name (so it can never have been stored)."""
    problem = path_problem(name)
    if problem is not None:
        raise BadRequest(f"media file name {name!r:.300} {problem}")


def media_path(folder: Path, name: str) -> Path:
    """`folder/name`, or BadRequest when `name` is not a plain file name."""
    require_path_name(name)
    return folder / name

