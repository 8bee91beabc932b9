"""The worker sidecar: claims queued runs and executes them, with a heartbeat file.

Each tick fails runs whose lease expired (their worker died), claims the oldest queued run and
executes it, renewing its lease as it goes. A job that raises is logged and the loop goes on:
nothing a run does can stop the worker. Start it as its own process (`modeldeck worker`),
never forked from one that has the store open (DESIGN.md, traps).
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
from pathlib import Path
from typing import Any

import core.artifacts  # noqa: F401  (skops takes ~1 s to import: at startup, not in a run)
from core import runs
from core.entities import Progress
from core.sidecars import HEARTBEAT_FILE
from core.store import Store, utcnow
from core.workspace import atomic_write_bytes

HEARTBEAT_SECONDS = 5.0
IDLE_SECONDS = 1.0  # how often an idle worker looks for queued runs

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


def _loop(store: Store, worker_id: str, *, once: bool, idle_seconds: float,
          max_ticks: int | None) -> None:
    ticks, last_beat = 0, 0.0
    while True:
        ticks += 1
        busy = False
        try:
            busy = run_once(store, worker_id)
        except Exception:  # a job (or the store) failing must not stop the worker
            log.exception("worker tick failed; going on")
        if time.monotonic() - last_beat >= HEARTBEAT_SECONDS or busy:
            _safe_heartbeat(store)
            last_beat = time.monotonic()
        if once or (max_ticks is not None and ticks >= max_ticks):
            return
        if not busy:
            time.sleep(idle_seconds)


def _safe_heartbeat(store: Store) -> None:
    try:
        write_heartbeat(store)
    except OSError:
        log.exception("could not write the heartbeat file %s",
                      Path(store.workspace.home) / HEARTBEAT_FILE)
