"""`hostKey`: exchange a user name and password for a host key.

The account directory decides the key (the official derived one, or a new one for this device)
and does the same work for an unknown name as for a wrong password, so both get the same answer
after the same time; `web/logins.py` throttles and runs it. This module reads the request and
writes the reply.
"""

from __future__ import annotations

from ankihost.errors import BadRequest
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply, json_reply


def credentials(request: SyncRequest) -> tuple[str, str]:
    """The name and password a `hostKey` request carries; 400 when they are not strings."""
    body = request.json_object()
    name, password = body.get("u"), body.get("p")
    if not isinstance(name, str) or not isinstance(password, str):
        raise BadRequest("hostKey needs string fields u and p")
    return name, password


def reply(host_key: str) -> Reply:
    return json_reply({"key": host_key})
