"""`ankihost media trash|restore`: list the media files syncs deleted or replaced, and put
them back as new server changes (every device downloads them at its next media sync)."""

from __future__ import annotations

import argparse
from typing import Any

from ankihost.cli.admin_call import call, megabytes, moment, print_json, print_table


def add(commands: Any) -> None:
    group = commands.add_parser("media", help="a user's media trash: list it, restore from it")
    verbs = group.add_subparsers(title="media commands", metavar="VERB", required=True)
    lister = verbs.add_parser("trash", help="the media files in a user's trash, newest first")
    lister.add_argument("name")
    lister.add_argument("--json", action="store_true", help="as JSON")
    lister.set_defaults(run=run_trash)
    restorer = verbs.add_parser(
        "restore", help="put files back from the trash (the newest version of each name)")
    restorer.add_argument("name")
    restorer.add_argument("files", nargs="+", metavar="FILE", help="media file names, as listed")
    restorer.set_defaults(run=run_restore)


def run_trash(args: argparse.Namespace) -> int:
    result = call("media.trash", {"name": args.name})
    if args.json:
        print_json(result)
        return 0
    files = result["files"]
    if not files:
        kept = f"kept {result['days']} days" if result["days"] else "off: ANKIHOST_MEDIA_TRASH_DAYS=0"
        print(f"the media trash of {result['name']} is empty (the trash is {kept})")
        return 0
    print_table(["FILE", "SIZE", "TRASHED", "PURGED AFTER", "SHA-1"], [
        [f["file"], _size(f["size"]), moment(f["trashed_at"]), moment(f["expires_at"]), f["sha1"]]
        for f in files
    ])
    print(f"{len(files)} file(s), {megabytes(result['total_bytes'])}; the trash counts toward "
          "no quota")
    return 0


def _size(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size / 1024:.1f} KB" if size < 1024**2 else megabytes(size)


def run_restore(args: argparse.Namespace) -> int:
    result = call("media.restore", {"name": args.name, "files": args.files})
    for name in result["already_there"]:
        print(f"{name}: already on the server with this content; left as it is")
    if result["restored"]:
        print(f"restored {len(result['restored'])} file(s) to {result['name']} (media USN "
              f"{result['usn']}); every device downloads them at its next sync")
    return 0
