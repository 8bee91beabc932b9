"""The run lifecycle: the only status moves a run makes, each made by a function of core/runs.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core import execution, promotion, runs
from core.entities import Deployment, Run
from core.errors import Conflict
from core.store import Store

WORKER = "lifecycle-worker"


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    return deploy_churn("linear")


def force_status(store: Store, run_id: str, status: str) -> None:
    """Put a run in `status` directly (a test's shortcut to every starting point)."""
    store.write(lambda tx: tx.execute("UPDATE runs SET status = ? WHERE id = ?", [status, run_id]))


def status_of(store: Store, run_id: str) -> str:
    return runs.get_run(store, run_id).status


def test_the_lifecycle_table() -> None:
    assert runs.TRANSITIONS == {
        "queued": ("running", "cancelled"),
        "running": ("succeeded", "failed", "cancelled", "queued"),
        "failed": ("succeeded",),
        "succeeded": (),
        "cancelled": (),
    }
    assert set(runs.TRANSITIONS) == set(runs.STATUSES)
    assert {s for s in runs.STATUSES if not runs.TRANSITIONS[s]} <= set(runs.FINISHED)


@pytest.mark.parametrize("start", runs.STATUSES)
def test_claiming_moves_only_a_queued_run(
    trained_store: Store, deployed: Deployment, start: str
) -> None:
    run = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    force_status(trained_store, run.id, start)
    if "running" in runs.TRANSITIONS[start]:
        claimed = trained_store.write(lambda tx: runs.claim_run(tx, run.id, WORKER))
        assert (claimed.status, claimed.lease_owner, claimed.attempt) == ("running", WORKER, 1)
    else:
        with pytest.raises(Conflict, match="is not queued any more"):
            trained_store.write(lambda tx: runs.claim_run(tx, run.id, WORKER))
        assert status_of(trained_store, run.id) == start


@pytest.mark.parametrize("start", runs.STATUSES)
def test_deleting_the_deployment_cancels_only_unfinished_runs(
    trained_store: Store, deployed: Deployment, start: str
) -> None:
    run = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    force_status(trained_store, run.id, start)
    promotion.delete_deployment(trained_store, deployed.name, confirm=deployed.name, actor="tester")
    after = runs.get_run(trained_store, run.id)
    if "cancelled" in runs.TRANSITIONS[start]:
        assert (after.status, after.error) == ("cancelled", "deployment deleted")
    else:
        assert (after.status, after.error) == (start, None)


@pytest.mark.parametrize("start", runs.STATUSES)
def test_an_outcome_is_recorded_only_on_a_running_run(
    trained_store: Store, deployed: Deployment, start: str
) -> None:
    run = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    trained_store.write(lambda tx: runs.claim_run(tx, run.id, WORKER))
    force_status(trained_store, run.id, start)
    recorded = runs.record_outcome(trained_store, WORKER, runs.Outcome(run.id, "failed", "boom"))
    if start == "running":
        assert recorded is not None and (recorded.status, recorded.error) == ("failed", "boom")
    else:
        assert recorded is None and status_of(trained_store, run.id) == start


def test_an_outcome_outside_the_table_is_refused(
    trained_store: Store, deployed: Deployment
) -> None:
    run = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    trained_store.write(lambda tx: runs.claim_run(tx, run.id, WORKER))
    for status in ("queued", "running", "paused"):
        with pytest.raises(ValueError, match=f"cannot finish as '{status}'"):
            runs.record_outcome(trained_store, WORKER, runs.Outcome(run.id, status))
    assert status_of(trained_store, run.id) == "running"


def test_a_released_claim_is_queued_again_and_a_finished_run_is_not(
    trained_store: Store, deployed: Deployment
) -> None:
    first, second = (
        runs.enqueue_run(trained_store, deployed.name, actor="tester") for _ in range(2)
    )
    claims, _ = runs.claim_runs(trained_store, WORKER, 2)
    assert [c.run.id for c in claims] == [first.id, second.id]
    force_status(trained_store, second.id, "succeeded")
    runs.release_claims(trained_store, WORKER, [first.id, second.id])
    assert status_of(trained_store, first.id) == "queued"
    assert runs.get_run(trained_store, first.id).attempt == 0
    assert status_of(trained_store, second.id) == "succeeded"


def test_a_failed_run_succeeds_only_when_its_results_are_delivered(
    trained_store: Store, deployed: Deployment
) -> None:
    run = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    claimed = execution.claim_next_run(trained_store, WORKER)
    assert claimed is not None
    done: Run = execution.execute_run(trained_store, claimed, WORKER)
    assert done.status == "succeeded"
    force_status(trained_store, run.id, "failed")
    attempt = {"ok": False, "error": "disk full"}
    before, failed = trained_store.write(lambda tx: runs.record_delivery(tx, run.id, attempt, None))
    assert (before, failed.status, failed.error) == ("failed", "failed", "disk full")
    attempt = {"ok": True, "error": None}
    before, fixed = trained_store.write(lambda tx: runs.record_delivery(tx, run.id, attempt, []))
    assert (before, fixed.status, fixed.error) == ("failed", "succeeded", None)
    assert [d["ok"] for d in fixed.summary["deliveries"]] == [False, True]
    force_status(trained_store, run.id, "cancelled")
    with pytest.raises(Conflict, match="changed while it was being delivered"):
        trained_store.write(lambda tx: runs.record_delivery(tx, run.id, attempt, []))
