"""The `ankihost` command: one module per command group, each adding its own sub-command(s).

`ankihost` alone runs the server (`serve`). Every command reads the same environment as the
server; `--help` lists every setting from the one table in `config.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ankihost import __version__
from ankihost.cli import devices, hash_password, media, serve, users
from ankihost.config import describe_settings

# Each command group: a module with `add(commands)`, which registers its sub-commands and
# sets `run` (a function of the parsed arguments returning the exit status) on each.
GROUPS = (serve, users, devices, media, hash_password)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = getattr(args, "run", serve.run)
    return run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ankihost",
        description="A self-hosted Anki sync server, configured like the official one.",
        epilog="environment:\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ankihost {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for group in GROUPS:
        group.add(commands)
    return parser
