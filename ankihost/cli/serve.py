"""`ankihost serve` (also `ankihost` alone): validate every setting, then run the sync server.

A bad value stops start-up with a message naming the variable and exit status 1, before
anything listens.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from ankihost import __version__
from ankihost import log as logsetup
from ankihost.config import ConfigError, Settings, describe_settings

log = logging.getLogger("ankihost")


def add(commands: Any) -> None:
    parser = commands.add_parser(
        "serve", help="run the sync server (the default)",
        epilog="environment:\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
             settings.host, settings.port, settings.base, len(app.accounts.names()))
    # proxy_headers=False: SYNC_IP_HEADER alone says which header, if any, names the client
    # (uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 on its own).
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=10, proxy_headers=False)
    return 0
