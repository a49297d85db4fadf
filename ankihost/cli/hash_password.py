"""`ankihost hash-password`: print a PHC pbkdf2-sha256 hash for PASSWORDS_HASHED=1.

The password comes from a prompt (asked twice), or from one line of stdin when it is not a
terminal; never from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from ankihost.accounts import passwords


def add(commands: Any) -> None:
    parser = commands.add_parser(
        "hash-password", help="print a PHC pbkdf2-sha256 hash for PASSWORDS_HASHED=1 "
        "(password read from a prompt, or from stdin when it is not a terminal)"
    )
    parser.add_argument("--rounds", type=int, default=passwords.DEFAULT_ROUNDS, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    print(passwords.hash_password(password, args.rounds))
    return 0
