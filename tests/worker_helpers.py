"""Helpers for tests that stop or kill a worker in the middle of a run."""

from __future__ import annotations

import time
from collections.abc import Callable

from core import datasets, deployments, runs
from core.entities import Deployment, Run
from core.store import Store
from core.worker import loop as worker


def queue_big_run(store: Store, deployed: Deployment) -> Run:
    """A run long enough to be caught mid-way (120k rows in batches of 500: seconds)."""
    big = store.workspace.home / "incoming" / "big.parquet"
    big.parent.mkdir(exist_ok=True)
    datasets.churn_frame(n_rows=120_000).to_parquet(big, index=False)
    deployments.update_pipeline(
        store, deployed.name, {**deployed.pipeline, "batch_rows": 500}, actor="tester"
    )
    return runs.enqueue_run(
        store,
        deployed.name,
        source_override={"kind": "file", "path": "incoming/big.parquet"},
        actor="tester",
    )


def wait_until_scoring(store: Store, run_id: str, alive: Callable[[], object]) -> None:
    """Until the run reports scored rows (after its first second); `alive` must stay true."""
    deadline = time.monotonic() + 90
    while not runs.get_run(store, run_id).message.endswith("rows scored"):
        assert alive() and time.monotonic() < deadline, runs.get_run(store, run_id)
        time.sleep(0.05)


def failed_by_lease_expiry(store: Store, run_id: str) -> Run:
    """Tick a next worker until the dead worker's run leaves 'running' (its lease ends, at
    most 10 s); nothing else may be queued meanwhile. Returns the run as recorded."""
    deadline = time.monotonic() + 10
    while runs.get_run(store, run_id).status == "running":
        assert time.monotonic() < deadline
        assert worker.run_once(store, "next-worker") is False  # nothing else queued
        time.sleep(0.2)
    return runs.get_run(store, run_id)
