"""Usage: CPU and memory of the API and worker processes over time, and per deployment.

A `Sampler` (a daemon thread, started by the API's lifespan and the worker loop) reads its own
process with psutil every `$MODELDECK_USAGE_SECONDS` (5 by default) and appends one JSON line
to a per-process segment under `usage/` (core.segments, like the prediction log: one unbuffered
write a line, so a killed process leaves a readable segment; readers skip a partial last line).
It keeps ONE `psutil.Process` for the whole life of the thread: a new one always reads 0 % CPU.
Nothing of it runs on a request. The worker's record adds its executor processes (children).
Segments rotate daily; the worker's full check compacts closed ones into `usage/compacted/`.

A record: sampled_at, process (api | worker), pid, cpu_seconds (user + system, cumulative, children
included), cpu_percent (since the previous sample, of one core), rss_bytes, threads.

Per deployment (from the prediction log): requests, rows, CPU seconds spent in predict (the
API measures `time.thread_time()` around each answer: the request's own thread, so other
requests' work is not counted), p50/p99 latency. Loaded models' memory is approximated by the
size of their artifact files: a pickled sklearn model unpickles to roughly its file's size
(arrays dominate), it costs nothing to read, and tracemalloc at load would slow every load
and miss memory that native code allocates.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

from core import prediction_log, segments
from core.deployments import get_deployment
from core.store import Store, Tx, utcnow, with_files
from core.workspace import Workspace, atomic_path

log = logging.getLogger("modeldeck.usage")
SECONDS_ENV = "MODELDECK_USAGE_SECONDS"
SEGMENT_BYTES = 8 * 1024 * 1024
SEGMENT_SECONDS = 86_400.0
COLUMNS = {
    "sampled_at": "TIMESTAMP",
    "process": "VARCHAR",
    "pid": "BIGINT",
    "cpu_seconds": "DOUBLE",
    "cpu_percent": "DOUBLE",
    "rss_bytes": "BIGINT",
    "threads": "BIGINT",
}


def folder(workspace: Workspace) -> Path:
    return workspace.home / "usage"


def interval() -> float:
    """$MODELDECK_USAGE_SECONDS (default 5, at least 0.01)."""
    return max(float(os.environ.get(SECONDS_ENV, "5") or 5), 0.01)


class Sampler:
    """Samples this process into its usage segment every `every` seconds, in a daemon thread."""

    def __init__(
        self,
        workspace: Workspace,
        process: str,
        *,
        every: float | None = None,
        children: bool = False,
    ) -> None:
        self.process, self.every, self.children = process, every or interval(), children
        self.writer = segments.SegmentWriter(
            folder(workspace), max_bytes=SEGMENT_BYTES, max_seconds=SEGMENT_SECONDS
        )
        self.me = psutil.Process()  # one for the thread's life: cpu_percent needs the last read
        self.me.cpu_percent(None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and close the segment (after one last sample)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.writer.close()

    def _run(self) -> None:
        while True:
            try:
                self.writer.write(self.sample())
            except Exception:  # a failed sample is logged; the process goes on
                log.exception("usage sample failed")
            if self._stop.wait(self.every):
                return

    def sample(self) -> dict[str, Any]:
        """One record of this process (and its children, for the worker)."""
        with self.me.oneshot():
            times = self.me.cpu_times()
            cpu = times.user + times.system
            rss = self.me.memory_info().rss
            record = {
                "sampled_at": utcnow().isoformat(),
                "process": self.process,
                "pid": self.me.pid,
                "cpu_percent": self.me.cpu_percent(None),
                "threads": self.me.num_threads(),
            }
        if self.children:
            for child in self.me.children():
                try:
                    t = child.cpu_times()
                    cpu += t.user + t.system
                    rss += child.memory_info().rss
                except psutil.Error:
                    continue  # gone between listing and reading
        return record | {"cpu_seconds": cpu, "rss_bytes": rss}


# ---------------------------------------------------------------------------- reading
def compact(workspace: Workspace) -> int:
    """Closed usage segments (rotated daily, or of processes gone) into Parquet under
    `usage/compacted/` (temp name + rename), each removed once its file is in place; returns
    how many segments were compacted. Called by the worker's full check."""
    done = 0
    for path in segments.closed_segments(folder(workspace)):
        sql = segments.json_sql([path], COLUMNS, "sampled_at")
        target = folder(workspace) / "compacted" / f"{path.stem}.parquet"
        with atomic_path(target) as tmp:
            _write_parquet(sql, tmp)
        path.unlink()
        done += 1
    return done


