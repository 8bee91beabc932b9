"""Project connections: settings, secrets kept out of the store, test, remove, and the CLI."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket
import stat
import threading
from pathlib import Path

import pytest

from core import audit, connections, deployments, pipeline, projects, registry, runs
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, PipelineError, Step
from core.store import Store
from tests import pg_server
from tests.cli_helpers import run, run_json
from tests.files import add_admins
from tests.pg_server import PgServer, free_port

pg = pg_server.pg  # the session's PostgreSQL server (a fixture)
SECRET = "correct horse battery staple"
ENV_PW = "MODELDECK_SECRET_DWH_PW"


def add(store: Store, name: str = "warehouse", **changes: object) -> connections.PgConnection:
    settings: dict[str, object] = {
        "host": "db.internal",
        "port": 5432,
        "database": "dwh",
        "user": "deck",
        **changes,
    }
    return connections.add_connection(store, "Default", name, **{"actor": "tester", **settings})  # type: ignore[arg-type]


def store_bytes(store: Store) -> bytes:
    """Every byte of the DuckDB metadata (file and write-ahead log)."""
    home = store.workspace.home
    return b"".join(
        p.read_bytes()
        for p in home.glob("modeldeck.duckdb*")
        if p.is_file() and not p.name.endswith(".key")
    )


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


def test_an_env_password_is_read_when_connecting(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = add(store, password_env="$MODELDECK_SECRET_DWH", sslmode="require")
    assert (conn.password_kind, conn.password_ref) == ("env", "MODELDECK_SECRET_DWH")
    assert conn.password_label == "password: from $MODELDECK_SECRET_DWH"
    monkeypatch.setenv("MODELDECK_SECRET_DWH", SECRET)
    assert connections.connect_kwargs(store.workspace, conn)["password"] == SECRET
    monkeypatch.delenv("MODELDECK_SECRET_DWH")
    with pytest.raises(InvalidInput) as caught:
        connections.password(store.workspace, conn)
    assert caught.value.message == (
        "Connection 'warehouse' takes its password from the "
        "environment variable $MODELDECK_SECRET_DWH, which is not set."
    )
    assert not connections.key_path(store.workspace).exists()  # no key needed, none made


def test_settings_are_checked(store: Store) -> None:
    cases = [
        ({"port": 0}, "0 is not a port number."),
        ({"sslmode": "maybe"}, "Unknown sslmode 'maybe'."),
        ({"host": " "}, "The connection's host is empty."),
        (
            {"password": "x", "password_env": "X"},
            "Give either a password or an environment variable, not both.",
        ),
        ({"password_env": "NOT A VAR"}, "'NOT A VAR' is not an environment variable name."),
    ]
    for changes, message in cases:
        with pytest.raises(InvalidInput) as caught:
            add(store, **changes)
        assert caught.value.message == message
    with pytest.raises(InvalidInput, match="'two words' is not a valid connection name"):
        add(store, "two words")
    with pytest.raises(NotFound, match="No project 'Nope'"):
        connections.add_connection(
            store, "Nope", "x", host="h", database="d", user="u", actor="tester"
        )
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
    d = deployments.deploy(trained_store, model.id, "staging", actor="tester")
    deployments.update_pipeline(
        trained_store,
        d.name,
        {
            **d.pipeline,
            "sinks": [{"kind": "postgres", "connection": "warehouse", "table": "scores"}],
        },
        actor="tester",
    )
    with pytest.raises(Conflict) as caught:
        connections.remove_connection(trained_store, "Default", "warehouse", actor="tester")
    assert caught.value.message == (
        "Connection 'warehouse' is used by deployment 'churn-staging' (sink 1)."
    )
    connections.remove_connection(trained_store, "Default", "spare", actor="tester")
    with pytest.raises(NotFound):
        connections.remove_connection(trained_store, "Default", "spare", actor="tester")
    assert [c.name for c in connections.list_connections(trained_store)] == ["warehouse"]


def test_a_deployment_uses_only_its_own_projects_connections(trained_store: Store) -> None:
    add(trained_store)
    projects.create_project(trained_store, "Other", actor="tester")
    connections.add_connection(
        trained_store,
        "Other",
        "warehouse",
        host="other.internal",
        database="dwh",
        user="deck",
        actor="tester",
    )
    model = registry.list_models(trained_store)[0]
    d = deployments.deploy(trained_store, model.id, "staging", actor="tester")
    sink = {"kind": "postgres", "connection": "warehouse", "table": "scores"}
    saved = deployments.update_pipeline(
        trained_store, d.name, {**d.pipeline, "sinks": [sink]}, actor="tester"
    )
    [bound] = saved.pipeline["sinks"]
    assert bound["project"] == d.project_id  # tied to the deployment's project when saved
    assert connections.for_block(trained_store, bound).host == "db.internal"
    with pytest.raises(Forbidden, match="names project 'Other'") as caught:
        deployments.update_pipeline(
            trained_store,
            d.name,
            {**d.pipeline, "sinks": [{**sink, "project": "Other"}]},
            actor="tester",
        )
    assert "own project's connections" in caught.value.hint
    with pytest.raises(Forbidden, match="names project 'Other'"):
        runs.enqueue_run(
            trained_store,
            d.name,
            source_override={
                "kind": "postgres",
                "connection": "warehouse",
                "sql": "SELECT 1",
                "project": "Other",
            },
            actor="tester",
        )
    assert runs.list_runs(trained_store, d.name) == []  # nothing queued
    queued = runs.enqueue_run(
        trained_store,
        d.name,
        source_override={"kind": "postgres", "connection": "warehouse", "sql": "SELECT 1"},
        actor="tester",
    )
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
    for sql in (
        f"SELECT * FROM read_text('{key}')",
        f"SELECT * FROM read_csv('{key}', header = false)",
    ):
        shown = pipeline.preview(store.workspace, {"source": {"kind": "sql", "sql": sql}}, None)
        assert shown.stages[0].error is not None
        assert "Permission Error" in shown.stages[0].error or "disabled" in shown.stages[0].error
    with pytest.raises(PipelineError, match="among ModelDeck's own files"):
        pipeline.validate_pipeline(
            {
                "source": {"kind": "sql", "sql": "SELECT 1"},
                "sinks": [{"kind": "duckdb_table", "path": key.name, "table": "t"}],
            },
            store.workspace,
        )


def test_for_block_picks_the_project_or_the_only_match(store: Store) -> None:
    add(store)
    assert connections.for_block(store, {"connection": "warehouse"}).host == "db.internal"
    assert (
        connections.for_block(store, {"connection": "warehouse", "project": "prj_default"}).name
        == "warehouse"
    )
    with pytest.raises(NotFound, match="No connection 'other'"):
        connections.for_block(store, {"connection": "other"})


# ---------------------------------------------------------------------------- against a server
def test_test_connection_reports_the_server_or_why_not(
    store: Store, pg: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(store, host=pg.host, port=pg.port, database=pg.database, user=pg.user, password=pg.password)
    result = connections.test_connection(store, "Default", "warehouse", actor="tester")
    assert result["ok"] is True and result["server_version"].startswith("15.")
    add(
        store,
        "wrong",
        host=pg.host,
        port=pg.port,
        database=pg.database,
        user=pg.user,
        password="nope",
    )
    with pytest.raises(InvalidInput) as caught:
        connections.test_connection(store, "Default", "wrong", actor="tester")
    assert caught.value.message.startswith("PostgreSQL refused the password of connection 'wrong'")
    add(store, "down", host=pg.host, port=free_port(), database=pg.database, user=pg.user)
    with pytest.raises(InvalidInput, match="PostgreSQL is unreachable for connection 'down'"):
        connections.test_connection(store, "Default", "down", actor="tester")


# ---------------------------------------------------------------------------- the CLI
def test_cli_add_list_test_remove(
    home: Path, pg: PgServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_admins(Store.open(home))  # the CLI acts as tester
    monkeypatch.setattr("sys.stdin", io.StringIO(pg.password + "\n"))
    added = run_json(
        capsys,
        "connections",
        "add",
        "warehouse",
        "--host",
        pg.host,
        "--port",
        str(pg.port),
        "--database",
        pg.database,
        "--db-user",
        pg.user,
        "--password-stdin",
    )
    assert added["password"] == "stored encrypted" and pg.password not in str(added)
    code, out, _ = run(capsys, "connections", "list")
    assert code == 0 and "password: stored encrypted" in out and pg.password not in out
    assert run_json(capsys, "connections", "test", "warehouse")["ok"] is True
    code, out, _ = run(capsys, "connections", "test", "warehouse")
    assert out.startswith("warehouse: connected to PostgreSQL 15.")
    code, _, err = run(
        capsys,
        "connections",
        "add",
        "warehouse",
        "--host",
        "h",
        "--database",
        "d",
        "--db-user",
        "u",
        "--password-env",
        ENV_PW,
    )
    assert (
        code == 2
        and "error: Project 'Default' already has a connection 'warehouse'." in err
        and "hint: Remove it first" in err
    )
    code, _, err = run(
        capsys,
        "connections",
        "add",
        "envy",
        "--host",
        pg.host,
        "--port",
        str(pg.port),
        "--database",
        pg.database,
        "--db-user",
        pg.user,
        "--password-env",
        ENV_PW,
    )
    assert code == 0
    listed = run_json(capsys, "connections", "list")
    assert [(c["name"], c["password"]) for c in listed] == [
        ("envy", f"from ${ENV_PW}"),
        ("warehouse", "stored encrypted"),
    ]
    code, _, err = run(capsys, "connections", "test", "envy")
    assert code == 2 and f"${ENV_PW}, which is not set" in err and f"hint: Set {ENV_PW}" in err
    assert run_json(capsys, "connections", "remove", "envy") == {"removed": "envy"}
    code, _, err = run(capsys, "connections", "remove", "envy")
    assert code == 2 and "error: No connection 'envy'." in err


# ---------------------------------------------------------------------------- issue 14, item 3
def test_only_modeldeck_secret_variables_may_hold_a_password(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not for postgres")
    for name in ("AWS_SECRET_ACCESS_KEY", "$HOME", "MODELDECK_SECRET"):
        with pytest.raises(InvalidInput) as caught:
            add(store, password_env=name)
        variable = name.lstrip("$")
        assert caught.value.message == (
            f"${variable} cannot hold a connection's password: "
            "only variables named MODELDECK_SECRET_… may."
        )
        assert f"MODELDECK_SECRET_{variable}" in caught.value.hint
    assert connections.list_connections(store) == []
    # A connection stored before the rule is refused when connecting, with the way out.
    add(store, host="127.0.0.1", password_env=ENV_PW)
    store.execute("UPDATE connections SET password_ref = 'AWS_SECRET_ACCESS_KEY'")
    conn = connections.get_connection(store, "Default", "warehouse")
    with pytest.raises(InvalidInput, match="only variables named MODELDECK_SECRET_") as caught:
        connections.connect_kwargs(store.workspace, conn)
    assert "taking its password from MODELDECK_SECRET_AWS_SECRET_ACCESS_KEY" in caught.value.hint
    assert caught.value.step == Step("replace-connection", "warehouse")


def _local_address() -> str:
    """This machine's address on its default route (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))
        except OSError:
            pytest.skip("no non-loopback IPv4 address on this machine")
        address = probe.getsockname()[0]
    if ipaddress.ip_address(address).is_loopback:
        pytest.skip("no non-loopback IPv4 address on this machine")
    return address


