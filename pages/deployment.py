"""One deployment, one section at a time: general, monitoring, predictions, versions, usage,
pipeline, runs, schedule, validation, challenger, drift and audit log.

Only the chosen section renders (and so computes); the deployment and the section are kept in
the URL (`?name=…&section=…`), so a link opens the same view.
"""

import streamlit as st

from core import audit, ui
from core.entities import Deployment
from core.store import Store
from core.ui import challenger as ui_challenger
from core.ui import connections as ui_connections
from core.ui import deployment as ui_deployment
from core.ui import drift as ui_drift
from core.ui import monitoring as ui_monitoring
from core.ui import reports as ui_reports
from core.ui import validation as ui_validation


def general(store: Store, d: Deployment) -> None:
    series = ui_drift.over_time(store, d)  # one computation for the banner and the headline
    ui_drift.drift_banner(store, d, series)
    ui_deployment.general(store, d)
    ui_drift.drift_headline(d, series)


def pipeline(store: Store, d: Deployment) -> None:
    ui_deployment.pipeline_editor(store, d)
    ui_connections.connections_panel(store, d)


def schedule(store: Store, d: Deployment) -> None:
    ui_deployment.schedule_panel(store, d)
    ui_reports.report_settings(store, d)


def audit_log(store: Store, d: Deployment) -> None:
    entries = ui.cached_read(audit.list_entries, store, d.name)
    st.dataframe(
        [
            {
                "when (UTC)": e.logged_at,
                "who": e.actor,
                "what": e.action,
                "before": audit.describe(e.before),
                "after": audit.describe(e.after),
                "reason": e.reason,
            }
            for e in entries
        ],
        hide_index=True,
    )


SECTIONS = {  # the seed's five first, then the pipeline's and the model checks' own
    "general": general,
    "monitoring": ui_monitoring.monitoring_section,
    "predictions": ui_challenger.predictions_tab,
    "versions": ui_deployment.versions_table,
    "usage": ui_monitoring.usage_section,
    "pipeline": pipeline,
    "runs": ui_deployment.runs_panel,
    "schedule": schedule,
    "validation": ui_validation.validation_tab,
    "challenger": ui_challenger.challenger_tab,
    "drift": ui_drift.drift_tab,
    "audit": audit_log,
}

ui.header("Deployment")
store = ui.get_store()
deployment = ui_deployment.pick_deployment(store)
section = ui_deployment.section_picker(list(SECTIONS))
SECTIONS[section](store, deployment)
