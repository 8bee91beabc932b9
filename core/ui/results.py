"""The results table: column toggles, filters, sorting and server-side pages (Streamlit)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from core import registry, results, runs, ui
from core.engine.model_input import describe_problems
from core.entities import Run
from core.store import Store

PAGE_SIZES = (25, 50, 100, 500)
PREDICTION_COLUMNS = ("prediction", "confidence", "input_quality")


def _column_picker(
    container: DeltaGenerator, label: str, options: list[str], key: str
) -> list[str]:
    """A multiselect whose choice sticks: its state is set once (from the choice this session
    last made for the deployment, still present in this run), never from a changing default."""
    saved = f"{key}_saved"
    if key not in st.session_state:
        chosen = st.session_state.get(saved)
        st.session_state[key] = [c for c in chosen if c in options] if chosen else options
    else:
        st.session_state[key] = [c for c in st.session_state[key] if c in options]

    def remember() -> None:
        st.session_state[saved] = st.session_state[key]

    return container.multiselect(label, options, key=key, on_change=remember)


def results_table(store: Store, run: Run, which: str) -> dict[str, Any] | None:
    """One page of a run's results, as the user filtered, sorted and trimmed it; returns the
    row the user selected in it (to explain it), or None."""
    columns = ui.cached_read(results.columns, store, run.id, which)
    predicted = [
        c for c in columns if c in PREDICTION_COLUMNS or c.startswith(("proba_", "challenger_"))
    ]
    model = registry.get_model(store, run.summary[which]["model_id"])
    key_column = model.schema.key_column if model.schema.key_column in columns else None
    inputs = [c for c in columns if c not in predicted and c not in ("_row", key_column)]
    memory = f"results_columns_{run.deployment_name}"
    left, right = st.columns(2)
    shown_predicted = _column_picker(left, "Prediction columns", predicted, f"{memory}_p")
    shown_inputs = _column_picker(right, "Input columns", inputs, f"{memory}_i")

    classes = list((run.summary[which].get("class_counts") or {}).keys())
    a, b, c = st.columns(3)
    wanted = a.multiselect("Prediction is", classes, key="results_classes") if classes else []
    spread = is_spread(run.summary, which)
    confidence_filter = (
        _spread_filter(b, store, run, which)
        if spread
        else {
            "confidence": b.slider("Confidence at least", 0.0, 1.0, 0.0, 0.05, key="results_conf")
            or None
        }
    )
    min_quality = c.slider("Input quality at least", 0.0, 1.0, 0.0, 0.05, key="results_qual")
    a, b, c, d = st.columns([2, 1, 1, 1])
    sort_by = a.selectbox(
        "Sort by",
        [None, *columns],
        key="results_sort",
        format_func=lambda col: "file order" if col is None else col,
    )
    descending = b.toggle("Descending", key="results_desc")
    size = c.selectbox("Rows per page", PAGE_SIZES, index=1, key="results_size")
    where = {
        "prediction": wanted or None,
        **confidence_filter,
        "input_quality": min_quality or None,
    }
    number = int(d.number_input("Page", min_value=1, value=1, key="results_page"))
    asked = number
    # Columns the user hid are not even read, so the grid's own menu cannot re-show them.
    # Without a key column, the row number identifies a row (to explain it, for one).
    keep = [
        col for col in ([key_column] if key_column else ["_row"]) + shown_predicted + shown_inputs
    ]
    if not key_column and not shown_predicted and not shown_inputs:
        st.info("Choose at least one column to show.")
        return None

    def read(number: int) -> tuple[pd.DataFrame, int]:
        return ui.cached_read(
            results.page,
            store,
            run.id,
            which=which,
            offset=(number - 1) * size,
            limit=size,
            sort_by=sort_by,
            descending=descending,
            where=where,
            columns=keep,
        )

    frame, total = read(number)
    pages = max(1, math.ceil(total / size))
    if number > pages:  # a narrower filter or bigger pages: show the last page instead
        number = pages
        frame, total = read(number)
    if total == 0:
        st.info(
            "No row matches these filters: widen them (Prediction is, the confidence or "
            "spread slider, Input quality at least)."
        )
    st.caption(
        f"{total:,} rows match · page {number} of {pages}"
        + (f" (page {asked} asked: there are only {pages})" if asked > pages else "")
    )
    event = st.dataframe(
        frame,
        hide_index=True,
        key=f"results_rows_{which}",
        on_select="rerun",
        selection_mode="single-row",
        column_config={"confidence": st.column_config.NumberColumn(SPREAD_LABEL, help=SPREAD_HELP)}
        if spread
        else None,
    )
    chosen = [i for i in (event.selection.rows if event else []) if i < len(frame)]
    if not chosen:
        return None
    # Column by column, each in its own type: a row of all-number columns read as one Series
    # turned its row number 0 into 0.0, which then named no row.
    row = {c: frame[c].iloc[chosen[0]] for c in frame.columns}
    return {c: v.item() if hasattr(v, "item") else v for c, v in row.items()}


SPREAD_LABEL = "spread of trees (±)"
SPREAD_HELP = (
    "The standard deviation of the forest's trees' predictions, in the target's "
    "unit: how far the trees disagree about this row. Larger means less certain."
)


def is_spread(summary: dict[str, Any], which: str) -> bool:
    """Whether a run's `confidence` column is a regression forest's spread (target units),
    not a probability."""
    kind = (summary.get(which) or {}).get("confidence_kind") or ""
    return summary.get("task") == "regression" and kind.startswith("spread")


def _spread_filter(container: Any, store: Store, run: Run, which: str) -> dict[str, Any]:
    """A 'spread at most' slider on the spread's own scale (0 to the run's largest)."""
    found = results.value_range(store, run.id, "confidence", which)
    if found is None or found[1] <= 0:
        container.caption("No spread to filter on: the trees agree on every row.")
        return {}
    top = found[1]
    limit = container.slider(
        "Spread of trees at most (±, target units)",
        0.0,
        top,
        top,
        key=f"results_spread_{which}",
        help=SPREAD_HELP,
    )
    return {"spread_at_most": limit if limit < top else None}


def purge(store: Store, run_id: str) -> str:
    """Purge a run's result files (from a button's callback); says what is left."""
    purged = results.purge(store, run_id, actor=ui.actor())
    return (
        f"Purged the result files of run {purged.id}. Its summary and metrics stay on this "
        "page; the rows, downloads and explanations are gone."
    )


@st.fragment(run_every=2)
def run_progress(store: Store, run_id: str) -> None:
    """A queued or running run's progress, polled; the whole page redraws once it ends."""
    run = ui.cached_read(runs.get_run, store, run_id)
    if run.is_finished:
        st.rerun()
    st.progress(run.progress, text=run.message or run.status)
    st.caption("This page shows the results by itself when the run ends.")


