"""The worker: one tick at a time in-process, and real worker processes sharing one queue."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from core import drift, execution, explain, runs
from core.entities import Deployment
from core.store import Store, Tx
from core.worker import executors
from core.worker import loop as worker
from core.worker.sidecars import HEARTBEAT_FILE, worker_status
from tests.worker_helpers import failed_by_lease_expiry, queue_big_run, wait_until_scoring

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
# A worker process: executes queued runs until none is left, prints how many it executed.
WORKER_SCRIPT = """
import sys
from core.store import Store
from core.worker.loop import run_once
store = Store.open(sys.argv[1])
done = 0
while run_once(store, sys.argv[2]):
    done += 1
print(done)
"""
# A worker process ticking like `modeldeck worker`, but with no full check in sight: only the
# queue marker can wake it. Says "ready" after its first tick, stops after argv[3] runs.
TICK_SCRIPT = """
import sys, time
from core.store import Store
from core.worker.loop import Tick
tick = Tick(Store.open(sys.argv[1]), sys.argv[2], full_check_seconds=3600)
done = tick()
print("ready", flush=True)
while done < int(sys.argv[3]):
    time.sleep(0.05)
    done += tick()
print(done)
"""
# Queues one run of a deployment from its own process.
ENQUEUE_SCRIPT = """
import sys
from core import runs
from core.store import Store
print(runs.enqueue_run(Store.open(sys.argv[1]), sys.argv[2], actor="tester").id)
"""


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    return deploy_churn("gradient_boosting", challenger="linear")


def start_worker(
    store: Store, worker_id: str, script: str = WORKER_SCRIPT, *args: str, **env: str
) -> subprocess.Popen[str]:
    """A new worker process (spawned, never forked: DESIGN.md, traps)."""
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen(
        [sys.executable, "-c", script, str(store.workspace.home), worker_id, *args],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def count_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every store connection from now on ("read" or "write"), in order."""
    opened: list[str] = []
    original = Store._once

    def counting(self: Store, fn: Callable[[Tx], T], *, write: bool) -> T:
        opened.append("write" if write else "read")
        return original(self, fn, write=write)

    monkeypatch.setattr(Store, "_once", counting)
    return opened


def test_run_once_executes_the_oldest_queued_run(
    trained_store: Store, deployed: Deployment
) -> None:
    assert worker.run_once(trained_store, "w1") is False  # nothing queued
    first = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    second = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    assert worker.run_once(trained_store, "w1") is True
    assert runs.get_run(trained_store, first.id).status == "succeeded"
    assert runs.get_run(trained_store, second.id).status == "queued"
    beat = json.loads((trained_store.workspace.home / HEARTBEAT_FILE).read_text())
    assert beat["runs_in_flight"] == 0 and beat["pid"] == os.getpid()
    assert worker_status(trained_store.workspace).is_alive


