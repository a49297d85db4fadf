"""`ankihost snapshot list|restore`: a user's collection snapshots, and putting one back while
the server runs (it waits for that user's sync to end; other users are not held up)."""

from __future__ import annotations

import argparse
from typing import Any

from ankihost.cli.admin_call import call, megabytes, moment, print_json, print_table
from ankihost.cli.terminal import ProgressView


def add(commands: Any) -> None:
    group = commands.add_parser("snapshot", help="list and restore a user's collection snapshots")
    verbs = group.add_subparsers(title="snapshot commands", metavar="VERB", required=True)
    lister = verbs.add_parser("list", help="a user's snapshots, oldest first, and the space they take")
    lister.add_argument("name")
    lister.add_argument("--json", action="store_true", help="as JSON")
    lister.set_defaults(run=run_list)
    restorer = verbs.add_parser(
        "restore", help="make a snapshot the user's collection again (the current one is "
        "snapshotted first); every device then asks for a full sync: choose Download")
    restorer.add_argument("name")
    restorer.add_argument("id", help="a snapshot id, from `snapshot list`")
    restorer.set_defaults(run=run_restore)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def run_list(args: argparse.Namespace) -> int:
    result = call("snapshot.list", {"name": args.name})
    if args.json:
        print_json(result)
        return 0
    rows = [[s["id"], s["reason"], moment(s["taken"]), _count(s["notes"]), _count(s["cards"]),
             _count(s["reviews"]), megabytes(s["file_bytes"]) + (" (damaged)" if s["damaged"] else "")]
            for s in result["snapshots"]]
    if rows:
        print_table(["ID", "REASON", "TAKEN", "NOTES", "CARDS", "REVIEWS", "SIZE"], rows)
    print(f"{len(rows)} snapshot(s) of {result['name']}, {megabytes(result['disk_bytes'])} on disk")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    view = ProgressView()
    result = call("snapshot.restore", {"name": args.name, "id": args.id}, view)
    view.close()
    saved = (f"; the collection it replaced is kept as snapshot {result['saved']}"
             if result["saved"] else "")
    print(f"restored snapshot {result['restored']} of {result['name']} ({_count(result['notes'])} "
          f"notes, {_count(result['cards'])} cards){saved}.")
    print(f"At their next sync, {result['name']}'s devices say a full sync is needed: choose "
          "Download on each of them (Upload would replace the restored collection).")
    return 0
