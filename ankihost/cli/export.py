"""`ankihost export NAME OUT.colpkg [--no-media]`: a user's collection as a collection package,
which Anki desktop imports with File → Import, so a user can always take their data out."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ankihost.cli.admin_call import call, megabytes
from ankihost.cli.terminal import ProgressView


def add(commands: Any) -> None:
    parser = commands.add_parser("export", help="write a user's collection (and media) as a "
                                 ".colpkg that Anki desktop imports")
    parser.add_argument("name")
    parser.add_argument("out", metavar="OUT.colpkg", help="the package to write (a new file)")
    parser.add_argument("--no-media", action="store_true", help="leave the media files out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    view = ProgressView()
    dest = Path(args.out).absolute()
    result = call("export.create", {"name": args.name, "dest": str(dest),
                                    "media": not args.no_media}, view)
    view.close()
    print(f"wrote {result['path']}: {result['notes']} notes, {result['cards']} cards, "
          f"{result['media_files']} media files ({megabytes(result['media_bytes'])})")
    if result["skipped_count"]:
        print(f"left out {result['skipped_count']} media file(s) whose names Anki would refuse: "
              + ", ".join(result["skipped"]))
    return 0
