"""The audit trail: logins, failures, throttling, every account and device change.

Each event is one log line (logger `ankihost.audit`) and one row of the account store's `audit`
table, newest first for the admin page. Values are capped and stripped of control characters,
and callers pass no secrets: events name accounts, devices, addresses and client versions only.
"""

from __future__ import annotations

import logging

from ankihost.accounts.store import AccountStore
from ankihost.log import printable

log = logging.getLogger("ankihost.audit")


class Audit:
    def __init__(self, store: AccountStore, actor: str) -> None:
        self.store = store
        self.actor = actor  # who changes things here: "server", "cli", "admin page", …

    def record(self, event: str, account: str | None = None, actor: str | None = None,
               **detail: object) -> None:
        text = " ".join(f"{key}={printable(str(value))}" for key, value in detail.items())
        who = actor or self.actor
        log.info("%s account=%s actor=%s %s", event, printable(account or "-"), who, text)
        self.store.add_audit(who, account, event, text)
