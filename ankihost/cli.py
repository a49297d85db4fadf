"""The `ankihost` command: `serve` (the default) and `hash-password`.

Start-up validates every setting and user first; a bad value stops it with a message naming
the variable and exit status 1, before anything listens.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from ankihost import __version__, auth
from ankihost import log as logsetup
from ankihost.config import SETTINGS, ConfigError, Settings

log = logging.getLogger("ankihost")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "hash-password":
        return hash_password(args.rounds)
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
    return parser


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
    from ankihost.tls.context import TlsFiles
    from ankihost.web import listener

    try:
        settings = Settings.from_env(os.environ)
        limits = listener.ListenerLimits.from_env(os.environ)
        tls = TlsFiles.from_env(os.environ)
        from ankihost.server import build

        app = build(settings)
        listener.run(app, settings.host, settings.port, limits, tls, on_listening=lambda url: log.info(
            "ankihost %s listening on %s, data in %s, %d user(s)", __version__, url, settings.base,
            len(settings.users)))
    except ConfigError as exc:
        print(f"ankihost: configuration error: {exc}", file=sys.stderr)
        return 1
    except listener.ListenError as exc:
        print(f"ankihost: {exc} (SYNC_HOST, SYNC_PORT)", file=sys.stderr)
        return 1
    return 0
