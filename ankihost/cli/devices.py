"""`ankihost device list|revoke`: each login of an account is a device with its own key;
revoking one makes that app ask for the password again, and no other device notices."""

from __future__ import annotations

import argparse
from typing import Any

from ankihost.cli.admin_call import call, moment, print_json, print_table


def add(commands: Any) -> None:
    group = commands.add_parser("device", help="list and revoke an account's devices",
                                description="List and revoke an account's devices: each login of an "
                                "account made with `ankihost user add` is a device with its own key.")
    verbs = group.add_subparsers(title="device commands", metavar="VERB", required=True)
    lister = verbs.add_parser("list", help="an account's devices",
                              description="An account's devices: id, client version, first and last "
                              "seen, last address.")
    lister.add_argument("name")
    lister.add_argument("--json", action="store_true", help="as JSON")
    lister.set_defaults(run=run_list)
    revoker = verbs.add_parser("revoke", help="log devices out (their key stops working)",
                               description="Log devices out: their next sync is refused and the app asks "
                               "for the password again; the account's other devices are not affected.")
    revoker.add_argument("name")
    which = revoker.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID", help="device ids, from `device list`")
    which.add_argument("--all", action="store_true", help="every device of the account")
    revoker.set_defaults(run=run_revoke)


def run_list(args: argparse.Namespace) -> int:
    result = call("device.list", {"name": args.name})
    if args.json:
        print_json(result)
    elif result["shared_key"]:
        print(f"{result['name']} is a SYNC_USERn account: its devices share one login derived from "
              "its password, as with the official server (ANKIHOST_ENV_DEVICE_KEYS=1 gives each "
              "device its own)")
    else:
        print_table(["ID", "CLIENT", "FIRST SEEN", "LAST SEEN", "LAST ADDRESS"], [
            [d["id"], d["client"] or "-", moment(d["first_seen"]), moment(d["last_seen"]), d["last_ip"]]
            for d in result["devices"]
        ])
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    if not args.all and not args.ids:
        print("ankihost: name the devices to revoke, or --all")
        return 2
    result = call("device.revoke", {"name": args.name, "ids": None if args.all else args.ids})
    print(f"revoked {len(result['revoked'])} device(s) of {result['name']}: "
          f"{', '.join(result['revoked']) or 'none'}")
    return 0