def test_a_job_that_raises_does_not_stop_the_worker(
    trained_store: Store,
    deployed: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queued = [runs.enqueue_run(trained_store, deployed.name, actor="tester").id for _ in range(2)]
    original, calls = runs.claim_runs, []

    def locked_once(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runs, "claim_runs", locked_once)
    with caplog.at_level(logging.ERROR, logger="modeldeck.worker"):
        worker.run_forever(trained_store, max_ticks=3, idle_seconds=0)
    assert "worker tick failed; going on" in caplog.text and "boom" in caplog.text
    assert [runs.get_run(trained_store, r).status for r in queued] == ["succeeded"] * 2
    beat = json.loads((trained_store.workspace.home / HEARTBEAT_FILE).read_text())
    assert beat["runs_in_flight"] == 0


def test_a_run_that_raises_is_failed_and_the_worker_goes_on(
    trained_store: Store, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = [runs.enqueue_run(trained_store, deployed.name, actor="tester").id for _ in range(2)]

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(execution, "execute_claimed", explode)
    worker.run_forever(trained_store, max_ticks=2, idle_seconds=0)
    failed = [runs.get_run(trained_store, r) for r in queued]
    assert [r.status for r in failed] == ["failed"] * 2
    assert all(r.error.startswith("Internal error (RuntimeError: boom)") for r in failed)
    assert all("bug in ModelDeck" in r.error for r in failed)


def test_the_heartbeat_of_an_idle_worker(store: Store) -> None:
    worker.run_forever(store, once=True)
    assert worker_status(store.workspace).is_alive
    assert "0 runs" in worker_status(store.workspace).detail


def test_an_idle_tick_reads_the_queue_marker_not_the_store(
    trained_store: Store, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    tick = worker.Tick(trained_store, "w1")
    opened = count_connections(monkeypatch)
    assert tick() == 0  # the first tick is a full check: leases, old slots, schedules, queue
    assert opened == ["write", "write", "read", "write"]
    opened.clear()
    assert [tick() for _ in range(5)] == [0] * 5
    assert opened == []  # idle: nothing queued, no slot due, no full check due
    queued = runs.enqueue_run(trained_store, deployed.name, actor="tester")  # touches the marker
    opened.clear()
    assert tick() == 1
    assert runs.get_run(trained_store, queued.id).status == "succeeded"
    assert opened[:2] == ["read", "write"]  # schedules re-read, then the claim
    opened.clear()
    assert tick() == 0 and opened == []


def test_an_idle_full_check_leaves_the_stores_version_alone(
    trained_store: Store, deployed: Deployment
) -> None:
    """The UI keeps reads until Store.version moves: the worker's timers (heartbeat, lease
    expiry, slots due, slot pruning) must not move it while there is nothing to do."""
    tick = worker.Tick(trained_store, "w1")
    assert tick() == 0
    then = time.time() - 60  # as if the last write was a minute ago (not within RACY_SECONDS)
    db = trained_store.workspace.db_path
    for path in (db, db.with_name(db.name + ".wal")):
        if path.exists():
            os.utime(path, (then, then))
    kept = trained_store.version()
    assert kept is not None
    tick.full_check_at = tick.prune_at = time.monotonic()  # both due
    assert tick() == 0
    worker.run_forever(trained_store, once=True)  # the heartbeat too
    assert trained_store.version() == kept
    runs.enqueue_run(trained_store, deployed.name, actor="tester")  # a real write
    assert trained_store.version() != kept


def test_the_full_check_finds_a_run_queued_without_the_marker(
    trained_store: Store, deployed: Deployment
) -> None:
    tick = worker.Tick(trained_store, "w1")
    assert tick() == 0
    silent = trained_store.write(  # as a process that died before touching the marker
        lambda tx: runs.insert_run(tx, deployed.name, "manual", None, "tester")
    )
    assert tick() == 0  # the marker is only a hint: nothing told this tick
    tick.full_check_at = time.monotonic()  # FULL_CHECK_SECONDS later
    assert tick() == 1
    assert runs.get_run(trained_store, silent).status == "succeeded"


def test_a_run_queued_by_another_process_wakes_an_idle_tick(
    trained_store: Store, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    tick = worker.Tick(trained_store, "w1")
    assert tick() == 0
    opened = count_connections(monkeypatch)
    assert tick() == 0 and opened == []
    child = subprocess.run(
        [sys.executable, "-c", ENQUEUE_SCRIPT, str(trained_store.workspace.home), deployed.name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    assert tick() == 1
    assert runs.get_run(trained_store, child.stdout.split()[-1]).status == "succeeded"


@pytest.mark.slow
def test_a_worker_process_wakes_on_a_run_queued_here(
    trained_store: Store, deployed: Deployment
) -> None:
    child = start_worker(trained_store, "marker-woken", TICK_SCRIPT, "1")
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        queued = runs.enqueue_run(trained_store, deployed.name, actor="tester")
        out, err = child.communicate(timeout=120)  # its next full check is an hour away
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0 and out.split()[-1] == "1", err
    done = runs.get_run(trained_store, queued.id)
    assert (done.status, done.lease_owner) == ("succeeded", "marker-woken")


@pytest.mark.slow
def test_two_worker_processes_execute_each_run_exactly_once(
    trained_store: Store, deployed: Deployment
) -> None:
    queued = [runs.enqueue_run(trained_store, deployed.name, actor="tester").id for _ in range(4)]
    workers = [start_worker(trained_store, f"w{i}") for i in (1, 2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outputs]
    assert sum(int(out.split()[-1]) for out, _ in outputs) == 4
    done = [runs.get_run(trained_store, run_id) for run_id in queued]
    assert [(r.status, r.attempt) for r in done] == [("succeeded", 1)] * 4
    assert {r.lease_owner for r in done} <= {"w1", "w2"}


@pytest.mark.slow
def test_a_killed_worker_leaves_a_failed_run_and_earlier_results(
    trained_store: Store, deployed: Deployment
) -> None:
    earlier_id = runs.enqueue_run(trained_store, deployed.name, actor="tester").id
    assert worker.run_once(trained_store, "in-process")
    earlier = runs.result_path(trained_store.workspace, earlier_id)
    before = earlier.read_bytes()
    doomed = queue_big_run(trained_store, deployed)
    child = start_worker(trained_store, "doomed", MODELDECK_LEASE_SECONDS="2")
    try:
        wait_until_scoring(trained_store, doomed.id, lambda: child.poll() is None)
        partial = runs.results_dir(trained_store.workspace, doomed.id)
        assert (partial / ".main.parquet.tmp").exists()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert runs.get_run(trained_store, doomed.id).status == "running"  # nobody knows yet
    failed = failed_by_lease_expiry(trained_store, doomed.id)
    assert failed.status == "failed" and failed.error.startswith("worker lost (lease expired")
    assert not partial.exists()
    assert earlier.read_bytes() == before


def _record_order(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record "run ID" as each run starts executing and "after ID" as its after-steps start."""
    order: list[str] = []
    original_execute, original_after = execution.execute_claimed, executors.after_run
    monkeypatch.setattr(
        execution,
        "execute_claimed",
        lambda store, run, *a, **k: (
            order.append(f"run {run.id}"),
            original_execute(store, run, *a, **k),
        )[1],
    )
    monkeypatch.setattr(
        executors,
        "after_run",
        lambda store, done, *a: (order.append(f"after {done.id}"), original_after(store, done, *a))[
            1
        ],
    )
    return order


def test_steps_after_runs_wait_until_no_run_is_queued(
    trained_store: Store, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = _record_order(monkeypatch)
    queued = [runs.enqueue_run(trained_store, deployed.name, actor="tester") for _ in range(3)]
    tick = worker.Tick(trained_store, "w1")
    assert tick() == 3
    assert order == [f"run {r.id}" for r in queued] + [f"after {r.id}" for r in queued]
    assert tick.deferred == []
    for run in queued:  # the steps really ran: global importance and drift counts are there
        assert explain.get_importance(trained_store, run.id) is not None
        assert drift.counts_path(trained_store, run.id, None).exists()


def test_a_step_deferred_too_long_goes_before_the_next_run(
    trained_store: Store, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "DEFER_SECONDS", 0.0)  # every finished run is already stale
    order = _record_order(monkeypatch)
    first, second, third = [
        runs.enqueue_run(trained_store, deployed.name, actor="tester") for _ in range(3)
    ]
    tick = worker.Tick(trained_store, "w1")
    assert tick() == 3
    # A run's outcome is recorded with the next claim: the first run's steps go as soon as
    # it is recorded, before the third run starts, and so on.
    assert order == [
        f"run {first.id}",
        f"run {second.id}",
        f"after {first.id}",
        f"run {third.id}",
        f"after {second.id}",
        f"after {third.id}",
    ]
    assert [runs.get_run(trained_store, r.id).status for r in (first, second, third)] == [
        "succeeded"
    ] * 3


def test_the_worker_removes_logged_days_past_the_retention(
    trained_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from core import prediction_log
    from core.store import utcnow

    workspace = trained_store.workspace
    log = prediction_log.PredictionLog(workspace)
    today = utcnow().date()
    for age in (0, 1, 2, 40):
        day = today - timedelta(days=age)
        log.write({"kind": "main", "request_id": f"age{age}", "logged_at": f"{day}T01:00:00"})
    log.close()
    monkeypatch.setenv(prediction_log.RETENTION_ENV, "2")
    tick = worker.Tick(trained_store, "w1")
    tick()  # compacts the closed segment, then prunes
    ids = sorted(prediction_log.read_all(workspace)["request_id"].to_pylist())
    assert ids == ["age0", "age1"]
    monkeypatch.delenv(prediction_log.RETENTION_ENV)
    log = prediction_log.PredictionLog(workspace)
    log.write({"kind": "main", "request_id": "old", "logged_at": f"{today.replace(year=2020)}"})
    log.close()
    worker.Tick(trained_store, "w2")()  # no retention: every day is kept
    assert "old" in prediction_log.read_all(workspace)["request_id"].to_pylist()


def test_a_wrong_retention_stops_the_worker_before_it_starts(
    trained_store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli.main import main

    monkeypatch.setenv("MODELDECK_HOME", str(trained_store.workspace.home))
    monkeypatch.setenv("MODELDECK_LOG_RETENTION_DAYS", "30d")
    monkeypatch.setattr(worker, "run_forever", lambda *a, **k: pytest.fail("it started"))
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "MODELDECK_LOG_RETENTION_DAYS is '30d': it must be a whole number of days." in err
    assert "or to 0 to keep every day" in err
