"""Run reports in the app: the Schedule tab's report settings, the run page's download button.

Streamlit only; everything else is core.reports.
"""

from __future__ import annotations

import streamlit as st

from core import reports, ui
from core.entities import Deployment, Run
from core.store import Store

_RUNS = {"scheduled": "After scheduled runs only", "all": "After every run"}


def report_settings(store: Store, d: Deployment) -> None:
    """Report settings per deployment: on/off, which runs, the folder reports are copied to."""
    st.subheader("Run reports")
    current = ui.cached_read(reports.get_report_settings, store, d.name)  # `d` may be older
    st.caption(
        "A self-contained HTML page per run (summary, metrics, predictions, input "
        "quality, drift, importance) in the run's folder; promotion copies these "
        "settings when its report box is ticked."
    )
    with st.form(f"report_settings_{d.id}"):
        enabled = st.checkbox(
            "Write a report after each run", value=current.enabled, key=f"report_on_{d.id}"
        )
        runs = st.radio(
            "Which runs",
            list(_RUNS),
            index=list(_RUNS).index(current.runs),
            format_func=_RUNS.get,
            horizontal=True,
            key=f"report_runs_{d.id}",
        )
        copy_to = st.text_input(
            "Also copy reports to (folder in the workspace, optional)",
            value=current.copy_to or "",
            key=f"report_copy_{d.id}",
            placeholder="exports/reports",
        )
        why = ui.denied(store, d.project_id, "report")
        ui.say_denied(why)
        if st.form_submit_button("Save report settings", disabled=bool(why), help=why):
            with ui.guarded():
                saved = reports.set_report_settings(
                    store,
                    d.name,
                    enabled=enabled,
                    runs=runs,
                    copy_to=copy_to.strip(),
                    actor=ui.actor(),
                )
                st.success(
                    "Saved: reports "
                    + ("on, " + _RUNS[saved.runs].lower() if saved.enabled else "off")
                    + "."
                )


def report_download(store: Store, run: Run) -> None:
    """Download the run's HTML report (written on the click when the run has none yet)."""
    if not run.is_finished:
        return
    exists = reports.report_path(store.workspace, run.id).exists()
    st.download_button(
        "Download report (HTML)" if exists else "Write and download report (HTML)",
        key=f"report_download_{run.id}",
        mime="text/html",
        on_click="ignore",
        file_name=f"{run.deployment_name}-{run.id}.html",
        data=lambda: reports.report_file(store, run.id).read_bytes(),
    )
    problem = (run.summary.get("report") or {}).get("copy_error")
    if problem:
        st.warning(problem)
