"""`modeldeck deploy|promote|rollback|deployments|run|runs`: the deployment commands.

Thin like core/cli.py: parse, call core, print. Shares its helpers (JSON output, progress).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from core import deployments, promotion, runs
from core.cli.output import (
    actor,
    open_store,
    print_json,
    progress_printer,
    require_read,
    require_read_run,
)
from core.entities import ENVIRONMENTS, Deployment, Run
from core.errors import WorkerMissing
from core.store import Store
from core.worker import sidecars


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the deployment commands on the main parser's subparsers."""
    p = sub.add_parser("deploy", parents=[common], help="deploy a model to staging/production")
    p.add_argument("model_id")
    p.add_argument("--env", required=True, choices=ENVIRONMENTS)
    p.add_argument("--name", help="deployment name (default: <experiment>-<env>)")
    p.add_argument("--challenger", help="a model of the same experiment to run in shadow")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_deploy)

    p = sub.add_parser("promote", parents=[common], help="promote staging to production")
    p.add_argument("name", help="the staging deployment")
    for what in ("pipeline", "schedule", "report"):
        p.add_argument(f"--no-{what}", action="store_true", help=f"keep production's {what}")
    p.add_argument(
        "--override",
        metavar="REASON",
        help="promote although a gate check fails; the reason is audited",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_promote)

    p = sub.add_parser("rollback", parents=[common], help="make an earlier version current")
    p.add_argument("name")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_rollback)

    dep = sub.add_parser("deployments", help="list, show and delete deployments")
    d_sub = dep.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = d_sub.add_parser("list", parents=[common], help="every deployment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_deployments_list)
    p = d_sub.add_parser("show", parents=[common], help="one deployment with its versions")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_deployments_show)
    p = d_sub.add_parser("delete", parents=[common], help="delete (results stay downloadable)")
    p.add_argument("name")
    p.add_argument("--confirm", required=True, metavar="NAME", help="repeat the name")
    p.set_defaults(handler=cmd_deployments_delete)

    p = sub.add_parser("run", parents=[common], help="queue a run of a deployment's pipeline")
    p.add_argument("name")
    p.add_argument("--source", help="score this file or glob instead of the pipeline's source")
    p.add_argument("--wait", action="store_true", help="wait for the worker to finish it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_run)

    runs = sub.add_parser("runs", help="list and show runs")
    r_sub = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = r_sub.add_parser("list", parents=[common], help="a deployment's runs, newest first")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runs_list)
    p = r_sub.add_parser("show", parents=[common], help="one run")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runs_show)


def deployment_json(d: Deployment) -> dict[str, Any]:
    current = d.current
    return {
        "id": d.id,
        "name": d.name,
        "environment": d.environment,
        "access": d.access,
        "project_id": d.project_id,
        "experiment_id": d.experiment_id,
        "current": None
        if current is None
        else {
            "version": current.number,
            "main": current.main_model_id,
            "challenger": current.challenger_model_id,
        },
        "pipeline": d.pipeline,
        "schedule": d.schedule,
        "report": d.report,
        "created_at": d.created_at.isoformat() + "Z",
        "updated_at": d.updated_at.isoformat() + "Z",
    }


def run_json(r: Run) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() + "Z" if value else None

    return {
        "id": r.id,
        "deployment": r.deployment_name,
        "version_id": r.version_id,
        "trigger": r.trigger,
        "status": r.status,
        "progress": r.progress,
        "message": r.message,
        "error": r.error,
        "rows_in": r.rows_in,
        "rows_out": r.rows_out,
        "summary": r.summary,
        "queued_by": r.queued_by,
        "queued_at": iso(r.queued_at),
        "started_at": iso(r.started_at),
        "finished_at": iso(r.finished_at),
        "attempt": r.attempt,
    }


def _show_deployment(d: Deployment) -> None:
    pins = (
        (
            f"v{d.current.number} main {d.current.main_model_id}"
            + (
                f", challenger {d.current.challenger_model_id}"
                if d.current.challenger_model_id
                else ""
            )
        )
        if d.current
        else "no version"
    )
    print(f"{d.name:<32} {d.environment:<10} {pins}")


def _output(args: argparse.Namespace, value: Any, text: Any) -> int:
    if args.json:
        print_json(value)
    else:
        text()
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    d = deployments.deploy(
        open_store(),
        args.model_id,
        args.env,
        name=args.name,
        challenger_id=args.challenger,
        actor=actor(),
    )
    return _output(args, deployment_json(d), lambda: _show_deployment(d))


