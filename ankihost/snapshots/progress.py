"""What a long operation of this package (backup, export, restore) tells about its progress.

The core only calls these methods; the admin layer's `admin/progress.Meter` turns them
into events for whoever asked (the terminal, the admin channel). `Silent` tells nobody.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def expect(self, total: int) -> None:
        """A stretch of work of about `total` bytes begins (the count starts again at 0)."""

    def add(self, count: int) -> None:
        """`count` more bytes of the work are done."""

    def name(self, what: str) -> None:
        """What is being worked on now (e.g. a user's name)."""

    def say(self, text: str) -> None:
        """A line for the operator."""


class Silent:
    def expect(self, total: int) -> None:
        pass

    def add(self, count: int) -> None:
        pass

    def name(self, what: str) -> None:
        pass

    def say(self, text: str) -> None:
        pass
