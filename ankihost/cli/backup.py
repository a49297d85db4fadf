"""`ankihost backup DEST`: one archive of the whole server, taken while it serves, checked after
writing. `--verify FILE` checks an archive; `--restore FILE SYNC_BASE` unpacks one into a new,
empty data folder that either ankihost or the official server can serve as it is."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ankihost.admin.progress import Meter, reporting
from ankihost.cli.admin_call import call, megabytes
from ankihost.cli.terminal import ProgressView
from ankihost.errors import SyncError
from ankihost.snapshots import backup


def add(commands: Any) -> None:
    parser = commands.add_parser(
        "backup", help="back up every user's collection and media and the accounts into one "
        "archive while the server runs; check or unpack an archive",
        usage="ankihost backup DEST [--snapshots] | --verify FILE | --restore FILE SYNC_BASE")
    parser.add_argument("dest", nargs="?", metavar="DEST",
                        help="the archive to write (a new file, or a folder for a dated name)")
    parser.add_argument("--snapshots", action="store_true", help="also carry users' snapshots")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--verify", metavar="FILE", help="check an archive (exit status 1 if bad)")
    mode.add_argument("--restore", nargs=2, metavar=("FILE", "SYNC_BASE"),
                      help="unpack an archive into a new or empty data folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if sum(x is not None for x in (args.dest, args.verify, args.restore)) != 1:
        print("ankihost backup: give DEST, --verify FILE or --restore FILE SYNC_BASE", file=sys.stderr)
        return 2
    if args.verify is not None:
        return _local(_verify, Path(args.verify))
    if args.restore is not None:
        return _local(_unpack, Path(args.restore[0]), Path(args.restore[1]))
    return _create(Path(args.dest).absolute(), args.snapshots)


def _create(dest: Path, snapshots: bool) -> int:
    view = ProgressView()
    result = call("backup.create", {"dest": str(dest), "snapshots": snapshots}, view)
    view.close()
    print(f"wrote {result['path']}: {result['users']} user(s), {result['files']} files, "
          f"{megabytes(result['bytes'])} ({megabytes(result['archive_bytes'])} compressed) in "
          f"{result['seconds']} s; checked")
    return 0


def _local(work: Any, *paths: Path) -> int:
    """Checking and unpacking read an archive and write a new folder: no server is involved."""
    view = ProgressView()
    try:
        with reporting(view):
            done = work(*paths)
    except SyncError as exc:
        view.close()
        print(f"ankihost: {exc.reason}", file=sys.stderr)
        return 1
    view.close()
    print(done)
    return 0


def _verify(path: Path) -> str:
    scratch = Path(tempfile.mkdtemp(prefix="ankihost-verify-"))
    try:
        about = backup.verify(path, scratch, Meter(what="checking"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return (f"{path}: a sound ankihost backup of {len(about.users)} user(s), {about.files} files, "
            f"{megabytes(about.bytes)}, made {_made(about.header)}")


def _unpack(path: Path, target: Path) -> str:
    about = backup.unpack(path, target, Meter(what="unpacking"))
    return (f"unpacked {about.files} files of {len(about.users)} user(s) into {target.absolute()}; "
            "serve it with SYNC_BASE set to it (the official server needs SYNC_USERn for each user)")


def _made(header: dict[str, Any]) -> str:
    created = header.get("created")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if isinstance(created, int) else "?"
    return f"{when} by ankihost {header.get('ankihost', '?')}"
