"""Validation: a deployment version scored on labelled data, and the report built from it.

A validation is a run of trigger "validation" whose source is the labelled file and whose label
column is the one given, so scoring, labelled metrics and the results Parquet are the runs'
own (core.runs, core.scoring, core.run_metrics). `start_validation` checks the data (path in
the workspace, rows, label column present and of the model's kind, input schema) and queues
the run and the `validations` row in one transaction. When the run ends, `after_run` (the
worker's step, or the CLI's in its own process) builds the report:

- metrics of main and challenger (the run's), per-class precision/recall/F1 and the confusion
  matrix, or a residuals sample, from the results Parquet (DuckDB, `store.with_files`);
- production's current main model scored on the same rows (the validation run's pipeline),
  written to `runs/<id>/production/main.parquet`, with the same metrics;
- single-row latency p50/p99 of the main model over the first LATENCY_ROWS rows, and batch
  throughput from the run's own prepare + predict timings on the same data;
- error analysis: the slices (training profile bins and categories) with the highest error
  rate (classification) or mean absolute error (regression), at least MIN_SLICE_ROWS rows
  each, and the worst rows with their `_row` and key for their local explanation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import access, deployments, execution, pipeline, runs
from core.deployments import get_deployment
from core.engine.classes import canonical_sql, class_texts, label_texts, texts_of
from core.engine.pipeline_sql import source_files
from core.engine.predict import score
from core.engine.profiles import plain_number
from core.entities import Deployment, Model, Progress, Run, no_progress
from core.errors import DatasetError, InvalidInput, ModelDeckError, NotFound, Step
from core.registry import get_model, load_estimator, sha256_file
from core.scoring import Loaded, RunScorer, feature_column
from core.store import Store, Tx, new_id, quote_identifier, utcnow, with_files

log = logging.getLogger("modeldeck.validation")

LATENCY_ROWS = 200
CHECK_ROWS = 10_000  # rows read up front to check the label and the schema
MIN_SLICE_ROWS = 20
SHOWN_SLICES = 10
WORST_ROWS = 20
RESIDUAL_POINTS = 500


@dataclass(frozen=True)
class Validation:
    """One validation of a deployment version on a labelled dataset."""

    id: str
    deployment_id: str
    deployment_name: str
    version_id: str
    version_number: int
    main_model_id: str
    challenger_model_id: str | None
    run_id: str
    dataset_path: str
    dataset_sha256: str
    label_column: str
    status: str  # queued | succeeded | failed
    error: str | None
    report: dict[str, Any]
    created_by: str
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Validation:
        report = row["report"]
        return cls(
            **{**row, "report": json.loads(report) if isinstance(report, str) else report or {}}
        )


# ---------------------------------------------------------------------------- starting
def _label_problem(column: pa.ChunkedArray, model: Model) -> str | None:
    """Why these labels cannot be the model's target, or None."""
    present = column.filter(pc.is_valid(column))
    if not len(present):
        return "has no values"
    if model.task == "regression":
        try:
            pc.cast(present, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return f"holds {present.type} values such as '{present[0]}', not numbers"
        return None
    seen = set(label_texts(present.to_numpy(zero_copy_only=False), model.schema.classes).tolist())
    classes = set(class_texts(model.schema.classes))
    if not seen & classes:
        shown = ", ".join(sorted(seen)[:5])
        return f"holds none of the model's classes ({', '.join(sorted(classes))}); found {shown}"
    return None


def _source(path: str, label: str, model: Model) -> dict[str, str]:
    """The run's source: the file, read by core.tables' rules (a yes/no label stays text);
    labels of any type meet the model's classes through core.classes."""
    return {"kind": "file", "path": path}


def _check_data(
    store: Store, d: Deployment, spec: dict[str, Any], label: str, model: Model
) -> dict[str, Any]:
    """Read the first rows: raise for no rows, a missing or mistyped label, a schema problem.
    Returns the pipeline spec to run (see `_source`)."""
    with pipeline.open_input(store.workspace, spec, batch_rows=CHECK_ROWS) as reader:
        names = reader.schema.names
    if label not in names:
        raise DatasetError(
            f"The validation data has no label column '{label}'.",
            f"Its columns are: {', '.join(names)}. Name the column that holds the labels.",
            step=Step("choose-label"),
        )
    spec = {**spec, "source": _source(spec["source"]["path"], label, model)}
    with pipeline.open_input(store.workspace, spec, batch_rows=CHECK_ROWS) as reader:
        first = next(iter(reader), None)
    if first is None or not first.num_rows:
        raise DatasetError(
            "The validation data has no rows.",
            "Give a file with labelled rows (CSV, Parquet or JSON).",
        )
    problem = _label_problem(pa.chunked_array([first.column(label)]), model)
    if problem is not None:
        raise InvalidInput(
            f"The label column '{label}' {problem}: labels of the wrong type for a "
            f"{model.task} model of '{model.schema.target}'.",
            "Choose the column that holds the true target values.",
            step=Step("choose-label"),
        )
    pipeline.check_schema(first.schema, model.schema, sample=first).raise_for_problems()
    return spec


def dataset_sha256(store: Store, path: str) -> str:
    """SHA-256 of the file, or of the sorted files' names and hashes for a glob."""
    files = source_files(store.workspace, path)
    if len(files) == 1:
        return sha256_file(Path(files[0]))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file}\0{sha256_file(Path(file))}\n".encode())
    return digest.hexdigest()


