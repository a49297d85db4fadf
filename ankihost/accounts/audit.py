"""The audit trail: logins, failures, throttling, every account and device change.

Each event is one log line (logger `ankihost.audit`) and one row of the account store's `audit`
table, newest first for the admin page; the line's fields also travel as `extra` fields
(keys of their own in the JSON log format). Values are capped and stripped of control characters,
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
        shown = {key: printable(str(value)) for key, value in detail.items()}
        text = " ".join(f"{key}={value}" for key, value in shown.items())
        who = actor or self.actor
        fields = {"event": event, "account": printable(account or "-"), "actor": who, **shown}
        log.info("%s account=%s actor=%s %s", event, fields["account"], who, text,
                 extra={"fields": fields})
        self.store.add_audit(who, account, event, text)
