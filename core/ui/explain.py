"""The results page's explanation panels: one row's SHAP bars, and the run's global importance."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import explain, registry, ui
from core.entities import Model, Run
from core.store import Store
from core.ui import charts
from core.worker import sidecars

PREDICTED = "predicted class"


def explain_row(store: Store, run: Run, which: str, page: pd.DataFrame) -> None:
    """A row picker over the current page, then that row's explanation."""
    key_column = (run.summary.get("columns") or {}).get("key")
    by = "key" if key_column and key_column in page.columns else "row"
    ident = key_column if by == "key" else "_row"
    options = page[ident].tolist() if ident in page.columns else []
    if not options:
        return
    a, b = st.columns([2, 1])
    chosen = a.selectbox(
        f"Explain a row (by {'its ' + key_column if by == 'key' else 'row'})",
        options,
        index=None,
        placeholder="choose a row of this page",
        key=f"explain_row_{which}",
    )
    probabilities = (run.summary.get("columns") or {}).get("probabilities") or []
    classes = [name.removeprefix("proba_") for name in probabilities]
    class_ = None
    if len(classes) > 2:
        picked = b.selectbox("Class", [PREDICTED, *classes], key=f"explain_class_{which}")
        class_ = None if picked == PREDICTED else picked
    if chosen is None:
        return
    with ui.guarded():
        [e] = explain.explain_rows(store, run.id, [chosen], which, class_, by=by)
        _show(e, ui.model_label(registry.get_model(store, e.model_id)))


def _show(e: explain.Explanation, model: str) -> None:
    with st.container(border=True):
        subject = f"{e.key}" if e.key is not None else f"row {e.row}"
        st.markdown(f"**Why {subject} was predicted {e.prediction}**")
        st.plotly_chart(charts.explanation_figure(e), key=f"explain_chart_{e.which}")
        scale = e.scale + (f" of class {e.class_}" if e.class_ is not None else "")
        probability = (
            f" (probability {e.probability:.3f})"
            if e.probability is not None and e.scale != "probability"
            else ""
        )
        st.caption(
            f"Base value {e.base_value:.4g} + contributions = output {e.output:.4g}, "
            f"on the {scale} scale{probability}. Explainer: {e.explainer}, "
            f"model {model}."
        )
        if e.note:
            st.info(e.note)


def global_importance(store: Store, run: Run) -> None:
    """Mean |SHAP| per feature for main (and challenger, side by side), or "computing…"."""
    roles = ["main", *(["challenger"] if run.summary.get("challenger") else [])]
    with st.expander("Global explainability"):
        if any(explain.get_importance(store, run.id, which) is None for which in roles):
            _importance_polling(store, run, roles)
        else:
            _importances(store, run, roles)


def _importances(store: Store, run: Run, roles: list[str]) -> bool:
    waiting = False
    for column, which in zip(st.columns(len(roles)), roles, strict=True):
        with column:
            waiting |= _importance(store, run, which)
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


def _importance(store: Store, run: Run, which: str) -> bool:
    """Draw one results file's importance; True while it is still being computed."""
    found: Any = explain.get_importance(store, run.id, which)
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


def importance_views(
    found: explain.Importance, sample: explain.ShapSample | None, key: str, rows_text: str
) -> None:
    """The bars, and for readers who want more a beeswarm of the top features or one
    feature's dependence view, drawn from the stored per-row SHAP values."""
    views = ["Bars"] + (["Beeswarm", "Dependence"] if sample is not None else [])
    view = st.radio(
        "View", views, horizontal=True, key=f"importance_view_{key}", label_visibility="collapsed"
    )
    scale = f"SHAP on the {found.scale} scale"
    if view == "Beeswarm" and sample is not None:
        st.plotly_chart(
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
        st.plotly_chart(
            charts.dependence_figure(sample, feature, f"{found.which}: {feature}", colour_by),
            key=f"dependence_chart_{key}",
        )
        st.caption(_explained_output(sample))
    else:
        st.plotly_chart(charts.importance_figure(found), key=f"importance_chart_{key}")
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
