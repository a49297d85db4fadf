"""Downloading a user's collection package (.colpkg) from the pages: the admin's for any user,
the account page's for the signed-in user only. A GET that changes nothing.

The admin operation `export.create` writes the package into a new `.export-<random>/` folder
of the user's (`storage/paths.py`); the file is opened and the folder removed at once, so the
open file is all that is left, and it is gone when the response ends however it ends (sent,
client gone, server killed); a crash before that leaves the folder to the leftover sweep at
the next start. The file is then sent in CHUNK_BYTES pieces (memory stays flat whatever the
size). At most MAX_WRITING packages are written at once per area, one per user.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ankihost.admin.operations import AdminContext, AdminError, operations
from ankihost.errors import SyncError
from ankihost.web.pages.errors import Busy, Conflict, NotFoundPage, ServerFailure, from_admin_error
from ankihost.web.pages.render import NO_STORE, SECURITY_HEADERS

log = logging.getLogger("ankihost.pages")

CHUNK_BYTES = 256 * 1024
# Packages written at once in one area (each is a copy of a collection, compressed: CPU and disk).
MAX_WRITING = 2
# How long a download waits for the user's sync to end before it is refused (409): a browser,
# and a proxy in front of the account page, would give up on a much longer wait.
WAIT_SECS = 30
PACKAGE_NAME = "collection.colpkg"
SUFFIX = ".colpkg"
_UNSAFE_IN_QUOTES = re.compile(r"[^A-Za-z0-9 ._()-]")


def attachment(filename: str) -> str:
    """A Content-Disposition for `filename`: an ASCII fallback, and the name itself (RFC 6266)."""
    fallback = _UNSAFE_IN_QUOTES.sub("_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def package_filename(name: str, media: bool) -> str:
    return f"{name}{SUFFIX}" if media else f"{name} (no media){SUFFIX}"


class PackageResponse(Response):
    """An open package file, sent in pieces and closed at the end, whatever ends it."""

    def __init__(self, file: BinaryIO, size: int, filename: str) -> None:
        super().__init__(headers={
            **SECURITY_HEADERS, **NO_STORE, "Content-Length": str(size),
            "Content-Disposition": attachment(filename),
        }, media_type="application/octet-stream")
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope.get("method") != "HEAD":
                while piece := await anyio.to_thread.run_sync(self.file.read, CHUNK_BYTES):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.file.close()


class PackageHead(Response):
    """The answer to HEAD for a package: its headers, without writing the package (its size is
    not known until it is written, so the reply says it would be sent in chunks)."""

    def __init__(self, filename: str) -> None:
        super().__init__(headers={
            **SECURITY_HEADERS, **NO_STORE, "Content-Disposition": attachment(filename),
        }, media_type="application/octet-stream")
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class Exports:
    """The packages one area writes: `download(name)` is the response that sends one."""

    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self.ops = operations()
        self.wait_secs: float = WAIT_SECS
        self.writing: set[str] = set()

    async def download(self, name: str, *, media: bool, back: str, head: bool = False) -> Response:
        if head:  # what a GET would send, without writing a package for it
            if self.context.registry.by_name(name) is None:
                raise NotFoundPage(f"There is no user {name!r}.", back=back)
            return PackageHead(package_filename(name, media))
        if name in self.writing:
            raise Conflict(f"The collection of {name} is being prepared for a download already: "
                           "wait for that download to start.", back=back)
        if len(self.writing) >= MAX_WRITING:
            raise Busy("The server is preparing other downloads right now. Try again in a minute.",
                       back=back)
        self.writing.add(name)
        try:
            file = await self._write(name, media, back)
        finally:
            self.writing.discard(name)
        size = os.fstat(file.fileno()).st_size
        return PackageResponse(file, size, package_filename(name, media))

    async def _write(self, name: str, media: bool, back: str) -> BinaryIO:
        """The package, written and opened; its folder already removed."""
        state = self.context.registry.by_name(name)
        if state is None:
            raise NotFoundPage(f"There is no user {name!r}.", back=back)
        try:
            await state.ensure_prepared()  # before writing in the folder: preparing sweeps it
        except SyncError:
            raise NotFoundPage(f"There is no user {name!r}.", back=back) from None
        folder = await anyio.to_thread.run_sync(state.folder.new_export_dir)
        try:
            dest = folder.absolute() / PACKAGE_NAME
            await self._export(name, dest, media, back)
            return await anyio.to_thread.run_sync(dest.open, "rb")
        finally:
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))

    async def _export(self, name: str, dest: Path, media: bool, back: str) -> dict[str, Any]:
        args = {"name": name, "dest": str(dest), "media": media, "wait_secs": self.wait_secs, "download": True}
        try:
            result: dict[str, Any] = await self.ops["export.create"](self.context, args)
        except AdminError as error:
            if error.status < 500:
                raise from_admin_error(error, back=back) from None
            log.error("the export of %s for a download failed: %s", name, error.message)
            raise ServerFailure("The collection could not be exported. The server's log says "
                                "why.", back=back) from None
        if result["skipped_count"]:
            log.warning("the export of %s left out %d media file(s) Anki cannot import: %s", name,
                        result["skipped_count"], ", ".join(result["skipped"]))
        return result
