"""`modeldeck connections add|list|test|remove` and `modeldeck redeliver RUN`.

Thin like core/cli.py: parse, call core.connections / core.delivery, print. A password is
never an argument (shell history, `ps`): `--password-env VAR` names a variable read when
connecting, `--password-stdin` reads it once and stores it encrypted with the workspace key.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli.output import actor, open_store, print_json


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `connections` and `redeliver`."""
    conns = sub.add_parser("connections", help="PostgreSQL connections of a project")
    c_sub = conns.add_subparsers(dest="action", required=True, metavar="ACTION")
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument("--project", default="Default", help="project name or id")
    project.add_argument("--json", action="store_true")

    p = c_sub.add_parser("add", parents=[common, project], help="store a connection")
    p.add_argument("name")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--database", required=True)
    # --user names the ModelDeck user running the command, like everywhere.
    p.add_argument("--db-user", required=True, help="the PostgreSQL user")
    p.add_argument("--sslmode", default="prefer")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable when connecting "
        "(its name must start with MODELDECK_SECRET_)",
    )
    secret.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin; stored encrypted",
    )
    p.add_argument(
        "--allow-cleartext-password",
        action="store_true",
        help="send the password to a host outside the loopback even without TLS "
        "(only on a network you trust)",
    )
    p.add_argument("--replace", action="store_true", help="overwrite a connection of that name")
    p.set_defaults(handler=cmd_add)
    for action, handler, text in (
        ("list", cmd_list, "a project's connections"),
        ("test", cmd_test, "connect and report the server version"),
        ("remove", cmd_remove, "delete a connection"),
    ):
        p = c_sub.add_parser(action, parents=[common, project], help=text)
        if action != "list":
            p.add_argument("name")
        p.set_defaults(handler=handler)

    p = sub.add_parser(
        "redeliver",
        parents=[common],
        help="write a finished run's results to its sinks again (no predicting)",
    )
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_redeliver)


def _line(conn: Any) -> str:
    return f"{conn.name:<20} {conn.address:<40} sslmode {conn.sslmode:<8} {conn.password_label}"


def cmd_add(args: argparse.Namespace) -> int:
    from core import connections

    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    conn = connections.add_connection(
        open_store(),
        args.project,
        args.name,
        host=args.host,
        port=args.port,
        database=args.database,
        user=args.db_user,
        sslmode=args.sslmode,
        password=password,
        password_env=args.password_env,
        replace=args.replace,
        allow_cleartext=args.allow_cleartext_password,
        actor=actor(),
    )
    if args.json:
        print_json(conn.to_dict())
    else:
        print(f"stored {_line(conn)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from core import connections

    found = connections.list_connections(open_store(), args.project, visible_to=actor())
    if args.json:
        print_json([c.to_dict() for c in found])
    else:
        for conn in found:
            print(_line(conn))
        if not found:
            print(f"no connections in project {args.project}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from core import connections

    result = connections.test_connection(open_store(), args.project, args.name, actor=actor())
    if args.json:
        print_json(result)
    else:
        print(
            f"{args.name}: connected to PostgreSQL {result['server_version']} in "
            f"{result['seconds']:.2f} s"
        )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from core import connections

    connections.remove_connection(open_store(), args.project, args.name, actor=actor())
    if args.json:
        print_json({"removed": args.name})
    else:
        print(f"removed connection {args.name}")
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    from core import delivery

    run = delivery.redeliver(open_store(), args.run_id, actor=actor())
    if args.json:
        print_json({"run": run.id, "status": run.status, "sinks": run.summary.get("sinks")})
    else:
        print(
            f"run {run.id} delivered to {len(run.summary.get('sinks') or [])} sink(s); "
            f"status {run.status}"
        )
    return 0
