"""The container image, built from the Dockerfile and run by a real Docker daemon.

Run by `scripts/test-container`, which provides the daemon and a local Debian 12 base image
(ANKIHOST_DOCKER, ANKIHOST_BASE_IMAGE, DOCKER_HOST); the file name keeps it out of the normal
pytest run. Covered: the image's interface (port, volume, health check, non-root, what is
inside); a container with a named volume and a published port turns healthy and the real client
syncs through it (full, normal, media over 2 MiB, second device), data survives a restart;
PUID/PGID with a bind mount and a chown only when needed; `--user`; clear messages and exit
status 1 for a bad PUID/PGID, an unwritable or read-only volume and a configuration error;
compose.yaml (and its HTTPS and Traefik overrides) checked and run with docker-compose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.client import NO_CHANGES, SyncClient
from tests.support.deploy_scenario import Endpoint, add_note, sync_round
from tests.support.server import REPO_ROOT, free_port

DOCKER = os.environ.get("ANKIHOST_DOCKER", "")
BASE_IMAGE = os.environ.get("ANKIHOST_BASE_IMAGE", "")
IMAGE = "ankihost:latest"  # the tag compose.yaml's `image: ankihost` refers to
USER, PASSWORD = "alice", "container pw"
HEALTHY_TIMEOUT_SECONDS = 90
# What the image adds to its base (Python, the venv); debian:bookworm-slim itself is ~75 MB.
MAX_ADDED_MB = 150
# A CA bundle the builder's pip trusts (needed where a TLS-inspecting proxy sits in front of PyPI).
BUILD_CA = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
# Health checks every second here instead of the image's 30 s.
FAST_HEALTH = ("--health-interval=1s", "--health-timeout=5s", "--health-retries=3")

pytestmark = pytest.mark.e2e


def docker(*args: str, check: bool = True, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done  # type: ignore[no-any-return]


def _build_steps(log: str) -> list[tuple[float, str]]:
    """(seconds, step) for each BuildKit step of a --progress=plain log, slowest first."""
    names = dict(re.findall(r"^#(\d+) (\[.*)$", log, re.M))
    times = re.findall(r"^#(\d+) DONE (\d+\.\d+)s$", log, re.M)
    return sorted(((float(t), names[n][:90]) for n, t in times if n in names), reverse=True)


def report(config: pytest.Config, text: str) -> None:
    """A line in the test run's own output (not captured): where the time goes."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(text, flush=True)


@pytest.fixture(scope="session")
def image(pytestconfig: pytest.Config) -> str:
    assert DOCKER and BASE_IMAGE and os.environ.get("DOCKER_HOST"), "run scripts/test-container"
    started = time.monotonic()
    done = docker("build", "--progress=plain", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                  "--secret", f"id=build_ca,src={BUILD_CA}", "--tag", IMAGE, str(REPO_ROOT),
                  check=False, timeout=1200, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    assert done.returncode == 0, done.stderr[-6000:]
    steps = "\n".join(f"  {seconds:6.1f}s {step}" for seconds, step in _build_steps(done.stderr)[:8])
    report(pytestconfig, f"\nimage built in {time.monotonic() - started:.0f}s; slowest steps:\n{steps}")
    return IMAGE


@pytest.fixture
def clients() -> Iterator[dict[str, SyncClient]]:
    """The test's devices, closed at teardown (as tests/e2e/conftest.py's fixture)."""
    made: dict[str, SyncClient] = {}
    yield made
    for client in made.values():
        client.cleanup()


@contextmanager
def container(*args: str, name: str) -> Iterator[str]:
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, *args, IMAGE)
    try:
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def wait_healthy(name: str, timeout: float = HEALTHY_TIMEOUT_SECONDS) -> float:
    started = time.monotonic()
    while True:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
        if state["Health"]["Status"] == "healthy":
            return time.monotonic() - started
        if not state["Running"] or time.monotonic() - started > timeout:
            raise AssertionError(f"{name} not healthy: {state}\n{logs(name)}")
        time.sleep(0.2)


