"""Executing a claimed run: load its models, read its source in batches, score, write the
results, deliver to its sinks, and say what came of it.

The executor never holds a store connection while it reads, predicts or writes (DESIGN.md,
storage rule 1); its only store writes are the throttled progress and lease renewals, through
core/runs.py, which also records the outcome. Results are written to temporary names under
`runs/<run_id>/` and renamed into place at the end (rule 3), so a failed, cancelled or killed
run leaves no half file behind, and other runs' files are never touched.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from glob import glob
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core import deployments, incremental, pipeline, sinks
from core.entities import DeploymentVersion, Progress, Run, no_progress
from core.errors import ArtifactError, InvalidInput, ModelDeckError
from core.registry import cached_estimator, get_model
from core.runs import (
    Outcome,
    claim_runs,
    default_lease_seconds,
    get_run,
    record_outcome,
    renew_lease,
    result_path,
    results_dir,
)
from core.scoring import Loaded, RunScorer
from core.store import Store, utcnow
from core.workspace import Workspace

log = logging.getLogger("modeldeck.runs")

BEAT_SECONDS = 1.0  # at most one progress/lease write a second


# The version pins of runs claimed by claim_next_run (popped by execute_run; a handful at most).
_CLAIMED_PINS: dict[str, DeploymentVersion] = {}


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
        record_outcome(store, worker_id, Outcome(run.id, "failed", STOPPED))
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
    pins: DeploymentVersion | None = None,
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
    store: Store, run: Run, pins: DeploymentVersion | None
) -> tuple[Loaded, Loaded | None]:
    """The run's main and challenger models (`pins`: its version, read by the claim); rows
    and estimators come from the process's cache when it has them (core/registry.py), so a
    worker pays for a model once."""
    version = pins or store.read(
        lambda tx: deployments.load_versions(tx, [run.version_id]).get(run.version_id)
    )
    if version is None:
        raise InvalidInput(
            f"The deployment version this run was queued for ({run.version_id}) no longer exists.",
            "Queue a new run of the deployment.",
        )
    loaded = []
    for label, model_id in (
        ("main", version.main_model_id),
        ("challenger", version.challenger_model_id),
    ):
        if model_id:
            model = get_model(store, model_id)
            try:
                loaded.append(Loaded(model, cached_estimator(store, model), label))
            except ModelDeckError as exc:  # missing, tampered, untrusted or damaged file
                raise ArtifactError(
                    f"The {label} model cannot be loaded: {exc.message}", exc.hint, step=exc.step
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
    pins: DeploymentVersion | None,
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
