"""Ground truth: true labels keyed by the prediction key, and live metrics of main and challenger.

A label set is read from a pipeline source (a CSV/Parquet file or glob in the workspace, an
upload, or a DuckDB SQL query over files: core.pipeline's source handling), checked (key and
label columns present, no duplicate or empty keys, labels of the task's type and of classes
the models know) and stored as an immutable Parquet file `labels/<deployment_id>/<id>.parquet`
(`key` as text, `label` as text for classification or a number for regression), plus a row in
`ground_truth` written with its audit entry. A later set overrides an earlier one for shared
keys.

Live metrics join each run's results with the labels on the key (as text) in DuckDB and feed
the matched rows to core.run_metrics, as a labelled run would. The difference (challenger -
main) of the headline metric gets a paired bootstrap confidence interval over the matched rows:
for accuracy the rows fall in four outcomes (both right, only main, only challenger, neither),
so resampling rows is exactly a multinomial draw of those four counts; for MAE the per-row
difference of absolute errors is resampled (a systematic sample of BOOTSTRAP_ROWS rows when
there are more).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import access, audit, challenger, drift, pipeline, request_labels
from core.deployments import get_deployment
from core.engine.classes import canonical_sql, class_texts, label_texts, texts_of
from core.engine.metrics import LabelStats, Sample, Vocabulary
from core.engine.pipeline_sql import quote, reader_for
from core.engine.predict import Scored
from core.entities import Deployment, Model, Run
from core.errors import InvalidInput, Step
from core.registry import get_model
from core.runs import result_path
from core.scoring import proba_name
from core.store import Store, Tx, new_id, utcnow, with_files
from core.workspace import atomic_path

LABELS_DIR = "labels"
RESAMPLES = 1000
SEED = 0
BOOTSTRAP_ROWS = 50_000
SHOWN = 5  # examples named in an error message
MAX_CLASSES = 1000
HEADLINE = {"binary": "accuracy", "multiclass": "accuracy", "regression": "mae"}


@dataclass(frozen=True)
class LabelSet:
    """One stored set of true labels."""

    id: str
    deployment_id: str
    deployment_name: str
    path: str
    source: dict[str, Any]
    key_column: str
    label_column: str
    rows: int
    counts: dict[str, Any]
    created_by: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LabelSet:
        return cls(
            **{**row, "source": json.loads(row["source"]), "counts": json.loads(row["counts"])}
        )


@dataclass(frozen=True)
class Matching:
    """How labels and predictions meet in a window of runs."""

    labels: int  # distinct labelled keys (all sets)
    matched_labels: int  # of them, found among the window's predictions
    unmatched_labels: int
    predictions: int  # predicted rows in the window
    predictions_with_label: int
    predictions_without_label: int
    logged_predictions: int = 0  # of `predictions`, rows answered by the API or the form
    unknown_requests: int = 0  # request-keyed labels whose request id was never answered
    unknown_examples: tuple[str, ...] = ()
    ambiguous_labels: int = 0  # without a row number, for a request of several rows


@dataclass(frozen=True)
class LiveRun:
    """Metrics of main and challenger on one run's labelled rows (or a whole window's)."""

    run_id: str  # "" for the whole window
    at: datetime | None
    rows: int  # matched rows
    main: dict[str, Any] | None
    challenger: dict[str, Any] | None
    difference: dict[str, float] | None  # challenger - main, per metric
    ci: tuple[float, float] | None  # of the headline metric's difference


@dataclass(frozen=True)
class LiveMetrics:
    """Live metrics over a window of runs, newest first, and the whole window."""

    deployment: str
    task: str
    metric: str  # the headline metric with a confidence interval
    method: str
    matching: Matching
    runs: tuple[LiveRun, ...]
    overall: LiveRun
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- adding labels
def labels_dir(store: Store, deployment_id: str) -> Path:
    return store.workspace.home / LABELS_DIR / deployment_id


def add_labels(
    store: Store,
    name: str,
    source: dict[str, Any],
    key: str,
    label: str,
    *,
    actor: str,
    keyed_by: str = "key",
    row: str | None = None,
) -> LabelSet:
    """Read, check and store a label set for a deployment; audited (`labels`).

    `source` is a pipeline source block ({"kind": "file"|"upload", "path"} or {"kind":
    "sql", "sql"}). With `keyed_by="key"` the `key` column holds prediction keys (matched
    with runs' results); with `keyed_by="request"` it holds API/form request ids (matched with
    the prediction log) and `row` optionally names the column of each label's 0-based row in
    its request (core.request_labels). Raises InvalidInput naming the problem: a missing
    column, no rows, empty or duplicate keys (with counts and examples), bad row numbers, text
    labels for a regression, classes the models never saw, or keys that match no prediction
    (naming unknown request ids); PipelineError for a bad source. Rows without a label are
    left out and counted. Nothing is stored when a check fails.
    """
    if keyed_by not in ("key", "request"):
        raise InvalidInput(
            f"Labels are keyed by 'key' or 'request', not '{keyed_by}'.",
            "Key them by the prediction key or by the API request id.",
        )
    if row is not None and keyed_by != "request":
        raise InvalidInput(
            "A row column goes with labels keyed by request id.",
            "Key the labels by request id, or leave the row column out.",
        )
    deployment = get_deployment(store, name)
    store.read(lambda tx: access.require(tx, actor, deployment.project_id, "add-labels"))
    if deployment.current is None:
        raise InvalidInput(
            f"Deployment '{deployment.name}' has no model yet.",
            "Deploy a model and run it before adding labels.",
        )
    model = get_model(store, deployment.current.main_model_id)
    labels_id = new_id("gt")
    target = labels_dir(store, deployment.id) / f"{labels_id}.parquet"
    with _scratch(target) as raw, atomic_path(target) as tmp:
        _copy_columns(store, source, [key, label] + ([row] if row else []), raw)
        dropped = _check(raw, key, label, model, _classes(store, deployment))
        _normalise(raw, tmp, model, by_request=keyed_by == "request")
        if keyed_by == "request":
            counts = request_labels.match(store.workspace, deployment.id, [str(tmp)])
            counts |= {"without_label": dropped, "keyed_by": "request"}
            _require_request_match(deployment, key, counts)
        else:
            counts = {**_match(store, deployment, [str(tmp)]), "without_label": dropped}
        if counts["matched_labels"] == 0:
            raise InvalidInput(
                f"None of the {counts['labels']:,} label keys in '{key}' matches a prediction "
                f"of deployment '{deployment.name}' ({counts['predictions']:,} predicted rows, "
                f"key column '{counts['key_column']}').",
                "Check that the key column holds the same ids as the predictions' key, and "
                "that the deployment has run on those rows.",
            )
    relative = str(target.relative_to(store.workspace.home))
    stored = {
        "id": labels_id,
        "deployment_id": deployment.id,
        "deployment_name": deployment.name,
        "path": relative,
        "source": source,
        "key_column": key,
        "label_column": label,
        "rows": counts["labels"],
        "counts": counts,
        "created_by": actor,
        "created_at": utcnow(),
    }

    def write(tx: Tx) -> None:
        access.require(tx, actor, deployment.project_id, "add-labels")
        tx.execute(
            "INSERT INTO ground_truth VALUES ($id, $deployment_id, $deployment_name,"
            " $path, $source, $key_column, $label_column, $rows, $counts, $created_by,"
            " $created_at)",
            stored,
        )
        audit.record(
            tx,
            actor=actor,
            action="labels",
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            before=None,
            after={
                "labels": labels_id,
                "rows": counts["labels"],
                "matched": counts["matched_labels"],
            },
        )

    try:
        store.write(write)
    except BaseException:
        target.unlink(missing_ok=True)  # never referenced: nothing to keep
        raise
    return LabelSet.from_row({**stored, "source": _json(source), "counts": _json(counts)})


def _require_request_match(deployment: Deployment, key: str, counts: dict[str, Any]) -> None:
    if counts["matched_labels"]:
        return
    shown = ", ".join(f"'{r}'" for r in counts["unknown_examples"])
    raise InvalidInput(
        f"None of the {counts['labels']:,} labels in '{key}' matches an answered request of "
        f"deployment '{deployment.name}' ({counts['predictions']:,} logged rows): "
        f"{counts['unknown_requests']:,} request ids are unknown"
        + (f", e.g. {shown}" if shown else "")
        + f"; {counts['ambiguous_labels']:,} labels without a row belong to requests of "
        "several rows.",
        "Use the request_id the API answered with (or the id you sent), and give the row "
        "number (0-based) for requests of several rows.",
    )


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


@contextlib.contextmanager
def _scratch(beside: Path) -> Any:
    """A temporary file next to `beside`, removed at the end whatever happens."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".raw-", suffix=".parquet", dir=beside.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _copy_columns(store: Store, source: dict[str, Any], columns: list[str], target: Path) -> None:
    """Stream the source's key, label (and row) columns into `target` (as `key`, `label`,
    `row`)."""
    names = ["key", "label", "row"][: len(columns)]
    writer: pq.ParquetWriter | None = None
    try:
        with pipeline.open_input(store.workspace, {"source": _as_text(source)}) as reader:
            missing = [c for c in columns if c not in reader.schema.names]
            if missing:
                raise InvalidInput(
                    f"The label source has no column {', '.join(repr(c) for c in missing)}.",
                    f"Its columns: {', '.join(reader.schema.names)}.",
                )
            if len(set(columns)) < len(columns):
                raise InvalidInput(
                    "The key and the label are the same column."
                    if columns[0] == columns[1]
                    else "The row column must be neither the key nor the label.",
                    "Choose the column holding the ids as key and the one "
                    "holding the true outcome as label.",
                )
            for batch in reader:
                part = pa.RecordBatch.from_arrays([batch.column(c) for c in columns], names=names)
                if writer is None:
                    writer = pq.ParquetWriter(target, part.schema)
                writer.write_batch(part)
            if writer is None:
                writer = pq.ParquetWriter(
                    target,
                    pa.schema(
                        [
                            (n, reader.schema.field(c).type)
                            for n, c in zip(names, columns, strict=True)
                        ]
                    ),
                )
    finally:
        if writer is not None:
            writer.close()


