"""Champion vs challenger, ground truth and swap on the command line.

    modeldeck challenger NAME [--run RUN | --last N] [--top N] [--tolerance X] [--json]
    modeldeck labels add NAME (--file PATH | --sql SQL) (--key COL | --request-id COL [--row COL])
        --label COL [--json]
    modeldeck labels list NAME [--json]
    modeldeck live NAME [--run RUN | --last N] [--json]
    modeldeck swap NAME [--json]

Thin like core/cli.py: parse, call core.challenger / core.ground_truth, print.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from core.cli.output import actor, open_store, print_json, require_read_deployment


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `challenger`, `labels`, `live` and `swap`."""
    p = sub.add_parser(
        "challenger",
        parents=[common],
        help="main vs challenger over runs: agreement, disagreements",
    )
    p.add_argument("name", help="the deployment")
    _window(p, "the last N runs together (default 10)")
    p.add_argument("--top", type=int, default=20, help="disagreeing rows shown (default 20)")
    p.add_argument(
        "--tolerance", type=float, help="regression: largest difference that still agrees"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_challenger)

    labels = sub.add_parser("labels", help="ground truth: true labels keyed by prediction key")
    l_sub = labels.add_subparsers(dest="labels_command", required=True)
    p = l_sub.add_parser("add", parents=[common], help="add a label file or SQL source")
    p.add_argument("name", help="the deployment")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="a CSV/Parquet file or glob in the workspace")
    source.add_argument("--sql", help="a DuckDB SELECT over workspace files")
    keyed = p.add_mutually_exclusive_group(required=True)
    keyed.add_argument("--key", help="the column holding the prediction key (runs)")
    keyed.add_argument(
        "--request-id", help="the column holding the API/form request id (the prediction log)"
    )
    p.add_argument(
        "--row", help="with --request-id: the column of each label's 0-based row in its request"
    )
    p.add_argument("--label", required=True, help="the column holding the true outcome")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_labels_add)
    p = l_sub.add_parser("list", parents=[common], help="a deployment's label sets")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_labels_list)

    p = sub.add_parser(
        "live", parents=[common], help="live metrics of main and challenger on the labelled rows"
    )
    p.add_argument("name", help="the deployment")
    _window(p, "the last N runs (default: every run)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_live)

    p = sub.add_parser(
        "swap", parents=[common], help="make the challenger the main model (a new version)"
    )
    p.add_argument("name", help="the deployment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_swap)


def _window(p: argparse.ArgumentParser, last: str) -> None:
    window = p.add_mutually_exclusive_group()
    window.add_argument("--run", help="one run")
    window.add_argument("--last", type=int, help=last)


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def cmd_challenger(args: argparse.Namespace) -> int:
    from core import challenger

    store = open_store()
    require_read_deployment(store, args.name)
    found = challenger.compare(
        store,
        args.name,
        run_id=args.run,
        last=args.last,
        top=args.top,
        tolerance=args.tolerance,
    )
    if args.json:
        print_json(found.to_dict())
        return 0
    rule = f" (within {found.tolerance:g})" if found.tolerance is not None else ""
    print(
        f"{found.deployment}: agreement {found.agreement_rate:.1%}{rule} over "
        f"{found.rows:,} rows in {len(found.runs)} run(s)"
    )
    for r in found.runs:
        extra = (
            f"  mean |diff| {_num(r.mean_abs_difference)}"
            if r.mean_abs_difference is not None
            else ""
        )
        print(f"  {r.run_id}  {r.rows:>9,} rows  agreement {r.agreement_rate:.1%}{extra}")
    print("predictions (main / challenger):")
    for bucket, a, b in zip(found.buckets, found.main, found.challenger, strict=True):
        print(f"  {bucket:<24} {a:>9,} {b:>9,}")
    if found.features:
        print("features differing most between agreeing and disagreeing rows:")
        for f in found.features[:10]:
            print(f"  {f.name:<28} psi {_num(f.psi):<8} js {_num(f.distance)}")
    if found.top:
        print("top disagreeing rows:")
        for row in found.top:
            print(
                f"  {row['run_id']} row {row['_row']}: main {row['prediction']} "
                f"({_num(row['confidence'], 3)}), challenger {row['challenger_prediction']} "
                f"({_num(row['challenger_confidence'], 3)})"
            )
    for note in found.notes:
        print(f"note: {note}")
    return 0


def cmd_labels_add(args: argparse.Namespace) -> int:
    from core import ground_truth

    source = {"kind": "sql", "sql": args.sql} if args.sql else {"kind": "file", "path": args.file}
    by_request = args.request_id is not None
    added = ground_truth.add_labels(
        open_store(),
        args.name,
        source,
        args.request_id if by_request else args.key,
        args.label,
        actor=actor(),
        keyed_by="request" if by_request else "key",
        row=args.row,
    )
    if args.json:
        print_json(asdict(added))
        return 0
    c = added.counts
    print(
        f"Added {added.rows:,} labels to {added.deployment_name} ({added.id}): "
        f"{c['matched_labels']:,} match a prediction, {c['unmatched_labels']:,} match none; "
        f"{c['predictions_without_label']:,} of {c['predictions']:,} predictions have no "
        f"label; {c['without_label']:,} rows without a label left out."
    )
    if c.get("unknown_requests"):
        shown = ", ".join(c["unknown_examples"])
        print(f"{c['unknown_requests']:,} labels name request ids never answered (e.g. {shown}).")
    if c.get("ambiguous_labels"):
        print(
            f"{c['ambiguous_labels']:,} labels have no row for a request of several rows: "
            "give --row."
        )
    return 0


def cmd_labels_list(args: argparse.Namespace) -> int:
    from core import ground_truth

    store = open_store()
    require_read_deployment(store, args.name)
    found = ground_truth.list_labels(store, args.name)
    if args.json:
        print_json([asdict(s) for s in found])
        return 0
    for s in found:
        print(
            f"{s.id}  {s.rows:>9,} labels  {s.counts.get('matched_labels', 0):>9,} matched  "
            f"key {s.key_column}  label {s.label_column}  by {s.created_by} "
            f"{s.created_at:%Y-%m-%d %H:%M}"
        )
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from core import ground_truth

    store = open_store()
    require_read_deployment(store, args.name)
    found = ground_truth.live_metrics(store, args.name, run_id=args.run, last=args.last)
    if args.json:
        print_json(found.to_dict())
        return 0
    m = found.matching
    print(
        f"{found.deployment}: {m.predictions_with_label:,} of {m.predictions:,} predictions "
        f"labelled; {m.unmatched_labels:,} of {m.labels:,} labels match no prediction"
    )
    if m.unknown_requests:
        print(
            f"{m.unknown_requests:,} labels name request ids never answered "
            f"(e.g. {', '.join(m.unknown_examples)})"
        )
    print(f"{found.metric} (challenger - main, 95% CI):")
    for r in (*found.runs, found.overall):
        main = _num((r.main or {}).get(found.metric))
        other = _num((r.challenger or {}).get(found.metric))
        diff = _num((r.difference or {}).get(found.metric))
        ci = f"[{r.ci[0]:.4g}, {r.ci[1]:.4g}]" if r.ci else ""
        print(
            f"  {r.run_id or 'window':<22} {r.rows:>9,} rows  main {main:<8} challenger "
            f"{other:<8} difference {diff:<8} {ci}"
        )
    print(f"method: {found.method}")
    for note in found.notes:
        print(f"note: {note}")
    return 0


def cmd_swap(args: argparse.Namespace) -> int:
    from core import challenger
    from core.cli.deployments import deployment_json

    d = challenger.swap(open_store(), args.name, actor=actor())
    if args.json:
        print_json(deployment_json(d))
        return 0
    assert d.current is not None
    print(
        f"{d.name} v{d.current.number}: main {d.current.main_model_id}, challenger "
        f"{d.current.challenger_model_id} (roll back to undo)"
    )
    return 0