def cmd_promote(args: argparse.Namespace) -> int:
    from core import promotion
    from core.cli.validate import print_checks

    store = open_store()
    checks = promotion.check_gate(store, args.name)
    d = promotion.promote(
        store,
        args.name,
        copy_pipeline=not args.no_pipeline,
        copy_schedule=not args.no_schedule,
        copy_report=not args.no_report,
        override_reason=args.override,
        actor=actor(),
    )
    value = {**deployment_json(d), "gate": [asdict(c) for c in checks]}

    def show() -> None:
        print_checks(checks)
        _show_deployment(d)

    return _output(args, value, show)


def cmd_rollback(args: argparse.Namespace) -> int:
    d = deployments.rollback(open_store(), args.name, args.version, actor=actor())
    return _output(args, deployment_json(d), lambda: _show_deployment(d))


def cmd_deployments_list(args: argparse.Namespace) -> int:
    found = deployments.list_deployments(open_store(), visible_to=actor())

    def show() -> None:
        for d in found:
            _show_deployment(d)

    return _output(args, [deployment_json(d) for d in found], show)


def cmd_deployments_show(args: argparse.Namespace) -> int:
    store = open_store()
    d = deployments.get_deployment(store, args.name)
    require_read(store, d.project_id)
    versions = deployments.list_versions(store, d.id)
    value = {
        **deployment_json(d),
        "versions": [
            {
                "version": v.number,
                "main": v.main_model_id,
                "challenger": v.challenger_model_id,
                "created_by": v.created_by,
                "created_at": v.created_at.isoformat() + "Z",
            }
            for v in versions
        ],
    }

    def text() -> None:
        _show_deployment(d)
        for v in versions:
            mark = "*" if d.current and v.id == d.current.id else " "
            print(
                f"  {mark} v{v.number}  main {v.main_model_id}  challenger "
                f"{v.challenger_model_id or '-'}  by {v.created_by} "
                f"{v.created_at:%Y-%m-%d %H:%M}"
            )

    return _output(args, value, text)


def cmd_deployments_delete(args: argparse.Namespace) -> int:
    promotion.delete_deployment(open_store(), args.name, confirm=args.confirm, actor=actor())
    print(f"Deleted {args.name}; its runs' results stay until purged.")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    store = open_store()
    override = {"kind": "file", "path": args.source} if args.source else None
    run = runs.enqueue_run(store, args.name, source_override=override, actor=actor())
    if args.wait:
        run = wait_for(store, run)
    if args.json:
        _output(args, run_json(run), None)
    else:
        print(f"{run.id}  {run.status}" + (f": {run.error}" if run.error else ""))
    return 1 if run.status == "failed" else 0


NO_WORKER_GRACE = 5.0  # seconds a queued run waits for a worker before we say none is alive


def wait_for(store: Store, run: Run) -> Run:
    """Poll a run until it finishes, with a progress bar; raises WorkerMissing when it is
    still queued after NO_WORKER_GRACE seconds and no worker's heartbeat is fresh."""
    show = progress_printer()
    started = time.monotonic()
    while not run.is_finished:
        show(run.progress, run.message or run.status)
        if (
            run.status == "queued"
            and time.monotonic() - started > NO_WORKER_GRACE
            and not sidecars.worker_status(store.workspace).is_alive
        ):
            raise WorkerMissing(run.id)
        time.sleep(0.5)
        run = runs.get_run(store, run.id)
    show(1.0, run.status)
    return run


def cmd_runs_list(args: argparse.Namespace) -> int:
    found = runs.list_runs(open_store(), args.name, visible_to=actor())

    def text() -> None:
        for r in found:
            print(
                f"{r.id}  {r.status:<10} {r.trigger:<9} {r.queued_at:%Y-%m-%d %H:%M:%S}  "
                f"rows {r.rows_out if r.rows_out is not None else '-'}"
                + (f"  {r.error}" if r.error else "")
            )

    return _output(args, [run_json(r) for r in found], text)


def cmd_runs_show(args: argparse.Namespace) -> int:
    store = open_store()
    require_read_run(store, args.run_id)
    run = runs.get_run(store, args.run_id)
    return _output(
        args,
        run_json(run),
        lambda: print(
            f"{run.id}  {run.deployment_name}  {run.status}  rows {run.rows_out}  {run.error or ''}"
        ),
    )