def _as_text(source: dict[str, Any]) -> dict[str, Any]:
    """A CSV/TSV file source read as text: DuckDB's sniffer would read a yes/no label column
    as booleans (and ids like 007 as numbers), losing the classes as written."""
    path = source.get("path")
    if source.get("kind") not in ("file", "upload") or not isinstance(path, str):
        return source
    function, options = reader_for(path.strip())
    if function != "read_csv":
        return source
    return {
        "kind": "sql",
        "sql": f"SELECT * FROM read_csv({quote(path.strip())}, all_varchar"
        f" = true, union_by_name = true{options})",
    }


def _classes(store: Store, deployment: Deployment) -> list[str]:
    """The classes the deployment's current models know, as text."""
    assert deployment.current is not None
    found: list[str] = []
    for model_id in (deployment.current.main_model_id, deployment.current.challenger_model_id):
        if model_id:
            classes = get_model(store, model_id).schema.classes
            found += [c for c in class_texts(classes) if c not in found]
    return found


def _check(raw: Path, key: str, label: str, model: Model, classes: list[str]) -> int:
    """Raise InvalidInput for a label file that cannot be stored; return rows without label."""
    path = str(raw)
    has_row = "row" in pq.read_schema(raw).names
    ident = "CAST(key AS VARCHAR)" + (
        " || coalesce(' row ' || CAST(row AS VARCHAR), '')" if has_row else ""
    )
    bad_row = (
        "count_if(row IS NOT NULL AND (TRY_CAST(row AS DOUBLE) IS NULL"
        " OR TRY_CAST(row AS DOUBLE) < 0"
        " OR TRY_CAST(row AS DOUBLE) <> floor(TRY_CAST(row AS DOUBLE))))"
        if has_row
        else "0"
    )

    def read(tx: Tx) -> dict[str, Any]:
        src = "read_parquet(?)"
        stats = tx.execute(
            f"SELECT count(*) AS rows, count_if(key IS NULL) AS no_key,"
            f" count_if(label IS NULL) AS no_label, {bad_row} AS bad_row FROM {src}",
            [path],
        ).first()
        dupes = tx.execute(
            f"SELECT {ident} AS k, count(*) AS n FROM {src}"
            " WHERE key IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
            " ORDER BY n DESC, k",
            [path],
        ).rows
        values: list[tuple[Any, ...]] = []
        if model.task == "regression":
            values = tx.execute(
                f"SELECT CAST(label AS VARCHAR), count(*) FROM {src}"
                " WHERE label IS NOT NULL AND TRY_CAST(label AS DOUBLE) IS NULL"
                " GROUP BY 1 ORDER BY 2 DESC, 1",
                [path],
            ).rows
        else:
            values = tx.execute(
                f"SELECT label, count(*) FROM {src} WHERE label IS NOT NULL"
                f" GROUP BY 1 ORDER BY 2 DESC LIMIT {MAX_CLASSES + 1}",
                [path],
            ).rows
        return {**(stats or {}), "dupes": dupes, "values": values}

    found = with_files(read)
    if not found["rows"]:
        raise InvalidInput("The label source has no rows.", "Give a file or query with labels.")
    if found["no_key"]:
        raise InvalidInput(
            f"{found['no_key']:,} of {found['rows']:,} labels have no key in '{key}'.",
            "Every label needs the prediction key it belongs to.",
        )
    if found["bad_row"]:
        raise InvalidInput(
            f"{found['bad_row']:,} of {found['rows']:,} row numbers are not whole numbers from 0.",
            "Give each label's 0-based row in its request (empty for a one-row request).",
        )
    if found["dupes"]:
        dupes = found["dupes"]
        shown = ", ".join(f"'{k}' ({n}x)" for k, n in dupes[:SHOWN])
        raise InvalidInput(
            f"{len(dupes):,} keys appear more than once in '{key}': {shown}"
            f"{', ...' if len(dupes) > SHOWN else ''}.",
            "Keep one label per key (the latest outcome), then add the file again.",
        )
    if found["no_label"] == found["rows"]:
        raise InvalidInput(
            f"Every row's label in '{label}' is empty.",
            "Choose the column holding the true outcomes.",
        )
    if model.task == "regression":
        if found["values"]:
            bad = found["values"]
            shown = ", ".join(f"'{v}'" for v, _ in bad[:SHOWN])
            rows = sum(n for _, n in bad)
            raise InvalidInput(
                f"The labels in '{label}' must be numbers for a regression: "
                f"{rows:,} rows hold text such as {shown}.",
                "Choose the column holding the measured value, or fix those rows.",
            )
        return int(found["no_label"])
    texts = texts_of([v for v, _ in found["values"]], model.schema.classes)
    counts = dict(zip(texts, (n for _, n in found["values"]), strict=True))
    unknown = {c: n for c, n in counts.items() if c not in classes}
    if unknown:
        shown = ", ".join(
            f"'{c}' ({n:,} row{'s' if n != 1 else ''})" for c, n in list(unknown.items())[:SHOWN]
        )
        read_as = ""
        if pa.types.is_boolean(pq.read_schema(raw).field("label").type):
            read_as = (
                " The label column was read as true/false (DuckDB's CSV reader does "
                "that to yes/no columns): read it as text, e.g. read_csv('FILE', "
                "all_varchar = true)."
            )
        raise InvalidInput(
            f"The labels in '{label}' hold classes the models never saw: "
            f"{shown}{', ...' if len(unknown) > SHOWN else ''}.",
            f"The models know: {', '.join(classes)}. Map the labels to these "
            f"classes (or choose the right column).{read_as}",
        )
    return int(found["no_label"])


