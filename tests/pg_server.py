"""A throwaway PostgreSQL 15 server on 127.0.0.1 for tests (started once per session).

The server refuses to run as root, so as root initdb/pg_ctl run as the `postgres` user in a
temp folder it owns. Password authentication (scram) over TCP, so a wrong password fails the
way it does in production. The binaries are installed with apt when missing (CI does it in
`make postgres` first).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest

from core import connections
from core.store import Store

BIN = Path(os.environ.get("MODELDECK_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER, PASSWORD, DATABASE = "deck", "s3cret-pw", "warehouse"


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    def connect(self, **kwargs: object) -> psycopg.Connection:
        """A psycopg connection as the test user (autocommit), for setting up and checking."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
            autocommit=True,
            **kwargs,
        )

    def run(self, sql: str, params: tuple | None = None) -> list[tuple]:
        with self.connect() as con:
            cur = con.execute(sql, params)
            return cur.fetchall() if cur.description else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _install() -> None:
    if (BIN / "initdb").exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "postgresql"], check=True, env=env, capture_output=True
    )


_started: list[PgServer] = []


@pytest.fixture(scope="session")
def pg() -> PgServer:
    """A running server with user `deck` (password auth) owning database `warehouse`.

    Imported by several test modules: one server per test process, stopped at exit.
    """
    if not _started:
        _started.append(_start())
    return _started[0]


def _start() -> PgServer:
    _install()
    root = Path(tempfile.mkdtemp(prefix="modeldeck-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pwfile = root / "pw"
    pwfile.write_text("postgres-pw\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres(
            [
                str(BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = (
        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        " -c synchronous_commit=off"
    )

    def stop() -> None:
        subprocess.run(
            _as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    started = subprocess.run(
        _as_postgres(
            [
                str(BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if started.returncode:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log}")
    with psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="postgres",
        password="postgres-pw",
        dbname="postgres",
        autocommit=True,
    ) as con:
        con.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        con.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")
    return PgServer("127.0.0.1", port, USER, PASSWORD, DATABASE)


def free_port() -> int:
    """A port nothing listens on (for 'server unreachable' tests)."""
    return _free_port()


# ---------------------------------------------------------------------------- test data
def seed(pg: PgServer, table: str, frame: pd.DataFrame) -> None:
    """(Re)create `table` in the test database with the frame's rows (plain psycopg COPY)."""
    types = {"float64": "double precision", "int64": "bigint"}
    columns = ", ".join(f"{c} {types.get(str(t), 'text')}" for c, t in frame.dtypes.items())
    with pg.connect() as con, con.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} ({columns})")
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            for row in frame.astype(object).where(frame.notna(), None).itertuples(index=False):
                copy.write_row(row)


def _clean(pg: PgServer) -> None:
    """Drop every table and schema the tests made."""
    with pg.connect() as con:
        for (name,) in con.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall():
            con.execute(f'DROP TABLE "{name}" CASCADE')
        for (name,) in con.execute(
            "SELECT nspname FROM pg_namespace WHERE nspowner ="
            " current_user::regrole AND nspname <> 'public'"
        ).fetchall():
            con.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
def warehouse(
    trained_store: Store, pg: PgServer, churn_small: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Connection 'warehouse' of the Default project (password from
    $MODELDECK_SECRET_WAREHOUSE) and the churn rows in table `customers`; the database is
    emptied afterwards."""
    monkeypatch.setenv("MODELDECK_SECRET_WAREHOUSE", pg.password)
    connections.add_connection(
        trained_store,
        "Default",
        "warehouse",
        host=pg.host,
        port=pg.port,
        database=pg.database,
        user=pg.user,
        password_env="MODELDECK_SECRET_WAREHOUSE",
        actor="tester",
    )
    seed(pg, "customers", churn_small)
    yield "warehouse"
    _clean(pg)


def pg_source(sql: str = "SELECT * FROM customers ORDER BY customer_id") -> dict[str, Any]:
    return {"kind": "postgres", "connection": "warehouse", "sql": sql}


def pg_sink(table: str = "scores", **settings: str) -> dict[str, Any]:
    return {"kind": "postgres", "connection": "warehouse", "table": table, **settings}
