"""PostgreSQL through psycopg: connect, read a query as Arrow batches, write a table by COPY.

DuckDB's postgres extension cannot be installed offline (DESIGN.md, traps), so psycopg 3 does
the talking. A source query runs in a READ ONLY transaction on a server-side cursor and comes
back in Arrow batches typed from the cursor's description, so it streams into the pipeline like
a file source. A sink table is written with COPY (CSV text, produced by Arrow batch by batch
from the results Parquet), and create / append / replace happen in one transaction, so a
failure leaves the table as it was. PostgreSQL's errors come back as ModelDeckErrors quoting
its message.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.types.numeric import FloatLoader

from core.errors import InvalidInput, PipelineError, Step

CONNECT_TIMEOUT = 5
TABLE_MODES = ("create", "append", "replace")
CHALLENGER_MODES = ("columns", "table", "none")
RUN_ID_COLUMN = "run_id"
SOURCE_KEYS = ("kind", "connection", "sql", "project")
SINK_KEYS = ("kind", "connection", "table", "mode", "challenger", "project")
CONNECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Arrow types of PostgreSQL's built-in type OIDs; anything else is read as text.
_ARROW = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
    26: pa.int64(),
    700: pa.float64(),
    701: pa.float64(),
    1700: pa.float64(),
    25: pa.string(),
    1042: pa.string(),
    1043: pa.string(),
    19: pa.string(),
    18: pa.string(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1083: pa.time64("us"),
}


# ---------------------------------------------------------------------------- pipeline blocks
def _block_fields(block: Any, allowed: tuple[str, ...], label: str, name: str) -> str:
    """Unknown fields refused, the connection name checked; returns that name."""
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise PipelineError(
            f"{label} has unknown field(s): {', '.join(map(str, unknown))}.",
            f"Allowed fields: {', '.join(allowed)}.",
            name,
        )
    conn = block.get("connection")
    if not isinstance(conn, str) or not CONNECTION_NAME.match(conn):
        raise PipelineError(
            f"{label} names no valid connection ({conn!r}).",
            'Add a connection and give its name, e.g. "connection": "warehouse".',
            name,
            step=Step("add-connection"),
        )
    return conn


def _project(block: dict[str, Any]) -> dict[str, str]:
    return {"project": str(block["project"])} if block.get("project") else {}


def check_source_block(block: dict[str, Any]) -> dict[str, str]:
    """A postgres source block normalised: {kind, connection, sql[, project]}."""
    conn = _block_fields(block, SOURCE_KEYS, "The postgres source", "source")
    query = strip_query(block.get("sql"), source_label(block))
    return {"kind": "postgres", "connection": conn, "sql": query, **_project(block)}


def check_sink_block(block: dict[str, Any], label: str, name: str) -> dict[str, str]:
    """A postgres sink block normalised: {kind, connection, table, mode, challenger[, project]}."""
    conn = _block_fields(block, SINK_KEYS, label, name)
    mode, challenger = block.get("mode") or "append", block.get("challenger") or "columns"
    try:
        table = ".".join(table_name(block.get("table")))
    except InvalidInput as exc:
        raise PipelineError(f"{label}: {exc.message}", exc.hint, name, step=exc.step) from exc
    for value, allowed, what in (
        (mode, TABLE_MODES, "mode"),
        (challenger, CHALLENGER_MODES, "challenger setting"),
    ):
        if value not in allowed:
            raise PipelineError(
                f"{label} has an unknown {what} {value!r}.",
                f"Choose one of: {', '.join(allowed)}.",
                name,
            )
    return {
        "kind": "postgres",
        "connection": conn,
        "table": table,
        "mode": mode,
        "challenger": challenger,
        **_project(block),
    }


def source_label(block: dict[str, Any]) -> str:
    return f"The source query (PostgreSQL connection '{block.get('connection')}')"


# ---------------------------------------------------------------------------- connecting
def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connection_error(exc: psycopg.Error, what: str, where: str) -> InvalidInput:
    """A failed connect as a message saying which connection and why, with what to check."""
    text = str(exc)
    if "password authentication failed" in text or "no password supplied" in text:
        return InvalidInput(
            f"PostgreSQL refused the password of {what} ({where}): {_reason(text)}",
            "Check the user and the password (set the environment variable again, or "
            "replace the connection).",
            step=Step("replace-connection"),
        )
    return InvalidInput(
        f"PostgreSQL is unreachable for {what} ({where}): {_reason(text)}",
        "Check that the server is running and that host, port and sslmode are "
        "right, then test the connection again.",
        step=Step("test-connection"),
    )


def _reason(text: str) -> str:
    """psycopg's 'connection failed: connection to server at … failed: <reason>' -> reason."""
    line = text.strip().splitlines()[0] if text.strip() else "no reason given"
    return line.rsplit(" failed: ", 1)[-1]


