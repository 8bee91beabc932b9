"""`modeldeck schedule NAME`: set, pause, resume and show a deployment's cron schedule.

Thin like core/cli.py: parse, call core.scheduler, print.
"""

from __future__ import annotations

import argparse
from typing import Any

from core import scheduler
from core.cli.output import actor, open_store, print_json, require_read_deployment
from core.errors import InvalidInput


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `schedule` on the main parser's subparsers."""
    p = sub.add_parser(
        "schedule", parents=[common], help="set, pause, resume or show a deployment's cron schedule"
    )
    p.add_argument("name", help="the deployment")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--cron", metavar="EXPR", help="5-field cron expression, or @hourly/@daily/@weekly/@monthly"
    )
    what.add_argument(
        "--preset",
        choices=sorted(scheduler.PRESETS),
        help="hourly (minute 0), daily (06:00), weekly (Monday 06:00)",
    )
    what.add_argument("--pause", action="store_true", help="stop producing runs")
    what.add_argument("--resume", action="store_true", help="produce runs again, from now")
    what.add_argument("--show", action="store_true", help="show the schedule (the default)")
    p.add_argument(
        "--tz",
        default=None,
        metavar="ZONE",
        help="IANA time zone of the expression (default: UTC, or the current one)",
    )
    p.add_argument(
        "--catch-up",
        choices=scheduler.CATCH_UP,
        help="missed slots while no worker ran: one catch-up run (default) or skip",
    )
    p.add_argument(
        "--overlap",
        choices=scheduler.OVERLAP,
        help="a slot while a run is in flight: skip it (default) or wait",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        metavar="N",
        help="run attempts when a worker dies mid-run (1 = no retry, the default)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_schedule)


def cmd_schedule(args: argparse.Namespace) -> int:
    store = open_store()
    require_read_deployment(store, args.name)
    policy = {"catch_up": args.catch_up, "overlap": args.overlap, "max_attempts": args.max_attempts}
    cron = scheduler.PRESETS[args.preset] if args.preset else args.cron
    if cron is not None:
        current = scheduler.get_schedule(store, args.name)
        tz = args.tz or (current.timezone if current else "UTC")
        scheduler.set_schedule(store, args.name, cron, tz, **policy, actor=actor())
    elif args.tz is not None:
        raise InvalidInput(
            "--tz goes with --cron or --preset.",
            f"e.g. `modeldeck schedule {args.name} --cron '0 6 * * 1' --tz {args.tz}`.",
        )
    elif args.pause:
        scheduler.pause(store, args.name, actor=actor())
    elif args.resume:
        scheduler.resume(store, args.name, actor=actor())
    if cron is None and any(v is not None for v in policy.values()):
        scheduler.set_policy(store, args.name, **policy, actor=actor())
    shown = scheduler.show(store, args.name)
    if args.json:
        print_json(shown)
        return 0
    state = "paused" if shown["paused"] else "active"
    print(f"{shown['deployment']}: {shown['expression']} ({shown['timezone']}), {state}")
    print(f"  {shown['description']}")
    print(
        f"  catch-up {shown['catch_up']}, overlap {shown['overlap']}, "
        f"max attempts {shown['max_attempts']}"
    )
    for when in shown["next"]:
        print(f"  next: {when}")
    return 0
