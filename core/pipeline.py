"""Pipelines: read a source in batches, apply SQL transforms, check against a model's schema.

A pipeline is a dict stored on the deployment:
    {"source": {"kind": "file", "path": "datasets/ds_x/data.parquet"}     # file or glob
                                                   # + "incremental": true: new files only
             | {"kind": "upload", "path": "uploads/<id>/name.csv"}
             | {"kind": "sql", "sql": "SELECT * FROM read_csv('exports/*.csv')"}
             | {"kind": "postgres", "connection": "warehouse", "sql": "SELECT ..."},
     "transforms": [{"name": "clean", "sql": "SELECT * FROM input WHERE age >= 0"}, ...],
     "sinks": [{"kind": "folder", "path": "exports/scores", "format": "csv" | "parquet"},
               {"kind": "duckdb_table", "path": "exports/scores.duckdb", "table": "scores",
                "mode": "append" | "replace"},
               {"kind": "postgres", "connection": "warehouse", "table": "public.scores",
                "mode": "create" | "append" | "replace",
                "challenger": "columns" | "table" | "none"}],
     "label_column": "churn" | None,
     "batch_rows": 100000}
SQL sources may use {{run_at}} and {{last_run_at}} (core/incremental.py renders them).
Paths are relative to the workspace (or absolute inside an allowed root). The model block is not
in the dict: it is always the deployment's current version.

The DuckDB mechanics (confined connections, the transform chain, DuckDB's errors as
PipelineErrors) live in core/pipeline_sql.py; checking input against a model's schema, the
model frame and input quality in core/model_input.py (re-exported here: the run engine's
contract). PostgreSQL blocks (optionally with the connection's "project") are checked and read
by core/postgres.py, their connection looked up in core/connections.py: the query streams in
as the source's Arrow batches, so transforms, scoring and preview work unchanged.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from core import connections, incremental
from core.engine import postgres, sql_limits, tables
from core.engine.model_input import (
    SchemaCheck,
    check_schema,
    describe_problems,
    finite,
    input_quality,
    to_model_frame,
)
from core.engine.pipeline_sql import (
    READ_ERRORS,
    SOURCE_TABLE,
    Chain,
    Connection,
    Labels,
    absolute_sql_paths,
    attempt,
    check_select,
    compile_chain,
    confine,
    failure,
    reader_for,
    source_chain,
    source_connection,
    source_files,
    source_query,
    strip_trailing,
    transform_connection,
)
from core.entities import ModelSchema
from core.errors import InvalidInput, PipelineError
from core.workspace import Workspace

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "Preview",
    "SchemaCheck",
    "StagePreview",
    "check_schema",
    "describe_problems",
    "finite",
    "input_quality",
    "open_input",
    "preview",
    "to_model_frame",
    "validate_pipeline",
]

DEFAULT_BATCH_ROWS = 100_000
MAX_BATCH_ROWS = 5_000_000
PREVIEW_BATCH_ROWS = 10_000
SOURCE_KINDS = ("file", "upload", "sql", "postgres")
SINK_KINDS = ("folder", "duckdb_table", "postgres")
SINK_FORMATS = ("csv", "parquet")
TABLE_MODES = ("append", "replace")
KEYS = {
    "pipeline": ("source", "transforms", "sinks", "label_column", "batch_rows"),
    "file": ("kind", "path", "incremental"),
    "upload": ("kind", "path"),
    "sql": ("kind", "sql"),
    "transform": ("name", "sql"),
    "folder": ("kind", "path", "format"),
    "duckdb_table": ("kind", "path", "table", "mode"),
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class StagePreview:
    name: str  # "source", then each transform's name
    frame: pd.DataFrame  # first rows after this stage
    error: str | None = None


@dataclass(frozen=True)
class Preview:
    stages: list[StagePreview]
    check: SchemaCheck | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- validation
def validate_pipeline(
    pipeline: dict[str, Any], workspace: Workspace | None = None
) -> dict[str, Any]:
    """Return a normalised copy; raises InvalidInput naming the bad block and how to fix it.

    Defaults: no transforms, no sinks, no label column, DEFAULT_BATCH_ROWS. Paths are checked
    against `workspace` (default: the current one, $MODELDECK_HOME) and kept as written.
    """
    if not _runs_sql(pipeline):  # a file source without transforms: no connection to open
        return _validate(pipeline, workspace or Workspace.resolve(), None)
    ws = workspace or Workspace.resolve()
    with transform_connection(ws) as con:
        return _validate(pipeline, ws, con)


def _runs_sql(pipeline: Any) -> bool:
    """Whether checking the pipeline parses SQL (transforms, or a DuckDB SQL source), so needs
    a connection (~15 ms to open: a run of a plain file source skips it)."""
    if not isinstance(pipeline, dict):
        return False
    source = pipeline.get("source")
    return bool(pipeline.get("transforms")) or (
        isinstance(source, dict) and source.get("kind") == "sql"
    )


def _sql(con: Connection | None) -> Connection:
    if con is None:  # _runs_sql said no SQL, yet a block has some: a bug, not bad input
        raise RuntimeError("A pipeline block needs SQL checking without a connection.")
    return con


def _validate(pipeline: Any, ws: Workspace, con: Connection | None) -> dict[str, Any]:
    if not isinstance(pipeline, dict):
        raise PipelineError(
            "A pipeline must be an object with a source block.",
            'For example {"source": {"kind": "file", "path": "data.csv"}}.',
            "pipeline",
        )
    if "model" in pipeline:
        raise PipelineError(
            "The model block cannot be configured: it is always the deployment's current model.",
            "To change the model, deploy another one or roll back.",
            "model",
        )
    _check_keys(pipeline, KEYS["pipeline"], "The pipeline", "pipeline")
    source = _check_source(ws, pipeline.get("source"), con)
    transforms: list[dict[str, str]] = []
    for i, block in enumerate(_listed(pipeline, "transforms")):
        transforms.append(_check_transform(con, block, i, {t["name"] for t in transforms}))
    sinks = [_check_sink(ws, s, i) for i, s in enumerate(_listed(pipeline, "sinks"))]
    return {
        "source": source,
        "transforms": transforms,
        "sinks": sinks,
        "label_column": _check_label(pipeline.get("label_column")),
        "batch_rows": _check_batch_rows(pipeline.get("batch_rows")),
    }


def _listed(pipeline: dict[str, Any], key: str) -> list[Any]:
    value = pipeline.get(key) or []
    if not isinstance(value, list):
        raise PipelineError(
            f"The pipeline's {key} must be a list of blocks.",
            f"Give {key} as a list (or leave it out).",
            key,
        )
    return value


def _check_keys(block: dict[str, Any], allowed: tuple[str, ...], what: str, name: str) -> None:
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise PipelineError(
            f"{what} has unknown field(s): {', '.join(map(str, unknown))}.",
            f"Allowed fields: {', '.join(allowed)}.",
            name,
        )


def _check_source(ws: Workspace, source: Any, con: Connection | None) -> dict[str, str]:
    if not isinstance(source, dict):
        raise PipelineError(
            "The pipeline has no source block.",
            'Add one, e.g. {"kind": "file", "path": "uploads/new.csv"}.',
            "source",
        )
    kind = source.get("kind")
    if kind not in SOURCE_KINDS:
        raise PipelineError(
            f"Unknown source kind {kind!r}.", f"Choose one of: {', '.join(SOURCE_KINDS)}.", "source"
        )
    if kind == "postgres":  # core/postgres.py checks its own fields
        return postgres.check_source_block(source)
    _check_keys(source, KEYS[kind], f"The {kind} source", "source")
    if kind == "sql":
        raw = source.get("sql")
        # Checked with sample {{run_at}}/{{last_run_at}} values, stored with the placeholders.
        sql = check_select(
            _sql(con),
            incremental.render_sql(raw, incremental.default_params())
            if isinstance(raw, str)
            else raw,
            "The source SQL",
            "source",
        )
        absolute_sql_paths(ws, sql)  # refuses a path outside the allowed folders, with a hint
        assert isinstance(raw, str)  # check_select refused anything else
        return {"kind": "sql", "sql": strip_trailing(raw)}
    path = source.get("path")
    if not isinstance(path, str) or not path.strip():
        raise PipelineError(
            f"The {kind} source has no path.",
            "Give a file or a glob, e.g. uploads/new.csv or exports/*.parquet.",
            "source",
        )
    path = path.strip()
    reader_for(path)
    resolved = confine(ws, path)
    if kind == "upload" and not resolved.is_relative_to(ws.uploads_dir.resolve()):
        raise PipelineError(
            f"The upload source '{path}' is not under {ws.uploads_dir}.",
            "Upload the file again, or use a file source for other paths.",
            "source",
        )
    if kind == "file" and source.get("incremental") not in (None, False, True):
        raise PipelineError(
            "The file source's incremental must be true or false.",
            "true scores only files no earlier succeeded run scored.",
            "source",
        )
    return {
        "kind": kind,
        "path": path,
        **({"incremental": True} if source.get("incremental") else {}),
    }


def check_file_source(workspace: Workspace, path: Any, kind: str = "file") -> dict[str, str]:
    """A file (or upload) source block for `path`, checked now: inside the allowed folders,
    a readable format, at least one file, none empty or with a repeated header (what a run's
    source reading would refuse). Raises PipelineError saying which."""
    block = _check_source(workspace, {"kind": kind, "path": path}, None)
    source_files(workspace, block["path"])  # there, readable, not empty: as a run reads it
    return block


def _check_transform(con: Connection | None, block: Any, i: int, taken: set[str]) -> dict[str, str]:
    default = f"transform_{i + 1}"
    if not isinstance(block, dict):
        raise PipelineError(
            f"Transform {i + 1} must be an object with a name and SQL.",
            'For example {"name": "clean", "sql": "SELECT * FROM input"}.',
            default,
        )
    _check_keys(block, KEYS["transform"], f"Transform {i + 1}", default)
    name = block.get("name") or default
    if not isinstance(name, str) or not name.strip():
        raise PipelineError(
            f"Transform {i + 1} has no usable name.", "Give it a short name.", default
        )
    name = name.strip()
    if name == "source" or name in taken:
        raise PipelineError(
            f"Transform {i + 1} is named '{name}', "
            + (
                "the name of the source block."
                if name == "source"
                else "like an earlier transform."
            ),
            "Give every transform a unique name.",
            name,
        )
    return {
        "name": name,
        "sql": check_select(_sql(con), block.get("sql"), f"Transform '{name}'", name),
    }


def _check_sink(ws: Workspace, sink: Any, i: int) -> dict[str, str]:
    block, label = f"sink {i + 1}", f"Sink {i + 1}"
    kind = sink.get("kind") if isinstance(sink, dict) else None
    if kind not in SINK_KINDS:
        raise PipelineError(
            f"{label} has an unknown kind {kind!r}.",
            f"Choose one of: {', '.join(SINK_KINDS)} (the run's own Parquet "
            "results are always written).",
            block,
        )
    if kind == "postgres":
        return postgres.check_sink_block(sink, label, block)
    _check_keys(sink, KEYS[kind], label, block)
    path = sink.get("path")
    if not isinstance(path, str) or not path.strip():
        raise PipelineError(
            f"{label} has no path.", "Give a path inside the workspace, e.g. exports/scores.", block
        )
    path = path.strip()
    _output_path(ws, path, label, block)
    if kind == "folder":
        fmt = sink.get("format") or "parquet"
        if fmt not in SINK_FORMATS:
            raise PipelineError(
                f"{label} has an unknown format {fmt!r}.",
                f"Choose one of: {', '.join(SINK_FORMATS)}.",
                block,
            )
        return {"kind": kind, "path": path, "format": fmt}
    table, mode = sink.get("table"), sink.get("mode") or "append"
    if not isinstance(table, str) or not _IDENTIFIER.match(table):
        raise PipelineError(
            f"{label}: {table!r} is not a valid table name.",
            "Use letters, digits and underscores, starting with a letter.",
            block,
        )
    if mode not in TABLE_MODES:
        raise PipelineError(
            f"{label} has an unknown mode {mode!r}.",
            f"Choose one of: {', '.join(TABLE_MODES)}.",
            block,
        )
    return {"kind": kind, "path": path, "table": table, "mode": mode}


def _output_path(ws: Workspace, path: str, label: str, block: str) -> Path:
    """A sink path: inside the workspace, outside ModelDeck's own files and folders."""
    home = ws.home.resolve()
    raw = Path(path).expanduser()
    resolved = (raw if raw.is_absolute() else home / raw).resolve()
    if not resolved.is_relative_to(home) or resolved == home:
        raise PipelineError(
            f"{label} writes to '{path}', outside the workspace {home}.",
            "Sinks write inside the workspace only, e.g. exports/scores.",
            block,
        )
    if ws.is_own(resolved):
        raise PipelineError(
            f"{label} writes to '{path}', among ModelDeck's own files.",
            "Write sinks to a folder of your own, e.g. exports/.",
            block,
        )
    return resolved