def start_validation(
    store: Store,
    name: str,
    path: str,
    label: str | None = None,
    *,
    worker_id: str | None = None,
    actor: str,
) -> Validation:
    """Check the labelled data and queue its validation run with its row; one transaction.

    With `worker_id` the run is claimed for that worker in the same transaction (the CLI
    executes it itself, so no worker can take it). Raises NotFound (deployment), InvalidInput
    for a deployment without a version, a path outside the workspace, an unreadable or empty
    file, a missing or mistyped label column, or data that does not fit the model.
    """
    d = get_deployment(store, name)
    store.read(lambda tx: access.require(tx, actor, d.project_id, "validate"))
    if d.current is None:
        raise InvalidInput(
            f"Deployment '{d.name}' has no current version to validate.",
            "Deploy a model to it first.",
        )
    if not path or not path.strip():
        raise InvalidInput(
            "No validation data given.", "Give a labelled file.", step=Step("give-data")
        )
    model = get_model(store, d.current.main_model_id)
    label = (label or "").strip() or d.pipeline.get("label_column") or model.schema.target
    source = {"kind": "file", "path": path.strip()}
    spec = pipeline.validate_pipeline(
        {**d.pipeline, "source": source, "label_column": label}, store.workspace
    )
    spec = _check_data(store, d, spec, label, model)
    digest = dataset_sha256(store, source["path"])

    def write(tx: Tx) -> str:
        run_id = runs.insert_run(
            tx,
            d.id,
            "validation",
            spec["source"],
            actor,
            # never delivered: a validation's results stay in the run
            pipeline={**d.pipeline, "label_column": label, "sinks": []},
            action="validate",
        )
        run = runs.claim_run(tx, run_id, worker_id) if worker_id is not None else None
        version_id = run.version_id if run else runs.version_of(tx, run_id)
        version = deployments.load_versions(tx, [version_id])[version_id]
        validation_id = new_id("val")
        tx.execute(
            "INSERT INTO validations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued',"
            " NULL, '{}', ?, ?, NULL)",
            [
                validation_id,
                d.id,
                d.name,
                version.id,
                version.number,
                version.main_model_id,
                version.challenger_model_id,
                run_id,
                source["path"],
                digest,
                label,
                actor,
                utcnow(),
            ],
        )
        return validation_id

    validation_id = store.write(write)
    if worker_id is None:
        runs.touch_queue_marker(store.workspace)
    return get_validation(store, validation_id)


