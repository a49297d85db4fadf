"""Wiring: take the data folder, then settings → accounts → registry (every known user's folder
prepared) → the app. Nothing in SYNC_BASE is touched before the data-folder lock is held."""

from __future__ import annotations

import logging
import sqlite3

from ankihost.admin.lock import SERVER, DataFolderLock, FolderBusy
from ankihost.admin.operations import open_context
from ankihost.config import ConfigError, Settings
from ankihost.storage.paths import DataFolder
from ankihost.web.app import SyncApp

log = logging.getLogger(__name__)

# A server that finds an admin command working on its data folder waits this long for it.
ADMIN_WAIT_SECS = 60


def build(settings: Settings) -> SyncApp:
    lock = DataFolderLock(DataFolder(settings.base))
    try:
        lock.acquire_waiting(SERVER, f"serving {settings.host}:{settings.port}", ADMIN_WAIT_SECS)
    except FolderBusy as busy:
        raise ConfigError(f"{busy}; run one ankihost server per SYNC_BASE") from None
    except OSError as exc:
        raise ConfigError(f"SYNC_BASE={settings.base}: cannot use the data folder: {exc}") from exc
    try:
        return _app(settings, lock)
    except BaseException:
        lock.release()
        raise


def _app(settings: Settings, lock: DataFolderLock) -> SyncApp:
    context = open_context(settings, actor="server")
    try:
        if not context.directory.names():
            raise ConfigError("no users: set SYNC_USER1=username:password, or add one with "
                              "`ankihost user add NAME`")
        for name in context.directory.end_keys_of_changed_env_passwords():
            log.info("the SYNC_USERn value of %s changed: its devices must log in again", name)
        context.registry.prepare_all()
    except (OSError, sqlite3.Error) as exc:
        context.close()
        raise ConfigError(f"SYNC_BASE={settings.base}: cannot prepare user folders: {exc}") from exc
    except BaseException:
        context.close()
        raise
    return SyncApp(settings, context, lock)
