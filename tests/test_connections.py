"""Project connections: settings, secrets kept out of the store, test, remove, and the CLI."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from core import connections, deployments, pipeline, registry, runs
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, PipelineError
from core.store import Store
from tests import pg_server
from tests.cli_helpers import run, run_json
from tests.pg_server import PgServer, free_port

pg = pg_server.pg  # the session's PostgreSQL server (a fixture)
SECRET = "correct horse battery staple"


def add(store: Store, name: str = "warehouse", **changes: object) -> connections.PgConnection:
    settings: dict[str, object] = {"host": "db.internal", "port": 5432, "database": "dwh",
                                   "user": "deck", **changes}
    return connections.add_connection(store, "Default", name, **settings)  # type: ignore[arg-type]


def store_bytes(store: Store) -> bytes:
    """Every byte of the DuckDB metadata (file and write-ahead log)."""
    home = store.workspace.home
    return b"".join(p.read_bytes() for p in home.glob("modeldeck.duckdb*") if p.is_file()
                    and not p.name.endswith(".key"))


def test_an_encrypted_password_never_reaches_the_store(store: Store) -> None:
    conn = add(store, password=SECRET)
    assert conn.password_kind == "encrypted" and SECRET not in conn.password_ref
    assert SECRET.encode() not in store_bytes(store)
    key = connections.key_path(store.workspace)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().strip() not in store_bytes(store)
    assert connections.password(store.workspace, conn) == SECRET
    assert conn.password_label == "password: stored encrypted"
    assert SECRET not in str(conn.to_dict()) and conn.to_dict()["password"] == "stored encrypted"


def test_an_env_password_is_read_when_connecting(store: Store,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    conn = add(store, password_env="$DWH_PASSWORD")
    assert (conn.password_kind, conn.password_ref) == ("env", "DWH_PASSWORD")
    assert conn.password_label == "password: from $DWH_PASSWORD"
    monkeypatch.setenv("DWH_PASSWORD", SECRET)
    assert connections.connect_kwargs(store.workspace, conn)["password"] == SECRET
    monkeypatch.delenv("DWH_PASSWORD")
    with pytest.raises(InvalidInput) as caught:
        connections.password(store.workspace, conn)
    assert caught.value.message == ("Connection 'warehouse' takes its password from the "
                                    "environment variable $DWH_PASSWORD, which is not set.")
    assert not connections.key_path(store.workspace).exists()  # no key needed, none made


def test_settings_are_checked(store: Store) -> None:
    cases = [({"port": 0}, "0 is not a port number."),
             ({"sslmode": "maybe"}, "Unknown sslmode 'maybe'."),
             ({"host": " "}, "The connection's host is empty."),
             ({"password": "x", "password_env": "X"},
              "Give either a password or an environment variable, not both."),
             ({"password_env": "NOT A VAR"}, "'NOT A VAR' is not an environment variable name.")]
    for changes, message in cases:
        with pytest.raises(InvalidInput) as caught:
            add(store, **changes)
        assert caught.value.message == message
    with pytest.raises(InvalidInput, match="'two words' is not a valid connection name"):
        add(store, "two words")
    with pytest.raises(NotFound, match="No project 'Nope'"):
        connections.add_connection(store, "Nope", "x", host="h", database="d", user="u")
    assert connections.list_connections(store) == []


def test_names_are_unique_per_project_and_replace_keeps_the_id(store: Store) -> None:
    first = add(store, password=SECRET)
    with pytest.raises(Conflict, match="Project 'Default' already has a connection 'warehouse'"):
        add(store)
    second = add(store, replace=True, host="db2.internal")
    assert second.id == first.id and second.host == "db2.internal"
    assert second.password_kind == "none"
    assert [c.name for c in connections.list_connections(store, "Default")] == ["warehouse"]


def test_remove_refuses_a_connection_a_pipeline_uses(trained_store: Store) -> None:
    add(trained_store)
    add(trained_store, "spare")
    model = registry.list_models(trained_store)[0]
    d = deployments.deploy(trained_store, model.id, "staging")
    deployments.update_pipeline(trained_store, d.name, {**d.pipeline, "sinks": [
        {"kind": "postgres", "connection": "warehouse", "table": "scores"}]})
    with pytest.raises(Conflict) as caught:
        connections.remove_connection(trained_store, "Default", "warehouse")
    assert caught.value.message == ("Connection 'warehouse' is used by deployment "
                                    "'churn-staging' (sink 1).")
    connections.remove_connection(trained_store, "Default", "spare")
    with pytest.raises(NotFound):
        connections.remove_connection(trained_store, "Default", "spare")
    assert [c.name for c in connections.list_connections(trained_store)] == ["warehouse"]


def test_a_deployment_uses_only_its_own_projects_connections(trained_store: Store) -> None:
    add(trained_store)
    trained_store.write(lambda tx: registry.ensure_project(tx, "Other"))
    connections.add_connection(trained_store, "Other", "warehouse", host="other.internal",
                               database="dwh", user="deck")
    model = registry.list_models(trained_store)[0]
    d = deployments.deploy(trained_store, model.id, "staging")
    sink = {"kind": "postgres", "connection": "warehouse", "table": "scores"}
    saved = deployments.update_pipeline(trained_store, d.name, {**d.pipeline, "sinks": [sink]})
    [bound] = saved.pipeline["sinks"]
    assert bound["project"] == d.project_id  # tied to the deployment's project when saved
    assert connections.for_block(trained_store, bound).host == "db.internal"
    with pytest.raises(Forbidden, match="names project 'Other'") as caught:
        deployments.update_pipeline(trained_store, d.name, {**d.pipeline, "sinks": [
            {**sink, "project": "Other"}]})
    assert "own project's connections" in caught.value.hint
    with pytest.raises(Forbidden, match="names project 'Other'"):
        runs.enqueue_run(trained_store, d.name, source_override={
            "kind": "postgres", "connection": "warehouse", "sql": "SELECT 1",
            "project": "Other"})
    assert runs.list_runs(trained_store, d.name) == []  # nothing queued
    queued = runs.enqueue_run(trained_store, d.name, source_override={
        "kind": "postgres", "connection": "warehouse", "sql": "SELECT 1"})
    assert queued.source_override["project"] == d.project_id


def test_a_lost_or_replaced_key_is_named(store: Store) -> None:
    conn = add(store, password=SECRET)
    key = connections.key_path(store.workspace)
    key.unlink()
    with pytest.raises(InvalidInput, match=r"The workspace key .* is missing"):
        connections.password(store.workspace, conn)
    connections.workspace_key(store.workspace, create=True)  # a different key
    with pytest.raises(InvalidInput, match="cannot be decrypted with the workspace key"):
        connections.password(store.workspace, conn)


def test_a_sql_source_cannot_read_the_workspace_key(store: Store) -> None:
    add(store, password=SECRET)
    key = connections.key_path(store.workspace)
    for sql in (f"SELECT * FROM read_text('{key}')",
                f"SELECT * FROM read_csv('{key}', header = false)"):
        shown = pipeline.preview(store.workspace, {"source": {"kind": "sql", "sql": sql}}, None)
        assert shown.stages[0].error is not None
        assert "Permission Error" in shown.stages[0].error or "disabled" in shown.stages[0].error
    with pytest.raises(PipelineError, match="among ModelDeck's own files"):
        pipeline.validate_pipeline({"source": {"kind": "sql", "sql": "SELECT 1"}, "sinks": [
            {"kind": "duckdb_table", "path": key.name, "table": "t"}]}, store.workspace)


def test_for_block_picks_the_project_or_the_only_match(store: Store) -> None:
    add(store)
    assert connections.for_block(store, {"connection": "warehouse"}).host == "db.internal"
    assert connections.for_block(store, {"connection": "warehouse",
                                         "project": "prj_default"}).name == "warehouse"
    with pytest.raises(NotFound, match="No connection 'other'"):
        connections.for_block(store, {"connection": "other"})


# ---------------------------------------------------------------------------- against a server
def test_test_connection_reports_the_server_or_why_not(store: Store, pg: PgServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    add(store, host=pg.host, port=pg.port, database=pg.database, user=pg.user,
        password=pg.password)
    result = connections.test_connection(store, "Default", "warehouse")
    assert result["ok"] is True and result["server_version"].startswith("15.")
    add(store, "wrong", host=pg.host, port=pg.port, database=pg.database, user=pg.user,
        password="nope")
    with pytest.raises(InvalidInput) as caught:
        connections.test_connection(store, "Default", "wrong")
    assert caught.value.message.startswith("PostgreSQL refused the password of connection "
                                           "'wrong'")
    add(store, "down", host=pg.host, port=free_port(), database=pg.database, user=pg.user)
    with pytest.raises(InvalidInput, match="PostgreSQL is unreachable for connection 'down'"):
        connections.test_connection(store, "Default", "down")


# ---------------------------------------------------------------------------- the CLI
def test_cli_add_list_test_remove(home: Path, pg: PgServer, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(pg.password + "\n"))
    added = run_json(capsys, "connections", "add", "warehouse", "--host", pg.host, "--port",
                     str(pg.port), "--database", pg.database, "--user", pg.user,
                     "--password-stdin")
    assert added["password"] == "stored encrypted" and pg.password not in str(added)
    code, out, _ = run(capsys, "connections", "list")
    assert code == 0 and "password: stored encrypted" in out and pg.password not in out
    assert run_json(capsys, "connections", "test", "warehouse")["ok"] is True
    code, out, _ = run(capsys, "connections", "test", "warehouse")
    assert out.startswith("warehouse: connected to PostgreSQL 15.")
    code, _, err = run(capsys, "connections", "add", "warehouse", "--host", "h",
                       "--database", "d", "--user", "u", "--password-env", "DWH_PW")
    assert code == 2 and "error: Project 'Default' already has a connection 'warehouse'." \
        in err and "hint: Remove it first" in err
    code, _, err = run(capsys, "connections", "add", "envy", "--host", pg.host, "--port",
                       str(pg.port), "--database", pg.database, "--user", pg.user,
                       "--password-env", "DWH_PW")
    assert code == 0
    listed = run_json(capsys, "connections", "list")
    assert [(c["name"], c["password"]) for c in listed] == [("envy", "from $DWH_PW"),
                                                            ("warehouse", "stored encrypted")]
    code, _, err = run(capsys, "connections", "test", "envy")
    assert code == 2 and "$DWH_PW, which is not set" in err and "hint: Set DWH_PW" in err
    assert run_json(capsys, "connections", "remove", "envy") == {"removed": "envy"}
    code, _, err = run(capsys, "connections", "remove", "envy")
    assert code == 2 and "error: No connection 'envy'." in err
