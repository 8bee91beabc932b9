"""Sinks: copies of a run's main results beyond its own Parquet (a folder, a DuckDB table,
a PostgreSQL table).

Every path is confined to the workspace and the allowed roots, every file is written under a
temporary name and renamed into place, and a DuckDB table is written in one transaction, so a
failing sink leaves the previous state. A failure raises InvalidInput naming the sink.
A PostgreSQL table is written by core/postgres.py (COPY, one transaction); its connection is
looked up in the store (core/connections.py) when the sink is written. The challenger's
predictions go per the sink's `challenger` setting: `columns` (challenger_prediction beside
the main one), `table` (its own results in `<table>_challenger`) or `none`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core import connections
from core.engine import postgres
from core.errors import InvalidInput, ModelDeckError
from core.store import Store, write_duckdb_table
from core.workspace import Workspace, atomic_path

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
FORMATS = ("csv", "parquet")


def copy_as(parquet: Path, target: Path, fmt: str) -> Path:
    """Write a Parquet file's rows to `target` as CSV or Parquet, atomically, batch by batch."""
    if fmt not in FORMATS:
        raise InvalidInput(f"Unknown file format '{fmt}'.", f"Choose one of: {', '.join(FORMATS)}.")
    with atomic_path(target) as tmp:
        if fmt == "parquet":
            shutil.copyfile(parquet, tmp)
        else:
            source = pq.ParquetFile(parquet)
            with pacsv.CSVWriter(tmp, source.schema_arrow) as writer:
                for batch in source.iter_batches(batch_size=100_000):
                    writer.write_batch(batch)
    return target


def write_sinks(
    workspace: Workspace, sinks: list[dict[str, Any]], results: Path, file_stem: str
) -> list[dict[str, Any]]:
    """Write every sink in order; returns what each wrote. Raises InvalidInput on the first
    failure, naming the sink and saying that the run's own results were kept."""
    written = []
    for number, sink in enumerate(sinks, start=1):
        label = f"Sink {number} ({describe(sink)})"
        try:
            written.append(_write_one(workspace, sink, results, file_stem))
        except ModelDeckError as exc:
            raise InvalidInput(
                f"{label} failed: {exc.message}",
                f"{exc.hint} The run's own results were kept.".strip(),
                step=exc.step,
            ) from exc
        except OSError as exc:
            raise InvalidInput(
                f"{label} failed: {exc.strerror or exc} ({exc.filename}).",
                "Check that the folder exists and is writable. The run's own results were kept.",
            ) from exc
    return written


def describe(sink: dict[str, Any]) -> str:
    """'postgres warehouse:public.scores', 'folder exports/scores', ... for messages."""
    if sink.get("kind") == "postgres":
        return f"postgres {sink.get('connection', '?')}:{sink.get('table', '?')}"
    return f"{sink.get('kind', '?')} {sink.get('path', '')}".strip()


def _write_one(
    workspace: Workspace, sink: dict[str, Any], results: Path, file_stem: str
) -> dict[str, Any]:
    kind = sink.get("kind")
    if kind == "folder":
        fmt = sink.get("format", "parquet")
        folder = workspace.output_path(sink["path"])
        folder.mkdir(parents=True, exist_ok=True)
        target = copy_as(results, folder / f"{file_stem}.{fmt}", fmt)
        return {"kind": kind, "path": str(target)}
    if kind == "duckdb_table":
        table, mode = sink.get("table", ""), sink.get("mode", "append")
        if not TABLE_NAME.match(table):
            raise InvalidInput(
                f"'{table}' is not a valid table name.",
                "Use letters, digits and underscores, starting with a letter.",
            )
        if mode not in ("append", "replace"):
            raise InvalidInput(f"Unknown mode '{mode}'.", "Choose 'append' or 'replace'.")
        db_path = workspace.output_path(sink["path"])
        db_path.parent.mkdir(parents=True, exist_ok=True)
        rows = write_duckdb_table(db_path, table, results, replace=mode == "replace")
        return {"kind": kind, "path": str(db_path), "table": table, "mode": mode, "rows": rows}
    if kind == "postgres":
        return write_postgres(workspace, sink, results)
    raise InvalidInput(
        f"Unknown sink kind '{kind}'.", "Use 'folder', 'duckdb_table' or 'postgres'."
    )


def write_postgres(workspace: Workspace, sink: dict[str, Any], results: Path) -> dict[str, Any]:
    """Write the main results (and the challenger's, per the sink) to a PostgreSQL table."""
    conn = connections.for_block(Store.open(workspace), sink)
    kwargs = connections.connect_kwargs(workspace, conn)
    what = f"connection '{conn.name}'"
    table, mode = sink.get("table", ""), sink.get("mode", "append")
    challenger = sink.get("challenger", "columns")
    run_id = results.parent.name  # runs/<run_id>/main.parquet
    own = set() if challenger == "columns" else {"challenger_prediction"}
    targets = [(results, table, own)]
    other = results.with_name("challenger.parquet")
    if challenger == "table" and other.exists():
        targets.append((other, f"{table}_challenger", set()))
    rows = postgres.write_tables(kwargs, targets, mode, run_id, what)
    written = {
        "kind": "postgres",
        "connection": conn.name,
        "table": table,
        "mode": mode,
        "rows": rows[0],
    }
    if len(rows) > 1:
        written.update(challenger_table=targets[1][1], challenger_rows=rows[1])
    return written
