"""`hostKey`: exchange a user name and password for the user's host key.

An unknown user and a wrong password get the same answer after the same amount of work.
"""

from __future__ import annotations

from ankihost import auth
from ankihost.errors import AuthFailed, BadRequest
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply, json_reply
from ankihost.registry import Registry

# Verified when the user name is unknown, so that case costs as much as a wrong password.
_DECOY_HASH = auth.PasswordHash("sha256", b"ankihost-decoy!!", auth.DEFAULT_ROUNDS, bytes(32))


def host_key(registry: Registry, request: SyncRequest) -> Reply:
    body = request.json_object()
    name, password = body.get("u"), body.get("p")
    if not isinstance(name, str) or not isinstance(password, str):
        raise BadRequest("hostKey needs string fields u and p")
    state = registry.by_name(name)
    if state is None:
        decoy = registry.decoy_hash() or _DECOY_HASH
        decoy.verify(password)
        raise AuthFailed(f"unknown user {name!r}")
    if not state.user.check_password(password):
        raise AuthFailed(f"wrong password for {name!r}")
    return json_reply({"key": state.user.host_key})
