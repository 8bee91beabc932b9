"""One deployment: general, pipeline, versions, runs, predictions, schedule, validation,
challenger, drift and audit log."""

import streamlit as st

from core import (
    audit,
    ui,
    ui_challenger,
    ui_connections,
    ui_deployment,
    ui_drift,
    ui_reports,
    ui_validation,
)
from core.errors import NotFound

ui.header("Deployment")
store = ui.get_store()
name = st.query_params.get("name")
found = ui.require_deployments(store)
names = [d.name for d in found]
if name and name not in names:
    ui.show_error(NotFound("deployment", name, "Choose one of the deployments below."))
deployment = st.selectbox("Deployment", found, key="deployment_pick",
                          index=names.index(name) if name in names else 0,
                          format_func=lambda d: f"{d.name} ({d.environment})")
st.query_params["name"] = deployment.name

(general, pipeline_tab, versions_tab, runs_tab, predictions_tab, schedule_tab, validation_tab,
 challenger_tab, drift_tab, audit_tab) = st.tabs(
    ["General", "Pipeline", "Versions", "Runs", "Predictions", "Schedule", "Validation",
     "Challenger", "Drift", "Audit log"])
with general:
    ui_drift.drift_banner(store, deployment)
    ui_deployment.general(store, deployment)
    ui_drift.drift_headline(store, deployment)
with pipeline_tab:
    ui_deployment.pipeline_editor(store, deployment)
    ui_connections.connections_panel(store, deployment)
with versions_tab:
    ui_deployment.versions_table(store, deployment)
with runs_tab:
    ui_deployment.runs_panel(store, deployment)
with predictions_tab:
    ui_challenger.predictions_tab(store, deployment)
with schedule_tab:
    ui_deployment.schedule_panel(store, deployment)
    ui_reports.report_settings(store, deployment)
with validation_tab:
    ui_validation.validation_tab(store, deployment)
with challenger_tab:
    ui_challenger.challenger_tab(store, deployment)
with drift_tab:
    ui_drift.drift_tab(store, deployment)
with audit_tab:
    entries = audit.list_entries(store, deployment.name)
    st.dataframe([{"when (UTC)": e.logged_at, "who": e.actor, "what": e.action,
                   "before": audit.describe(e.before), "after": audit.describe(e.after),
                   "reason": e.reason} for e in entries], hide_index=True)
