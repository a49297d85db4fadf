"""A small wrapper around the real Anki client (the ``anki`` wheel).

Every network operation goes through the official Rust sync client behind
``anki.collection.Collection``, the same calls Anki desktop makes:

    col.sync_login(user, password, endpoint)   -> SyncAuth (hkey, endpoint)
    col.sync_collection(auth, sync_media)      -> SyncOutput (.required)
    col.close_for_full_sync()
    col.full_upload_or_download(auth=, server_usn=, upload=)
    col.reopen(after_full_sync=True)           (always, even after an error)
    col.sync_media(auth) + col.media_sync_status() polling

Quirks handled here:

* The endpoint must end with ``/``; the client appends ``sync/...`` to it.
* Auth carries the endpoint, so :meth:`SyncClient.auth` rebuilds it from the
  current server each time (a restarted server may be on another port).
* After a server restart, the client's pooled keep-alive connections are
  dead and the first request(s) fail with ``NetworkError``; like a user
  pressing Sync again, such calls are retried a few times.
* After a full sync the Python-side notetype cache is stale; it is cleared.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from anki.collection import Collection
from anki.errors import NetworkError, SyncError, SyncErrorKind
from anki.sync import SyncAuth, SyncOutput

T = TypeVar("T")

NO_CHANGES = SyncOutput.NO_CHANGES
NORMAL_SYNC = SyncOutput.NORMAL_SYNC
FULL_SYNC = SyncOutput.FULL_SYNC
FULL_DOWNLOAD = SyncOutput.FULL_DOWNLOAD
FULL_UPLOAD = SyncOutput.FULL_UPLOAD


class HasEndpoint(Protocol):
    """Anything with a client endpoint URL and a start counter (SyncServer)."""

    @property
    def endpoint(self) -> str: ...

    starts: int


class FullSyncRequired(Exception):
    """The server reported a conflict (FULL_SYNC) and no direction was given."""


@dataclass(frozen=True)
class SyncResult:
    required: int  # SyncOutput.ChangesRequired as reported by sync_collection()
    action: str  # "normal" | "upload" | "download"
    server_media_usn: int


def is_auth_error(exc: BaseException) -> bool:
    """True for the error the client raises on a refused login/hkey."""
    return isinstance(exc, SyncError) and exc.kind == SyncErrorKind.AUTH


class SyncClient:
    """One device: a collection (and its media folder) in its own folder."""

    def __init__(
        self,
        server: HasEndpoint,
        username: str,
        password: str,
        *,
        folder: str | Path | None = None,
        name: str = "client",
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self._own_folder = folder is None
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix=f"ankihost-{name}-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = str(self.folder / "collection.anki2")
        self.col = Collection(self.path)
        self.hkey: str | None = None
        self._seen_starts = server.starts

    # -- plumbing -------------------------------------------------------------
    def use_server(self, server: HasEndpoint, *, keep_login: bool = False) -> None:
        """Talk to another server from now on: forgets the host key, unless `keep_login`
        (what a device does when the server's URL changes but it stays logged in)."""
        self.server = server
        if not keep_login:
            self.hkey = None
        self._seen_starts = -1  # treat as restarted: tolerate stale connections

    def _call(self, fn: Callable[[], T]) -> T:
        restarted = self.server.starts != self._seen_starts
        attempts = 4 if restarted else 1
        for attempt in range(attempts):
            try:
                result = fn()
            except NetworkError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)
            else:
                self._seen_starts = self.server.starts
                return result
        raise AssertionError("unreachable")

    # -- auth -------------------------------------------------------------------
    def login(self, password: str | None = None) -> str:
        """Log in (with ``password`` or the client's own); returns the hkey.
        Raises ``SyncError`` (see :func:`is_auth_error`) when refused."""
        pw = self.password if password is None else password
        auth = self._call(lambda: self.col.sync_login(self.username, pw, self.server.endpoint))
        self.hkey = auth.hkey
        return auth.hkey

    def auth(self) -> SyncAuth:
        if self.hkey is None:
            self.login()
        return SyncAuth(hkey=self.hkey, endpoint=self.server.endpoint)

    # -- collection sync -------------------------------------------------------
    def sync(self, *, on_conflict: str | None = None, media: bool = False) -> SyncResult:
        """What pressing Sync does: a normal sync, and the full upload/download
        the server asks for. A real conflict (FULL_SYNC) raises
        :class:`FullSyncRequired` unless ``on_conflict`` is "upload"/"download"."""
        out = self._call(lambda: self.col.sync_collection(self.auth(), media))
        self._after_sync()
        required = out.required
        if required == FULL_SYNC:
            if on_conflict not in ("upload", "download"):
                raise FullSyncRequired(f"server requires a full sync: {out}")
            required = FULL_UPLOAD if on_conflict == "upload" else FULL_DOWNLOAD
        if required == FULL_UPLOAD:
            self.full_upload(out.server_media_usn)
            return SyncResult(out.required, "upload", out.server_media_usn)
        if required == FULL_DOWNLOAD:
            self.full_download(out.server_media_usn)
            return SyncResult(out.required, "download", out.server_media_usn)
        return SyncResult(out.required, "normal", out.server_media_usn)

    def full_upload(self, server_usn: int | None = None) -> None:
        """Replace the server's collection with this one."""
        self._full(upload=True, server_usn=server_usn)

    def full_download(self, server_usn: int | None = None) -> None:
        """Replace this collection with the server's."""
        self._full(upload=False, server_usn=server_usn)

    def _full(self, *, upload: bool, server_usn: int | None) -> None:
        auth = self.auth()

        def once() -> None:
            self.col.close_for_full_sync()
            try:
                self.col.full_upload_or_download(auth=auth, server_usn=server_usn, upload=upload)
            finally:
                # the backend has closed the collection whatever happened
                self.col.reopen(after_full_sync=True)

        self._call(once)
        self._after_sync()

    def _after_sync(self) -> None:
        # as Anki desktop does: scheduler/notetypes may have changed on disk
        self.col._load_scheduler()
        self.col.models._clear_cache()

    def sync_status(self) -> int:
        return self._call(lambda: self.col.sync_status(self.auth())).required

    # -- media ---------------------------------------------------------------------
    @property
    def media_dir(self) -> Path:
        return Path(self.col.media.dir())

    def sync_media(self, timeout: float = 300.0) -> None:
        """Run a media sync to completion; re-raises the sync's error.

        A full sync given the server's media USN starts a media sync in the background, and
        `col.sync_media()` does nothing while one runs: files written meanwhile would never be
        sent. So a running one is waited for first."""

        def wait(deadline: float) -> None:
            while self.col.media_sync_status().active:  # raises the sync's error
                if time.monotonic() > deadline:
                    self.col.abort_media_sync()
                    raise TimeoutError(f"media sync did not finish within {timeout}s")
                time.sleep(0.01)

        def run() -> None:
            deadline = time.monotonic() + timeout
            wait(deadline)
            self.col.sync_media(self.auth())
            wait(deadline)

        self._call(run)

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        if self.col.db is not None:
            self.col.close()

    def cleanup(self) -> None:
        """Close the collection; delete the folder if this object made it."""
        try:
            self.close()
        finally:
            if self._own_folder:
                shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
