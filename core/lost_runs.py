"""Runs whose process died mid-way: what becomes of them and of the files they left.

A run is lost when its executor process dies (the worker sees the pool break) or its whole
worker dies (its lease expires). One rule settles both (core/runs.py records it):
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
from core.workspace import Workspace

log = logging.getLogger("modeldeck.runs")


@dataclass(frozen=True)
class Lost:
    """A lost run as settled: `kept` its complete results, or `requeued` by the policy."""

    run_id: str
    deployment_name: str
    sinks: tuple[dict[str, Any], ...]
    kept: bool
    requeued: bool
    note: str = ""  # the error of a kept run, the message of a run queued again


def decide(row: dict[str, Any], workspace: Workspace, lost: str) -> Lost:
    """What becomes of one lost run (`row`: its runs row plus its deployment's
    `max_attempts`), per the rule above; `lost` says what happened. core/runs.py records it."""
    summary = _json(row.get("summary"))
    folder = workspace.run_folder(row["id"])
    kept = bool(summary.get("results_written")) and folder.results().is_file()
    requeued = not kept and row["attempt"] < row["max_attempts"]
    if kept:
        note = (
            f"{lost} while writing the sinks. The predictions are complete and kept: "
            "deliver them again."
        )
    elif requeued:
        note = f"{lost}; queued again (attempt {row['attempt'] + 1} of {row['max_attempts']})"
    else:
        note = ""
    return Lost(row["id"], row["deployment_name"], _sinks(row), kept, requeued, note)


def clean_up(workspace: Workspace, lost: Lost) -> None:
    """Remove what a lost run left: its results (unless kept: then only temporary files)
    and the temporary file of an interrupted folder sink."""
    folder = workspace.run_folder(lost.run_id).path
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
