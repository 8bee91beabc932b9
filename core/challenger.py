"""Champion vs challenger over a window of runs, and the swap that makes the challenger main.

Everything is read from the runs' results with DuckDB (`store.with_files`), never by loading a
window into pandas: the main results file holds `challenger_prediction` beside `prediction`,
so agreement, distributions and the rows where the models disagree come from the main files;
the challenger files are joined on `_row` only for the few top rows (their confidence).

Agreement: equal classes for classification; for a regression the predictions agree when they
differ by at most a tolerance (default a tenth of the training predictions' std). The features
whose distributions differ most between agreeing and disagreeing rows are found on the main
model's training buckets (core.drift's counting): PSI and Jensen-Shannon distance between the
two groups' bucket shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from scipy.spatial.distance import jensenshannon

from core import access, audit, deployments, drift
from core.engine.drift_scores import PREDICTION, numeric_buckets, psi
from core.entities import Deployment, Model, Run
from core.errors import Conflict, InvalidInput, Step
from core.runs import result_path
from core.scoring import feature_column
from core.store import Store, Tx, quote_identifier, with_files

DEFAULT_LAST = 10  # runs in a window when none is chosen
TOP_ROWS = 20
HISTOGRAM_BINS = 20
TOLERANCE_SHARE = 0.1  # regression: agree within this share of the training predictions' std
ADD_CHALLENGER_HINT = (
    "Add one: deploy the main model again with a challenger (another model of the same "
    "experiment), then run the deployment."
)


@dataclass(frozen=True)
class RunAgreement:
    """One run: rows, how many the models agree on, the mean absolute difference (regression)."""

    run_id: str
    at: datetime | None
    rows: int
    agreeing: int
    agreement_rate: float
    mean_abs_difference: float | None
    main_model_id: str
    challenger_model_id: str


@dataclass(frozen=True)
class FeatureDifference:
    """A feature's distribution in agreeing vs disagreeing rows, on the training buckets."""

    name: str
    kind: str
    psi: float | None
    distance: float | None  # Jensen-Shannon distance (base 2) between the two groups
    buckets: tuple[str, ...]
    agreeing: tuple[float, ...]  # shares per bucket
    disagreeing: tuple[float, ...]


@dataclass(frozen=True)
class Comparison:
    """Main vs challenger over a window of runs (newest first)."""

    deployment: str
    task: str
    model_id: str  # the newest run's main model: its training buckets are used
    run_ids: tuple[str, ...]
    rows: int
    agreeing: int
    tolerance: float | None  # regression only
    runs: tuple[RunAgreement, ...]
    buckets: tuple[str, ...]  # classes, or histogram bins for a regression
    main: tuple[int, ...]  # window counts per bucket
    challenger: tuple[int, ...]
    per_run: tuple[tuple[str, str, str, int], ...]  # (run id, main|challenger, bucket, rows)
    top: tuple[dict[str, Any], ...]  # the top disagreeing rows
    features: tuple[FeatureDifference, ...]  # most different first
    notes: tuple[str, ...] = ()

    @property
    def agreement_rate(self) -> float:
        return self.agreeing / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["agreement_rate"] = self.agreement_rate
        return data