@contextlib.contextmanager
def connect(
    kwargs: dict[str, Any], what: str, *, read_only: bool = False
) -> Iterator[psycopg.Connection]:
    """A psycopg connection (closed at the end; never autocommit: the caller commits)."""
    where = f"{kwargs.get('user')}@{kwargs.get('host')}:{kwargs.get('port')}"
    try:
        con = psycopg.connect(
            **kwargs, connect_timeout=CONNECT_TIMEOUT, application_name="modeldeck"
        )
    except psycopg.Error as exc:
        raise connection_error(exc, what, where) from exc
    try:
        con.read_only = read_only
        con.adapters.register_loader("numeric", FloatLoader)  # models want floats
        yield con
    finally:
        con.close()


def ping(kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """Connect and ask the server's version; raises InvalidInput like `connect`."""
    started = time.perf_counter()
    with connect(kwargs, what, read_only=True) as con:
        version = con.execute("SHOW server_version").fetchone()
    return {
        "ok": True,
        "server_version": version[0] if version else "?",
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------------------- reading
def arrow_schema(description: Any) -> pa.Schema:
    """The Arrow schema of a cursor's columns (unknown PostgreSQL types as text)."""
    return pa.schema([(c.name, _ARROW.get(c.type_code, pa.string())) for c in description])


def _column(values: list[Any], kind: pa.DataType) -> pa.Array:
    if kind == pa.string():
        values = [
            v
            if v is None or isinstance(v, str)
            else json.dumps(v)
            if isinstance(v, dict | list)
            else str(v)
            for v in values
        ]
    return pa.array(values, type=kind)


def strip_query(text: Any, label: str) -> str:
    """The query without trailing semicolons; refuses an empty one (PipelineError)."""
    query = text.strip().rstrip(";").strip() if isinstance(text, str) else ""
    if not query:
        raise PipelineError(
            f"{label} is empty.",
            "Write one SELECT, e.g. SELECT * FROM customers WHERE active.",
            "source",
        )
    return query


def query_failed(exc: psycopg.Error, label: str) -> PipelineError:
    detail = str(exc).strip() or type(exc).__name__
    hint = (
        "Fix the SQL (PostgreSQL's dialect; LINE counts from the query's first line)."
        if isinstance(exc, psycopg.errors.SyntaxError)
        else "Run the query in psql to check it, e.g. its table and column names."
    )
    if isinstance(exc, psycopg.OperationalError):
        hint = "Check that the server is running; the run can be queued again."
    return PipelineError(f"{label} failed: PostgreSQL says: {detail}", hint, "source")


@contextlib.contextmanager
def read_query(
    kwargs: dict[str, Any],
    query: str,
    batch_rows: int,
    label: str,
    what: str,
    limit: int | None = None,
) -> Iterator[pa.RecordBatchReader]:
    """The query's rows as Arrow batches of `batch_rows`, from a server-side cursor in a
    read-only transaction; at most `limit` rows. Raises PipelineError (block 'source')
    quoting PostgreSQL, on entry and while batches are read; `label` names the block and
    `what` the connection."""
    with contextlib.ExitStack() as stack:
        try:
            con = stack.enter_context(connect(kwargs, what, read_only=True))
        except InvalidInput as exc:  # unreachable, wrong password: name the block too
            raise PipelineError(
                f"{label} failed: {exc.message}", exc.hint, "source", step=exc.step
            ) from exc
        cursor = stack.enter_context(con.cursor(name="modeldeck_source"))
        try:
            cursor.execute(query)
            schema = arrow_schema(cursor.description)
        except psycopg.Error as exc:
            raise query_failed(exc, label) from exc

        def batches() -> Iterator[pa.RecordBatch]:
            left = limit
            while left is None or left > 0:
                size = batch_rows if left is None else min(batch_rows, left)
                try:
                    rows = cursor.fetchmany(size)
                except psycopg.Error as exc:
                    raise query_failed(exc, label) from exc
                if not rows:
                    return
                left = None if left is None else left - len(rows)
                columns = list(zip(*rows, strict=True))
                yield pa.RecordBatch.from_arrays(
                    [_column(list(c), f.type) for c, f in zip(columns, schema, strict=True)],
                    schema=schema,
                )

        reader = pa.RecordBatchReader.from_batches(schema, batches())
        try:
            yield reader
        finally:
            reader.close()


# ---------------------------------------------------------------------------- writing
def table_name(text: Any) -> tuple[str, ...]:
    """'table' or 'schema.table' as its parts; InvalidInput for anything else."""
    parts = tuple(text.split(".")) if isinstance(text, str) else ()
    if not 1 <= len(parts) <= 2 or not all(_PART.match(p) for p in parts):
        raise InvalidInput(
            f"{text!r} is not a valid PostgreSQL table name.",
            "Use table or schema.table with letters, digits and underscores.",
        )
    return parts


def _pg_type(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind):
        return "bigint"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "double precision"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_date(kind):
        return "date"
    return "text"


def _existing_columns(cur: psycopg.Cursor, ident: sql.Identifier) -> list[str] | None:
    """The table's columns in order, or None when there is no such table (search path)."""
    rows = cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [ident.as_string(cur)],
    ).fetchall()
    return [r[0] for r in rows] or None


def _csv_batches(parquet: Path, drop: set[str], run_id: str | None) -> Iterator[bytes]:
    """The file's rows (without `drop` columns, after `run_id` if given) as CSV text, one
    Arrow batch at a time."""
    for batch in pq.ParquetFile(parquet).iter_batches(batch_size=50_000):
        names = [n for n in batch.schema.names if n not in drop]
        arrays = [batch.column(n) for n in names]
        arrays = [a.dictionary_decode() if pa.types.is_dictionary(a.type) else a for a in arrays]
        if run_id is not None:
            names, arrays = (
                [RUN_ID_COLUMN, *names],
                [pa.array([run_id] * batch.num_rows, pa.string()), *arrays],
            )
        out = io.BytesIO()
        pacsv.write_csv(
            pa.RecordBatch.from_arrays(arrays, names), out, pacsv.WriteOptions(include_header=False)
        )
        yield out.getvalue()


def write_tables(
    kwargs: dict[str, Any],
    targets: list[tuple[Path, str, set[str]]],
    mode: str,
    run_id: str,
    what: str,
) -> list[int]:
    """Write results files to PostgreSQL tables, all in one transaction; rows per table.

    `targets` are (parquet, table, columns to leave out). create: a new table (refused when
    it exists); append: add rows, creating the table if missing; replace: drop and create.
    Tables ModelDeck creates start with a `run_id` column; when the table has one, the run's
    earlier rows are deleted first, so writing a run again (re-delivery) never doubles it.
    Raises InvalidInput quoting PostgreSQL; then no table has changed.
    """
    if mode not in TABLE_MODES:
        raise InvalidInput(f"Unknown mode {mode!r}.", f"Choose one of: {', '.join(TABLE_MODES)}.")
    for _, table, _ in targets:
        table_name(table)
    with connect(kwargs, what) as con:
        table = ""
        try:
            with con.transaction(), con.cursor() as cur:
                rows = []
                for parquet, table, drop in targets:
                    rows.append(_write_one(cur, parquet, table, mode, run_id, drop))
                return rows
        except psycopg.Error as exc:
            raise InvalidInput(
                f"PostgreSQL could not write table {table}: {first_line(exc)}",
                "Check that the table's columns and types match the results "
                "(or use mode replace). Nothing was written.",
            ) from exc


def _write_one(
    cur: psycopg.Cursor, parquet: Path, table: str, mode: str, run_id: str, drop: set[str]
) -> int:
    fields = [f for f in pq.ParquetFile(parquet).schema_arrow if f.name not in drop]
    ident = sql.Identifier(*table_name(table))
    existing = _existing_columns(cur, ident)
    if existing is not None and mode == "create":
        raise InvalidInput(
            f"Table {table} already exists.", "Use mode append or replace, or another table name."
        )
    if existing is not None and mode == "replace":
        cur.execute(sql.SQL("DROP TABLE {}").format(ident))
    if existing is None or mode == "replace":
        existing = [RUN_ID_COLUMN, *(f.name for f in fields)]
        cur.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                ident,
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                    for n, t in [(RUN_ID_COLUMN, "text")]
                    + [(f.name, _pg_type(f.type)) for f in fields]
                ),
            )
        )
    missing = [f.name for f in fields if f.name not in existing]
    if missing:
        raise InvalidInput(
            f"Table {table} has no column(s) {', '.join(missing)} for the results.",
            "Add the columns to the table, or use mode replace to "
            "recreate it. Nothing was written.",
        )
    return _copy(cur, ident, parquet, fields, existing, run_id, drop)


def _copy(
    cur: psycopg.Cursor,
    ident: sql.Identifier,
    parquet: Path,
    fields: list[pa.Field],
    existing: list[str],
    run_id: str,
    drop: set[str],
) -> int:
    names = [f.name for f in fields]
    with_run = RUN_ID_COLUMN in existing and RUN_ID_COLUMN not in names
    if with_run:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE {} = %s").format(ident, sql.Identifier(RUN_ID_COLUMN)),
            [run_id],
        )
        names = [RUN_ID_COLUMN, *names]
    columns = sql.SQL(", ").join(map(sql.Identifier, names))
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(ident, columns)) as copy:
        for chunk in _csv_batches(parquet, drop, run_id if with_run else None):
            copy.write(chunk)
    return cur.rowcount
