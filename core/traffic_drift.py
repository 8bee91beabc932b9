"""Drift and input quality of a window of served traffic (issue 18 item 7): the API's and the
prediction form's calls in the prediction log, the runs, or both, against the training profile
of the deployment's current main model.

The log's records keep each request's inputs as JSON columns (`{"age": [41, 37], ...}`) and its
predictions as a list in row order. One DuckDB query over `prediction_log.source_sql` (with the
inputs) unnests them into rows and counts them per hour or day bucket with the aggregates run
drift uses (core.drift: `count_plan`, `numeric_aggregates`, `unpack_counts`), so a bucket's
counts have the shape of a run's `drift_counts.json`; the window's report is their sum
(`drift.combine`) scored by `drift._report`. Only the aggregates leave DuckDB. Runs finished in
the window add their stored counts (against the same model) to their bucket.

A value is read as a run's results file reads it: for a numeric feature a number, a boolean
(1/0) or a text holding a number, anything else missing; for a categorical one its text.
What the log cannot keep: JSON has no NaN or infinity, so the log holds them as null and they
count as missing (a run's file keeps +/-inf, counted above or below the training range).

Input quality per feature comes from the same counts: missing, out of the training range
(numeric: the buckets below and above the training quantile edges, whose ends are the training
min and max) and unseen categories, as `input_quality` counts a run's rows.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from core import drift, prediction_log
from core.deployments import get_deployment
from core.engine.drift_scores import PREDICTION, Thresholds
from core.engine.pipeline_sql import quote
from core.entities import Deployment, Model
from core.errors import InvalidInput
from core.monitoring import Window
from core.registry import get_model
from core.store import Store, Tx

EMPTY_HINT = "Call the API or open the prediction form, or widen the window."


@dataclass(frozen=True)
class FeatureQuality:
    """One feature's rows in a window and how many were missing, out of range or unseen."""

    name: str
    kind: str
    rows: int
    missing: int
    out_of_range: int
    unseen: int

    @property
    def share_good(self) -> float:
        bad = self.missing + self.out_of_range + self.unseen
        return 1 - bad / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class TrafficDrift:
    """A window's drift report, one point per bucket, and input quality per feature."""

    report: drift.DriftReport
    series: drift.DriftSeries
    quality: tuple[FeatureQuality, ...]
    requests: int  # logged requests counted (runs count in report.run_ids)


