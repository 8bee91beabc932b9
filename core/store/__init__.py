"""The metadata store: the only module that talks to `modeldeck.duckdb`.

DuckDB lets one process hold the file for writing, and that lock keeps every other process out,
with no built-in wait. So each call here opens a connection for one transaction, closes it, and
retries with jittered backoff while another process holds the lock (DESIGN.md, storage rules).
Callers pass a plain function that receives a `Tx`; they never see a connection or a cursor.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from core.errors import InvalidInput, StoreBusy
from core.workspace import Workspace

T = TypeVar("T")
LOCK_TIMEOUT_ENV = "MODELDECK_LOCK_TIMEOUT"
RACY_SECONDS = 3  # Store.version: longer than any filesystem's timestamp tick (FAT: 2 s)
_migrated: set[Path] = set()
_migrate_lock = threading.Lock()


@dataclass(frozen=True)
class Rows:
    """A fully read query result."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def first(self) -> dict[str, Any] | None:
        return dict(zip(self.columns, self.rows[0], strict=True)) if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.dicts())

    def __len__(self) -> int:
        return len(self.rows)


class Tx:
    """One transaction on the store; valid only inside the function given to read/write."""

    def __init__(self, con: duckdb.DuckDBPyConnection, workspace: Workspace | None = None) -> None:
        self._con = con
        self.workspace = workspace  # the store's workspace; None for in-memory databases
        self.committed: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this write transaction has committed (never on a rollback):
        for hints to other processes, which must not see the change before it is there."""
        if callback not in self.committed:
            self.committed.append(callback)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Rows:
        """Run one statement and read its whole result (a partly read result blocks the con)."""
        cursor = self._con.execute(sql, _encode(params) if params is not None else None)
        if cursor is None or cursor.description is None:
            return Rows([], [])
        columns = [d[0] for d in cursor.description]
        return Rows(columns, cursor.fetchall())

    def script(self, sql: str) -> None:
        """Run a multi-statement SQL script (a migration) inside this transaction."""
        self._con.execute(sql)

    def arrow(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run one query and return its whole result as an Arrow table (no DB-API copy)."""
        relation = self._con.sql(sql, params=_encode(params) if params is not None else None)
        return relation.to_arrow_table() if relation is not None else pa.table({})


