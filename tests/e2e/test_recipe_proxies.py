"""The reverse-proxy recipes in contrib/, run for real with the real client over HTTPS.

nginx and Caddy (Debian's packages) run the files in contrib/ themselves, changed only where a
user changes them: listen address and port, certificate paths (a CA from `ankihost tls
self-signed`, trusted by the client through SSL_CERT_FILE as on Linux desktop), ankihost's
port, and the documented one-word variant (a subpath without prefix stripping). The test adds
only what running unprivileged in a temp dir needs (nginx: pid, logs, temp paths; Caddy: admin
off, no automatic HTTPS, loopback only). Through each: `deploy_scenario.sync_round()` (full
upload, normal sync, media over 2 MiB, second device), and the client address ankihost logs
follows SYNC_IP_HEADER (a request from 127.0.0.5 with forged forwarding headers). The client
reaches nginx by name (https://localhost:…, the certificate's DNS name) and Caddy by address
(https://127.0.0.1:…, its IP name).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from anki.errors import NetworkError

from ankihost.tls.selfsigned import issue, parse_names
from tests.support.client import SyncClient
from tests.support.deploy_scenario import Endpoint, sync_round
from tests.support.packages import ensure_commands
from tests.support.server import REPO_ROOT, SyncServer, free_port

pytestmark = pytest.mark.e2e

CONTRIB = REPO_ROOT / "contrib"
USER, PASSWORD = "alice", "proxied pw"
START_TIMEOUT_SECONDS = 20
# The address the forged-header request comes from; the proxies themselves reach ankihost from 127.0.0.1.
OTHER_CLIENT = "127.0.0.5"


@dataclass(frozen=True)
class Recipe:
    proxy: str  # "nginx" | "caddy"
    file: str  # under contrib/
    path: str  # the URL path the apps use
    ip_header: str  # SYNC_IP_HEADER for ankihost behind it
    variant: tuple[tuple[str, str], ...] = ()  # the documented alternative, as an edit


RECIPES = {
    "nginx-root": Recipe("nginx", "nginx/ankihost.conf", "/", "XRealIp"),
    "nginx-subpath-stripped": Recipe("nginx", "nginx/ankihost-subpath.conf", "/anki/", "RightmostXForwardedFor"),
    "nginx-subpath-unstripped": Recipe(
        "nginx", "nginx/ankihost-subpath.conf", "/anki/", "XRealIp",
        (("proxy_pass http://127.0.0.1:8080/;", "proxy_pass http://127.0.0.1:8080;"),)),
    "caddy-root": Recipe("caddy", "caddy/Caddyfile", "/", "RightmostXForwardedFor"),
    "caddy-subpath-handle_path": Recipe("caddy", "caddy/Caddyfile", "/anki/", "XRealIp"),
    "caddy-subpath-handle": Recipe("caddy", "caddy/Caddyfile", "/anki/", "RightmostXForwardedFor",
                                   (("handle_path /anki/* {", "handle /anki/* {"),)),
}


def render(text: str, edits: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """Apply edits; each must match, so a changed recipe breaks the test instead of skipping a step."""
    for old, new in edits:
        assert old in text, f"{old!r} is no longer in the recipe"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    issue(folder, parse_names("localhost", ["127.0.0.1", "::1"]))
    return folder


@pytest.fixture(scope="module", autouse=True)
def packages() -> None:
    ensure_commands({"nginx": "nginx", "caddy": "caddy"})


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        assert process.poll() is None, f"proxy exited with {process.returncode}:\n{log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"proxy did not listen on {port}:\n{log.read_text()}"
            time.sleep(0.05)


@dataclass
class RunningProxy:
    endpoint: str  # as the apps are configured
    port: int
    log: Path


def _nginx_site(recipe: Recipe, port: int, backend: int, tls: Path) -> str:
    name = "sync.example.org" if recipe.file.endswith("ankihost.conf") else "example.org"
    return render((CONTRIB / recipe.file).read_text(), [*recipe.variant,
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("listen [::]:443 ssl;", f"listen [::1]:{port} ssl;"),
        (f"/etc/letsencrypt/live/{name}/fullchain.pem", str(tls / "server.crt")),
        (f"/etc/letsencrypt/live/{name}/privkey.pem", str(tls / "server.key")),
        ("127.0.0.1:8080", f"127.0.0.1:{backend}"),
        ("include snippets/ankihost-proxy.conf;", f"include {CONTRIB / 'nginx/ankihost-proxy.conf'};"),
    ])


def _nginx(recipe: Recipe, folder: Path, port: int, backend: int, tls: Path) -> list[str]:
    (folder / "site.conf").write_text(_nginx_site(recipe, port, backend, tls))
    temps = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                             "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        f"daemon off;\nuser root;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'proxy.log'} info;\nevents {{}}\n"
        f"http {{\n    access_log {folder / 'proxy.log'};\n{temps}\n    include {folder / 'site.conf'};\n}}\n"
    )
    return ["nginx", "-p", str(folder), "-e", str(folder / "proxy.log"), "-c", str(folder / "nginx.conf")]


def _caddy(recipe: Recipe, folder: Path, port: int, backend: int, tls: Path) -> list[str]:
    other = free_port()
    root, sub = (port, other) if recipe.path == "/" else (other, port)
    site = render((CONTRIB / recipe.file).read_text(), [*recipe.variant,
        ("\nsync.example.org {", f"\nhttps://127.0.0.1:{root} {{"),
        ("\nexample.org {", f"\nhttps://127.0.0.1:{sub} {{"),
        ("# tls /etc/ankihost/tls/server.crt /etc/ankihost/tls/server.key",
         f"tls {tls / 'server.crt'} {tls / 'server.key'}"),
        ("127.0.0.1:8080", f"127.0.0.1:{backend}"),
    ])
    options = ["admin off", "auto_https off", "default_bind 127.0.0.1", "grace_period 500ms",
               f"storage file_system {folder / 'data'}"]
    (folder / "Caddyfile").write_text("{\n" + "".join(f"\t{option}\n" for option in options) + "}\n" + site)
    return ["caddy", "run", "--adapter", "caddyfile", "--config", str(folder / "Caddyfile")]


_COMMANDS: dict[str, Callable[[Recipe, Path, int, int, Path], list[str]]] = {"nginx": _nginx, "caddy": _caddy}


@pytest.fixture
def running(request: pytest.FixtureRequest, tmp_path: Path,
            certificate: Path) -> Iterator[tuple[RunningProxy, SyncServer]]:
    recipe = RECIPES[request.param]
    with SyncServer("ankihost", [(USER, PASSWORD)], env={"SYNC_IP_HEADER": recipe.ip_header}) as server:
        assert server.port is not None
        port = free_port()
        command = _COMMANDS[recipe.proxy](recipe, tmp_path, port, server.port, certificate)
        env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_CONFIG_HOME": str(tmp_path / "config")}
        log = tmp_path / "proxy.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_port(port, process, log)
            yield RunningProxy(f"https://{'localhost' if recipe.proxy == 'nginx' else '127.0.0.1'}:{port}{recipe.path}",
                               port, log), server
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)


def _forged_request(proxy: RunningProxy, certificate: Path, path: str) -> int:
    """POST …/sync/meta from another loopback address, with forwarding headers a client made up."""
    context = ssl.create_default_context(cafile=certificate / "ca.crt")
    connection = http.client.HTTPSConnection("127.0.0.1", proxy.port, source_address=(OTHER_CLIENT, 0),
                                             context=context, timeout=10)
    try:
        connection.request("POST", f"{path}sync/meta", body=b"",
                           headers={"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8"})
        return connection.getresponse().status
    finally:
        connection.close()


def _logged_ip(server: SyncServer) -> str:
    deadline = time.monotonic() + 10
    while not (lines := [x for x in server.log_text().splitlines() if "POST /sync/meta" in x and "status=400" in x]):
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)
    return lines[-1].split(" ip=", 1)[1].split(" ", 1)[0]


@pytest.mark.parametrize("running", list(RECIPES), indirect=True)
def test_the_real_client_syncs_through_the_recipe(running, certificate, clients: dict[str, SyncClient],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, server = running
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate / "ca.crt"))  # how Linux desktop trusts the CA
    with server.log_on_failure():
        try:
            sync_round(Endpoint(proxy.endpoint), USER, PASSWORD, clients)
        except BaseException as exc:
            exc.add_note(f"--- proxy log ---\n{proxy.log.read_text()[-6000:]}")
            raise
        path = proxy.endpoint.split(str(proxy.port), 1)[1]
        assert _forged_request(proxy, certificate, path) == 400  # ankihost's answer to a request without a header
        assert _logged_ip(server) == OTHER_CLIENT


@pytest.mark.parametrize("running", ["nginx-root"], indirect=True)
def test_the_client_trusts_the_private_ca_only_when_told(running, certificate, clients: dict[str, SyncClient],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the CA the real client refuses the certificate; with the CA's text given the way
    AnkiDroid's "Custom root certificate (PEM)" setting gives it (the backend's
    set_custom_certificate), it logs in, the system store alone notwithstanding."""
    proxy, _ = running
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    untrusting = clients["untrusting"] = SyncClient(Endpoint(proxy.endpoint), USER, PASSWORD, name="untrusting")
    with pytest.raises(NetworkError):
        untrusting.login()
    android = clients["android"] = SyncClient(Endpoint(proxy.endpoint), USER, PASSWORD, name="android")
    assert android.col._backend.set_custom_certificate((certificate / "ca.crt").read_text())
    assert android.login()
    assert not android.col._backend.set_custom_certificate((certificate / "server.crt").read_text())  # 2 certs
