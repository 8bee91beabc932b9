"""A worker SIGKILLed while writing a run's sinks: complete results are kept for re-delivery,
the temporary file of the interrupted sink goes, and "deliver again" then works.

A real worker process, a real PostgreSQL sink held up by a table lock (so the kill lands in
the sink write every time), real lease expiry by a next worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from core import delivery, deployments, runs
from core.entities import Deployment
from core.store import Store
from tests import pg_server
from tests.pg_server import PgServer, pg_sink
from tests.test_executors import sigkill_worker, worker_process
from tests.test_runs import execute
from tests.worker_helpers import failed_by_lease_expiry

# Fixtures: the session's server, connection 'warehouse' + table customers.
pg, warehouse = pg_server.pg, pg_server.warehouse
FOLDER = "exports/scores"


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment], warehouse: str) -> Deployment:
    return deploy_churn("linear")


def _wait(condition: Callable[[], bool], what: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 90
    while not condition():
        assert alive(), f"the worker died before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_in_a_sink_write_keeps_complete_results_for_redelivery(
    trained_store: Store, deployed: Deployment, pg: PgServer
) -> None:
    store = trained_store
    sinks = [pg_sink("scores"), {"kind": "folder", "path": FOLDER, "format": "csv"}]
    deployments.update_pipeline(
        store, deployed.name, {**deployed.pipeline, "sinks": sinks}, actor="tester"
    )
    first = execute(store, deployed.name)  # creates table scores
    assert first.status == "succeeded", first.error
    run = runs.enqueue_run(store, deployed.name, actor="tester")
    stem = f"{deployed.name}-{run.id}"
    folder = store.workspace.home / FOLDER
    # What a write killed half-way leaves (atomic_path's temporary name), and files that are
    # not this run's, which must stay.
    orphan = folder / f".{stem}.csv.k1ll3d.tmp"
    orphan.write_bytes(b"half a csv")
    others = [folder / f".{deployed.name}-run_other.csv.abcd.tmp", folder / f"{stem}x.csv"]
    for path in others:
        path.write_bytes(b"not this run's")
    blocker = pg.connect()
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE")
    with worker_process(store, "--executors", "1", MODELDECK_LEASE_SECONDS="2") as child:
        alive = lambda: child.poll() is None  # noqa: E731
        _wait(lambda: runs.get_run(store, run.id).message == "writing sinks", "the sinks", alive)
        _wait(
            lambda: pg.run("SELECT count(*) FROM pg_locks WHERE NOT granted")[0][0] > 0,
            "the sink waiting for the table",
            alive,
        )
        sigkill_worker(child)
    lost = failed_by_lease_expiry(store, run.id)
    blocker.rollback()
    blocker.close()
    assert lost.status == "failed"
    assert lost.error.startswith("worker lost (lease expired at ")
    assert lost.error.endswith(
        "while writing the sinks. The predictions are complete and kept: deliver them again."
    )
    assert lost.summary["results_written"] is True and lost.rows_out == first.rows_out
    assert runs.result_path(store.workspace, run.id).exists()
    assert not list(runs.results_dir(store.workspace, run.id).glob(".*.tmp"))
    assert not orphan.exists() and all(p.exists() for p in others)
    assert delivery.why_not_deliverable(store, lost) is None
    done = delivery.redeliver(store, run.id, actor="tester")
    assert (done.status, done.error) == ("succeeded", None)
    assert pg.run("SELECT count(*) FROM scores WHERE run_id = %s", (run.id,)) == [(first.rows_out,)]
    assert (folder / f"{stem}.csv").exists()
