"""Runs: the queue of pipeline executions, and the executor the worker calls.

A run row goes queued -> running (claimed under a lease) -> succeeded | failed | cancelled.
Every change is one short transaction; the executor never holds a store connection while it
reads, predicts or writes (DESIGN.md, storage rule 1). Results are written to temporary names
under `runs/<run_id>/` and renamed into place at the end (rule 3), so a failed, cancelled or
killed run leaves no half file behind, and other runs' results are never touched.

The run's `summary` JSON holds: rows, task, label_column, main {model_id, algorithm,
class_counts + class_balance | prediction_summary, mean_confidence, confidence_kind,
metrics}, challenger (the same plus agreement_rate | mean_abs_difference, or null),
input_quality {mean, missing, out_of_range, unseen_category}, extra_columns, notes, columns
{key, prediction, probabilities, challenger, original} (the results' column groups), results
{main, challenger} (workspace-relative paths), results_written, sinks, timings {phase: s},
incremental {run_at, last_run_at, files, skipped_files, no_new_data} (core/incremental.py; a
run with no new data has 0 rows and no results files), report {path, bytes, copied_to |
copy_error} (core/reports.py, added after the run).

Results files hold `_row`, the prediction key, prediction, confidence (the class probability,
or for a regression forest the spread of its trees, else null), input_quality, proba_<class>,
(main only) challenger_prediction, then every input column (one named like a result column is
kept as input_<name>).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from glob import glob
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core import audit, incremental, lost_runs, pipeline, sinks
from core.datasets import new_id
from core.entities import Progress, Run, no_progress
from core.errors import ArtifactError, InvalidInput, ModelDeckError, NotFound
from core.registry import cached_estimator, get_model
from core.scoring import Loaded, RunScorer
from core.store import Store, Tx, utcnow
from core.workspace import Workspace, atomic_write_bytes

log = logging.getLogger("modeldeck.runs")

TRIGGERS = ("manual", "schedule", "api-batch", "validation")
LEASE_SECONDS = 60.0
LEASE_ENV = "MODELDECK_LEASE_SECONDS"
BEAT_SECONDS = 1.0  # at most one progress/lease write a second
# Rewritten (new random token) after a transaction that queued runs or changed schedules
# commits: an idle worker reads this small file instead of opening the store every second.
QUEUE_MARKER = "queue.changed"


def default_lease_seconds() -> float:
    """How long a claim lasts without renewal: $MODELDECK_LEASE_SECONDS, else 60 s."""
    return float(os.environ.get(LEASE_ENV) or LEASE_SECONDS)


def results_dir(workspace: Workspace, run_id: str) -> Path:
    return workspace.runs_dir / run_id


def result_path(workspace: Workspace, run_id: str, which: str = "main") -> Path:
    """Where a run's main or challenger results live once the run has succeeded."""
    return results_dir(workspace, run_id) / f"{which}.parquet"


