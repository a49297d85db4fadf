"""`hostKey`: exchange a user name and password for a host key.

The account source decides the key and does the same work for an unknown name as for a wrong
password, so both get the same answer after the same time.
"""

from __future__ import annotations

from ankihost.accounts.source import AccountSource
from ankihost.errors import BadRequest
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply, json_reply


def host_key(accounts: AccountSource, request: SyncRequest) -> Reply:
    body = request.json_object()
    name, password = body.get("u"), body.get("p")
    if not isinstance(name, str) or not isinstance(password, str):
        raise BadRequest("hostKey needs string fields u and p")
    return json_reply({"key": accounts.login(name, password)})
