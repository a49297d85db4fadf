"""The `ankihost` command: one module per command group, each adding its own sub-command(s).

`ankihost` alone runs the server (`serve`). Every command reads the same environment as the
server; `--help` lists every setting from the one table in `config.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ankihost import __version__
from ankihost.cli import backup, devices, export, hash_password, healthcheck, media, serve, snapshots, tls, users
from ankihost.cli.admin_call import CommandFailed
from ankihost.config import describe_settings

# Each command group: a module with `add(commands)`, which registers its sub-commands and
# sets `run` (a function of the parsed arguments returning the exit status) on each.
GROUPS = (serve, users, devices, media, snapshots, backup, export, hash_password, healthcheck, tls)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = getattr(args, "run", serve.run)
    try:
        return run(args)
    except CommandFailed:  # already explained on stderr
        return 1


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
    _with_settings(parser)
    return parser


def _with_settings(parser: argparse.ArgumentParser) -> None:
    """Every command's --help ends with every setting, its default and allowed values: they
    all read the same environment as the server."""
    parser.epilog = "environment:\n" + describe_settings()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _with_settings(sub)