# ---------------------------------------------------------------------------- the queue
def enqueue_run(
    store: Store,
    deployment_name: str,
    *,
    source_override: dict[str, Any] | None = None,
    trigger: str = "manual",
    actor: str | None = None,
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
    actor = actor or audit.current_actor()
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
    try:
        atomic_write_bytes(workspace.home / QUEUE_MARKER, secrets.token_hex(8).encode())
    except OSError as exc:
        log.warning("could not touch the queue marker in %s: %s", workspace.home, exc)


def read_queue_marker(workspace: Workspace) -> bytes | None:
    """The queue marker's current token (None before the first touch); a few microseconds."""
    try:
        return (workspace.home / QUEUE_MARKER).read_bytes()
    except OSError:
        return None


def insert_run(
    tx: Tx, deployment_name: str, trigger: str, source_override: dict[str, Any] | None, actor: str
) -> str:
    """Insert a queued run inside the caller's transaction (the scheduler queues a slot's run
    and records the slot in one transaction); returns its id. Raises like enqueue_run."""
    row = tx.execute(
        "SELECT id, name, project_id, pipeline, current_version_id FROM deployments"
        " WHERE name = ? OR id = ?",
        [deployment_name, deployment_name],
    ).first()
    if row is None:
        raise NotFound(
            "deployment", deployment_name, "Run `modeldeck deployments list` to see names."
        )
    if row["current_version_id"] is None:
        raise InvalidInput(
            f"Deployment '{row['name']}' has no current version to run.",
            "Deploy a model to it first.",
        )
    snapshot = row["pipeline"]
    if source_override is not None and source_override.get("kind") == "postgres":
        from core import connections  # psycopg and cryptography: only for postgres pipelines

        source_override = connections.bind_project(tx, source_override, row["project_id"])
    run_id = new_id("run")
    tx.execute(
        "INSERT INTO runs (id, deployment_id, deployment_name, version_id, trigger,"
        " status, source_override, pipeline, queued_by, queued_at)"
        " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
        [
            run_id,
            row["id"],
            row["name"],
            row["current_version_id"],
            trigger,
            source_override,
            snapshot,
            actor,
            utcnow(),
        ],
    )
    return run_id


def get_run(store: Store, run_id: str) -> Run:
    """One run by id; raises NotFound."""
    row = store.query("SELECT * FROM runs WHERE id = ?", [run_id]).first()
    if row is None:
        raise NotFound("run", run_id, "Run `modeldeck runs list DEPLOYMENT` to see run ids.")
    return Run.from_row(row)


def list_runs(store: Store, deployment_name: str | None, limit: int = 50) -> list[Run]:
    """A deployment's runs (every run for None), newest first; by name, so a deleted
    deployment's runs stay listed."""
    rows = store.query(
        "SELECT * FROM runs WHERE ? IS NULL OR deployment_name = ?"
        " OR deployment_id = ? ORDER BY queued_at DESC, id DESC LIMIT ?",
        [deployment_name, deployment_name, deployment_name, limit],
    )
    return [Run.from_row(r) for r in rows]


@dataclass(frozen=True)
class Claim:
    """A run claimed by a worker, with its version pins (the deployment_versions row) read in
    the claim's transaction, so executing it needs no read of the store."""

    run: Run
    pins: dict[str, Any] | None


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


# The version pins of runs claimed by claim_next_run (popped by execute_run; a handful at most).
_CLAIMED_PINS: dict[str, dict[str, Any]] = {}


def claim_next_run(store: Store, worker_id: str, lease_seconds: float | None = None) -> Run | None:
    """Claim the oldest queued run for `worker_id` (one transaction), or None when idle."""
    claims, _ = claim_runs(store, worker_id, 1, lease_seconds)
    if not claims:
        return None
    claim = claims[0]
    if claim.pins is not None:  # execute_run needs no read for them
        while len(_CLAIMED_PINS) >= 64:  # claimed and never executed here (tests, a crash)
            _CLAIMED_PINS.pop(next(iter(_CLAIMED_PINS)))
        _CLAIMED_PINS[claim.run.id] = claim.pins
    return claim.run


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
            " WHERE status = 'queued' AND id IN (SELECT id FROM runs WHERE status = 'queued'"
            " ORDER BY queued_at, id LIMIT ?) RETURNING *",
            [worker_id, now + timedelta(seconds=lease), now, limit],
        ).dicts()
        if not rows:
            return [], recorded
        wanted = sorted({r["version_id"] for r in rows})
        versions = {
            v["id"]: v
            for v in tx.execute(
                f"SELECT * FROM deployment_versions WHERE id IN ({_marks(wanted)})", wanted
            )
        }
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
        found = lost_runs.running(tx, "r.id = ? AND r.lease_owner = ?", [outcome.run_id, worker_id])
        return (
            lost_runs.settle(tx, found[0], workspace, outcome.lost, outcome.error or outcome.lost)
            if found
            else None
        )
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

    core/lost_runs.py decides, in one transaction: complete results kept for re-delivery,
    queued again per the deployment's retry policy (`max_attempts`), or failed. Then their
    partial files (and an interrupted folder sink's temporary file) are removed; no other
    run's files are touched.
    """

    def write(tx: Tx) -> list[lost_runs.Lost]:
        settled = []
        for row in lost_runs.running(tx, "r.lease_expires_at < ?", [utcnow()]):
            lost = lost_runs.lease_text(row["lease_expires_at"])
            error = (
                f"{lost}: the worker running it stopped or was killed. Run it again; if "
                "it keeps happening, check the worker's log and memory."
            )
            settled.append(lost_runs.settle(tx, row, store.workspace, lost, error))
        return settled

    settled = store.write(write)
    for lost in settled:
        lost_runs.clean_up(store.workspace, lost)
    return [lost.run_id for lost in settled]


def _finish(
    store: Store,
    run: Run,
    worker_id: str,
    status: str,
    *,
    error: str | None = None,
    summary: dict[str, Any] | None = None,
    rows: int | None = None,
) -> Run | None:
    """Record the outcome if the run is still this worker's: the run as recorded, or None
    if it was taken away (cancelled, or failed by lease expiry)."""
    outcome = Outcome(run.id, status, error, summary or {}, rows)
    row = store.write(lambda tx: _record(tx, worker_id, outcome, store.workspace))
    return Run.from_row(row) if isinstance(row, dict) else None


# ---------------------------------------------------------------------------- executing
class RunCancelled(Exception):
    """The run stopped being this worker's (cancelled, or failed by lease expiry)."""


class _Beat:
    """Progress for the caller, plus a throttled write of progress and lease to the run row."""

    def __init__(
        self, store: Store, run: Run, worker_id: str, lease: float, progress: Progress
    ) -> None:
        self.store, self.run, self.worker_id, self.lease = store, run, worker_id, lease
        self.progress = progress
        self.last = time.monotonic()  # the claim just set the lease and "starting"

    def __call__(
        self,
        fraction: float,
        text: str,
        *,
        force: bool = False,
        summary: dict[str, Any] | None = None,
    ) -> None:
        self.progress(fraction, text)
        now = time.monotonic()
        if not force and now - self.last < BEAT_SECONDS:
            return
        self.last = now
        if not renew_lease(
            self.store,
            self.run,
            self.worker_id,
            lease_seconds=self.lease,
            progress=round(fraction, 4),
            message=text,
            summary=summary,
        ):
            raise RunCancelled(self.run.id)


class _Timings(dict[str, float]):
    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self[phase] = self.get(phase, 0.0) + time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.items()}


