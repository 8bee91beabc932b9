"""Champion vs challenger over the API's and the form's calls (issue 18 item 7): the shadow
challenger's answers in the prediction log, paired with the main answers by request id and row.

The result is a core.challenger.Comparison, so the page shows it as it shows a window of runs:
agreement per hour or day bucket (a bucket stands where a run stood), both models' predictions
side by side, and the disagreeing rows where the main model was surest (classification) or the
two differ most (regression), with their inputs. Everything is one DuckDB query over
`prediction_log.source_sql` plus one over the few top requests' inputs.

Pairing: a main answer meets the latest challenger answer logged under its request id (a
caller reusing `X-Request-ID` has each of its main answers compared with the last shadow one).
Rows the challenger did not answer (its queue was full, or it failed) are counted apart and
left out of the agreement. The feature comparison of agreeing and disagreeing rows is made for
runs only (`features` is empty here).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson

from core import challenger, prediction_log
from core.deployments import get_deployment
from core.engine.classes import label_texts
from core.engine.drift_scores import numeric_buckets
from core.engine.pipeline_sql import quote
from core.entities import Model
from core.errors import InvalidInput, Step
from core.monitoring import Window
from core.registry import get_model
from core.store import Store, Tx
from core.traffic_drift import EMPTY_HINT, json_paths, window_filter

LATE = timedelta(minutes=5)  # a shadow answer logged this long after the window still pairs


def _pairs_sql(task: str, where: str) -> str:
    """CTEs `m` (the window's main rows), `c` (the latest shadow answer per request) and
    `j` (paired rows: b, request_id, i, mv, cv, proba) over `{log}`."""
    value = "TRY_CAST({} AS DOUBLE)" if task == "regression" else "json_extract_string({}, '$')"
    return (
        "WITH m AS (SELECT b, request_id, i - 1 AS i, p[i] AS mp, pr[i] AS proba FROM"
        " (SELECT *, generate_subscripts(p, 1) AS i FROM (SELECT request_id,"
        " date_trunc('{bucket}', logged_at) AS b,"
        " CAST(json_extract(outputs, '$.predictions') AS JSON[]) AS p,"
        " CAST(json_extract(outputs, '$.probabilities') AS JSON[]) AS pr FROM {log}"
        f" WHERE deployment_id = ? AND kind = 'main'{where}))),"
        " c AS (SELECT request_id, CAST(json_extract(arg_max(outputs, logged_at),"
        " '$.predictions') AS JSON[]) AS cp FROM {log} WHERE deployment_id = ?"
        " AND kind = 'challenger' AND status = 200 AND logged_at >= ? AND logged_at < ?"
        " AND request_id IN (SELECT request_id FROM m) GROUP BY request_id),"
        f" j AS MATERIALIZED (SELECT b, m.request_id, i, {value.format('mp')} AS mv,"
        f" {value.format('c.cp[i + 1]')} AS cv, proba FROM m JOIN c USING (request_id)"
        " WHERE c.cp[i + 1] IS NOT NULL)"
    )


def compare_traffic(
    store: Store,
    name: str,
    window: Window,
    *,
    top: int = challenger.TOP_ROWS,
    tolerance: float | None = None,
) -> challenger.Comparison:
    """Main vs challenger on the window's logged calls (its api and form sources), against
    the current main model. Raises InvalidInput for a window without calls or without any
    shadow answer (saying how to add a challenger when there is none)."""
    deployment = get_deployment(store, name)
    if deployment.current is None or not window.logged:
        raise InvalidInput(
            f"Deployment '{deployment.name}' has no API or form calls to compare.", EMPTY_HINT
        )
    model = get_model(store, deployment.current.main_model_id)
    task = model.task
    tol = challenger._tolerance(model, tolerance) if task == "regression" else None
    agree = "abs(mv - cv) <= ?" if task == "regression" else "mv IS NOT DISTINCT FROM cv"
    where, args = window_filter(window)
    pairs = _pairs_sql(task, where).replace("{bucket}", window.bucket)
    params = [deployment.id, *args, deployment.id, window.start, window.end + LATE]
    tolerance_args = [tol] if tol is not None else []
    order = "abs(mv - cv) DESC" if task == "regression" else "confidence DESC NULLS LAST"

    def read(tx: Tx, source: str) -> tuple[Any, ...]:
        head = pairs.format(log=source)
        per_bucket = tx.execute(
            f"{head} SELECT b, count(*), count_if({agree}), avg(abs(TRY_CAST(mv AS DOUBLE)"
            " - TRY_CAST(cv AS DOUBLE))) FROM j GROUP BY b ORDER BY b DESC",
            [*params, *tolerance_args],
        ).rows
        main_rows = tx.execute(
            f"SELECT coalesce(sum(rows), 0) FROM {source} WHERE deployment_id = ?"
            f" AND kind = 'main'{where}",
            [deployment.id, *args],
        ).rows[0][0]
        shares = _distribution_rows(tx, head, params, task)
        worst = tx.execute(
            f"{head} SELECT request_id, i, mv, cv, list_max(CAST(json_extract(proba, '$.*')"
            f" AS DOUBLE[])) AS confidence FROM j WHERE NOT ({agree}) ORDER BY {order},"
            " request_id, i LIMIT ?",
            [*params, *tolerance_args, top],
        ).dicts()
        return per_bucket, int(main_rows), shares, worst

    per_bucket, main_rows, shares, worst = prediction_log.query(store.workspace, read)
    if not per_bucket:
        raise _nothing_paired(
            deployment.name, main_rows, bool(deployment.current.challenger_model_id)
        )
    current = deployment.current
    buckets = tuple(
        challenger.RunAgreement(
            f"{b:%Y-%m-%d %H:%M}",
            b,
            int(n),
            int(a),
            a / n if n else 0.0,
            d if task == "regression" else None,
            current.main_model_id,
            current.challenger_model_id or "",
        )
        for b, n, a, d in per_bucket
    )
    rows = sum(x.rows for x in buckets)
    agreeing = sum(x.agreeing for x in buckets)
    labels, main, other = _distributions(model, shares)
    notes = []
    if main_rows > rows:
        notes.append(
            f"{main_rows - rows:,} of {main_rows:,} rows have no challenger answer (skipped "
            "when its queue was full, failed, or answered before a challenger was set): "
            "left out"
        )
    if agreeing == rows:
        notes.append("main and challenger agree on every row")
    return challenger.Comparison(
        deployment.name,
        task,
        model.id,
        (),
        rows,
        agreeing,
        tol,
        buckets,
        labels,
        main,
        other,
        (),
        tuple(_with_inputs(store, model, deployment.id, worst, window)),
        (),
        tuple(notes),
    )


def _nothing_paired(name: str, main_rows: int, has_challenger: bool) -> InvalidInput:
    if not main_rows:
        return InvalidInput(
            f"No API or form calls of '{name}' in this window: nothing to compare.", EMPTY_HINT
        )
    if not has_challenger:
        return InvalidInput(
            f"None of the {main_rows:,} rows called in this window has a challenger answer.",
            challenger.ADD_CHALLENGER_HINT,
            step=Step("deploy-challenger", name),
        )
    return InvalidInput(
        f"None of the {main_rows:,} rows called in this window has a challenger answer yet.",
        "The challenger answers in the background: wait a moment, or widen the window.",
    )


def _distribution_rows(tx: Tx, head: str, params: list[Any], task: str) -> list[tuple[Any, ...]]:
    """(role, value or bin, rows) of the paired rows; a regression's bins are 20 equal-width
    ones over both models' predictions (the bin's index, then lo and hi)."""
    if task != "regression":
        return tx.execute(
            f"{head} SELECT 'main', mv, count(*) FROM j GROUP BY ALL"
            " UNION ALL SELECT 'challenger', cv, count(*) FROM j GROUP BY ALL",
            params,
        ).rows
    bins = challenger.HISTOGRAM_BINS
    return tx.execute(
        f"{head}, v AS (SELECT 'main' AS role, mv AS x FROM j UNION ALL SELECT 'challenger', cv"
        " FROM j), f AS (SELECT * FROM v WHERE x IS NOT NULL AND isfinite(x)),"
        " r AS (SELECT min(x) AS lo, max(x) AS hi FROM f)"
        f" SELECT role, least(CAST(floor((x - lo) / (CASE WHEN hi > lo THEN hi - lo ELSE 1 END)"
        f" * {bins}) AS BIGINT), {bins - 1}) AS k, count(*), any_value(lo), any_value(hi)"
        " FROM f, r GROUP BY 1, 2",
        params,
    ).rows


def _distributions(
    model: Model, found: list[tuple[Any, ...]]
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    counts: dict[tuple[str, str], int] = {}
    if model.task == "regression":
        if not found:
            return (), (), ()
        lo, hi = float(found[0][3]), float(found[0][4])
        bins = challenger.HISTOGRAM_BINS if hi > lo else 1
        width = (hi - lo) / bins if hi > lo else 1.0
        labels = numeric_buckets([lo + k * width for k in range(bins + 1)] if bins > 1 else [lo])
        labels = labels[1:-2]
        for role, k, n, _, _ in found:
            key = (role, labels[min(int(k), bins - 1)])
            counts[key] = counts.get(key, 0) + int(n)
    else:
        classes = model.schema.classes
        texts: list[Any] = (
            list(label_texts([str(v) for _, v, _ in found], classes)) if found else []
        )
        for (role, value, n), text in zip(found, texts, strict=True):
            key = (role, "missing" if value is None else str(text))
            counts[key] = counts.get(key, 0) + int(n)
        known = [str(t) for t in label_texts([str(c) for c in classes], classes)]
        labels = known + sorted({b for _, b in counts} - set(known))
    return (
        tuple(labels),
        tuple(counts.get(("main", b), 0) for b in labels),
        tuple(counts.get(("challenger", b), 0) for b in labels),
    )


def _with_inputs(
    store: Store, model: Model, deployment_id: str, worst: list[dict[str, Any]], window: Window
) -> list[dict[str, Any]]:
    """The top rows with their input values (read from the log for those requests only)."""
    if not worst:
        return []
    names = model.schema.feature_names
    paths = [json_paths(n) for n in names]
    picks = ", ".join(
        "coalesce(" + ", ".join(f"json_extract(inputs, {quote(p)})" for p in spelled) + ")"
        for spelled in paths
    )
    ids = sorted({str(r["request_id"]) for r in worst})
    marks = ", ".join("?" for _ in ids)

    def read(tx: Tx, source: str) -> list[tuple[Any, ...]]:
        return tx.execute(
            f"SELECT request_id, [{picks}] FROM {source} WHERE deployment_id = ?"
            f" AND kind = 'main' AND status = 200 AND logged_at >= ? AND logged_at < ?"
            f" AND request_id IN ({marks})",
            [deployment_id, window.start, window.end, *ids],
        ).rows

    inputs = {
        rid: [orjson.loads(v) if v is not None else None for v in values]
        for rid, values in prediction_log.query(store.workspace, read, inputs=True)
    }
    out = []
    for r in worst:
        columns = inputs.get(r["request_id"], [None] * len(names))
        row = {
            "request_id": r["request_id"],
            "row": int(r["i"]),
            "prediction": r["mv"],
            "confidence": r["confidence"],
            "challenger_prediction": r["cv"],
        }
        for name, values in zip(names, columns, strict=True):
            listed = values if isinstance(values, list) else []
            row[name] = listed[int(r["i"])] if r["i"] < len(listed) else None
        out.append(row)
    return out
