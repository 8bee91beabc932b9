"""Drift: each run's bucket counts against the model's training profile, and window reports.

`compute_run_counts` runs one DuckDB aggregation over `runs/<id>/main.parquet` right after a
run (the worker's `after_run` step): per numeric feature the counts in the training quantile
bins plus below-range, above-range and missing buckets (and the sums a mean and a Wasserstein
distance need); per categorical feature the counts per training category plus `other` (known
in training but outside the profile's top categories), `unseen` and missing; the same for the
prediction. They are stored as `runs/<id>/drift_counts.json` (atomically). A report sums the
stored counts of the runs in a window, so its cost does not depend on the window's rows.

Scores per feature: PSI over the buckets (empty buckets get EPSILON), a distance that does not
grow with sample size (Wasserstein on the binned distributions over the training std for
numeric features, Jensen-Shannon for categorical ones) and, for information only, a KS (binned)
or chi-square p-value. The status comes from PSI and the deployment's thresholds.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core import deployments
from core.engine.drift_scores import (
    DEFAULT_DRIFTED,
    DEFAULT_MODERATE,
    PREDICTION,
    FeatureDrift,
    Thresholds,
    not_scored,
    score_feature,
)
from core.entities import Model, Run
from core.errors import Conflict, InvalidInput, NotFound
from core.registry import get_model
from core.runs import get_run, list_runs, result_path, run_folder
from core.scoring import feature_column
from core.store import Store, quote_identifier, utcnow, with_files
from core.workspace import atomic_write_bytes

log = logging.getLogger("modeldeck.drift")

MAX_WINDOW = 500  # runs read for a window


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DriftReport:
    """The drift of a deployment's served data in a window of runs, against training."""

    deployment: str
    model_id: str
    run_ids: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    rows: int
    thresholds: Thresholds
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None
    notes: tuple[str, ...] = ()

    @property
    def scored(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status != "n/a"]

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status == "drifted"]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted) / len(self.scored) if self.scored else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            n_features=len(self.scored),
            n_drifted=len(self.drifted),
            share_drifted=self.share_drifted,
        )
        return data


@dataclass(frozen=True)
class DriftPoint:
    """One run's score of one feature (the prediction is named `prediction`)."""

    run_id: str
    at: datetime
    feature: str
    psi: float | None
    distance: float | None
    status: str


@dataclass(frozen=True)
class DriftSeries:
    """Drift per run over the last runs, oldest first, and the share of drifted features."""

    deployment: str
    points: tuple[DriftPoint, ...]
    shares: tuple[tuple[str, datetime, float], ...]  # (run id, time, share drifted)


# ---------------------------------------------------------------------------- thresholds
def thresholds_of(report_settings: dict[str, Any]) -> Thresholds:
    """The thresholds kept in a deployment's `report` JSON (defaults when not set)."""
    drift = report_settings.get("drift") or {}
    return Thresholds(
        float(drift.get("moderate", DEFAULT_MODERATE)), float(drift.get("drifted", DEFAULT_DRIFTED))
    )


def set_thresholds(
    store: Store,
    name: str,
    moderate: float,
    drifted: float,
    *,
    actor: str,
) -> Thresholds:
    """Store a deployment's PSI thresholds in its report settings (one transaction, audited).

    Raises InvalidInput unless 0 < moderate < drifted, NotFound for an unknown deployment.
    """
    if not 0 < moderate < drifted:
        raise InvalidInput(
            f"Drift thresholds must satisfy 0 < moderate < drifted; got "
            f"moderate {moderate:g}, drifted {drifted:g}.",
            "The defaults are 0.1 (moderate) and 0.25 (drifted).",
        )

    chosen = {"moderate": moderate, "drifted": drifted}
    deployments.change_report(
        store,
        name,
        "drift-thresholds",
        lambda report: ({**report, "drift": chosen}, report.get("drift"), chosen),
        permission="drift-thresholds",
        actor=actor,
    )
    return Thresholds(moderate, drifted)


# ---------------------------------------------------------------------------- counting
def counts_path(store: Store, run_id: str, model_id: str | None = None) -> Any:
    """runs/<id>/drift_counts.json (against the run's own model) or _<model> for another."""
    return run_folder(store.workspace, run_id).drift_counts(model_id)