def validate_here(
    store: Store,
    name: str,
    path: str,
    label: str | None = None,
    *,
    progress: Progress = no_progress,
    actor: str,
) -> Validation:
    """Validate in this process (the CLI): start, execute the run as its own worker, build the
    report; returns the finished validation (status failed with the reason on a run error)."""
    worker_id = f"validate:{os.getpid()}:{secrets.token_hex(3)}"
    v = start_validation(store, name, path, label, actor=actor, worker_id=worker_id)
    done = execution.execute_run(store, runs.get_run(store, v.run_id), worker_id, progress)
    progress(0.99, "building the report")
    after_run(store, done)
    return get_validation(store, v.id)


# ---------------------------------------------------------------------------- reading
def get_validation(store: Store, validation_id: str) -> Validation:
    """One validation by id; raises NotFound."""
    row = store.query("SELECT * FROM validations WHERE id = ?", [validation_id]).first()
    if row is None:
        raise NotFound(
            "validation",
            validation_id,
            "Choose one of the deployment's validations.",
            step=Step("list-validations"),
        )
    return Validation.from_row(row)


def list_validations(store: Store, name: str, limit: int = 50) -> list[Validation]:
    """A deployment's validations (by name or id), newest first; one read."""
    rows = store.query(
        "SELECT * FROM validations WHERE deployment_name = ? OR deployment_id = ?"
        " ORDER BY created_at DESC, id DESC LIMIT ?",
        [name, name, limit],
    )
    return [Validation.from_row(r) for r in rows]


def latest_for_version(store: Store, version_id: str) -> Validation | None:
    """The newest succeeded validation of a deployment version, else its newest, or None."""
    row = store.query(
        "SELECT * FROM validations WHERE version_id = ? ORDER BY"
        " status = 'succeeded' DESC, created_at DESC, id DESC LIMIT 1",
        [version_id],
    ).first()
    return Validation.from_row(row) if row else None


# ---------------------------------------------------------------------------- finishing
def after_run(store: Store, run: Run) -> None:
    """The worker's step after a run: build and store its validation report (validation runs
    only). Never raises: a failure is stored on the validation row."""
    if run.trigger != "validation":
        return
    row = store.query("SELECT id FROM validations WHERE run_id = ?", [run.id]).first()
    if row is None:
        return
    try:
        if run.status != "succeeded":
            raise InvalidInput(f"The validation run {run.status}: {run.error or 'no error'}", "")
        report = build_report(store, get_validation(store, row["id"]), run)
        status, error = "succeeded", None
    except Exception as exc:  # the outcome is stored, never raised into the worker loop
        if not isinstance(exc, ModelDeckError):
            log.exception("validation report of run %s failed", run.id)
        status, error, report = "failed", str(exc), {}
    store.execute(
        "UPDATE validations SET status = ?, error = ?, report = ?, finished_at = ? WHERE id = ?",
        [status, error, json.dumps(report, default=str), utcnow(), row["id"]],
    )


def build_report(store: Store, v: Validation, run: Run) -> dict[str, Any]:
    """The validation report of a succeeded validation run (see the module docstring)."""
    summary = run.summary
    main = get_model(store, v.main_model_id)
    spec = pipeline.validate_pipeline(execution.effective_pipeline(run), store.workspace)
    report: dict[str, Any] = {
        "task": main.task,
        "rows": summary["rows"],
        "label_column": v.label_column,
        "notes": list(summary["notes"]),
    }
    for role in ("main", "challenger"):
        scored = summary.get(role)
        if scored:
            path = runs.result_path(store.workspace, run.id, role)
            report[role] = {
                "model_id": scored["model_id"],
                "algorithm": scored["algorithm"],
                "metrics": scored["metrics"],
                **labelled(path, main, v.label_column),
            }
        else:
            report[role] = None
    report["production"] = _production(store, main, run, spec, v.label_column)
    report["latency"] = latency(store, main, spec)
    report["throughput"] = _throughput(summary)
    report["error_analysis"] = error_analysis(
        runs.result_path(store.workspace, run.id), main, v.label_column
    )
    return report


# ---------------------------------------------------------------------------- metrics
def _texts(values: list[Any], model: Model) -> list[str]:
    """Labels or predictions as the canonical text of the class they meet (core.classes)."""
    return texts_of(values, model.schema.classes)


