"""The results page's explanation panels: one row's SHAP bars, and the run's global importance."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import charts, explain, ui
from core.entities import Run
from core.store import Store

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
    chosen = a.selectbox(f"Explain a row (by {'its ' + key_column if by == 'key' else 'row'})",
                         options, index=None, placeholder="choose a row of this page",
                         key=f"explain_row_{which}")
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
        _show(e)


def _show(e: explain.Explanation) -> None:
    with st.container(border=True):
        subject = f"{e.key}" if e.key is not None else f"row {e.row}"
        st.markdown(f"**Why {subject} was predicted {e.prediction}**")
        st.plotly_chart(charts.explanation_figure(e), key=f"explain_chart_{e.which}")
        scale = e.scale + (f" of class {e.class_}" if e.class_ is not None else "")
        probability = (f" (probability {e.probability:.3f})" if e.probability is not None
                       and e.scale != "probability" else "")
        st.caption(f"Base value {e.base_value:.4g} + contributions = output {e.output:.4g}, "
                   f"on the {scale} scale{probability}. Explainer: {e.explainer}, "
                   f"model {e.algorithm} ({e.model_id}).")
        if e.note:
            st.info(e.note)


def global_importance(store: Store, run: Run) -> None:
    """Mean |SHAP| per feature for main (and challenger, side by side), or "computing…"."""
    roles = ["main", *(["challenger"] if run.summary.get("challenger") else [])]
    with st.expander("Global explainability"):
        waiting = False
        for column, which in zip(st.columns(len(roles)), roles, strict=True):
            with column:
                waiting |= _importance(store, run, which)
        if waiting:
            st.button("Refresh", key="importance_refresh")


def _importance(store: Store, run: Run, which: str) -> bool:
    """Draw one results file's importance; True while it is still being computed."""
    found: Any = explain.get_importance(store, run.id, which)
    if found is None:
        st.info(f"{which}: computing…")
        return True
    if found.error:
        st.warning(f"{which}: {found.error}")
        return False
    st.plotly_chart(charts.importance_figure(found), key=f"importance_chart_{which}")
    st.caption(f"{found.explainer} on {found.rows:,} sampled rows (stratified by predicted "
               f"class), {found.seconds:.2f} s." + (f" {found.note}" if found.note else ""))
    return False