def _normalise(raw: Path, target: Path, model: Model, *, by_request: bool = False) -> None:
    """key as text; label as a number (regression) or as the canonical text of its class
    (core.classes); rows without a label left out. Request-keyed: `request_id` (text), `row`
    (BIGINT, NULL when not given) and `label`."""
    if model.task == "regression":
        label = "CAST(label AS DOUBLE)"
    else:
        rows = with_files(
            lambda tx: tx.execute(
                "SELECT DISTINCT CAST(label AS VARCHAR) AS raw, label AS v FROM read_parquet(?)"
                f" WHERE label IS NOT NULL LIMIT {MAX_CLASSES + 1}",
                [str(raw)],
            ).dicts()
        )
        label = canonical_sql(
            "CAST(label AS VARCHAR)", [(r["raw"], r["v"]) for r in rows], model.schema.classes
        )
    keys = "CAST(key AS VARCHAR) AS key"
    if by_request:
        row = "row" if "row" in pq.read_schema(raw).names else "NULL"
        keys = (
            f"CAST(key AS VARCHAR) AS request_id, CAST(TRY_CAST({row} AS DOUBLE) AS BIGINT) AS row"
        )
    sql = (
        f"COPY (SELECT {keys}, {label} AS label FROM read_parquet(?)"
        " WHERE label IS NOT NULL) TO ? (FORMAT parquet)"
    )
    with_files(lambda tx: tx.execute(sql, [str(raw), str(target)]))


