"""Wiring: settings → users → per-user folders and state → the ASGI app."""

from __future__ import annotations

import logging
import sqlite3

from ankihost import media
from ankihost.config import ConfigError, Settings
from ankihost.registry import Registry
from ankihost.storage.paths import UserFolder, remove_stale_temps
from ankihost.users import load_users
from ankihost.web.app import SyncApp

log = logging.getLogger(__name__)


def build(settings: Settings) -> SyncApp:
    users = load_users(settings)
    folders = {user.name: UserFolder(settings.base / user.name) for user in users}
    try:
        for folder in folders.values():
            folder.ensure()
            media.prepare(folder)
            if removed := remove_stale_temps(folder):
                log.info("removed leftovers of an interrupted run in %s: %s", folder.root, removed)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"SYNC_BASE={settings.base}: cannot prepare user folders: {exc}") from exc
    return SyncApp(settings, Registry(users, folders))