# ---------------------------------------------------------------------------- SQL
def json_paths(name: str) -> list[str]:
    """JSON paths of an input column as a request may spell it (composed and decomposed)."""
    spellings = dict.fromkeys(unicodedata.normalize(f, name) for f in ("NFC", "NFD"))
    return ["$." + '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in spellings]


def window_filter(window: Window) -> tuple[str, list[Any]]:
    """The WHERE tail of a window's answered calls (main or challenger) and its parameters."""
    marks = ", ".join("?" for _ in window.logged)
    return (
        f" AND status = 200 AND logged_at >= ? AND logged_at < ? AND source IN ({marks})",
        [window.start, window.end, *window.logged],
    )


def log_rows_sql(model: Model, deployment_id: str, window: Window) -> tuple[str, list[Any]]:
    """A SELECT over `{log}` (the log with inputs) of one row per predicted row of the
    window's main answers: b (its bucket), version, f0.. (each feature's JSON value, in schema
    order) and p (the prediction as JSON); and its parameters."""
    paths: list[str] = []
    picks = []
    for i, feature in enumerate(model.schema.features):
        at = [len(paths) + k + 1 for k in range(len(json_paths(feature.name)))]
        paths += json_paths(feature.name)
        value = f"j[{at[0]}]" if len(at) == 1 else f"coalesce({', '.join(f'j[{k}]' for k in at)})"
        picks.append(f"unnest(CAST({value} AS JSON[])) AS f{i}")
    listed = "[" + ", ".join(quote(p) for p in paths) + "]"
    where, params = window_filter(window)
    sql = (
        f"SELECT b, version, {', '.join(picks)},"
        " unnest(CAST(json_extract(outputs, '$.predictions') AS JSON[])) AS p FROM"
        f" (SELECT date_trunc('{window.bucket}', logged_at) AS b, version, outputs,"
        f" json_extract(inputs, {listed}) AS j FROM {{log}}"
        f" WHERE deployment_id = ? AND kind = 'main'{where})"
    )
    return sql, [deployment_id, *params]


def _value(kind: str, column: str) -> str:
    """A logged JSON value as count_file reads a results column of that kind."""
    if kind == "numeric":
        return f"TRY_CAST({column} AS DOUBLE)"  # numbers, true/false as 1/0, text of numbers
    return f"json_extract_string({column}, '$')"


def count_sql(
    model: Model, deployment_id: str, window: Window
) -> tuple[str, list[Any], list[tuple[str, str, dict[str, Any], str]], dict[str, str]]:
    """The counting query over `{log}` (one row per bucket: b, versions, count(*), then the
    aggregates of core.drift), its parameters, and the plan and skipped features."""
    names = model.schema.feature_names
    planned, skipped = drift.count_plan(model, model.profile, [*names, "prediction"])
    column = {n: f"f{i}" for i, n in enumerate(names)} | {PREDICTION: "p"}
    values, aggregates, params = [], ["count(*)"], list[Any]()
    for k, (name, kind, found, _) in enumerate(planned):
        values.append(f"{_value(kind, column[name])} AS v{k}")
        if kind == "numeric":
            aggregates += drift.numeric_aggregates(f"v{k}", found["edges"], params)
        else:
            aggregates += [f"count(v{k})", f"histogram(v{k})"]
    rows, where = log_rows_sql(model, deployment_id, window)
    sql = (
        f"SELECT b, list(DISTINCT version), {', '.join(aggregates)} FROM"
        f" (SELECT b, version, {', '.join(values) or 'NULL AS v'} FROM ({rows}))"
        " GROUP BY b ORDER BY b"
    )
    return sql, params + where, planned, skipped


# ---------------------------------------------------------------------------- counting
def log_counts(
    store: Store, model: Model, deployment: Deployment, window: Window
) -> tuple[dict[datetime, dict[str, Any]], set[int]]:
    """The window's logged main answers counted per bucket against `model`'s training profile
    (counts shaped as a run's), and the deployment versions that answered them."""
    if not window.logged:
        return {}, set()
    sql, params, planned, skipped = count_sql(model, deployment.id, window)

    def read(tx: Tx, source: str) -> list[tuple[Any, ...]]:
        return tx.execute(sql.format(log=source), params).rows

    found = prediction_log.query(store.workspace, read, inputs=True)
    versions = {int(v) for row in found for v in row[1] or [] if v is not None}
    return {
        row[0]: drift.unpack_counts(list(row[2:]), planned, skipped, model) for row in found
    }, versions


def _bucket(at: datetime, bucket: str) -> datetime:
    at = at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if bucket == "day" else at


def _window_runs(store: Store, deployment: Deployment, window: Window) -> list[Any]:
    if not window.has_runs:
        return []
    try:
        return drift.window_runs(store, deployment.name, start=window.start, end=window.end)
    except InvalidInput:  # no run in the window: the log alone
        return []


def traffic_drift(
    store: Store, name: str, window: Window, thresholds: Thresholds | None = None
) -> TrafficDrift:
    """Drift of the window's traffic (its source: api, form, run or all) against the current
    main model's training profile: the report, one point per bucket and input quality.
    Raises InvalidInput for a deployment without a model and for a window without rows,
    saying what to do."""
    deployment = get_deployment(store, name)
    if deployment.current is None:
        raise InvalidInput(
            f"Deployment '{deployment.name}' has no model yet.", "Deploy a model first."
        )
    model = get_model(store, deployment.current.main_model_id)
    by_bucket, versions = log_counts(store, model, deployment, window)
    requests_seen = bool(by_bucket)
    runs = _window_runs(store, deployment, window)
    for run in runs:  # newest first; each in its bucket, against the same model
        at = _bucket(run.finished_at or run.queued_at, window.bucket)
        counts = drift.run_counts(store, run, model)
        by_bucket[at] = drift.combine([by_bucket[at], counts]) if at in by_bucket else counts
    if not by_bucket:
        raise InvalidInput(_empty(window), EMPTY_HINT if window.logged else _RUN_HINT)
    thresholds = thresholds or drift._deployment_thresholds(store, deployment.name)
    total = drift.combine(list(by_bucket.values()))
    notes = _notes(deployment, model, versions, runs)
    report = drift._report(deployment.name, model, runs, total, thresholds, notes)
    first, last = min(by_bucket), max(by_bucket)
    report = replace(report, start=first, end=last)
    return TrafficDrift(
        report,
        _series(deployment.name, model, by_bucket, thresholds),
        quality(model, total),
        _requests(store, deployment, window) if requests_seen else 0,
    )


_RUN_HINT = "Run the deployment (Runs), or widen the window."


def _empty(window: Window) -> str:
    if window.source in ("api", "form", "calls"):
        what = {"api": "API calls", "form": "prediction form calls", "calls": "API or form calls"}[
            window.source
        ]
        return f"No {what} in this window: there is no served data to compare with training."
    if window.source == "run":
        return "No run with rows finished in this window: nothing to compare with training."
    return "No API or form calls and no runs in this window: nothing to compare with training."


def _notes(
    deployment: Deployment, model: Model, versions: set[int], runs: list[Any]
) -> tuple[str, ...]:
    current = deployment.current.number if deployment.current else None
    notes = []
    older = sorted(v for v in versions if v != current)
    if older:
        listed = ", ".join(f"v{v}" for v in older)
        notes.append(
            f"calls answered by other versions ({listed}) are compared with the training "
            f"profile of the current main model {model.id}"
        )
    others = {(r.summary.get("main") or {}).get("model_id") for r in runs} - {model.id}
    if others - {None}:
        notes.append(
            f"runs of other models ({', '.join(sorted(str(m) for m in others if m))}) are "
            f"compared with the training profile of {model.id}"
        )
    return tuple(notes)


def _requests(store: Store, deployment: Deployment, window: Window) -> int:
    where, params = window_filter(window)

    def read(tx: Tx, source: str) -> int:
        row = tx.execute(
            f"SELECT count(*) FROM {source} WHERE deployment_id = ? AND kind = 'main'{where}",
            [deployment.id, *params],
        ).rows[0]
        return int(row[0])

    return prediction_log.query(store.workspace, read)


def _series(
    name: str, model: Model, by_bucket: dict[datetime, dict[str, Any]], thresholds: Thresholds
) -> drift.DriftSeries:
    """One point per bucket and feature (and the prediction), oldest first."""
    points, shares = [], []
    for at in sorted(by_bucket):
        report = drift._report(name, model, [], by_bucket[at], thresholds)
        label = f"{at:%Y-%m-%d %H:%M}"
        for f in [*report.features, *([report.prediction] if report.prediction else [])]:
            points.append(drift.DriftPoint(label, at, f.name, f.psi, f.distance, f.status))
        shares.append((label, at, report.share_drifted))
    return drift.DriftSeries(name, tuple(points), tuple(shares))


def quality(model: Model, counts: dict[str, Any]) -> tuple[FeatureQuality, ...]:
    """Input quality per feature from drift counts (a run's, a bucket's or their sum)."""
    out = []
    for feature in model.schema.features:
        c = counts["features"].get(feature.name)
        if c is None:
            continue
        if c["kind"] == "numeric":
            rows = c["below"] + sum(c["bins"]) + c["above"] + c["missing"]
            out.append(
                FeatureQuality(
                    feature.name, "numeric", rows, c["missing"], c["below"] + c["above"], 0
                )
            )
        else:
            rows = sum(c["categories"].values()) + c["other"] + c["unseen"] + c["missing"]
            out.append(
                FeatureQuality(feature.name, "categorical", rows, c["missing"], 0, c["unseen"])
            )
    return tuple(out)