# ---------------------------------------------------------------------------- reading
def list_labels(store: Store, name: str) -> list[LabelSet]:
    """A deployment's label sets, newest first."""
    deployment = get_deployment(store, name)
    rows = store.query(
        "SELECT * FROM ground_truth WHERE deployment_id = ? ORDER BY created_at DESC, id DESC",
        [deployment.id],
    )
    return [LabelSet.from_row(r) for r in rows]


def _label_files(store: Store, deployment: Deployment) -> list[str]:
    """The deployment's label files, oldest first (a later file wins for a shared key)."""
    found = [store.workspace.home / s.path for s in reversed(list_labels(store, deployment.id))]
    files = [str(p) for p in found if p.exists()]
    if not files:
        raise InvalidInput(
            f"Deployment '{deployment.name}' has no ground truth yet.",
            "Add true labels: a file with the prediction key and the true label of each row.",
            step=Step("add-labels", deployment.name),
        )
    return files


def labels_sql(files: list[str]) -> str:
    """The labels of `files` (oldest first), one per key: the latest file's wins."""
    listed = challenger.file_list(files)
    return (
        f"(SELECT key, arg_max(label, list_position({listed}, filename)) AS label"
        f" FROM read_parquet({listed}, filename = true, union_by_name = true) GROUP BY key)"
    )


