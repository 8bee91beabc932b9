"""The connections panel, the postgres source and sink fields of the Pipeline tab, and the
run page's re-delivery, rendered by AppTest against the real test server."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from core import connections, deployments, runs
from core.entities import Deployment
from core.store import Store
from tests import pg_server, test_runs
from tests.pages.conftest import log_in
from tests.pg_server import PgServer, free_port, pg_sink

# Fixtures: the session's server, connection 'warehouse' + table customers, churn-staging.
pg, warehouse, deployed = pg_server.pg, pg_server.warehouse, test_runs.deployed


def panel(name: str) -> None:
    from core import deployments, ui
    from core.ui import connections as ui_connections

    store = ui.get_store()
    ui_connections.connections_panel(store, deployments.get_deployment(store, name))


def rendered_text(at: AppTest) -> str:
    parts = [
        str(e.value)
        for kind in ("markdown", "caption", "success", "error", "info")
        for e in getattr(at, kind)
    ]
    parts += [at.dataframe[i].value.to_string() for i in range(len(at.dataframe))]
    return "\n".join(parts)


def test_add_test_and_list_connections_without_showing_passwords(
    trained_store: Store, pg: PgServer, deployed: Deployment
) -> None:
    at = log_in(AppTest.from_function(panel, args=(deployed.name,), default_timeout=60)).run()
    assert (
        not at.exception
        and "No connections in this project yet: add one below." in rendered_text(at)
    )
    fields = {t.label: t for t in at.text_input}
    for label, value in (
        ("Name", "warehouse"),
        ("Host", pg.host),
        ("Database", pg.database),
        ("User", pg.user),
        ("Password", pg.password),
    ):
        fields[label].set_value(value)
    at.number_input[0].set_value(pg.port)
    at.radio[0].set_value("encrypted")
    next(b for b in at.button if b.label == "Save connection").click().run()
    assert not at.exception and not at.error
    assert "Saved connection 'warehouse' (password: stored encrypted)." in at.success[0].value
    at.run()
    table = at.dataframe[0].value
    assert table.to_dict("records") == [
        {
            "name": "warehouse",
            "address": f"{pg.user}@{pg.host}:{pg.port}/{pg.database}",
            "sslmode": "prefer",
            "password": "password: stored encrypted",
        }
    ]
    assert pg.password not in rendered_text(at)
    next(b for b in at.button if b.label == "Test connection").click().run()
    assert at.success[0].value.startswith("Connected to PostgreSQL 15.")

    connections.add_connection(
        trained_store,
        deployed.project_id,
        "warehouse",
        replace=True,
        host=pg.host,
        port=free_port(),
        database=pg.database,
        user=pg.user,
        actor="tester",
    )
    at.run()
    next(b for b in at.button if b.label == "Test connection").click().run()
    assert "PostgreSQL is unreachable for connection 'warehouse'" in at.error[0].value


def test_the_pipeline_tab_saves_a_postgres_source_and_sink(
    trained_store: Store, warehouse: str, deployed: Deployment, open_page: Callable[..., AppTest]
) -> None:
    at = open_page("pages/deployment.py", name=deployed.name, section="pipeline")
    assert not at.exception
    at.radio(key=f"src_kind_{deployed.id}").set_value("postgres").run()
    at.text_area(key=f"src_pg_sql_{deployed.id}").set_value("SELECT * FROM customers")
    at.checkbox(key=f"sink_pg_{deployed.id}").check().run()
    assert at.selectbox(key=f"src_pg_conn_{deployed.id}").value == "warehouse"
    at.text_input(key=f"sink_pg_table_{deployed.id}").set_value("public.scores")
    at.selectbox(key=f"sink_pg_ch_{deployed.id}").set_value("table")
    at.button(key=f"preview_{deployed.id}").click().run()
    assert not at.exception
    assert any("C100000" in at.dataframe[i].value.to_string() for i in range(len(at.dataframe)))
    at.button(key=f"save_{deployed.id}").click().run()
    assert not at.exception
    saved = deployments.get_deployment(trained_store, deployed.name).pipeline
    assert saved["source"] == {
        "kind": "postgres",
        "connection": "warehouse",
        "sql": "SELECT * FROM customers",
        "project": "prj_default",
    }
    assert saved["sinks"] == [
        {
            "kind": "postgres",
            "connection": "warehouse",
            "table": "public.scores",
            "mode": "append",
            "challenger": "table",
            "project": "prj_default",
        }
    ]


def test_a_run_whose_sink_failed_is_delivered_from_its_page(
    trained_store: Store,
    pg: PgServer,
    warehouse: str,
    deployed: Deployment,
    open_page: Callable[..., AppTest],
) -> None:
    pg.run("CREATE TABLE scores (x int)")  # incompatible columns
    test_runs.set_pipeline(trained_store, deployed, sinks=[pg_sink()])
    failed = test_runs.execute(trained_store, deployed.name)
    assert failed.status == "failed"
    at = open_page("pages/results.py", run=failed.id)
    assert not at.exception
    assert "a sink failed" in rendered_text(at)
    deliver = next(b for b in at.button if b.label == "Deliver again")
    deliver.click().run()
    assert "Table scores has no column(s)" in at.error[-1].value  # still broken: said so
    pg.run("DROP TABLE scores")
    next(b for b in at.button if b.label == "Deliver again").click().run()
    assert not at.exception
    assert runs.get_run(trained_store, failed.id).status == "succeeded"
    assert pg.run("SELECT count(*) FROM scores") == [(600,)]
    assert "Deliver to the sinks again" in [b.label for b in at.button]
