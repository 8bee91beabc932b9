"""Pipelines: sources, confinement, SQL transforms, schema checks, model frames, quality, preview.

Everything runs on real DuckDB over real files in a temp workspace, and the model-frame test
predicts with a model trained by core.training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import pipeline
from core.entities import FeatureSchema, ModelSchema
from core.errors import InvalidInput, PipelineError, SchemaMismatch
from core.registry import load_estimator
from core.store import Store
from core.training import TrainingResult
from core.workspace import ALLOWED_ROOTS_ENV, Workspace

FRAME = pd.DataFrame(
    {
        "id": ["a", "b", "c", "d"],
        "age": [31.0, 45.0, None, 62.0],
        "plan": ["basic", "pro", "basic", None],
    }
)


@pytest.fixture
def ws(home: Path) -> Workspace:
    return Workspace.resolve(home).ensure()


def _read(ws: Workspace, spec: dict[str, Any], batch_rows: int | None = None) -> pd.DataFrame:
    with pipeline.open_input(ws, spec, batch_rows) as reader:
        return reader.read_all().to_pandas()


def _file(path: str, *transforms: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "source": {"kind": "file", "path": path},
        "transforms": [{"name": n, "sql": s} for n, s in transforms],
        **extra,
    }


def _refused(
    ws: Workspace, spec: dict[str, Any], *parts: str, block: str | None = "source"
) -> PipelineError:
    """open_input refuses `spec` with a PipelineError naming `block` and holding `parts`."""
    with pytest.raises(PipelineError) as info, pipeline.open_input(ws, spec) as reader:
        reader.read_all()
    assert isinstance(info.value, InvalidInput)
    assert info.value.block == block
    for part in parts:
        assert part in str(info.value)
    return info.value


# ---------------------------------------------------------------------------- validation
def test_validation_fills_the_defaults(ws: Workspace) -> None:
    spec = pipeline.validate_pipeline(
        {
            "source": {"kind": "file", "path": "data.csv"},
            "sinks": [
                {"kind": "folder", "path": "exports/s"},
                {"kind": "duckdb_table", "path": "exports/s.duckdb", "table": "scores"},
            ],
        },
        ws,
    )
    assert spec == {
        "source": {"kind": "file", "path": "data.csv"},
        "transforms": [],
        "sinks": [
            {"kind": "folder", "path": "exports/s", "format": "parquet"},
            {
                "kind": "duckdb_table",
                "path": "exports/s.duckdb",
                "table": "scores",
                "mode": "append",
            },
        ],
        "label_column": None,
        "batch_rows": pipeline.DEFAULT_BATCH_ROWS,
    }


def test_validation_uses_the_current_workspace_by_default(ws: Workspace) -> None:
    spec = pipeline.validate_pipeline(_file("x.parquet", ("t", "SELECT * FROM input; -- end")))
    assert spec["transforms"] == [{"name": "t", "sql": "SELECT * FROM input"}]
    with pytest.raises(PipelineError, match="outside the workspace"):
        pipeline.validate_pipeline(_file("../x.parquet"))


SOURCE = {"kind": "file", "path": "data.csv"}


@pytest.mark.parametrize(
    ("spec", "block", "parts"),
    [
        ({"source": {"kind": "ftp", "path": "x"}}, "source", ["Unknown source kind 'ftp'", "sql"]),
        ({"transforms": []}, "source", ["no source block"]),
        ({"source": {"kind": "file"}}, "source", ["has no path"]),
        ({"source": {"kind": "file", "path": "book.xlsx"}}, "source", ["not a CSV", ".parquet"]),
        ({"source": {"kind": "upload", "path": "exports/x.csv"}}, "source", ["not under"]),
        ({"source": {"kind": "sql", "sql": ""}}, "source", ["The source SQL is empty"]),
        (
            {"source": {"kind": "sql", "sql": "SELECT * FROM read_csv('../../x.csv')"}},
            "source",
            ["outside the workspace", ALLOWED_ROOTS_ENV],
        ),
        (
            {
                "source": SOURCE,
                "transforms": [{"name": "a", "sql": "SELECT 1"}, {"name": "a", "sql": "SELECT 2"}],
            },
            "a",
            ["Transform 2 is named 'a'", "unique"],
        ),
        (
            {"source": SOURCE, "transforms": [{"name": "source", "sql": "SELECT 1"}]},
            "source",
            ["name of the source block"],
        ),
        ({"source": SOURCE, "transforms": [{"name": "t", "sql": "  "}]}, "t", ["'t' is empty"]),
        (
            {"source": SOURCE, "transforms": [{"name": "t", "sql": "SELECT 1; SELECT 2"}]},
            "t",
            ["holds 2 statements"],
        ),
        (
            {"source": SOURCE, "transforms": [{"name": "t", "sql": "SELECT 1", "when": "x"}]},
            "transform_1",
            ["unknown field(s): when"],
        ),
        ({"source": SOURCE, "transforms": "SELECT 1"}, "transforms", ["must be a list"]),
        ({"source": SOURCE, "sinks": [{"kind": "s3", "path": "x"}]}, "sink 1", ["unknown kind"]),
        (
            {"source": SOURCE, "sinks": [{"kind": "folder", "path": "out", "format": "xlsx"}]},
            "sink 1",
            ["unknown format 'xlsx'", "csv, parquet"],
        ),
        (
            {"source": SOURCE, "sinks": [{"kind": "folder", "path": "../out"}]},
            "sink 1",
            ["outside the workspace"],
        ),
        (
            {"source": SOURCE, "sinks": [{"kind": "folder", "path": "runs/mine"}]},
            "sink 1",
            ["ModelDeck's own files"],
        ),
        (
            {
                "source": SOURCE,
                "sinks": [{"kind": "duckdb_table", "path": "modeldeck.duckdb", "table": "t"}],
            },
            "sink 1",
            ["ModelDeck's own files"],
        ),
        (
            {
                "source": SOURCE,
                "sinks": [
                    {"kind": "duckdb_table", "path": "exports/s.duckdb", "table": "x; DROP TABLE y"}
                ],
            },
            "sink 1",
            ["not a valid table name"],
        ),
        (
            {
                "source": SOURCE,
                "sinks": [
                    {
                        "kind": "duckdb_table",
                        "path": "exports/s.duckdb",
                        "table": "t",
                        "mode": "upsert",
                    }
                ],
            },
            "sink 1",
            ["unknown mode 'upsert'", "append, replace"],
        ),
        ({"source": SOURCE, "batch_rows": 0}, "batch_rows", ["batch_rows must be"]),
        ({"source": SOURCE, "batch_rows": True}, "batch_rows", ["batch_rows must be"]),
        ({"source": SOURCE, "label_column": 3}, "label_column", ["label column"]),
        (
            {"source": SOURCE, "model": {"id": "mdl_x"}},
            "model",
            ["model block cannot be", "roll back"],
        ),
        ({"source": SOURCE, "transform": []}, "pipeline", ["unknown field(s): transform"]),
    ],
)
def test_bad_pipelines_are_refused_naming_the_block(
    ws: Workspace, spec: dict[str, Any], block: str, parts: list[str]
) -> None:
    with pytest.raises(InvalidInput) as info:
        pipeline.validate_pipeline(spec, ws)
    assert isinstance(info.value, PipelineError) and info.value.block == block
    for part in parts:
        assert part in str(info.value)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("COPY (SELECT 1) TO 'out.csv'", "COPY"),
        ("ATTACH 'other.duckdb'", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("SET threads = 1", "SET"),
        ("CREATE TABLE t (a INT)", "CREATE"),
    ],
)
def test_only_select_statements_are_allowed(ws: Workspace, sql: str, kind: str) -> None:
    for spec, block in (
        (_file("x.csv", ("write", sql)), "write"),
        ({"source": {"kind": "sql", "sql": sql}}, "source"),
    ):
        with pytest.raises(PipelineError) as info:
            pipeline.validate_pipeline(spec, ws)
        assert info.value.block == block
        assert f"is a {kind} statement; only SELECT" in info.value.message
        assert "COPY, ATTACH, INSTALL" in info.value.hint


# ---------------------------------------------------------------------------- sources
def test_csv_tsv_parquet_and_json_files_are_read(ws: Workspace) -> None:
    home = ws.home
    FRAME.to_csv(home / "d.csv", index=False)
    FRAME.to_csv(home / "d.tsv", index=False, sep="\t")
    FRAME.to_parquet(home / "d.parquet", index=False)
    (home / "d.json").write_text(FRAME.to_json(orient="records"))
    (home / "d.ndjson").write_text(FRAME.to_json(orient="records", lines=True))
    for name in ("d.csv", "d.tsv", "d.parquet", "d.json", "d.ndjson", str(home / "d.csv")):
        got = _read(ws, _file(name))
        pd.testing.assert_frame_equal(got, FRAME, check_dtype=False, obj=name)


def test_a_glob_reads_every_match_by_column_name(ws: Workspace) -> None:
    folder = ws.home / "exports" / "daily"
    folder.mkdir(parents=True)
    FRAME.iloc[:2].to_csv(folder / "1.csv", index=False)
    FRAME.iloc[2:][["plan", "age", "id"]].to_csv(folder / "2.csv", index=False)
    (folder / "notes.txt.bak").write_text("ignored")
    got = _read(ws, _file("exports/daily/*.csv"))
    pd.testing.assert_frame_equal(
        got.sort_values("id", ignore_index=True), FRAME, check_dtype=False
    )


def test_upload_and_sql_sources(ws: Workspace) -> None:
    upload = ws.uploads_dir / "up_1" / "new.parquet"
    upload.parent.mkdir()
    FRAME.to_parquet(upload, index=False)
    got = _read(ws, {"source": {"kind": "upload", "path": "uploads/up_1/new.parquet"}})
    pd.testing.assert_frame_equal(got, FRAME, check_dtype=False)
    # Relative paths in a SQL source start at the workspace, whatever the process's folder.
    sql = (
        "SELECT plan, count(*) AS n FROM read_parquet('uploads/up_1/new.parquet') "
        "WHERE plan IS NOT NULL GROUP BY plan ORDER BY plan;"
    )
    got = _read(ws, {"source": {"kind": "sql", "sql": sql}})
    assert got.to_dict("list") == {"plan": ["basic", "pro"], "n": [2, 1]}


def test_no_source_reaches_another_projects_files(ws: Workspace) -> None:
    """Every project's uploads, datasets and run results lie in ModelDeck's own folders: a
    source reads one of those files by its exact name only, never by a pattern (of a file
    source or in SQL, written out or computed), and the API's log or the models never."""
    for folder in ("uploads/tok_a", "runs/run_b", "predictions/compacted/day=2026-12-06"):
        (ws.home / folder).mkdir(parents=True, exist_ok=True)
        FRAME.to_parquet(ws.home / folder / "rows.parquet", index=False)
    (ws.home / "exports").mkdir()
    FRAME.to_parquet(ws.home / "exports" / "mine.parquet", index=False)
    # by exact name, as the app shows an upload or a run's results to its project
    assert len(_read(ws, _file("uploads/tok_a/rows.parquet"))) == len(FRAME)
    sql = "SELECT * FROM read_parquet('runs/run_b/rows.parquet')"
    assert len(_read(ws, {"source": {"kind": "sql", "sql": sql}})) == len(FRAME)
    # patterns into them, or matching into them from above
    _refused(ws, _file("uploads/*/rows.parquet"), "is a pattern in ModelDeck's own folder")
    _refused(
        ws,
        _file("*/*/rows.parquet"),
        "The pattern '*/*/rows.parquet' matches",
        "which holds every project's files",
    )
    _refused(
        ws,
        {"source": {"kind": "sql", "sql": "SELECT * FROM read_parquet('**/rows.parquet')"}},
        "The pattern '**/rows.parquet' matches",
    )
    # never read as data
    _refused(
        ws,
        _file("predictions/compacted/day=2026-12-06/rows.parquet"),
        "own folder predictions/, which is never read as data",
    )
    # a path DuckDB computes never passes the literal check: its allow-list stops it
    computed = f"SELECT * FROM read_parquet('{ws.home}/uplo' || 'ads/*/rows.par' || 'quet')"
    _refused(
        ws,
        {"source": {"kind": "sql", "sql": computed}},
        "Permission Error",
        "in ModelDeck's own folders (datasets/, runs/, uploads/) only a file named exactly",
    )
    # a pattern in a folder of one's own reads as before
    assert len(_read(ws, _file("exports/*.parquet"))) == len(FRAME)


