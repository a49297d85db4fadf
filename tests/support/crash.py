"""Run the `ankihost` command in this process and SIGKILL it at a chosen point.

    python -m tests.support.crash TARGET WHEN N -- ARGS...

TARGET names a function as `module:attribute.path` (`os:replace`,
`ankihost.snapshots.shelf:UserSnapshots.capture`); WHEN is `before` or `after` (the call);
N which call (1 = the first). The process sends itself SIGKILL right there: nothing of
Python's clean-up runs, exactly as after a `kill -9` from outside.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from typing import Any


def _arm(target: str, when: str, nth: int) -> None:
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


def main(argv: list[str]) -> int:
    target, when, nth, separator, *args = argv
    if separator != "--" or when not in ("before", "after"):
        raise SystemExit(__doc__)
    import ankihost.cli  # the modules the target lives in, imported before it is armed

    _arm(target, when, int(nth))
    return ankihost.cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
