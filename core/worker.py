"""The worker sidecar: queues due schedule slots, claims queued runs and executes them.

A `schedule` loop runs two jobs: the tick and the heartbeat file. An idle tick costs one read
of a small marker file, not the store (a connect alone costs ~30 ms): it opens the store only
when the queue marker changed (a run was queued, or a schedule changed, by any process), a
known schedule slot is due, the last drain did not reach an empty queue, or every
FULL_CHECK_SECONDS (fail or retry runs whose lease expired, re-read the schedules, and look
for queued runs as a safety net: the marker is only a hint, the store the truth). Once awake it
queues due slots, then claims and executes runs, renewing their leases, until none is left;
the steps after each run (global importance, drift counts, validation report, HTML report)
follow once no run is waiting (or after DEFER_SECONDS), so they never delay a queued run's
start: a burst of scheduled runs starts as fast as runs alone can go. Every job is wrapped:
one that raises is logged and the loop goes on, nothing a run does stops the worker. Start it
as its own process (`modeldeck worker`), never forked from one that has the store open
(DESIGN.md, traps).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import schedule

import core.artifacts  # noqa: F401  (skops takes ~1 s to import: at startup, not in a run)
from core import drift, explain, reports, runs, scheduler, validation
from core.entities import Progress, Run
from core.sidecars import HEARTBEAT_FILE
from core.store import Store, utcnow
from core.workspace import atomic_write_bytes

HEARTBEAT_SECONDS = 5.0
IDLE_SECONDS = 1.0  # how often an idle worker looks at the queue marker and its plan
FULL_CHECK_SECONDS = 15.0  # how often it opens the store anyway: leases, schedules, queue
WAIT_RECHECK_SECONDS = 5.0  # a slot left due (overlap "wait") is looked at again this late
DEFER_SECONDS = 120.0  # the longest the steps after a run wait behind queued runs
STOP_BUDGET_SECONDS = 10.0  # on the way out, at most this for steps after finished runs
PRUNE_SECONDS = 3600.0  # how often old schedule slots are pruned (scheduler.prune_slots)

log = logging.getLogger("modeldeck.worker")


def new_worker_id() -> str:
    """host:pid:random, unique per worker process (the lease owner on claimed runs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def write_heartbeat(store: Store, runs_in_flight: int = 0) -> None:
    """Record that this worker is alive (a small file, so the UI never waits on the store)."""
    beat = {"pid": os.getpid(), "at": utcnow().isoformat() + "Z",
            "runs_in_flight": runs_in_flight}
    atomic_write_bytes(store.workspace.home / HEARTBEAT_FILE, json.dumps(beat).encode())


def _beating(store: Store) -> Progress:
    """A progress callback that refreshes the heartbeat file while a run executes."""
    last = [time.monotonic()]

    def progress(fraction: float, text: str) -> None:
        if time.monotonic() - last[0] >= HEARTBEAT_SECONDS:
            last[0] = time.monotonic()
            write_heartbeat(store, runs_in_flight=1)

    return progress


def run_once(store: Store, worker_id: str | None = None, *,
             lease_seconds: float | None = None) -> bool:
    """Expire dead leases, then claim and execute one queued run. True if one was executed.

    Errors of the run itself end up on the run row (execute_run never raises for them).
    """
    worker_id = worker_id or new_worker_id()
    expire_lost_runs(store)
    return run_next(store, worker_id, lease_seconds=lease_seconds)


def expire_lost_runs(store: Store) -> list[str]:
    """Fail (or queue again, per retry policy) runs whose worker died; one transaction."""
    expired = runs.expire_leases(store)
    for run_id in expired:
        log.warning("run %s: its worker was lost (lease expired)", run_id)
    if expired:
        runs.touch_queue_marker(store.workspace)  # a retried run is queued again
    return expired


def run_next(store: Store, worker_id: str, *, lease_seconds: float | None = None,
             deferred: list[Run] | None = None) -> bool:
    """Claim and execute the oldest queued run (no lease expiry). True if one was executed.

    The steps after a run (after_run) follow at once, or, given `deferred`, the run is put
    there for the caller to finish when no run is waiting (Tick does), so those steps never
    delay the start of queued runs.
    """
    run = runs.claim_next_run(store, worker_id, lease_seconds)
    if run is None:
        return False
    log.info("run %s of %s claimed", run.id, run.deployment_name)
    write_heartbeat(store, runs_in_flight=1)
    try:
        done = runs.execute_run(store, run, worker_id, _beating(store),
                                lease_seconds=lease_seconds)
        log.info("run %s %s%s", run.id, done.status, f": {done.error}" if done.error else "")
        if deferred is None:
            after_run(store, done)
        else:
            deferred.append(done)
    finally:
        write_heartbeat(store, runs_in_flight=0)
    return True


def after_run(store: Store, done: Run) -> None:
    """The steps after a run's outcome is recorded, in order; none of them fails the run or
    raises (each logs its own trouble)."""
    explain.after_run(store, done, _beating(store))  # global importance
    drift.after_run(store, done)  # per-run drift counts
    validation.after_run(store, done)  # a validation run's report
    reports.after_run(store, done)  # the run's HTML report (after drift: it shows it)


def run_forever(store: Store, *, once: bool = False, idle_seconds: float = IDLE_SECONDS,
                max_ticks: int | None = None) -> None:
    """Execute runs until interrupted (`once`: one tick; `max_ticks`: stop after that many)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    worker_id = new_worker_id()
    print(f"ModelDeck worker {worker_id} on {store.workspace.home}", flush=True)
    previous = _exit_on_sigterm()
    try:
        _loop(store, worker_id, once=once, idle_seconds=idle_seconds, max_ticks=max_ticks)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm() -> Any:
    """SIGTERM (`modeldeck up` stopping, systemd, a CI timeout) unwinds like Ctrl-C, so a run
    in flight is marked failed and its partial files removed instead of waiting for its lease
    to expire. Returns the previous handler (None off the main thread, where we cannot set it).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


class _Plan:
    """When the next schedule slot is due, as last read from the store (re-read on a full
    check or a marker change), so an idle worker touches the store for schedules only when a
    slot is due."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.due_at: datetime | None = None

    def sync(self) -> None:
        self.due_at = scheduler.next_due(self.store)

    def is_due(self) -> bool:
        return self.due_at is not None and utcnow() >= self.due_at

    def enqueue_due(self) -> None:
        if not self.is_due():
            return
        for decision in scheduler.enqueue_due(self.store):
            log.info("%s: %s", decision.deployment_name, decision.note)
        self.sync()
        if self.is_due():  # a slot waiting for a run in flight (overlap "wait"): not every tick
            self.due_at = utcnow() + timedelta(seconds=WAIT_RECHECK_SECONDS)


_UNSEEN = b"\0unseen"  # no marker token looks like this: the first tick always looks


class Tick:
    """The worker's tick: open the store only when there may be work (see the module doc)."""

    def __init__(self, store: Store, worker_id: str, *,
                 full_check_seconds: float = FULL_CHECK_SECONDS) -> None:
        self.store, self.worker_id = store, worker_id
        self.full_check_seconds = full_check_seconds
        self.plan = _Plan(store)
        self.marker: bytes | None = _UNSEEN
        self.full_check_at = float("-inf")  # time.monotonic() of the next full check
        self.has_pending = True  # True until a drain ended with an empty queue
        self.prune_at = float("-inf")  # time.monotonic() of the next slot pruning
        self.deferred: list[Run] = []  # finished runs whose after_run steps are still to do

    def __call__(self) -> int:
        """One tick: the number of runs executed (0 also when it did not open the store)."""
        marker = runs.read_queue_marker(self.store.workspace)
        is_full = time.monotonic() >= self.full_check_at
        is_changed = marker != self.marker
        if not (is_full or is_changed or self.has_pending or self.plan.is_due()):
            return 0
        # Read before draining: a run committed after the drain's last (empty) claim touches
        # the marker after this read, so the next tick sees a new token.
        self.marker = marker
        self.has_pending = True
        try:
            if is_full:
                self._full_check()
            elif is_changed:
                self.plan.sync()
            return self._drain()
        except Exception:
            # The store stayed locked, or a read failed: what this tick learned is unsure, so
            # the next one starts over with a full check (leases, schedules, queue).
            self.full_check_at = float("-inf")
            raise

    def _full_check(self) -> None:
        self.full_check_at = time.monotonic() + self.full_check_seconds
        expire_lost_runs(self.store)
        if time.monotonic() >= self.prune_at:
            self.prune_at = time.monotonic() + PRUNE_SECONDS
            if pruned := scheduler.prune_slots(self.store):
                log.info("pruned %d schedule slots older than %s", pruned, scheduler.KEEP_SLOTS)
        self.plan.sync()

    def _drain(self) -> int:
        """Queue due slots, execute queued runs until none is left, then the steps after
        those runs (a run queued meanwhile goes first; a step waits at most DEFER_SECONDS)."""
        executed = 0
        self.plan.enqueue_due()
        empty: bytes | None = None  # the marker's token when a claim last found no run
        while True:
            if self.deferred and (self._is_stale() or self._nothing_new(empty)):
                after_run(self.store, self.deferred.pop(0))
                continue
            marker = runs.read_queue_marker(self.store.workspace)
            if run_next(self.store, self.worker_id, deferred=self.deferred):
                executed += 1
                _safe_heartbeat(self.store)
                if time.monotonic() >= self.full_check_at:  # a long drain still expires leases
                    self._full_check()
                self.plan.enqueue_due()
                continue
            self.marker = empty = marker  # the queue was empty after this token
            if not self.deferred:
                break
            self.plan.enqueue_due()  # a slot come due goes before the steps, and once only
        self.has_pending = False
        return executed

    def _is_stale(self) -> bool:
        """The oldest deferred run has waited DEFER_SECONDS: its steps go before more runs."""
        finished = self.deferred[0].finished_at
        return finished is not None and utcnow() - finished > timedelta(seconds=DEFER_SECONDS)

    def _nothing_new(self, empty: bytes | None) -> bool:
        """A claim found the queue empty, and since then no run was queued (the marker is
        the same) and no schedule slot came due."""
        return (empty is not None and not self.plan.is_due()
                and runs.read_queue_marker(self.store.workspace) == empty)

    def finish_deferred(self, budget_seconds: float) -> None:
        """On the way out: the steps after finished runs, for at most `budget_seconds`."""
        deadline = time.monotonic() + budget_seconds
        while self.deferred and time.monotonic() < deadline:
            after_run(self.store, self.deferred.pop(0))
        if self.deferred:
            log.warning("stopping with the steps after %d run(s) not done (global importance, "
                        "drift counts, reports): %s", len(self.deferred),
                        ", ".join(r.id for r in self.deferred))


def _guarded(name: str, job: Callable[[], object]) -> Callable[[], None]:
    """A job for `schedule`: whatever it raises is logged, never escapes run_pending() (where
    it would stop the loop and leave the job due forever: DESIGN.md, traps)."""

    def run() -> None:
        try:
            job()
        except Exception:
            log.exception("worker %s failed; going on", name)

    return run


def _loop(store: Store, worker_id: str, *, once: bool, idle_seconds: float,
          max_ticks: int | None) -> None:
    jobs = schedule.Scheduler()
    tick = Tick(store, worker_id)
    # `schedule` loops forever on a zero interval: a tick is at least 10 ms apart.
    jobs.every(max(idle_seconds, 0.01)).seconds.do(_guarded("tick", tick))
    jobs.every(HEARTBEAT_SECONDS).seconds.do(_guarded("heartbeat",
                                                      lambda: _safe_heartbeat(store)))
    try:
        jobs.run_all()  # the first tick at once (a full check), and the heartbeat
        ticks = 1
        while not once and (max_ticks is None or ticks < max_ticks):
            # Sleep until the next job is due (never a busy loop: idle CPU stays low).
            time.sleep(min(max(jobs.idle_seconds or 0.0, 0.0), idle_seconds))
            if jobs.idle_seconds is not None and jobs.idle_seconds <= 0:
                ticks += 1
                jobs.run_pending()
    finally:
        tick.finish_deferred(STOP_BUDGET_SECONDS)  # a stop mid-drain (SIGTERM) leaves some


def _safe_heartbeat(store: Store) -> None:
    try:
        write_heartbeat(store)
    except OSError:
        log.exception("could not write the heartbeat file %s",
                      Path(store.workspace.home) / HEARTBEAT_FILE)
