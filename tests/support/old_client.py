"""The old real Anki client (`anki` 2.1.54, sync protocol 10) as a device in tests.

The old wheel cannot share the test process with `anki` 26.9.3, so it lives in a virtual
environment of its own, `.venv-anki-2.1.54/` at the repository root (gitignored), which
:func:`old_client_python` builds on first use (a file lock keeps concurrent test runs from
building it twice). :class:`OldClient` starts `old_client_driver.py` in that environment and
sends it one JSON command per call; the driver keeps the collection open between calls.

    with OldClient(name="laptop") as old:
        old.login("user", "pass", server.endpoint)    # protocol 10 from here on
        old.add_notes([{"fields": {"Front": "a", "Back": "b"}, "deck": "Old"}])
        old.sync()                                     # "FULL_UPLOAD", "NORMAL_SYNC", ...
        old.full_upload()
        content = old.dump()                           # compare with new_client_dump(col)

:func:`new_client_dump` produces the same form from a 26.9.3 `Collection`; :func:`comparable`
removes the per-device bookkeeping (`usn`s that differ between devices) and the keys one client
version writes and the other does not, so the two can be compared with `==`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
OLD_ANKI_VERSION = "2.1.54"
# protobuf: the old wheel's generated code is of the 3.20 era; 4.25 still reads it silently.
OLD_CLIENT_REQUIREMENTS = (f"anki=={OLD_ANKI_VERSION}", "protobuf==4.25.9")
OLD_VENV = REPO_ROOT / f".venv-anki-{OLD_ANKI_VERSION}"
DRIVER = Path(__file__).with_name("old_client_driver.py")
# Which interpreter builds the old venv: ANKIHOST_OLD_CLIENT_PYTHON, else python3.11 (the
# version the old wheel is checked with), else the test suite's own.
PYTHON_ENV = "ANKIHOST_OLD_CLIENT_PYTHON"
BUILD_TIMEOUT_SECS = 600
CALL_TIMEOUT_SECS = 300
SYNC_TABLES = ("notes", "cards", "revlog")


class OldClientError(Exception):
    """A command failed inside the old client; `type`/`kind` name its exception."""

    def __init__(self, error: dict[str, str]) -> None:
        super().__init__(f"{error['type']}({error.get('kind', '')}): {error['message']}")
        self.type = error["type"]
        self.kind = error.get("kind", "")
        self.message = error["message"]
        self.trace = error.get("trace", "")


# --- the old client's virtual environment ------------------------------------------------------


def _base_python() -> str:
    chosen = os.environ.get(PYTHON_ENV) or shutil.which("python3.11") or sys.executable
    return str(chosen)


def _venv_ready(marker: Path) -> bool:
    python = OLD_VENV / "bin" / "python"
    return python.exists() and marker.exists() and marker.read_text() == "\n".join(OLD_CLIENT_REQUIREMENTS)


def old_client_python() -> Path:
    """The interpreter of the old client's venv, building the venv first if needed."""
    marker = OLD_VENV / "ankihost-ready"
    if _venv_ready(marker):
        return OLD_VENV / "bin" / "python"
    lock_path = OLD_VENV.with_name(OLD_VENV.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _venv_ready(marker):
            _build_venv(marker)
    return OLD_VENV / "bin" / "python"


def _build_venv(marker: Path) -> None:
    shutil.rmtree(OLD_VENV, ignore_errors=True)
    python = OLD_VENV / "bin" / "python"
    steps = [
        [_base_python(), "-m", "venv", str(OLD_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *OLD_CLIENT_REQUIREMENTS],
        [str(python), "-c", "import anki.collection, anki.sync"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECS)
        if done.returncode != 0:
            raise RuntimeError(
                f"building the anki {OLD_ANKI_VERSION} venv failed at {step[:4]}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    marker.write_text("\n".join(OLD_CLIENT_REQUIREMENTS))


# --- one old device ---------------------------------------------------------------------------


class OldClient:
    """One device running Anki 2.1.54, with its collection in its own folder.

    Every public method is one command to the driver (see `old_client_driver.Device`); a
    failure inside the old client raises :class:`OldClientError`.
    """

    def __init__(self, *, folder: str | Path | None = None, name: str = "old") -> None:
        self._own_folder = folder is None
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix=f"ankihost-{name}-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "collection.anki2"
        self.log_path = self.folder.with_name(self.folder.name + "-driver.log")
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [str(old_client_python()), str(DRIVER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=_driver_env(), text=True, encoding="utf-8",
        )
        self.call("open", path=str(self.path))

    # -- plumbing ---------------------------------------------------------------------------
    def call(self, cmd: str, **args: Any) -> Any:
        """Send one command and wait for its reply."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"old client driver died during {cmd!r}:\n{self.log_tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise OldClientError(reply["error"])
        return reply["ok"]

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    # -- commands ---------------------------------------------------------------------------
    def login(self, username: str, password: str, endpoint: str, media_endpoint: str = "") -> str:
        """Log in against `endpoint` (the base URL, with a trailing slash); returns the host key."""
        return str(self.call("login", username=username, password=password, endpoint=endpoint,
                             media_endpoint=media_endpoint)["hkey"])

    def use_endpoint(self, endpoint: str, media_endpoint: str = "") -> None:
        self.call("use_endpoint", endpoint=endpoint, media_endpoint=media_endpoint)

    def sync(self) -> str:
        """A normal sync; returns what the client says is needed (e.g. "FULL_UPLOAD")."""
        return str(self.call("sync")["required"])

    def full_upload(self) -> None:
        self.call("full_upload")

    def full_download(self) -> None:
        self.call("full_download")

    def sync_media(self) -> None:
        self.call("sync_media")

    def add_notes(self, notes: list[dict[str, Any]]) -> list[int]:
        """Notes as `{"notetype": "Basic", "fields": {...}, "tags": [...], "deck": "A::B"}`."""
        return list(self.call("add_notes", notes=notes))

    def remove_notes(self, ids: list[int]) -> int:
        return int(self.call("remove_notes", ids=ids))

    def find_notes(self, query: str) -> list[int]:
        return list(self.call("find_notes", query=query))

    def edit_note(self, id: int, fields: dict[str, str], tags: list[str] | None = None) -> None:
        self.call("edit_note", id=id, fields=fields, tags=tags)

    def review(self, deck: str, count: int, seed: int = 1) -> int:
        return int(self.call("review", deck=deck, count=count, seed=seed))

    def add_deck(self, name: str) -> int:
        return int(self.call("add_deck", name=name))

    def add_deck_options(self, name: str, deck: str, new_per_day: int, steps: list[float]) -> int:
        return int(self.call("add_deck_options", name=name, deck=deck, new_per_day=new_per_day,
                             steps=steps))

    def add_filtered_deck(self, name: str, search: str, limit: int = 100) -> int:
        return int(self.call("add_filtered_deck", name=name, search=search, limit=limit))

    def set_config(self, key: str, value: Any) -> None:
        self.call("set_config", key=key, value=value)

    def add_media(self, name: str, data: bytes) -> str:
        import base64

        return str(self.call("add_media", name=name, data_b64=base64.b64encode(data).decode()))

    def remove_media(self, names: list[str]) -> None:
        self.call("remove_media", names=names)

    def media_names(self) -> list[str]:
        return list(self.call("media_names"))

    def media_dir(self) -> Path:
        return Path(self.call("media_dir"))

    def sql(self, sql: str, *args: Any) -> list[list[Any]]:
        return list(self.call("sql", sql=sql, args=list(args)))

    def dump(self) -> dict[str, Any]:
        return dict(self.call("dump"))

    def open(self, path: str | Path | None = None) -> int:
        """(Re)open a collection file; returns its schema version as opened (always 18)."""
        return int(self.call("open", path=str(path or self.path))["ver"])

    def close(self, downgrade: bool = False) -> None:
        """Close the collection; `downgrade` leaves it as a schema-11 file (journal mode delete)."""
        self.call("close", downgrade=downgrade)

    # -- lifecycle --------------------------------------------------------------------------
    def stop(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the driver closes its collection and exits
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if self._own_folder:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> OldClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _driver_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "PYTHON"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def old_clients(*names: str) -> Iterator[list[OldClient]]:
    """Several old devices, all cleaned up afterwards."""
    made: list[OldClient] = []
    try:
        for name in names:
            made.append(OldClient(name=name))
        yield made
    finally:
        for client in made:
            client.cleanup()


# --- comparing what old and new clients hold ---------------------------------------------------


def new_client_dump(col: Any, media_dir: Path | None = None) -> dict[str, Any]:
    """`OldClient.dump()`'s form, made from a 26.9.3 `anki.collection.Collection`."""
    col.models._clear_cache()
    rows = {t: {str(r[0]): list(r) for r in col.db.all(f"select * from {t}")} for t in SYNC_TABLES}
    folder = media_dir or Path(col.media.dir())
    return {
        "col": dict(zip(("crt", "scm"), col.db.first("select crt, scm from col"), strict=True)),
        **rows,
        "graves": sorted(col.db.all("select oid, type from graves")),
        "decks": {str(d["id"]): d for d in col.decks.all()},
        "deck_configs": {str(c["id"]): c for c in col.decks.all_config()},
        "notetypes": {str(m["id"]): m for m in col.models.all()},
        "tags": dict(col.db.all("select tag, usn from tags")),
        "config": col.all_config(),
        "media": sorted(os.listdir(folder)) if folder.exists() else [],
    }


OBJECT_GROUPS = ("decks", "deck_configs", "notetypes")


def comparable(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two dumps (old or new client) made comparable with `==`.

    Both go through JSON (tuples become lists). Inside each deck, deck-options preset and
    notetype present on both sides, a key that only one side has is dropped: the newer client
    writes keys the older one does not know (e.g. `fsrsParams5`, a field's `id`), with their
    defaults. Every key both have, every object, row and name must still be equal.
    """
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    for group in OBJECT_GROUPS:
        for oid in a.get(group, {}).keys() & b.get(group, {}).keys():
            _drop_one_sided(a[group][oid], b[group][oid])
    return a, b


def _drop_one_sided(x: Any, y: Any) -> None:
    if isinstance(x, dict) and isinstance(y, dict):
        for key in x.keys() ^ y.keys():
            x.pop(key, None)
            y.pop(key, None)
        for key in x:
            _drop_one_sided(x[key], y[key])
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for item_x, item_y in zip(x, y, strict=True):
            _drop_one_sided(item_x, item_y)


def differences(a: dict[str, Any], b: dict[str, Any], limit: int = 12) -> list[str]:
    """Readable differences between two dumps (after `comparable`); empty when equal."""
    out: list[str] = []
    for group in sorted(a.keys() | b.keys()):
        x, y = a.get(group), b.get(group)
        if x == y:
            continue
        if not (isinstance(x, dict) and isinstance(y, dict)):
            out.append(f"{group}: {str(x)[:300]} != {str(y)[:300]}")
            continue
        for key in sorted(x.keys() | y.keys())[: limit * 50]:
            if x.get(key) != y.get(key) and len(out) < limit:
                out.append(f"{group}[{key}]: {str(x.get(key))[:300]} != {str(y.get(key))[:300]}")
    return out
