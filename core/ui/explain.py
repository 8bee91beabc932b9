"""The results page's explanation panels: one row's SHAP bars, and the run's global importance."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from core import explain, registry, ui
from core.engine.profiles import plain_number
from core.entities import Model, Run
from core.store import Store
from core.ui import charts
from core.worker import sidecars

PREDICTED = "predicted class"


def explain_row(store: Store, run: Run, which: str, row: dict[str, Any] | None) -> None:
    """The explanation of the row selected in the results table (a class picker first for a
    multiclass model), or how to get one."""
    if row is None:
        st.caption(
            "Select a row in the table (the box at its left) to see why the model predicted it."
        )
        return
    key_column: str | None = (run.summary.get("columns") or {}).get("key")
    by: explain.By = "row"
    chosen = row.get("_row")
    if key_column and key_column in row:
        by, chosen = "key", row[key_column]
    probabilities = (run.summary.get("columns") or {}).get("probabilities") or []
    classes = [name.removeprefix("proba_") for name in probabilities]
    class_ = None
    if len(classes) > 2:
        picked = st.selectbox(
            "Explain the class", [PREDICTED, *classes], key=f"explain_class_{which}"
        )
        class_ = None if picked == PREDICTED else picked
    with ui.guarded():
        [e] = explain.explain_rows(store, run.id, [chosen], which, class_, by=by)
        show_explanation(e, registry.get_model(store, e.model_id))


def headline(e: explain.Explanation, target: str) -> str:
    """The explanation in one sentence, probability first: "**67 % likely churn = yes**;
    contract = month-to-month raised it most, tenure = 42 lowered it most."."""
    if e.probability is not None:
        lead = f"**{charts.percent(e.probability)} likely {target} = {e.class_}**"
        if str(e.class_) != str(e.prediction):
            lead += f" (predicted: {e.prediction})"
    else:
        value = e.prediction
        shown = plain_number(value) if isinstance(value, float) else value
        lead = f"**Predicted {target} = {shown}**"
    up = next((c for c in e.contributions if c.contribution > 0), None)
    down = next((c for c in e.contributions if c.contribution < 0), None)
    drivers = [
        f"{c.feature} = {charts.value_text(c.value)} {verb} it most"
        for c, verb in ((up, "raised"), (down, "lowered"))
        if c is not None
    ]
    return lead + ("; " + ", ".join(drivers) if drivers else "") + "."


def scale_sentence(e: explain.Explanation) -> str:
    """Where the bars start and end, and on which scale, in words."""
    words = f"The bars are in {charts.scale_words(e.scale)}"
    if e.scale in ("log-odds", "probability"):
        to_p = _sigmoid if e.scale == "log-odds" else float
        return (
            f"{words}. The average row starts at {charts.percent(to_p(e.base_value))}; "
            f"this row's values bring it to {charts.percent(to_p(e.output))}."
        )
    return (
        f"{words}: they start from the average row's {plain_number(e.base_value)} "
        f"and add up to this row's {plain_number(e.output)}."
    )


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def show_explanation(e: explain.Explanation, model: Model) -> None:
    """One row's explanation: the sentence, the scale in words, the bars, the details."""
    with st.container(border=True):
        subject = f"{e.key}" if e.key is not None else f"row {e.row}"
        st.markdown(f"{subject}: {headline(e, model.schema.target)}")
        st.caption(scale_sentence(e))
        ui.chart(charts.explanation_figure(e), key=f"explain_chart_{e.which}")
        scale = e.scale + (f" of class {e.class_}" if e.class_ is not None else "")
        st.caption(
            f"Average row {plain_number(e.base_value)} + contributions = this row "
            f"{plain_number(e.output)} ({scale}). Explainer: {e.explainer}, "
            f"model {ui.model_label(model)}."
        )
        if e.note:
            st.info(e.note)


GLOBAL_KEY = "results_global_open"  # whether "Global explainability" is open, kept per tab


def global_importance(store: Store, run: Run) -> None:
    """Mean |SHAP| per feature for main (and challenger, side by side), or "computing…", in an
    expander whose content runs only while it is open: closed, the page sends no chart for it
    (its charts and files used to be read and drawn, hidden, on every run)."""
    roles = ["main", *(["challenger"] if run.summary.get("challenger") else [])]
    box = st.expander("Global explainability", key=GLOBAL_KEY, on_change="rerun")
    if not box.open:
        return
    with box:
        if any(explain.get_importance(store, run.id, which) is None for which in roles):
            _importance_polling(store, run, roles)
        else:
            _importances(store, run, roles)


