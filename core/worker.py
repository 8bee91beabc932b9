"""The worker sidecar: queues due schedule slots, claims queued runs and executes them.

A `schedule` loop runs three jobs: re-read the schedules (when is the next slot due), the tick
(queue due slots; fail or retry runs whose lease expired; claim the oldest queued run and
execute it, renewing its lease, until the queue is empty) and the heartbeat file. Every job is
wrapped: one that raises is logged and the loop goes on, nothing a run does stops the worker.
Start it as its own process (`modeldeck worker`), never forked from one that has the store
open (DESIGN.md, traps).
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
from datetime import datetime
from pathlib import Path
from typing import Any

import schedule

import core.artifacts  # noqa: F401  (skops takes ~1 s to import: at startup, not in a run)
from core import drift, explain, runs, scheduler
from core.entities import Progress
from core.sidecars import HEARTBEAT_FILE
from core.store import Store, utcnow
from core.workspace import atomic_write_bytes

HEARTBEAT_SECONDS = 5.0
IDLE_SECONDS = 1.0  # how often an idle worker looks for queued runs
SYNC_SECONDS = 10.0  # how often it re-reads schedules (a slot due sooner wakes it anyway)

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
    for run_id in runs.expire_leases(store):
        log.warning("run %s failed: its worker was lost (lease expired)", run_id)
    run = runs.claim_next_run(store, worker_id, lease_seconds)
    if run is None:
        return False
    log.info("run %s of %s claimed", run.id, run.deployment_name)
    write_heartbeat(store, runs_in_flight=1)
    try:
        done = runs.execute_run(store, run, worker_id, _beating(store),
                                lease_seconds=lease_seconds)
        log.info("run %s %s%s", run.id, done.status, f": {done.error}" if done.error else "")
        # Global importance: its own step after the outcome is recorded; never fails the run.
        explain.after_run(store, done, _beating(store))
        drift.after_run(store, done)  # per-run drift counts: its own step, never fails the run
    finally:
        write_heartbeat(store, runs_in_flight=0)
    return True


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
    """When the next schedule slot is due, re-read from the store every SYNC_SECONDS, so an
    idle worker touches the store for schedules only when a slot is due (or to re-sync)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.due_at: datetime | None = None

    def sync(self) -> None:
        self.due_at = scheduler.next_due(self.store)

    def enqueue_due(self) -> None:
        if self.due_at is not None and utcnow() >= self.due_at:
            for decision in scheduler.enqueue_due(self.store):
                log.info("%s: %s", decision.deployment_name, decision.note)
            self.sync()


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
    plan = _Plan(store)
    jobs = schedule.Scheduler()

    def work() -> None:
        """Queue due slots, then execute queued runs until none is left."""
        plan.enqueue_due()
        while run_once(store, worker_id):
            _safe_heartbeat(store)
            plan.enqueue_due()

    jobs.every(SYNC_SECONDS).seconds.do(_guarded("schedule sync", plan.sync))
    # `schedule` loops forever on a zero interval: a tick is at least 10 ms apart.
    jobs.every(max(idle_seconds, 0.01)).seconds.do(_guarded("tick", work))
    jobs.every(HEARTBEAT_SECONDS).seconds.do(_guarded("heartbeat",
                                                      lambda: _safe_heartbeat(store)))
    jobs.run_all()  # the first tick at once: sync, work, heartbeat
    ticks = 1
    while not once and (max_ticks is None or ticks < max_ticks):
        # Sleep until the next job is due (never a busy loop: idle CPU stays low).
        time.sleep(min(max(jobs.idle_seconds or 0.0, 0.0), idle_seconds))
        if jobs.idle_seconds is not None and jobs.idle_seconds <= 0:
            ticks += 1
            jobs.run_pending()


def _safe_heartbeat(store: Store) -> None:
    try:
        write_heartbeat(store)
    except OSError:
        log.exception("could not write the heartbeat file %s",
                      Path(store.workspace.home) / HEARTBEAT_FILE)
