"""Runs: the records of pipeline executions and their whole lifecycle.

A run row goes queued -> running (claimed under a lease) -> succeeded | failed | cancelled;
`TRANSITIONS` lists every move, and every status or summary change of a run is made by a
function of this module (core/execution.py executes a claimed run; others call these). Every
change is one short transaction, or a step inside the caller's (`insert_run`, `claim_run`,
`cancel_runs_of`, ...), so a run and what it belongs to change together.

The run's `summary` JSON holds: rows, task, label_column, main {model_id, algorithm,
class_counts + class_balance | prediction_summary, mean_confidence, confidence_kind,
metrics}, challenger (the same plus agreement_rate | mean_abs_difference, or null),
input_quality {mean, missing, out_of_range, unseen_category}, extra_columns, notes, columns
{key, prediction, probabilities, challenger, original} (the results' column groups), results
{main, challenger} (workspace-relative paths), results_written, sinks, timings {phase: s},
incremental {run_at, last_run_at, files, skipped_files, no_new_data} (core/incremental.py; a
run with no new data has 0 rows and no results files), report {path, bytes, copied_to |
copy_error} (core/reports.py, added after the run), deliveries (core/delivery.py).

A run's files live in `runs/<run_id>/`, laid out once by `core/workspace.py` RunFolder:
`main.parquet` and `challenger.parquet` (`result_path`) hold `_row`, the prediction key,
prediction, confidence (the class probability, or for a regression forest the spread of its
trees, else null), input_quality, proba_<class>, (main only) challenger_prediction, then every
input column (one named like a result column is kept as input_<name>, see
`scoring.feature_column`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from core import access, deployments, lost_runs, pipeline
from core.entities import DeploymentVersion, Run
from core.errors import Conflict, InvalidInput, NotFound
from core.store import Store, Tx, new_id, utcnow
from core.workspace import RunFolder, Workspace

log = logging.getLogger("modeldeck.runs")

TRIGGERS = ("manual", "schedule", "api-batch", "validation")
LEASE_SECONDS = 60.0
LEASE_ENV = "MODELDECK_LEASE_SECONDS"
# Rewritten (new random token) after a transaction that queued runs or changed schedules
# commits: an idle worker reads this small file instead of opening the store every second.
QUEUE_MARKER = "queue.changed"

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
# Every move a run's status may make. running -> queued: a claim released before it started,
# or a lost run retried; failed -> succeeded: complete results kept by a run that failed while
# writing its sinks, delivered again (core/delivery.py).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("running", "cancelled"),
    "running": ("succeeded", "failed", "cancelled", "queued"),
    "failed": ("succeeded",),
    "succeeded": (),
    "cancelled": (),
}


def _from(status: str) -> str:
    """SQL list of the statuses a run may move to `status` from (a WHERE clause's IN list)."""
    before = [old for old, moves in TRANSITIONS.items() if status in moves]
    if not before:
        raise ValueError(f"no run moves to {status!r}")
    return ", ".join(f"'{old}'" for old in before)


def default_lease_seconds() -> float:
    """How long a claim lasts without renewal: $MODELDECK_LEASE_SECONDS, else 60 s."""
    return float(os.environ.get(LEASE_ENV) or LEASE_SECONDS)


def run_folder(workspace: Workspace, run_id: str) -> RunFolder:
    """The layout of a run's folder (core/workspace.py RunFolder)."""
    return workspace.run_folder(run_id)


def results_dir(workspace: Workspace, run_id: str) -> Path:
    return run_folder(workspace, run_id).path


def result_path(workspace: Workspace, run_id: str, which: str = "main") -> Path:
    """Where a run's main or challenger results live once the run has succeeded."""
    return run_folder(workspace, run_id).results(which)


# ---------------------------------------------------------------------------- the queue
def enqueue_run(
    store: Store,
    deployment_name: str,
    *,
    source_override: dict[str, Any] | None = None,
    trigger: str = "manual",
    actor: str,
) -> Run:
    """Queue a run of a deployment's pipeline and current version, snapshotted; one transaction.

    Raises NotFound for an unknown deployment, InvalidInput for a deployment without a current
    version, an unknown trigger or a malformed source override.
    """
    if trigger not in TRIGGERS:
        raise InvalidInput(
            f"Unknown run trigger '{trigger}'.", f"Use one of: {', '.join(TRIGGERS)}."
        )
    if source_override is not None and not (
        isinstance(source_override, dict) and source_override.get("kind")
    ):
        raise InvalidInput(
            "A source override must be a source block with a 'kind'.",
            'For a file: {"kind": "file", "path": "data/new.parquet"}.',
        )
    if source_override is not None and source_override.get("kind") in ("file", "upload"):
        # Files that cannot be read now would only fail the run later: refuse them here.
        pipeline.check_file_source(
            store.workspace, source_override.get("path"), source_override["kind"]
        )
    run_id = store.write(
        lambda tx: insert_run(tx, deployment_name, trigger, source_override, actor)
    )
    touch_queue_marker(store.workspace)  # after the commit: a woken worker must see the row
    return get_run(store, run_id)


def touch_queue_marker(workspace: Workspace) -> None:
    """Tell idle workers that runs were queued or schedules changed; call after the commit.

    Only a hint (the store stays the source of truth and workers look there every ~15 s
    anyway), so a marker that cannot be written is logged, never raised. A random token, not
    just a new mtime: two touches within the filesystem's timestamp granularity still differ.
    """
    workspace.touch_marker(QUEUE_MARKER)


def read_queue_marker(workspace: Workspace) -> bytes | None:
    """The queue marker's current token (None before the first touch); a few microseconds."""
    return workspace.read_marker(QUEUE_MARKER)


def insert_run(
    tx: Tx,
    deployment_name: str,
    trigger: str,
    source_override: dict[str, Any] | None,
    actor: str,
    *,
    pipeline: dict[str, Any] | None = None,
    action: str = "run",
) -> str:
    """Insert a queued run inside the caller's transaction (the scheduler queues a slot's run
    and records the slot in one transaction); returns its id. It pins the deployment's current
    version and snapshots its pipeline (`pipeline` replaces the snapshot: a validation's run is
    never delivered). The actor needs the role for `action` (core/access.py). Raises like
    enqueue_run."""
    deployment = deployments.load_deployment(tx, deployment_name)
    if deployment is None:
        raise NotFound("deployment", deployment_name)
    access.require(tx, actor, deployment.project_id, action)
    if deployment.current is None:
        raise InvalidInput(
            f"Deployment '{deployment.name}' has no current version to run.",
            "Deploy a model to it first.",
        )
    if source_override is not None and source_override.get("kind") == "postgres":
        from core import connections  # psycopg and cryptography: only for postgres pipelines

        source_override = connections.bind_project(tx, source_override, deployment.project_id)
    run_id = new_id("run")
    tx.execute(
        "INSERT INTO runs (id, deployment_id, deployment_name, version_id, trigger,"
        " status, source_override, pipeline, queued_by, queued_at, project_id)"
        " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
        [
            run_id,
            deployment.id,
            deployment.name,
            deployment.current.id,
            trigger,
            source_override,
            deployment.pipeline if pipeline is None else pipeline,
            actor,
            utcnow(),
            deployment.project_id,
        ],
    )
    return run_id


def claim_run(tx: Tx, run_id: str, worker_id: str, lease_seconds: float | None = None) -> Run:
    """Claim one queued run for `worker_id` inside the caller's transaction (a validation
    queues and claims its own run at once); raises Conflict when it is not queued."""
    now = utcnow()
    lease = lease_seconds or default_lease_seconds()
    row = tx.execute(
        "UPDATE runs SET status = 'running', lease_owner = ?, lease_expires_at = ?,"
        " started_at = ?, attempt = attempt + 1, progress = 0, message = 'starting'"
        f" WHERE id = ? AND status IN ({_from('running')}) RETURNING *",
        [worker_id, now + timedelta(seconds=lease), now, run_id],
    ).first()
    if row is None:
        raise Conflict(f"Run {run_id} is not queued any more.", "Queue a new run.")
    return Run.from_row(row)


def version_of(tx: Tx, run_id: str) -> str:
    """The deployment version a run pins, inside the caller's transaction."""
    return str(tx.execute("SELECT version_id FROM runs WHERE id = ?", [run_id]).scalar())


def discard_queued(tx: Tx, run_id: str) -> None:
    """Remove a run queued in the caller's transaction that turned out not to be needed (a
    schedule slot another worker decided first); a run already claimed stays."""
    tx.execute("DELETE FROM runs WHERE id = ? AND status = 'queued'", [run_id])


def cancel_runs_of(tx: Tx, deployment_id: str, reason: str) -> int:
    """Cancel a deployment's queued and running runs inside the caller's transaction (a
    running one stops at its next batch, see core/execution.py); how many were cancelled."""
    rows = tx.execute(
        "UPDATE runs SET status = 'cancelled', error = ?, finished_at = ?"
        f" WHERE deployment_id = ? AND status IN ({_from('cancelled')}) RETURNING id",
        [reason, utcnow(), deployment_id],
    )
    return len(rows)


def mark_purged(tx: Tx, run_id: str) -> bool:
    """Record that a run's results files were deleted; False when that was already recorded."""
    return bool(
        tx.execute(
            "UPDATE runs SET purged_at = ? WHERE id = ? AND purged_at IS NULL RETURNING id",
            [utcnow(), run_id],
        )
    )


def note_on_summary(tx: Tx, run_id: str, key: str, value: Any) -> None:
    """Set one key of a run's summary (a step after the run adds what it did), keeping the
    rest; a run that is gone is left alone."""
    row = tx.execute("SELECT summary FROM runs WHERE id = ?", [run_id]).first()
    if row is not None:
        summary = {**_summary(row["summary"]), key: value}
        tx.execute("UPDATE runs SET summary = ? WHERE id = ?", [summary, run_id])


def record_delivery(
    tx: Tx, run_id: str, attempt: dict[str, Any], written: list[dict[str, Any]] | None
) -> tuple[str, Run]:
    """Record a delivery of a finished run's results to its sinks, inside the caller's
    transaction: `attempt` joins the summary's `deliveries`; when everything was written
    (`written`, the sinks' report) a run that failed while writing its sinks succeeds, else a
    failed run's error becomes the attempt's. Returns (the status before, the run as recorded);
    raises Conflict unless the run is succeeded or failed."""
    row = tx.execute("SELECT status, summary FROM runs WHERE id = ?", [run_id]).first()
    if row is None or row["status"] not in ("succeeded", "failed"):
        raise Conflict(
            f"Run {run_id} changed while it was being delivered.",
            "Look at the run again and retry.",
        )
    summary = _summary(row["summary"])
    summary["deliveries"] = [*summary.get("deliveries", []), attempt]
    if written is not None:
        summary["sinks"] = written
        tx.execute(
            "UPDATE runs SET status = 'succeeded', error = NULL, summary = ?,"
            " message = 'succeeded (re-delivered)' WHERE id = ?",
            [summary, run_id],
        )
    elif row["status"] == "failed":
        tx.execute(
            "UPDATE runs SET error = ?, summary = ? WHERE id = ?",
            [attempt.get("error"), summary, run_id],
        )
    else:
        tx.execute("UPDATE runs SET summary = ? WHERE id = ?", [summary, run_id])
    found = tx.execute("SELECT * FROM runs WHERE id = ?", [run_id]).first()
    return row["status"], Run.from_row(found or {})


def _summary(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    loaded = json.loads(value or "{}")
    return loaded if isinstance(loaded, dict) else {}


def get_run(store: Store, run_id: str) -> Run:
    """One run by id; raises NotFound."""
    row = store.query("SELECT * FROM runs WHERE id = ?", [run_id]).first()
    if row is None:
        raise NotFound("run", run_id)
    return Run.from_row(row)


def list_runs(
    store: Store, deployment_name: str | None, limit: int = 50, *, visible_to: str | None = None
) -> list[Run]:
    """A deployment's runs (every run for None), newest first; by name, so a deleted
    deployment's runs stay listed. With `visible_to`, only runs of projects that user may
    read."""

    def read(tx: Tx) -> list[Run]:
        visible = access.sql_filter(tx, visible_to)
        rows = tx.execute(
            "SELECT * FROM runs WHERE (? IS NULL OR deployment_name = ? OR deployment_id = ?)"
            f" AND {access.visible_sql()}"
            " ORDER BY queued_at DESC, id DESC LIMIT ?",
            [deployment_name, deployment_name, deployment_name, visible, visible, limit],
        )
        return [Run.from_row(r) for r in rows]

    return store.read(read)


@dataclass(frozen=True)
class Claim:
    """A run claimed by a worker, with its version pins (the deployment_versions row) read in
    the claim's transaction, so executing it needs no read of the store."""

    run: Run
    pins: DeploymentVersion | None


@dataclass(frozen=True)
class Outcome:
    """What executing a claimed run came to, to be recorded by `claim_runs` (or `execute_run`).

    `status` is None when the run was taken away meanwhile (cancelled, or failed by lease
    expiry): nothing to record, its files are gone. `started_at` is when execution began
    (a claimed run may wait for an executor), `finished_at` when it ended.
    """

    run_id: str
    status: str | None
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lost: str | None = None  # its process died ("its executor process died"): see _record


def claim_runs(
    store: Store,
    worker_id: str,
    limit: int,
    lease_seconds: float | None = None,
    outcomes: Sequence[Outcome] = (),
) -> tuple[list[Claim], list[Run]]:
    """Record `outcomes`, then claim up to `limit` of the oldest queued runs, in one transaction.

    Returns the claims (oldest first) and the runs as recorded (a run taken away meanwhile is
    left as the store says, and its files are removed). The store's writer lock serialises
    claims across processes and the claim re-checks the status, so a queued run is claimed
    exactly once however many workers poll; one transaction for a batch of outcomes and claims
    keeps a busy worker's store traffic to one connection per batch (~25 ms each).
    """
    lease = lease_seconds or default_lease_seconds()
    now = utcnow()

    def write(
        tx: Tx,
    ) -> tuple[list[Claim], list[tuple[Outcome, dict[str, Any] | lost_runs.Lost | None]]]:
        recorded = [
            (o, _record(tx, worker_id, o, store.workspace))
            for o in outcomes
            if o.status is not None
        ]
        if limit <= 0:
            return [], recorded
        rows = tx.execute(
            "UPDATE runs SET status = 'running', lease_owner = ?, lease_expires_at = ?,"
            " started_at = ?, attempt = attempt + 1, progress = 0, message = 'starting'"
            f" WHERE status IN ({_from('running')}) AND id IN (SELECT id FROM runs"
            " WHERE status = 'queued' ORDER BY queued_at, id LIMIT ?) RETURNING *",
            [worker_id, now + timedelta(seconds=lease), now, limit],
        ).dicts()
        if not rows:
            return [], recorded
        versions = deployments.load_versions(tx, sorted({r["version_id"] for r in rows}))
        rows.sort(key=lambda r: (r["queued_at"], r["id"]))
        return [Claim(Run.from_row(r), versions.get(r["version_id"])) for r in rows], recorded

    claims, recorded = store.write(write)
    done = []
    for outcome, row in recorded:
        if row is None:  # taken away at the last moment: the store's word stands
            shutil.rmtree(results_dir(store.workspace, outcome.run_id), ignore_errors=True)
        elif isinstance(row, lost_runs.Lost):
            lost_runs.clean_up(store.workspace, row)
            if row.requeued:
                touch_queue_marker(store.workspace)
            else:
                done.append(get_run(store, row.run_id))
        else:
            done.append(Run.from_row(row))
    return claims, done


def _record(
    tx: Tx, worker_id: str, outcome: Outcome, workspace: Workspace
) -> dict[str, Any] | lost_runs.Lost | None:
    """Record an outcome if the run is still this worker's: its row, else None. A lost run
    (its executor died) is settled by core/lost_runs.py: kept, queued again or failed."""
    if outcome.lost is not None:
        found = _running(tx, "id = ? AND lease_owner = ?", [outcome.run_id, worker_id])
        return (
            _settle_lost(tx, found[0], workspace, outcome.lost, outcome.error or outcome.lost)
            if found
            else None
        )
    if outcome.status not in FINISHED:  # queued again is release_claims' or a lost run's
        raise ValueError(f"a run cannot finish as {outcome.status!r}")
    return tx.execute(
        "UPDATE runs SET status = ?, error = ?, summary = ?, rows_in = ?, rows_out = ?,"
        " started_at = coalesce(?, started_at), finished_at = ?, progress = 1, message = ?,"
        " lease_expires_at = NULL WHERE id = ? AND status = 'running' AND lease_owner = ?"
        " RETURNING *",
        [
            outcome.status,
            outcome.error,
            outcome.summary,
            outcome.rows,
            outcome.rows,
            outcome.started_at,
            outcome.finished_at or utcnow(),
            outcome.status,
            outcome.run_id,
            worker_id,
        ],
    ).first()


def record_outcome(store: Store, worker_id: str, outcome: Outcome) -> Run | None:
    """Record one outcome if the run is still this worker's (one transaction): the run as
    recorded, or None if it was taken away (cancelled, or failed by lease expiry)."""
    row = store.write(lambda tx: _record(tx, worker_id, outcome, store.workspace))
    return Run.from_row(row) if isinstance(row, dict) else None


def _running(tx: Tx, condition: str, params: list[Any]) -> list[dict[str, Any]]:
    """Running runs matching `condition` (SQL over runs), each with its deployment's
    `max_attempts` (the retry policy)."""
    rows = tx.execute(f"SELECT * FROM runs WHERE status = 'running' AND {condition}", params)
    found = rows.dicts()
    limits = deployments.retry_limits(tx, sorted({r["deployment_id"] for r in found}))
    return [{**r, "max_attempts": limits[r["deployment_id"]]} for r in found]


def _settle_lost(
    tx: Tx, row: dict[str, Any], workspace: Workspace, lost: str, error: str
) -> lost_runs.Lost:
    """Record one lost run as core/lost_runs.py decides (kept, queued again or failed);
    `lost` says what happened, `error` is the failed run's error."""
    decided = lost_runs.decide(row, workspace, lost)
    if decided.kept:
        summary = _summary(row.get("summary"))
        tx.execute(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ?, progress = 1,"
            " message = 'failed', lease_expires_at = NULL, rows_in = ?, rows_out = ?"
            " WHERE id = ? AND status = 'running'",
            [decided.note, utcnow(), summary.get("rows"), summary.get("rows"), row["id"]],
        )
    elif decided.requeued:
        tx.execute(
            "UPDATE runs SET status = 'queued', lease_owner = NULL,"
            " lease_expires_at = NULL, started_at = NULL, progress = 0, summary = '{}',"
            " message = ? WHERE id = ? AND status = 'running'",
            [decided.note, row["id"]],
        )
    else:
        tx.execute(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ?,"
            " progress = 1, message = 'failed', lease_expires_at = NULL"
            " WHERE id = ? AND status = 'running'",
            [error, utcnow(), row["id"]],
        )
    return decided


def renew_leases(
    store: Store, worker_id: str, run_ids: Sequence[str], lease_seconds: float | None = None
) -> None:
    """Extend the leases of runs this worker holds (claimed, maybe waiting for an executor),
    in one transaction; runs no longer its own are left alone."""
    if not run_ids:
        return
    lease = lease_seconds or default_lease_seconds()
    store.write(
        lambda tx: tx.execute(
            f"UPDATE runs SET lease_expires_at = ? WHERE id IN ({_marks(run_ids)})"
            " AND status = 'running' AND lease_owner = ?",
            [utcnow() + timedelta(seconds=lease), *run_ids, worker_id],
        )
    )


def release_claims(store: Store, worker_id: str, run_ids: Sequence[str]) -> None:
    """Queue again runs this worker claimed and never started (it is stopping), as if never
    claimed; one transaction."""
    if run_ids:
        store.write(
            lambda tx: tx.execute(
                "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
                " started_at = NULL, attempt = attempt - 1, progress = 0,"
                " message = 'queued again: the worker that claimed it stopped before starting it'"
                f" WHERE id IN ({_marks(run_ids)}) AND status = 'running' AND lease_owner = ?",
                [*run_ids, worker_id],
            )
        )
        touch_queue_marker(store.workspace)


def _marks(values: Sequence[Any]) -> str:
    """One `?` per value, for an IN list (list parameters are stored as JSON text)."""
    return ", ".join("?" * len(values))


def renew_lease(
    store: Store,
    run: Run,
    worker_id: str,
    *,
    lease_seconds: float | None = None,
    progress: float | None = None,
    message: str | None = None,
    summary: dict[str, Any] | None = None,
) -> bool:
    """Extend the lease (and record progress) in one short transaction.

    Returns False when the run is no longer this worker's to run: cancelled (its deployment
    was deleted) or failed by lease expiry. The executor then stops and cleans up.
    """
    lease = lease_seconds or default_lease_seconds()
    found = store.write(
        lambda tx: tx.execute(
            "UPDATE runs SET lease_expires_at = ?, progress = coalesce(?, progress),"
            " message = coalesce(?, message), summary = coalesce(?, summary) WHERE id = ?"
            " AND status = 'running' AND lease_owner = ? RETURNING id",
            [utcnow() + timedelta(seconds=lease), progress, message, summary, run.id, worker_id],
        )
    )
    return len(found) > 0


def expire_leases(store: Store) -> list[str]:
    """Settle running runs whose lease has expired (their worker died); returns their ids.

    core/lost_runs.py decides and this module records, in one transaction: complete results
    kept for re-delivery, queued again per the deployment's retry policy (`max_attempts`), or
    failed. Then their partial files (and an interrupted folder sink's temporary file) are
    removed; no other run's files are touched.
    """

    def write(tx: Tx) -> list[lost_runs.Lost]:
        settled = []
        for row in _running(tx, "lease_expires_at < ?", [utcnow()]):
            lost = lost_runs.lease_text(row["lease_expires_at"])
            error = (
                f"{lost}: the worker running it stopped or was killed. Run it again; if "
                "it keeps happening, check the worker's log and memory."
            )
            settled.append(_settle_lost(tx, row, store.workspace, lost, error))
        return settled

    settled = store.write(write)
    for lost in settled:
        lost_runs.clean_up(store.workspace, lost)
    return [lost.run_id for lost in settled]