def _check_label(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise PipelineError(
            f"The label column must be a column name, not {value!r}.",
            "Give the name of the column holding the true outcome, or none.",
            "label_column",
        )
    return value.strip()


def _check_batch_rows(value: Any) -> int:
    if value is None:
        return DEFAULT_BATCH_ROWS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_BATCH_ROWS:
        raise PipelineError(
            f"batch_rows must be a whole number from 1 to {MAX_BATCH_ROWS:,}, not {value!r}.",
            f"Leave it out for {DEFAULT_BATCH_ROWS:,}.",
            "batch_rows",
        )
    return value


# ---------------------------------------------------------------------------- reading
def _labels(spec: dict[str, Any]) -> Labels:
    source = spec["source"]
    labels: Labels = {
        "source": "The source SQL"
        if source["kind"] == "sql"
        else postgres.source_label(source)
        if source["kind"] == "postgres"
        else f"Reading the source '{source['path']}'",
        None: "The transforms",
    }
    labels.update({t["name"]: f"Transform '{t['name']}'" for t in spec["transforms"]})
    return labels


@contextlib.contextmanager
def open_input(
    workspace: Workspace,
    pipeline: dict[str, Any],
    batch_rows: int | None = None,
    params: Mapping[str, datetime] | None = None,
) -> Iterator[pa.RecordBatchReader]:
    """Stream the pipeline's output (source, then transforms) as Arrow batches.

    Bounded memory for row-wise pipelines. The source is read on a DuckDB connection that may
    only reach the workspace and allowed roots; transforms run on a connection with external
    access disabled, so they cannot read files. Raises PipelineError (an InvalidInput) for a
    missing/unreadable source or a SQL error, naming the block and quoting DuckDB's message,
    both on entry and while batches are read. Batches hold at most `batch_rows` rows (default:
    the pipeline's); an empty result is an empty stream, not an error.
    """
    with contextlib.ExitStack() as stack:
        watchdog = stack.enter_context(sql_limits.bounded("run"))
        memory = watchdog.limits.memory
        # Connections only where needed (~15 ms each): transforms (or SQL to check), a source.
        tcon = (
            watchdog.watch(stack.enter_context(transform_connection(workspace, memory)))
            if _runs_sql(pipeline)
            else None
        )
        spec = _validate(pipeline, workspace, tcon)
        rows = _check_batch_rows(batch_rows or spec["batch_rows"])
        labels = _labels(spec)
        if spec["source"]["kind"] == "postgres":
            readers = [
                stack.enter_context(connections.open_source(workspace, spec["source"], rows))
            ]
        else:
            source_sql = source_query(workspace, incremental.bind_source(spec["source"], params))
            scon = watchdog.watch(
                stack.enter_context(source_connection(workspace, memory, source_sql))
            )
            readers = [
                attempt(
                    lambda: scon.sql(source_sql).to_arrow_reader(rows),
                    labels,
                    "source",
                    source_chain(source_sql),
                )
            ]
        # Column names as training read them: Unicode NFC (core.tables).
        readers[0] = tables.normalized_reader(readers[0])
        chain = None
        if spec["transforms"]:
            tcon = _sql(tcon)
            chain = compile_chain(tcon, spec["transforms"], readers[0].schema, labels)
            tcon.register(SOURCE_TABLE, readers[0])
            readers.append(
                attempt(lambda: tcon.sql(chain.sql).to_arrow_reader(rows), labels, None, chain)
            )
        closed = threading.Event()
        batches = _rebatched(
            readers[-1], rows, labels, None if chain else "source", chain, closed, watchdog
        )
        try:
            yield pa.RecordBatchReader.from_batches(readers[-1].schema, batches)
        finally:
            # A DuckDB stream outlives its connection's close(): end the streams too, so the
            # connections' lifetime is exactly this context's.
            closed.set()
            for reader in reversed(readers):
                reader.close()


def _rebatched(
    reader: pa.RecordBatchReader,
    rows: int,
    labels: Labels,
    block: str | None,
    chain: Chain | None,
    closed: threading.Event,
    watchdog: sql_limits.Watchdog,
) -> Iterator[pa.RecordBatch]:
    """Batches of exactly `rows` rows (the last one shorter): a selective filter would
    otherwise hand the model thousands of tiny batches. Past the time limit, no more."""
    pending: list[pa.RecordBatch] = []
    count = 0
    try:
        for batch in reader:
            watchdog.check(block)
            if not batch.num_rows:
                continue
            pending.append(batch)
            count += batch.num_rows
            while count >= rows:
                merged = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                yield merged.slice(0, rows)
                rest = merged.slice(rows)
                pending, count = ([rest] if rest.num_rows else []), rest.num_rows
    except READ_ERRORS as exc:
        if closed.is_set():  # a bug of the caller's, not a problem of the pipeline
            raise RuntimeError("The pipeline's input was read after open_input() ended.") from exc
        raise failure(exc, labels, block, chain) from exc
    if count:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def preview(
    workspace: Workspace,
    pipeline: dict[str, Any],
    schema: ModelSchema | None,
    rows: int = 20,
    params: Mapping[str, datetime] | None = None,
) -> Preview:
    """First rows after each block and the schema check; never raises for pipeline errors
    (a failing stage carries its message, later stages are not shown)."""
    raw = pipeline if isinstance(pipeline, dict) else {}
    stages: list[StagePreview] = []
    with contextlib.ExitStack() as stack:
        try:
            watchdog = stack.enter_context(sql_limits.bounded("preview"))
            memory = watchdog.limits.memory
            tcon = watchdog.watch(stack.enter_context(transform_connection(workspace, memory)))
            source = _check_source(workspace, raw.get("source"), tcon)
            labels = _labels({"source": source, "transforms": []})
            if source["kind"] == "postgres":  # one query: a sample the transforms run on
                with connections.open_source(
                    workspace, source, PREVIEW_BATCH_ROWS, PREVIEW_BATCH_ROWS
                ) as reader:
                    sample = reader.read_all()
                source_sql: str | pa.Table = sample
                table = sample.slice(0, rows)
            else:
                source_sql = source_query(workspace, incremental.bind_source(source, params))
            named = source_sql if isinstance(source_sql, str) else ""
            scon = watchdog.watch(stack.enter_context(source_connection(workspace, memory, named)))
            if isinstance(source_sql, str):
                head = source_chain(source_sql).limited(rows)
                table = attempt(lambda: scon.sql(head.sql).to_arrow_table(), labels, "source", head)
        except InvalidInput as exc:  # a PipelineError, or a bad limit setting
            return Preview([StagePreview("source", pd.DataFrame(), str(exc))])
        table = table.rename_columns([tables.nfc(n) for n in table.column_names])
        stages.append(StagePreview("source", table.to_pandas()))
        notes = [] if table.num_rows else ["No rows after the source."]
        chain, names = Chain(), set[str]()
        transforms = raw.get("transforms")
        transforms = transforms if isinstance(transforms, list) else []
        for i, block in enumerate(transforms):
            name = (block.get("name") if isinstance(block, dict) else None) or f"transform_{i + 1}"
            try:
                checked = _check_transform(tcon, block, i, names)
                name = checked["name"]
                names.add(name)
                labels[name] = f"Transform '{name}'"
                chain = chain.then(name, checked["sql"])
                table = _preview_stage(watchdog, scon, tcon, source_sql, chain, rows, labels, name)
            except PipelineError as exc:
                stages.append(StagePreview(str(name), pd.DataFrame(), str(exc)))
                return Preview(stages, None, notes)
            stages.append(StagePreview(name, table.to_pandas()))
            if not table.num_rows:
                notes.append(f"No rows after transform '{name}'.")
        notes += _other_notes(workspace, raw, tcon, table.schema.names)
    check = check_schema(table.schema, schema, sample=table) if schema is not None else None
    return Preview(stages, check, notes)


def _preview_stage(
    watchdog: sql_limits.Watchdog,
    scon: Connection,
    tcon: Connection,
    source_sql: str | pa.Table,
    chain: Chain,
    rows: int,
    labels: Labels,
    name: str,
) -> pa.Table:
    """The first rows of the source followed by the chain. Each stage reads a fresh source
    stream on its own cursor: a stream is read once, and a half-read one blocks its cursor.
    (A postgres source comes as its sample table, read once.)"""
    with contextlib.closing(watchdog.watch(scon.cursor())) as cursor:
        stream = (
            source_sql
            if isinstance(source_sql, pa.Table)
            else attempt(
                lambda: cursor.sql(source_sql).to_arrow_reader(PREVIEW_BATCH_ROWS), labels, "source"
            )
        )
        tcon.register(
            SOURCE_TABLE,
            stream if isinstance(stream, pa.Table) else tables.normalized_reader(stream),
        )
        head = chain.limited(rows)
        return attempt(lambda: tcon.sql(head.sql).to_arrow_table(), labels, name, head)


def _other_notes(
    ws: Workspace, raw: dict[str, Any], con: Connection, columns: list[str]
) -> list[str]:
    """What the preview cannot show: a bad sink or setting, a label column not in the input."""
    try:
        spec = _validate(raw, ws, con)
    except PipelineError as exc:
        return [str(exc)]
    label = spec["label_column"]
    if label and label not in columns:
        return [f"The label column '{label}' is not in the input: runs will not compute metrics."]
    return []
