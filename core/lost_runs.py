"""Runs whose process died mid-way: what becomes of them and of the files they left.

A run is lost when its executor process dies (the worker sees the pool break) or its whole
worker dies (its lease expires). One rule settles both, inside the caller's transaction:
- its Parquet results were complete (scored, renamed into place, and the summary saying so
  written before the sinks started): it fails as "interrupted while writing the sinks" and
  keeps them, so "deliver again" works without predicting again;
- else, while its attempts are below the deployment's `max_attempts` (the retry policy in
  the schedule JSON), it is queued again, saying so in its message;
- else it fails with the caller's error.
Then the files: a kept run loses only its temporary files; any other run loses its results
folder; and every folder sink of the run loses the temporary file a killed sink write left
(`.<deployment>-<run>.<format>.*.tmp`, core/workspace.py `atomic_path`).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import ModelDeckError
from core.store import Tx, utcnow
from core.workspace import Workspace

log = logging.getLogger("modeldeck.runs")

MAX_ATTEMPTS = "coalesce(TRY_CAST(json_extract_string(d.schedule, '$.max_attempts') AS INTEGER), 1)"
_SELECT = (
    "SELECT r.*, " + MAX_ATTEMPTS + " AS max_attempts FROM runs r"
    " LEFT JOIN deployments d ON d.id = r.deployment_id WHERE r.status = 'running'"
)


@dataclass(frozen=True)
class Lost:
    """A lost run as settled: `kept` its complete results, or `requeued` by the policy."""

    run_id: str
    deployment_name: str
    sinks: tuple[dict[str, Any], ...]
    kept: bool
    requeued: bool


def running(tx: Tx, condition: str, params: list[Any]) -> list[dict[str, Any]]:
    """Running runs matching `condition` (SQL over `r`), with their deployment's policy."""
    return tx.execute(f"{_SELECT} AND {condition}", params).dicts()


def settle(tx: Tx, row: dict[str, Any], workspace: Workspace, lost: str, error: str) -> Lost:
    """Record one lost run per the rule above; `lost` says what happened (for the message
    of a run queued again), `error` is the failed run's error."""
    summary = _json(row.get("summary"))
    folder = workspace.runs_dir / row["id"]
    now = utcnow()
    kept = bool(summary.get("results_written")) and (folder / "main.parquet").is_file()
    requeued = not kept and row["attempt"] < row["max_attempts"]
    if kept:
        note = (
            f"{lost} while writing the sinks. The predictions are complete and kept: "
            f"deliver them again (the run's page, or `modeldeck redeliver {row['id']}`)."
        )
        tx.execute(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ?, progress = 1,"
            " message = 'failed', lease_expires_at = NULL, rows_in = ?, rows_out = ?"
            " WHERE id = ? AND status = 'running'",
            [note, now, summary.get("rows"), summary.get("rows"), row["id"]],
        )
    elif requeued:
        tx.execute(
            "UPDATE runs SET status = 'queued', lease_owner = NULL,"
            " lease_expires_at = NULL, started_at = NULL, progress = 0, summary = '{}',"
            " message = ? WHERE id = ? AND status = 'running'",
            [
                f"{lost}; queued again (attempt {row['attempt'] + 1} of {row['max_attempts']})",
                row["id"],
            ],
        )
    else:
        tx.execute(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ?,"
            " progress = 1, message = 'failed', lease_expires_at = NULL"
            " WHERE id = ? AND status = 'running'",
            [error, now, row["id"]],
        )
    return Lost(row["id"], row["deployment_name"], _sinks(row), kept, requeued)


def clean_up(workspace: Workspace, lost: Lost) -> None:
    """Remove what a lost run left: its results (unless kept: then only temporary files)
    and the temporary file of an interrupted folder sink."""
    folder = workspace.runs_dir / lost.run_id
    if lost.kept:
        for partial in folder.glob(".*.tmp"):
            partial.unlink(missing_ok=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    stem = f"{lost.deployment_name}-{lost.run_id}"
    for sink in lost.sinks:
        if sink.get("kind") != "folder" or not isinstance(sink.get("path"), str):
            continue
        try:
            target = workspace.output_path(sink["path"])
        except ModelDeckError:
            continue  # never written, so nothing to clean
        for partial in target.glob(f".{glob_escape(stem)}.*.tmp"):
            log.info("run %s: removing the partial sink file %s", lost.run_id, partial)
            partial.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    """`text` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


def _sinks(row: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    pipeline = _json(row.get("pipeline"))
    sinks = pipeline.get("sinks") if isinstance(pipeline, dict) else None
    return tuple(s for s in sinks or () if isinstance(s, dict))


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        loaded = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def lease_text(expired_at: datetime) -> str:
    """The 'lost' text of a run whose lease expired."""
    return f"worker lost (lease expired at {expired_at:%Y-%m-%d %H:%M:%S} UTC)"
