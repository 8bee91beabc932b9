"""Incremental sources ("acquire new data"): score only what earlier runs have not.

A file source with `"incremental": true` scores the files of its glob that no succeeded or
running run of the deployment took. A run takes its files (rows of `run_files`, migration
0007) in the same transaction that reads which files are taken, so two runs of a deployment
in flight at once (two workers, or a manual run beside a scheduled one) never score the same
file; they count only through a running or succeeded run (a join on `runs.status`), so a
failed or cancelled run's files are picked up again. A file is identified by its path
(workspace-relative, or absolute in an allowed root), size and modification time: one stat
per file, where a content hash would read every file of the glob at every run. A file
rewritten in place is new data; a file renamed or copied elsewhere is scored again.

A SQL source may use `{{run_at}}` (the slot time of a scheduled run, else its queue time) and
`{{last_run_at}}` (the run_at of the deployment's last succeeded run of its own pipeline;
1970-01-01 before any). They become TIMESTAMP literals we format (naive UTC), never user text.
With no new files, or no rows from a SQL source using `{{last_run_at}}`, the run succeeds with
zero rows and its summary says "no new data since ...".
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.engine import tables
from core.engine.pipeline_sql import confine, quote, reader_for, source_files
from core.entities import Run
from core.errors import PipelineError
from core.store import Store, Tx, utcnow
from core.workspace import Workspace

EPOCH = datetime(1970, 1, 1)
PARAMETERS = ("run_at", "last_run_at")
SQL_PARAMETERS_HELP = (
    "Parameters (unquoted, UTC timestamps): `{{run_at}}` is the run's slot time (scheduled) or "
    "queue time; `{{last_run_at}}` that of the last succeeded run (1970-01-01 before any), e.g. "
    "`WHERE updated_at > {{last_run_at}}`. Preview uses now and the current last run."
)
FILES_HELP = (
    "Score only the files that no earlier succeeded run scored (a file is new when "
    "its path, size or modification time is). No new file: the run succeeds with "
    "0 rows and says so."
)
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")


# ---------------------------------------------------------------------------- SQL parameters
def timestamp_literal(value: datetime) -> str:
    """A TIMESTAMP literal DuckDB and PostgreSQL both read (naive UTC, microseconds)."""
    return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S.%f}'"


def placeholders(sql: str) -> list[str]:
    """The `{{name}}` placeholders of a SQL text, in order of appearance."""
    return [m.group(1).strip() for m in _PLACEHOLDER.finditer(sql)]


def render_sql(sql: str, params: Mapping[str, datetime]) -> str:
    """The SQL with every `{{name}}` replaced by a TIMESTAMP literal of `params[name]`.

    Only our own datetimes are spliced in, never user text. Raises PipelineError (block
    "source") naming an unknown placeholder and listing the valid ones.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in params:
            valid = ", ".join("{{" + p + "}}" for p in params) or "none"
            raise PipelineError(
                f"The source SQL uses an unknown parameter {{{{{name}}}}}.",
                f"Valid parameters: {valid} (write them unquoted, e.g. "
                "WHERE updated_at > {{last_run_at}}).",
                "source",
            )
        return timestamp_literal(params[name])

    return _PLACEHOLDER.sub(value, sql)


def default_params(now: datetime | None = None) -> dict[str, datetime]:
    """The parameters when no run is involved (validation): now, and no earlier run."""
    return {"run_at": now or utcnow(), "last_run_at": EPOCH}


def bind_source(source: dict[str, Any], params: Mapping[str, datetime] | None) -> dict[str, Any]:
    """A validated source block with its SQL parameters rendered (others unchanged)."""
    if source.get("kind") != "sql":
        return source
    return {**source, "sql": render_sql(source["sql"], params or default_params())}


_LAST_RUN = (
    "SELECT max(coalesce(s.slot_at, r.queued_at)) FROM runs r"
    " LEFT JOIN schedule_slots s ON s.run_id = r.id"
    " WHERE r.deployment_id = $deployment AND r.status = 'succeeded'"
    " AND r.id <> $run AND r.source_override IS NULL AND r.trigger <> 'validation'"
)


def run_times(store: Store, run: Run) -> tuple[datetime, datetime | None]:
    """(run_at, last_run_at) of a run in one read: its slot time (scheduled) else its queue
    time, and the run_at of the deployment's last succeeded run of its own pipeline (not a
    source override nor a validation run), None before any."""
    row = store.query(
        "SELECT (SELECT max(slot_at) FROM schedule_slots WHERE run_id = $run) AS slot_at,"
        f" ({_LAST_RUN}) AS last",
        {"run": run.id, "deployment": run.deployment_id},
    ).first()
    row = row or {}
    return row.get("slot_at") or run.queued_at, row.get("last")


def preview_params(store: Store, deployment_id: str) -> dict[str, datetime]:
    """The parameters a preview renders: now, and the deployment's current last run."""
    row = store.query(
        f"SELECT ({_LAST_RUN}) AS last", {"run": "", "deployment": deployment_id}
    ).first()
    return {"run_at": utcnow(), "last_run_at": (row or {}).get("last") or EPOCH}


