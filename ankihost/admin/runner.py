"""Running an admin operation from the command line, whether or not a server runs.

If a server holds the data folder, the operation is sent to it over its admin channel and
the server carries it out (so it takes effect at once and never opens a collection behind the
server's back). Otherwise the command takes the data-folder lock itself — a server starting
meanwhile waits for it — and runs the same operation in process.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from ankihost.admin import channel, progress
from ankihost.admin.lock import ADMIN, SERVER, DataFolderLock, FolderBusy
from ankihost.admin.operations import AdminError, open_context, operations
from ankihost.config import ConfigError, Settings
from ankihost.storage.paths import DataFolder

# How long a command waits for another admin command, or for a starting server's channel.
WAIT_SECS = 30
RETRY_SECS = 0.2


def run(
    settings: Settings, op: str, args: dict[str, Any], on_progress: progress.Reporter | None = None
) -> Any:
    """The operation's result; AdminError when it was refused or failed. `on_progress` hears
    its progress events (`admin/progress.py`), wherever it runs."""
    folder = DataFolder(settings.base)
    lock = DataFolderLock(folder)
    deadline = time.monotonic() + WAIT_SECS
    while True:
        try:
            lock.acquire_waiting(ADMIN, f"ankihost {op}", max(0.0, deadline - time.monotonic()))
            break
        except FolderBusy as busy:
            if busy.holder is not None and busy.holder.role != SERVER:
                raise AdminError(f"{busy}; try again when it is done") from None
            try:
                return channel.call(folder, op, args, on_progress)
            except channel.ChannelUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise AdminError(f"{busy}, but it does not answer on {folder.control_socket}: "
                                     f"{exc}") from None
            time.sleep(RETRY_SECS)
        except OSError as exc:
            raise AdminError(f"SYNC_BASE={settings.base}: cannot use the data folder: {exc}") from None
    try:
        return _run_here(settings, op, args, on_progress)
    finally:
        lock.release()


def _run_here(
    settings: Settings, op: str, args: dict[str, Any], on_progress: progress.Reporter | None
) -> Any:
    try:
        context = open_context(settings, actor="cli")
    except ConfigError as exc:
        raise AdminError(str(exc)) from None
    try:
        with progress.reporting(on_progress):
            return anyio.run(operations()[op], context, args)
    finally:
        for state in context.registry.all():  # nothing else runs: no lock needed
            state.close()
        context.close()
