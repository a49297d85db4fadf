"""`ankihost healthcheck`: exit 0 when the configured server answers GET /health, else 1 with
the reason (for Docker's HEALTHCHECK and for monitoring)."""

from __future__ import annotations

import argparse
from typing import Any

CHECKING = ("exit 0 if the server configured by SYNC_HOST, SYNC_PORT (and ANKIHOST_TLS_CERT) "
            "answers GET /health with 200, else 1 with the reason")


def add(commands: Any) -> None:
    parser = commands.add_parser("healthcheck", help=CHECKING, description=CHECKING)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ankihost.healthcheck import healthcheck_command

    return healthcheck_command()
