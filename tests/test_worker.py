"""The worker: one tick at a time in-process, and real worker processes sharing one queue."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import datasets, deployments, registry, runs, worker
from core.entities import Deployment
from core.sidecars import HEARTBEAT_FILE, worker_status
from core.store import Store

ROOT = Path(__file__).resolve().parents[1]
# A worker process: executes queued runs until none is left, prints how many it executed.
WORKER_SCRIPT = """
import sys
from core.store import Store
from core.worker import run_once
store = Store.open(sys.argv[1])
done = 0
while run_once(store, sys.argv[2]):
    done += 1
print(done)
"""


@pytest.fixture
def deployed(trained_store: Store) -> Deployment:
    by_algorithm = {m.algorithm: m.id for m in registry.list_models(trained_store)}
    return deployments.deploy(trained_store, by_algorithm["gradient_boosting"], "staging",
                              challenger_id=by_algorithm["linear"])


def start_worker(store: Store, worker_id: str, script: str = WORKER_SCRIPT,
                 **env: str) -> subprocess.Popen[str]:
    """A new worker process (spawned, never forked: DESIGN.md, traps)."""
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "-c", script, str(store.workspace.home), worker_id],
                            cwd=ROOT, env=child_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_run_once_executes_the_oldest_queued_run(trained_store: Store,
                                                 deployed: Deployment) -> None:
    assert worker.run_once(trained_store, "w1") is False  # nothing queued
    first = runs.enqueue_run(trained_store, deployed.name)
    second = runs.enqueue_run(trained_store, deployed.name)
    assert worker.run_once(trained_store, "w1") is True
    assert runs.get_run(trained_store, first.id).status == "succeeded"
    assert runs.get_run(trained_store, second.id).status == "queued"
    beat = json.loads((trained_store.workspace.home / HEARTBEAT_FILE).read_text())
    assert beat["runs_in_flight"] == 0 and beat["pid"] == os.getpid()
    assert worker_status(trained_store.workspace).is_alive


def test_a_job_that_raises_does_not_stop_the_worker(trained_store: Store, deployed: Deployment,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    runs.enqueue_run(trained_store, deployed.name)
    runs.enqueue_run(trained_store, deployed.name)
    calls = []

    def explode(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise RuntimeError("boom")

    monkeypatch.setattr(runs, "execute_run", explode)
    with caplog.at_level(logging.ERROR, logger="modeldeck.worker"):
        worker.run_forever(trained_store, max_ticks=3, idle_seconds=0)
    assert len(calls) == 2  # both runs were tried, the third tick found the queue empty
    assert "worker tick failed; going on" in caplog.text and "boom" in caplog.text
    beat = json.loads((trained_store.workspace.home / HEARTBEAT_FILE).read_text())
    assert beat["runs_in_flight"] == 0


def test_the_heartbeat_of_an_idle_worker(store: Store) -> None:
    worker.run_forever(store, once=True)
    assert worker_status(store.workspace).is_alive
    assert "0 runs" in worker_status(store.workspace).detail


@pytest.mark.slow
def test_two_worker_processes_execute_each_run_exactly_once(trained_store: Store,
                                                             deployed: Deployment) -> None:
    queued = [runs.enqueue_run(trained_store, deployed.name).id for _ in range(4)]
    workers = [start_worker(trained_store, f"w{i}") for i in (1, 2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outputs]
    assert sum(int(out.split()[-1]) for out, _ in outputs) == 4
    done = [runs.get_run(trained_store, run_id) for run_id in queued]
    assert [(r.status, r.attempt) for r in done] == [("succeeded", 1)] * 4
    assert {r.lease_owner for r in done} <= {"w1", "w2"}


@pytest.mark.slow
def test_a_killed_worker_leaves_a_failed_run_and_earlier_results(
        trained_store: Store, deployed: Deployment) -> None:
    earlier_id = runs.enqueue_run(trained_store, deployed.name).id
    assert worker.run_once(trained_store, "in-process")
    earlier = runs.result_path(trained_store.workspace, earlier_id)
    before = earlier.read_bytes()
    big = trained_store.workspace.home / "incoming" / "big.parquet"
    big.parent.mkdir()
    datasets.churn_frame(n_rows=30_000).to_parquet(big, index=False)
    deployments.update_pipeline(trained_store, deployed.name,
                                {**deployed.pipeline, "batch_rows": 500})
    doomed = runs.enqueue_run(trained_store, deployed.name,
                              source_override={"kind": "file", "path": "incoming/big.parquet"})
    child = start_worker(trained_store, "doomed", MODELDECK_LEASE_SECONDS="2")
    try:
        deadline = time.monotonic() + 60
        while not runs.get_run(trained_store, doomed.id).message.endswith("rows scored"):
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.05)
        partial = runs.results_dir(trained_store.workspace, doomed.id)
        assert (partial / ".main.parquet.tmp").exists()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert runs.get_run(trained_store, doomed.id).status == "running"  # nobody knows yet
    deadline = time.monotonic() + 10
    while runs.get_run(trained_store, doomed.id).status == "running":  # until the lease ends
        assert time.monotonic() < deadline
        assert worker.run_once(trained_store, "next-worker") is False  # nothing else queued
        time.sleep(0.2)
    failed = runs.get_run(trained_store, doomed.id)
    assert failed.status == "failed" and failed.error.startswith("worker lost (lease expired")
    assert not partial.exists()
    assert earlier.read_bytes() == before
