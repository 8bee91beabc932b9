"""`modeldeck report NAME` (a deployment's report settings) and `modeldeck report-file RUN`
(the path of a run's HTML report, written now when missing).

Thin like core/cli.py: parse, call core.reports, print.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from core.cli.output import (
    actor,
    open_store,
    print_json,
    require_read_deployment,
    require_read_run,
)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `report` and `report-file` on the main parser's subparsers."""
    p = sub.add_parser(
        "report", parents=[common], help="show or change when a deployment writes HTML run reports"
    )
    p.add_argument("name", help="the deployment")
    on = p.add_mutually_exclusive_group()
    on.add_argument(
        "--on",
        dest="enabled",
        action="store_const",
        const=True,
        help="write a report after each qualifying run",
    )
    on.add_argument(
        "--off",
        dest="enabled",
        action="store_const",
        const=False,
        help="write no reports (the default)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--every-run",
        dest="runs",
        action="store_const",
        const="all",
        help="after every run (manual, API and validation runs too)",
    )
    which.add_argument(
        "--scheduled-only",
        dest="runs",
        action="store_const",
        const="scheduled",
        help="after scheduled runs only (the default)",
    )
    copy = p.add_mutually_exclusive_group()
    copy.add_argument(
        "--copy-to",
        metavar="DIR",
        help="also copy each report into this folder (workspace or allowed roots)",
    )
    copy.add_argument("--no-copy", action="store_true", help="stop copying reports")
    p.add_argument("--show", action="store_true", help="show the settings (also the default)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser(
        "report-file",
        parents=[common],
        help="the path of a run's HTML report (written now when missing)",
    )
    p.add_argument("run", help="the run id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_report_file)


def cmd_report(args: argparse.Namespace) -> int:
    from core import reports

    store = open_store()
    require_read_deployment(store, args.name)
    copy_to = "" if args.no_copy else args.copy_to
    if args.enabled is None and args.runs is None and copy_to is None:
        settings = reports.get_report_settings(store, args.name)
    else:
        settings = reports.set_report_settings(
            store, args.name, enabled=args.enabled, runs=args.runs, copy_to=copy_to, actor=actor()
        )
    if args.json:
        print_json({"deployment": args.name, **asdict(settings)})
        return 0
    state = "on" if settings.enabled else "off"
    after = "every run" if settings.runs == "all" else "scheduled runs only"
    print(
        f"{args.name}: reports {state}, after {after}"
        + (f", copied to {settings.copy_to}" if settings.copy_to else "")
    )
    return 0


def cmd_report_file(args: argparse.Namespace) -> int:
    from core import reports

    store = open_store()
    require_read_run(store, args.run)
    path = reports.report_file(store, args.run)
    if args.json:
        print_json({"run_id": args.run, "path": str(path), "bytes": path.stat().st_size})
        return 0
    print(path)
    return 0
