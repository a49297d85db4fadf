"""The running server's admin channel: a Unix socket in SYNC_BASE/.ankihost, and its client.

One request per connection: the client sends one JSON line `{"op": …, "args": {…}}`; the
server runs the operation and answers one JSON line, `{"ok": true, "result": …}` or
`{"ok": false, "error": "…", "status": 4xx}`. A request with `"progress": true` may get, before
that answer, any number of lines `{"progress": {…}}` (`admin/progress.py`); a request without
it never does, so clients of the one-line protocol keep working, and a client that asks for
progress reads the one-line answer of an older server just as well. A client that goes away
while its operation reports progress cancels it. Only the server's own user and root may connect
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

from ankihost.admin import progress
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
                reply = await self._answer(await reader.readline(), reader, writer)
            writer.write(orjson.dumps(reply) + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            log.info("admin channel: a client went away or sent too much")
        finally:
            writer.close()

    async def _answer(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
        try:
            request = orjson.loads(line)
            operation = self.table[request["op"]]
            args = request.get("args")
            args = {} if args is None else args
            if not isinstance(args, dict):
                raise TypeError("args must be an object")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: {exc}", "status": 400}
        stream = _ProgressStream(writer) if request.get("progress") is True else None
        watching = asyncio.create_task(stream.watch(reader)) if stream else None
        try:
            with progress.reporting(stream):
                return {"ok": True, "result": await operation(self.context, args)}
        except AdminError as exc:
            return {"ok": False, "error": exc.message, "status": exc.status}
        except progress.OperationCancelled:
            log.info("admin operation %s cancelled: its client went away", request["op"])
            return {"ok": False, "error": "cancelled", "status": 499}
        except Exception:
            log.exception("admin operation %s failed", request["op"])
            return {"ok": False, "error": "the operation failed on the server; see its log",
                    "status": 500}
        finally:
            if watching is not None:
                watching.cancel()


class _ProgressStream:
    """Sends an operation's progress events down its connection, from any thread; raises
    OperationCancelled in the operation once the client has gone."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.gone = False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.gone:
            raise progress.OperationCancelled("the command that asked for it went away")
        self.loop.call_soon_threadsafe(self._write, orjson.dumps({"progress": event}) + b"\n")

    def _write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def watch(self, reader: asyncio.StreamReader) -> None:
        """The client sends nothing after its request: the end of its stream means it left."""
        with contextlib.suppress(ConnectionError):
            await reader.read(1)
        self.gone = True


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


def call(
    folder: DataFolder, op: str, args: dict[str, Any], on_progress: progress.Reporter | None = None
) -> Any:
    """Run `op` in the running server; its result, or AdminError as the server refused it.
    With `on_progress`, the server's progress events are passed to it as they come."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CLIENT_TIMEOUT_SECS)
    try:
        with _reachable(folder.control_socket) as address:
            sock.connect(address)
    except OSError as exc:
        sock.close()
        raise ChannelUnavailable(str(exc)) from None
    request: dict[str, Any] = {"op": op, "args": args}
    if on_progress is not None:
        request["progress"] = True
    with sock, sock.makefile("rb") as lines:
        sock.sendall(orjson.dumps(request) + b"\n")
        reply = _reply(lines, on_progress)
    if not reply.get("ok"):
        raise AdminError(str(reply.get("error")), int(reply.get("status", 400)))
    return reply.get("result")


def _reply(lines: Any, on_progress: progress.Reporter | None) -> dict[str, Any]:
    """The answer, passing the progress lines before it to `on_progress`."""
    while True:
        line = lines.readline()
        if not line.endswith(b"\n"):
            raise ChannelUnavailable("the server closed the channel without an answer")
        value = orjson.loads(line)
        if not isinstance(value, dict):
            raise ChannelUnavailable(f"the server answered {line[:200]!r}")
        if "progress" in value and "ok" not in value:
            if on_progress is not None:
                on_progress(value["progress"])
            continue
        return value