def _canonical_sql(path: Path, column: str, model: Model) -> str:
    """SQL of `column` as the canonical text of the class each value meets."""
    y = quote_identifier(column)
    rows = with_files(
        lambda tx: tx.execute(
            f"SELECT DISTINCT CAST({y} AS VARCHAR) AS raw, {y} AS v FROM read_parquet(?)"
            f" WHERE {y} IS NOT NULL LIMIT 1001",
            [str(path)],
        ).dicts()
    )
    return canonical_sql(
        f"CAST({y} AS VARCHAR)", [(r["raw"], r["v"]) for r in rows], model.schema.classes
    )


def _label_sql(path: Path, model: Model, label: str) -> tuple[str, str]:
    """(results column of the label, SQL of each row's error: 0/1 misclassified, or |error|)."""
    schema = pq.read_schema(path)
    column = feature_column(model, label, schema.names)
    if column is None:
        raise InvalidInput(f"The results have no label column '{label}'.", "Validate again.")
    y = quote_identifier(column)
    if model.task == "regression":
        return column, f"abs(TRY_CAST({y} AS DOUBLE) - prediction)"
    # Labels and predictions compared as the classes they meet: 1, 1.0, "1" and "001" meet
    # class 1; yes/no meets a boolean class (core.classes).
    return column, (
        f"CASE WHEN {_canonical_sql(path, 'prediction', model)}"
        f" = {_canonical_sql(path, column, model)} THEN 0.0 ELSE 1.0 END"
    )


def labelled(path: Path, model: Model, label: str) -> dict[str, Any]:
    """Confusion matrix and per-class metrics (classification) or a residuals sample."""
    column, _ = _label_sql(path, model, label)
    y = quote_identifier(column)
    source = f"read_parquet(?, can_have_nan = true) WHERE {y} IS NOT NULL"
    if model.task == "regression":
        rows = with_files(
            lambda tx: tx.execute(
                f"SELECT prediction, TRY_CAST({y} AS DOUBLE) - prediction AS residual FROM {source}"
                f" USING SAMPLE reservoir({RESIDUAL_POINTS} ROWS) REPEATABLE (7)",
                [str(path)],
            ).dicts()
        )
        return {
            "residuals": {
                "prediction": [r["prediction"] for r in rows],
                "residual": [r["residual"] for r in rows],
            }
        }
    counts = with_files(
        lambda tx: tx.execute(
            f"SELECT {y} AS y, prediction AS p, count(*) AS n FROM {source} GROUP BY ALL",
            [str(path)],
        ).dicts()
    )
    ys, ps = _texts([r["y"] for r in counts], model), _texts([r["p"] for r in counts], model)
    canonical = [{**r, "y": y, "p": p} for r, y, p in zip(counts, ys, ps, strict=True)]
    return confusion_report(canonical, class_texts(model.schema.classes))