def _key_column(runs: list[Run]) -> str:
    key: str | None = next(
        (k for r in runs if (k := (r.summary.get("columns") or {}).get("key"))), None
    )
    if not key:
        raise InvalidInput(
            "The deployment's predictions carry no key column, so labels "
            "cannot be matched to them.",
            "Train the experiment with a key column (an id per row), deploy "
            "that model and run it again.",
        )
    return key


def _usable_runs(store: Store, deployment: Deployment) -> list[Run]:
    try:
        return drift.window_runs(store, deployment.name, last=drift.MAX_WINDOW)
    except InvalidInput as exc:
        raise InvalidInput(
            f"No predictions to match labels with: {exc.message}", exc.hint, step=exc.step
        ) from exc


def _match(
    store: Store, deployment: Deployment, files: list[str], runs: list[Run] | None = None
) -> dict[str, Any]:
    """Matching counts of label `files` against the main results of `runs` (default: every
    usable run of the deployment)."""
    runs = runs if runs is not None else _usable_runs(store, deployment)
    key = _key_column(runs)
    mains = [str(result_path(store.workspace, r.id)) for r in runs]
    typed = _key_type(mains[0], key)
    sql = (
        f"WITH labels AS (SELECT {_label_key(typed)} AS key, label FROM"
        f" {labels_sql(files)}), preds AS (SELECT {_result_key(typed, _q(key))}"
        f" AS key FROM read_parquet({challenger.file_list(mains)}, union_by_name = true)),"
        " keys AS (SELECT DISTINCT key FROM"
        " preds) SELECT (SELECT count(*) FROM labels) AS labels,"
        " (SELECT count(*) FROM labels l SEMI JOIN keys k ON k.key = l.key) AS matched,"
        " (SELECT count(*) FROM preds) AS predictions,"
        " (SELECT count(*) FROM preds p SEMI JOIN labels l ON l.key = p.key) AS labelled"
    )
    row = with_files(lambda tx: tx.execute(sql).first()) or {}
    return {**request_labels.counts(row), "key_column": key}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key_type(results: str, key: str) -> str:
    """How keys are compared: as the results' key column is typed (integer, number, text)."""
    field = pq.read_schema(results).field(key).type
    if pa.types.is_integer(field):
        return "BIGINT"
    return "DOUBLE" if pa.types.is_floating(field) or pa.types.is_decimal(field) else "VARCHAR"


def _label_key(typed: str) -> str:
    """A stored label key (text) as the results' key type: "007" meets integer key 7."""
    return "key" if typed == "VARCHAR" else f"TRY_CAST(key AS {typed})"


def _result_key(typed: str, column: str) -> str:
    return f"CAST({column} AS VARCHAR)" if typed == "VARCHAR" else f"CAST({column} AS {typed})"


def matching(store: Store, name: str, **window: Any) -> Matching:
    """How the deployment's labels meet the predictions of a window (default: every run)."""
    deployment = get_deployment(store, name)
    return _counts(store, deployment, _label_files(store, deployment), window)[0]


ZERO = {
    "labels": 0,
    "matched_labels": 0,
    "unmatched_labels": 0,
    "predictions": 0,
    "predictions_with_label": 0,
    "predictions_without_label": 0,
}


