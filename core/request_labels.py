"""True labels keyed by request id: how they meet the API's and the form's answers, read from
the prediction log (core.prediction_log) with DuckDB, never loaded whole into Python.

Every answer carries a request id (the caller's `X-Request-ID` or Open Inference `id`, else a
random one). One request may hold many rows: its logged record keeps the predictions (and the
probabilities) as lists in the order of the request's rows, so a row is addressed by its
0-based position. A label file keyed by request id therefore has a request id column and an
optional row column:
- with a row number, the label is that row's;
- without one (empty or no row column), it is the label of a one-row request; a request of
  several rows then matches nothing and is counted as `ambiguous_labels`.
A request id answered more than once (a caller reusing `X-Request-ID`) is matched with its
latest answer (the count of logged predictions still counts every answer's rows).
Only answered calls (status 200) count. A stored request-keyed file has the columns
`request_id` (text), `row` (BIGINT, NULL for "the only row") and `label`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import challenger, prediction_log
from core.engine.classes import label_texts
from core.engine.pipeline_sql import quote
from core.entities import Model
from core.scoring import proba_name
from core.store import Tx
from core.workspace import Workspace

SHOWN = 5  # unknown request ids named


def is_request_file(path: str) -> bool:
    """Whether a stored label file is keyed by request id (rather than by prediction key)."""
    return "request_id" in pq.read_schema(path).names


def labels_sql(files: list[str]) -> str:
    """The request-keyed labels of `files` (oldest first), the latest file's winning."""
    listed = challenger.file_list(files)
    return (
        f"(SELECT request_id, row, arg_max(label, list_position({listed}, filename)) AS label"
        f" FROM read_parquet({listed}, filename = true) GROUP BY request_id, row)"
    )