def confusion_report(counts: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """The confusion matrix (rows: true, columns: predicted) and per-class metrics, from
    (y, p, n) counts. Macro means are over the labels met, as scikit-learn takes them."""
    pairs: dict[tuple[str, str], int] = {}
    for row in counts:
        key = (str(row["y"]), str(row["p"]))
        pairs[key] = pairs.get(key, 0) + int(row["n"])
    met = {x for pair in pairs for x in pair}
    labels = [c for c in classes if c in met] + sorted(met - set(classes))
    matrix = [[pairs.get((t, p), 0) for p in labels] for t in labels]
    per_class = []
    for i, name in enumerate(labels):
        tp, support = matrix[i][i], sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (support + predicted) if support + predicted else 0.0
        per_class.append(
            {
                "class": name,
                "precision": round(precision, 6),
                "recall": round(recall, 6),
                "f1": round(f1, 6),
                "support": support,
            }
        )
    macro = {
        k: round(float(np.mean([c[k] for c in per_class])), 6) if per_class else None
        for k in ("precision", "recall", "f1")
    }
    return {
        "confusion": {"labels": labels, "matrix": matrix},
        "per_class": per_class,
        "macro": macro,
    }


def _throughput(summary: dict[str, Any]) -> dict[str, Any]:
    """Batch throughput of the main model in the run: rows over its prepare + predict time."""
    timings = summary.get("timings") or {}
    seconds = float(timings.get("prepare", 0.0)) + float(timings.get("predict_main", 0.0))
    rows = int(summary["rows"])
    return {
        "rows": rows,
        "seconds": round(seconds, 4),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }


@contextlib.contextmanager
def _first_rows(store: Store, spec: dict[str, Any], rows: int) -> Iterator[pa.RecordBatch]:
    with pipeline.open_input(store.workspace, spec, batch_rows=rows) as reader:
        yield next(iter(reader))


def latency(
    store: Store, model: Model, spec: dict[str, Any], rows: int = LATENCY_ROWS
) -> dict[str, Any]:
    """Single-row predict latency (model frame + predict, as a request does) of the loaded
    model over the data's first `rows` rows, after one warm-up call."""
    estimator = load_estimator(store, model)
    with _first_rows(store, spec, rows) as batch:
        one = [batch.slice(i, 1) for i in range(min(rows, batch.num_rows))]
    timings = []
    for i, row in enumerate([one[0], *one]):
        started = time.perf_counter()
        score(estimator, pipeline.to_model_frame(row, model.schema), model.task, "main")
        if i:
            timings.append((time.perf_counter() - started) * 1000)
    values = np.asarray(timings)
    return {
        "rows": len(values),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "mean_ms": round(float(values.mean()), 3),
        "max_ms": round(float(values.max()), 3),
    }


# ---------------------------------------------------------------------------- production
def _production_pins(store: Store, experiment_id: str) -> dict[str, Any] | None:
    return store.query(
        "SELECT d.name, v.number, v.main_model_id FROM deployments d JOIN deployment_versions v"
        " ON v.id = d.current_version_id WHERE d.experiment_id = ? AND d.environment ="
        " 'production' ORDER BY d.created_at LIMIT 1",
        [experiment_id],
    ).first()


def _production(
    store: Store, main: Model, run: Run, spec: dict[str, Any], label: str
) -> dict[str, Any] | None:
    """Production's current main model scored on the validation run's rows (None without a
    production deployment); a model that cannot read them gives its error instead."""
    pins = _production_pins(store, main.experiment_id)
    if pins is None:
        return None
    model = get_model(store, pins["main_model_id"])
    out: dict[str, Any] = {
        "deployment": pins["name"],
        "version": pins["number"],
        "model_id": model.id,
        "algorithm": model.algorithm,
    }
    folder = runs.run_folder(store.workspace, run.id).production()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        loaded = Loaded(model, load_estimator(store, model), "main")
        with pipeline.open_input(store.workspace, spec) as reader:
            scorer = None
            for batch in reader:
                if scorer is None:
                    scorer = RunScorer(
                        loaded, None, batch, label, folder, lambda _: contextlib.nullcontext()
                    )
                scorer.add(batch)
            if scorer is None:
                raise InvalidInput("The validation data gave no rows.", "")
            scorer.commit()
        path = folder / "main.parquet"
        out["metrics"] = scorer.summary(store.workspace.home)["main"]["metrics"]
        out.update(labelled(path, model, label))
    except ModelDeckError as exc:
        out["error"] = exc.message
    return out


# ---------------------------------------------------------------------------- error analysis
def _bucket_sql(column: str, edges: list[float], params: list[Any]) -> str:
    """A numeric value's training bin as text: the bin's index (np.histogram's convention),
    'below', 'above' or 'missing'."""
    x = f"TRY_CAST({quote_identifier(column)} AS DOUBLE)"
    inner = " + ".join(f"CAST({x} >= ? AS INTEGER)" for _ in edges[1:-1]) or "0"
    params += [edges[0], edges[-1], *edges[1:-1]]
    return (
        f"CASE WHEN {x} IS NULL OR isnan({x}) THEN 'missing' WHEN {x} < ? THEN 'below'"
        f" WHEN {x} > ? THEN 'above' ELSE CAST({inner} AS VARCHAR) END"
    )


def _slice_name(kind: str, found: dict[str, Any], value: str) -> str:
    if kind != "numeric" or value == "missing":
        return value
    edges = found["edges"]
    if value == "below":
        return f"< {plain_number(edges[0])}"
    if value == "above":
        return f"> {plain_number(edges[-1])}"
    i = int(value)
    close = "]" if i == len(edges) - 2 else ")"
    return f"[{plain_number(edges[i])}, {plain_number(edges[i + 1])}{close}"


def error_analysis(path: Path, model: Model, label: str) -> dict[str, Any]:
    """The slices with the highest error (at least MIN_SLICE_ROWS rows, or 1 % of the rows)
    and the worst rows; one scan for the slices, one for the rows."""
    column, error = _label_sql(path, model, label)
    names = pq.read_schema(path).names
    base = (
        f"SELECT *, {error} AS _err FROM read_parquet(?, can_have_nan = true)"
        f" WHERE {quote_identifier(column)} IS NOT NULL"
    )
    params: list[Any] = [str(path)]
    parts: list[str] = []
    planned: list[tuple[str, str, dict[str, Any]]] = []
    for feature in model.schema.features:
        found = (model.profile.get("features") or {}).get(feature.name)
        where = feature_column(model, feature.name, names)
        if (
            found is None
            or where is None
            or (found["kind"] == "numeric" and len(found.get("edges") or []) < 2)
        ):
            continue
        bucket = (
            _bucket_sql(where, found["edges"], params)
            if found["kind"] == "numeric"
            else f"coalesce(CAST({quote_identifier(where)} AS VARCHAR), 'missing')"
        )
        parts.append(
            f"SELECT {len(planned)} AS f, {bucket} AS s, count(*) AS n,"
            " avg(_err) AS e FROM t GROUP BY ALL"
        )
        planned.append((feature.name, found["kind"], found))
    overall_sql = "SELECT -1 AS f, '' AS s, count(*) AS n, avg(_err) AS e FROM t"
    sql = f"WITH t AS ({base}) " + " UNION ALL ".join([overall_sql, *parts])
    rows = with_files(lambda tx: tx.execute(sql, params).dicts())
    overall = next(r for r in rows if r["f"] == -1)
    total, mean = int(overall["n"]), float(overall["e"] or 0.0)
    min_rows = max(MIN_SLICE_ROWS, total // 100)
    slices = sorted(
        (r for r in rows if r["f"] >= 0 and r["n"] >= min_rows), key=lambda r: (-r["e"], -r["n"])
    )[:SHOWN_SLICES]
    key = model.schema.key_column if model.schema.key_column in names else None
    shown = ", ".join(
        quote_identifier(c)
        for c in ["_row", *([key] if key else []), column, "prediction", "confidence"]
    )
    worst = with_files(
        lambda tx: tx.execute(
            f"WITH t AS ({base}) SELECT {shown}, _err FROM t WHERE _err > 0"
            f" ORDER BY _err DESC, confidence DESC NULLS LAST, _row LIMIT {WORST_ROWS}",
            [str(path)],
        ).dicts()
    )
    return {
        "measure": "mean absolute error" if model.task == "regression" else "error rate",
        "overall": round(mean, 6),
        "rows": total,
        "min_slice_rows": min_rows,
        "key": key,
        "slices": [
            {
                "feature": planned[r["f"]][0],
                "slice": _slice_name(planned[r["f"]][1], planned[r["f"]][2], r["s"]),
                "rows": int(r["n"]),
                "error": round(float(r["e"]), 6),
                "lift": round(float(r["e"]) / mean, 3) if mean else None,
            }
            for r in slices
        ],
        "worst_rows": [
            {
                "row": r["_row"],
                "key": r.get(key) if key else None,
                "label": _texts([r[column]], model)[0] if model.task != "regression" else r[column],
                "prediction": r["prediction"],
                "confidence": r["confidence"],
                "error": round(float(r["_err"]), 6),
            }
            for r in worst
        ],
    }
