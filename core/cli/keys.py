"""`modeldeck keys create|list|revoke` and `modeldeck access NAME LEVEL`: calling the API.

A key is printed once, when it is created; afterwards lists show its first characters only.
"""

from __future__ import annotations

import argparse
from typing import Any

from core import deployments, keys
from core.cli.output import actor, open_store, print_json
from core.entities import ACCESS_LEVELS, ApiKey


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `keys` and `access`."""
    group = sub.add_parser("keys", help="your API keys: create, list, revoke")
    k_sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = k_sub.add_parser("create", parents=[common], help="a new key (printed once)")
    p.add_argument("name", help="what will use it, e.g. 'nightly job'")
    p.add_argument("--deployment", help="limit the key to this deployment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_create)

    p = k_sub.add_parser("list", parents=[common], help="your keys (every user's: --all, admins)")
    p.add_argument("--all", action="store_true", help="every user's keys (admins)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)

    p = k_sub.add_parser("revoke", parents=[common], help="revoke a key (yours, or any: admins)")
    p.add_argument("key_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_revoke)

    p = sub.add_parser(
        "access",
        parents=[common],
        help="who may call a deployment: public (anyone), instance (any user's key), "
        "project (a collaborator's key); owners",
    )
    p.add_argument("deployment")
    p.add_argument("level", help=f"one of {', '.join(ACCESS_LEVELS)}")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_access)


def key_json(key: ApiKey) -> dict[str, Any]:
    """A key in --json output: never the key itself."""
    return {
        "id": key.id,
        "user": key.username,
        "name": key.name,
        "shown": key.shown + "…",
        "deployment": key.deployment_name,
        "created_at": key.created_at.isoformat() + "Z",
        "last_used_at": key.last_used_at.isoformat() + "Z" if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() + "Z" if key.revoked_at else None,
    }


def _line(key: ApiKey) -> str:
    state = f"revoked by {key.revoked_by}" if key.revoked_at else "active"
    used = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never used"
    scope = f"  only {key.deployment_name}" if key.deployment_id else ""
    return f"{key.id}  {key.shown}…  {key.name:<20} {key.username:<12} {state}, {used}{scope}"


def cmd_create(args: argparse.Namespace) -> int:
    made = keys.create_key(open_store(), args.name, deployment=args.deployment, actor=actor())
    if args.json:
        print_json({**key_json(made.key), "key": made.secret})
        return 0
    print(f"created key {made.key.id} ({made.key.name})")
    print(f"  {made.secret}")
    print("  Shown once: store it now. Send it as 'Authorization: Bearer <key>'.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    found = keys.list_keys(open_store(), actor=actor(), everyone=args.all)
    if args.json:
        print_json([key_json(k) for k in found])
    elif not found:
        print("no keys yet: `modeldeck keys create NAME` makes one")
    for key in found if not args.json else ():
        print(_line(key))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    revoked = keys.revoke_key(open_store(), args.key_id, actor=actor())
    if args.json:
        print_json(key_json(revoked))
    else:
        print(f"revoked key {revoked.id} ({revoked.name}); calls with it now get 401")
    return 0


def cmd_access(args: argparse.Namespace) -> int:
    changed = deployments.set_access(open_store(), args.deployment, args.level, actor=actor())
    if args.json:
        print_json({"deployment": changed.name, "access": changed.access})
    else:
        print(f"{changed.name}: access {changed.access}")
    return 0
