"""The source choice of the Drift and Challenger sections (runs, API and form calls, or both)
and their reads of the prediction log, cached while no log file and no run changes.

Streamlit only; the numbers come from core.traffic_drift and core.traffic_challenger.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import challenger, drift, monitoring, prediction_log, runs, traffic_challenger, ui
from core.entities import Deployment
from core.errors import InvalidInput
from core.store import Store
from core.traffic_drift import TrafficDrift, traffic_drift
from core.ui import monitoring as ui_monitoring

CHOICES = {"runs": "Runs", "calls": "API and form calls", "both": "Both"}
WINDOW_SOURCE = {"calls": "calls", "both": "all"}  # -> monitoring.Window's source


def _has_calls(store: Store, d: Deployment) -> bool:
    return bool(_days(str(store.workspace.home), d.id, prediction_log.state(store.workspace)))


@st.cache_data(max_entries=64, show_spinner=False)
def _days(home: str, deployment_id: str, token: tuple[object, ...]) -> list[dict[str, Any]]:
    return prediction_log.days(Store.open(home).workspace, deployment_id)


def pick_source(store: Store, d: Deployment, prefix: str) -> str:
    """Runs, calls or both; opens on whichever has data (both when both have). Kept per
    section and deployment while the session lasts."""
    listed = ui.cached_read(runs.list_runs, store, d.name, limit=drift.MAX_WINDOW)
    has_runs = any(r.status == "succeeded" for r in listed)
    has_calls = _has_calls(store, d)
    key = f"{prefix}_source_{d.id}"
    if key not in st.session_state:
        st.session_state[key] = (
            "both" if has_runs and has_calls else "calls" if has_calls else "runs"
        )
    choice = st.segmented_control(
        "Traffic from",
        list(CHOICES),
        format_func=CHOICES.__getitem__,
        key=key,
        help="Runs: pick runs below. API and form calls, or both: the window of the "
        "Monitoring section (hour or day points).",
    )
    return str(choice or "runs")


def window(d: Deployment, source: str) -> monitoring.Window:
    """The Monitoring section's window control over the chosen source."""
    return ui_monitoring.window_select(d, WINDOW_SOURCE[source])


def _token(store: Store, d: Deployment) -> tuple[object, ...]:
    """What a traffic result depends on: the log's files, the runs and the settings."""
    found = ui.cached_read(runs.list_runs, store, d.name, limit=drift.MAX_WINDOW)
    state = "|".join(f"{r.id}:{r.status}:{r.purged_at}" for r in found)
    return (
        str(d.updated_at),
        d.current_version_id or "",
        state,
        *prediction_log.state(store.workspace),
    )


@st.cache_data(max_entries=16, show_spinner="Counting the traffic against training…")
def _drift(
    home: str, name: str, window: monitoring.Window, token: tuple[object, ...]
) -> TrafficDrift | InvalidInput:
    """core.traffic_drift.traffic_drift (or its InvalidInput: an empty window is a state)."""
    try:
        return traffic_drift(Store.open(home), name, window)
    except InvalidInput as exc:
        return exc


@st.cache_data(max_entries=16, show_spinner="Comparing main and challenger…")
def _compare(
    home: str, name: str, window: monitoring.Window, token: tuple[object, ...]
) -> challenger.Comparison | InvalidInput:
    """core.traffic_challenger.compare_traffic (or its InvalidInput)."""
    try:
        return traffic_challenger.compare_traffic(Store.open(home), name, window)
    except InvalidInput as exc:
        return exc


def drift_of(store: Store, d: Deployment, window: monitoring.Window) -> TrafficDrift | InvalidInput:
    return _drift(str(store.workspace.home), d.name, window, _token(store, d))


def comparison_of(
    store: Store, d: Deployment, window: monitoring.Window
) -> challenger.Comparison | InvalidInput:
    return _compare(str(store.workspace.home), d.name, window, _token(store, d))
