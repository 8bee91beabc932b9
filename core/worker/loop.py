"""The worker sidecar: queues due schedule slots, claims queued runs and executes them.

A `schedule` loop runs two jobs: the tick and the heartbeat file. An idle tick costs one read
of a small marker file, not the store (a connect alone costs ~30 ms): it opens the store only
when the queue marker changed (a run was queued, or a schedule changed, by any process), a
known schedule slot is due, the last drain did not reach an empty queue, or every
FULL_CHECK_SECONDS (fail or retry runs whose lease expired, re-read the schedules, and look
for queued runs as a safety net: the marker is only a hint, the store the truth). Once awake it
queues due slots, then claims runs and executes them (on executor processes, or in-process:
core/executors.py), renewing their leases, until none is left; the steps after each run
(global importance, drift counts, validation report, HTML report) follow once no run is
waiting (or after DEFER_SECONDS), so they never delay a queued run's start: a burst of
scheduled runs starts as fast as runs alone can go. Every job is wrapped: one that raises is
logged and the loop goes on, nothing a run does stops the worker. Start it as its own process
(`modeldeck worker`), never forked from one that has the store open (DESIGN.md, traps).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import schedule

import core.engine.artifacts  # noqa: F401  (skops takes ~1 s to import: at startup, not in a run)
from core import execution, prediction_log, runs, scheduler, traffic_drift, usage
from core.entities import Progress, Run
from core.store import Store, utcnow
from core.worker import executors
from core.worker.sidecars import HEARTBEAT_FILE
from core.workspace import atomic_write_bytes

HEARTBEAT_SECONDS = 5.0
IDLE_SECONDS = 1.0  # how often an idle worker looks at the queue marker and its plan
FULL_CHECK_SECONDS = 15.0  # how often it opens the store anyway: leases, schedules, queue
WAIT_RECHECK_SECONDS = 5.0  # a slot left due (overlap "wait") is looked at again this late
DEFER_SECONDS = 30.0  # after this, a run's steps get a share of the executors (see _drain)
STOP_BUDGET_SECONDS = 10.0  # SIGTERM to exit, at most (steps left are kept: pending_runs)
PRUNE_SECONDS = 3600.0  # how often old schedule slots and logged days are pruned

log = logging.getLogger("modeldeck.worker")


def new_worker_id() -> str:
    """host:pid:random, unique per worker process (the lease owner on claimed runs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def write_heartbeat(store: Store, runs_in_flight: int = 0) -> None:
    """Record that this worker is alive (a small file, so the UI never waits on the store)."""
    beat = {"pid": os.getpid(), "at": utcnow().isoformat() + "Z", "runs_in_flight": runs_in_flight}
    atomic_write_bytes(store.workspace.home / HEARTBEAT_FILE, json.dumps(beat).encode())


def _beating(store: Store) -> Progress:
    """A progress callback that refreshes the heartbeat file while a run executes."""
    last = [time.monotonic()]

    def progress(fraction: float, text: str) -> None:
        if time.monotonic() - last[0] >= HEARTBEAT_SECONDS:
            last[0] = time.monotonic()
            write_heartbeat(store, runs_in_flight=1)

    return progress


def run_once(
    store: Store, worker_id: str | None = None, *, lease_seconds: float | None = None
) -> bool:
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
    for folder in store.workspace.remove_dead_temp_dirs():
        log.info("removed %s: DuckDB spill files of a process that is gone", folder)
    if expired:
        runs.touch_queue_marker(store.workspace)  # a retried run is queued again
    return expired


def run_next(store: Store, worker_id: str, *, lease_seconds: float | None = None) -> bool:
    """Claim and execute the oldest queued run, then the steps after it (no lease expiry).
    True if one was executed."""
    run = execution.claim_next_run(store, worker_id, lease_seconds)
    if run is None:
        return False
    log.info("run %s of %s claimed", run.id, run.deployment_name)
    write_heartbeat(store, runs_in_flight=1)
    try:
        done = execution.execute_run(
            store, run, worker_id, _beating(store), lease_seconds=lease_seconds
        )
        log.info("run %s %s%s", run.id, done.status, f": {done.error}" if done.error else "")
        after_run(store, done)
    finally:
        write_heartbeat(store, runs_in_flight=0)
    return True


def after_run(store: Store, done: Run) -> None:
    """The steps after a run (core/executors.py), refreshing the heartbeat meanwhile."""
    executors.after_run(store, done, _beating(store))


def run_forever(
    store: Store,
    *,
    once: bool = False,
    idle_seconds: float = IDLE_SECONDS,
    max_ticks: int | None = None,
    processes: int = 0,
) -> None:
    """Execute runs until interrupted (`once`: one tick; `max_ticks`: stop after that many),
    in this process (`processes` 0) or on that many executor processes."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    worker_id = new_worker_id()
    where = f"{processes} executor process(es)" if processes else "runs in-process"
    print(f"ModelDeck worker {worker_id} on {store.workspace.home}, {where}", flush=True)
    previous = _exit_on_sigterm()
    sampler = None if once else usage.Sampler(store.workspace, "worker", children=True).start()
    try:
        _loop(
            store,
            worker_id,
            once=once,
            idle_seconds=idle_seconds,
            max_ticks=max_ticks,
            processes=processes,
        )
    finally:
        if sampler is not None:
            sampler.stop()
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

    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        full_check_seconds: float = FULL_CHECK_SECONDS,
        executor: executors.Inline | executors.Pool | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        self.store, self.worker_id = store, worker_id
        self.full_check_seconds = full_check_seconds
        self.executor = executor or executors.Inline(store, lambda: _beating(store))
        self.lease_seconds = lease_seconds
        self.plan = _Plan(store)
        self.marker: bytes | None = _UNSEEN
        self.full_check_at = float("-inf")  # time.monotonic() of the next full check
        self.has_pending = True  # True until a drain ended with an empty queue
        self.prune_at = float("-inf")  # time.monotonic() of the next slot and log pruning
        self.log_retention = prediction_log.retention_days()  # InvalidInput at start if wrong
        self.claimed: dict[str, Run] = {}  # claimed by this tick, outcome not recorded yet
        self.waiting: list[runs.Claim] = []  # claimed, waiting for a free executor
        self.running: dict[Future[runs.Outcome], str] = {}  # submitted, not done: run id
        self.outcomes: list[runs.Outcome] = []  # done, to record with the next claim
        self.steps: set[Future[None]] = set()  # after-run steps submitted, not done
        self.deferred: list[Run] = []  # finished runs whose after_run steps are still to do
        self.resumed = False  # the steps a stopped worker left were taken over
        self.beat_at = self.renew_at = time.monotonic()

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
        if not self.resumed:  # once per worker: the steps a stopped worker left
            self.resumed = True
            left = executors.pending_runs(self.store)
            known = {r.id for r in self.deferred}
            self.deferred[:0] = [r for r in left if r.id not in known]
            if left:
                log.info(
                    "resuming the after-run steps of %d run(s) left by a stopped worker", len(left)
                )
        try:  # the API's closed prediction-log segments, into Parquet by day
            if compacted := prediction_log.compact(self.store.workspace):
                log.info("compacted %d logged predictions", compacted)
        except OSError as exc:
            log.warning("compacting the prediction log failed: %s", exc)
        else:
            self._keep_drift_counts(compacted)
        try:  # the API's and workers' closed usage segments, into Parquet
            usage.compact(self.store.workspace)
        except Exception:
            log.exception("compacting the usage samples failed")
        if time.monotonic() >= self.prune_at:
            self.prune_at = time.monotonic() + PRUNE_SECONDS
            if pruned := scheduler.prune_slots(self.store):
                log.info("pruned %d schedule slots older than %s", pruned, scheduler.KEEP_SLOTS)
            self._prune_log()
        self.plan.sync()

    def _prune_log(self) -> None:
        """The prediction log's days older than its retention (checked when the worker
        started), removed. Never raises (logged)."""
        if self.log_retention is None:
            return
        try:
            removed = prediction_log.prune(self.store.workspace, self.log_retention)
        except OSError as exc:
            log.warning("pruning the prediction log failed: %s", exc)
        else:
            if removed:
                log.info(
                    "removed %d day(s) of logged calls older than %d days (%s to %s)",
                    len(removed),
                    self.log_retention,
                    removed[0],
                    removed[-1],
                )

    def _keep_drift_counts(self, compacted: int) -> None:
        """After a compaction, the new files' drift counts (a page's first read then sums
        kept counts instead of parsing the inputs). Never raises (logged)."""
        if not compacted:
            return
        try:
            traffic_drift.keep_counts(self.store)
        except Exception:
            log.exception("counting the compacted calls against training failed")

    def _drain(self) -> int:
        """Queue due slots and execute queued runs until none is left, then the steps after
        those runs (a run queued meanwhile goes first; a step waits at most DEFER_SECONDS).

        Each transaction records the outcomes ready so far and claims what the executor can
        take next (one run in-process; CLAIM_AHEAD per executor process), so a busy worker
        opens the store about once per run in-process and once per `size` runs on a pool.
        A claimed run waits here, not in the pool, until an executor is free: a run is handed
        over only to start at once, so a dying executor takes no waiting run with it.
        """
        executor = self.executor
        executed = 0
        self.plan.enqueue_due()
        empty: bytes | None = _UNSEEN  # the marker when a claim last found no run
        while True:
            self._collect()
            stepped = self._start_steps(empty, stale_only=True)  # their share first
            self._submit()
            stepped = self._start_steps(empty) or stepped
            marker = runs.read_queue_marker(self.store.workspace)
            is_open = marker != empty  # the queue may hold runs
            want = executor.depth - len(self.running) - len(self.waiting)
            claim = (
                is_open
                and want > 0
                and (want >= executor.size or not (self.running or self.waiting))
            )
            if claim or (self.outcomes and not is_open):
                claims = self._record_and_claim(want if claim else 0)
                if claim and len(claims) < want:
                    empty = marker  # the queue was empty after this token
                executed += len(claims)
                self._housekeeping()
                continue
            if not (
                self.running
                or self.waiting
                or self.steps
                or self.outcomes
                or self.deferred
                or is_open
            ):
                break
            if not stepped and (self.running or self.steps):
                pending: set[Future[Any]] = {*self.running, *self.steps}
                wait(
                    pending,
                    timeout=IDLE_SECONDS,
                    return_when=FIRST_COMPLETED,
                )
            self._housekeeping()
        self.has_pending = False
        return executed

    def _record_and_claim(self, limit: int) -> list[runs.Claim]:
        """One transaction: record the outcomes so far and claim up to `limit` runs; start
        what an executor can take now."""
        outcomes, self.outcomes = self.outcomes, []
        # Marked before recording: a worker killed right after the commit leaves the steps.
        executors.mark_pending(self.store, [o.run_id for o in outcomes if o.status])
        claims, done = runs.claim_runs(
            self.store, self.worker_id, limit, self.lease_seconds, outcomes
        )
        for outcome in outcomes:
            self.claimed.pop(outcome.run_id, None)
        for run in done:
            log.info("run %s %s%s", run.id, run.status, f": {run.error}" if run.error else "")
        self.deferred.extend(done)
        for claim in claims:
            log.info("run %s of %s claimed", claim.run.id, claim.run.deployment_name)
            self.claimed[claim.run.id] = claim.run
        self.waiting.extend(claims)
        self._submit()
        return claims

    def _submit(self) -> None:
        """Hand claimed runs to free executors, oldest first."""
        while self.waiting and len(self.running) + len(self.steps) < self.executor.size:
            claim = self.waiting.pop(0)
            future = self.executor.run(claim, self.worker_id, self.lease_seconds)
            self.running[future] = claim.run.id
            self._collect()  # in-process, the run is already done

    def _collect(self) -> None:
        """Outcomes of runs done, steps done; a pool whose process died is started again."""
        for future in [f for f in self.running if f.done()]:
            run_id = self.running.pop(future)
            self.outcomes.append(executors.result_or(future, functools.partial(self._lost, run_id)))
        for step in [f for f in self.steps if f.done()]:
            self.steps.discard(step)
            executors.result_or(
                step,
                lambda exc: log.error("steps after a run failed: %s", executors.describe(exc)),
            )
        if self.executor.broken:
            log.error("an executor process died; starting new ones")
            self.executor.restart()

    def _lost(self, run_id: str, exc: BaseException) -> runs.Outcome:
        """The outcome of a run whose executor died (settled by the retry policy when
        recorded: core/lost_runs.py), or raised, which is a bug."""
        log.error("run %s: %s", run_id, executors.describe(exc))
        if executors.is_dead(exc):
            return runs.Outcome(
                run_id, "failed", executors.DIED, finished_at=utcnow(), lost=executors.LOST
            )
        shutil.rmtree(runs.results_dir(self.store.workspace, run_id), ignore_errors=True)
        return runs.Outcome(run_id, "failed", executors.describe(exc), finished_at=utcnow())

    def _start_steps(self, empty: bytes | None, stale_only: bool = False) -> bool:
        """Submit the steps after finished runs to free executors: when no run is waiting
        (nor newly queued), or, once the oldest has waited DEFER_SECONDS, on a share of the
        executors (half, at least one) even while runs wait: steps yield to runs but are
        never starved, and runs never wait behind a pile of steps. True if any started."""
        started = False
        share = max(1, self.executor.size // 2)
        while (
            self.deferred
            and len(self.running) + len(self.steps) < self.executor.size
            and (
                (self._is_stale() and len(self.steps) < share)
                or (
                    not stale_only
                    and not (self.waiting or self.outcomes)
                    and self._nothing_new(empty)
                )
            )
        ):
            self.steps.add(self.executor.after(self.deferred.pop(0)))
            started = True
            self._collect()
        return started

    def _housekeeping(self) -> None:
        """Between claims: due slots, the heartbeat, leases of claimed runs, the full check."""
        now = time.monotonic()
        self.plan.enqueue_due()
        if now - self.beat_at >= HEARTBEAT_SECONDS:
            self.beat_at = now
            _safe_heartbeat(self.store, len(self.claimed))
        lease = self.lease_seconds or runs.default_lease_seconds()
        if self.claimed and now - self.renew_at >= lease / 3:
            self.renew_at = now
            runs.renew_leases(self.store, self.worker_id, list(self.claimed), self.lease_seconds)
        if now >= self.full_check_at:  # a long drain still expires leases
            self._full_check()

    def _is_stale(self) -> bool:
        """The oldest deferred run has waited DEFER_SECONDS: its steps go before more runs."""
        finished = self.deferred[0].finished_at
        return finished is not None and utcnow() - finished > timedelta(seconds=DEFER_SECONDS)

    def _nothing_new(self, empty: bytes | None) -> bool:
        """A claim found the queue empty, and since then no run was queued (the marker is
        the same) and no schedule slot came due."""
        return (
            empty is not _UNSEEN
            and not self.plan.is_due()
            and runs.read_queue_marker(self.store.workspace) == empty
        )

    def close(self, budget_seconds: float) -> None:
        """On the way out, within about `budget_seconds`: stop the executor, record what was
        claimed (runs cut short as stopped, runs not started queued again). Steps after
        finished runs are not done here: their pending marks leave them to the next worker
        (a step can take longer than any budget)."""
        deadline = time.monotonic() + budget_seconds
        self.executor.close()
        # The store's usual 30 s wait for a lock would break the budget: wait what is left.
        self.store = Store(self.store.workspace, lock_timeout=max(deadline - time.monotonic(), 1.0))
        if self.waiting:
            try:
                runs.release_claims(self.store, self.worker_id, [c.run.id for c in self.waiting])
                for claim in self.waiting:
                    self.claimed.pop(claim.run.id, None)
            except Exception:
                log.exception(
                    "could not queue runs %s again; their leases will expire",
                    ", ".join(c.run.id for c in self.waiting),
                )
            self.waiting.clear()
        self._collect_stopped()
        if self.outcomes:
            try:
                self._record_and_claim(0)
            except Exception:
                log.exception(
                    "could not record the outcome of runs %s; their leases will expire",
                    ", ".join(o.run_id for o in self.outcomes),
                )
        if self.deferred:
            log.info(
                "stopping: the steps after %d run(s) (global importance, drift counts, "
                "reports) are left to the next worker: %s",
                len(self.deferred),
                ", ".join(r.id for r in self.deferred),
            )

    def _collect_stopped(self) -> None:
        """Outcomes of every claimed run: as executed if it ended, else stopped."""
        for future in list(self.running):
            if future.done() and not future.cancelled() and future.exception() is None:
                self.outcomes.append(future.result())
                del self.running[future]
        ready = {o.run_id for o in self.outcomes}
        for run_id in self.claimed:
            if run_id not in ready:
                shutil.rmtree(runs.results_dir(self.store.workspace, run_id), ignore_errors=True)
                self.outcomes.append(
                    runs.Outcome(run_id, "failed", execution.STOPPED, finished_at=utcnow())
                )
        self.running.clear()


def _guarded(name: str, job: Callable[[], object]) -> Callable[[], None]:
    """A job for `schedule`: whatever it raises is logged, never escapes run_pending() (where
    it would stop the loop and leave the job due forever: DESIGN.md, traps)."""

    def run() -> None:
        try:
            job()
        except Exception:
            log.exception("worker %s failed; going on", name)

    return run


def _loop(
    store: Store,
    worker_id: str,
    *,
    once: bool,
    idle_seconds: float,
    max_ticks: int | None,
    processes: int,
) -> None:
    jobs = schedule.Scheduler()
    pool = executors.Pool(store.workspace.home, processes) if processes else None
    tick = Tick(store, worker_id, executor=pool)
    # `schedule` loops forever on a zero interval: a tick is at least 10 ms apart.
    # schedule types `interval` as int; it takes float seconds (it builds a timedelta).
    jobs.every(max(idle_seconds, 0.01)).seconds.do(_guarded("tick", tick))  # type: ignore[arg-type]
    jobs.every(HEARTBEAT_SECONDS).seconds.do(  # type: ignore[arg-type]
        _guarded("heartbeat", lambda: _safe_heartbeat(store, len(tick.claimed)))
    )
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
        tick.close(STOP_BUDGET_SECONDS)  # a stop mid-drain (SIGTERM) leaves some


def _safe_heartbeat(store: Store, runs_in_flight: int = 0) -> None:
    try:
        write_heartbeat(store, runs_in_flight)
    except OSError:
        log.exception(
            "could not write the heartbeat file %s", Path(store.workspace.home) / HEARTBEAT_FILE
        )
