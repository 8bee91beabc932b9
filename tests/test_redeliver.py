"""Re-delivery: a run whose sink failed keeps its results and is written again, later, without
predicting; every attempt is recorded on the run and in the audit log."""

from __future__ import annotations

import pandas as pd
import pytest

from core import audit, connections, delivery, runs
from core.entities import Deployment, Run
from core.errors import InvalidInput, NotFound
from core.store import Store
from tests import pg_server, test_runs
from tests.cli_helpers import run, run_json
from tests.pg_server import PgServer, free_port, pg_sink

# Fixtures: the session's server, connection 'warehouse' + table customers, churn-staging.
pg, warehouse, deployed = pg_server.pg, pg_server.warehouse, test_runs.deployed


def point_at(store: Store, pg: PgServer, port: int) -> None:
    connections.add_connection(
        store,
        "Default",
        "warehouse",
        host=pg.host,
        port=port,
        database=pg.database,
        user=pg.user,
        password_env="MODELDECK_SECRET_WAREHOUSE",
        replace=True,
        actor="tester",
    )


def failed_at_delivery(store: Store, pg: PgServer, d: Deployment, **sink: str) -> Run:
    """A run of `d` into table scores while the server is 'down' (a closed port)."""
    point_at(store, pg, free_port())
    test_runs.set_pipeline(store, d, sinks=[pg_sink(**sink)])
    failed = test_runs.execute(store, d.name)
    assert failed.status == "failed" and "unreachable" in (failed.error or "")
    return failed


def test_a_run_that_failed_at_delivery_is_delivered_later(
    trained_store: Store, pg: PgServer, warehouse: str, deployed: Deployment
) -> None:
    failed = failed_at_delivery(trained_store, pg, deployed)
    results = runs.result_path(trained_store.workspace, failed.id)
    assert delivery.why_not_deliverable(trained_store, failed) is None
    stamp = results.stat().st_mtime_ns
    point_at(trained_store, pg, pg.port)  # the server is back
    done = delivery.redeliver(trained_store, failed.id, actor="ana")
    assert (done.status, done.error, done.message) == (
        "succeeded",
        None,
        "succeeded (re-delivered)",
    )
    assert done.summary["sinks"] == [
        {
            "kind": "postgres",
            "connection": "warehouse",
            "table": "scores",
            "mode": "append",
            "rows": 600,
        }
    ]
    (attempt,) = done.summary["deliveries"]
    assert attempt["ok"] is True and attempt["by"] == "ana"
    assert attempt["previous_error"] == failed.error
    assert results.stat().st_mtime_ns == stamp  # no predicting: the same results file
    # The steps the worker runs after a succeeded run have run too.
    assert {"importance_main.json", "drift_counts.json"} <= {
        p.name for p in results.parent.iterdir()
    }
    main = pd.read_parquet(results)
    assert [r[0] for r in pg.run("SELECT prediction FROM scores ORDER BY _row")] == main[
        "prediction"
    ].tolist()
    entry = audit.list_entries(trained_store, deployed.name)[0]
    assert (entry.action, entry.actor, entry.after) == (
        "redeliver",
        "ana",
        {"run": failed.id, "delivered": True, "sinks": 1},
    )
    assert entry.before == {"run": failed.id, "status": "failed"}
    # Delivering again replaces the run's rows instead of doubling them (the run_id column).
    delivery.redeliver(trained_store, failed.id, actor="tester")
    assert pg.run("SELECT count(*) FROM scores") == [(600,)]


def test_a_failing_redelivery_is_recorded_and_changes_nothing(
    trained_store: Store, pg: PgServer, warehouse: str, deployed: Deployment
) -> None:
    pg.run("CREATE TABLE scores (customer_id text, prediction text)")  # incompatible
    point_at(trained_store, pg, pg.port)
    test_runs.set_pipeline(trained_store, deployed, sinks=[pg_sink()])
    failed = test_runs.execute(trained_store, deployed.name)
    assert failed.status == "failed"
    assert failed.error.startswith(
        "Sink 1 (postgres warehouse:scores) failed: Table scores has no column(s) _row, confidence,"
    )
    with pytest.raises(InvalidInput, match="Table scores has no column"):
        delivery.redeliver(trained_store, failed.id, actor="bo")
    again = runs.get_run(trained_store, failed.id)
    assert again.status == "failed" and again.error.startswith("Sink 1 (postgres ")
    assert [a["ok"] for a in again.summary["deliveries"]] == [False]
    assert audit.list_entries(trained_store, deployed.name)[0].action == "redeliver"
    assert pg.run("SELECT count(*) FROM scores") == [(0,)]
    pg.run("DROP TABLE scores")  # the user fixes the table
    assert delivery.redeliver(trained_store, failed.id, actor="tester").status == "succeeded"
    assert pg.run("SELECT count(*) FROM scores") == [(600,)]


def test_runs_that_cannot_be_delivered(
    trained_store: Store, deployed: Deployment, warehouse: str
) -> None:
    with pytest.raises(NotFound, match="No run 'run_nope'"):
        delivery.redeliver(trained_store, "run_nope", actor="tester")
    plain = test_runs.execute(trained_store, deployed.name)  # no sinks
    with pytest.raises(InvalidInput) as caught:
        delivery.redeliver(trained_store, plain.id, actor="tester")
    assert caught.value.message == f"Run {plain.id}'s pipeline has no sinks."
    test_runs.set_pipeline(
        trained_store,
        deployed,
        sinks=[pg_sink()],
        source={"kind": "file", "path": "missing.parquet"},
    )
    broken = test_runs.execute(trained_store, deployed.name)
    assert broken.status == "failed"
    with pytest.raises(InvalidInput) as caught:
        delivery.redeliver(trained_store, broken.id, actor="tester")
    assert caught.value.message == (
        f"Run {broken.id} has no results to deliver (it failed "
        "before writing them, or its files were purged)."
    )
    assert "Queue a new run" in caught.value.hint
    queued = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    assert delivery.why_not_deliverable(trained_store, queued) == (
        f"Run {queued.id} is queued; only a finished run can be delivered."
    )


def test_cli_redeliver(
    trained_store: Store,
    pg: PgServer,
    warehouse: str,
    deployed: Deployment,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failed = failed_at_delivery(trained_store, pg, deployed, mode="replace")
    code, _, err = run(capsys, "redeliver", failed.id)
    assert (
        code == 2
        and "error: Sink 1 (postgres warehouse:scores) failed: PostgreSQL is unreachable" in err
        and "hint: Check that the server is running" in err
    )
    point_at(trained_store, pg, pg.port)
    shown = run_json(capsys, "redeliver", failed.id)
    assert (shown["run"], shown["status"], shown["sinks"][0]["rows"]) == (
        failed.id,
        "succeeded",
        600,
    )
