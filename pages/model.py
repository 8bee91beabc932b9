"""One model: metrics, parameters, input schema, training profile, holdout
explainability and artifact."""

import pandas as pd
import streamlit as st

from core import projects, registry, ui
from core.errors import NotFound
from core.ui import charts
from core.ui import explain as ui_explain

ui.header("Model")
store = ui.get_store()
model_id = st.query_params.get("id")
model = None
if model_id:
    try:
        model = ui.cached_read(registry.get_model, store, model_id)
    except NotFound as exc:
        ui.show_error(exc)
if model is not None and ui.no_access(
    store, ui.cached_read(projects.get_project, store, model.project).id, f"model {model.id}"
):
    st.stop()
if model is None:
    models = ui.cached_read(registry.list_models, store, visible_to=ui.actor())
    if not models:
        st.info("No model yet: train models on a dataset, or import one trained elsewhere.")
        st.page_link("pages/train.py", label="Train models", icon=":material/model_training:")
        st.page_link("pages/import_model.py", label="Import a model", icon=":material/upload_file:")
        st.stop()
    model = st.selectbox(
        "Model",
        models,
        key="model_pick",
        format_func=lambda m: f"{m.experiment}: {ui.model_label(m)}",
    )
    st.query_params["id"] = model.id

st.subheader(f"{ui.model_name(model)} · {model.experiment}")
st.caption(
    f"{model.id} · project {model.project} · {model.task} · {model.origin} · "
    f"created {model.created_at:%Y-%m-%d %H:%M} UTC"
)
headline = {k: v for k, v in model.metrics.items() if not k.endswith("_rows")}
for col, (name, value) in zip(st.columns(max(len(headline), 1)), headline.items(), strict=False):
    col.metric(name, "n/a" if value is None else f"{value:.4f}")
scope = "reference dataset" if model.origin == "imported" else "20% holdout"
st.caption(f"Metrics on the {scope}.")

# Tabs rerun on a switch, so only the open tab's content runs (and reaches the browser: a
# hidden tab's charts and tables would load and draw there too, ~1 s on a first visit).
tabs = st.tabs(
    [
        "Leaderboard",
        "Deploy",
        "Schema",
        "Training profile",
        "Explainability",
        "Parameters",
        "Artifact",
    ],
    key="model_tabs",
    on_change="rerun",
)
(metrics_tab, deploy_tab, schema_tab, profile_tab, explain_tab, params_tab, artifact_tab) = tabs
if deploy_tab.open:
    with deploy_tab:
        ui.deploy_form(store, model, key="model_deploy")
if metrics_tab.open:
    with metrics_tab:
        siblings = ui.cached_read(registry.list_models, store, version_id=model.version_id)
        ui.show_leaderboard(siblings, key="model_board")
        metric = charts.headline_metric(model.task)
        # Behind a toggle: the first chart of a browser tab loads plotly's bundle (~1 s).
        if len(siblings) > 1 and st.toggle(f"Chart of the {metric}", key="model_board_show"):
            ui.chart(charts.leaderboard_figure(siblings, metric), key="model_board_chart")
if schema_tab.open:
    with schema_tab:
        st.caption(
            f"Target `{model.schema.target}`"
            + (
                f" · classes: {', '.join(map(str, model.schema.classes))}"
                if model.schema.classes
                else ""
            )
            + (f" · prediction key `{model.schema.key_column}`" if model.schema.key_column else "")
        )
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "column": f.name,
                        "kind": f.kind,
                        "dtype": f.dtype,
                        "categories": ", ".join(f.categories[:20])
                        + (" …" if len(f.categories) > 20 else ""),
                    }
                    for f in model.schema.features
                ]
            ),
            hide_index=True,
        )
if profile_tab.open:
    with profile_tab:
        features = model.profile.get("features", {})
        name = st.selectbox("Feature", list(features), key="profile_feature")
        if name:
            ui.chart(charts.profile_figure(name, features[name]), key="profile_chart")
            st.caption(f"Missing in training: {features[name]['missing_rate']:.1%} of rows.")
        if "prediction" in model.profile:
            ui.chart(
                charts.profile_figure("prediction", model.profile["prediction"]),
                key="prediction_chart",
            )
if explain_tab.open:
    with explain_tab:
        ui_explain.model_importance(store, model)
if params_tab.open:
    with params_tab:
        ui.settings_table(model.params, "parameter")
if artifact_tab.open:
    with artifact_tab:
        ui.settings_table(model.details()["artifact"], "field")
        st.caption(f"{model.size_bytes / 1024:.1f} KB · checked against its SHA-256 on every load.")
