"""PostgreSQL connections of a project, and the secrets they need.

A connection is host, port, database, user and sslmode, stored per project (migration 0006),
plus where its password comes from. The password never enters the DuckDB metadata in plain
text: it is either the name of an environment variable read when connecting
(`{"env": "VAR"}`), or a Fernet token encrypted with the workspace key, a file beside the
store created 0600 on first use. The key file's name starts with the store's, so pipeline
sources cannot read it and sinks cannot write it (core/workspace.py refuses every
`modeldeck.duckdb*` file and any allowed root above the workspace).
Descriptions (`describe`, `to_dict`) say where the password comes from, never its value.

Only variables named `MODELDECK_SECRET_…` may hold a password, so a connection cannot be
pointed at another secret of the process's environment (a cloud token, the API's key) and
send it to a host of its choosing. A password goes to a host outside the loopback only over
TLS (sslmode require, verify-ca, verify-full) unless the connection says `allow_cleartext`.
Adding, replacing, testing and removing a connection are written to the audit log.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from cryptography.fernet import Fernet, InvalidToken

from core import access, audit
from core.engine import postgres
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, PipelineError, Step
from core.store import Store, Tx, new_id, utcnow
from core.workspace import DB_NAME, Workspace

KEY_SUFFIX = "key"
KEY_FILE = f"{DB_NAME}.{KEY_SUFFIX}"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_SSLMODES = ("require", "verify-ca", "verify-full")  # never fall back to cleartext
SECRET_PREFIX = "MODELDECK_SECRET_"
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
AUDIT_NAME = "connection {project}/{name}"  # the audit log's name column for connections


@dataclass(frozen=True)
class PgConnection:
    """A stored connection; `password_ref` is a variable name or a token, never a password."""

    id: str
    project_id: str
    name: str
    host: str
    port: int
    database: str
    user: str
    sslmode: str
    password_kind: str  # env | encrypted | none
    password_ref: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    allow_cleartext: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PgConnection:
        fields = {k: v for k, v in row.items() if k not in ("user_name", "allow_cleartext")}
        return cls(**fields, user=row["user_name"], allow_cleartext=bool(row["allow_cleartext"]))

    @property
    def password_label(self) -> str:
        """Where the password comes from, for people: never the value."""
        if self.password_kind == "env":
            return f"password: from ${self.password_ref}"
        if self.password_kind == "encrypted":
            return "password: stored encrypted"
        return "password: none"

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description without the secret (the env var's name is not secret)."""
        return {
            "name": self.name,
            "project_id": self.project_id,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "sslmode": self.sslmode,
            "password": self.password_label.removeprefix("password: "),
            "password_env": self.password_ref if self.password_kind == "env" else None,
            "allow_cleartext": self.allow_cleartext,
        }


# ---------------------------------------------------------------------------- the key
def key_path(workspace: Workspace) -> Path:
    return workspace.home / KEY_FILE


def workspace_key(workspace: Workspace, create: bool = False) -> bytes:
    """The workspace's Fernet key; created (0600, atomically, once across processes) when
    `create`, else InvalidInput when missing."""
    key = workspace.secret_file(KEY_SUFFIX, Fernet.generate_key, create)
    if key is None:
        raise InvalidInput(
            f"The workspace key {key_path(workspace)} is missing, so stored passwords cannot be"
            " decrypted.",
            "Restore the key file from a backup, or add the connection again with its password.",
        )
    return key


def encrypt(workspace: Workspace, password: str) -> str:
    return Fernet(workspace_key(workspace, create=True)).encrypt(password.encode()).decode()


def password(workspace: Workspace, conn: PgConnection) -> str | None:
    """The connection's password, read now; raises InvalidInput naming what is missing."""
    if conn.password_kind == "env":
        if not conn.password_ref.startswith(SECRET_PREFIX):  # stored before the rule
            raise InvalidInput(
                f"Connection '{conn.name}' takes its password from "
                f"${conn.password_ref}; only variables named {SECRET_PREFIX}… "
                "may hold a password.",
                f"Set {SECRET_PREFIX}{conn.password_ref} instead and replace the "
                f"connection, taking its password from {SECRET_PREFIX}{conn.password_ref}.",
                step=Step("replace-connection", conn.name),
            )
        value = os.environ.get(conn.password_ref)
        if value is None:
            raise InvalidInput(
                f"Connection '{conn.name}' takes its password from the "
                f"environment variable ${conn.password_ref}, which is not set.",
                f"Set {conn.password_ref} in the environment of the worker and "
                "the UI (e.g. in the service's unit file), then retry.",
            )
        return value
    if conn.password_kind == "encrypted":
        try:
            return Fernet(workspace_key(workspace)).decrypt(conn.password_ref.encode()).decode()
        except InvalidToken as exc:
            raise InvalidInput(
                f"The stored password of connection '{conn.name}' cannot be "
                f"decrypted with the workspace key {key_path(workspace)}.",
                "The key file was replaced: restore it, or replace the connection "
                "with its password.",
                step=Step("replace-connection", conn.name),
            ) from exc
    return None


