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
from core.monitoring import Window, log_filter
from core.registry import get_model
from core.store import Store, Tx
from core.traffic_drift import EMPTY_HINT, from_json_sql, input_keys

LATE = timedelta(minutes=5)  # a shadow answer logged this long after the window still pairs


def _rows_sql(table: str, columns: str, lists: dict[str, str]) -> str:
    """One row per element of the equal-length `lists` (name -> list column) of `table`, with
    `columns` and i (the 0-based position): one-element lists (one-row requests, most calls)
    without the cost of unnest."""
    first = ", ".join(f"{c}[1] AS {name}" for name, c in lists.items())
    every = ", ".join(f"unnest({c}) AS {name}" for name, c in lists.items())
    count = f"len({next(iter(lists.values()))})"
    return (
        f"SELECT {columns}, {first}, 0 AS i FROM {table} WHERE {count} = 1 UNION ALL"
        f" SELECT {columns}, {every}, unnest(range({count})) AS i FROM {table}"
        f" WHERE {count} <> 1"
    )


def _pairs_sql(model: Model, where: str, bucket: str, agree: str) -> str:
    """CTEs over `{log}`: `m` (the window's main rows: b, request_id, i, mv, confidence),
    `c` (the latest shadow answer of each request, a row each: request_id, i, cv) and `j`
    (paired rows and whether they agree: ok)."""
    kind = "DOUBLE" if model.task == "regression" else "VARCHAR"
    fields: dict[str, Any] = {"predictions": kind}
    lists = {"mv": "o.predictions"}
    classes = [str(c) for c in model.schema.classes] if model.task != "regression" else []
    if classes:  # a struct of the classes parses ~30x faster than a MAP (measured on 1M)
        fields["probabilities"] = dict.fromkeys(classes, "DOUBLE")
        surest = ", ".join(f"struct_extract(x, {quote(c)})" for c in classes)
        lists["confidence"] = f"list_transform(o.probabilities, lambda x: greatest({surest}))"
    parsed = from_json_sql("outputs", fields)
    shadow = from_json_sql("outputs", {"predictions": kind})
    main = _rows_sql("mo", "request_id, b" + ("" if classes else ", NULL AS confidence"), lists)
    return (
        f"WITH mo AS MATERIALIZED (SELECT request_id, date_trunc('{bucket}', logged_at) AS b,"
        f" {parsed} AS o FROM {{log}} WHERE deployment_id = ? AND kind = 'main'{where}),"
        f" m AS ({main}),"
        f" co AS MATERIALIZED (SELECT request_id, arg_max({shadow}.predictions, logged_at) AS p"
        " FROM {log} WHERE deployment_id = ? AND kind = 'challenger' AND status = 200"
        " AND logged_at >= ? AND logged_at < ? GROUP BY request_id),"
        f" c AS ({_rows_sql('co', 'request_id', {'cv': 'p'})}),"
        f" j AS MATERIALIZED (SELECT b, request_id, i, mv, cv, confidence, {agree} AS ok FROM m"
        " JOIN c USING (request_id, i) WHERE cv IS NOT NULL)"
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
    tol = challenger.tolerance_of(model, tolerance) if task == "regression" else None
    agree = (
        f"abs(mv - cv) <= {float(tol or 0.0)!r}"
        if task == "regression"
        else "mv IS NOT DISTINCT FROM cv"
    )
    where, args = log_filter(window)
    order = "abs(mv - cv) DESC" if task == "regression" else "confidence DESC NULLS LAST"
    worst = (
        "w AS (SELECT request_id, i, mv, cv, confidence FROM j WHERE NOT ok"
        f" ORDER BY {order}, request_id, i LIMIT {int(top)})"
    )
    head = _pairs_sql(model, where, window.bucket, agree) + ", " + worst
    params = [deployment.id, *args, deployment.id, window.start, window.end + LATE]

    def read(tx: Tx, source: str) -> tuple[Any, ...]:
        found = tx.execute((head + _summary_sql(task)).replace("{log}", source), params).rows
        main_rows = tx.execute(
            f"SELECT coalesce(sum(rows), 0) FROM {source} WHERE deployment_id = ?"
            f" AND kind = 'main'{where}",
            [deployment.id, *args],
        ).rows[0][0]
        return found, int(main_rows)

    found, main_rows = prediction_log.query(store.workspace, read)
    if not found:
        raise _nothing_paired(
            deployment.name, main_rows, bool(deployment.current.challenger_model_id)
        )
    per_bucket: dict[Any, list[float]] = {}
    for b, _, _, n, a, d, *_ in found:
        into = per_bucket.setdefault(b, [0, 0, 0.0])
        into[0], into[1], into[2] = into[0] + n, into[1] + a, into[2] + (d or 0.0)
    shares = _shares(task, found)
    worst_rows = sorted(
        (dict(r) for r in found[0][6] or []),
        key=lambda r: (
            -abs(r["mv"] - r["cv"]) if task == "regression" else -(r["confidence"] or -1.0),
            r["request_id"],
            r["i"],
        ),
    )
    current = deployment.current
    buckets = tuple(
        challenger.RunAgreement(
            f"{b:%Y-%m-%d %H:%M}",
            b,
            int(n),
            int(a),
            a / n if n else 0.0,
            d / n if task == "regression" and n else None,
            current.main_model_id,
            current.challenger_model_id or "",
        )
        for b, (n, a, d) in sorted(per_bucket.items(), reverse=True)
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
        tuple(_with_inputs(store, model, deployment.id, worst_rows, window)),
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


def _summary_sql(task: str) -> str:
    """The one SELECT after the CTEs: per bucket (and per pair of classes for a
    classification) rows, agreeing rows and the sum of absolute differences, then the top
    disagreeing rows (the same list on every row) and, for a regression, both models'
    histograms on 20 equal-width bins over both models' predictions (with the bounds)."""
    top = "(SELECT list(w) FROM w)"  # in no order: sorted again by the caller
    if task != "regression":
        return f" SELECT b, mv, cv, count(*), count_if(ok), NULL, {top} FROM j GROUP BY b, mv, cv"
    bins = challenger.HISTOGRAM_BINS
    index = (
        "least(CAST(floor(({x} - lo) / (CASE WHEN hi > lo THEN hi - lo ELSE 1 END)"
        f" * {bins}) AS BIGINT), {bins - 1})"
    )
    return (
        ", r AS (SELECT least(min(mv) FILTER (WHERE isfinite(mv)), min(cv) FILTER (WHERE"
        " isfinite(cv))) AS lo, greatest(max(mv) FILTER (WHERE isfinite(mv)), max(cv) FILTER"
        " (WHERE isfinite(cv))) AS hi FROM j)"
        " SELECT b, NULL, NULL, count(*), count_if(ok), sum(abs(mv - cv)), "
        f"{top}, histogram({index.format(x='mv')}) FILTER (WHERE isfinite(mv)),"
        f" histogram({index.format(x='cv')}) FILTER (WHERE isfinite(cv)),"
        " any_value(lo), any_value(hi) FROM j, r GROUP BY b"
    )


def _shares(task: str, found: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(role, value or bin, rows[, lo, hi]) from the summary rows, as _distributions reads."""
    if task != "regression":
        out: dict[tuple[str, Any], int] = {}
        for _, mv, cv, n, *_ in found:
            out[("main", mv)] = out.get(("main", mv), 0) + int(n)
            out[("challenger", cv)] = out.get(("challenger", cv), 0) + int(n)
        return [(role, v, n) for (role, v), n in out.items()]
    rows = []
    for *_, main, other, lo, hi in found:
        for role, histogram in (("main", main), ("challenger", other)):
            rows += [(role, k, n, lo, hi) for k, n in (histogram or {}).items()]
    return rows


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
    ids = sorted({str(r["request_id"]) for r in worst})
    marks = ", ".join("?" for _ in ids)

    def read(tx: Tx, source: str) -> list[tuple[Any, ...]]:
        return tx.execute(
            f"SELECT request_id, CAST(inputs AS VARCHAR) FROM {source} WHERE deployment_id = ?"
            " AND kind = 'main' AND status = 200 AND logged_at >= ? AND logged_at < ?"
            f" AND request_id IN ({marks})",
            [deployment_id, window.start, window.end, *ids],
        ).rows

    inputs = {
        rid: orjson.loads(text) if text else {}
        for rid, text in prediction_log.query(store.workspace, read, inputs=True)
    }
    out = []
    for r in worst:
        columns = inputs.get(r["request_id"], {})
        row = {
            "request_id": r["request_id"],
            "row": int(r["i"]),
            "prediction": r["mv"],
            "confidence": r["confidence"],
            "challenger_prediction": r["cv"],
        }
        for name in model.schema.feature_names:
            values = next((columns[k] for k in input_keys(name) if k in columns), None)
            listed = values if isinstance(values, list) else []
            row[name] = listed[int(r["i"])] if r["i"] < len(listed) else None
        out.append(row)
    return out
