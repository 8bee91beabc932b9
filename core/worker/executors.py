"""Where the worker executes claimed runs and the steps after them.

`Inline` executes in the worker's own process, one thing at a time: what tests and
`modeldeck worker --executors 0` use. `Pool` keeps `size` executor processes, started with
`spawn` (never forked from a process that may hold the store open: DESIGN.md, traps) and warm
(models and libraries loaded once per process), so runs use more than one core while the
worker's own loop claims runs, records outcomes and queues due slots.

An executor process writes to the store only for a run longer than a second (throttled
progress and lease renewals, which also tell it the run was cancelled) and in the steps after
a run; claims and outcomes are the worker's, batched into one transaction. It ignores Ctrl-C
(the worker decides how to stop) and exits on its own when the worker process is gone (a
SIGKILLed worker leaves no executor scoring behind it).

Each executor process is its own one-process `ProcessPoolExecutor` (a slot), and a job goes
to a free slot: a `ProcessPoolExecutor` of N processes breaks as a whole when one of them
dies, failing every job in flight on it. So an executor that dies (killed, out of memory)
takes only its own run with it; the worker settles that run by its retry policy
(core/lost_runs.py) and starts a new process in that slot only.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from core import drift, execution, explain, reports, runs, validation
from core.entities import Progress, Run, no_progress
from core.errors import InvalidInput, NotFound
from core.store import Store

EXECUTORS_ENV = "MODELDECK_EXECUTORS"
MAX_DEFAULT_EXECUTORS = 4
CLAIM_AHEAD = 2  # runs claimed per executor process: one executing, the rest next in line
PARENT_CHECK_SECONDS = 0.5  # how often an executor process looks for its worker
DIED = (
    "The worker's executor process running it died (killed, or out of memory); the worker "
    "started a new one. Run it again; if it keeps happening, check the worker's log and "
    "the machine's memory."
)
LOST = "its executor process died"  # the message of a run queued again after that

log = logging.getLogger("modeldeck.worker")
T = TypeVar("T")


def executor_count(given: int | None = None) -> int:
    """How many executor processes a worker starts: `given` (`--executors`), else
    $MODELDECK_EXECUTORS, else one per core, 1 to 4 (each holds its own copy of the libraries
    and of the models it ran, ~300 MB). 0 means in the worker's own process."""
    where, value = (
        ("--executors", str(given))
        if given is not None
        else (f"${EXECUTORS_ENV}", os.environ.get(EXECUTORS_ENV, "").strip())
    )
    if not value:
        return min(max(os.cpu_count() or 1, 1), MAX_DEFAULT_EXECUTORS)
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise InvalidInput(
            f"{where} must be a whole number, 0 or more, not '{value}'.",
            "Give 0 to run pipelines in the worker's own process, or how many "
            "processes to run them on (e.g. the machine's cores).",
        )
    return count


def after_run(store: Store, done: Run, progress: Progress = no_progress) -> None:
    """The steps after a run's outcome is recorded, in order; none of them fails the run or
    raises (each logs its own trouble). Then the run's pending mark goes."""
    explain.after_run(store, done, progress)  # global importance
    drift.after_run(store, done)  # per-run drift counts
    validation.after_run(store, done)  # a validation run's report
    reports.after_run(store, done)  # the run's HTML report (after drift: it shows it)
    (store.workspace.pending_dir / done.id).unlink(missing_ok=True)


def mark_pending(store: Store, run_ids: list[str]) -> None:
    """Note that these runs' after-run steps are still to do (an empty file each), so a worker
    stopped or killed before doing them leaves them to the next one (`pending_runs`)."""
    if run_ids:
        store.workspace.pending_dir.mkdir(exist_ok=True)
        for run_id in run_ids:
            (store.workspace.pending_dir / run_id).touch()


def pending_runs(store: Store) -> list[Run]:
    """Finished runs whose after-run steps a stopped worker left, oldest first; marks of runs
    that are gone or not finished are dropped."""
    folder = store.workspace.pending_dir
    found = []
    for mark in sorted(folder.iterdir()) if folder.is_dir() else ():
        try:
            run = runs.get_run(store, mark.name)
        except NotFound:
            run = None
        if run is None or run.status not in ("succeeded", "failed"):
            mark.unlink(missing_ok=True)
        else:
            found.append(run)
    return sorted(found, key=lambda r: (r.finished_at or r.queued_at, r.id))


class Inline:
    """Executes at submit time, in this process; the returned future is already done."""

    size = 1
    depth = 1  # a run waiting behind a long one here would get no lease renewal: claim one

    def __init__(
        self, store: Store, progress: Callable[[], Progress] = lambda: no_progress
    ) -> None:
        self.store, self.progress = store, progress

    def run(
        self, claim: runs.Claim, worker_id: str, lease_seconds: float | None
    ) -> Future[runs.Outcome]:
        return _now(
            lambda: execution.execute_claimed(
                self.store,
                claim.run,
                worker_id,
                self.progress(),
                lease_seconds=lease_seconds,
                pins=claim.pins,
            )
        )

    def after(self, done: Run) -> Future[None]:
        return _now(lambda: after_run(self.store, done, self.progress()))

    @property
    def broken(self) -> bool:
        return False

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