def connect_kwargs(workspace: Workspace, conn: PgConnection) -> dict[str, Any]:
    """psycopg.connect() arguments for the connection (the password read now)."""
    kwargs: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port,
        "dbname": conn.database,
        "user": conn.user,
        "sslmode": conn.sslmode,
    }
    secret = password(workspace, conn)
    if secret is not None:
        refuse_cleartext(conn)
        kwargs["password"] = secret
    return kwargs


def is_loopback(host: str) -> bool:
    """Whether every host of a libpq host list is this machine (localhost, 127.x, ::1, or a
    Unix socket folder); any other name may cross a network."""
    for part in host.split(","):
        part = part.strip()
        if part.startswith("/") or part == "localhost":
            continue
        try:
            if ipaddress.ip_address(part).is_loopback:
                continue
        except ValueError:
            pass
        return False
    return True


def refuse_cleartext(conn: PgConnection) -> None:
    """InvalidInput when the password could travel in cleartext to a host outside the
    loopback: sslmode disable/allow/prefer can all end without TLS."""
    if conn.sslmode in TLS_SSLMODES or conn.allow_cleartext or is_loopback(conn.host):
        return
    raise InvalidInput(
        f"Connection '{conn.name}' would send its password to {conn.host} "
        f"without TLS (sslmode {conn.sslmode}).",
        "Use sslmode require (or verify-full) if the server speaks TLS; on a "
        "network you trust, replace the connection allowing a cleartext password.",
        step=Step("allow-cleartext", conn.name),
    )


# ---------------------------------------------------------------------------- the rows
def _project_id(tx: Tx, project: str) -> str:
    row = tx.execute("SELECT id FROM projects WHERE id = ? OR name = ?", [project, project]).first()
    if row is None:
        raise NotFound(
            "project",
            project,
            "Projects are created by training; the default project is called Default.",
        )
    return str(row["id"])


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not postgres.CONNECTION_NAME.match(name.strip()):
        raise InvalidInput(
            f"{name!r} is not a valid connection name.",
            "Use letters, digits, '_' and '-', starting with a letter, e.g. warehouse.",
        )
    return name.strip()


def _settings(host: str, port: int, database: str, user: str, sslmode: str) -> None:
    for label, value in (("host", host), ("database", database), ("user", user)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"The connection's {label} is empty.", f"Give the {label}.")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidInput(f"{port!r} is not a port number.", "PostgreSQL's default is 5432.")
    if sslmode not in SSLMODES:
        raise InvalidInput(
            f"Unknown sslmode {sslmode!r}.", f"Choose one of: {', '.join(SSLMODES)}."
        )


def _secret(
    workspace: Workspace, password: str | None, password_env: str | None
) -> tuple[str, str]:
    if password and password_env:
        raise InvalidInput(
            "Give either a password or an environment variable, not both.",
            "An environment variable keeps the password out of the workspace.",
        )
    if password_env:
        variable = password_env.strip().lstrip("$")
        if not _ENV_VAR.match(variable):
            raise InvalidInput(
                f"{password_env!r} is not an environment variable name.",
                f"Use letters, digits and '_', e.g. {SECRET_PREFIX}WAREHOUSE.",
            )
        if not variable.startswith(SECRET_PREFIX):
            raise InvalidInput(
                f"${variable} cannot hold a connection's password: only "
                f"variables named {SECRET_PREFIX}… may.",
                f"Put the password in e.g. {SECRET_PREFIX}{variable} and name "
                "that; other variables of the environment stay private.",
            )
        return "env", variable
    if password:
        return "encrypted", encrypt(workspace, password)
    return "none", ""


