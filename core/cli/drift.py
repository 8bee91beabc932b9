"""`modeldeck drift NAME [--run RUN | --last N] [--json]`: drift per feature and prediction.

Thin like core/cli.py: parse, call core.drift, print.
"""

from __future__ import annotations

import argparse
from typing import Any

from core.cli.output import open_store, print_json, require_read_deployment


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `drift` on the main parser's subparsers."""
    p = sub.add_parser(
        "drift", parents=[common], help="drift of a deployment's served data against training"
    )
    p.add_argument("name", help="the deployment")
    window = p.add_mutually_exclusive_group()
    window.add_argument("--run", help="one run (default: the latest run)")
    window.add_argument("--last", type=int, help="the last N runs together")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_drift)


def _line(f: Any) -> str:
    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    text = (
        f"  {f.name:<28} {f.status:<9} psi {num(f.psi):<8} {f.distance_kind or 'distance'}"
        f" {num(f.distance):<8} p {num(f.p_value)}"
    )
    return text + (f"  ({f.note})" if f.note else "")


def cmd_drift(args: argparse.Namespace) -> int:
    from core import drift

    store = open_store()
    require_read_deployment(store, args.name)
    report = drift.drift_report(store, args.name, run_id=args.run, last=args.last)
    if args.json:
        print_json(report.to_dict())
        return 0
    window = f"{len(report.run_ids)} run(s), {report.rows} rows"
    print(
        f"{report.deployment}: {len(report.drifted)} of {len(report.scored)} features drifted"
        f" ({window}; model {report.model_id}; PSI thresholds "
        f"{report.thresholds.moderate:g} / {report.thresholds.drifted:g})"
    )
    for f in sorted(report.features, key=lambda f: -(f.psi or 0)):
        print(_line(f))
    if report.prediction is not None:
        print("prediction:")
        print(_line(report.prediction))
    for note in report.notes:
        print(f"note: {note}")
    return 0