def _importances(store: Store, run: Run, roles: list[str]) -> bool:
    found = {which: explain.get_importance(store, run.id, which) for which in roles}
    ready = [f for f in found.values() if f is not None and not f.error]
    x_max = charts.shared_range(ready)  # main and challenger side by side on one scale
    if len(ready) > 1:
        scales = {f.scale for f in ready}
        st.caption(
            "Both charts share one scale, so their bars compare."
            if x_max is not None
            else f"The models explain on different scales ({', '.join(sorted(scales))}): "
            "compare the order of the features, not the bars' lengths."
        )
    waiting = False
    for column, which in zip(st.columns(len(roles)), roles, strict=True):
        with column:
            waiting |= _importance(store, run, which, found[which], x_max)
    st.caption(charts.MEAN_SHAP_WORDS)
    return waiting


@st.fragment(run_every=2)
def _importance_polling(store: Store, run: Run, roles: list[str]) -> None:
    """Polls while an importance is being computed; redraws the page once all are there."""
    if not _importances(store, run, roles):
        st.rerun()  # once more without the timer
    worker = sidecars.worker_status(store.workspace)
    st.caption(
        "This updates by itself when the worker has computed it."
        + (
            ""
            if worker.is_alive
            else f" The worker is not running ({worker.detail}): start it with `modeldeck worker`."
        )
    )


def _importance(
    store: Store, run: Run, which: str, found: explain.Importance | None, x_max: float | None
) -> bool:
    """Draw one results file's importance; True while it is still being computed."""
    if found is None:
        st.info(f"{which}: computing…")
        return True
    if found.error:
        st.warning(f"{which}: {found.error}")
        return False
    importance_views(
        found,
        explain.get_shap_sample(store, run.id, which),
        key=which,
        rows_text="sampled rows (stratified by predicted class)",
        x_max=x_max,
    )
    return False


def model_importance(store: Store, model: Model) -> None:
    """Mean |SHAP| per feature over the model's holdout rows: computed once (with a progress
    bar) and stored beside the model, then read from the file."""
    found = explain.get_model_importance(store, model)
    if found is None:
        working = st.empty()  # the note and the bar go once the result is there
        with working.container():
            st.caption("Explaining the holdout rows once; later views read the stored result.")
            progress = ui.progress_bar("Rebuilding the holdout rows")
        with ui.guarded():
            found = explain.model_importance(store, model, progress=progress)
            working.empty()
    if found is None:
        return
    rows = (
        "rows of the reference dataset"
        if found.which == "reference"
        else "holdout rows (stratified by predicted class)"
    )
    importance_views(
        found, explain.get_model_shap_sample(store, model), key="model", rows_text=rows
    )
    st.caption(charts.MEAN_SHAP_WORDS)


def importance_views(
    found: explain.Importance,
    sample: explain.ShapSample | None,
    key: str,
    rows_text: str,
    x_max: float | None = None,
) -> None:
    """The bars, and for readers who want more a beeswarm of the top features or one
    feature's dependence view, drawn from the stored per-row SHAP values."""
    views = ["Bars"] + (["Beeswarm", "Dependence"] if sample is not None else [])
    view = st.radio(
        "View", views, horizontal=True, key=f"importance_view_{key}", label_visibility="collapsed"
    )
    scale = f"SHAP on the {found.scale} scale"
    if view == "Beeswarm" and sample is not None:
        ui.chart(
            charts.beeswarm_figure(sample, f"{found.which}: {scale}, top features"),
            key=f"beeswarm_chart_{key}",
        )
        st.caption(
            _explained_output(sample) + " Colour: the row's value of the feature "
            "(low blue, high red, missing grey; categories by name order)."
        )
    elif view == "Dependence" and sample is not None:
        ranked = sample.ranked()
        a, b = st.columns(2)
        feature = a.selectbox("Feature", ranked, key=f"dependence_feature_{key}")
        colour_by = b.selectbox(
            "Colour by", ranked, index=ranked.index(feature), key=f"dependence_colour_{key}"
        )
        ui.chart(
            charts.dependence_figure(sample, feature, f"{found.which}: {feature}", colour_by),
            key=f"dependence_chart_{key}",
        )
        st.caption(_explained_output(sample))
    else:
        ui.chart(charts.importance_figure(found, x_max=x_max), key=f"importance_chart_{key}")
    st.caption(
        f"{found.explainer} on {found.rows:,} {rows_text}, {found.seconds:.2f} s."
        + (f" {found.note}" if found.note else "")
    )


def _explained_output(sample: explain.ShapSample) -> str:
    classes = sorted({str(c) for c in sample.column("_class") if c is not None})
    if not classes:
        return f"One dot per sampled row, SHAP on the {sample.scale} scale."
    what = f"class {classes[0]}" if len(classes) == 1 else "each row's predicted class"
    return f"One dot per sampled row: SHAP of {what}, on the {sample.scale} scale."