def _window(start: datetime | None, end: datetime | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if start is not None:
        clauses.append("logged_at >= ?")
        params.append(start)
    if end is not None:
        clauses.append("logged_at < ?")
        params.append(end)
    return "".join(f" AND {c}" for c in clauses), params


def rows_sql(source: str, kind: str, window: str) -> str:
    """One row per predicted row of a deployment's answered requests of `kind` (main |
    challenger) whose request id is labelled (the query's `labels` CTE: the window function
    and the unnesting then touch only those): request_id, source, n (the request's rows),
    row, prediction and proba (JSON). Parameters: the deployment id, then the window's."""
    return (
        "(SELECT request_id, source, n, i - 1 AS row, p[i] AS prediction, pr[i] AS proba FROM"
        " (SELECT *, generate_subscripts(p, 1) AS i FROM"
        " (SELECT request_id, source, rows AS n,"
        " CAST(json_extract(outputs, '$.predictions') AS JSON[]) AS p,"
        " CAST(json_extract(outputs, '$.probabilities') AS JSON[]) AS pr"
        f" FROM {source} WHERE deployment_id = ? AND kind = {quote(kind)} AND status = 200"
        f"{window} AND request_id IN (SELECT request_id FROM labels)"
        " QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY logged_at DESC) = 1)))"
    )


def counts(row: dict[str, Any]) -> dict[str, int]:
    """The matching counts of a query's labels, matched, predictions and labelled."""
    return {
        "labels": int(row["labels"]),
        "matched_labels": int(row["matched"]),
        "unmatched_labels": int(row["labels"] - row["matched"]),
        "predictions": int(row["predictions"]),
        "predictions_with_label": int(row["labelled"]),
        "predictions_without_label": int(row["predictions"] - row["labelled"]),
    }


JOIN = "p.request_id = l.request_id AND (p.row = l.row OR (l.row IS NULL AND p.n = 1))"


def match(
    workspace: Workspace,
    deployment_id: str,
    files: list[str],
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """Matching counts of request-keyed label `files` against the deployment's logged rows in
    [start, end): the ground_truth counts plus the unknown request ids (examples and count)
    and the labels without a row number whose request had several rows."""
    window, params = _window(start, end)

    def read(tx: Tx, source: str) -> dict[str, Any]:
        preds = rows_sql(source, "main", window)
        sql = (
            f"WITH labels AS MATERIALIZED {labels_sql(files)}, preds AS MATERIALIZED {preds},"
            " requests AS (SELECT DISTINCT request_id, n FROM preds)"
            " SELECT (SELECT count(*) FROM labels) AS labels,"
            f" (SELECT count(*) FROM labels l SEMI JOIN preds p ON {JOIN}) AS matched,"
            f" (SELECT coalesce(sum(rows), 0) FROM {source} WHERE deployment_id = ?"
            f" AND kind = 'main' AND status = 200{window}) AS predictions,"
            f" (SELECT count(*) FROM preds p SEMI JOIN labels l ON {JOIN}) AS labelled,"
            " (SELECT count(*) FROM labels l ANTI JOIN requests r USING (request_id))"
            " AS unknown,"
            " (SELECT count(*) FROM labels l JOIN requests r USING (request_id)"
            " WHERE l.row IS NULL AND r.n > 1) AS ambiguous,"
            " (SELECT list(request_id ORDER BY request_id) FROM (SELECT request_id FROM"
            " labels l ANTI JOIN requests r USING (request_id) GROUP BY 1 ORDER BY 1"
            f" LIMIT {SHOWN})) AS examples"
        )
        return tx.execute(sql, [deployment_id, *params] * 2).first() or {}

    row = prediction_log.query(workspace, read)
    return {
        **counts(row),
        "unknown_requests": int(row["unknown"]),
        "unknown_examples": list(row["examples"] or []),
        "ambiguous_labels": int(row["ambiguous"]),
    }


def matched(
    workspace: Workspace,
    deployment_id: str,
    files: list[str],
    models: dict[str, Model],
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """The labelled logged rows as ground_truth measures a run's: `source`, `label`, and per
    role in `models` its prediction (the class's canonical text, or a number for a regression;
    NULL where the challenger was skipped) and class probabilities (`<role>__proba_<class>`)."""
    window, params = _window(start, end)
    picked = ["p.source AS source", "l.label AS label"]
    joins, args = [], [deployment_id, *params]
    for role, model in models.items():
        alias = "p" if role == "main" else "c"
        value = f"json_extract_string({alias}.prediction, '$')"
        if model.task == "regression":
            value = f"TRY_CAST({value} AS DOUBLE)"
        picked.append(f"{value} AS {role}__prediction")
        if role == "main":
            for cls in model.schema.classes if model.task != "regression" else ():
                path = quote('$."' + str(cls).replace('"', '\\"') + '"')
                name = '"' + f"{role}__{proba_name(cls)}".replace('"', '""') + '"'
                picked.append(f"TRY_CAST(json_extract_string(p.proba, {path}) AS DOUBLE) AS {name}")
        else:
            joins.append(
                "LEFT JOIN {challenger} c ON c.request_id = p.request_id AND c.row = p.row"
            )
            args += [deployment_id, *params]

    def read(tx: Tx, source: str) -> pa.Table:
        tail = " ".join(joins).format(challenger=rows_sql(source, "challenger", window))
        sql = (
            f"WITH labels AS MATERIALIZED {labels_sql(files)}"
            f" SELECT {', '.join(picked)} FROM {rows_sql(source, 'main', window)} p"
            f" JOIN labels l ON {JOIN} {tail} ORDER BY p.source, p.request_id, p.row"
        )
        return tx.arrow(sql, args)

    table = prediction_log.query(workspace, read)
    main = models["main"]
    if main.task == "regression" or table.num_rows == 0:
        return table
    for role in models:  # JSON spells classes its own way (true, 1.0): read as the classes
        column = f"{role}__prediction"
        values = table.column(column).to_numpy(zero_copy_only=False)
        present = np.asarray([v is not None for v in values])
        texts = np.asarray(values, dtype=object)
        if present.any():
            texts[present] = label_texts(values[present].astype(str), main.schema.classes)
        index = table.column_names.index(column)
        table = table.set_column(index, column, pa.array(texts.tolist(), pa.string()))
    return table


def sources(table: pa.Table) -> Sequence[str]:
    """The traffic sources (api, form) of a matched table, in order."""
    return sorted({s for s in table.column("source").to_pylist() if s})
