"""`ankihost user add|passwd|remove|set|list`: manage accounts, with or without a running
server (changes reach a running server at once). Passwords come from a prompt or stdin."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ankihost.cli.admin_call import CommandFailed, call, megabytes, moment, print_json, print_table
from ankihost.cli.prompt import PasswordError, read_new_password


def _quota(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        megs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number of MB, or none") from None
    if megs < 1:
        raise argparse.ArgumentTypeError("at least 1 MB, or none")
    return megs


PASSWORD_SOURCE = ("The password is asked for twice at a terminal, or read as one line from stdin "
                   "(echo … | ankihost …); never from the command line.")
SERVER_NOTE = ("Works whether or not the server runs on SYNC_BASE; a running server applies the "
               "change at once.")


def _verb(verbs: Any, name: str, summary: str, *more: str) -> Any:
    """A sub-command whose --help says what `ankihost user --help` lists, and more."""
    return verbs.add_parser(name, help=summary, description=" ".join([summary[0].upper() + summary[1:] + ".",
                                                                          *more]))


def add(commands: Any) -> None:
    group = commands.add_parser("user", help="add, change, remove and list accounts",
                                description="Add, change, remove and list accounts. " + SERVER_NOTE)
    verbs = group.add_subparsers(title="user commands", metavar="VERB", required=True)
    adder = _verb(verbs, "add", "add an account (password from a prompt or stdin)", PASSWORD_SOURCE, SERVER_NOTE)
    adder.add_argument("name", help="the user name the apps log in with (also its folder in SYNC_BASE)")
    adder.add_argument("--quota-mb", type=_quota, default=None, metavar="N",
                       help="the most the user may store (collection and media), in MB")
    adder.set_defaults(run=run_add)
    passwd = _verb(verbs, "passwd", "set a new password; logs out all of its devices", PASSWORD_SOURCE)
    passwd.add_argument("name")
    passwd.set_defaults(run=run_passwd)
    remover = _verb(verbs, "remove", "remove an account (its data is kept unless asked)",
                    "Its devices are refused from then on, and a sync it has under way is rolled back.")
    remover.add_argument("name")
    remover.add_argument("--delete-data", action="store_true", help="also delete its collection and media")
    remover.set_defaults(run=run_remove)
    setter = _verb(verbs, "set", "change an account's quota",
                   "Uploads that would take the account past it are refused with a message the app shows.")
    setter.add_argument("name")
    setter.add_argument("--quota-mb", type=_quota, required=True, metavar="N|none")
    setter.set_defaults(run=run_set)
    lister = _verb(verbs, "list", "every account, its storage, last sync and devices")
    lister.add_argument("--json", action="store_true", help="as JSON")
    lister.set_defaults(run=run_list)


def _with_password(args: dict[str, Any]) -> dict[str, Any]:
    try:
        return {**args, "password": read_new_password()}
    except PasswordError as exc:
        print(f"ankihost: {exc}", file=sys.stderr)
        raise CommandFailed from None


def run_add(args: argparse.Namespace) -> int:
    result = call("user.add", _with_password({"name": args.name, "quota_mb": args.quota_mb}))
    print(f"added {result['name']}; its data will be in {result['folder']}")
    return 0


def run_passwd(args: argparse.Namespace) -> int:
    result = call("user.passwd", _with_password({"name": args.name}))
    print(f"password of {result['name']} changed; {result['devices_revoked']} device(s) "
          "logged out (they ask for the password at their next sync)")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    result = call("user.remove", {"name": args.name, "delete_data": args.delete_data})
    where = "deleted" if result["data_deleted"] else f"kept in {result['folder']}"
    print(f"removed {result['name']}; its data is {where}")
    return 0


def run_set(args: argparse.Namespace) -> int:
    result = call("user.set", {"name": args.name, "quota_mb": args.quota_mb})
    print(f"quota of {result['name']}: {megabytes(result['quota_bytes'], 'none')}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    users = call("user.list", {})
    if args.json:
        print_json(users)
        return 0
    header = ["NAME", "SOURCE", "COLLECTION", "MEDIA", "QUOTA", "LAST SYNC", "RESULT",
              "CLIENT", "DEVICES"]
    print_table(header, [[
        u["name"], u["source"], megabytes(u["collection_bytes"]), megabytes(u["media_bytes"]),
        megabytes(u["quota_bytes"], "none"), moment(u["last_sync"]), u["last_result"] or "-",
        u["last_client"] or "-", "shared" if u["devices"] is None else str(u["devices"]),
    ] for u in users])
    return 0
