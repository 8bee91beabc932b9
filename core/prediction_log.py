"""The prediction log: every answered API call, durable before its answer is sent.

Each API process appends JSON lines to its own segment (`predictions/open/<pid>-<start>.jsonl`)
with one unbuffered `os.write` of a whole line per record (a few microseconds; a buffered file
loses its tail on SIGKILL). What survives what depends on `$MODELDECK_LOG_FSYNC`:
- `never` (default): the line is in the kernel when the answer leaves, so it survives the API
  process dying (even SIGKILL); a power cut or kernel crash may lose the last seconds.
- `interval` (every `$MODELDECK_LOG_FSYNC_MS`, 200 ms by default): at most that long is lost
  to a power cut.
- `always`: fsync before each answer: nothing answered is lost, at about a disk flush per call.

A segment rotates at SEGMENT_BYTES or SEGMENT_SECONDS; a rotated segment, or the open segment of
a process that is gone, is closed. The worker compacts closed segments into Parquet
(`predictions/compacted/day=YYYY-MM-DD/<segment>.parquet`, temp name + rename) and removes
them. Readers skip a partial last line (a process killed mid-write). With
`$MODELDECK_LOG_RETENTION_DAYS` set, the worker removes the compacted days older than that, with
the drift counts kept for them (`prune`); unset or 0 keeps every day.

A record: `kind` ("main", or "challenger" for a shadow call's outcome keyed by the same
request id), logged_at, request_id, deployment, deployment_id, version, key_id, source (api |
form), user (who submitted a form; None for API calls, which carry their key id), rows, status,
latency_ms, inputs (columns), outputs, error.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core import segments
from core.errors import InvalidInput
from core.store import Tx, utcnow
from core.workspace import Workspace, atomic_path

log = logging.getLogger("modeldeck.prediction_log")
SEGMENT_BYTES = 64 * 1024 * 1024
SEGMENT_SECONDS = 3600.0
FSYNC_POLICIES = segments.FSYNC_POLICIES
COLUMNS = {  # the compacted table's columns and types
    "kind": pa.string(),
    "logged_at": pa.timestamp("us"),
    "request_id": pa.string(),
    "deployment": pa.string(),
    "deployment_id": pa.string(),
    "version": pa.int64(),
    "key_id": pa.string(),
    "source": pa.string(),
    "user": pa.string(),  # the app's user for source "form"; files compacted before lack it
    "rows": pa.int64(),
    "status": pa.int64(),
    "latency_ms": pa.float64(),
    "cpu_ms": pa.float64(),  # CPU time of the predict call (thread time), main records
    "inputs": pa.string(),  # JSON: columns -> values
    "outputs": pa.string(),  # JSON: predictions, probabilities
    "error": pa.string(),
}


def folder(workspace: Workspace) -> Path:
    return workspace.home / "predictions"


def fsync_policy() -> tuple[str, float]:
    """($MODELDECK_LOG_FSYNC, the interval in seconds), checked."""
    policy = os.environ.get("MODELDECK_LOG_FSYNC", "never").strip() or "never"
    if policy not in FSYNC_POLICIES:
        raise ValueError(f"MODELDECK_LOG_FSYNC must be one of {', '.join(FSYNC_POLICIES)}")
    return policy, float(os.environ.get("MODELDECK_LOG_FSYNC_MS", "200")) / 1000


RETENTION_ENV = "MODELDECK_LOG_RETENTION_DAYS"


def retention_days() -> int | None:
    """The days of calls the log keeps ($MODELDECK_LOG_RETENTION_DAYS); None keeps every day
    (unset, empty or 0). InvalidInput for anything but a whole number of days."""
    raw = os.environ.get(RETENTION_ENV, "").strip()
    if not raw.isdecimal():
        if not raw:
            return None
        raise InvalidInput(
            f"{RETENTION_ENV} is {raw!r}: it must be a whole number of days.",
            f"Set {RETENTION_ENV} to the days of calls to keep (e.g. 90), or to 0 to keep"
            " every day.",
        )
    return int(raw) or None


class PredictionLog(segments.SegmentWriter):
    """The prediction log's append-only segment of one process; thread-safe."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        max_bytes: int = SEGMENT_BYTES,
        max_seconds: float = SEGMENT_SECONDS,
    ) -> None:
        policy, interval = fsync_policy()
        super().__init__(
            folder(workspace),
            max_bytes=max_bytes,
            max_seconds=max_seconds,
            policy=policy,
            interval=interval,
        )


# ---------------------------------------------------------------------------- reading
read_segment = segments.read_segment


