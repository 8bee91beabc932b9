"""`modeldeck explain RUN`: a row's SHAP explanation, or the run's global importance;
`modeldeck explain --model MODEL`: a model's global importance over its holdout rows.

Thin like core/cli.py: parse, call core.explain, print. core.explain is imported in the
handler, so other commands never pay for it.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from core.cli.output import open_store, print_json, require_read, require_read_run
from core.errors import InvalidInput


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `explain` on the main parser's subparsers."""
    p = sub.add_parser(
        "explain", parents=[common], help="explain rows of a run (SHAP), or its global importance"
    )
    p.add_argument("run_id", nargs="?", help="the run (omit with --model)")
    p.add_argument(
        "--model",
        metavar="MODEL_ID",
        help="global importance of a model over its holdout rows (computed once)",
    )
    p.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="KEY",
        help="a prediction key (a row number when the run has no key); repeatable",
    )
    p.add_argument(
        "--by",
        choices=["auto", "key", "row"],
        default="auto",
        help="match --row against the key column or the row number (_row)",
    )
    p.add_argument("--which", choices=["main", "challenger"], default="main")
    p.add_argument("--class", dest="class_", help="the class to explain (default: predicted)")
    p.add_argument(
        "--global",
        dest="is_global",
        action="store_true",
        help="compute (again) and show the run's global importance",
    )
    p.add_argument("--sample", type=int, default=1000, help="rows sampled for --global")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    from core import explain
    from core.registry import get_model

    store = open_store()
    if args.model:
        model = get_model(store, args.model)
        require_read(store, model.project)
        return _print_importance(explain.model_importance(store, model, args.sample), args.json)
    if not args.run_id:
        raise InvalidInput(
            "Say which run to explain.", "Give a run id, or --model MODEL_ID for a model's holdout."
        )
    require_read_run(store, args.run_id)
    if args.is_global:
        return _print_importance(
            explain.global_importance(store, args.run_id, args.which, args.sample), args.json
        )
    if not args.row:
        raise InvalidInput(
            "Say which row to explain.",
            "Add --row KEY (repeatable), or --global for the whole run.",
        )
    found_rows = explain.explain_rows(
        store, args.run_id, args.row, args.which, args.class_, by=args.by
    )
    if args.json:
        print_json(
            [e.to_dict() for e in found_rows] if len(found_rows) > 1 else found_rows[0].to_dict()
        )
        return 0
    for e in found_rows:
        what = e.scale + (f" of class {e.class_}" if e.class_ is not None else "")
        print(
            f"{e.key if e.key is not None else 'row ' + str(e.row)}: predicted "
            f"{e.prediction}; {what}: base {e.base_value:.6g} -> output {e.output:.6g} "
            f"({e.explainer})"
        )
        for c in e.contributions:
            value = "missing" if c.value is None else c.value
            print(f"  {c.contribution:+.6g}  {c.feature} = {value}")
        if e.note:
            print(f"  note: {e.note}")
    return 0


def _print_importance(found: Any, as_json: bool) -> int:
    if as_json:
        print_json({**asdict(found), "features": dict(found.features)})
        return 0
    print(f"{found.which}: mean |SHAP| ({found.scale}) over {found.rows} rows, {found.explainer}")
    for name, value in found.features:
        print(f"  {name:<30} {value:.6g}")
    return 0
