"""The running server's admin channel: a Unix socket in SYNC_BASE/.ankihost, and its client.

One request per connection: the client sends one JSON line `{"op": …, "args": {…}}`; the
server runs the operation and answers one JSON line, `{"ok": true, "result": …}` or
`{"ok": false, "error": "…", "status": 4xx}`. Only the server's own user and root may connect
(the socket is 0600 and the peer's uid is checked). Passwords travel here, never on argv.
Socket paths are limited to ~108 bytes, so a long SYNC_BASE is reached through
/proc/self/fd/<the state folder>.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ankihost.admin.operations import AdminContext, AdminError, Operation
from ankihost.storage.paths import DataFolder

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024
# Admin operations may wait for a user's sync to end; the client waits this long for an answer.
CLIENT_TIMEOUT_SECS = 600
_SUN_PATH_MAX = 100
_UCRED = struct.Struct("3i")


@contextlib.contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """A path to `path` short enough for a socket address."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ChannelServer:
    def __init__(self, folder: DataFolder, context: AdminContext, table: dict[str, Operation]) -> None:
        self.path = folder.control_socket
        self.context = context
        self.table = table
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # a dead server's; we hold the data-folder lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _reachable(self.path) as address:
            sock.bind(address)  # in .ankihost (0700), so no one else can reach it meanwhile
        os.chmod(self.path, 0o600)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _peer_allowed(writer.get_extra_info("socket")):
                reply: dict[str, Any] = {"ok": False, "error": "not allowed", "status": 403}
            else:
                reply = await self._answer(await reader.readline())
            writer.write(orjson.dumps(reply) + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            log.info("admin channel: a client went away or sent too much")
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = orjson.loads(line)
            operation = self.table[request["op"]]
            args = request.get("args")
            args = {} if args is None else args
            if not isinstance(args, dict):
                raise TypeError("args must be an object")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: {exc}", "status": 400}
        try:
            return {"ok": True, "result": await operation(self.context, args)}
        except AdminError as exc:
            return {"ok": False, "error": exc.message, "status": exc.status}
        except Exception:
            log.exception("admin operation %s failed", request["op"])
            return {"ok": False, "error": "the operation failed on the server; see its log",
                    "status": 500}


def _peer_allowed(sock: socket.socket | None) -> bool:
    if sock is None:
        return False
    try:
        _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return False
    return uid in (0, os.geteuid())


class ChannelUnavailable(Exception):
    """No server answers on the channel."""


def call(folder: DataFolder, op: str, args: dict[str, Any]) -> Any:
    """Run `op` in the running server; its result, or AdminError as the server refused it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CLIENT_TIMEOUT_SECS)
    try:
        with _reachable(folder.control_socket) as address:
            sock.connect(address)
    except OSError as exc:
        sock.close()
        raise ChannelUnavailable(str(exc)) from None
    with sock:
        sock.sendall(orjson.dumps({"op": op, "args": args}) + b"\n")
        reply = orjson.loads(_read_line(sock))
    if not reply.get("ok"):
        raise AdminError(str(reply.get("error")), int(reply.get("status", 400)))
    return reply.get("result")


def _read_line(sock: socket.socket) -> bytes:
    pieces: list[bytes] = []
    while not (pieces and pieces[-1].endswith(b"\n")):
        piece = sock.recv(65536)
        if not piece:
            raise ChannelUnavailable("the server closed the channel without an answer")
        pieces.append(piece)
    return b"".join(pieces)
