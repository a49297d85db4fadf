"""`ankihost tls self-signed`: a private CA and a server certificate signed by it, and how to
make each Anki app trust the CA."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

MAKING = "make a private CA and a server certificate signed by it, and print how each Anki app trusts the CA"


def add(commands: Any) -> None:
    tls = commands.add_parser("tls", help="TLS helpers: tls self-signed")
    maker = tls.add_subparsers(title="tls commands", metavar="VERB", required=True).add_parser(
        "self-signed", help=MAKING, description=MAKING)
    maker.add_argument("--host", required=True, help="the server's DNS name (or IP address) the apps use")
    maker.add_argument("--ip", action="append", default=[], metavar="ADDR",
                       help="an IP address the apps may use too (repeatable)")
    maker.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="folder for ca.crt, ca.key, server.crt, server.key (an existing CA there is reused)")
    maker.add_argument("--force", action="store_true", help="replace an existing server.crt/server.key")
    maker.add_argument("--port", type=int, help="port shown in the printed sync URL (default: SYNC_PORT or 8080)")
    maker.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ankihost.tls.selfsigned import self_signed_command

    return self_signed_command(args.out, args.host, args.ip, force=args.force, port=args.port)