# ---------------------------------------------------------------------------- windows
def challenger_runs(
    store: Store,
    deployment_name: str,
    *,
    run_id: str | None = None,
    last: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> tuple[list[Run], list[str]]:
    """The window's succeeded runs that scored a challenger (newest first), and notes.

    The last DEFAULT_LAST runs when nothing is said. Raises InvalidInput for an empty window,
    a run with zero rows, or a window where no run had a challenger (saying how to add one).
    """
    if run_id is None and last is None and start is None and end is None:
        last = DEFAULT_LAST
    try:
        found = drift.window_runs(
            store, deployment_name, run_id=run_id, last=last, start=start, end=end
        )
    except InvalidInput as exc:
        raise InvalidInput(
            f"No runs to compare main and challenger on: {exc.message}", exc.hint, step=exc.step
        ) from exc
    usable = [r for r in found if has_challenger(store, r)]
    if not usable:
        raise InvalidInput(
            f"None of the {len(found)} run(s) in the window scored a challenger "
            f"model, so there is nothing to compare.",
            ADD_CHALLENGER_HINT,
            step=Step("deploy-challenger", deployment_name),
        )
    notes = (
        [f"{len(found) - len(usable)} run(s) without a challenger left out"]
        if len(usable) < len(found)
        else []
    )
    return usable, notes


def has_challenger(store: Store, run: Run) -> bool:
    """Whether a run's main results hold challenger predictions (and the files exist)."""
    columns = run.summary.get("columns") or {}
    return bool(
        run.summary.get("challenger")
        and columns.get("challenger")
        and result_path(store.workspace, run.id, "main").exists()
        and result_path(store.workspace, run.id, "challenger").exists()
    )


def file_list(paths: list[str]) -> str:
    """A SQL list literal of our own results paths (core.store encodes list parameters as
    JSON text, which read_parquet cannot take)."""
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def tolerance_of(model: Model, tolerance: float | None) -> float:
    """The regression tolerance: `tolerance` checked, else a share of the training
    predictions' std. Raises InvalidInput for a negative one."""
    if tolerance is not None:
        if not tolerance >= 0:
            raise InvalidInput(
                f"The tolerance must be 0 or more, not {tolerance:g}.",
                "Give the largest difference that still counts as agreeing.",
            )
        return float(tolerance)
    std = (model.profile.get("prediction") or {}).get("std") or 0.0
    return TOLERANCE_SHARE * float(std)


def agree_sql(task: str, tolerance: float | None) -> str:
    """The SQL condition of a row on which main and challenger agree."""
    if task == "regression":
        return f"(abs(prediction - challenger_prediction) <= {float(tolerance or 0.0)!r})"
    return (
        "(CAST(prediction AS VARCHAR) IS NOT DISTINCT FROM CAST(challenger_prediction AS VARCHAR))"
    )


# ---------------------------------------------------------------------------- comparing
def compare(
    store: Store,
    deployment_name: str,
    *,
    run_id: str | None = None,
    last: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    top: int = TOP_ROWS,
    tolerance: float | None = None,
) -> Comparison:
    """Agreement per run, distributions side by side, top disagreeing rows and the features
    that differ most between agreeing and disagreeing rows. Raises like challenger_runs."""
    runs, notes = challenger_runs(
        store, deployment_name, run_id=run_id, last=last, start=start, end=end
    )
    model = drift.run_model(store, runs[0])
    task = model.task
    tol = tolerance_of(model, tolerance) if task == "regression" else None
    agree = agree_sql(task, tol)
    mains = [str(result_path(store.workspace, r.id, "main")) for r in runs]
    challengers = [str(result_path(store.workspace, r.id, "challenger")) for r in runs]
    files = file_list(mains)
    source = f"read_parquet({files}, filename = true, union_by_name = true, can_have_nan = true)"

    def read(tx: Tx) -> tuple[list[dict[str, Any]], tuple[list[Any], list[str]]]:
        per_run = tx.execute(
            f"SELECT list_position({files}, filename) AS i, count(*) AS n, count_if({agree}) AS a,"
            " avg(abs(TRY_CAST(prediction AS DOUBLE) - TRY_CAST(challenger_prediction AS"
            f" DOUBLE))) AS d FROM {source} GROUP BY ALL ORDER BY i"
        ).dicts()
        return per_run, _distributions(tx, task, source, files)

    per_run, (counts, bins) = with_files(read)
    by_index = {row["i"]: row for row in per_run}
    agreements = []
    for i, run in enumerate(runs, start=1):
        row = by_index.get(i, {"n": 0, "a": 0, "d": None})
        agreements.append(
            RunAgreement(
                run.id,
                run.finished_at,
                int(row["n"]),
                int(row["a"]),
                row["a"] / row["n"] if row["n"] else 0.0,
                row["d"] if task == "regression" else None,
                (run.summary.get("main") or {}).get("model_id", ""),
                (run.summary.get("challenger") or {}).get("model_id", ""),
            )
        )
    rows = sum(a.rows for a in agreements)
    agreeing = sum(a.agreeing for a in agreements)
    buckets = bins if task == "regression" else _class_order(model, counts)
    window = {(role, b): 0 for role in ("main", "challenger") for b in buckets}
    for _, role, bucket, n in counts:
        window[(role, bucket)] += n
    top_rows = _top(model, task, agree, mains, challengers, runs, top) if agreeing < rows else []
    features = _feature_differences(model, agree, mains) if 0 < agreeing < rows else []
    if agreeing == rows:
        notes.append("main and challenger agree on every row")
    elif agreeing == 0:
        notes.append("main and challenger disagree on every row: no feature comparison")
    return Comparison(
        runs[0].deployment_name,
        task,
        model.id,
        tuple(r.id for r in runs),
        rows,
        agreeing,
        tol,
        tuple(agreements),
        tuple(buckets),
        tuple(window[("main", b)] for b in buckets),
        tuple(window[("challenger", b)] for b in buckets),
        tuple((runs[i - 1].id, role, bucket, n) for i, role, bucket, n in counts),
        tuple(top_rows),
        tuple(features),
        tuple(notes),
    )


def _distributions(
    tx: Tx, task: str, source: str, files: str
) -> tuple[list[tuple[int, str, str, int]], list[str]]:
    """(run index, role, bucket, rows) and the bins in order (regression): classes, or
    equal-width bins over both models' predictions in the window for a regression."""
    if task != "regression":
        sql = " UNION ALL ".join(
            f"SELECT list_position({files}, filename), '{role}', CAST({column} AS VARCHAR),"
            " count(*)"
            f" FROM {source} GROUP BY ALL"
            for role, column in (("main", "prediction"), ("challenger", "challenger_prediction"))
        )
        rows = tx.execute(sql).rows
        return [(int(i), role, "missing" if b is None else b, int(n)) for i, role, b, n in rows], []
    bounds = ", ".join(
        f"{f}({c}) FILTER (WHERE NOT isnan({c}))"
        for f in ("min", "max")
        for c in ("prediction", "challenger_prediction")
    )
    low_main, low_other, high_main, high_other = tx.execute(f"SELECT {bounds} FROM {source}").rows[
        0
    ]
    low = min((v for v in (low_main, low_other) if v is not None), default=None)
    high = max((v for v in (high_main, high_other) if v is not None), default=None)
    if low is None or high is None:
        return [], []
    bins = HISTOGRAM_BINS if high > low else 1  # constant predictions: one bucket
    edges = np.linspace(float(low), float(high), bins + 1) if bins > 1 else [float(low)]
    width = (float(high) - float(low)) / bins or 1.0
    labels = numeric_buckets(list(edges))[1:-2]
    sql = " UNION ALL ".join(
        f"SELECT list_position({files}, filename), '{role}', least(CAST(floor(({column} - ?)"
        " / ?)"
        f" AS INTEGER), {bins - 1}) AS b, count(*) FROM {source}"
        f" WHERE {column} IS NOT NULL AND NOT isnan({column}) GROUP BY ALL"
        for role, column in (("main", "prediction"), ("challenger", "challenger_prediction"))
    )
    params = [float(low), width] * 2
    rows = tx.execute(sql, params).rows
    return [(int(i), role, labels[int(b)], int(n)) for i, role, b, n in rows], labels


def _class_order(model: Model, counts: list[tuple[int, str, str, int]]) -> list[str]:
    """The model's classes in schema order, then any other prediction met."""
    classes = [str(c) for c in model.schema.classes]
    return classes + sorted({b for _, _, b, _ in counts} - set(classes))


def _top(
    model: Model,
    task: str,
    agree: str,
    mains: list[str],
    challengers: list[str],
    runs: list[Run],
    limit: int,
) -> list[dict[str, Any]]:
    """The disagreeing rows where both models are surest (classification) or differ most."""
    if limit < 1:
        return []
    key = (runs[0].summary.get("columns") or {}).get("key")
    features = [
        c
        for c in (feature_column(model, f, _columns(mains[0])) for f in model.schema.feature_names)
        if c
    ]
    picked = [c for c in features if c and c != key]
    source = "read_parquet({}, filename = true, union_by_name = true, can_have_nan = true)"
    order = (
        "abs(m.prediction - m.challenger_prediction) DESC"
        if task == "regression"
        else "coalesce(m.confidence, 0) + coalesce(c.confidence, 0) DESC"
    )
    ours, theirs = file_list(mains), file_list(challengers)
    sql = (
        f"SELECT m.i, m._row, {f'm.{quote_identifier(key)}, ' if key else ''}"  # what differs first
        "m.prediction, m.confidence, m.challenger_prediction,"
        " c.confidence AS challenger_confidence,"
        f" {''.join(f'm.{quote_identifier(p)}, ' for p in picked)}m.input_quality"
        f" FROM (SELECT list_position({ours}, filename) AS i, * FROM {source.format(ours)}"
        f" WHERE NOT {agree}) m LEFT JOIN (SELECT list_position({theirs}, filename) AS i,"
        f" _row, confidence FROM {source.format(theirs)}) c ON c.i = m.i AND c._row = m._row"
        f" ORDER BY {order}, m.i, m._row LIMIT ?"
    )
    found = with_files(lambda tx: tx.execute(sql, [limit]).dicts())
    return [{"run_id": runs[row.pop("i") - 1].id, **row} for row in found]


def _columns(path: str) -> list[str]:
    names: list[str] = pq.read_schema(path).names
    return names


def _feature_differences(model: Model, agree: str, files: list[str]) -> list[FeatureDifference]:
    """Bucket counts of each feature in agreeing and disagreeing rows (one scan, grouped),
    compared by PSI and Jensen-Shannon distance; the most different first."""
    profile = model.profile
    planned, skipped = drift.count_plan(model, profile, _columns(files[0]))
    planned = [p for p in planned if p[0] != PREDICTION]
    if not planned:
        return []
    aggregates, params = ["count(*)"], list[Any]()
    for _, kind, found, column in planned:
        value = quote_identifier(column)
        if kind == "numeric":
            aggregates += drift.numeric_aggregates(
                f"TRY_CAST({value} AS DOUBLE)", found["edges"], params
            )
        else:
            value = f"CAST({value} AS VARCHAR)"
            aggregates += [f"count({value})", f"histogram({value})"]
    sql = (
        f"SELECT {agree} AS agree, {', '.join(aggregates)} FROM read_parquet("
        f"{file_list(files)}, union_by_name = true, can_have_nan = true) GROUP BY ALL"
    )
    rows = with_files(lambda tx: tx.execute(sql, params).rows)
    groups = {
        bool(row[0]): drift.unpack_counts(list(row[1:]), planned, skipped, model) for row in rows
    }
    if set(groups) != {True, False}:
        return []
    out = []
    for name, kind, found, _ in planned:
        labels, a = _vector(kind, found, groups[True]["features"][name])
        _, b = _vector(kind, found, groups[False]["features"][name])
        sa, sb = a / a.sum() if a.sum() else a, b / b.sum() if b.sum() else b
        score = psi(sa, sb) if a.sum() and b.sum() else None
        distance = float(jensenshannon(sa, sb, base=2)) if a.sum() and b.sum() else None
        out.append(
            FeatureDifference(
                name, kind, score, distance, tuple(labels), tuple(sa.tolist()), tuple(sb.tolist())
            )
        )
    return sorted(out, key=lambda f: -(f.psi or 0.0))


def _vector(
    kind: str, found: dict[str, Any], counts: dict[str, Any]
) -> tuple[list[str], np.ndarray]:
    """A feature's bucket labels and counts (core.drift's buckets, missing included)."""
    if kind == "numeric":
        return numeric_buckets(found["edges"]), np.asarray(
            [counts["below"], *counts["bins"], counts["above"], counts["missing"]], dtype=float
        )
    frequencies = list(found.get("frequencies") or {})
    return [*frequencies, "other", "unseen", "missing"], np.asarray(
        [
            *(counts["categories"].get(k, 0) for k in frequencies),
            counts["other"],
            counts["unseen"],
            counts["missing"],
        ],
        dtype=float,
    )


# ---------------------------------------------------------------------------- swap
def swap(store: Store, name: str, *, actor: str) -> Deployment:
    """Make the challenger the main model and the main model the challenger: a new current
    version, audited (`swap`) in the same transaction, undone by rolling back.

    Raises InvalidInput for a deployment without a challenger (saying how to add one),
    Conflict when the deployment changed meanwhile.
    """
    deployment = deployments.get_deployment(store, name)
    store.read(lambda tx: access.require(tx, actor, deployment.project_id, "swap"))
    current = deployment.current
    if current is None or not current.challenger_model_id:
        raise InvalidInput(
            f"Deployment '{deployment.name}' has no challenger to swap in.",
            ADD_CHALLENGER_HINT,
            step=Step("deploy-challenger", deployment.name),
        )
    deployments.check_models(store, current.challenger_model_id, current.main_model_id)

    def write(tx: Tx) -> None:
        access.require(tx, actor, deployment.project_id, "swap")
        fresh = deployments.load_deployment(tx, deployment.id)
        if fresh is None or fresh.current_version_id != current.id:
            raise Conflict(
                f"Deployment '{deployment.name}' changed while swapping.",
                "Reload it and swap again if the challenger is still the one.",
            )
        version = deployments.add_version(
            tx, deployment.id, current.challenger_model_id or "", current.main_model_id, actor
        )
        audit.record(
            tx,
            actor=actor,
            action="swap",
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            before=deployments.pins(current),
            after=deployments.pins(version),
        )

    store.write(write)
    return deployments.get_deployment(store, deployment.id)


def result_files(store: Store, run: Run) -> dict[str, Path | None]:
    """A run's main and challenger results files (None when absent or purged)."""
    out: dict[str, Path | None] = {}
    for which in ("main", "challenger"):
        path = result_path(store.workspace, run.id, which)
        out[which] = path if run.purged_at is None and path.exists() else None
    return out
