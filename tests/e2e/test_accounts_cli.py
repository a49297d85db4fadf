"""`ankihost user|device …` as a subprocess: the same commands give the same results whether a
server runs on SYNC_BASE (they go through its admin channel) or not (they take the data-folder
lock and work on the account store themselves); refusals exit 1 with a message; passwords are
never taken from the command line; every new command has a --help."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from tests.support.cli import cli_ok, run_cli
from tests.support.server import SyncServer

pytestmark = pytest.mark.e2e

ENV = {"SYNC_USER1": "envuser:env-pw"}

# (arguments, stdin, exit status, what the output must contain)
SCRIPT: list[tuple[tuple[str, ...], str | None, int, str]] = [
    (("user", "add", "zoe", "--quota-mb", "5"), "zoe-pw\n", 0, "added zoe; its data will be in {base}/zoe"),
    (("user", "add", "ZOE"), "x\n", 1, "a user named 'zoe' already exists"),
    (("user", "add", "bad/name"), "x\n", 1, "the user name 'bad/name' contains"),
    (("user", "add", "EnvUser"), "x\n", 1, "(defined by a SYNC_USERn variable"),
    (("user", "add", "yan"), "\n", 1, "empty password"),
    (("user", "set", "zoe", "--quota-mb", "none"), None, 0, "quota of zoe: none"),
    (("user", "passwd", "envuser"), "new\n", 1, "edit that variable and restart the server"),
    (("user", "passwd", "nobody"), "new\n", 1, "there is no user 'nobody'"),
    (("device", "revoke", "zoe", "0123456789ab"), None, 1, "'zoe' has no device 0123456789ab"),
    (("user", "list", "--json"), None, 0, '"name": "zoe"'),
    (("user", "remove", "zoe"), None, 0, "removed zoe; its data is kept in {base}/zoe"),
    (("user", "remove", "zoe"), None, 1, "there is no user 'zoe'"),
]


def _play(base: Path) -> list[tuple[int, str]]:
    outcomes = []
    for args, stdin, status, expected in SCRIPT:
        result = run_cli(base, *args, stdin=stdin, env=ENV)
        text = result.stdout + result.stderr
        assert result.returncode == status, f"{args}: exit {result.returncode}: {text}"
        assert expected.format(base=base) in text, f"{args}: {text}"
        assert "Traceback" not in text
        outcomes.append((result.returncode, text.replace(str(base), "<base>")))
    return outcomes


def _normalised(outcomes: list[tuple[int, str]]) -> list[tuple[int, object]]:
    """JSON outputs compared as values (the activity of a live server aside)."""
    out: list[tuple[int, object]] = []
    for status, text in outcomes:
        if text.startswith("["):
            out.append((status, [{k: v for k, v in u.items() if k not in ("last_sync",)}
                                 for u in orjson.loads(text)]))
        else:
            out.append((status, text))
    return out


def test_the_cli_gives_the_same_results_with_and_without_a_running_server(tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    with SyncServer("ankihost", [("envuser", "env-pw")], base=tmp_path / "served") as server, \
            server.log_on_failure(), ThreadPoolExecutor(2) as pool:
        served_run = pool.submit(_play, server.base)
        alone_run = pool.submit(_play, alone)
        served, by_itself = served_run.result(), alone_run.result()
        assert "Traceback" not in server.log_text()
    assert _normalised(served) == _normalised(by_itself)
    # Without a server, the command worked on the store and let the folder go.
    assert sorted(p.name for p in (alone / ".ankihost").iterdir()) == ["accounts.db", "lock"]
    with SyncServer("ankihost", [("envuser", "env-pw")], base=alone) as started:  # not busy
        assert started.alive()


def test_changes_made_without_a_server_are_there_when_it_starts(tmp_path: Path) -> None:
    base = tmp_path / "base"
    cli_ok(base, "user", "add", "carol", stdin="carol-pw\n")  # no SYNC_USERn at all
    with SyncServer("ankihost", [], base=base) as server, server.log_on_failure():
        from tests.support.client import SyncClient

        client = SyncClient(server, "carol", "carol-pw", name="carol")
        try:
            assert client.login()
        finally:
            client.cleanup()


def test_passwords_are_never_taken_from_the_command_line(tmp_path: Path) -> None:
    for args in (("user", "add", "carol", "secret"), ("user", "passwd", "carol", "secret"),
                 ("user", "add", "carol", "--password", "secret")):
        result = run_cli(tmp_path, *args, stdin="")
        assert result.returncode == 2 and "unrecognized arguments" in result.stderr, result.stderr
    assert not (tmp_path / ".ankihost" / "accounts.db").exists()


def test_a_server_starting_during_a_command_waits_and_a_command_during_a_start_goes_through_it(
    tmp_path: Path,
) -> None:
    """Both orders around one data folder end with the account in place and one server."""
    base = tmp_path / "base"
    with ThreadPoolExecutor(2) as pool:
        adding = pool.submit(run_cli, base, "user", "add", "carol", stdin="pw\n", env=ENV)
        with SyncServer("ankihost", [("envuser", "env-pw")], base=base) as server:
            result = adding.result()
            assert result.returncode == 0, result.stderr
            listed = orjson.loads(cli_ok(base, "user", "list", "--json", env=ENV))
            assert [u["name"] for u in listed] == ["carol", "envuser"]
            assert server.alive()


def test_concurrent_commands_without_a_server_wait_for_each_other(tmp_path: Path) -> None:
    base = tmp_path / "base"
    names = ["ann", "ben", "cat"]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda n: run_cli(base, "user", "add", n, stdin="pw\n"), names))
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert [u["name"] for u in orjson.loads(cli_ok(base, "user", "list", "--json"))] == names


HELP = [
    (("user",), ["add", "passwd", "remove", "set", "list"]),
    (("user", "add"), ["name", "--quota-mb", "stdin", "never from the command line"]),
    (("user", "passwd"), ["logs out"]),
    (("user", "remove"), ["--delete-data"]),
    (("user", "set"), ["--quota-mb"]),
    (("user", "list"), ["--json"]),
    (("device",), ["list", "revoke"]),
    (("device", "list"), ["--json"]),
    (("device", "revoke"), ["--all", "ID"]),
]


def test_every_new_command_has_help(tmp_path: Path) -> None:
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda item: run_cli(tmp_path, *item[0], "--help"), HELP))
    for (args, words), result in zip(HELP, results, strict=True):
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith(f"usage: ankihost {' '.join(args)}"), result.stdout
        for word in words:
            assert re.search(re.escape(word), result.stdout, re.IGNORECASE), (args, word, result.stdout)
    top = run_cli(tmp_path, "--help")
    assert "user" in top.stdout and "device" in top.stdout and "ANKIHOST_ENV_DEVICE_KEYS" in top.stdout
    assert not (tmp_path / ".ankihost").exists()  # --help touches nothing
