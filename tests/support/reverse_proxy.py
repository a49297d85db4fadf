"""A real nginx in front of a test server, serving it under a subpath (`/anki/`), over HTTP.

The location block is contrib/nginx/ankihost-subpath.conf's (prefix stripped) and includes
contrib/nginx/ankihost-proxy.conf itself (HTTP/1.1, bodies streamed as they arrive, chunked
uploads passed on chunked, large bodies, long timeouts); only what running unprivileged from a
temp folder needs is added. nginx is installed with apt-get when missing (CI is a fresh Debian
machine) and runs in the foreground; it is stopped by its PID.

    with NginxSubpath(server, "/anki/") as proxy:
        client = SyncClient(proxy, ...)         # proxy.endpoint = http://127.0.0.1:<port>/anki/
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.packages import ensure_commands
from tests.support.server import REPO_ROOT, _port_answers, free_port

START_TIMEOUT_SECS = 20
PROXY_SNIPPET = REPO_ROOT / "contrib" / "nginx" / "ankihost-proxy.conf"
CONFIG = """
user root;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location {prefix} {{
            proxy_pass http://127.0.0.1:{upstream}/;
            include {snippet};
        }}
    }}
}}
"""


class NginxSubpath:
    """nginx on a free loopback port, forwarding `prefix` to the upstream's port (which must
    not change while it runs)."""

    def __init__(self, upstream: object, prefix: str = "/anki/") -> None:
        self.upstream = upstream
        self.prefix = prefix
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ankihost-nginx-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def starts(self) -> int:
        return int(getattr(self.upstream, "starts", 0))

    def start(self) -> NginxSubpath:
        upstream_port = getattr(self.upstream, "port", None)
        assert upstream_port, "start the upstream server first"
        conf = self.root / "nginx.conf"
        conf.write_text(CONFIG.format(root=self.root, port=self.port, prefix=self.prefix,
                                      upstream=upstream_port, snippet=PROXY_SNIPPET))
        ensure_commands({"nginx": "nginx"})
        command = ["nginx", "-p", str(self.root), "-c", str(conf), "-g", "daemon off;"]
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not _port_answers(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start: {self.error_log()}")
            time.sleep(0.05)
        return self

    def error_log(self) -> str:
        log = self.root / "error.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no error log)"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # the master stops its worker and exits
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def __enter__(self) -> NginxSubpath:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
