"""`hostKey`: exchange a user name and password for the user's host key.

An unknown user and a wrong password get the same answer after the same amount of work.
"""

from __future__ import annotations

from ankihost import auth
from ankihost.errors import AuthFailed, BadRequest
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply, json_reply
from ankihost.registry import Registry

_DECOY_PASSWORD = "ankihost-decoy-password-never-valid"


def host_key(registry: Registry, request: SyncRequest) -> Reply:
    body = request.json_object()
    name, password = body.get("u"), body.get("p")
    if not isinstance(name, str) or not isinstance(password, str):
        raise BadRequest("hostKey needs string fields u and p")
    state = registry.by_name(name)
    if state is None:
        _same_work_as_a_real_check(registry, password)
        raise AuthFailed(f"unknown user {name!r}")
    if not state.user.check_password(password):
        raise AuthFailed(f"wrong password for {name!r}")
    return json_reply({"key": state.user.host_key})


def _same_work_as_a_real_check(registry: Registry, password: str) -> None:
    """For an unknown name, do what checking a real user's password costs: a PBKDF2 run
    against a configured hash, or a plain comparison when passwords are not hashed."""
    decoy = registry.decoy_hash()
    if decoy is not None:
        decoy.verify(password)
    else:
        auth.plain_matches(_DECOY_PASSWORD, password)
