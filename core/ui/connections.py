"""PostgreSQL connections on the Pipeline tab, the postgres source/sink fields, re-delivery.

Streamlit only; calls core.connections and core.delivery. A stored password is never shown
back: a connection reads "password: from $VAR" or "password: stored encrypted", and the
password field of the form starts empty every time.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import connections, delivery, sinks, ui
from core.engine import postgres
from core.entities import Deployment, Run
from core.errors import ModelDeckError
from core.store import Store

PASSWORD_FROM = {
    "env": "An environment variable (recommended)",
    "encrypted": "Type it here (stored encrypted with the workspace key)",
    "none": "No password (trust or certificate authentication)",
}


# ---------------------------------------------------------------------------- pipeline fields
def _names(store: Store, d: Deployment) -> list[str]:
    return [c.name for c in ui.cached_read(connections.list_connections, store, d.project_id)]


def _connection_picker(store: Store, d: Deployment, current: str, key: str) -> str:
    names = _names(store, d)
    if not names:
        st.info(
            "This project has no database connection yet: add one under **Database "
            "connections** below.",
            icon="🔌",
        )
        return current
    options = names if current in names or not current else [current, *names]
    return st.selectbox(
        "Connection", options, index=options.index(current) if current in options else 0, key=key
    )


def source_fields(store: Store, d: Deployment, source: dict[str, Any]) -> dict[str, Any]:
    """The postgres source block's fields (connection, query) for the source editor."""
    conn = _connection_picker(store, d, str(source.get("connection") or ""), f"src_pg_conn_{d.id}")
    sql = st.text_area(
        "PostgreSQL query",
        value=source.get("sql", "") if source.get("kind") == "postgres" else "",
        key=f"src_pg_sql_{d.id}",
        help="One SELECT in PostgreSQL's dialect; it runs in a read-only "
        "transaction and streams in batches.",
    )
    return {"kind": "postgres", "connection": conn, "sql": sql, "project": d.project_id}


def sink_fields(store: Store, d: Deployment, sink: dict[str, Any] | None) -> dict[str, Any] | None:
    """The postgres sink block's fields, or None when the box is unticked."""
    sink = sink or {}
    if not st.checkbox("Also write to a PostgreSQL table", value=bool(sink), key=f"sink_pg_{d.id}"):
        return None
    a, b = st.columns(2)
    with a:
        conn = _connection_picker(
            store, d, str(sink.get("connection") or ""), f"sink_pg_conn_{d.id}"
        )
    table = b.text_input(
        "Table (schema.table)",
        sink.get("table", d.name.replace("-", "_")),
        key=f"sink_pg_table_{d.id}",
    )
    c, e = st.columns(2)
    mode = c.selectbox(
        "Mode",
        postgres.TABLE_MODES,
        index=postgres.TABLE_MODES.index(sink.get("mode", "append")),
        key=f"sink_pg_mode_{d.id}",
        help="create: a new table (fails if it exists); append: add rows (creates the table "
        "if missing); replace: drop and recreate. Always one transaction.",
    )
    challenger = e.selectbox(
        "Challenger predictions",
        postgres.CHALLENGER_MODES,
        index=postgres.CHALLENGER_MODES.index(sink.get("challenger", "columns")),
        format_func={
            "columns": "as a column beside the main prediction",
            "table": "in their own table (<table>_challenger)",
            "none": "not written",
        }.__getitem__,
        key=f"sink_pg_ch_{d.id}",
    )
    return {
        "kind": "postgres",
        "connection": conn,
        "table": table,
        "mode": mode,
        "challenger": challenger,
        "project": d.project_id,
    }


