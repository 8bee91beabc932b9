"""Time and memory limits for pipeline SQL (previews and runs).

A preview of a large cross join used to pin a core for minutes in the UI process. Now every
pipeline read has two bounds, read from the environment with sane defaults:
- time: `MODELDECK_PREVIEW_SECONDS` (default 30) for a preview, `MODELDECK_RUN_SQL_SECONDS`
  (default 3600) for a run's whole read. A `Watchdog` thread interrupts the DuckDB
  connections it watches once the time is up (and every 0.1 s after that, because DuckDB
  forgets an interrupt that lands between two queries or two batch reads);
- memory: `MODELDECK_SQL_MEMORY` (default 2GB), DuckDB's `memory_limit` of the source and
  transform databases. Sorts, joins and aggregates spill to the workspace's private folder
  beyond it; only what cannot spill fails.
The message of either says which limit was hit and how to raise it. DuckDB itself lives in
core/pipeline_sql.py: here it is only "something with interrupt()" and its error text.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import InvalidInput, PipelineError

SECONDS_ENV = {"preview": "MODELDECK_PREVIEW_SECONDS", "run": "MODELDECK_RUN_SQL_SECONDS"}
DEFAULT_SECONDS = {"preview": 30.0, "run": 3600.0}
MEMORY_ENV = "MODELDECK_SQL_MEMORY"
DEFAULT_MEMORY = "2GB"
RECHECK_SECONDS = 0.1
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


class Interruptible(Protocol):
    def interrupt(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    """The bounds of one preview or run: seconds for all its SQL, DuckDB's memory limit."""

    purpose: str  # preview | run
    seconds: float
    memory: str

    @classmethod
    def of(cls, purpose: str) -> Limits:
        """The limits configured for `purpose`; InvalidInput naming a bad variable."""
        env = SECONDS_ENV[purpose]
        raw = os.environ.get(env, "").strip()
        try:
            seconds = float(raw) if raw else DEFAULT_SECONDS[purpose]
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise InvalidInput(
                f"${env} must be a number of seconds above 0, not '{raw}'.",
                f"Leave it unset for {DEFAULT_SECONDS[purpose]:g} s.",
            )
        memory = os.environ.get(MEMORY_ENV, "").strip() or DEFAULT_MEMORY
        if not _MEMORY.match(memory):
            raise InvalidInput(
                f"${MEMORY_ENV} must be an amount of memory such as 2GB or 500MB, not '{memory}'.",
                f"Leave it unset for {DEFAULT_MEMORY}.",
            )
        return cls(purpose, seconds, memory.replace(" ", ""))

    def timeout(self, block: str | None) -> PipelineError:
        """The error of SQL stopped by the time limit."""
        env = SECONDS_ENV[self.purpose]
        return PipelineError(
            f"The pipeline's SQL ran longer than the {self.purpose} time limit of "
            f"{self.seconds:g} s and was stopped.",
            f"Make the query cheaper (filter early, avoid cross joins, aggregate less), or "
            f"raise the limit: set {env} (seconds) for the "
            f"{'UI' if self.purpose == 'preview' else 'worker'}.",
            block,
        )

    def out_of_memory(self, block: str | None) -> PipelineError:
        """The error of SQL that needed more memory than the limit and could not spill."""
        return PipelineError(
            f"The pipeline's SQL needed more than its memory limit of {self.memory} and was "
            "stopped.",
            f"Make the query need less at once (fewer or smaller list/string aggregates, "
            f"filter before joining), or raise the limit: set {MEMORY_ENV} (e.g. 4GB) for "
            "the UI and the worker.",
            block,
        )


_ACTIVE: ContextVar[Limits | None] = ContextVar("modeldeck_sql_limits", default=None)


def limit_error(text: str, block: str | None) -> PipelineError | None:
    """The limit error for DuckDB's error text, when a limit of the current read was hit."""
    limits = _ACTIVE.get()
    if limits is None:
        return None
    if "INTERRUPT Error" in text:
        return limits.timeout(block)
    if "Out of Memory Error" in text:
        return limits.out_of_memory(block)
    return None


class Watchdog:
    """Interrupts the watched connections once `limits.seconds` have passed."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._watched: list[Interruptible] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sql-watchdog")
        self.expired = False

    def watch(self, con: Any) -> Any:
        """Watch `con` (a DuckDB connection or cursor); returns it."""
        self._watched.append(con)
        return con

    def _run(self) -> None:
        if self._stop.wait(self.limits.seconds):
            return
        self.expired = True
        while True:
            for con in list(self._watched):
                with contextlib.suppress(Exception):  # a closed connection: nothing to stop
                    con.interrupt()
            if self._stop.wait(RECHECK_SECONDS):
                return

    def check(self, block: str | None) -> None:
        """Raise the time-limit error once the time is up (between two reads)."""
        if self.expired:
            raise self.limits.timeout(block)


@contextlib.contextmanager
def bounded(purpose: str) -> Iterator[Watchdog]:
    """A watchdog for one preview or run; its limits name errors raised meanwhile."""
    watchdog = Watchdog(Limits.of(purpose))
    token = _ACTIVE.set(watchdog.limits)
    watchdog._thread.start()
    try:
        yield watchdog
    finally:
        watchdog._stop.set()
        watchdog._thread.join()
        _ACTIVE.reset(token)