def _counts(
    store: Store, deployment: Deployment, files: list[str], window: dict[str, Any]
) -> tuple[Matching, list[Run], str | None]:
    """How key- and request-keyed labels meet the window's runs and logged requests; the runs
    measured and their key column (None when no run is measured). The log is read unless the
    window names runs (`run_id`, `last`); `start`/`end` bound both."""
    keyed = [f for f in files if not request_labels.is_request_file(f)]
    by_request = [f for f in files if f not in keyed]
    runs: list[Run] = []
    ran: dict[str, Any] = {**ZERO, "key_column": None}
    if keyed:
        try:
            runs = _window(store, deployment, window)
            ran = _match(store, deployment, keyed, runs)
        except InvalidInput:
            if not by_request:
                raise
            runs = []
    logged: dict[str, Any] = dict(ZERO)
    if by_request and window.get("run_id") is None and window.get("last") is None:
        logged = request_labels.match(
            store.workspace, deployment.id, by_request, window.get("start"), window.get("end")
        )
    matching = Matching(
        **{k: ran[k] + logged[k] for k in ZERO},
        logged_predictions=logged["predictions"],
        unknown_requests=logged.get("unknown_requests", 0),
        unknown_examples=tuple(logged.get("unknown_examples", ())),
        ambiguous_labels=logged.get("ambiguous_labels", 0),
    )
    return matching, runs if ran["key_column"] else [], ran["key_column"]


def _window(store: Store, deployment: Deployment, window: dict[str, Any]) -> list[Run]:
    if not any(v is not None for v in window.values()):
        return _usable_runs(store, deployment)
    try:
        return drift.window_runs(store, deployment.name, **window)
    except InvalidInput as exc:
        raise InvalidInput(f"No runs to measure: {exc.message}", exc.hint, step=exc.step) from exc


