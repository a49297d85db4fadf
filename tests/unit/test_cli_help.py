"""Every command's --help names every setting with its default: they all read the same
environment as the server (`config.SETTINGS` is the one source)."""

from __future__ import annotations

import argparse

import pytest

from ankihost.cli import _parser
from ankihost.config import SETTINGS


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(_parser())


def test_the_commands_are_all_there() -> None:
    for command in [("serve",), ("user", "add"), ("device", "revoke"), ("snapshot", "restore"),
                    ("backup",), ("export",), ("healthcheck",), ("tls", "self-signed"), ("hash-password",)]:
        assert command in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_lists_every_setting_and_its_default(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        _parser().parse_args([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for setting in SETTINGS:
        assert setting.name in text
        if setting.default is not None:
            assert f"(default: {setting.default})" in text