def test_an_allowed_root_outside_the_workspace_is_readable(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    FRAME.to_csv(shared / "d.csv", index=False)
    spec = {"source": {"kind": "sql", "sql": f"SELECT * FROM '{shared}/d.csv'"}}
    _refused(ws, spec, "outside the workspace", ALLOWED_ROOTS_ENV)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(shared))
    assert len(_read(ws, spec)) == 4
    assert len(_read(ws, _file(str(shared / "d.csv")))) == 4


# ---------------------------------------------------------------------------- confinement
def test_paths_outside_the_allowed_roots_are_refused(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    FRAME.to_csv(outside, index=False)
    for path in (str(outside), "../outside.csv", "exports/../../outside.csv"):
        error = _refused(ws, _file(path), f"The source path '{path}' is outside the workspace")
        assert ALLOWED_ROOTS_ENV in error.hint and str(ws.home) in error.hint


def test_a_sql_source_cannot_read_system_files_or_the_metadata(ws: Workspace, store: Store) -> None:
    assert ws.db_path.exists()
    for target in ("/etc/passwd", str(ws.db_path), "modeldeck.duckdb"):
        spec = {"source": {"kind": "sql", "sql": f"SELECT * FROM read_text('{target}')"}}
        _refused(
            ws,
            spec,
            "The source SQL failed",
            "file system operations are disabled",
            ALLOWED_ROOTS_ENV,
        )


def test_a_glob_match_linking_outside_is_refused(ws: Workspace, tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "secret.csv", index=False)
    FRAME.to_csv(ws.home / "a.csv", index=False)
    os.symlink(tmp_path / "secret.csv", ws.home / "b.csv")
    _refused(ws, _file("*.csv"), "b.csv' links to", "secret.csv', outside the workspace")


# ---------------------------------------------------------------------------- transforms
def test_transforms_chain_over_input(ws: Workspace) -> None:
    FRAME.to_parquet(ws.home / "d.parquet", index=False)
    got = _read(
        ws,
        _file(
            "d.parquet",
            ("known_age", "-- rows with an age\nSELECT * FROM input WHERE age IS NOT NULL;"),
            ("older", "SELECT id, age + 1 AS age, plan FROM input"),
            ("own_cte", "WITH t AS (SELECT * FROM input) SELECT id, age FROM t ORDER BY age DESC"),
            ("from_first", "FROM input SELECT id, age * 2 AS double_age"),
        ),
    )
    assert got.to_dict("list") == {"id": ["d", "b", "a"], "double_age": [126.0, 92.0, 64.0]}


def test_a_transform_cannot_read_a_file(ws: Workspace) -> None:
    FRAME.to_parquet(ws.home / "d.parquet", index=False)
    for target in (ws.home / "d.parquet", Path("/etc/passwd")):
        error = _refused(
            ws,
            _file(
                "d.parquet",
                ("ok", "SELECT * FROM input"),
                ("sneaky", f"SELECT * FROM read_text('{target}')"),
            ),
            "Transform 'sneaky' failed",
            "file system operations are disabled",
            block="sneaky",
        )
        assert "Transforms cannot read files" in error.hint


def test_sql_errors_name_the_block_and_quote_duckdb(ws: Workspace) -> None:
    FRAME.to_parquet(ws.home / "d.parquet", index=False)
    _refused(
        ws,
        _file("d.parquet", ("ok", "SELECT * FROM input"), ("typo", "SELECT *\nFRM input")),
        "Transform 'typo' failed: Parser Error: syntax error",
        "LINE 2: FRM input",
        block="typo",
    )
    _refused(
        ws,
        _file("d.parquet", ("cols", "SELECT agee FROM input")),
        "Transform 'cols' failed",
        'column "agee" not found',
        block="cols",
    )
    _refused(
        ws,
        _file("d.parquet", ("table", "SELECT * FROM inputs")),
        "Transform 'table' failed",
        "inputs does not exist",
        "FROM input",
        block="table",
    )
    _refused(
        ws,
        {
            "source": {
                "kind": "sql",
                "sql": "SELECT * FROM read_parquet('d.parquet') WHERE nope > 1",
            }
        },
        "The source SQL failed",
        '"nope" not found',
    )


def test_runtime_errors_name_their_block(ws: Workspace) -> None:
    FRAME.to_parquet(ws.home / "d.parquet", index=False)
    spec = _file(
        "d.parquet",
        ("ok", "SELECT * FROM input"),
        ("cast", "SELECT id,\n  CAST(plan AS INTEGER) AS plan FROM input"),
        ("after", "SELECT * FROM input"),
    )
    error = _refused(
        ws,
        spec,
        "Transform 'cast' failed: Conversion Error",
        "'basic'",
        "LINE 2:   CAST(plan AS INTEGER)",
        block="cast",
    )
    assert "TRY_CAST" in error.hint
    # A CSV whose type turns out wrong after DuckDB's sample: found while streaming, blamed on
    # the source even behind a transform, through the reader interface the run engine uses.
    lines = ["n,x"] + [f"{i},{i}" for i in range(30_000)] + ["oops,1"]
    (ws.home / "late.csv").write_text("\n".join(lines) + "\n")
    spec = _file("late.csv", ("all", "SELECT * FROM input"))
    with pytest.raises(PipelineError) as info, pipeline.open_input(ws, spec, 1000) as reader:
        while True:
            reader.read_next_batch()
    assert info.value.block == "source"
    assert "Reading the source 'late.csv' failed: Conversion Error" in info.value.message
    assert '"oops"' in info.value.message


def test_missing_and_unreadable_sources(ws: Workspace) -> None:
    hint = f"relative paths start at the workspace, {ws.home}"
    assert hint in _refused(ws, _file("gone.csv"), "The source file 'gone.csv' does not exist").hint
    assert (
        hint
        in _refused(
            ws, _file("exports/*.parquet"), "No file matches the source 'exports/*.parquet'"
        ).hint
    )
    (ws.home / "broken.parquet").write_bytes(b"not a parquet file")
    _refused(
        ws, _file("broken.parquet"), "Reading the source 'broken.parquet' failed", "broken.parquet"
    )
    _refused(ws, _file("uploads"), "not a CSV")
    _refused(
        ws,
        {"source": {"kind": "sql", "sql": "SELECT * FROM 'exports/none.csv'"}},
        "The source SQL reads 'exports/none.csv', and no such file exists.",
    )


def test_an_empty_result_is_an_empty_stream(ws: Workspace) -> None:
    FRAME.to_parquet(ws.home / "d.parquet", index=False)
    spec = _file("d.parquet", ("none", "SELECT * FROM input WHERE age > 1000"))
    with pipeline.open_input(ws, spec) as reader:
        assert reader.schema.names == ["id", "age", "plan"]
        assert reader.read_all().num_rows == 0


def test_batches_are_bounded_and_complete(ws: Workspace) -> None:
    n = 250_000
    table = pa.table({"i": np.arange(n), "x": np.random.default_rng(0).random(n)})
    pq.write_table(table, ws.home / "big.parquet", row_group_size=30_000)
    for spec, expected in (
        (_file("big.parquet"), n),
        (_file("big.parquet", ("even", "SELECT * FROM input WHERE i % 2 = 0")), n // 2),
    ):
        with pipeline.open_input(ws, spec, batch_rows=100_000) as reader:
            sizes = [batch.num_rows for batch in reader]
        assert sum(sizes) == expected
        # Full batches however the source is chunked or filtered; only the last is short.
        assert sizes[:-1] == [100_000] * (len(sizes) - 1) and 0 < sizes[-1] <= 100_000


def test_the_stream_ends_with_its_context(ws: Workspace) -> None:
    FRAME.to_parquet(ws.home / "d.parquet", index=False)
    with pipeline.open_input(ws, _file("d.parquet"), batch_rows=2) as reader:
        reader.read_next_batch()
    with pytest.raises(RuntimeError, match="after open_input"):
        reader.read_next_batch()


# ---------------------------------------------------------------------------- schema
SCHEMA = ModelSchema(
    (
        FeatureSchema("age", "numeric", "float64"),
        FeatureSchema("visits", "numeric", "int64"),
        FeatureSchema("plan", "categorical", "str", ("basic", "pro")),
        FeatureSchema("region", "categorical", "str", ("north", "south")),
    ),
    target="churn",
    task="binary",
    classes=("no", "yes"),
    key_column="id",
)
PROFILE = {
    "features": {
        "age": {"kind": "numeric", "min": 18.0, "max": 80.0},
        "visits": {"kind": "numeric", "min": 0.0, "max": 10.0},
    }
}


def test_schema_check_lists_each_problem() -> None:
    table = pa.table(
        {
            "id": ["a"],
            "Age": [3.0],
            "visits": ["many"],
            "plan": pa.array([[1]], pa.list_(pa.int64())),
            "note": ["x"],
        }
    )
    check = pipeline.check_schema(table.schema, SCHEMA, sample=table)
    assert not check.is_ok
    assert check.missing == ("age", "region")
    assert check.mismatched == (
        ("visits", "numeric", "text with non-numeric values such as 'many'"),
        ("plan", "categorical", "list<item: int64>"),
    )
    assert check.extra == ("id", "Age", "note")
    message = check.message()
    assert "Column 'age' is missing from the input (the input has 'Age')." in message
    assert "Column 'region' is missing from the input." in message
    assert "Column 'visits' should be numeric (a number or boolean) but is text" in message
    assert (
        "Column 'plan' should be categorical (text such as 'basic', 'pro') but is "
        "list<item: int64>."
    ) in message
    with pytest.raises(SchemaMismatch) as info:
        check.raise_for_problems()
    assert message in info.value.message and "transform" in info.value.hint


def test_schema_check_accepts_compatible_types() -> None:
    table = pa.table(
        {
            "age": pa.array([30, None], pa.int32()),
            "visits": [True, False],
            "plan": pa.array(["pro", "basic"]).dictionary_encode(),
            "region": [1, 2],
            "id": ["a", "b"],
        }
    )
    check = pipeline.check_schema(table.schema, SCHEMA)
    assert check.is_ok and check.message() == "" and check.extra == ("id",)
    check.raise_for_problems()
    # Text holding numbers passes; a date never does for a numeric feature.
    texts = pa.table(
        {
            "age": ["31", " 40 ", "", None],
            "visits": ["1", "2", "3", "4"],
            "plan": ["pro"] * 4,
            "region": ["north"] * 4,
        }
    )
    assert pipeline.check_schema(texts.schema, SCHEMA, sample=texts).is_ok
    dates = texts.set_column(0, "age", pa.array([None] * 4, pa.date32()))
    assert pipeline.check_schema(dates.schema, SCHEMA).mismatched == (
        ("age", "numeric", "date32[day]"),
    )


def test_to_model_frame_coerces_types() -> None:
    batch = pa.record_batch(
        {
            "region": pa.array(["north", None, "east"]).dictionary_encode(),
            "age": pa.array(["31", "", None]),
            "visits": pa.array([True, False, None]),
            "plan": pa.array([1, None, 2], pa.int64()),
            "id": ["a", "b", "c"],
        }
    )
    frame = pipeline.to_model_frame(batch, SCHEMA)
    assert list(frame.columns) == ["age", "visits", "plan", "region"]
    assert frame["age"].dtype == np.float64 and frame["visits"].dtype == np.float64
    np.testing.assert_array_equal(frame["age"], [31.0, np.nan, np.nan])
    np.testing.assert_array_equal(frame["visits"], [1.0, 0.0, np.nan])
    assert frame["plan"].tolist()[0] == "1" and pd.isna(frame["plan"].iloc[1])
    assert frame["region"].tolist()[::2] == ["north", "east"] and pd.isna(frame["region"][1])


def test_to_model_frame_names_every_bad_column() -> None:
    batch = pa.record_batch(
        {"age": ["31", "old"], "visits": [1, 2], "plan": pa.array([b"x", b"y"], pa.binary())}
    )
    with pytest.raises(SchemaMismatch) as info:
        pipeline.to_model_frame(batch, SCHEMA)
    message = info.value.message
    assert "Column 'region' is missing" in message
    assert (
        "Column 'age' should be numeric (a number or boolean) but is text with "
        "non-numeric values such as 'old'." in message
    )
    assert (
        "Column 'plan' should be categorical (text such as 'basic', 'pro') but is binary."
        in message
    )


def test_a_trained_model_predicts_on_pipeline_batches(
    trained_store: Store, trained_home: tuple[Path, TrainingResult], churn_small: pd.DataFrame
) -> None:
    ws = trained_store.workspace
    exported = churn_small.drop(columns="churn")
    exported["monthly_charges"] = exported["monthly_charges"].astype(str)  # text numbers
    exported.to_csv(ws.home / "customers.csv", index=False)
    spec = _file(
        "customers.csv",
        ("typed", "SELECT * REPLACE (CAST(tenure_months AS INTEGER) AS tenure_months) FROM input"),
    )
    for model in trained_home[1].models:
        estimator = load_estimator(trained_store, model)
        expected = estimator.predict_proba(churn_small[model.schema.feature_names])
        got = []
        with pipeline.open_input(ws, spec, batch_rows=250) as reader:
            assert pipeline.check_schema(reader.schema, model.schema).is_ok
            for batch in reader:
                frame = pipeline.to_model_frame(batch, model.schema)
                got.append(estimator.predict_proba(frame))
        assert len(got) == 3
        np.testing.assert_allclose(np.vstack(got), expected, atol=1e-9, err_msg=model.algorithm)
        quality, counts = pipeline.input_quality(frame, model.schema, model.profile)
        assert 0.5 < quality.mean() <= 1 and counts["missing"] > 0


# ---------------------------------------------------------------------------- quality
def test_input_quality_per_row_and_counts() -> None:
    frame = pd.DataFrame(
        {
            "age": [30.0, np.nan, 95.0, 40.0, np.nan, 18.0],
            "visits": [1.0, 2.0, 3.0, 4.0, np.nan, 10.0],
            "plan": pd.Series(["pro", "basic", "pro", "gold", None, "basic"], dtype="str"),
            "region": pd.Series(["north", "south", "north", "north", None, "west"], dtype="str"),
        }
    )
    quality, counts = pipeline.input_quality(frame, SCHEMA, PROFILE)
    # all good; one missing; one out of range; one unseen; all missing; edges in, one unseen
    assert quality.tolist() == [1.0, 0.75, 0.75, 0.75, 0.0, 0.75]
    assert quality.name == "input_quality" and quality.index.equals(frame.index)
    assert counts == {
        "missing": 5,
        "out_of_range": 1,
        "unseen_category": 2,
        "columns": {
            "missing": {"age": 2, "visits": 1, "plan": 1, "region": 1},
            "out_of_range": {"age": 1},
            "unseen_category": {"plan": 1, "region": 1},
        },
    }
    assert pipeline.describe_problems(counts) == (
        "5 missing values (age 2, plan 1, region 1, 1 more), 1 out of training range (age 1), "
        "2 unseen categories (plan 1, region 1)"
    )


def test_infinite_values_count_as_out_of_range_and_are_predicted_as_missing() -> None:
    frame = pd.DataFrame(
        {
            "age": [30.0, np.inf, -np.inf],
            "visits": [1.0, 2.0, 3.0],
            "plan": ["pro"] * 3,
            "region": ["north"] * 3,
        }
    )
    quality, counts = pipeline.input_quality(frame, SCHEMA, PROFILE)
    assert quality.tolist() == [1.0, 0.75, 0.75]
    assert counts["out_of_range"] == 2 and counts["columns"]["out_of_range"] == {"age": 2}
    cleaned = pipeline.finite(frame)
    assert cleaned["age"].isna().tolist() == [False, True, True]
    assert pipeline.finite(cleaned) is cleaned  # nothing to replace: the same frame


def test_input_quality_without_a_reference_counts_presence_only() -> None:
    schema = ModelSchema(
        (FeatureSchema("x", "numeric", "float64"), FeatureSchema("c", "categorical", "object")),
        "y",
        "regression",
    )
    frame = pd.DataFrame({"x": [1e9, np.nan], "c": ["anything", None]})
    quality, counts = pipeline.input_quality(frame, schema, {})
    assert quality.tolist() == [1.0, 0.0]
    assert counts == {
        "missing": 2,
        "out_of_range": 0,
        "unseen_category": 0,
        "columns": {"missing": {"x": 1, "c": 1}},
    }


# ---------------------------------------------------------------------------- preview
def test_preview_shows_each_stage_and_the_schema_check(ws: Workspace) -> None:
    frame = pd.DataFrame(
        {
            "id": list("abcdefgh"),
            "age": np.arange(8) * 10.0,
            "visits": np.arange(8),
            "plan": ["pro", "basic"] * 4,
            "region": ["north"] * 8,
        }
    )
    frame.to_parquet(ws.home / "d.parquet", index=False)
    spec = _file(
        "d.parquet",
        ("adults", "SELECT * FROM input WHERE age >= 18"),
        ("none", "SELECT * FROM input WHERE age > 1000"),
        label_column="churn",
        sinks=[{"kind": "folder", "path": "/tmp"}],
    )
    shown = pipeline.preview(ws, spec, SCHEMA, rows=3)
    assert [(s.name, len(s.frame), s.error) for s in shown.stages] == [
        ("source", 3, None),
        ("adults", 3, None),
        ("none", 0, None),
    ]
    assert shown.stages[1].frame["id"].tolist() == ["c", "d", "e"]
    assert shown.check is not None and shown.check.is_ok and shown.check.extra == ("id",)
    assert shown.notes[0] == "No rows after transform 'none'."
    assert "Sink 1 writes to '/tmp', outside the workspace" in shown.notes[1]
    shown = pipeline.preview(ws, _file("d.parquet", label_column="churn"), None)
    assert shown.check is None
    assert shown.notes == [
        "The label column 'churn' is not in the input: runs will not compute metrics."
    ]


def test_preview_stops_at_the_failing_stage(ws: Workspace) -> None:
    FRAME.to_parquet(ws.home / "d.parquet", index=False)
    spec = _file(
        "d.parquet",
        ("ok", "SELECT * FROM input"),
        ("bad", "SELECT *,\n  CAST(plan AS INTEGER) AS n FROM input"),
        ("never", "SELECT * FROM input"),
        ("copy", "COPY input TO 'x.csv'"),
    )
    shown = pipeline.preview(ws, spec, SCHEMA)
    assert [s.name for s in shown.stages] == ["source", "ok", "bad"]
    assert shown.stages[1].error is None and len(shown.stages[1].frame) == 4
    error = shown.stages[2].error
    assert error is not None and shown.stages[2].frame.empty
    assert "Transform 'bad' failed: Conversion Error" in error and "LINE 2:" in error
    assert shown.check is None
    spec["transforms"][1]["sql"] = "COPY input TO 'x.csv'"
    shown = pipeline.preview(ws, spec, SCHEMA)
    assert shown.stages[-1].name == "bad"
    assert "is a COPY statement" in str(shown.stages[-1].error)


def test_preview_of_a_bad_source(ws: Workspace) -> None:
    shown = pipeline.preview(ws, _file("gone.parquet", ("t", "SELECT * FROM input")), SCHEMA)
    assert len(shown.stages) == 1 and shown.stages[0].name == "source"
    assert "The source file 'gone.parquet' does not exist." in str(shown.stages[0].error)
    (ws.home / "empty.csv").write_text("id,age\n")
    shown = pipeline.preview(ws, _file("empty.csv"), SCHEMA)
    assert shown.notes == ["No rows after the source."]
    assert shown.check is not None and shown.check.missing == ("visits", "plan", "region")


def test_json_lines_with_nested_values_preview(ws: Workspace) -> None:
    rows = [{"id": "a", "age": 30, "tags": ["x"]}, {"id": "b", "age": None, "tags": []}]
    (ws.home / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    shown = pipeline.preview(ws, _file("d.jsonl"), SCHEMA)
    assert shown.stages[0].frame["id"].tolist() == ["a", "b"]


def test_yes_no_categories_meet_any_spelling_and_booleans() -> None:
    schema = ModelSchema(
        (
            FeatureSchema("owner", "categorical", "str", ("no", "yes")),
            FeatureSchema("flag", "categorical", "str", ("false", "true")),
            FeatureSchema("plan", "categorical", "str", ("basic", "pro")),
            FeatureSchema("verified", "numeric", "bool"),
        ),
        "y",
        "binary",
    )
    batch = pa.record_batch(
        {
            "owner": [True, False, None],
            "flag": ["True", "FALSE", " t "],
            "plan": ["pro", "basic", "pro"],
            "verified": ["yes", "N", ""],
        }
    )
    frame = pipeline.to_model_frame(batch, schema)
    assert frame["owner"].tolist()[:2] == ["yes", "no"] and pd.isna(frame["owner"].iloc[2])
    assert frame["flag"].tolist() == ["true", "false", "true"]
    np.testing.assert_array_equal(frame["verified"], [1.0, 0.0, np.nan])
    assert pipeline.check_schema(batch.schema, schema, sample=batch).is_ok
    wrong = pa.record_batch(
        {"owner": ["yes"], "flag": ["true"], "plan": [True], "verified": ["perhaps"]}
    )
    check = pipeline.check_schema(wrong.schema, schema, sample=wrong)
    assert check.message() == (
        "Column 'plan' should be categorical (text such as 'basic', 'pro') but is true/false "
        "(boolean). Column 'verified' should be numeric (true/false, 1/0 or yes/no) but is "
        "text with non-numeric values such as 'perhaps'."
    )
    with pytest.raises(SchemaMismatch, match="'plan' should be categorical"):
        pipeline.to_model_frame(wrong, schema)
