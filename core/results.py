"""Run results: pages, summary, downloads and purge, read straight from the Parquet files.

Pages are sorted and filtered by a private in-memory DuckDB over `runs/<id>/<which>.parquet`
(`read_parquet`), so a 1,000,000-row run opens as fast as a 1,000-row one and the store's lock
is never touched by a reader. SQL is built from a whitelist of the file's own column names and
parameters; no user text is ever put into the query.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core import access, audit, runs
from core.entities import Run
from core.errors import Conflict, DamagedResults, InvalidInput, NotFound
from core.runs import get_run, result_path, results_dir
from core.sinks import FORMATS, copy_as
from core.store import Store, Tx, quote_identifier, with_files

WHICH = ("main", "challenger")
MAX_PAGE = 10_000
FILTERS = {
    "prediction": "=",
    "confidence": ">=",
    "input_quality": ">=",
    "spread_at_most": "<=",
}  # a regression forest's `confidence`: its trees' spread
FILTER_COLUMNS = {"spread_at_most": "confidence"}


def _readable(store: Store, run_id: str, which: str) -> tuple[Run, Path]:
    """The run and its results file; raises when there are no results to read."""
    if which not in WHICH:
        raise InvalidInput(f"Unknown results '{which}'.", f"Choose one of: {', '.join(WHICH)}.")
    run = get_run(store, run_id)
    if run.purged_at is not None:
        raise Conflict(
            f"The results of run {run.id} were purged on {run.purged_at:%Y-%m-%d %H:%M} UTC.",
            "Its summary and metrics remain; run the deployment again for new rows.",
        )
    if run.status in ("queued", "running"):
        raise Conflict(
            f"Run {run.id} is still {run.status}; its results appear when it ends.",
            "Wait for it to finish.",
        )
    if not run.summary.get("results_written"):
        reason = f": {run.error}" if run.error else "."
        raise Conflict(
            f"Run {run.id} {run.status} without results{reason}",
            "Fix the cause and run the deployment again.",
        )
    path = result_path(store.workspace, run.id, which)
    if which == "challenger" and not path.exists():
        raise NotFound(
            "challenger results", run.id, "This run had no challenger model; open the main results."
        )
    if not path.exists():
        raise NotFound("results file", str(path), "The files were removed outside ModelDeck.")
    if not run.rows_out:
        raise InvalidInput(f"Run {run.id} produced no rows.", "There is nothing to show.")
    check_intact(run, path)
    return run, path


def check_intact(run: Run, path: Path) -> None:
    """Raise DamagedResults unless `path` is a whole Parquet file of the run's rows (its footer
    read, ~0.1 ms): a truncated or overwritten file is named, not an ArrowInvalid later."""
    try:
        rows = pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DamagedResults(run.id, str(exc).strip().splitlines()[0][:200]) from exc
    if run.rows_out is not None and rows != run.rows_out:
        raise DamagedResults(run.id, f"it holds {rows:,} rows, the run wrote {run.rows_out:,}")


def readable(store: Store, run_id: str, which: str = "main") -> tuple[Run, Path]:
    """The run and its results file; raises Conflict/NotFound/InvalidInput when there are no
    results to read (queued, running, failed, purged, no rows, no challenger)."""
    return _readable(store, run_id, which)


def columns(store: Store, run_id: str, which: str = "main") -> list[str]:
    """The result columns of a run, in file order (reads the Parquet footer only)."""
    _, path = _readable(store, run_id, which)
    names: list[str] = pq.read_schema(path).names
    return names


def page(
    store: Store,
    run_id: str,
    *,
    which: str = "main",
    offset: int = 0,
    limit: int = 50,
    sort_by: str | None = None,
    descending: bool = False,
    where: dict[str, Any] | None = None,
    columns: list[str] | None = None,
) -> tuple[pd.DataFrame, int]:
    """One page of a run's results and the number of rows matching `where`.

    `where` may hold `prediction` (a value, or a list of values), `confidence` and
    `input_quality` (minimums, inclusive). Rows keep file order unless `sort_by` names a
    column. `columns` limits the columns read (hidden columns are not even fetched). Raises
    InvalidInput for an unknown column or filter, Conflict for a run without results
    (failed, queued, purged).
    """
    _, path = _readable(store, run_id, which)
    schema = pq.read_schema(path)
    for name in [*([sort_by] if sort_by is not None else []), *(columns or [])]:
        if name not in schema.names:
            raise InvalidInput(
                f"The results have no column '{name}'.", f"Choose from: {', '.join(schema.names)}."
            )
    selected = ", ".join(quote_identifier(c) for c in columns) if columns else "*"
    if not 0 <= offset or not 0 < limit <= MAX_PAGE:
        raise InvalidInput(
            f"A page needs offset >= 0 and 0 < limit <= {MAX_PAGE}.", "Ask for a smaller page."
        )
    clause, params = _where(where or {}, schema)
    source = "read_parquet(?)"
    order = ""
    if sort_by is not None:
        direction = "DESC" if descending else "ASC"
        order = f" ORDER BY {quote_identifier(sort_by)} {direction} NULLS LAST, _row"

    def read(tx: Tx) -> tuple[pa.Table, int]:
        total = tx.execute(f"SELECT count(*) FROM {source}{clause}", [str(path), *params]).scalar()
        table = tx.arrow(
            f"SELECT {selected} FROM {source}{clause}{order} LIMIT ? OFFSET ?",
            [str(path), *params, limit, offset],
        )
        return table, int(total)

    table, total = with_files(read)
    return table.to_pandas(), total


def _where(where: dict[str, Any], schema: pa.Schema) -> tuple[str, list[Any]]:
    unknown = sorted(set(where) - set(FILTERS))
    if unknown:
        raise InvalidInput(f"Cannot filter on '{unknown[0]}'.", f"Filters: {', '.join(FILTERS)}.")
    parts, params = [], []
    for name, value in where.items():
        column = FILTER_COLUMNS.get(name, name)
        if value is None or column not in schema.names:
            continue
        if name == "prediction":
            values = value if isinstance(value, list | tuple | set) else [value]
            values = [_coerce(v, schema.field(name).type) for v in values]
            if not values:
                continue
            parts.append(f"prediction IN ({', '.join('?' * len(values))})")
            params += values
        else:
            parts.append(f"{quote_identifier(column)} {FILTERS[name]} ?")
            params.append(_number(value, name))
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def _coerce(value: Any, kind: pa.DataType) -> Any:
    """A filter value in the prediction column's type ("1" for an integer class is 1)."""
    try:
        if pa.types.is_integer(kind):
            return int(float(value))
        if pa.types.is_floating(kind):
            return float(value)
        if pa.types.is_boolean(kind):
            return str(value).lower() in ("true", "1", "yes")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"'{value}' is not a possible prediction.", "Choose a value from the class list."
        ) from exc
    return str(value)