# ---------------------------------------------------------------------------- connections
def connections_panel(store: Store, d: Deployment) -> None:
    """The project's database connections: list, test, remove, add (passwords never shown)."""
    with st.expander("Database connections", expanded=False):
        found = ui.cached_read(connections.list_connections, store, d.project_id)
        if found:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "name": c.name,
                            "address": c.address,
                            "sslmode": c.sslmode,
                            "password": c.password_label,
                        }
                        for c in found
                    ]
                ),
                hide_index=True,
            )
            left, mid, right = st.columns([2, 1, 1])
            name = left.selectbox(
                "Connection",
                [c.name for c in found],
                key=f"conn_pick_{d.id}",
                label_visibility="collapsed",
            )
            untestable = ui.denied(store, d.project_id, "test-connection")
            if mid.button(
                "Test connection",
                key=f"conn_test_{d.id}",
                disabled=untestable is not None,
                help=untestable,
            ):
                with ui.guarded():
                    result = connections.test_connection(
                        store, d.project_id, name, actor=ui.actor()
                    )
                    st.success(
                        f"Connected to PostgreSQL {result['server_version']} in "
                        f"{result['seconds']:.2f} s."
                    )

            def remove() -> str:  # a callback: the list above renders without it at once
                chosen = st.session_state[f"conn_pick_{d.id}"]
                connections.remove_connection(store, d.project_id, chosen, actor=ui.actor())
                return f"Removed the connection '{chosen}'."

            why = ui.denied(store, d.project_id, "remove-connection")
            right.button(
                "Remove",
                key=f"conn_rm_{d.id}",
                on_click=ui.act,
                args=(remove,),
                disabled=bool(why),
                help=why,
            )
        else:
            st.caption("No connections in this project yet: add one below.")
        _add_form(store, d)


def _add_form(store: Store, d: Deployment) -> None:
    why = ui.denied(store, d.project_id, "add-connection")
    if why:
        ui.say_denied(why)
        return
    with st.form(f"conn_add_{d.id}", clear_on_submit=True):
        st.markdown("**Add a connection**")
        a, b = st.columns([3, 1])
        name = a.text_input("Name", placeholder="warehouse")
        sslmode = b.selectbox(
            "sslmode", connections.SSLMODES, index=connections.SSLMODES.index("prefer")
        )
        a, b = st.columns([3, 1])
        host = a.text_input("Host", placeholder="db.internal")
        port = b.number_input("Port", min_value=1, max_value=65535, value=5432, step=1)
        a, b = st.columns(2)
        database = a.text_input("Database")
        user = b.text_input("User")
        source = st.radio(
            "Password", list(PASSWORD_FROM), format_func=PASSWORD_FROM.get, horizontal=False
        )
        a, b = st.columns(2)
        variable = a.text_input("Environment variable", placeholder="MODELDECK_SECRET_WAREHOUSE")
        secret = b.text_input("Password", type="password")
        replace = st.checkbox("Replace a connection of that name")
        if not st.form_submit_button("Save connection"):
            return
    with ui.guarded():
        conn = connections.add_connection(
            store,
            d.project_id,
            name,
            host=host,
            port=int(port),
            database=database,
            user=user,
            sslmode=sslmode,
            replace=replace,
            password=secret if source == "encrypted" else None,
            password_env=variable if source == "env" else None,
            actor=ui.actor(),
        )
        st.success(f"Saved connection '{conn.name}' ({conn.password_label}).")


# ---------------------------------------------------------------------------- re-delivery
def redeliver_panel(store: Store, run: Run) -> None:
    """Re-deliver a finished run's results to the sinks (shown when delivery failed, or for
    any finished run with sinks)."""
    if not run.pipeline.get("sinks") or delivery.why_not_deliverable(store, run):
        return
    failed = run.status == "failed"
    targets = ", ".join(sinks.describe(s) for s in run.pipeline["sinks"])
    with st.container(border=True):
        st.markdown(
            "**Delivery**: "
            + (
                "the results were kept, but a sink failed. Fix the "
                "cause (server down, table columns), then deliver "
                "again: nothing is predicted again."
                if failed
                else f"delivered to {targets}."
            )
        )
        for attempt in run.summary.get("deliveries", [])[-3:]:
            st.caption(
                f"{attempt['at']} by {attempt['by']}: "
                + ("delivered" if attempt["ok"] else f"failed: {attempt['error']}")
            )
        label = "Deliver again" if failed else "Deliver to the sinks again"
        why = ui.denied(store, run.project_id, "redeliver")
        ui.say_denied(why)
        if st.button(
            label,
            key=f"redeliver_{run.id}",
            type="primary" if failed else "secondary",
            disabled=bool(why),
            help=why,
        ):
            try:
                with st.spinner(f"Writing to {targets}…"):
                    done = delivery.redeliver(store, run.id, actor=ui.actor())
            except ModelDeckError as exc:
                ui.show_error(exc)
                return
            st.toast(f"Run {done.id} delivered; it is {done.status}.")
            st.rerun()