STOPPED = "The worker was stopped during the run. Run it again."


def execute_run(
    store: Store,
    run: Run,
    worker_id: str,
    progress: Progress = no_progress,
    *,
    lease_seconds: float | None = None,
) -> Run:
    """Execute a run claimed by claim_next_run to its end, record the outcome and return the
    run as recorded; never raises for run errors (see execute_claimed)."""
    try:
        outcome = execute_claimed(
            store,
            run,
            worker_id,
            progress,
            lease_seconds=lease_seconds,
            pins=_CLAIMED_PINS.pop(run.id, None),
        )
    except BaseException:  # KeyboardInterrupt / SystemExit: stop cleanly, then go on stopping
        _finish(store, run, worker_id, "failed", error=STOPPED)
        raise
    _, done = claim_runs(store, worker_id, 0, outcomes=[outcome])  # records, claims none
    return done[0] if done else get_run(store, run.id)


def execute_claimed(
    store: Store,
    run: Run,
    worker_id: str,
    progress: Progress = no_progress,
    *,
    lease_seconds: float | None = None,
    pins: dict[str, Any] | None = None,
) -> Outcome:
    """Execute a claimed run to its end and return its outcome, not yet recorded; never
    raises for run errors.

    Every failure is a failed outcome with a message saying what is wrong and how to fix it,
    and removes the run's partial files (a failing sink keeps the complete Parquet results).
    A run taken away meanwhile (deployment deleted, lease expired) stops at its next batch,
    cleans up and gives a None status. The only store writes are the throttled progress and
    lease renewals of a run longer than a second. On KeyboardInterrupt/SystemExit the partial
    files go and the exception propagates: the caller records the run as stopped.
    """
    lease = lease_seconds or default_lease_seconds()
    started_at = utcnow()
    beat = _Beat(store, run, worker_id, lease, progress)
    folder = results_dir(store.workspace, run.id)
    timings = _Timings()
    started = time.perf_counter()

    def outcome(
        status: str | None, error: str | None = None, summary: dict[str, Any] | None = None
    ) -> Outcome:
        if status != "succeeded" and (status is None or summary is None):
            shutil.rmtree(folder, ignore_errors=True)  # a failing sink keeps the results
        summary = summary if summary is not None else {}
        if status is not None:
            timings["total"] = time.perf_counter() - started
            summary["timings"] = timings.rounded()
        return Outcome(run.id, status, error, summary, summary.get("rows"), started_at, utcnow())

    try:
        summary, sink_blocks = _score_run(store, run, beat, folder, timings, pins)
        if sink_blocks:  # the summary too: a run lost while writing sinks keeps its results
            beat(0.97, "writing sinks", force=True, summary=summary)
    except RunCancelled:
        return outcome(None)
    except Exception as exc:
        return outcome("failed", _error_text(exc, run))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        with timings("sinks"):
            summary["sinks"] = sinks.write_sinks(
                store.workspace,
                sink_blocks,
                result_path(store.workspace, run.id),
                f"{run.deployment_name}-{run.id}",
            )
    except RunCancelled:
        return outcome(None)
    except Exception as exc:
        return outcome("failed", _error_text(exc, run), summary)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return outcome("succeeded", None, summary)