def _number(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"The {name} filter needs a number, not '{value}'.",
            "Give a number (confidence and input quality are between 0 and "
            "1; a spread is in the target's unit).",
        ) from exc


def value_range(
    store: Store, run_id: str, column: str, which: str = "main"
) -> tuple[float, float] | None:
    """(min, max) of a numeric result column (None when it holds no number), for a filter
    on the column's own scale."""
    _, path = _readable(store, run_id, which)
    if column not in pq.read_schema(path).names:
        raise InvalidInput(f"The results have no column '{column}'.", "Choose another column.")
    quoted = quote_identifier(column)
    row = with_files(
        lambda tx: tx.execute(
            f"SELECT min({quoted}) AS lo, max({quoted}) AS hi FROM read_parquet(?)"
            f" WHERE NOT isnan({quoted})",
            [str(path)],
        ).first()
    )
    if not row or row["lo"] is None:
        return None
    return float(row["lo"]), float(row["hi"])


def summary(store: Store, run_id: str) -> dict[str, Any]:
    """A finished run's box metrics (its summary JSON, with status, rows and times).

    Stays available after a purge. Raises Conflict for a run that has not finished.
    """
    run = get_run(store, run_id)
    if not run.is_finished:
        raise Conflict(f"Run {run.id} is still {run.status}.", "Wait for it to finish.")
    return {
        **run.summary,
        "run_id": run.id,
        "status": run.status,
        "error": run.error,
        "rows": run.rows_out or 0,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "purged_at": run.purged_at,
    }


def export(store: Store, run_id: str, fmt: str, which: str = "main") -> Path:
    """A file of the run's results to download: the Parquet itself, or a CSV written once
    beside it (atomically)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"Cannot export as '{fmt}'.", f"Choose one of: {', '.join(FORMATS)}.")
    _, path = _readable(store, run_id, which)
    if fmt == "parquet":
        return path
    target = path.with_suffix(".csv")
    return target if target.exists() else copy_as(path, target, "csv")


def purge(store: Store, run_id: str, *, actor: str) -> Run:
    """Delete a finished run's result files and mark it purged; audited. Idempotent.

    The metadata changes first (one transaction with the audit entry), then the files go, so
    no reader is ever sent to a file that is gone. Raises Conflict for an unfinished run.
    """
    run = get_run(store, run_id)
    store.read(lambda tx: access.require(tx, actor, run.project_id, "purge"))
    if not run.is_finished:
        raise Conflict(
            f"Run {run.id} is still {run.status}.",
            "Wait for it to finish (or delete the deployment to cancel it).",
        )
    if run.purged_at is None:

        def write(tx: Tx) -> None:
            access.require(tx, actor, run.project_id, "purge")
            runs.mark_purged(tx, run.id)
            audit.record(
                tx,
                actor=actor,
                action="purge",
                deployment_id=run.deployment_id,
                deployment_name=run.deployment_name,
                before={"run": run.id, "rows": run.rows_out},
                after=None,
            )

        store.write(write)
    shutil.rmtree(results_dir(store.workspace, run.id), ignore_errors=True)
    return get_run(store, run.id)
