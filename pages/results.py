"""A run's results: box metrics, filters, column toggles, server-side pages, downloads."""

import streamlit as st

from core import registry, results, runs, ui
from core.entities import Run
from core.ui import connections as ui_connections
from core.ui import explain as ui_explain
from core.ui import reports as ui_reports
from core.ui import results as ui_results


@st.fragment
def table_and_explanation(run: Run, which: str) -> None:
    """Filters, toggles, pages and the selected row's explanation: they rerun only this."""
    store = ui.get_store()
    ui.recheck_access(store, run.project_id)
    with ui.guarded():
        selected = ui_results.results_table(store, run, which)
        ui.download_results(run.id, which, key="results_download")
        ui_explain.explain_row(store, run, which, selected)


ui.header("Run results")
store = ui.get_store()
run_id = st.query_params.get("run")
if not run_id:
    of = st.query_params.get("deployment")  # a deleted deployment's kept runs, for one
    # deleted deployments' runs included
    recent = ui.cached_read(runs.list_runs, store, of, limit=200, visible_to=ui.actor())
    if not recent:
        st.info(
            f"No run of {of} yet." if of else "No run yet: open a deployment and press Run now."
        )
        st.page_link("pages/deployments.py", label="Deployments", icon=":material/rocket_launch:")
        st.stop()
    run_id = st.selectbox(
        "Run",
        [r.id for r in recent],
        key="results_pick",
        format_func=lambda i: next(
            f"{r.deployment_name} · {r.status} · {r.queued_at:%Y-%m-%d %H:%M} ({r.id})"
            for r in recent
            if r.id == i
        ),
    )
    st.query_params["run"] = run_id
run = None
with ui.guarded():
    run = ui.cached_read(runs.get_run, store, run_id)
if run is None or ui.no_access(store, run.project_id, f"run {run.id}"):
    st.stop()

models = {
    role: ui.model_label(ui.cached_read(registry.get_model, store, run.summary[role]["model_id"]))
    for role in ("main", "challenger")
    if (run.summary.get(role) or {}).get("model_id")
}
st.caption(
    f"{run.deployment_name} · run {run.id} · {run.trigger} by {run.queued_by} · {run.status}"
    + "".join(f" · {role} {label}" for role, label in models.items())
)
if not run.is_finished:
    ui_results.run_progress(store, run.id)  # polls; redraws the page when the run ends
    st.stop()
if run.status != "succeeded":
    st.error(f"**The run {run.status}.** {run.error or ''}", icon="⚠️")
ui_connections.redeliver_panel(store, run)  # re-deliver to the sinks, without predicting again
ui_reports.report_download(store, run)
if not run.summary.get("results_written"):  # a failed sink still leaves readable results
    if run.status == "succeeded":  # zero rows: no new data (incremental sources)
        st.info(" ".join(run.summary.get("notes") or ["The run scored no rows."]))
    st.stop()

summary = ui.cached_read(results.summary, store, run.id)
which = st.radio(
    "Results of",
    ["main", "challenger"] if summary.get("challenger") else ["main"],
    horizontal=True,
    key="results_which",
    format_func=lambda role: f"{role}: {models[role]}" if role in models else role,
)
ui_results.box_metrics(summary, which)  # of the results shown: main or challenger
table_and_explanation(run, which)
if run.status == "succeeded" and run.purged_at is None:
    ui_explain.global_importance(store, run)
with st.expander("Purge this run's results"):
    st.caption("Deletes the result files; the summary and metrics above stay.")
    why = ui.denied(store, run.project_id, "purge")
    ui.say_denied(why)
    st.button(
        "Purge results",
        key="results_purge",
        disabled=bool(why),
        help=why,
        on_click=ui.act,
        args=(lambda: ui_results.purge(store, run.id),),
    )