def box_metrics(summary: dict[str, Any], which: str) -> None:
    """Rows, mean confidence, input quality, agreement and the captions of one model's
    results (`which`: main or challenger)."""
    part = summary.get(which) or {}
    boxes = st.columns(4)
    boxes[0].metric("Rows", f"{summary['rows']:,}")
    confidence = part.get("mean_confidence")
    if is_spread(summary, which):
        boxes[1].metric(
            f"Mean spread of trees ({which})",
            "n/a" if confidence is None else f"± {confidence:,.4g}",
            help=SPREAD_HELP,
        )
    else:
        boxes[1].metric(
            f"Mean confidence ({which})", "n/a" if confidence is None else f"{confidence:.3f}"
        )
    boxes[2].metric("Mean input quality", f"{summary['input_quality']['mean']:.3f}")
    agreement = (summary.get("challenger") or {}).get("agreement_rate")
    boxes[3].metric("Challenger agreement", "n/a" if agreement is None else f"{agreement:.1%}")
    if part.get("class_balance"):
        st.caption(
            f"Class balance ({which}): "
            + ", ".join(f"{k} {v:.1%}" for k, v in part["class_balance"].items())
        )
    if part.get("prediction_summary"):
        st.caption(
            f"Predictions ({which}): "
            + ", ".join(
                f"{k} {v:.4g}" for k, v in part["prediction_summary"].items() if v is not None
            )
        )
    quality = summary["input_quality"]
    st.caption(f"Input problems: {describe_problems(quality)}.")
    if part.get("metrics"):
        st.caption(
            f"Labelled metrics ({which}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in part["metrics"].items() if isinstance(v, float))
        )
