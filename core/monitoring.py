"""Monitoring queries (issue 18 item 7): one deployment's traffic and predictions over a window.

A window is [start, end), cut into `hour` or `day` buckets, over one source: `api` and `form`
(answered calls in the prediction log, status 200), `calls` (both), `run` (the deployment's
succeeded runs, validations excepted, by the time they finished), or `all`. Everything is
computed by DuckDB: the prediction log through `prediction_log.query` (compacted Parquet +
open and closed segments; a request's predictions are unnested from its JSON list), runs from
their results Parquet; only the aggregates come back. Buckets are UTC, like every stored time.

- `traffic`: per bucket and source, requests (a run counts as one) and rows predicted.
- `distributions`: main and challenger predictions side by side: class shares for a
  classification (labels read the way the model's classes are typed, core.engine.classes),
  for a regression a histogram on shared equal-width edges between the window's smallest and
  largest prediction.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq

from core import prediction_log
from core.deployments import get_deployment
from core.engine.classes import label_texts
from core.entities import Deployment
from core.errors import InvalidInput
from core.registry import get_model
from core.runs import result_path
from core.segments import file_list
from core.store import Store, Tx, with_files

BUCKETS = ("hour", "day")
SOURCES = ("api", "form", "calls", "run", "all")
BINS = 20
LOGGED = ("api", "form")


@dataclass(frozen=True)
class Window:
    """[start, end) in `bucket`s over `source`; checked on creation."""

    start: datetime
    end: datetime
    bucket: str = "hour"
    source: str = "all"

    def __post_init__(self) -> None:
        if self.bucket not in BUCKETS:
            raise InvalidInput(
                f"A bucket is an hour or a day, not '{self.bucket}'.", "Use hour or day."
            )
        if self.source not in SOURCES:
            raise InvalidInput(
                f"The source is one of {', '.join(SOURCES)}, not '{self.source}'.",
                "Choose api, form, calls (both), run or all.",
            )
        if self.end <= self.start:
            raise InvalidInput("The window ends before it starts.", "Give an end after the start.")

    @property
    def logged(self) -> list[str]:
        """The prediction log's sources in this window."""
        return [s for s in LOGGED if self.source in (s, "calls", "all")]

    @property
    def has_runs(self) -> bool:
        return self.source in ("run", "all")


@dataclass(frozen=True)
class Distributions:
    """Main and challenger predictions of a window: `kind` "classes" (labels) or "histogram"
    (labels are bin ranges, `edges` their bounds); counts per label and role."""

    task: str
    kind: str
    labels: tuple[str, ...]
    main: tuple[int, ...]
    challenger: tuple[int, ...]
    edges: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_filter(window: Window) -> tuple[str, list[Any]]:
    """The WHERE tail of a window's answered calls (main or challenger) and its parameters."""
    marks = ", ".join("?" for _ in window.logged)
    return (
        f" AND status = 200 AND logged_at >= ? AND logged_at < ? AND source IN ({marks})",
        [window.start, window.end, *window.logged],
    )


def _runs(store: Store, deployment: Deployment, window: Window) -> list[dict[str, Any]]:
    """The window's succeeded runs (not validations) with results: id, finished_at, rows."""
    if not window.has_runs:
        return []
    found = store.query(
        "SELECT id, finished_at, coalesce(rows_out, 0) AS rows FROM runs"
        " WHERE deployment_id = ? AND status = 'succeeded' AND trigger <> 'validation'"
        " AND finished_at >= ? AND finished_at < ? ORDER BY finished_at",
        [deployment.id, window.start, window.end],
    ).dicts()
    return [r for r in found if result_path(store.workspace, r["id"]).exists()]


def traffic(store: Store, name: str, window: Window) -> list[dict[str, Any]]:
    """Per bucket (its start) and source: requests and rows, oldest first; buckets without
    traffic are left out."""
    deployment = get_deployment(store, name)
    counts: dict[tuple[datetime, str], list[int]] = defaultdict(lambda: [0, 0])
    if window.logged:
        where, params = log_filter(window)

        def read(tx: Tx, source: str) -> list[tuple[Any, ...]]:
            return tx.execute(
                f"SELECT date_trunc('{window.bucket}', logged_at) AS b, source, count(*),"
                f" sum(rows) FROM {source} WHERE deployment_id = ? AND kind = 'main'{where}"
                " GROUP BY 1, 2",
                [deployment.id, *params],
            ).rows

        for bucket, source, requests, rows in prediction_log.query(store.workspace, read):
            counts[(bucket, source)] = [int(requests), int(rows or 0)]
    if window.has_runs:
        for run in _runs(store, deployment, window):
            at = run["finished_at"].replace(minute=0, second=0, microsecond=0)
            if window.bucket == "day":
                at = at.replace(hour=0)
            counts[(at, "run")][0] += 1
            counts[(at, "run")][1] += int(run["rows"])
    return [
        {"bucket": b, "source": s, "requests": n, "rows": r}
        for (b, s), (n, r) in sorted(counts.items())
    ]