# ---------------------------------------------------------------------------- live metrics
def live_metrics(
    store: Store,
    name: str,
    *,
    run_id: str | None = None,
    last: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> LiveMetrics:
    """Metrics of main and challenger per run on the labelled rows, and per traffic source
    ("api", "form") on the logged answers that request-keyed labels meet; their difference
    (challenger - main) and a paired bootstrap CI of the headline metric's difference.

    The window defaults to every run and the whole log; `start`/`end` bound both, `run_id` and
    `last` name runs only (the log is left out). Raises InvalidInput without labels, for an
    empty window of runs (unless request-keyed labels exist) or a run with zero rows, and when
    no prediction of the window has a label (counting unknown request ids).
    """
    deployment = get_deployment(store, name)
    files = _label_files(store, deployment)
    window = {"run_id": run_id, "last": last, "start": start, "end": end}
    counts, runs, key = _counts(store, deployment, files, window)
    if counts.predictions_with_label == 0:
        raise InvalidInput(
            f"None of the {counts.predictions:,} predictions in the window has a label "
            f"({counts.labels:,} labels stored"
            + (
                f"; {counts.unknown_requests:,} of them name unknown request ids"
                if counts.unknown_requests
                else ""
            )
            + ").",
            "Add labels for these rows, or choose a window of runs the labels cover.",
        )
    current = _current_models(store, deployment)
    task = drift.run_model(store, runs[0]).task if runs else current["main"].task
    metric = HEADLINE[task]
    rng = np.random.default_rng(seed)
    models: dict[str, Model] = {}
    per_run, totals = [], _Totals(task, metric)
    keyed = [f for f in files if not request_labels.is_request_file(f)]
    for run in runs:
        assert key is not None
        per_run.append(_live_run(store, run, keyed, key, models, totals, rng, resamples))
    notes: list[str] = []
    if counts.logged_predictions:
        for source, table, models_of in _logged(store, deployment, files, current, window, notes):
            per_run.append(_measure(table, source, None, models_of, totals, rng, resamples))
    if not any(r.challenger for r in per_run):
        notes.append("no run in the window had a challenger: main metrics only")
    method = (
        f"paired bootstrap of the {metric} difference (challenger - main) over the "
        f"matched rows, {resamples:,} resamples, seed {seed}, 95% percentile interval"
        + (
            " (accuracy: multinomial draws of the four paired outcomes, exact for row resampling)"
            if metric == "accuracy"
            else f" (a systematic sample of {BOOTSTRAP_ROWS:,} rows when there are more)"
        )
    )
    measured = [r for r in per_run if r.rows]
    overall = (
        replace(measured[0], run_id="", at=None)
        if len(measured) == 1
        else totals.result(rng, resamples)
    )  # one run: its metrics are the window's
    return LiveMetrics(
        deployment.name,
        task,
        metric,
        method,
        counts,
        tuple(per_run),
        overall,
        tuple(notes),
    )


class _Totals:
    """The window's metrics: LabelStats summed over runs, plus the bootstrap's inputs."""

    def __init__(self, task: str, metric: str) -> None:
        self.task, self.metric = task, metric
        self.stats: dict[str, LabelStats] = {}
        self.outcomes = np.zeros(4, dtype=np.int64)
        self.sample = Sample(BOOTSTRAP_ROWS)
        self.paired_rows = 0

    def result(self, rng: np.random.Generator, resamples: int) -> LiveRun:
        main = self.stats["main"].result() if "main" in self.stats else None
        other = self.stats["challenger"].result() if "challenger" in self.stats else None
        values = self.sample.get("d")
        ci = _ci(self.metric, self.outcomes, values, rng, resamples) if self.paired_rows else None
        return LiveRun(
            "", None, main["rows"] if main else 0, main, other, _difference(main, other), ci
        )


def _live_run(
    store: Store,
    run: Run,
    files: list[str],
    key: str,
    models: dict[str, Model],
    totals: _Totals,
    rng: np.random.Generator,
    resamples: int,
) -> LiveRun:
    """One run's matched rows through core.run_metrics for main and challenger."""
    roles = {"main": (run.summary.get("main") or {}).get("model_id")}
    if challenger.has_challenger(store, run):
        roles["challenger"] = (run.summary.get("challenger") or {}).get("model_id")
    for model_id in roles.values():
        if model_id and model_id not in models:
            models[model_id] = get_model(store, model_id)
    by_role = {r: models[m] for r, m in roles.items() if m}
    table = _matched(store, run, files, key, by_role)
    return _measure(table, run.id, run.finished_at, by_role, totals, rng, resamples)


def _logged(
    store: Store,
    deployment: Deployment,
    files: list[str],
    current: dict[str, Model],
    window: dict[str, Any],
    notes: list[str],
) -> list[tuple[str, pa.Table, dict[str, Model]]]:
    """The labelled logged rows per source (api, form) and the models to measure them with:
    the current version's, the challenger only where it answered every matched row of a
    source (else a note is added)."""
    by_request = [f for f in files if request_labels.is_request_file(f)]
    table = request_labels.matched(
        store.workspace, deployment.id, by_request, current, window["start"], window["end"]
    )
    found = []
    for source in request_labels.sources(table):
        part = table.filter(pc.equal(table.column("source"), source))
        if "challenger__prediction" in part.column_names:
            skipped = part.column("challenger__prediction").null_count
            if skipped:
                part = part.drop_columns(["challenger__prediction"])
                notes.append(
                    f"{source}: the challenger has no answer for {skipped:,} labelled rows "
                    "(skipped or failed): main metrics only"
                )
        roles = [r for r in current if f"{r}__prediction" in part.column_names]
        found.append((source, part, {r: current[r] for r in roles}))
    return found


def _current_models(store: Store, deployment: Deployment) -> dict[str, Model]:
    """The current version's main (and challenger) model."""
    assert deployment.current is not None  # labels were added, so a model was deployed
    found = {"main": get_model(store, deployment.current.main_model_id)}
    if deployment.current.challenger_model_id:
        found["challenger"] = get_model(store, deployment.current.challenger_model_id)
    return found


def _measure(
    table: pa.Table,
    run_id: str,
    at: datetime | None,
    by_role: dict[str, Model],
    totals: _Totals,
    rng: np.random.Generator,
    resamples: int,
) -> LiveRun:
    """Main and challenger metrics of one matched table (a run's, or a traffic source's)."""
    if table.num_rows == 0:
        return LiveRun(run_id, at, 0, None, None, None, None)
    main_model = by_role["main"]
    task = main_model.task
    vocabulary = Vocabulary(main_model.schema.classes)
    labels = table.column("label").to_numpy(zero_copy_only=False)
    y = (
        labels.astype(np.float64)
        if task == "regression"
        else vocabulary.codes(label_texts(labels, main_model.schema.classes))
    )
    results, outcome = {}, {}
    for role, model in by_role.items():
        scored = _scored(table, role, model)
        stats = LabelStats(task, vocabulary.n_classes)
        whole = totals.stats.setdefault(role, LabelStats(task, vocabulary.n_classes))
        if task == "regression":
            for target in (stats, whole):
                target.add_values(y, scored.prediction)
            outcome[role] = np.abs(y - scored.prediction.astype(np.float64))
        else:
            codes = vocabulary.predictions(scored)
            proba = vocabulary.proba(scored)
            for target in (stats, whole):
                target.add_codes(y, codes, proba)
            outcome[role] = codes == y
        results[role] = stats.result()
    ci = None
    if "challenger" in outcome:
        outcomes, values = _paired(task, outcome["main"], outcome["challenger"])
        totals.outcomes += outcomes
        totals.paired_rows += len(y)
        if values is not None:
            totals.sample.add(d=values)
        ci = _ci(totals.metric, outcomes, values, rng, resamples)
    main, other = results.get("main"), results.get("challenger")
    return LiveRun(run_id, at, table.num_rows, main, other, _difference(main, other), ci)


def _matched(
    store: Store, run: Run, files: list[str], key: str, models: dict[str, Model]
) -> pa.Table:
    """label, and per role its prediction and class probabilities, of a run's labelled rows."""
    main = str(result_path(store.workspace, run.id, "main"))
    columns = set(pq.read_schema(main).names)
    if key not in columns:
        return pa.table({"label": pa.array([], pa.string())})
    picked = ["l.label", "m.prediction AS main__prediction"]
    join = ""
    for role, model in models.items():
        alias = "m" if role == "main" else "c"
        if role == "challenger":
            picked.append("m.challenger_prediction AS challenger__prediction")
            join = " LEFT JOIN read_parquet(?) c ON c._row = m._row"
            columns_of = set(
                pq.read_schema(result_path(store.workspace, run.id, "challenger")).names
            )
        else:
            columns_of = columns
        for cls in model.schema.classes:
            name = proba_name(cls)
            if name in columns_of:
                picked.append(f"{alias}.{_q(name)} AS {_q(f'{role}__{name}')}")
    params: list[Any] = [main]
    if join:
        params.append(str(result_path(store.workspace, run.id, "challenger")))
    typed = _key_type(main, key)
    sql = (
        f"WITH labels AS (SELECT {_label_key(typed)} AS key, label FROM {labels_sql(files)})"
        f" SELECT {', '.join(picked)} FROM read_parquet(?) m{join} JOIN labels l"
        f" ON l.key = {_result_key(typed, 'm.' + _q(key))} ORDER BY m._row"
    )
    return with_files(lambda tx: tx.arrow(sql, params))


def _scored(table: pa.Table, role: str, model: Model) -> Scored:
    """One role's columns of the matched rows as core.scoring would have held them."""
    prediction = table.column(f"{role}__prediction").to_numpy(zero_copy_only=False)
    nan = np.full(len(prediction), np.nan)
    names = [f"{role}__{proba_name(c)}" for c in model.schema.classes]
    if model.task == "regression" or not names or not all(n in table.column_names for n in names):
        return Scored(prediction, nan)
    proba = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names])
    return Scored(prediction, nan, proba.astype(np.float64), tuple(model.schema.classes))


