"""Changing a client's media folder the way a user (or their file manager) would.

The client rescans the folder only when its mtime, in whole seconds, moved since the last
scan, and rehashes a file only when the file's mtime moved; both are pushed forward here
explicitly, so tests never wait for the clock.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

_SECOND_NS = 1_000_000_000
_folder_mtimes: dict[Path, int] = {}


def touch_folder(folder: Path) -> None:
    """Move the folder's mtime past any earlier one so the client rescans it."""
    mtime_ns = max(folder.stat().st_mtime_ns, _folder_mtimes.get(folder, 0)) + 2 * _SECOND_NS
    os.utime(folder, ns=(mtime_ns, mtime_ns))
    _folder_mtimes[folder] = mtime_ns


def write_media(folder: Path, files: dict[str, bytes | None]) -> None:
    """Add or replace files, or delete those mapped to None; then make the client notice."""
    for name, content in files.items():
        path = folder / name
        old_mtime_ns = path.stat().st_mtime_ns if path.exists() else 0
        if content is None:
            path.unlink()
            continue
        path.write_bytes(content)
        mtime_ns = max(path.stat().st_mtime_ns, old_mtime_ns + 2 * _SECOND_NS)
        os.utime(path, ns=(mtime_ns, mtime_ns))
    touch_folder(folder)


def media_zip(entries: Sequence[tuple[str, bytes | None]], meta: object = None) -> bytes:
    """A media upload zip as clients send it: each file as "0", "1", …, and `_meta` listing
    [name, zip entry] pairs (entry None: the file is deleted); `meta` replaces that listing."""
    buf = io.BytesIO()
    listed: list[list[str | None]] = []
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, content) in enumerate(entries):
            if content is not None:
                zf.writestr(str(i), content)
            listed.append([name, None if content is None else str(i)])
        zf.writestr("_meta", json.dumps(listed if meta is None else meta))
    return buf.getvalue()