def numeric_aggregates(x: str, edges: list[float], params: list[Any]) -> list[str]:
    """Aggregates of a numeric value `x`, read back by `_numeric_counts`: the counts below the
    first edge, at or above each inner edge, above the last edge, of NaN and of values (NaN
    included); the sums of the outer buckets, the sum, min and max of the numbers.

    Each bucket is a difference of two counts. Measured on 1M rows x 15 columns: one
    `count_if` per edge 0.2 s; a bucket index per row fed to `histogram` 0.8 s (binary search
    or `histogram(x, bounds)` 0.5 s); sums with FILTER clauses 1.4 s, with CASE 0.26 s.
    """
    number = f"CASE WHEN isnan({x}) THEN NULL ELSE {x} END"
    params += [edges[0], *edges[1:-1], edges[-1], edges[0], edges[-1]]
    return [
        f"count_if({x} < ?)",
        *(f"count_if({x} >= ?)" for _ in edges[1:-1]),
        f"count_if({x} > ?)",
        f"count_if(isnan({x}))",
        f"count({x})",
        f"sum(CASE WHEN {x} < ? THEN {x} END)",
        f"sum(CASE WHEN {x} > ? AND NOT isnan({x}) THEN {x} END)",
        f"sum({number})",
        f"min({number})",
        f"max({number})",
    ]


def _numeric_counts(values: list[Any], edges: list[float], rows: int) -> dict[str, Any]:
    """The buckets of `numeric_aggregates`'s aggregates (DuckDB sorts NaN above every number, so
    NaN is in the count above the last edge and in every `>=` count)."""
    n = len(edges[1:-1])
    below, *at_or_above, above, nan, non_null = (int(v or 0) for v in values[: n + 4])
    below_sum, above_sum, total, low, high = values[n + 4 : n + 9]
    cuts = [non_null - below, *at_or_above, above]  # values at or above each edge, then above
    return {
        "kind": "numeric",
        "missing": rows - non_null + nan,
        "below": below,
        "below_sum": float(below_sum or 0.0),
        "bins": [lower - upper for lower, upper in itertools.pairwise(cuts)],
        "above": above - nan,
        "above_sum": float(above_sum or 0.0),
        "sum": float(total or 0.0),
        "min": low,
        "max": high,
    }


def count_plan(
    model: Model, profile: dict[str, Any], columns: list[str]
) -> tuple[list[tuple[str, str, dict[str, Any], str]], dict[str, str]]:
    """(name, kind, training profile, results column) to count; skipped features -> why."""
    features = profile.get("features") or {}
    planned, skipped = [], {}
    for feature in model.schema.features:
        found = features.get(feature.name)
        column = feature_column(model, feature.name, columns)
        if found is None:
            skipped[feature.name] = "not in the training profile"
        elif column is None:
            skipped[feature.name] = "not in the run's results"
        elif found["kind"] == "numeric" and not found.get("edges"):
            skipped[feature.name] = "no values in training"
        else:
            planned.append((feature.name, found["kind"], found, column))
    prediction = profile.get("prediction")
    if prediction is None:
        skipped[PREDICTION] = "the training profile has no prediction distribution"
    elif prediction["kind"] == "numeric" and not prediction.get("edges"):
        skipped[PREDICTION] = "no predictions in training"
    else:
        planned.append((PREDICTION, prediction["kind"], prediction, "prediction"))
    return planned, skipped


# The count is one pass of small aggregates: a tighter limit than the shared files database's
# keeps its peak (DuckDB's read buffers) at ~330 MB over 1M rows x 20 features, for ~0.07 s
# more (bench/drift_bench.py: 563 MB peak with imports, vs 773 MB at 1 GB).
COUNT_MEMORY_LIMIT = "400MB"


def count_file(path: Any, model: Model, profile: dict[str, Any]) -> dict[str, Any]:
    """Bucket counts of one results file against `profile`: one DuckDB aggregation."""
    schema = pq.read_schema(path)
    planned, skipped = count_plan(model, profile, schema.names)
    aggregates, params = ["count(*)"], list[Any]()
    for _, kind, found, column in planned:
        value, kind_of = quote_identifier(column), schema.field(column).type
        if kind == "numeric":
            if not pa.types.is_floating(kind_of):  # integers, booleans, text holding numbers
                value = f"TRY_CAST({value} AS DOUBLE)"
            aggregates += numeric_aggregates(value, found["edges"], params)
        else:
            if not (pa.types.is_string(kind_of) or pa.types.is_large_string(kind_of)):
                value = f"CAST({value} AS VARCHAR)"
            aggregates += [f"count({value})", f"histogram({value})"]
    # pyarrow leaves NaN out of a column's min/max statistics; without can_have_nan DuckDB
    # takes them to mean "no NaN" and folds isnan() and comparisons to constants.
    sql = f"SELECT {', '.join(aggregates)} FROM read_parquet(?, can_have_nan = true)"
    row = with_files(
        lambda tx: tx.execute(sql, [*params, str(path)]).rows[0], memory_limit=COUNT_MEMORY_LIMIT
    )
    return unpack_counts(list(row), planned, skipped, model)


