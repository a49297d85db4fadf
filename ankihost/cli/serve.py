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
    from ankihost.tls.context import TlsFiles
    from ankihost.web import listener

    try:
        settings = Settings.from_env(os.environ)
        limits = listener.ListenerLimits.from_settings(settings)
        tls = TlsFiles.from_settings(settings.tls_cert, settings.tls_key)
        from ankihost.server import build

        app = build(settings)
        listener.run(app, settings.host, settings.port, limits, tls, on_listening=lambda url: log.info(
            "ankihost %s listening on %s, data in %s, %d user(s)", __version__, url, settings.base,
            len(app.accounts.names())))
    except ConfigError as exc:
        print(f"ankihost: configuration error: {exc}", file=sys.stderr)
        return 1
    except listener.ListenError as exc:
        print(f"ankihost: {exc} (SYNC_HOST, SYNC_PORT)", file=sys.stderr)
        return 1
    return 0