def _values_sql(
    store: Store, deployment: Deployment, window: Window, value: str
) -> tuple[str, list[Any]]:
    """A SELECT of (role, v) over the window's predictions, `value` turning `p` (a logged
    prediction as text) into v, with `{log}` standing for the prediction log's source; and
    its parameters."""
    parts, params = [], []
    if window.logged:
        where, args = log_filter(window)
        parts.append(
            f"SELECT kind AS role, {value} AS v FROM (SELECT kind, unnest(json_extract_string("
            "outputs, '$.predictions[*]')) AS p FROM {log}"
            f" WHERE deployment_id = ?{where})"
        )
        params += [deployment.id, *args]
    files = [str(result_path(store.workspace, r["id"])) for r in _runs(store, deployment, window)]
    typed = "CAST({c} AS DOUBLE)" if "DOUBLE" in value else "CAST({c} AS VARCHAR)"
    if files:
        parts.append(
            f"SELECT 'main' AS role, {typed.format(c='prediction')} AS v"
            f" FROM read_parquet({file_list(files)}, union_by_name = true)"
        )
        with_challenger = [f for f in files if "challenger_prediction" in pq.read_schema(f).names]
        if with_challenger:
            parts.append(
                f"SELECT 'challenger' AS role, {typed.format(c='challenger_prediction')} AS v"
                f" FROM read_parquet({file_list(with_challenger)}, union_by_name = true)"
                " WHERE challenger_prediction IS NOT NULL"
            )
    if not parts:
        parts.append("SELECT NULL::VARCHAR AS role, NULL AS v WHERE false")
    return " UNION ALL ".join(parts), params


def distributions(store: Store, name: str, window: Window, *, bins: int = BINS) -> Distributions:
    """Main and challenger predictions of the window (see the module doc)."""
    deployment = get_deployment(store, name)
    if deployment.current is None:
        raise InvalidInput(
            f"Deployment '{deployment.name}' has no model yet.", "Deploy a model first."
        )
    model = get_model(store, deployment.current.main_model_id)
    if model.task == "regression":
        return _histogram(store, deployment, window, bins)
    sql, params = _values_sql(store, deployment, window, "p")

    def read(tx: Tx, source: str) -> list[tuple[Any, ...]]:
        return tx.execute(
            f"SELECT role, v, count(*) FROM ({sql.format(log=source)}) WHERE v IS NOT NULL"
            " GROUP BY 1, 2",
            params,
        ).rows

    found = _read(store, window, read)
    classes = model.schema.classes
    shares: dict[str, dict[str, int]] = {"main": defaultdict(int), "challenger": defaultdict(int)}
    if found:
        texts = label_texts([str(v) for _, v, _ in found], classes)
        for (role, _, n), text in zip(found, texts, strict=True):
            shares[role][str(text)] += int(n)
    known = [str(t) for t in label_texts([str(c) for c in classes], classes)] if classes else []
    labels = known + sorted({t for r in shares.values() for t in r} - set(known))
    return Distributions(
        model.task,
        "classes",
        tuple(labels),
        tuple(shares["main"][c] for c in labels),
        tuple(shares["challenger"][c] for c in labels),
    )


def _read(store: Store, window: Window, read: Any) -> Any:
    """`read(tx, log)` over the log when the window has logged sources, else over nothing."""
    if window.logged:
        return prediction_log.query(store.workspace, read)
    return with_files(lambda tx: read(tx, ""))


def _histogram(store: Store, deployment: Deployment, window: Window, bins: int) -> Distributions:
    value = "TRY_CAST(p AS DOUBLE)"
    sql, params = _values_sql(store, deployment, window, value)

    def read(tx: Tx, source: str) -> list[tuple[Any, ...]]:
        return tx.execute(
            f"WITH v AS MATERIALIZED (SELECT role, v FROM ({sql.format(log=source)})"
            " WHERE v IS NOT NULL AND isfinite(v)), r AS (SELECT min(v) AS lo, max(v) AS hi FROM v)"
            f" SELECT role, least(CAST(floor((v - lo) / (CASE WHEN hi > lo THEN hi - lo ELSE 1 END)"
            f" * {bins}) AS BIGINT), {bins - 1}) AS b, count(*), any_value(lo), any_value(hi)"
            " FROM v, r GROUP BY 1, 2",
            params,
        ).rows

    found = _read(store, window, read)
    if not found:
        return Distributions(deployment_task(store, deployment), "histogram", (), (), ())
    lo, hi = float(found[0][3]), float(found[0][4])
    width = (hi - lo) / bins if hi > lo else 1.0 / bins
    edges = tuple(lo + i * width for i in range(bins + 1))
    counts = {"main": [0] * bins, "challenger": [0] * bins}
    for role, b, n, _, _ in found:
        counts[role][int(b)] += int(n)
    labels = tuple(f"{edges[i]:.4g} to {edges[i + 1]:.4g}" for i in range(bins))
    return Distributions(
        "regression", "histogram", labels, tuple(counts["main"]), tuple(counts["challenger"]), edges
    )


def deployment_task(store: Store, deployment: Deployment) -> str:
    assert deployment.current is not None
    return get_model(store, deployment.current.main_model_id).task