def _error_text(exc: BaseException, run: Run) -> str:
    if isinstance(exc, ModelDeckError):
        return str(exc)
    log.exception("run %s failed", run.id)
    return (
        f"Internal error ({type(exc).__name__}: {exc}). This is a bug in ModelDeck, not in "
        "your data: the worker's log has the details."
    )


def _load_models(
    store: Store, run: Run, pins: dict[str, Any] | None
) -> tuple[Loaded, Loaded | None]:
    """The run's main and challenger models (`pins`: its version row, read by the claim);
    rows and estimators come from the process's cache when it has them (core/registry.py),
    so a worker pays for a model once."""
    row = (
        pins
        or store.query("SELECT * FROM deployment_versions WHERE id = ?", [run.version_id]).first()
    )
    if row is None:
        raise InvalidInput(
            f"The deployment version this run was queued for ({run.version_id}) no longer exists.",
            "Queue a new run of the deployment.",
        )
    loaded = []
    for label, model_id in (
        ("main", row["main_model_id"]),
        ("challenger", row["challenger_model_id"]),
    ):
        if model_id:
            model = get_model(store, model_id)
            try:
                loaded.append(Loaded(model, cached_estimator(store, model), label))
            except ModelDeckError as exc:  # missing, tampered, untrusted or damaged file
                raise ArtifactError(
                    f"The {label} model cannot be loaded: {exc.message}", exc.hint
                ) from exc
    return loaded[0], (loaded[1] if len(loaded) > 1 else None)


def effective_pipeline(run: Run) -> dict[str, Any]:
    """The run's pipeline snapshot with its source override applied."""
    if run.source_override:
        return {**run.pipeline, "source": run.source_override}
    return dict(run.pipeline)


def _estimate_rows(workspace: Workspace, source: dict[str, Any]) -> int | None:
    """Rows of a Parquet file source, from the footers, for the progress bar (else None)."""
    path = str(source.get("path") or "")
    if source.get("kind") not in ("file", "upload") or not path.endswith((".parquet", ".pq")):
        return None
    try:
        full = str(workspace.confine(path))
        return sum(pq.ParquetFile(p).metadata.num_rows for p in glob(full)) or None
    except (ModelDeckError, OSError, pa.ArrowException):
        return None


def _score_run(
    store: Store,
    run: Run,
    beat: _Beat,
    folder: Path,
    timings: _Timings,
    pins: dict[str, Any] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every batch and put the results files in place; returns (summary, sinks)."""
    beat(0.01, "loading models")  # the claim just wrote the lease: no write needed yet
    with timings("load_models"):
        main, challenger = _load_models(store, run, pins)
    spec = pipeline.validate_pipeline(effective_pipeline(run), store.workspace)
    plan = incremental.plan_run(store, run, spec["source"])  # only new data, SQL parameters
    if plan.nothing_new:
        return incremental.empty_summary(plan, spec["label_column"], plan.nothing_new), []
    spec = {**spec, "source": plan.source}
    expected = _estimate_rows(store.workspace, spec["source"])
    folder.mkdir(parents=True, exist_ok=True)
    beat(0.05, "reading the source")
    with ExitStack() as stack:
        with timings("open_input"):
            reader = stack.enter_context(
                pipeline.open_input(store.workspace, spec, params=plan.params)
            )
        scorer: RunScorer | None = None
        for batch in _batches(reader, timings):
            if scorer is None:  # the first batch is the sample for the schema check
                scorer = RunScorer(main, challenger, batch, spec["label_column"], folder, timings)
                stack.callback(scorer.discard)  # temp files go unless committed
            scorer.add(batch)
            fraction = 0.05 + 0.9 * min(scorer.rows / expected, 1.0) if expected else 0.5
            beat(fraction, f"{scorer.rows:,} rows scored")
        if scorer is not None:
            with timings("write"):
                scorer.commit()
    if scorer is None and plan.incremental:
        return incremental.empty_summary(plan, spec["label_column"], plan.no_rows_note()), []
    if scorer is None:
        raise InvalidInput(
            "The pipeline gave no rows after transforms: there is nothing to score.",
            "Check that the source has rows and that the transforms' "
            "filters keep some (Preview shows the rows after each block).",
        )
    return plan.annotate(scorer.summary(store.workspace.home)), spec["sinks"]


def _batches(reader: pa.RecordBatchReader, timings: _Timings) -> Iterator[pa.RecordBatch]:
    """The reader's non-empty batches, timed (core.pipeline names the failing block)."""
    while True:
        try:
            with timings("read"):
                batch = reader.read_next_batch()
        except StopIteration:
            return
        if batch.num_rows:
            yield batch
