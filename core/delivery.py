"""Re-delivery: write a finished run's kept results to its sinks again, without predicting.

A sink failure (database down, a table with incompatible columns) fails the run but keeps its
Parquet results (core/runs.py). `redeliver` writes those files to the sinks of the run's own
snapshotted pipeline (`execution.effective_pipeline`), then records the outcome on the run and in
the audit log in one transaction. A run that had failed only at delivery becomes `succeeded`:
its predictions were complete, and now every sink has them, which is what a succeeded run
means to everything downstream (drift windows, explanations, the results page); its earlier
error stays in the run's `summary["deliveries"]` and the audit log. A failed re-delivery
changes no status: the run keeps its outcome and the attempt is recorded beside it.
"""

from __future__ import annotations

import logging
from typing import Any

from core import access, audit, execution, pipeline, runs, sinks
from core.entities import Run
from core.errors import InvalidInput, ModelDeckError
from core.store import Store, Tx, utcnow

log = logging.getLogger("modeldeck.delivery")
DELIVERABLE = ("succeeded", "failed")


def sink_blocks(store: Store, run: Run) -> list[dict[str, Any]]:
    """The validated sinks of the run's snapshotted pipeline."""
    sinks: list[dict[str, Any]] = pipeline.validate_pipeline(
        execution.effective_pipeline(run), store.workspace
    )["sinks"]
    return sinks


def why_not_deliverable(store: Store, run: Run) -> str | None:
    """None when the run can be re-delivered, else the reason (for the UI and the CLI)."""
    if run.status not in DELIVERABLE:
        return f"Run {run.id} is {run.status}; only a finished run can be delivered."
    if (
        not run.summary.get("results_written")
        or run.purged_at is not None
        or not runs.result_path(store.workspace, run.id).exists()
    ):
        return (
            f"Run {run.id} has no results to deliver (it failed before writing them, or "
            "its files were purged)."
        )
    if not run.pipeline.get("sinks"):
        return f"Run {run.id}'s pipeline has no sinks."
    return None


def redeliver(store: Store, run_id: str, *, actor: str) -> Run:
    """Write a finished run's kept results to its pipeline's sinks again; returns the run.

    Raises NotFound for an unknown run, InvalidInput when it has no results or no sinks, and
    the sink's InvalidInput (after recording the failed attempt) when a sink fails again.
    A success makes the run `succeeded`; either outcome is audited with the run's update.
    """
    run = runs.get_run(store, run_id)
    store.read(lambda tx: access.require(tx, actor, run.project_id, "redeliver"))
    reason = why_not_deliverable(store, run)
    if reason:
        raise InvalidInput(reason, "Queue a new run of the deployment instead.")
    blocks = sink_blocks(store, run)
    results = runs.result_path(store.workspace, run.id)
    try:
        written = sinks.write_sinks(
            store.workspace, blocks, results, f"{run.deployment_name}-{run.id}"
        )
    except ModelDeckError as exc:
        error = str(exc)
        store.write(lambda tx: _record(tx, run, actor, None, error))
        raise
    done = store.write(lambda tx: _record(tx, run, actor, written, None))
    if run.status != "succeeded":
        _after_success(store, done)
    return done


def _record(
    tx: Tx, run: Run, actor: str, written: list[dict[str, Any]] | None, error: str | None
) -> Run:
    attempt = {
        "at": utcnow().isoformat(timespec="seconds"),
        "by": actor,
        "ok": error is None,
        "error": error,
        "previous_error": run.error,
    }
    before, done = runs.record_delivery(tx, run.id, attempt, written)
    audit.record(
        tx,
        actor=actor,
        action="redeliver",
        deployment_id=run.deployment_id,
        deployment_name=run.deployment_name,
        before={"run": run.id, "status": before},
        after={"run": run.id, "delivered": error is None, "sinks": len(written or [])},
        reason=error or "",
    )
    return done


def _after_success(store: Store, run: Run) -> None:
    """The worker's after-run steps for a run that has just become succeeded; never raises."""
    from core import drift, explain

    for step in (explain.after_run, drift.after_run):
        try:
            step(store, run)
        except Exception:  # the delivery is recorded: a failing extra never undoes it
            log.exception("after-run step of re-delivered run %s failed", run.id)
