"""`ankihost healthcheck`: does the server configured in this environment answer `GET /health`?

It reads the same settings as the server (SYNC_HOST, SYNC_PORT, and ANKIHOST_TLS_CERT for
HTTPS) and asks over loopback when the server listens on every address. Exit status 0 when
the answer is 200, else 1 with the reason on stderr: for Docker's HEALTHCHECK and monitoring.
It checks that the server answers, not its certificate (no name or chain verification).
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from ankihost.config import SETTINGS, ConfigError

HEALTH_TIMEOUT_SECONDS = 3.0
# Declared by built-in HTTPS (tls/context.py); set means the sync port speaks TLS.
TLS_CERT_SETTING = "ANKIHOST_TLS_CERT"
# A server listening on every address is asked on the loopback address of the same family.
_LOOPBACK_FOR = {"0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/health"


def target_from_env(environ: Mapping[str, str]) -> Target:
    """Where the server configured by `environ` answers; ConfigError names a bad variable."""
    host, port = str(_setting(environ, "SYNC_HOST")), _setting(environ, "SYNC_PORT")
    assert isinstance(port, int)
    if port == 0:
        raise ConfigError("SYNC_PORT=0 picks a random port: there is no fixed port to check")
    return Target(_LOOPBACK_FOR.get(host, host), port, bool(environ.get(TLS_CERT_SETTING)))


def _setting(environ: Mapping[str, str], name: str) -> object:
    """One setting, read and checked by the server's own parser (the others may be unset)."""
    setting = next(s for s in SETTINGS if s.name == name)
    raw = environ.get(name, setting.default or "")
    assert setting.parse is not None
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is invalid: {exc}") from None


def probe(target: Target, timeout: float = HEALTH_TIMEOUT_SECONDS) -> str | None:
    """None when `GET /health` answers 200, else why not."""
    connection = _connection(target, timeout)
    try:
        connection.request("GET", "/health")
        status = connection.getresponse().status
    except ConnectionRefusedError:
        return f"nothing listens on {target.host}:{target.port} (connection refused)"
    except TimeoutError:
        return f"no answer from {target.url} within {timeout:g} s"
    except ssl.SSLError as exc:
        return f"TLS with {target.host}:{target.port} failed ({exc.reason or exc}); is {TLS_CERT_SETTING} right?"
    except (OSError, http.client.HTTPException) as exc:
        return f"{target.url} failed: {exc or type(exc).__name__}"
    finally:
        connection.close()
    return None if status == 200 else f"{target.url} answered {status}"


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    if not target.tls:
        return http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection(target.host, target.port, timeout=timeout, context=context)


def healthcheck_command(environ: Mapping[str, str] = os.environ, timeout: float = HEALTH_TIMEOUT_SECONDS) -> int:
    """`ankihost healthcheck`: exit status 0 when healthy, else 1 with the reason on stderr."""
    try:
        target = target_from_env(environ)
    except ConfigError as exc:
        print(f"ankihost healthcheck: configuration error: {exc}", file=sys.stderr)
        return 1
    reason = probe(target, timeout)
    if reason is not None:
        print(f"ankihost healthcheck: unhealthy: {reason}", file=sys.stderr)
        return 1
    print(f"ankihost healthcheck: {target.url} answered 200")
    return 0

