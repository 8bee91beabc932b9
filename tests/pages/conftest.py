"""AppTest helpers shared by the page tests. Every page test runs logged in: AppTest cannot send
cookies, so a session is started in the store and its token seeded in session state, which
app.py resolves on every rerun exactly as it resolves the browser's cookie."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import users
from core.store import Store, Tx

APP = str(Path(__file__).resolve().parents[2] / "app.py")
ADMIN = "tester"  # an admin of every test workspace (tests/files.py: ADMINS)


def start_session(username: str, store: Store | None = None) -> str:
    """A live session of `username` in the workspace ($MODELDECK_HOME); returns its token."""
    store = store or Store.open()

    def write(tx: Tx) -> str:
        user_id = tx.execute("SELECT id FROM users WHERE username = ?", [username]).scalar()
        assert user_id is not None, f"no user {username}"
        return users.start_session(tx, str(user_id), "apptest")

    return store.write(write)


def log_in(at: AppTest, username: str = ADMIN, token: str | None = None) -> AppTest:
    """`at` logged in as `username` (a new session unless `token` is given)."""
    at.session_state["modeldeck_session"] = token or start_session(username)
    at.session_state["modeldeck_user"] = username  # for from_function tests, which skip app.py
    return at


@pytest.fixture
def open_page() -> Callable[..., AppTest]:
    """Run app.py on a page (as a deep link would), logged in as an admin, with query
    parameters; return the AppTest. `as_user=` logs in as another user, `as_user=None` not."""

    def open_page(path: str, as_user: str | None = ADMIN, **query: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120)
        if as_user is not None:
            log_in(at, as_user)
        at.switch_page(path)
        for key, value in query.items():
            at.query_params[key] = value
        return at.run()

    return open_page


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    """The page's charts as Vega-Lite specs with their rows under data.values (Streamlit sends
    the rows beside the spec, as Arrow; AppTest draws nothing)."""
    import pyarrow as pa

    found = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        if element.proto.data.data:
            table = pa.ipc.open_stream(element.proto.data.data).read_all()
            spec["data"] = {"values": table.to_pylist()}
        found.append(spec)
    return found


def chart_titles(at: AppTest) -> list[str]:
    """The titles of the page's charts, in page order."""
    return [str(spec["title"]["text"]) for spec in chart_specs(at)]


def markdown_tables(at: AppTest) -> list[pd.DataFrame]:
    """The page's small tables (core.ui.tables draws them as Markdown), in page order, read
    back into DataFrames of the text a reader sees (unescaped, numbers as written)."""
    found = []
    for element in at.markdown:
        lines = element.value.splitlines()
        if len(lines) < 2 or not lines[0].startswith("| ") or not lines[1].startswith("| ---"):
            continue
        rows = [_cells(line) for line in lines if not line.startswith("| ---")]
        found.append(pd.DataFrame(rows[1:], columns=rows[0]))
    return found


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells: split on the bars no backslash escapes, then unescaped."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [re.sub(r"\\(.)", r"\1", part.strip()) for part in parts]
