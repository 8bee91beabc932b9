"""Pipelines: read a source in batches, apply SQL transforms, check against a model's schema.

(Skeleton: the contract the run engine codes against; bodies are being written.)

A pipeline is a dict stored on the deployment:
    {"source": {"kind": "file", "path": "datasets/ds_x/data.parquet"}     # file or glob
             | {"kind": "upload", "path": "uploads/<id>/name.csv"}
             | {"kind": "sql", "sql": "SELECT * FROM read_csv('exports/*.csv')"},
     "transforms": [{"name": "clean", "sql": "SELECT * FROM input WHERE age >= 0"}, ...],
     "sinks": [{"kind": "folder", "path": "exports/scores", "format": "csv" | "parquet"},
               {"kind": "duckdb_table", "path": "exports/scores.duckdb", "table": "scores",
                "mode": "append" | "replace"}],
     "label_column": "churn" | None,
     "batch_rows": 100000}
Paths are relative to the workspace (or absolute inside an allowed root). The model block is not
in the dict: it is always the deployment's current version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from core.entities import ModelSchema
from core.workspace import Workspace

DEFAULT_BATCH_ROWS = 100_000


@dataclass(frozen=True)
class SchemaCheck:
    """Input columns against a model schema. `problems` empty means predictable."""

    missing: tuple[str, ...]                       # model features absent from the input
    mismatched: tuple[tuple[str, str, str], ...]   # (column, expected kind, found dtype)
    extra: tuple[str, ...]                         # input columns the model ignores (kept)

    @property
    def is_ok(self) -> bool:
        return not self.missing and not self.mismatched

    def message(self) -> str:
        """One sentence per problem, naming each column, expected vs found."""
        raise NotImplementedError

    def raise_for_problems(self) -> None:
        """Raise SchemaMismatch (message names every column) unless is_ok."""
        raise NotImplementedError


@dataclass(frozen=True)
class StagePreview:
    name: str              # "source", then each transform's name
    frame: pd.DataFrame    # first rows after this stage
    error: str | None = None


@dataclass(frozen=True)
class Preview:
    stages: list[StagePreview]
    check: SchemaCheck | None = None
    notes: list[str] = field(default_factory=list)


def validate_pipeline(pipeline: dict[str, Any]) -> dict[str, Any]:
    """Return a normalised copy; raises InvalidInput naming the bad block and how to fix it."""
    raise NotImplementedError


@contextlib.contextmanager
def open_input(workspace: Workspace, pipeline: dict[str, Any],
               batch_rows: int | None = None) -> Iterator[pa.RecordBatchReader]:
    """Stream the pipeline's output (source, then transforms) as Arrow batches.

    Bounded memory for row-wise pipelines. The source is read on a DuckDB connection that may
    only reach the workspace and allowed roots; transforms run on a connection with external
    access disabled, so they cannot read files. Raises PipelineError (an InvalidInput) for a
    missing/unreadable source or a SQL error, naming the block and quoting DuckDB's message.
    """
    raise NotImplementedError
    yield  # pragma: no cover


def check_schema(columns: pa.Schema, schema: ModelSchema) -> SchemaCheck:
    """Compare input columns with the model's features (numeric needs a numeric/bool type)."""
    raise NotImplementedError


def to_model_frame(batch: pa.RecordBatch, schema: ModelSchema) -> pd.DataFrame:
    """The batch's feature columns as the model expects them (dtypes coerced, order kept)."""
    raise NotImplementedError


def input_quality(frame: pd.DataFrame, schema: ModelSchema,
                  profile: dict[str, Any]) -> tuple[pd.Series, dict[str, int]]:
    """Per-row quality in [0, 1] (share of features present, in training range, of known
    category) and counts: {"missing": n, "out_of_range": n, "unseen_category": n}."""
    raise NotImplementedError


def preview(workspace: Workspace, pipeline: dict[str, Any], schema: ModelSchema | None,
            rows: int = 20) -> Preview:
    """First rows after each block and the schema check; never raises for pipeline errors
    (a failing stage carries its message, later stages are not shown)."""
    raise NotImplementedError
