"""Per-process append-only segments of JSON lines: the machinery the prediction log and the
usage samples share.

A process appends to its own file `<base>/open/<pid>-<start>.jsonl`, one unbuffered `os.write`
of a whole line per record (it survives the process dying, even SIGKILL). A segment rotates at
`max_bytes` or `max_seconds` into `<base>/closed/`; the open segment of a process that is gone
counts as closed too. Readers skip a partial last line (a process killed mid-write): in Python
(`read_segment`) and in DuckDB (`json_sql`, whose `ignore_errors` turns such a line into a row
of NULLs that callers drop by a column that every whole record has).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from core.engine.pipeline_sql import quote
from core.store import Tx, is_missing_file, with_files
from core.workspace import is_running

T = TypeVar("T")
READ_ATTEMPTS = 5  # a file renamed away between listing and reading is listed again

FSYNC_POLICIES = ("never", "interval", "always")


class SegmentWriter:
    """The append-only segment of one process under `base`; thread-safe."""

    def __init__(
        self,
        base: Path,
        *,
        max_bytes: int,
        max_seconds: float,
        policy: str = "never",
        interval: float = 0.2,
    ) -> None:
        self.open_dir = base / "open"
        self.closed_dir = base / "closed"
        for d in (self.open_dir, self.closed_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_seconds = max_bytes, max_seconds
        if policy not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}")
        self.policy, self.interval = policy, interval
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened = 0.0
        self._size = 0
        self._synced = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line (one write call)."""
        line = orjson.dumps(record, default=str, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            if self._fd is None or self._due():
                self._rotate()
            assert self._fd is not None
            os.write(self._fd, line)
            self._size += len(line)
            if self.policy == "always":
                os.fsync(self._fd)
            elif self.policy == "interval" and time.monotonic() - self._synced >= self.interval:
                os.fsync(self._fd)
                self._synced = time.monotonic()

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


def open_segments(base: Path) -> list[Path]:
    return sorted((base / "open").glob("*.jsonl"))


def closed_segments(base: Path) -> list[Path]:
    """Segments no process appends to: rotated ones, and the open ones of processes gone."""
    done = sorted((base / "closed").glob("*.jsonl"))
    for path in open_segments(base):
        pid = path.name.split("-", 1)[0]
        if pid.isdigit() and not is_running(int(pid)):
            done.append(path)
    return done


def every_segment(base: Path) -> list[Path]:
    """Every segment under `base`, open and closed."""
    return sorted({*open_segments(base), *(base / "closed").glob("*.jsonl")})


def file_list(paths: Sequence[str | Path]) -> str:
    """A SQL list literal of file paths (list parameters reach DuckDB as JSON text, which
    read_parquet and read_json cannot take)."""
    return "[" + ", ".join(quote(str(p)) for p in paths) + "]"


def json_sql(paths: list[Path], columns: dict[str, str], present: str) -> str | None:
    """A SELECT of `columns` (name -> DuckDB type) over JSON-lines `paths`, without the NULL row
    a partial last line reads as (rows where `present` is NULL); None without paths."""
    if not paths:
        return None
    typed = ", ".join(f"{quote(n)}: {quote(t)}" for n, t in columns.items())
    return (
        f"SELECT {', '.join(columns)} FROM read_json({file_list(paths)},"
        f" format = 'newline_delimited', columns = {{{typed}}}, ignore_errors = true)"
        f" WHERE {present} IS NOT NULL"
    )


def union_sql(parts: list[str | None], columns: dict[str, str]) -> str:
    """The UNION ALL of the SELECTs given (None skipped) as one parenthesised source, or an
    empty SELECT of `columns` (name -> DuckDB type) when there is none."""
    found = [p for p in parts if p]
    if not found:
        nothing = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items())
        found.append(f"SELECT {nothing} WHERE false")
    return "(" + " UNION ALL ".join(found) + ")"


def query(source: Callable[[], str], fn: Callable[[Tx, str], T]) -> T:
    """`fn(tx, source())` on the process's in-memory DuckDB; `source` (a SELECT over files it
    lists) is built again when a listed file was renamed away (rotated, compacted) before
    DuckDB opened it."""
    for attempt in range(READ_ATTEMPTS):
        listed = source()
        try:
            return with_files(lambda tx, listed=listed: fn(tx, listed))  # type: ignore[misc]
        except Exception as exc:
            if not is_missing_file(exc) or attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