def _encode(params: Sequence[Any] | dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
    """Store dicts and lists as JSON text, so callers can pass structured values directly."""

    def one(value: Any) -> Any:
        return json.dumps(value) if isinstance(value, dict | list) else value

    if isinstance(params, dict):
        return {k: one(v) for k, v in params.items()}
    return [one(v) for v in params]


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return ("lock" in text and "conflict" in text) or "could not set lock" in text


class Store:
    """The metadata store of one workspace."""

    def __init__(self, workspace: Workspace, lock_timeout: float | None = None) -> None:
        self.workspace = workspace
        env_timeout = os.environ.get(LOCK_TIMEOUT_ENV)
        if lock_timeout is None:
            lock_timeout = float(env_timeout) if env_timeout else 30.0
        self.lock_timeout = lock_timeout

    @classmethod
    def open(cls, home: str | os.PathLike[str] | Workspace | None = None) -> Store:
        """The store of a workspace: folders created, schema migrated (once a process)."""
        workspace = home if isinstance(home, Workspace) else Workspace.resolve(home)
        store = cls(workspace.ensure())
        with _migrate_lock:
            if workspace.db_path not in _migrated or not workspace.db_path.exists():
                store.migrate()
                _migrated.add(workspace.db_path)
        return store

    def _run(self, fn: Callable[[Tx], T], *, write: bool) -> T:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.01
        while True:
            try:
                return self._once(fn, write=write)
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not _is_lock_conflict(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise StoreBusy(
                        f"The workspace store {self.workspace.db_path} stayed locked by another "
                        f"process for {self.lock_timeout:g} s.",
                        "Another ModelDeck process is holding it; retry in a moment, or stop the "
                        "process that is stuck (a DuckDB CLI or notebook left open on the file).",
                    ) from exc
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.5)

    def _once(self, fn: Callable[[Tx], T], *, write: bool) -> T:
        con = duckdb.connect(str(self.workspace.db_path))
        try:
            if not write:
                return fn(Tx(con, self.workspace))
            con.execute("BEGIN TRANSACTION")
            tx = Tx(con, self.workspace)
            try:
                result = fn(tx)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
        for callback in tx.committed:
            callback()
        return result

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` on a short-lived connection; retried while another process holds the lock."""
        return self._run(fn, write=False)

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in one transaction: all its statements commit together or none do."""
        return self._run(fn, write=True)

    def version(self) -> tuple[object, ...] | None:
        """A token that moves with every committed write, by any process: the database file's
        and its WAL's mtime, size and inode (a write appends to the WAL and its connection
        checkpoints on close; a read changes neither file). Two stats, no connection. Compare
        it for equality only, and take it *before* the read it keys: a write racing that read
        then costs one more read, never a stale answer. None while the newest write is under
        RACY_SECONDS old: a filesystem with coarse timestamps could give a second write in
        the same tick the same token (git's "racily clean" rule), so nothing is kept then."""
        found: list[object] = []
        newest = 0
        db = self.workspace.db_path
        for path in (db, db.with_name(db.name + ".wal")):
            try:
                st = path.stat()
            except OSError:
                found.append(None)
                continue
            found.append((st.st_mtime_ns, st.st_size, st.st_ino))
            newest = max(newest, st.st_mtime_ns)
        if time.time_ns() - newest < RACY_SECONDS * 1e9:
            return None
        return tuple(found)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Rows:
        """One read statement."""
        return self.read(lambda tx: tx.execute(sql, params))

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Rows:
        """One write statement in its own transaction."""
        return self.write(lambda tx: tx.execute(sql, params))

    def migrate(self, upto: int | None = None) -> list[int]:
        """Apply pending numbered migrations (up to `upto`) in one transaction; return them."""
        return self.write(lambda tx: _apply_migrations(tx, upto))

    def schema_version(self) -> int:
        """The highest applied migration number (0 for an empty store)."""
        return self.read(lambda tx: _applied(tx)[-1] if _applied(tx) else 0)


def list_migrations() -> list[tuple[int, str, str]]:
    """All shipped migrations as (number, name, sql), in order."""
    found = []
    for entry in resources.files("core.store.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name[5:-4], entry.read_text(encoding="utf-8")))
    return sorted(found)


def _applied(tx: Tx) -> list[int]:
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    return [r["version"] for r in tx.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def _apply_migrations(tx: Tx, upto: int | None) -> list[int]:
    done = set(_applied(tx))
    applied = []
    for number, name, sql in list_migrations():
        if number in done or (upto is not None and number > upto):
            continue
        tx.script(sql)
        tx.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [number, name, utcnow()])
        applied.append(number)
    return applied


def new_id(prefix: str) -> str:
    """A new row id: the kind's prefix and ten random hex digits (`dep_3f9a0c21b4`)."""
    return f"{prefix}_{secrets.token_hex(5)}"


def utcnow() -> datetime:
    """Now in UTC, without tzinfo: the store keeps every timestamp as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def memory_database(
    workspace: Workspace | None = None, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB whose spill files go to the workspace's private folder (default:
    the current workspace), never the process's working folder, where an allowed root might
    let a SQL source read them."""
    con = duckdb.connect(":memory:")
    try:
        folder = (workspace or Workspace.resolve()).duckdb_temp_dir()
        con.execute("SET temp_directory = ?", [str(folder)])
        if memory_limit is not None:
            con.execute("SET memory_limit = ?", [memory_limit])
    except BaseException:
        con.close()
        raise
    return con


def query_files(sql: str, params: Sequence[Any] | None = None) -> Rows:
    """Run a query over Parquet/CSV files on a private in-memory DuckDB (never the store's lock)."""
    con = memory_database()
    try:
        return Tx(con).execute(sql, params)
    finally:
        con.close()


FILES_MEMORY_LIMIT = "1GB"
_files_db: tuple[tuple[int, Path], duckdb.DuckDBPyConnection] | None = None
_files_lock = threading.Lock()


def _files_database() -> duckdb.DuckDBPyConnection:
    global _files_db
    workspace = Workspace.resolve()
    key = (os.getpid(), workspace.home)  # a forked child builds its own, and so does a new home
    with _files_lock:
        if _files_db is None or _files_db[0] != key:
            _files_db = (key, memory_database(workspace, FILES_MEMORY_LIMIT))
        return _files_db[1]


def with_files(fn: Callable[[Tx], T], *, memory_limit: str | None = None) -> T:
    """Run `fn` on a cursor of this process's in-memory DuckDB, for queries over Parquet files.

    The in-memory database holds no file lock (unlike the store's), so it is kept for the
    process: a fresh one costs ~25 ms to open and re-reads every Parquet footer, while this
    one keeps them cached (the second page of a 1M-row run is served warm). Each call gets
    its own cursor, so threads never share a half-read result. With `memory_limit`, a fresh
    database with that limit instead, closed after `fn` (a one-off scan of a whole file, such
    as the drift counts, whose memory should not grow with the file).
    """
    if memory_limit is not None:
        con = memory_database(memory_limit=memory_limit)
        try:
            return fn(Tx(con))
        finally:
            con.close()
    cursor = _files_database().cursor()
    try:
        return fn(Tx(cursor))
    finally:
        cursor.close()


def is_missing_file(exc: BaseException) -> bool:
    """Whether a DuckDB read failed because a file it was given is gone (renamed away)."""
    text = str(exc)
    return isinstance(exc, duckdb.IOException) and (
        "No such file" in text or "No files found" in text or "does not exist" in text
    )


def write_duckdb_table(db_path: Path, table: str, parquet: Path, *, replace: bool) -> int:
    """Append (or replace) `table` in the DuckDB file `db_path` with a Parquet file's rows.

    One transaction on an in-memory connection that ATTACHes the file, so a failure leaves the
    table as it was. `table` must already be a validated identifier. Returns the rows written;
    raises InvalidInput quoting DuckDB's message (locked file, incompatible columns, ...).
    """
    con = memory_database()
    quoted = quote_identifier(table)
    try:
        con.execute("ATTACH ? AS sink", [str(db_path)])
        con.execute("BEGIN TRANSACTION")
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'sink' AND table_name = ?",
            [table],
        ).fetchone()
        if replace or not (exists and exists[0]):
            con.execute(
                f"CREATE OR REPLACE TABLE sink.{quoted} AS SELECT * FROM read_parquet(?)",
                [str(parquet)],
            )
        else:
            con.execute(
                f"INSERT INTO sink.{quoted} BY NAME SELECT * FROM read_parquet(?)", [str(parquet)]
            )
        con.execute("COMMIT")
        written = con.execute("SELECT count(*) FROM read_parquet(?)", [str(parquet)]).fetchone()
        return int(written[0]) if written else 0
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(
            f"DuckDB could not write table '{table}' in {db_path}: {first}",
            "Check that no other program holds the file open and that the "
            "table's columns match the results (or use mode 'replace').",
        ) from exc
    finally:
        con.close()


def quote_identifier(name: str) -> str:
    """`name` as a SQL identifier (double quotes, inner quotes doubled): any column name is safe."""
    return '"' + name.replace('"', '""') + '"'