def unpack_counts(
    row: list[Any],
    planned: list[tuple[str, str, dict[str, Any], str]],
    skipped: dict[str, str],
    model: Model,
) -> dict[str, Any]:
    rows, pos, out = int(row[0]), 1, {}
    categories = {f.name: set(f.categories) for f in model.schema.features}
    for name, kind, found, _ in planned:
        if kind == "numeric":
            width = len(found["edges"][1:-1]) + 9  # the aggregates of numeric_aggregates
            out[name] = _numeric_counts(row[pos : pos + width], found["edges"], rows)
            pos += width
        else:
            missing, histogram = rows - int(row[pos]), row[pos + 1] or {}
            pos += 2
            known = found.get("frequencies") or {}
            # the prediction's classes are the model's, a feature's its schema's categories
            seen = (
                categories.get(name, set())
                if name != PREDICTION
                else {str(c) for c in model.schema.classes}
            )
            counts = dict.fromkeys(known, 0)
            other = unseen = 0
            for value, n in histogram.items():
                if value in counts:
                    counts[value] += int(n)
                elif value in seen:
                    other += int(n)
                else:
                    unseen += int(n)
            out[name] = {
                "kind": "categorical",
                "missing": missing,
                "categories": counts,
                "other": other,
                "unseen": unseen,
            }
    return {"rows": rows, "features": out, "skipped": skipped}


def run_model(store: Store, run: Run) -> Model:
    model_id = (run.summary.get("main") or {}).get("model_id")
    if not model_id:
        raise Conflict(
            f"Run {run.id} has no main model in its summary.", "Run the deployment again."
        )
    return get_model(store, model_id)


def _results_of(store: Store, run: Run) -> Any:
    if run.status != "succeeded" or not run.summary.get("results_written"):
        raise Conflict(
            f"Run {run.id} is {run.status} without results: no drift to count.",
            "Only succeeded runs are compared with training.",
        )
    if run.purged_at is not None:
        raise Conflict(
            f"The results of run {run.id} were purged; its drift counts cannot be computed again.",
            "Choose a window of runs that still have results.",
        )
    path = result_path(store.workspace, run.id)
    if not path.exists():
        raise NotFound("results file", str(path), "The files were removed outside ModelDeck.")
    return path


def compute_run_counts(
    store: Store, run_id: str, model: Model | None = None, *, run: Run | None = None
) -> dict[str, Any]:
    """Count a succeeded run's rows per training bucket and store them (atomic JSON); return
    them. Against the run's main model unless `model` is given. Idempotent. Raises Conflict
    for a run without results, InvalidInput for a run with zero rows (nothing stored).
    `run`: the run as just recorded (the worker has it), to save a read of the store."""
    run = run if run is not None and run.id == run_id else get_run(store, run_id)
    path = _results_of(store, run)
    own = run_model(store, run)
    model = model or own
    counts = count_file(path, model, model.profile)
    if counts["rows"] == 0:
        raise InvalidInput(
            f"Run {run.id} has zero rows: there is no served data to compare with training.",
            "Drift is computed for runs that scored rows.",
        )
    counts.update(run_id=run.id, model_id=model.id, computed_at=utcnow().isoformat())
    target = counts_path(store, run.id, None if model.id == own.id else model.id)
    atomic_write_bytes(target, json.dumps(counts).encode())
    return counts


def run_counts(store: Store, run: Run, model: Model) -> dict[str, Any]:
    """A run's stored counts against `model`, computed (and stored) when missing."""
    own_id = (run.summary.get("main") or {}).get("model_id")
    path = counts_path(store, run.id, None if model.id == own_id else model.id)
    if path.exists():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    return compute_run_counts(store, run.id, model)


