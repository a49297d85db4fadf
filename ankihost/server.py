"""Wiring: settings → account source → registry (every known user's folder prepared) → app."""

from __future__ import annotations

import sqlite3

from ankihost.accounts.env import EnvAccounts
from ankihost.config import ConfigError, Settings
from ankihost.registry import Registry
from ankihost.web.app import SyncApp


def build(settings: Settings) -> SyncApp:
    registry = Registry(EnvAccounts.from_settings(settings), settings.base)
    try:
        registry.prepare_all()
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"SYNC_BASE={settings.base}: cannot prepare user folders: {exc}") from exc
    return SyncApp(settings, registry)