def closed_segments(workspace: Workspace) -> list[Path]:
    """Segments ready to compact: rotated ones, and the open ones of processes that are gone."""
    return segments.closed_segments(folder(workspace))


def open_segments(workspace: Workspace) -> list[Path]:
    return segments.open_segments(folder(workspace))


def _table(records: list[dict[str, Any]]) -> pa.Table:
    data: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for r in records:
        for name in COLUMNS:
            value = r.get(name)
            if name in ("inputs", "outputs") and value is not None:
                value = orjson.dumps(value, default=str).decode()
            elif name == "logged_at" and isinstance(value, str):
                value = datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
            data[name].append(value)
    return pa.table(
        {n: pa.array(v, type=t) for (n, t), v in zip(COLUMNS.items(), data.values(), strict=True)}
    )


def compact(workspace: Workspace) -> int:
    """Compact every closed segment into Parquet by day and remove it; returns how many
    records were compacted. A segment is removed only after its Parquet file is in place."""
    total = 0
    for path in closed_segments(workspace):
        records = list(read_segment(path))
        by_day: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            by_day.setdefault(str(r.get("logged_at", ""))[:10] or "unknown", []).append(r)
        for day, rows in by_day.items():
            target = folder(workspace) / "compacted" / f"day={day}" / f"{path.stem}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                pq.write_table(_table(rows), tmp)
        path.unlink()
        total += len(records)
    return total


def prune(workspace: Workspace, days: int, today: date | None = None) -> list[date]:
    """Remove the compacted days before the last `days` (today, UTC, is one of them) and the
    drift counts kept for them; returns the days removed, oldest first. Segments not compacted
    yet stay: they are pruned once compacted."""
    first_kept = (today or utcnow().date()) - timedelta(days=days - 1)
    base = folder(workspace)
    removed = []
    for path in sorted((base / "compacted").glob("day=*")):
        try:
            day = date.fromisoformat(path.name.removeprefix("day="))
        except ValueError:  # "day=unknown": records without a time, never pruned
            continue
        if day >= first_kept:
            break
        for counts in base.glob(f"drift/*/*/{path.name}"):  # <model>/<deployment>/<day>
            shutil.rmtree(counts, ignore_errors=True)
        shutil.rmtree(path)
        removed.append(day)
    return removed


def read_all(workspace: Workspace, deployment: str | None = None) -> pa.Table:
    """Every logged record (compacted Parquet and open segments), optionally of one deployment:
    for tests and small windows; monitoring reads the Parquet with DuckDB."""
    parts = [pq.read_table(p) for p in sorted((folder(workspace) / "compacted").rglob("*.parquet"))]
    live = [
        r
        for p in open_segments(workspace) + sorted((folder(workspace) / "closed").glob("*.jsonl"))
        for r in read_segment(p)
    ]
    if live:
        parts.append(_table(live))
    table = pa.concat_tables(parts, promote_options="default") if parts else _table([])
    if deployment is not None:
        table = table.filter(pc.equal(table["deployment"], deployment))
    return table


# ---------------------------------------------------------------------------- DuckDB readers
T = TypeVar("T")
READ_COLUMNS = {  # what readers see: every column but the inputs (the largest; drift asks for them)
    "kind": "VARCHAR",
    "logged_at": "TIMESTAMP",
    "request_id": "VARCHAR",
    "deployment": "VARCHAR",
    "deployment_id": "VARCHAR",
    "version": "BIGINT",
    "key_id": "VARCHAR",
    "source": "VARCHAR",
    "rows": "BIGINT",
    "status": "BIGINT",
    "latency_ms": "DOUBLE",
    "cpu_ms": "DOUBLE",
    "outputs": "JSON",
    "error": "VARCHAR",
}


def compacted_files(workspace: Workspace, since: date | None = None) -> list[Path]:
    """The compacted Parquet files (immutable), by day folder; with `since`, only the days
    from that one on (the segments hold any day: readers filter on logged_at too)."""
    return sorted(
        p
        for p in (folder(workspace) / "compacted").rglob("*.parquet")
        if since is None or p.parent.name.removeprefix("day=") >= since.isoformat()
    )


