"""`ankihost hash-password`: print a PHC hash for PASSWORDS_HASHED=1 (pbkdf2-sha256, which
the official server accepts too, or with --argon2id an argon2id one).

The password comes from a prompt (asked twice), or from one line of stdin when it is not a
terminal; never from the command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ankihost.accounts import passwords
from ankihost.cli.prompt import PasswordError, read_new_password


def add(commands: Any) -> None:
    parser = commands.add_parser(
        "hash-password", help="print a PHC pbkdf2-sha256 hash for PASSWORDS_HASHED=1 "
        "(password read from a prompt, or from stdin when it is not a terminal)"
    )
    parser.add_argument("--rounds", type=int, default=passwords.DEFAULT_ROUNDS, help=argparse.SUPPRESS)
    parser.add_argument("--argon2id", action="store_true",
                        help="an argon2id hash instead (accepted by ankihost, not by the official server)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        password = read_new_password()
    except PasswordError as exc:
        print(f"ankihost: {exc}", file=sys.stderr)
        return 1
    if args.argon2id:
        print(passwords.hash_new_password(password))
    else:
        print(passwords.hash_password(password, args.rounds))
    return 0