def _paired(task: str, main: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The four paired outcome counts (classification) or per-row differences of absolute
    errors, challenger - main (regression)."""
    if task == "regression":
        return np.zeros(4, dtype=np.int64), other - main
    both, main_only = int((main & other).sum()), int((main & ~other).sum())
    other_only, neither = int((~main & other).sum()), int((~main & ~other).sum())
    return np.asarray([both, main_only, other_only, neither], dtype=np.int64), None


def _ci(
    metric: str,
    outcomes: np.ndarray,
    values: np.ndarray | None,
    rng: np.random.Generator,
    resamples: int,
) -> tuple[float, float] | None:
    """95% percentile interval of the paired bootstrap of challenger - main."""
    if metric == "accuracy":
        n = int(outcomes.sum())
        if not n:
            return None
        draws = rng.multinomial(n, outcomes / n, size=resamples)
        diffs = (draws[:, 2] - draws[:, 1]) / n
    else:
        if values is None or not len(values):
            return None
        diffs = np.empty(resamples)
        chunk = max(1, 2_000_000 // len(values))
        for start in range(0, resamples, chunk):
            size = min(chunk, resamples - start)
            picks = rng.integers(0, len(values), size=(size, len(values)))
            diffs[start : start + size] = values[picks].mean(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return round(float(low), 6), round(float(high), 6)


def _difference(
    main: dict[str, Any] | None, other: dict[str, Any] | None
) -> dict[str, float] | None:
    if not main or not other:
        return None
    return {
        k: round(other[k] - v, 6)
        for k, v in main.items()
        if k != "rows" and isinstance(v, int | float) and isinstance(other.get(k), int | float)
    }
