"""The `ankihost` command: `serve` (the default), `hash-password`, `healthcheck` and
`tls self-signed`.

Start-up validates every setting and user first; a bad value stops it with a message naming
the variable and exit status 1, before anything listens.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

from ankihost import __version__, auth
from ankihost import log as logsetup
from ankihost.config import SETTINGS, ConfigError, Settings

log = logging.getLogger("ankihost")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "hash-password":
        return hash_password(args.rounds)
    if args.command == "healthcheck":
        from ankihost.healthcheck import healthcheck_command

        return healthcheck_command()
    if args.command == "tls":
        from ankihost.tls.selfsigned import self_signed_command

        return self_signed_command(args.out, args.host, args.ip, force=args.force, port=args.port)
    return serve()


def _parser() -> argparse.ArgumentParser:
    variables = "\n".join(f"  {s.name:<22} {s.help}" for s in SETTINGS)
    parser = argparse.ArgumentParser(
        prog="ankihost",
        description="A self-hosted Anki sync server, configured like the official one.",
        epilog="environment:\n  SYNC_USER1..N          user:password (or user:<PHC hash>)\n"
        "  PASSWORDS_HASHED       if set, SYNC_USERn values hold PHC pbkdf2 hashes\n" + variables,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ankihost {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the sync server (the default)")
    hasher = commands.add_parser(
        "hash-password", help="print a PHC pbkdf2-sha256 hash for PASSWORDS_HASHED=1 "
        "(password read from a prompt, or from stdin when it is not a terminal)"
    )
    hasher.add_argument("--rounds", type=int, default=auth.DEFAULT_ROUNDS, help=argparse.SUPPRESS)
    checking = ("exit 0 if the server configured by SYNC_HOST, SYNC_PORT (and ANKIHOST_TLS_CERT) "
                "answers GET /health with 200, else 1 with the reason")
    commands.add_parser("healthcheck", help=checking, description=checking)
    _tls_parser(commands.add_parser("tls", help="TLS helpers: tls self-signed"))
    return parser


def _tls_parser(tls: argparse.ArgumentParser) -> None:
    making = "make a private CA and a server certificate signed by it, and print how each Anki app trusts the CA"
    maker = tls.add_subparsers(dest="tls_command", required=True).add_parser(
        "self-signed", help=making, description=making)
    maker.add_argument("--host", required=True, help="the server's DNS name (or IP address) the apps use")
    maker.add_argument("--ip", action="append", default=[], metavar="ADDR",
                       help="an IP address the apps may use too (repeatable)")
    maker.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="folder for ca.crt, ca.key, server.crt, server.key (an existing CA there is reused)")
    maker.add_argument("--force", action="store_true", help="replace an existing server.crt/server.key")
    maker.add_argument("--port", type=int, help="port shown in the printed sync URL (default: SYNC_PORT or 8080)")


def hash_password(rounds: int) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            print("ankihost: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        print("ankihost: empty password", file=sys.stderr)
        return 1
    print(auth.hash_password(password, rounds))
    return 0


def serve() -> int:
    logsetup.setup()
    try:
        settings = Settings.from_env(os.environ)
        from ankihost.server import build

        app = build(settings)
    except ConfigError as exc:
        print(f"ankihost: configuration error: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    log.info("ankihost %s listening on %s:%d, data in %s, %d user(s)", __version__,
             settings.host, settings.port, settings.base, len(settings.users))
    # proxy_headers=False: SYNC_IP_HEADER alone says which header, if any, names the client
    # (uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 on its own).
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=10, proxy_headers=False)
    return 0