def logs(name: str) -> str:
    done = docker("logs", name, check=False)
    return done.stdout + done.stderr


def proc_status(name: str) -> dict[str, str]:
    text = docker("exec", name, "cat", "/proc/1/status").stdout
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def run_failing(*args: str) -> str:
    """Run the image in the foreground; it must stop at once with status 1. Returns its output."""
    started = time.monotonic()
    done = docker("run", "--rm", *args, IMAGE, check=False, timeout=60)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert time.monotonic() - started < 30
    return done.stdout + done.stderr


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A folder to bind-mount (under /tmp: pytest's own are 0700, closed to other ids)."""
    folder = Path(tempfile.mkdtemp(prefix="ankihost-bind-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def owners(folder: Path) -> set[tuple[int, int]]:
    return {(p.stat().st_uid, p.stat().st_gid) for p in [folder, *folder.rglob("*")]}


def _users(*extra: str) -> list[str]:
    return ["-e", f"SYNC_USER1={USER}:{PASSWORD}", *extra]


def test_the_image_declares_its_interface_and_holds_only_what_it_runs(image, pytestconfig):
    info = json.loads(docker("image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert "8080/tcp" in config["ExposedPorts"] and "/anki_data" in config["Volumes"]
    assert config["Healthcheck"]["Test"] == ["CMD", "ankihost", "healthcheck"]
    assert "SYNC_BASE=/anki_data" in config["Env"] and "SYNC_PORT=8080" in config["Env"]
    base_mb = json.loads(docker("image", "inspect", BASE_IMAGE).stdout)[0]["Size"] / 1e6
    added_mb = info["Size"] / 1e6 - base_mb
    report(pytestconfig, f"image size {info['Size'] / 1e6:.0f} MB: base {base_mb:.0f} MB + {added_mb:.0f} MB")
    assert added_mb < MAX_ADDED_MB
    inside = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                    "find /src /wheels /build /run/secrets -mindepth 1 2>/dev/null; command -v pip gcc;"
                    "ankihost --version; stat -c '%u:%g %a' /anki_data", check=False).stdout
    assert inside.splitlines()[-2:] == [f"ankihost {_version()}", "1000:1000 700"], inside
    assert len(inside.splitlines()) == 2, f"build leftovers in the image: {inside}"


def _version() -> str:
    match = re.search(r'__version__ = "([^"]+)"', (REPO_ROOT / "ankihost/__init__.py").read_text())
    assert match
    return match.group(1)


def test_healthy_and_the_real_client_syncs_through_the_published_port(image, clients: dict[str, SyncClient],
                                                                     pytestconfig):
    port = free_port()
    volume = "ankihost-test-data"
    docker("volume", "rm", "-f", volume, check=False)
    try:
        with container("-p", f"127.0.0.1:{port}:8080", "-v", f"{volume}:/anki_data", *_users(), *FAST_HEALTH,
                       name="ankihost-sync") as name:
            report(pytestconfig, f"healthy {wait_healthy(name):.1f}s after docker run")
            endpoint = Endpoint(f"http://127.0.0.1:{port}/")
            sync_round(endpoint, USER, PASSWORD, clients)
            status = proc_status(name)
            assert status["Uid"].split() == ["1000"] * 4 and status["Gid"].split() == ["1000"] * 4
            assert status["CapEff"] == status["CapBnd"] == "0000000000000000" and status["NoNewPrivs"] == "1"
            files = docker("exec", name, "find", "/anki_data", "-printf", "%U:%G %m %p\\n").stdout.splitlines()
            assert all(line.startswith("1000:1000 ") for line in files), files
            assert any(line.endswith("/anki_data/alice/collection.anki2") for line in files)
            docker("stop", "--time", "20", name)
            state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
            assert state["ExitCode"] == 0 and "shutdown complete" in logs(name)
            docker("start", name)
            wait_healthy(name)
            assert clients["A"].sync().required == NO_CHANGES  # the data outlived the container's restart
            add_note(clients["A"], "after the restart")
            assert clients["A"].sync().action == "normal"
            assert "giving /anki_data" not in logs(name)
    finally:
        docker("volume", "rm", "-f", volume, check=False)


def test_puid_and_pgid_with_a_bind_mount_and_another_port(image, host_dir, clients: dict[str, SyncClient]):
    (host_dir / "left-by-root.txt").write_text("owned by root until the container starts")
    port = free_port()
    with container("-p", f"127.0.0.1:{port}:9090", "-v", f"{host_dir}:/anki_data", *FAST_HEALTH,
                   *_users("-e", "PUID=1234", "-e", "PGID=2345", "-e", "SYNC_PORT=9090"), name="ankihost-puid") as name:
        wait_healthy(name)  # the health check follows SYNC_PORT
        assert "giving /anki_data to 1234:2345 (PUID:PGID)" in logs(name)
        status = proc_status(name)
        assert status["Uid"].split()[0] == "1234" and status["Gid"].split()[0] == "2345" and status["Groups"] == ""
        client = clients["A"] = SyncClient(Endpoint(f"http://127.0.0.1:{port}/"), USER, PASSWORD, name="A")
        add_note(client, "through PUID")
        client.login()
        assert client.sync().action == "upload"
        assert owners(host_dir) == {(1234, 2345)}
        docker("restart", name)
        wait_healthy(name)
        assert logs(name).count("giving /anki_data") == 1  # ownership was right: no second chown


def test_run_with_user_instead_of_puid(image, host_dir):
    os.chown(host_dir, 4321, 4321)
    port = free_port()
    with container("--user", "4321:4321", "-p", f"127.0.0.1:{port}:8080", "-v", f"{host_dir}:/anki_data",
                   *FAST_HEALTH, *_users(), name="ankihost-user") as name:
        wait_healthy(name)
        assert proc_status(name)["Uid"].split()[0] == "4321"
    os.chown(host_dir, 0, 0)
    said = run_failing("--user", "4321:4321", "-v", f"{host_dir}:/anki_data", *_users())
    assert ("/anki_data is not writable by uid 4321 gid 4321 (owner 0:0, mode 755): run the container as the "
            "folder's owner (--user 0:0)") in said


@pytest.mark.parametrize(("env", "said"), [
    ("PUID=abc", "PUID='abc' must be a number"),
    ("PGID=-5", "PGID='-5' must be a number"),
    ("PUID=0", "PUID=0 would run the server as root"),
    ("PUID=99999999999", "PUID=99999999999 is too large"),
])
def test_a_bad_puid_or_pgid_stops_the_container_with_the_reason(image, env, said):
    assert said in run_failing("-e", env, *_users())


def test_an_unwritable_volume_stops_the_container_with_the_reason(image, host_dir):
    os.chown(host_dir, 1000, 1000)
    said = run_failing("-v", f"{host_dir}:/anki_data:ro", *_users())
    assert ("/anki_data is not writable by uid 1000 gid 1000 (owner 1000:1000, mode 755, mounted read-only): "
            "mount it writable (without :ro)") in said
    os.chown(host_dir, 0, 0)
    said = run_failing("-v", f"{host_dir}:/anki_data:ro", *_users())
    assert "cannot give /anki_data (owner 0:0, mode 755, mounted read-only) to 1000:1000" in said
    assert "Read-only file system; mount it writable" in said
    said = run_failing("--cap-drop", "CHOWN", "-v", f"{host_dir}:/anki_data", *_users())
    assert "cannot give /anki_data (owner 0:0, mode 755) to 1000:1000" in said
    assert "Operation not permitted; set PUID/PGID to the folder's owner (0:0), or change its owner on the host" in said


def test_a_configuration_error_is_shown_not_hidden(image):
    assert "configuration error: SYNC_PORT='http' is invalid" in run_failing("-e", "SYNC_PORT=http", *_users())
    assert "no users: set SYNC_USER1" in run_failing()


def _compose(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker-compose", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    if check and done.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}")
    return done


def test_compose_files_are_valid_and_say_what_is_missing(image):
    env = {"SYNC_USER1": f"{USER}:{PASSWORD}"}
    plain = _compose("-f", "compose.yaml", "config", env=env).stdout
    assert "anki_data:/anki_data" in plain and f"SYNC_USER1: {USER}:{PASSWORD}" in plain
    https = _compose("-f", "compose.yaml", "-f", "compose.https.yaml", "config", env=env).stdout
    assert "ANKIHOST_TLS_CERT: /tls/server.crt" in https and "/tls:/tls:ro" in https
    traefik = _compose("-f", "compose.yaml", "-f", "compose.traefik.yaml", "config", env=env).stdout
    assert "traefik.http.services.ankihost.loadbalancer.server.port: '8080'" in traefik
    missing = _compose("-f", "compose.yaml", "config", env={"SYNC_USER1": ""}, check=False)
    assert missing.returncode != 0 and "set SYNC_USER1=user:password in .env" in missing.stderr


def test_compose_up_serves_with_a_named_volume(image, clients: dict[str, SyncClient]):
    port = free_port()
    project = "ankihosttest"
    env = {"SYNC_USER1": f"{USER}:{PASSWORD}", "ANKIHOST_PUBLISH": f"127.0.0.1:{port}", "COMPOSE_PROJECT_NAME": project}
    try:
        _compose("up", "-d", "--no-build", env=env)
        name = _compose("ps", "-q", env=env).stdout.strip()
        assert json.loads(docker("inspect", "--format", "{{json .Config.Healthcheck}}", name).stdout)["Test"] == [
            "CMD", "ankihost", "healthcheck"]
        sync_round(Endpoint(f"http://127.0.0.1:{port}/"), USER, PASSWORD, clients)
        volumes = docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert f"{project}_anki_data" in volumes
        mounts = json.loads(docker("inspect", "--format", "{{json .Mounts}}", name).stdout)
        assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [("volume", f"{project}_anki_data",
                                                                                "/anki_data")]
    finally:
        _compose("down", "--volumes", "--timeout", "20", env=env, check=False)


def test_compose_https_serves_over_tls_with_a_private_ca(image, clients: dict[str, SyncClient]):
    """compose.yaml + compose.https.yaml as the README says: certificates from `ankihost tls
    self-signed` in ./tls (readable by PUID), the real client trusting the CA."""
    port = free_port()
    project = "ankihosttls"
    tls = REPO_ROOT / "tls"
    shutil.rmtree(tls, ignore_errors=True)
    made = subprocess.run([sys.executable, "-m", "ankihost", "tls", "self-signed", "--host", "localhost",
                           "--ip", "127.0.0.1", "--out", str(tls)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    subprocess.run(["chown", "-R", "1000:1000", str(tls)], check=True)
    env = {"SYNC_USER1": f"{USER}:{PASSWORD}", "ANKIHOST_PUBLISH": f"127.0.0.1:{port}", "COMPOSE_PROJECT_NAME": project}
    saved = os.environ.get("SSL_CERT_FILE")
    try:
        _compose("-f", "compose.yaml", "-f", "compose.https.yaml", "up", "-d", "--no-build", env=env)
        name = _compose("-f", "compose.yaml", "-f", "compose.https.yaml", "ps", "-q", env=env).stdout.strip()
        wait_healthy(name)  # the health check answers over HTTPS
        os.environ["SSL_CERT_FILE"] = str(tls / "ca.crt")  # read when a client's backend starts
        sync_round(Endpoint(f"https://127.0.0.1:{port}/"), USER, PASSWORD, clients, prefix="tls")
    finally:
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved
        _compose("-f", "compose.yaml", "-f", "compose.https.yaml", "down", "--volumes", "--timeout", "20",
                 env=env, check=False)
        shutil.rmtree(tls, ignore_errors=True)