def add_connection(
    store: Store,
    project: str,
    name: str,
    *,
    host: str,
    port: int = 5432,
    database: str,
    user: str,
    sslmode: str = "prefer",
    password: str | None = None,
    password_env: str | None = None,
    replace: bool = False,
    allow_cleartext: bool = False,
    actor: str,
) -> PgConnection:
    """Store a connection of `project` and its audit entry (one transaction). Raises
    InvalidInput for a bad setting, Conflict when the name is taken (unless `replace`),
    NotFound for an unknown project."""
    name = check_name(name)
    _settings(host, port, database, user, sslmode)
    kind, ref = _secret(store.workspace, password, password_env)

    def write(tx: Tx) -> None:
        project_id = _project_id(tx, project)
        access.require(tx, actor, project_id, "add-connection")
        old = tx.execute(
            "SELECT id, created_at FROM connections WHERE project_id = ? AND name = ?",
            [project_id, name],
        ).first()
        if old and not replace:
            raise Conflict(
                f"Project '{project}' already has a connection '{name}'.",
                "Remove it first, or replace it.",
                step=Step("replace-connection", name),
            )
        now = utcnow()
        tx.execute("DELETE FROM connections WHERE project_id = ? AND name = ?", [project_id, name])
        tx.execute(
            "INSERT INTO connections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                old["id"] if old else new_id("con"),
                project_id,
                name,
                host.strip(),
                port,
                database.strip(),
                user.strip(),
                sslmode,
                kind,
                ref,
                actor,
                old["created_at"] if old else now,
                now,
                allow_cleartext,
            ],
        )
        after = {
            "host": host.strip(),
            "port": port,
            "database": database.strip(),
            "user": user.strip(),
            "sslmode": sslmode,
            "password": kind,
            "allow_cleartext": allow_cleartext,
        }
        _audit(
            tx, actor, "connection-replace" if old else "connection-add", project, name, after=after
        )

    store.write(write)
    return get_connection(store, project, name)


def get_connection(store: Store, project: str, name: str) -> PgConnection:
    """One connection of a project (by project id or name); raises NotFound."""

    def read(tx: Tx) -> dict[str, Any] | None:
        return tx.execute(
            "SELECT * FROM connections WHERE project_id = ? AND name = ?",
            [_project_id(tx, project), name],
        ).first()

    row = store.read(read)
    if row is None:
        raise NotFound(
            "connection",
            name,
            f"Choose one of project '{project}''s connections, or add it.",
            step=Step("list-connections", project),
        )
    return PgConnection.from_row(row)


def list_connections(
    store: Store, project: str | None = None, *, visible_to: str | None = None
) -> list[PgConnection]:
    """A project's connections by name (every project's for None); with `visible_to`, only
    those of projects that user may read."""

    def read(tx: Tx) -> list[dict[str, Any]]:
        project_id = _project_id(tx, project) if project else None
        visible = access.sql_filter(tx, visible_to)
        return tx.execute(
            "SELECT * FROM connections WHERE (? IS NULL OR project_id = ?)"
            f" AND {access.visible_sql()}"
            " ORDER BY name, project_id",
            [project_id, project_id, visible, visible],
        ).dicts()

    return [PgConnection.from_row(r) for r in store.read(read)]