def after_run(store: Store, run: Run) -> None:
    """The worker's step after a run: store its drift counts. Never raises (logged)."""
    if run.status != "succeeded" or not run.summary.get("results_written"):
        return
    try:
        compute_run_counts(store, run.id, run=run)
    except Exception as exc:  # the run's outcome must not depend on this step
        log.warning("drift counts of run %s not stored: %s", run.id, exc)


def combine(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """The counts of several runs (on the same training buckets) added together."""
    total: dict[str, Any] = {"rows": 0, "features": {}, "skipped": {}}
    for one in counts:
        total["rows"] += one["rows"]
        total["skipped"].update(one.get("skipped", {}))
        for name, c in one["features"].items():
            into = total["features"].setdefault(name, None)
            total["features"][name] = (
                _add(into, c) if into is not None else json.loads(json.dumps(c))
            )
    return total


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key in ("min", "max"):
            present = [v for v in (a[key], value) if v is not None]
            out[key] = (min if key == "min" else max)(present) if present else None
        elif key == "bins":
            out[key] = [x + y for x, y in zip(a[key], value, strict=True)]
        elif key == "categories":
            out[key] = {k: a[key].get(k, 0) + value.get(k, 0) for k in {*a[key], *value}}
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = a[key] + value
    return out


# ---------------------------------------------------------------------------- windows
def _usable(run: Run) -> bool:
    return (
        run.status == "succeeded"
        and bool(run.summary.get("results_written"))
        and run.purged_at is None
        and bool(run.rows_out)
    )


def window_runs(
    store: Store,
    deployment_name: str,
    *,
    run_id: str | None = None,
    last: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Run]:
    """The succeeded runs with rows of a window, newest first: one run, the last N, or those
    finished in [start, end) (validation runs only by id). The last run when nothing is said.
    Raises InvalidInput for an empty window or a bad request, NotFound for a run of another
    deployment."""
    if sum(x is not None for x in (run_id, last)) + (start is not None or end is not None) > 1:
        raise InvalidInput(
            "Choose one window: a run, the last N runs, or a date range.",
            "Give only one of them.",
        )
    if last is not None and last < 1:
        raise InvalidInput(
            f"The window must hold at least one run; got the last {last}.",
            "Ask for the last 1 run or more.",
        )
    if run_id is not None:
        run = get_run(store, run_id)
        if deployment_name not in (run.deployment_name, run.deployment_id):
            raise NotFound(
                "run",
                f"{run_id}' of deployment '{deployment_name}",
                f"Run {run_id} belongs to '{run.deployment_name}'.",
            )
        if not _usable(run):
            raise InvalidInput(
                f"Run {run.id} has no scored rows to compare with training "
                f"(status {run.status}, {run.rows_out or 0} rows).",
                "Choose a succeeded run that scored rows.",
            )
        return [run]
    # Validation runs score labelled test data, not served traffic: only asked for by id.
    found = [
        r
        for r in list_runs(store, deployment_name, limit=MAX_WINDOW)
        if _usable(r) and r.trigger != "validation"
    ]
    if start is not None or end is not None:
        found = [
            r
            for r in found
            if r.finished_at is not None
            and (start is None or r.finished_at >= start)
            and (end is None or r.finished_at < end)
        ]
    else:
        found = found[: last or 1]
    if not found:
        span = (
            f" between {start or 'the first run'} and {end or 'now'}"
            if start is not None or end is not None
            else ""
        )
        raise InvalidInput(
            f"Deployment '{deployment_name}' has no succeeded run with rows"
            f"{span}: there is no served data to compare with training.",
            "Run the deployment, or widen the window.",
        )
    return found


def report_of(
    name: str,
    model: Model,
    runs: list[Run],
    counts: dict[str, Any],
    thresholds: Thresholds,
    notes: tuple[str, ...] = (),
    *,
    p_values: bool = True,
) -> DriftReport:
    """The scores of summed `counts` against `model`'s training profile, as a report of
    `runs` (their times bound it; none for a window of calls)."""
    profile = model.profile.get("features") or {}
    features = []
    for feature in model.schema.features:
        if feature.name in counts["features"]:
            features.append(
                score_feature(
                    feature.name,
                    profile[feature.name],
                    counts["features"][feature.name],
                    thresholds,
                    p_value=p_values,
                )
            )
        else:
            why = counts["skipped"].get(feature.name, "not counted")
            features.append(not_scored(feature.name, feature.kind, why))
    prediction = None
    if PREDICTION in counts["features"]:
        prediction = score_feature(
            PREDICTION,
            model.profile["prediction"],
            counts["features"][PREDICTION],
            thresholds,
            p_value=p_values,
        )
    elif PREDICTION in counts["skipped"]:
        prediction = not_scored(PREDICTION, "", counts["skipped"][PREDICTION])
    times = [r.finished_at for r in runs if r.finished_at is not None]
    return DriftReport(
        name,
        model.id,
        tuple(r.id for r in runs),
        min(times, default=None),
        max(times, default=None),
        counts["rows"],
        thresholds,
        tuple(features),
        prediction,
        notes,
    )


def deployment_thresholds(store: Store, deployment_name: str) -> Thresholds:
    """A deployment's PSI thresholds (the defaults for an unknown one); one read."""
    row = store.query(
        "SELECT report FROM deployments WHERE name = ? OR id = ?",
        [deployment_name, deployment_name],
    ).first()
    return thresholds_of(json.loads(row["report"] or "{}")) if row else Thresholds()


def drift_report(
    store: Store,
    deployment_name: str,
    *,
    run_id: str | None = None,
    last: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    thresholds: Thresholds | None = None,
) -> DriftReport:
    """Drift of a window's served data against the newest run's model's training profile,
    from stored counts (computed and stored for runs that lack them). Reads no rows when
    every run's counts are stored. Raises like window_runs."""
    runs = window_runs(store, deployment_name, run_id=run_id, last=last, start=start, end=end)
    model = run_model(store, runs[0])
    counts = combine([run_counts(store, r, model) for r in runs])
    served = {(r.summary.get("main") or {}).get("model_id") for r in runs}
    # every counted run has a main model id (run_model raises Conflict otherwise)
    others = sorted(m for m in served - {model.id} if isinstance(m, str))
    notes = (
        (
            f"runs of other models ({', '.join(others)}) are compared with the training "
            f"profile of {model.id}",
        )
        if others
        else ()
    )
    thresholds = thresholds or deployment_thresholds(store, deployment_name)
    return report_of(runs[0].deployment_name, model, runs, counts, thresholds, notes)


def drift_over_time(
    store: Store, deployment_name: str, last: int = 30, thresholds: Thresholds | None = None
) -> DriftSeries:
    """One point per run and feature (and the prediction) for the last runs, oldest first,
    each run against its own model's profile. Raises InvalidInput when there are no runs."""
    runs = window_runs(store, deployment_name, last=last)[::-1]
    thresholds = thresholds or deployment_thresholds(store, deployment_name)
    models: dict[str, Model] = {}
    points, shares = [], []
    for run in runs:
        model_id = (run.summary.get("main") or {}).get("model_id", "")
        model = models.setdefault(model_id, run_model(store, run))
        report = report_of(
            run.deployment_name, model, [run], run_counts(store, run, model), thresholds
        )
        at = run.finished_at or run.queued_at
        for f in [*report.features, *([report.prediction] if report.prediction else [])]:
            points.append(DriftPoint(run.id, at, f.name, f.psi, f.distance, f.status))
        shares.append((run.id, at, report.share_drifted))
    return DriftSeries(runs[0].deployment_name, tuple(points), tuple(shares))


@dataclass(frozen=True)
class DriftAlert:
    """Features drifted in the latest run, and since when runs have shown drift."""

    deployment: str
    n_drifted: int
    n_features: int
    since: datetime
    drifted: tuple[str, ...]


def drift_alert(store: Store, deployment_name: str, last: int = 30) -> DriftAlert | None:
    """An alert when the latest run has drifted features (None otherwise, or without runs);
    `since` is the first run of the unbroken streak of runs with drift."""
    try:
        series = drift_over_time(store, deployment_name, last)
    except InvalidInput:
        return None
    return alert_of(series)


def alert_of(series: DriftSeries) -> DriftAlert | None:
    """drift_alert from an already computed series (None when the latest run has no drift)."""
    if not series.shares or series.shares[-1][2] == 0:
        return None
    since = series.shares[-1][1]
    for _, at, share in reversed(series.shares):
        if share == 0:
            break
        since = at
    latest = series.shares[-1][0]
    mine = [p for p in series.points if p.run_id == latest and p.feature != PREDICTION]
    drifted = tuple(p.feature for p in mine if p.status == "drifted")
    return DriftAlert(
        series.deployment, len(drifted), len([p for p in mine if p.status != "n/a"]), since, drifted
    )
