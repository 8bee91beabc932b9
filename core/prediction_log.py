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
them. Readers skip a partial last line (a process killed mid-write).

A record: `kind` ("main", or "challenger" for a shadow call's outcome keyed by the same
request id), logged_at, request_id, deployment, deployment_id, version, key_id, source (api |
form), user (who submitted a form; None for API calls, which carry their key id), rows, status,
latency_ms, inputs (columns), outputs, error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.workspace import Workspace, atomic_path, is_running

log = logging.getLogger("modeldeck.prediction_log")
SEGMENT_BYTES = 64 * 1024 * 1024
SEGMENT_SECONDS = 3600.0
FSYNC_POLICIES = ("never", "interval", "always")
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


class PredictionLog:
    """The append-only segment of one process; thread-safe."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        max_bytes: int = SEGMENT_BYTES,
        max_seconds: float = SEGMENT_SECONDS,
    ) -> None:
        self.open_dir = folder(workspace) / "open"
        self.closed_dir = folder(workspace) / "closed"
        for d in (self.open_dir, self.closed_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_seconds = max_bytes, max_seconds
        self.policy, self.interval = fsync_policy()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened = 0.0
        self._size = 0
        self._synced = time.monotonic()
        self._dirty = False

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line (one write call) before the caller answers."""
        line = orjson.dumps(record, default=str, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            if self._fd is None or self._due():
                self._rotate()
            assert self._fd is not None
            os.write(self._fd, line)
            self._size += len(line)
            if self.policy == "always":
                os.fsync(self._fd)
            elif self.policy == "interval":
                self._dirty = True
                if time.monotonic() - self._synced >= self.interval:
                    os.fsync(self._fd)
                    self._synced, self._dirty = time.monotonic(), False

    def _due(self) -> bool:
        return self._size >= self.max_bytes or time.monotonic() - self._opened >= self.max_seconds

    def _rotate(self) -> None:
        self._close_segment()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self._path = self.open_dir / f"{os.getpid()}-{stamp}.jsonl"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._opened, self._size = time.monotonic(), 0

    def _close_segment(self) -> None:
        if self._fd is None or self._path is None:
            return
        if self.policy != "never":
            os.fsync(self._fd)
        os.close(self._fd)
        os.replace(self._path, self.closed_dir / self._path.name)
        self._fd, self._path = None, None

    def close(self) -> None:
        with self._lock:
            self._close_segment()


# ---------------------------------------------------------------------------- reading
def read_segment(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one segment, skipping a partial last line (and any line that is not a
    whole JSON object: a process killed mid-write)."""
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def closed_segments(workspace: Workspace) -> list[Path]:
    """Segments ready to compact: rotated ones, and the open ones of processes that are gone."""
    base = folder(workspace)
    done = sorted((base / "closed").glob("*.jsonl"))
    for path in sorted((base / "open").glob("*.jsonl")):
        pid = path.name.split("-", 1)[0]
        if pid.isdigit() and not is_running(int(pid)):
            done.append(path)
    return done


def open_segments(workspace: Workspace) -> list[Path]:
    return sorted((folder(workspace) / "open").glob("*.jsonl"))


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
