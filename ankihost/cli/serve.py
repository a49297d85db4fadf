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

from ankihost import __version__, memory
from ankihost import log as logsetup
from ankihost.config import ConfigError, Settings

log = logging.getLogger("ankihost")


def add(commands: Any) -> None:
    parser = commands.add_parser("serve", help="run the sync server (the default)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logsetup.setup()
    memory.limit_arenas()
    from ankihost.tls.context import TlsFiles
    from ankihost.web import listener

    try:
        settings = Settings.from_env(os.environ)
        logsetup.setup(fmt=settings.log_format)
        limits = listener.ListenerLimits.from_settings(settings)
        tls = TlsFiles.from_settings(settings.tls_cert, settings.tls_key)
        from ankihost.server import build
        from ankihost.web import serving

        # bound first: a port in use stops start-up before the data folder is touched
        admin_socket = serving.bind_admin(settings) if settings.admin_listener else None
        app = build(settings)
        also = None
        if admin_socket is not None and app.admin_app is not None:
            serving.announce(settings, admin_socket)
            also = (app.admin_app, admin_socket)
        listener.run(app, settings.host, settings.port, limits, tls, also=also, on_listening=lambda url: log.info(
            "ankihost %s listening on %s, data in %s, %d user(s)", __version__, url, settings.base,
            len(app.accounts.names())))
    except ConfigError as exc:
        print(f"ankihost: configuration error: {exc}", file=sys.stderr)
        return 1
    except listener.ListenError as exc:
        print(f"ankihost: {exc} (SYNC_HOST, SYNC_PORT)", file=sys.stderr)
        return 1
    return 0
