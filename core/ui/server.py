"""The app's HTTP server: Streamlit on Starlette (`st.App`) with the login and logout routes of
core/ui/login_routes.py beside it.

`modeldeck ui` starts it as `streamlit run core/ui/server.py`: Streamlit finds `app` and serves
it with its own uvicorn settings (websocket limits and pings, `--server.*` flags,
`.streamlit/config.toml` of the working directory, the pages beside app.py).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.ui.login_routes import ROUTES

APP_PATH = Path(__file__).resolve().parents[2] / "app.py"

app = st.App(APP_PATH, routes=ROUTES)