def _now(job: Callable[[], T]) -> Future[T]:
    """A done future holding job()'s result (an Exception is kept in it, not raised)."""
    future: Future[T] = Future()
    try:
        future.set_result(job())
    except Exception as exc:
        future.set_exception(exc)
    return future


class Pool:
    """`size` spawned executor processes, one slot each (see the module doc)."""

    def __init__(self, home: Path, size: int) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one executor process")
        self.home, self.size, self.depth = home, size, size * CLAIM_AHEAD
        self._slots = [self._start() for _ in range(size)]
        self._jobs: dict[Future[Any], int] = {}  # submitted, maybe not done: its slot

    def _start(self) -> ProcessPoolExecutor:
        slot = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_child_start,
            initargs=(str(self.home), os.getpid(), logging.getLogger().level),
        )
        slot.submit(_child_ready)  # start the process now, not at the first run
        return slot

    def _submit(self, job: Callable[..., T], *args: object) -> Future[T]:
        """Submit to a slot with no unfinished job (the least busy one if none is free)."""
        self._jobs = {f: i for f, i in self._jobs.items() if not f.done()}
        busy = [0] * self.size
        for index in self._jobs.values():
            busy[index] += 1
        index = busy.index(min(busy))
        future = self._slots[index].submit(job, *args)
        self._jobs[future] = index
        return future

    def run(
        self, claim: runs.Claim, worker_id: str, lease_seconds: float | None
    ) -> Future[runs.Outcome]:
        return self._submit(_child_run, claim, worker_id, lease_seconds)

    def after(self, done: Run) -> Future[None]:
        return self._submit(_child_after, done)

    @property
    def broken(self) -> bool:
        return any(_is_broken(slot) for slot in self._slots)

    def pids(self) -> list[int]:
        """The executor processes' ids (started by now, unless one died)."""
        return sorted(pid for slot in self._slots for pid in _processes(slot))

    def pid_of(self, future: Future[Any]) -> int | None:
        """The process executing a job submitted here (None once it is done)."""
        index = self._jobs.get(future)
        if index is None or future.done():
            return None
        return next(iter(_processes(self._slots[index])), None)

    def restart(self) -> None:
        """A new process in each slot whose process died, once its job has failed (the pool
        marks itself broken just before it fails the job)."""
        unfinished = {i for f, i in self._jobs.items() if not f.done()}
        for index, slot in enumerate(self._slots):
            if _is_broken(slot) and index not in unfinished:
                _stop(slot)
                self._slots[index] = self._start()

    def close(self) -> None:
        """Stop at once: runs still executing are killed (the worker records them)."""
        for slot in self._slots:
            _stop(slot)


def _is_broken(slot: ProcessPoolExecutor) -> bool:
    return bool(getattr(slot, "_broken", False))


def _processes(slot: ProcessPoolExecutor) -> dict[int, multiprocessing.Process]:
    # ProcessPoolExecutor has no terminate before Python 3.14; its process table is the
    # documented-in-source way to stop them instead of waiting for runs to end.
    return dict(getattr(slot, "_processes", None) or {})


def _stop(slot: ProcessPoolExecutor) -> None:
    processes = list(_processes(slot).values())
    slot.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)


# ---------------------------------------------------------------------------- in the child
_STORE: Store | None = None


def _child_start(home: str, parent_pid: int, level: int) -> None:
    global _STORE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group
    logging.basicConfig(
        level=level or logging.INFO, format="%(asctime)s %(name)s[executor %(process)d] %(message)s"
    )
    _STORE = Store.open(home)
    threading.Thread(
        target=_exit_with_parent, args=(parent_pid,), daemon=True, name="watch-worker"
    ).start()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)  # the worker is gone: its runs will be failed by lease expiry


def _child_store() -> Store:
    assert _STORE is not None, "executor process not initialised"
    return _STORE


def _child_ready() -> int:
    return os.getpid()


def _child_run(claim: runs.Claim, worker_id: str, lease_seconds: float | None) -> runs.Outcome:
    return execution.execute_claimed(
        _child_store(), claim.run, worker_id, lease_seconds=lease_seconds, pins=claim.pins
    )


def _child_after(done: Run) -> None:
    after_run(_child_store(), done)


def result_or(future: Future[T], fallback: Callable[[BaseException], T]) -> T:
    """A done future's result; an exception (a dead executor, a bug) goes through fallback."""
    try:
        return future.result()
    except Exception as exc:  # BrokenProcessPool, or whatever the job raised
        return fallback(exc)


def is_dead(exc: BaseException) -> bool:
    """Whether a job failed because its executor process died."""
    return isinstance(exc, BrokenProcessPool)


def describe(exc: BaseException) -> str:
    """The error recorded on a run whose executor job raised."""
    return (
        DIED
        if is_dead(exc)
        else (
            f"Internal error ({type(exc).__name__}: {exc}). This is a bug in ModelDeck, not in "
            "your data: the worker's log has the details."
        )
    )


__all__ = [
    "CLAIM_AHEAD",
    "DIED",
    "EXECUTORS_ENV",
    "LOST",
    "Inline",
    "Pool",
    "after_run",
    "describe",
    "executor_count",
    "is_dead",
    "mark_pending",
    "pending_runs",
    "result_or",
]