def source_sql(
    workspace: Workspace,
    *,
    inputs: bool = False,
    compacted: list[Path] | None = None,
    live: bool = True,
) -> str:
    """A SELECT of READ_COLUMNS over every logged record: the compacted Parquet (only the
    columns read, so the inputs are never parsed unless `inputs` adds them, as JSON) and the
    open and closed JSON-lines segments (a partial last line skipped). Files are listed now;
    see `query` for the race with the compaction. `compacted` names the Parquet files to read
    instead of all, `live=False` leaves the segments out."""
    columns = {**READ_COLUMNS, "inputs": "JSON"} if inputs else READ_COLUMNS
    compacted = compacted_files(workspace) if compacted is None else compacted
    parts: list[str | None] = []
    if compacted:
        picked = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in columns.items())
        parts.append(
            f"SELECT {picked} FROM read_parquet({segments.file_list(compacted)},"
            " union_by_name = true)"
        )
    if live:
        parts.append(segments.json_sql(segments.every_segment(folder(workspace)), columns, "kind"))
    return segments.union_sql(parts, columns)


def query(
    workspace: Workspace,
    fn: Callable[[Tx, str], T],
    *,
    inputs: bool = False,
    compacted: list[Path] | None = None,
    live: bool = True,
) -> T:
    """`fn(tx, source)` on the process's in-memory DuckDB, `source` being `source_sql` (with
    its options); listed again when a listed segment was compacted (renamed away) before
    DuckDB opened it."""
    return segments.query(
        lambda: source_sql(workspace, inputs=inputs, compacted=compacted, live=live), fn
    )


@dataclass(frozen=True)
class Health:
    """How one role's model (main or challenger) answered a deployment's calls since a time."""

    calls: int
    errors: int
    last_answer_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None


def health(
    workspace: Workspace, deployment_id: str, version: int, since: datetime
) -> dict[str, Health]:
    """By kind ("main", "challenger"): the calls a deployment's version answered since `since`
    (UTC), how many failed, the last answer and the last error. A kind with no call is absent."""

    def read(tx: Tx, source: str) -> dict[str, Health]:
        rows = tx.execute(
            "SELECT kind, count(*), count(*) FILTER (WHERE status <> 200),"
            " max(logged_at) FILTER (WHERE status = 200),"
            " max(logged_at) FILTER (WHERE status <> 200),"
            " arg_max(error, logged_at) FILTER (WHERE status <> 200)"
            f" FROM {source} WHERE deployment_id = ? AND version = ? AND logged_at >= ?"
            " GROUP BY kind",
            [deployment_id, version, since],
        ).rows
        return {kind: Health(*values) for kind, *values in rows}

    return query(workspace, read, compacted=compacted_files(workspace, since.date()))


# ---------------------------------------------------------------------------- by day
def days(workspace: Workspace, deployment_id: str) -> list[dict[str, Any]]:
    """A deployment's logged calls per UTC day, newest first: day, requests, rows, errors (the
    challenger's outcomes are not counted as requests)."""

    def read(tx: Tx, source: str) -> list[dict[str, Any]]:
        return tx.execute(
            "SELECT CAST(logged_at AS DATE) AS day, count(*) AS requests,"
            " coalesce(sum(rows), 0) AS rows, count(*) FILTER (WHERE status <> 200)"
            f" AS errors FROM {source} WHERE deployment_id = ? AND kind = 'main'"
            " GROUP BY 1 ORDER BY 1 DESC",
            [deployment_id],
        ).dicts()

    return query(workspace, read)


def day_csv(workspace: Workspace, deployment_id: str, day: date) -> bytes:
    """Every record of one deployment and UTC day (main and challenger, inputs and outputs as
    JSON text), as CSV: the compacted Parquet of that day and the segments not compacted yet."""
    stamp = day.isoformat()
    parts = [
        pq.read_table(p)
        for p in sorted((folder(workspace) / "compacted" / f"day={stamp}").glob("*.parquet"))
    ]
    live = [
        r
        for p in segments.every_segment(folder(workspace))
        for r in read_segment(p)
        if str(r.get("logged_at", "")).startswith(stamp)
    ]
    if live:
        parts.append(_table(live))
    table = pa.concat_tables(parts, promote_options="default") if parts else _table([])
    table = table.filter(pc.equal(table["deployment_id"], deployment_id))
    table = table.sort_by([("logged_at", "ascending")])
    out = pa.BufferOutputStream()
    pacsv.write_csv(table, out)
    return bytes(out.getvalue().to_pybytes())


# ---------------------------------------------------------------------------- state
def state(workspace: Workspace) -> tuple[tuple[str, int, int, int], ...]:
    """Every file of the log (compacted Parquet, open and closed segments) with its size,
    modification time and inode. It changes with every record written and every rotation or
    compaction, so a result read from the log may be kept while it stays the same."""
    base = folder(workspace)
    found = []
    for path in sorted(compacted_files(workspace) + segments.every_segment(base)):
        try:
            stat = path.stat()
        except FileNotFoundError:  # renamed away (rotated, compacted) since it was listed
            continue
        found.append((str(path.relative_to(base)), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(found)