class Listener:
    """A TCP server on every address that records what clients send (a fake PostgreSQL)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("0.0.0.0", 0))
        self.port = self.server.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(10)
        try:
            client, _ = self.server.accept()
        except OSError:
            return
        with client:
            client.settimeout(2)
            with contextlib.suppress(OSError):
                while chunk := client.recv(4096):
                    self.received += chunk
                    # libpq's startup message names the user; ask for a cleartext password.
                    if b"user" in self.received and b"p" not in self.received[-1:]:
                        client.sendall(b"R\x00\x00\x00\x08\x00\x00\x00\x03")

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=15)


def test_no_cleartext_password_to_a_host_outside_the_loopback(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = _local_address()
    monkeypatch.setenv(ENV_PW, SECRET)
    listener = Listener()
    try:
        for sslmode in ("disable", "allow", "prefer"):
            add(
                store,
                host=address,
                port=listener.port,
                sslmode=sslmode,
                password_env=ENV_PW,
                replace=True,
            )
            with pytest.raises(InvalidInput) as caught:
                connections.test_connection(store, "Default", "warehouse", actor="tester")
            assert caught.value.message == (
                f"Connection 'warehouse' would send its password "
                f"to {address} without TLS (sslmode {sslmode})."
            )
            assert caught.value.step == Step("allow-cleartext", "warehouse")
        # Explicitly allowed: the password does travel (which is what the check prevented).
        add(
            store,
            host=address,
            port=listener.port,
            sslmode="disable",
            password_env=ENV_PW,
            replace=True,
            allow_cleartext=True,
        )
        with pytest.raises(InvalidInput):
            connections.test_connection(store, "Default", "warehouse", actor="tester")
    finally:
        listener.close()
    assert SECRET.encode() in listener.received  # only the explicitly allowed attempt
    assert listener.received.count(b"user\x00deck") == 1


def test_loopback_hosts_and_tls_modes_may_carry_a_password() -> None:
    for host in (
        "localhost",
        "127.0.0.1",
        "127.8.0.1",
        "::1",
        "/var/run/postgresql",
        "localhost,127.0.0.1",
    ):
        assert connections.is_loopback(host), host
    for host in ("db.internal", "10.0.0.5", "localhost,db.internal", "localhost.evil.com"):
        assert not connections.is_loopback(host), host


def test_adding_testing_and_removing_a_connection_is_audited(store: Store, pg: PgServer) -> None:
    add(
        store,
        host=pg.host,
        port=pg.port,
        database=pg.database,
        user=pg.user,
        password=pg.password,
        actor="ana",
    )
    add(
        store,
        host=pg.host,
        port=pg.port,
        database=pg.database,
        user=pg.user,
        password="nope",
        replace=True,
        actor="bob",
    )
    with pytest.raises(InvalidInput):  # by project id, as the UI names it: the same entry
        connections.test_connection(store, "prj_default", "warehouse", actor="bob")
    connections.remove_connection(store, "Default", "warehouse", actor="ana")
    entries = [e for e in audit.list_entries(store) if e.action.startswith("connection-")]
    assert [(e.action, e.actor, e.deployment_name) for e in reversed(entries)] == [
        ("connection-add", "ana", "connection Default/warehouse"),
        ("connection-replace", "bob", "connection Default/warehouse"),
        ("connection-test", "bob", "connection Default/warehouse"),
        ("connection-remove", "ana", "connection Default/warehouse"),
    ]
    tested = entries[1]
    assert tested.after == {"host": pg.host, "port": pg.port, "sslmode": "prefer", "ok": False}
    assert tested.reason.startswith("PostgreSQL refused the password")
    assert entries[3].after is not None and entries[3].after["password"] == "encrypted"
    assert pg.password not in str([e.after for e in entries]) and "nope" not in str(
        [e.after for e in entries]
    )
