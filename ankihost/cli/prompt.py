"""Reading a new password for a command: from a prompt (asked twice) or one line of stdin."""

from __future__ import annotations

import getpass
import sys


class PasswordError(Exception):
    """The password could not be read, or the two entries differ; the message says which."""


def read_new_password() -> str:
    """A password from the terminal (typed twice), or from one line of stdin when it is not a
    terminal (`echo pw | ankihost …`). Never from the command line, where others could see it."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise PasswordError("the passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise PasswordError("empty password")
    return password