def _audit(
    tx: Tx,
    actor: str,
    action: str,
    project: str,
    name: str,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> None:
    """An audit entry named by the project's name, however the caller named the project."""
    shown = (
        tx.execute(
            "SELECT name FROM projects WHERE id = ? OR name = ?", [project, project]
        ).scalar()
        or project
    )
    audit.record(
        tx,
        actor=actor,
        action=action,
        deployment_id=None,
        deployment_name=AUDIT_NAME.format(project=shown, name=name),
        after=after,
        reason=reason,
    )


def test_connection(
    store: Store,
    project: str,
    name: str,
    *,
    actor: str,
) -> dict[str, Any]:
    """Connect with a stored connection and ask the server's version; the attempt and its
    outcome are audited. Raises InvalidInput saying why it failed (unreachable, wrong
    password, variable not set, password refused to a host without TLS)."""
    conn = get_connection(store, project, name)
    store.read(lambda tx: access.require(tx, actor, conn.project_id, "test-connection"))
    where = {"host": conn.host, "port": conn.port, "sslmode": conn.sslmode}
    try:
        result = {
            "name": conn.name,
            **postgres.ping(connect_kwargs(store.workspace, conn), f"connection '{conn.name}'"),
        }
    except InvalidInput as exc:
        reason = exc.message
        store.write(
            lambda tx: _audit(
                tx, actor, "connection-test", project, name, {**where, "ok": False}, reason
            )
        )
        raise
    store.write(
        lambda tx: _audit(tx, actor, "connection-test", project, name, {**where, "ok": True})
    )
    return result


def users_of(pipeline: dict[str, Any], name: str) -> list[str]:
    """The blocks of a pipeline that name connection `name` ('source', 'sink 2', ...)."""
    blocks = [("source", pipeline.get("source"))] + [
        (f"sink {i}", s) for i, s in enumerate(pipeline.get("sinks") or [], start=1)
    ]
    return [
        label
        for label, block in blocks
        if isinstance(block, dict)
        and block.get("kind") == "postgres"
        and block.get("connection") == name
    ]


def remove_connection(store: Store, project: str, name: str, *, actor: str) -> None:
    """Delete a connection and audit it (one transaction); Conflict while a deployment's
    pipeline uses it."""

    def write(tx: Tx) -> None:
        project_id = _project_id(tx, project)
        access.require(tx, actor, project_id, "remove-connection")
        for row in tx.execute(
            "SELECT name, pipeline FROM deployments WHERE project_id = ?", [project_id]
        ):
            used = users_of(json.loads(row["pipeline"]), name)
            if used:
                raise Conflict(
                    f"Connection '{name}' is used by deployment '{row['name']}' "
                    f"({', '.join(used)}).",
                    "Change that pipeline first.",
                )
        if not tx.execute(
            "DELETE FROM connections WHERE project_id = ? AND name = ? RETURNING id",
            [project_id, name],
        ):
            raise NotFound("connection", name, step=Step("list-connections", project))
        _audit(tx, actor, "connection-remove", project, name)

    store.write(write)


def uses_postgres(pipeline: dict[str, Any] | None) -> bool:
    """Whether a pipeline (or a lone source block) has a postgres block."""
    if not isinstance(pipeline, dict):
        return False
    blocks = [pipeline, pipeline.get("source"), *(pipeline.get("sinks") or [])]
    return any(isinstance(b, dict) and b.get("kind") == "postgres" for b in blocks)


def bind_project(tx: Tx, pipeline: dict[str, Any], project_id: str) -> dict[str, Any]:
    """The pipeline (or a lone source block) with every postgres block tied to `project_id`,
    the deployment's project, so a run only ever uses its own project's connections.

    Raises Forbidden when a block names another project (by id or name).
    """

    def bind(block: Any) -> Any:
        if not isinstance(block, dict) or block.get("kind") != "postgres":
            return block
        named = block.get("project")
        if named and _project_id(tx, str(named)) != project_id:
            raise Forbidden(
                f"The PostgreSQL block using connection '{block.get('connection')}'"
                f" names project '{named}', which is not this deployment's "
                "project.",
                "A deployment uses its own project's connections: add "
                "the connection to the deployment's project and leave 'project' "
                "out of the block.",
            )
        return {**block, "project": project_id}

    bound: dict[str, Any] = bind(pipeline)
    if bound is pipeline:  # a whole pipeline, not a source block
        bound = dict(pipeline)
        if "source" in bound:
            bound["source"] = bind(bound["source"])
        if isinstance(bound.get("sinks"), list):
            bound["sinks"] = [bind(s) for s in bound["sinks"]]
    return bound


def for_block(store: Store, block: dict[str, Any]) -> PgConnection:
    """The connection a pipeline's postgres block names: in the block's project, or, without
    one, the only connection of that name in the workspace (NotFound / InvalidInput else)."""
    name = block.get("connection", "")
    if block.get("project"):
        return get_connection(store, str(block["project"]), name)
    rows = store.query("SELECT * FROM connections WHERE name = ?", [name]).dicts()
    if not rows:
        raise NotFound(
            "connection",
            name,
            "Add it to the deployment's project first.",
            step=Step("add-connection", name),
        )
    if len(rows) > 1:
        raise InvalidInput(
            f"{len(rows)} projects have a connection named '{name}'.",
            'Name the project in the block, e.g. "project": "Default".',
        )
    return PgConnection.from_row(rows[0])


@contextlib.contextmanager
def open_source(
    workspace: Workspace, block: dict[str, Any], batch_rows: int, limit: int | None = None
) -> Iterator[pa.RecordBatchReader]:
    """A validated postgres source block's rows as Arrow batches (core/postgres.py
    `read_query`); a missing connection or secret is a PipelineError of the source."""
    label = postgres.source_label(block)
    try:
        conn = for_block(Store.open(workspace), block)
        kwargs = connect_kwargs(workspace, conn)
    except (NotFound, InvalidInput) as exc:
        raise PipelineError(
            f"{label} cannot start: {exc.message}", exc.hint, "source", step=exc.step
        ) from exc
    with postgres.read_query(
        kwargs, block["sql"], batch_rows, label, f"connection '{conn.name}'", limit
    ) as reader:
        yield reader
