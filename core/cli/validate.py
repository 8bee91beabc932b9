"""`modeldeck validate|validations|gate`: validation on labelled data and the promotion gate.

Thin like core/cli.py: parse, call core.validation / core.gate, print. `validate` executes the
validation run in this process (like a worker), so it works without a worker running.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from typing import Any

from core.cli.output import (
    actor,
    open_store,
    print_json,
    progress_printer,
    require_read_deployment,
    with_step,
)
from core.entities import no_progress


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register this module's subcommands."""
    p = sub.add_parser(
        "validate", parents=[common], help="score a deployment's current version on labelled data"
    )
    p.add_argument("name", help="the deployment")
    p.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="labelled CSV/Parquet/JSON file or glob inside the workspace",
    )
    p.add_argument("--label", metavar="COL", help="label column (default: the target)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("validations", parents=[common], help="a deployment's validations")
    p.add_argument("name", help="the deployment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_validations)

    p = sub.add_parser(
        "gate",
        parents=[common],
        help="the promotion gate's checks (and thresholds) of a staging deployment",
    )
    p.add_argument("name", help="the staging deployment")
    p.add_argument(
        "--max-metric-drop",
        type=float,
        metavar="X",
        help="accuracy/F1/ROC-AUC/R2 may be at most X lower (0.01 = 1 point)",
    )
    p.add_argument(
        "--max-error-increase",
        type=float,
        metavar="X",
        help="MAE/RMSE may be at most X higher, relative (0.01 = 1 %%)",
    )
    p.add_argument("--latency-budget-ms", type=float, metavar="MS", help="single-row p99")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_gate)


def validation_json(v: Any) -> dict[str, Any]:
    return {
        "id": v.id,
        "deployment": v.deployment_name,
        "version": v.version_number,
        "main": v.main_model_id,
        "challenger": v.challenger_model_id,
        "run_id": v.run_id,
        "data": v.dataset_path,
        "sha256": v.dataset_sha256,
        "label": v.label_column,
        "status": v.status,
        "error": v.error,
        "created_by": v.created_by,
        "created_at": v.created_at.isoformat() + "Z",
        "report": v.report,
    }


def _metrics(metrics: dict[str, Any] | None) -> str:
    return (
        ", ".join(f"{k} {v:.4f}" for k, v in (metrics or {}).items() if isinstance(v, float))
        or "n/a"
    )


def _print_report(v: Any) -> None:
    print(
        f"{v.id}  {v.deployment_name} v{v.version_number}  {v.status}"
        + (f": {v.error}" if v.error else "")
    )
    r = v.report
    if not r:
        return
    for role in ("main", "challenger", "production"):
        part = r.get(role)
        if part:
            print(
                f"  {role:<11} {part['model_id']} ({part['algorithm']}): "
                + (part.get("error") or _metrics(part.get("metrics")))
            )
    latency, throughput = r["latency"], r["throughput"]
    print(
        f"  latency     single row p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f}"
        f" ms over {latency['rows']} rows; batch {throughput['rows_per_second'] or 0:,.0f}"
        " rows/s"
    )
    errors = r["error_analysis"]
    print(f"  {errors['measure']} {errors['overall']:.4f}; worst slices:")
    for s in errors["slices"][:5]:
        print(f"    {s['feature']} {s['slice']}: {s['error']:.4f} over {s['rows']} rows")


def cmd_validate(args: argparse.Namespace) -> int:
    from core import validation

    progress = no_progress if args.json else progress_printer()
    v = validation.validate_here(
        open_store(), args.name, args.data, args.label, progress=progress, actor=actor()
    )
    if args.json:
        print_json(validation_json(v))
    else:
        _print_report(v)
    return 1 if v.status == "failed" else 0


def cmd_validations(args: argparse.Namespace) -> int:
    from core import validation

    store = open_store()
    require_read_deployment(store, args.name)
    found = validation.list_validations(store, args.name)
    if args.json:
        print_json([validation_json(v) for v in found])
        return 0
    for v in found:
        print(
            f"{v.id}  v{v.version_number}  {v.status:<9} {v.created_at:%Y-%m-%d %H:%M}  "
            f"{v.dataset_path}  {_metrics((v.report.get('main') or {}).get('metrics'))}"
        )
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from core import promotion

    store = open_store()
    require_read_deployment(store, args.name)
    changes = {
        k: getattr(args, k)
        for k in ("max_metric_drop", "max_error_increase", "latency_budget_ms")
        if getattr(args, k) is not None
    }
    if changes:
        promotion.set_thresholds(
            store,
            args.name,
            replace(promotion.get_thresholds(store, args.name), **changes),
            actor=actor(),
        )
    checks = promotion.check_gate(store, args.name)
    if args.json:
        print_json(
            {
                "thresholds": asdict(promotion.get_thresholds(store, args.name)),
                "passed": not promotion.failing(checks),
                "checks": [asdict(c) for c in checks],
            }
        )
        return 0
    print_checks(checks)
    return 0


def print_checks(checks: list[Any]) -> None:
    """One line per gate check, with the fix under a failing one."""
    for c in checks:
        print(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        if not c.passed and c.fix:
            print(f"         fix: {with_step(c.fix, c.step)}")
