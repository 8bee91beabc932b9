"""Every deployment: environment, current models, status (deployed, and running in the API),
its form's URL, last run, link."""

import streamlit as st

from core import api_status, deployments, forms, runs, ui
from core.ui import form as ui_form

ui.header(
    "Deployments",
    "Staging and production endpoints of your experiments. Deploy a model "
    "from its page or from an experiment's leaderboard.",
)
URL_X = 200  # pixels: the deployment column's width, half the URL column's
store = ui.get_store()
found = ui.require_deployments(store)

rows = []
names = ui.model_names(store)
api = api_status.read_states(store.workspace)  # the API processes' own status files
for d in found:
    # a validation is not a run of the pipeline's data: it does not count as the last run
    found_runs = ui.cached_read(runs.list_runs, store, d.name, limit=20)
    last = [r for r in found_runs if r.trigger != "validation"]
    current = d.current
    rows.append(
        {
            "deployment": f"deployment?name={d.name}",
            "URL": ui_form.form_url(d.name),
            "status": deployments.status(store, d),
            "running": ui_form.said(api_status.running(api, d)).words,
            "environment": d.environment,
            "version": f"v{current.number}" if current else "none",
            "main model": names.get(current.main_model_id, "") if current else "",
            "challenger": names.get(current.challenger_model_id or "", "") if current else "",
            "last run": (
                f"{last[0].status} · {last[0].queued_at:%Y-%m-%d %H:%M}" if last else "never"
            ),
            "access": d.access,
            "model ids": " / ".join(
                i for i in (current.main_model_id, current.challenger_model_id) if i
            )
            if current
            else "",
        }
    )
ui.link_table(
    rows,
    "deployment",
    key="deployments_table",
    cell_links={"URL": [forms.form_path(d.name) for d in found]},
    column_config={  # fixed widths: a click lands on the same column in every browser
        "deployment": st.column_config.TextColumn("deployment", width=URL_X),
        "URL": st.column_config.TextColumn(
            "URL", width=2 * URL_X, help="The prediction form: click to open it, copy to share."
        ),
    },
)
for why in sorted({r["running"] for r in rows if not r["running"].startswith("running")}):
    st.caption(f":material/warning: {why[0].upper()}{why[1:]}.")  # the whole reason
st.caption(
    'Status "deployed": the current models\' artifacts are present and intact. "running": '
    "the API process answers for the deployment (it reports every few seconds which "
    "deployments it has loaded). URL: the deployment's prediction form, to share; public "
    "forms need no login."
)
