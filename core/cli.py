"""`modeldeck`: every UI action as a command, for scripting. Thin: parse, call core, print.

Errors a user can cause print `error: …` and `hint: …` to stderr and exit with status 2; a bug
prints one line naming the log file that holds its traceback and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core import datasets, demo, registry, training
from core.errors import ModelDeckError
from core.store import Store
from core.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home:
        os.environ["MODELDECK_HOME"] = str(Path(args.home).expanduser().resolve())
    try:
        return int(args.handler(args) or 0)
    except ModelDeckError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback for a report
        log = log_internal_error(argv if argv is not None else sys.argv[1:])
        where = f"; details in {log}" if log else ""
        print(
            f"error: internal error while running `modeldeck {_command(args)}`: "
            f"{type(exc).__name__}: {exc}{where}",
            file=sys.stderr,
        )
        print(
            "hint: this is a bug in ModelDeck, not in your input; please report it with that file.",
            file=sys.stderr,
        )
        return 1


ERROR_LOG = "logs/cli-errors.log"


def _command(args: argparse.Namespace) -> str:
    return " ".join(str(v) for v in (args.command, getattr(args, "action", None)) if v)


def log_internal_error(argv: Sequence[str]) -> Path | None:
    """Append the exception being handled, with the command line and the time, to the
    workspace's CLI error log; its path, or None when it cannot be written."""
    import traceback

    try:
        path = Workspace.resolve().home / ERROR_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} modeldeck "
                f"{' '.join(argv)}\n{traceback.format_exc()}\n"
            )
        return path
    except OSError:
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeck", description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="workspace folder (default: $MODELDECK_HOME or ./data)")
    # Also accepted after the command (`modeldeck demo --home DIR`); SUPPRESS keeps the value
    # given before the command when it is not repeated.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo", parents=[common], help="create the demo workspace (4 experiments, 12 models)"
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

    from core import (  # import helpers
        cli_challenger,
        cli_connections,
        cli_deployments,
        cli_drift,
        cli_explain,
        cli_reports,
        cli_schedule,
        cli_validate,
    )

    cli_deployments.add_parsers(sub, common)
    cli_schedule.add_parser(sub, common)
    cli_explain.add_parser(sub, common)
    cli_drift.add_parsers(sub, common)
    cli_validate.add_parsers(sub, common)
    cli_challenger.add_parsers(sub, common)
    cli_connections.add_parsers(sub, common)
    cli_reports.add_parsers(sub, common)
    for name, text in (
        ("ui", "start the Streamlit app"),
        ("api", "start the REST API server"),
        ("worker", "start the pipeline worker"),
        ("up", "start the app, the API and the worker together"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        if name in ("ui", "api"):
            p.add_argument("--port", type=int, default=8501 if name == "ui" else 8000)
        if name == "worker":
            p.add_argument(
                "--executors",
                type=int,
                default=None,
                metavar="N",
                help="executor processes that run pipelines (default: "
                "$MODELDECK_EXECUTORS, else one per core, at most 4; 0 runs them "
                "in the worker's own process)",
            )
        p.set_defaults(handler=globals()[f"cmd_{name}"])
    return parser


def open_store() -> Store:
    return Store.open()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def progress_printer(label: str = "") -> Callable[[float, str], None]:
    """A progress bar on stderr (redrawn in place on a terminal, a line per step otherwise)."""
    is_tty = sys.stderr.isatty()
    last = [""]

    def show(fraction: float, text: str) -> None:
        filled = int(fraction * 30)
        line = f"{label}[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} {text}"
        if is_tty:
            print(f"\r{line[:120]:<120}", end="" if fraction < 1 else "\n", file=sys.stderr)
        elif text != last[0]:
            print(line, file=sys.stderr)
        last[0] = text

    return show


# ---------------------------------------------------------------------------- handlers
def cmd_demo(args: argparse.Namespace) -> int:
    store = open_store()
    if args.if_empty and not demo.is_empty(store):
        print(f"Workspace {store.workspace.home} already has data; demo not created.")
        return 0
    started = time.perf_counter()
    results = demo.create_demo(store, progress_printer())
    n_models = sum(len(r.models) for r in results)
    print(
        f"Demo workspace ready in {store.workspace.home}: {len(results)} experiments, "
        f"{n_models} models ({time.perf_counter() - started:.1f} s)."
    )
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
    dataset = datasets.add_path(open_store(), args.path, name=args.name)
    if args.json:
        print_json(_dataset_json(dataset))
    else:
        print(
            f"{dataset.id}  {dataset.name}  {dataset.n_rows} rows, {len(dataset.columns)} columns"
        )
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    found = datasets.list_datasets(open_store())
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
    dataset = datasets.find_dataset(store, args.dataset)
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
    result = training.train(store, request, progress_printer())
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
    found = registry.list_models(open_store(), experiment_id=args.experiment)
    if args.json:
        print_json([m.summary() for m in found])
    else:
        _print_models(found)
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    model = registry.get_model(open_store(), args.model_id)
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
    dataset = datasets.find_dataset(store, args.dataset)
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
    )
    if args.json:
        print_json(model.summary())
    else:
        _print_models([model])
    return 0


# ---------------------------------------------------------------------------- processes
def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MODELDECK_HOME"] = str(Workspace.resolve().home)
    return env


def cmd_ui(args: argparse.Namespace) -> int:
    open_store()  # migrate before the app's threads race to do it
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO_ROOT / "app.py"),
        "--server.port",
        str(args.port),
    ]
    return subprocess.call(command, cwd=REPO_ROOT, env=_child_env())


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    open_store()
    uvicorn.run("core.api:app", host="127.0.0.1", port=args.port, log_level="info")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from core.executors import executor_count
    from core.worker import run_forever

    run_forever(open_store(), processes=executor_count(args.executors))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start the three processes as new processes (never forked: DESIGN.md, traps)."""
    open_store()
    # SIGTERM (systemd, `kill`, a CI timeout) must also stop the children: unwind via finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = [sys.executable, "-m", "core.cli"]
    children = [
        subprocess.Popen([*base, name], cwd=REPO_ROOT, env=_child_env())
        for name in ("worker", "api", "ui")
    ]
    print("ModelDeck is starting: app http://localhost:8501, API http://127.0.0.1:8000/docs")
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            child.wait(timeout=10)
    return max((child.returncode or 0) for child in children)


if __name__ == "__main__":
    sys.exit(main())
