"""`modeldeck demo`, `datasets`, `train` and `models`: the registry side of the CLI."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from core import datasets, demo, registry, training
from core.cli.output import (
    actor,
    announce_first_admin,
    open_store,
    print_json,
    progress_printer,
    require_read,
)
from core.errors import ModelDeckError


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="create the demo workspace (5 experiments, 15 models, 3 demo users)",
    )
    p.add_argument("--if-empty", action="store_true", help="do nothing if the workspace has data")
    p.set_defaults(handler=cmd_demo)

    ds = sub.add_parser("datasets", help="register and list datasets")
    ds_sub = ds.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = ds_sub.add_parser(
        "add", parents=[common], help="register a CSV/Parquet file or glob (snapshotted)"
    )
    p.add_argument("path")
    p.add_argument("--name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_datasets_add)
    p = ds_sub.add_parser("list", parents=[common], help="list datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_datasets_list)

    p = sub.add_parser(
        "train", parents=[common], help="train models on a dataset as a new experiment version"
    )
    p.add_argument("--dataset", required=True, help="dataset id or name, demo name, or file path")
    p.add_argument("--target", required=True)
    p.add_argument("--task", choices=["binary", "multiclass", "regression"])
    p.add_argument("--key", help="prediction key column ('' for none; default: detected id)")
    p.add_argument("--exclude", default="", help="comma-separated columns to leave out")
    p.add_argument(
        "--algorithms",
        default=",".join(training.DEFAULT_ALGORITHMS),
        help=f"comma-separated, from: {', '.join(training.ALGORITHMS)}",
    )
    p.add_argument("--project", default="Default")
    p.add_argument("--experiment", help="experiment name (default: the dataset's name)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_train)

    models = sub.add_parser("models", help="list, show and import models")
    m_sub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = m_sub.add_parser("list", parents=[common], help="list models, newest first")
    p.add_argument("--experiment", help="only this experiment id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_models_list)
    p = m_sub.add_parser(
        "show", parents=[common], help="show one model (metrics, params, schema, profile)"
    )
    p.add_argument("model_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_models_show)
    p = m_sub.add_parser(
        "import", parents=[common], help="import a trained .skops or joblib/pickle model"
    )
    p.add_argument("file")
    p.add_argument("--dataset", required=True, help="reference dataset (id, name or path)")
    p.add_argument("--target", required=True)
    p.add_argument("--task", choices=["binary", "multiclass", "regression"])
    p.add_argument("--key", help="prediction key column")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a joblib/pickle file (it can run code: only files you trust)",
    )
    p.add_argument(
        "--trust-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="approve a type a .skops file needs (repeatable)",
    )
    p.add_argument("--project", default="Default")
    p.add_argument("--experiment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_models_import)


def cmd_demo(args: argparse.Namespace) -> int:
    store = open_store()
    if args.if_empty and not demo.is_empty(store):
        print(f"Workspace {store.workspace.home} already has data; demo not created.")
        announce_first_admin(store)
        return 0
    started = time.perf_counter()
    results = demo.create_demo(store, progress_printer())
    n_models = sum(len(r.models) for r in results)
    print(
        f"Demo workspace ready in {store.workspace.home}: {len(results)} experiments, "
        f"{n_models} models ({time.perf_counter() - started:.1f} s)."
    )
    print(
        "Demo users (project Demo): "
        + ", ".join(f"{u} / {demo.demo_password(u)} ({role})" for u, _, role in demo.DEMO_USERS)
    )
    announce_first_admin(store)
    return 0


def _dataset_json(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "kind": d.kind,
        "source": d.source,
        "n_rows": d.n_rows,
        "columns": [c.name for c in d.columns],
        "created_at": d.created_at.isoformat() + "Z",
    }


def cmd_datasets_add(args: argparse.Namespace) -> int:
    dataset = datasets.add_path(open_store(), args.path, name=args.name, actor=actor())
    if args.json:
        print_json(_dataset_json(dataset))
    else:
        print(
            f"{dataset.id}  {dataset.name}  {dataset.n_rows} rows, {len(dataset.columns)} columns"
        )
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    found = datasets.list_datasets(open_store(), visible_to=actor())
    if args.json:
        print_json([_dataset_json(d) for d in found])
        return 0
    for d in found:
        print(f"{d.id}  {d.name:<24} {d.kind:<6} {d.n_rows:>8} rows  {d.source}")
    return 0


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def cmd_train(args: argparse.Namespace) -> int:
    store = open_store()
    dataset = datasets.find_dataset(store, args.dataset, project=args.project, actor=actor())
    request = training.TrainRequest(
        dataset_id=dataset.id,
        target=args.target,
        task=args.task,
        key_column=args.key,
        exclude=tuple(_split(args.exclude)),
        algorithms=tuple(_split(args.algorithms)),
        project=args.project,
        experiment=args.experiment
        or training.default_experiment_name(store, dataset, args.target, args.project),
    )
    result = training.train(store, request, progress_printer(), actor=actor())
    if args.json:
        print_json([m.summary() for m in result.models])
    else:
        _print_models(result.models)
    return 0


def _print_models(models: list[Any]) -> None:
    for m in models:
        shown = "  ".join(f"{k}={v}" for k, v in m.metrics.items() if not k.endswith("_rows"))
        print(f"{m.id}  {m.project}/{m.experiment} v{m.version}  {m.algorithm:<24} {shown}")


def cmd_models_list(args: argparse.Namespace) -> int:
    found = registry.list_models(open_store(), experiment_id=args.experiment, visible_to=actor())
    if args.json:
        print_json([m.summary() for m in found])
    else:
        _print_models(found)
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    store = open_store()
    model = registry.get_model(store, args.model_id)
    require_read(store, model.project)
    if args.json:
        print_json(model.details())
        return 0
    print(f"{model.id}: {model.algorithm} ({model.task}, {model.origin})")
    print(f"  {model.project} / {model.experiment} / version {model.version}")
    print(f"  metrics: {json.dumps(model.metrics)}")
    print(f"  features: {', '.join(model.schema.feature_names)}")
    print(f"  target: {model.schema.target}   key: {model.schema.key_column or '-'}")
    print(f"  artifact: {model.artifact_path} sha256={model.sha256}")
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    # Imported here: skops costs about 2 s to import, and only imports need it.
    from core.model_import import ImportRequest, import_model

    store = open_store()
    path = Path(args.file).expanduser()
    if not path.is_file():
        raise ModelDeckError(f"The file '{args.file}' does not exist.", "Check the path.")
    dataset = datasets.find_dataset(store, args.dataset, project=args.project, actor=actor())
    model = import_model(
        store,
        ImportRequest(
            filename=path.name,
            data=path.read_bytes(),
            dataset_id=dataset.id,
            target=args.target,
            task=args.task,
            key_column=args.key,
            trust_pickle=args.trust_pickle,
            trusted_types=tuple(args.trust_type),
            project=args.project,
            experiment=args.experiment,
        ),
        progress_printer(),
        actor=actor(),
    )
    if args.json:
        print_json(model.summary())
    else:
        _print_models([model])
    return 0