# ---------------------------------------------------------------------------- planning a run
@dataclass(frozen=True)
class SeenFile:
    """A source file as runs record it: path (workspace-relative, else absolute), size, mtime."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class Plan:
    """What a run reads: the source block, its SQL parameters, and the new files it records."""

    source: dict[str, Any]
    params: dict[str, datetime]
    incremental: bool = False
    files: list[SeenFile] = field(default_factory=list)
    nothing_new: str | None = None  # the "no new data" note when there is nothing to read
    info: dict[str, Any] = field(default_factory=dict)  # the summary's "incremental" section
    notes: list[str] = field(default_factory=list)

    def annotate(self, summary: dict[str, Any]) -> dict[str, Any]:
        """A scored run's summary with this plan's notes and "incremental" section."""
        if self.incremental:
            summary["incremental"] = self.info
            summary["notes"] = [*summary.get("notes", []), *self.notes]
        return summary

    def no_rows_note(self) -> str:
        """The note of an incremental run whose source gave no rows."""
        return self.nothing_new or (
            f"No new data since {_since(self.params)}: the source gave no rows."
        )


def plan_run(store: Store, run: Run, source: dict[str, Any]) -> Plan:
    """The plan of a claimed run over its validated source block (two store transactions at
    most). An incremental file source becomes a SQL source over its new files only."""
    kind = source.get("kind")
    used = placeholders(source["sql"]) if kind == "sql" else []
    plan = Plan(source, default_params())
    if not used and not (kind == "file" and source.get("incremental")):
        return plan  # no store read for an ordinary run
    at, last = run_times(store, run)
    plan.params = {"run_at": at, "last_run_at": last or EPOCH}
    plan.incremental = kind == "file" or "last_run_at" in used
    if not plan.incremental:
        return plan
    plan.info = {"run_at": at.isoformat(), "last_run_at": last.isoformat() if last else None}
    if last is None:
        plan.notes.append(
            "First incremental run: there is no earlier succeeded run, so "
            "{{last_run_at}} is 1970-01-01 00:00:00 UTC and all data is new."
        )
    if kind == "file":
        _plan_files(store, run, plan)
    return plan


def _since(params: Mapping[str, datetime]) -> str:
    last = params["last_run_at"]
    return (
        "the start (no earlier succeeded run)"
        if last == EPOCH
        else (f"{last:%Y-%m-%d %H:%M:%S} UTC")
    )


def _plan_files(store: Store, run: Run, plan: Plan) -> None:
    ws, pattern = store.workspace, plan.source["path"]
    found = _stat_files(ws, pattern)

    def take(tx: Tx) -> list[SeenFile]:
        """The new files, taken for this run: read and recorded in one transaction."""
        taken = {
            (r["path"], r["size"], r["mtime_ns"])
            for r in tx.execute(
                "SELECT f.path, f.size, f.mtime_ns FROM run_files f JOIN runs r ON r.id = f.run_id"
                " WHERE f.deployment_id = ? AND r.id <> ? AND r.status IN ('succeeded', 'running')",
                [run.deployment_id, run.id],
            )
        }
        new = [f for f in found if (f.path, f.size, f.mtime_ns) not in taken]
        tx.execute("DELETE FROM run_files WHERE run_id = ?", [run.id])  # an earlier attempt
        _insert_files(tx, run, new)
        return new

    plan.files = store.write(take)
    plan.info.update(files=len(plan.files), skipped_files=len(found) - len(plan.files))
    if not found:
        plan.nothing_new = f"No new data since {_since(plan.params)}: no file matches '{pattern}'."
    elif not plan.files:
        plan.nothing_new = (
            f"No new data since {_since(plan.params)}: all {len(found)} file(s) "
            f"of '{pattern}' were scored by earlier runs (or are being "
            "scored by a run in flight)."
        )
    else:
        plan.source = files_source(ws, pattern, [f.path for f in plan.files])


def _stat_files(ws: Workspace, pattern: str) -> list[SeenFile]:
    """The files a (glob) path names now, as recorded; none for a glob matching nothing."""
    if glob.has_magic(pattern) and not glob.glob(str(confine(ws, pattern)), recursive=True):
        return []
    home = ws.home.resolve()
    out = []
    for real in source_files(ws, pattern):
        path = Path(real)
        stat = path.stat()
        shown = str(path.relative_to(home)) if path.is_relative_to(home) else str(path)
        out.append(SeenFile(shown, stat.st_size, stat.st_mtime_ns))
    return out


def files_source(ws: Workspace, pattern: str, paths: list[str]) -> dict[str, Any]:
    """A SQL source reading exactly `paths` (as recorded) with the reader of `pattern`."""
    function, options = reader_for(pattern)
    if function == "read_csv" and paths:
        options = tables.csv_options(ws.home.resolve() / paths[0])
    if len(paths) > 1:
        options += ", union_by_name = true"
    files = ", ".join(quote(str(ws.home.resolve() / p)) for p in paths)
    return {"kind": "sql", "sql": f"SELECT * FROM {function}([{files}]{options})"}


def _insert_files(tx: Tx, run: Run, files: list[SeenFile]) -> None:
    """Record the files a run takes (in the caller's transaction)."""
    if not files:
        return
    rows = json.dumps([{"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns} for f in files])
    shape = '[{"path": "VARCHAR", "size": "BIGINT", "mtime_ns": "BIGINT"}]'
    tx.execute(
        "INSERT INTO run_files SELECT ?, ?, f.path, f.size, f.mtime_ns, ? FROM"
        f" (SELECT unnest(from_json(?, '{shape}'), recursive := true)) f"
        " ON CONFLICT DO NOTHING",
        [run.id, run.deployment_id, utcnow(), rows],
    )


def empty_summary(plan: Plan, label_column: str | None, note: str) -> dict[str, Any]:
    """The summary of a run with no new data: zero rows, no results files, saying why."""
    return {
        "rows": 0,
        "task": None,
        "label_column": label_column,
        "main": None,
        "challenger": None,
        "input_quality": {"mean": None, "missing": 0, "out_of_range": 0, "unseen_category": 0},
        "extra_columns": [],
        "notes": [*plan.notes, note],
        "columns": {},
        "results": {},
        "results_written": False,
        "incremental": {**plan.info, "no_new_data": note},
    }
