"""PostgreSQL sources and sinks against a real server (tests/pg_server.py): runs, preview,
table modes, challenger settings, and every fault a user can hit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from core import connections, deployments, pipeline, registry, runs, sinks
from core.engine import postgres
from core.entities import Deployment, Run
from core.errors import InvalidInput, PipelineError
from core.store import Store
from tests import pg_server, test_runs
from tests.pg_server import PgServer, free_port, pg_sink, pg_source

# Fixtures: the session's server, connection 'warehouse' + table customers, churn-staging.
pg, warehouse, deployed = pg_server.pg, pg_server.warehouse, test_runs.deployed


def execute(store: Store, d: Deployment, **changes: Any) -> Run:
    """Set the pipeline, then enqueue, claim and execute a run in this process."""
    test_runs.set_pipeline(store, d, **changes)
    return test_runs.execute(store, d.name)


# ---------------------------------------------------------------------------- validation
def test_blocks_are_checked_and_normalised(trained_store: Store) -> None:
    spec = pipeline.validate_pipeline(
        {"source": pg_source("SELECT 1;  "), "sinks": [pg_sink("public.scores")]},
        trained_store.workspace,
    )
    assert spec["source"] == {"kind": "postgres", "connection": "warehouse", "sql": "SELECT 1"}
    assert spec["sinks"] == [
        {
            "kind": "postgres",
            "connection": "warehouse",
            "table": "public.scores",
            "mode": "append",
            "challenger": "columns",
        }
    ]
    bad = [
        (
            {"source": {**pg_source(), "connection": "no spaces"}},
            "source",
            "The postgres source names no valid connection ('no spaces').",
        ),
        (
            {"source": pg_source("  ")},
            "source",
            "The source query (PostgreSQL connection 'warehouse') is empty.",
        ),
        (
            {"source": {**pg_source(), "path": "x"}},
            "source",
            "The postgres source has unknown field(s): path.",
        ),
        (
            {"source": pg_source(), "sinks": [pg_sink("a.b.c")]},
            "sink 1",
            "Sink 1: 'a.b.c' is not a valid PostgreSQL table name.",
        ),
        (
            {"source": pg_source(), "sinks": [pg_sink(mode="upsert")]},
            "sink 1",
            "Sink 1 has an unknown mode 'upsert'.",
        ),
        (
            {"source": pg_source(), "sinks": [pg_sink(challenger="rows")]},
            "sink 1",
            "Sink 1 has an unknown challenger setting 'rows'.",
        ),
    ]
    for given, block, message in bad:
        with pytest.raises(PipelineError) as caught:
            pipeline.validate_pipeline(given, trained_store.workspace)
        assert (caught.value.block, caught.value.message) == (block, message)


# ---------------------------------------------------------------------------- the source
def test_the_source_streams_batches_typed_from_the_cursor(
    trained_store: Store, pg: PgServer, warehouse: str
) -> None:
    pg.run(
        "CREATE TABLE typed AS SELECT g AS id, g::int2 AS small, g * 1.5 AS num,"
        " (g % 2 = 0) AS even, 'r' || g AS label, DATE '2024-01-01' + g AS day,"
        " TIMESTAMP '2024-01-01' + g * INTERVAL '1 hour' AS at,"
        " TIMESTAMPTZ '2024-01-01 00:00Z' AS at_tz, jsonb_build_object('g', g) AS doc,"
        " CASE WHEN g = 3 THEN NULL ELSE g::float8 END AS maybe"
        " FROM generate_series(1, 601) AS g"
    )
    spec = {"source": pg_source("SELECT * FROM typed ORDER BY id"), "batch_rows": 250}
    with pipeline.open_input(trained_store.workspace, spec) as reader:
        batches = list(reader)
    assert [b.num_rows for b in batches] == [250, 250, 101]
    table = pa.Table.from_batches(batches)
    assert [str(t) for t in table.schema.types] == [
        "int64",
        "int64",
        "double",
        "bool",
        "string",
        "date32[day]",
        "timestamp[us]",
        "timestamp[us, tz=UTC]",
        "string",
        "double",
    ]
    first = table.slice(0, 3).to_pylist()
    assert first[0]["num"] == 1.5 and first[0]["doc"] == '{"g": 1}'
    assert first[2]["maybe"] is None and first[1]["even"] is True
    assert table.column("id").to_pylist() == list(range(1, 602))


def test_a_run_reads_postgres_and_writes_a_postgres_table(
    trained_store: Store, pg: PgServer, warehouse: str, deployed: Deployment
) -> None:
    run = execute(
        trained_store,
        deployed,
        source=pg_source(),
        transforms=[
            {"name": "adults", "sql": "SELECT * FROM input WHERE age >= 18 OR age IS NULL"}
        ],
        sinks=[pg_sink()],
    )
    assert run.status == "succeeded", run.error
    main = pd.read_parquet(runs.result_path(trained_store.workspace, run.id))
    assert run.summary["sinks"] == [
        {
            "kind": "postgres",
            "connection": "warehouse",
            "table": "scores",
            "mode": "append",
            "rows": len(main),
        }
    ]
    written = pd.DataFrame(
        pg.run(
            "SELECT run_id, customer_id, prediction,"
            " challenger_prediction FROM scores ORDER BY _row"
        ),
        columns=["run_id", "customer_id", "prediction", "challenger"],
    )
    assert set(written["run_id"]) == {run.id}
    assert written["customer_id"].tolist() == main["customer_id"].tolist()  # the key kept
    assert written["prediction"].tolist() == main["prediction"].tolist()
    assert written["challenger"].tolist() == main["challenger_prediction"].tolist()
    again = execute(trained_store, deployments.get_deployment(trained_store, deployed.name))
    assert again.status == "succeeded"
    assert pg.run("SELECT count(DISTINCT run_id), count(*) FROM scores") == [(2, 2 * len(main))]


def test_preview_shows_the_source_and_the_transforms(
    trained_store: Store, warehouse: str, deployed: Deployment
) -> None:
    model = registry.get_model(trained_store, deployed.current.main_model_id)
    shown = pipeline.preview(
        trained_store.workspace,
        {
            "source": pg_source(),
            "transforms": [
                {"name": "monthly", "sql": "SELECT * FROM input WHERE contract = 'two-year'"}
            ],
        },
        model.schema,
        rows=5,
    )
    assert [s.name for s in shown.stages] == ["source", "monthly"]
    assert [s.error for s in shown.stages] == [None, None]
    assert shown.stages[0].frame["customer_id"].tolist()[:2] == ["C100000", "C100001"]
    assert set(shown.stages[1].frame["contract"]) == {"two-year"}
    assert len(shown.stages[1].frame) == 5 and shown.check is not None and shown.check.is_ok


# ---------------------------------------------------------------------------- the sink
@pytest.fixture
def results(trained_store: Store, warehouse: str, deployed: Deployment) -> Run:
    """A succeeded run with main and challenger results, no sinks."""
    run = execute(trained_store, deployed)
    assert run.status == "succeeded"
    return run


def write(store: Store, run: Run, **sink: str) -> dict[str, Any]:
    return sinks.write_postgres(
        store.workspace, pg_sink(**sink), runs.result_path(store.workspace, run.id)
    )


def test_table_modes_create_append_replace(
    trained_store: Store, pg: PgServer, results: Run
) -> None:
    assert write(trained_store, results, mode="create")["rows"] == 600
    with pytest.raises(InvalidInput) as caught:
        write(trained_store, results, mode="create")
    assert caught.value.message == "Table scores already exists."
    write(trained_store, results, mode="append")  # the same run again: its rows replaced
    assert pg.run("SELECT count(*) FROM scores") == [(600,)]
    pg.run("UPDATE scores SET run_id = 'run_other'")
    write(trained_store, results, mode="append")
    assert pg.run("SELECT count(*) FROM scores") == [(1200,)]
    pg.run("CREATE SCHEMA mart")
    write(trained_store, results, table="mart.scores", mode="replace")
    write(trained_store, results, mode="replace")
    assert pg.run("SELECT count(*) FROM scores") == [(600,)]
    assert pg.run("SELECT count(*) FROM mart.scores") == [(600,)]


def test_challenger_in_its_own_table_or_left_out(
    trained_store: Store, pg: PgServer, results: Run
) -> None:
    written = write(trained_store, results, table="own", challenger="table")
    assert (written["challenger_table"], written["challenger_rows"]) == ("own_challenger", 600)
    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
    assert ("challenger_prediction",) not in pg.run(columns, ("own",))
    challenger = pd.read_parquet(
        runs.result_path(trained_store.workspace, results.id, "challenger")
    )
    assert [
        r[0] for r in pg.run("SELECT prediction FROM own_challenger ORDER BY _row")
    ] == challenger["prediction"].tolist()
    write(trained_store, results, table="bare", challenger="none")
    assert ("challenger_prediction",) not in pg.run(columns, ("bare",))
    assert pg.run("SELECT to_regclass('bare_challenger')") == [(None,)]


# ---------------------------------------------------------------------------- faults
def point_at(store: Store, pg: PgServer, **changes: Any) -> None:
    settings = {
        "host": pg.host,
        "port": pg.port,
        "database": pg.database,
        "user": pg.user,
        "password_env": "MODELDECK_SECRET_WAREHOUSE",
        **changes,
    }
    connections.add_connection(
        store,
        "Default",
        "warehouse",
        replace=True,
        **{"actor": "tester", **settings},
    )


def test_unreachable_server_fails_source_and_sink(
    trained_store: Store, pg: PgServer, warehouse: str, deployed: Deployment
) -> None:
    point_at(trained_store, pg, port=free_port())
    run = execute(trained_store, deployed, source=pg_source())
    assert run.status == "failed"
    assert run.error.startswith(
        "The source query (PostgreSQL connection 'warehouse') failed"
        ": PostgreSQL is unreachable for connection 'warehouse' "
        "(deck@127.0.0.1:"
    )
    assert "Connection refused" in run.error and "host, port and sslmode" in run.error
    assert not runs.results_dir(trained_store.workspace, run.id).exists()

    d = deployments.get_deployment(trained_store, deployed.name)
    run = execute(trained_store, d, source=deployed.pipeline["source"], sinks=[pg_sink()])
    assert run.status == "failed"
    assert run.error.startswith(
        "Sink 1 (postgres warehouse:scores) failed: PostgreSQL is "
        "unreachable for connection 'warehouse'"
    )
    assert "The run's own results were kept." in run.error
    assert runs.result_path(trained_store.workspace, run.id).exists()


def test_wrong_password(
    trained_store: Store,
    pg: PgServer,
    warehouse: str,
    deployed: Deployment,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELDECK_SECRET_WAREHOUSE", "not-the-password")
    run = execute(trained_store, deployed, source=pg_source())
    assert run.status == "failed"
    assert "PostgreSQL refused the password of connection 'warehouse' (deck@127.0.0.1:" in run.error
    assert 'password authentication failed for user "deck"' in run.error
    assert "not-the-password" not in run.error


def test_a_source_query_with_a_syntax_error(
    trained_store: Store, warehouse: str, deployed: Deployment
) -> None:
    spec = {"source": pg_source("SELECT * FORM customers")}
    with pytest.raises(PipelineError) as caught:
        with pipeline.open_input(trained_store.workspace, spec):
            pass
    assert caught.value.block == "source"
    assert caught.value.message.startswith(
        "The source query (PostgreSQL connection 'warehouse') failed: PostgreSQL says: "
        'syntax error at or near "FORM"'
    )
    assert "LINE 1:" in caught.value.message and "Fix the SQL" in caught.value.hint
    run = execute(trained_store, deployed, source=spec["source"])
    assert run.status == "failed" and 'syntax error at or near "FORM"' in run.error
    shown = pipeline.preview(trained_store.workspace, spec, None)
    assert 'syntax error at or near "FORM"' in (shown.stages[0].error or "")


def test_a_secret_variable_that_is_not_set(
    trained_store: Store, warehouse: str, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELDECK_SECRET_WAREHOUSE")
    run = execute(trained_store, deployed, source=pg_source())
    assert run.status == "failed"
    assert run.error.startswith(
        "The source query (PostgreSQL connection 'warehouse') cannot "
        "start: Connection 'warehouse' takes its password from the "
        "environment variable $MODELDECK_SECRET_WAREHOUSE, which is "
        "not set."
    )
    assert "Set MODELDECK_SECRET_WAREHOUSE in the environment of the worker" in run.error


def test_a_sink_table_with_incompatible_columns(
    trained_store: Store, pg: PgServer, results: Run
) -> None:
    pg.run("CREATE TABLE narrow (customer_id text, prediction text)")
    pg.run("INSERT INTO narrow VALUES ('C1', 'yes')")
    with pytest.raises(InvalidInput) as caught:
        write(trained_store, results, table="narrow")
    assert caught.value.message.startswith("Table narrow has no column(s) _row, confidence,")
    assert "Nothing was written." in caught.value.hint
    typed = ", ".join(
        f"{c} text"
        for c in pd.read_parquet(runs.result_path(trained_store.workspace, results.id)).columns
        if c != "confidence"
    )
    pg.run(f"CREATE TABLE wrongly_typed ({typed}, confidence boolean)")
    with pytest.raises(InvalidInput) as caught:
        write(trained_store, results, table="wrongly_typed")
    assert caught.value.message.startswith(
        "PostgreSQL could not write table wrongly_typed: invalid input syntax for type boolean"
    )
    assert pg.run("SELECT count(*) FROM narrow") == [(1,)]
    assert pg.run("SELECT count(*) FROM wrongly_typed") == [(0,)]


def test_a_failed_replace_leaves_the_table_as_it_was(
    trained_store: Store, pg: PgServer, results: Run, tmp_path: Path
) -> None:
    pg.run("CREATE TABLE kept (x int)")
    pg.run("INSERT INTO kept VALUES (1), (2)")
    broken = tmp_path / "main.parquet"  # a results file PostgreSQL cannot take: NUL bytes
    pd.DataFrame({"x": ["a\x00b"]}).to_parquet(broken)
    with pytest.raises(InvalidInput, match="PostgreSQL could not write table kept"):
        postgres.write_tables(
            connections.connect_kwargs(
                trained_store.workspace,
                connections.get_connection(trained_store, "Default", "warehouse"),
            ),
            [(broken, "kept", set())],
            "replace",
            "run_x",
            "test",
        )
    assert pg.run("SELECT x FROM kept ORDER BY x") == [(1,), (2,)]