def _write_parquet(sql: str | None, target: Path) -> None:
    with_files(lambda tx: tx.execute(f"COPY ({sql}) TO ? (FORMAT parquet)", [str(target)]))


def _source(workspace: Workspace) -> str:
    parts: list[str | None] = []
    compacted = sorted((folder(workspace) / "compacted").glob("*.parquet"))
    if compacted:
        parts.append(
            f"SELECT {', '.join(COLUMNS)} FROM read_parquet({segments.file_list(compacted)})"
        )
    parts.append(
        segments.json_sql(segments.every_segment(folder(workspace)), COLUMNS, "sampled_at")
    )
    return segments.union_sql(parts, COLUMNS)


def series(
    workspace: Workspace,
    *,
    process: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """Every sample in [start, end) (of one kind of process), tidy: sampled_at, process, pid,
    cpu_seconds, cpu_percent, rss_bytes, threads, ordered by process, pid and time."""
    clauses: list[str] = ["true"]
    params: list[Any] = []
    for clause, value in (
        ("process = ?", process),
        ("sampled_at >= ?", start),
        ("sampled_at < ?", end),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)

    def read(tx: Tx, source: str) -> pa.Table:
        return tx.arrow(
            f"SELECT {', '.join(COLUMNS)} FROM {source} WHERE {' AND '.join(clauses)}"
            " ORDER BY process, pid, sampled_at",
            params,
        )

    return segments.query(lambda: _source(workspace), read)


def deployment_usage(
    store: Store, deployment_id: str, start: datetime | None = None, end: datetime | None = None
) -> dict[str, Any]:
    """One deployment's answered API/form traffic in [start, end): requests, rows, CPU seconds
    in predict, p50/p99 latency (ms); and the approximate memory of its current models."""
    clauses = ["deployment_id = ?", "kind = 'main'", "status = 200"]
    params: list[Any] = [deployment_id]
    for clause, value in (("logged_at >= ?", start), ("logged_at < ?", end)):
        if value is not None:
            clauses.append(clause)
            params.append(value)

    def read(tx: Tx, source: str) -> dict[str, Any]:
        return (
            tx.execute(
                "SELECT count(*) AS requests, coalesce(sum(rows), 0) AS rows,"
                " coalesce(sum(cpu_ms), 0) / 1000 AS cpu_seconds,"
                " quantile_cont(latency_ms, 0.5) AS p50_ms,"
                f" quantile_cont(latency_ms, 0.99) AS p99_ms FROM {source}"
                f" WHERE {' AND '.join(clauses)}",
                params,
            ).first()
            or {}
        )

    found = prediction_log.query(store.workspace, read)
    return {**found, "model_bytes": model_bytes(store, deployment_id)}


def model_bytes(store: Store, deployment_id: str) -> dict[str, int]:
    """The artifact size of the current main (and challenger) model, by role: the documented
    approximation of what each takes in memory once loaded."""
    d = get_deployment(store, deployment_id)
    if d.current is None:
        return {}
    pins = {"main": d.current.main_model_id, "challenger": d.current.challenger_model_id}
    return {
        role: sum(p.stat().st_size for p in store.workspace.artifact_dir(model).glob("model.*"))
        for role, model in pins.items()
        if model
    }
