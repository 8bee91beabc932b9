"""The deployment page's Challenger and Predictions tabs.

Streamlit only; every number comes from core.challenger and core.ground_truth (DuckDB over the
runs' Parquet files), downloads are built only when clicked (core.ui.download_results).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import challenger, drift, ground_truth, pipeline, prediction_log, runs, ui
from core.entities import Deployment
from core.errors import InvalidInput, ModelDeckError
from core.store import Store
from core.ui import drift as ui_drift
from core.ui import monitoring_charts, tables, traffic
from core.workspace import save_upload

PREDICTION_RUNS = 200  # runs listed on the Predictions tab
TOP_FORMATS = {"confidence": ".3f", "challenger_confidence": ".3f"}
WORDS = {"request_id": "request id", "_row": "row"}  # top rows' columns, as a reader says them


# ---------------------------------------------------------------------------- figures
def _token(store: Store, d: Deployment) -> tuple[str, ...]:
    """What the cached results depend on: the runs (and their states), the newest labels."""
    found = ui.cached_read(runs.list_runs, store, d.name, limit=drift.MAX_WINDOW)
    labels = ui.cached_read(ground_truth.list_labels, store, d.name)
    state = "|".join(f"{r.id}:{r.status}:{r.purged_at}" for r in found)
    return (d.current_version_id or "", state, *(s.id for s in labels[:1]))


@st.cache_data(max_entries=16, show_spinner="Comparing main and challenger…")
def _compare(
    home: str, name: str, window: tuple[tuple[str, Any], ...], token: tuple[str, ...]
) -> challenger.Comparison:
    """core.challenger.compare, kept while no run or label set changes (`token`)."""
    return challenger.compare(Store.open(home), name, **dict(window))


@st.cache_data(max_entries=16, show_spinner="Computing live metrics…")
def _live_metrics(
    home: str, name: str, window: tuple[tuple[str, Any], ...], token: tuple[str, ...]
) -> ground_truth.LiveMetrics | InvalidInput:
    """core.ground_truth.live_metrics, kept while no run or label set changes (`token`); its
    InvalidInput (no labels yet: a state) is kept too, instead of being computed each rerun."""
    try:
        return ground_truth.live_metrics(Store.open(home), name, **dict(window))
    except InvalidInput as exc:
        return exc


# ---------------------------------------------------------------------------- challenger
def _comparison(found: challenger.Comparison, d: Deployment, unit: str = "run") -> None:
    """A comparison over runs, or (`unit` hour or day) over the calls of a window."""
    cols = st.columns(3)
    cols[0].metric("Agreement", f"{found.agreement_rate:.1%}")
    cols[1].metric("Rows", f"{found.rows:,}")
    cols[2].metric("Runs" if unit == "run" else f"{unit.capitalize()}s with calls", len(found.runs))
    key = d.id if unit == "run" else f"{d.id}_calls"
    if found.tolerance is not None:
        st.caption(f"Regression: predictions within {found.tolerance:.4g} of each other agree.")
    for note in found.notes:
        st.caption(note)
    ui.chart(monitoring_charts.agreement_figure(found, unit), key=f"ch_agreement_{key}")
    ui.chart(monitoring_charts.distribution_figure(found), key=f"ch_distribution_{key}")
    if found.top:
        _top_rows(found, key, unit)
    if found.features:
        st.subheader("Features that differ most where the models disagree")
        st.caption(
            "PSI and Jensen-Shannon distance between the feature's distribution in "
            "agreeing and in disagreeing rows, on the training bins."
        )
        tables.small_table(
            [
                {"feature": f.name, "kind": f.kind, "PSI": f.psi, "JS distance": f.distance}
                for f in found.features
            ],
            formats={"PSI": ".3f", "JS distance": ".3f"},
            key=f"ch_features_{key}",
        )


def _top_rows(found: challenger.Comparison, key: str, unit: str) -> None:
    """The rows where the models disagree, the main model's surest first. Of calls: a table
    of request ids. Of runs: each row opens its run's results, in an expander whose table
    (a dataframe: rows select) is built once opened, so the section draws without the
    grid's code (bench/ui_bench.py's floor: a table adds about 0.3 s to a cold load)."""
    if unit != "run":
        st.subheader("Top disagreeing rows")
        st.caption(
            "By request id and row (0 = first) in the request; the main model's surest first."
        )
        rows = [{WORDS.get(k, k): v for k, v in r.items()} for r in found.top]
        tables.small_table(rows, formats=TOP_FORMATS, key=f"ch_top_{key}")
        return
    box = st.expander(
        f"Top disagreeing rows ({len(found.top)}), the main model's surest first",
        key=f"ch_top_open_{key}",
        on_change="rerun",
    )
    if box.open:
        with box:
            rows = [
                {
                    "run": f"results?run={r['run_id']}",
                    **{WORDS.get(k, k): v for k, v in r.items() if k != "run_id"},
                }
                for r in found.top
            ]
            ui.link_table(
                rows, "run", key=f"ch_top_{key}", column_config=tables.number_columns(TOP_FORMATS)
            )


def _labels_form(store: Store, d: Deployment) -> None:
    """Upload a label file (or give SQL), pick the key and label columns, add."""
    why = ui.denied(store, d.project_id, "add-labels")
    if why:
        ui.say_denied(why)
        return
    with st.expander("Add ground truth"):
        kind = st.radio(
            "Labels from",
            ["file", "sql"],
            horizontal=True,
            key=f"gt_kind_{d.id}",
            format_func={"file": "Uploaded file", "sql": "DuckDB SQL over files"}.get,
        )
        source: dict[str, Any] | None = None
        if kind == "sql":
            sql = st.text_area(
                "Query",
                key=f"gt_sql_{d.id}",
                help="A SELECT over workspace "
                "files, e.g. SELECT id, outcome FROM read_csv('truth/*.csv', "
                "all_varchar = true)",
            )
            source = {"kind": "sql", "sql": sql} if sql.strip() else None
        else:
            upload = st.file_uploader(
                "CSV or Parquet file of true labels",
                type=["csv", "tsv", "parquet"],
                key=f"gt_file_{d.id}",
            )
            if upload is not None:
                saved = f"gt_saved_{d.id}_{upload.file_id}"
                if saved not in st.session_state:  # save once, not on every rerun
                    st.session_state[saved] = str(
                        save_upload(store.workspace, upload.name, upload.getvalue())
                    )
                source = {"kind": "upload", "path": st.session_state[saved]}
        if source is None:
            return
        preview = pipeline.preview(store.workspace, {"source": source}, None, rows=5)
        stage = preview.stages[0]
        if stage.error:
            st.error(stage.error)
            return
        columns = list(stage.frame.columns)
        keyed_by = st.radio(
            "The labels name",
            ["key", "request"],
            format_func={
                "key": "predictions of runs, by their prediction key",
                "request": "API and form calls, by request id",
            }.__getitem__,
            horizontal=True,
            key=f"gt_keyed_{d.id}",
        )
        left, middle, right = st.columns(3)
        key = left.selectbox(
            "Key column" if keyed_by == "key" else "Request id column",
            columns,
            key=f"gt_key_{d.id}",
        )
        label = middle.selectbox(
            "Label column", columns, index=min(1, len(columns) - 1), key=f"gt_label_{d.id}"
        )
        row = None
        if keyed_by == "request":
            row = right.selectbox(
                "Row in its request (0 = first)",
                [None, *columns],
                format_func=lambda c: "none: one-row requests" if c is None else c,
                key=f"gt_row_{d.id}",
            )
        if st.button("Add labels", key=f"gt_add_{d.id}"):
            with ui.guarded():
                added = ground_truth.add_labels(
                    store, d.name, source, key, label, actor=ui.actor(), keyed_by=keyed_by, row=row
                )
                c = added.counts
                st.success(
                    f"Added {added.rows:,} labels: {c['matched_labels']:,} match a "
                    f"prediction, {c['unmatched_labels']:,} match none; "
                    f"{c['predictions_without_label']:,} of {c['predictions']:,} "
                    f"predictions have no label; {c['without_label']:,} rows without "
                    "a label left out."
                )


def _live(store: Store, d: Deployment, window: dict[str, Any]) -> None:
    st.subheader("Live metrics")
    _labels_form(store, d)
    live = _live_metrics(str(store.workspace.home), d.name, tuple(window.items()), _token(store, d))
    if isinstance(live, InvalidInput):
        st.info(f"{live.message} {ui.hint_text(live)}")
        return
    m = live.matching
    cols = st.columns(3)
    cols[0].metric(
        "Labelled predictions",
        f"{m.predictions_with_label:,}",
        help=f"of {m.predictions:,} predictions in the window",
    )
    cols[1].metric("Predictions without label", f"{m.predictions_without_label:,}")
    cols[2].metric(
        "Labels matching no prediction", f"{m.unmatched_labels:,}", help=f"of {m.labels:,} labels"
    )
    overall = live.overall
    metric = live.metric
    cols = st.columns(3)
    cols[0].metric(f"Main {metric}", _fmt((overall.main or {}).get(metric)))
    cols[1].metric(f"Challenger {metric}", _fmt((overall.challenger or {}).get(metric)))
    ci = f"95% CI [{overall.ci[0]:+.4f}, {overall.ci[1]:+.4f}]" if overall.ci else None
    cols[2].metric(
        "Difference (challenger - main)",
        _fmt((overall.difference or {}).get(metric), signed=True),
        help=ci,
    )
    if ci:
        st.caption(f"{ci}. Method: {live.method}.")
    for note in live.notes:
        st.caption(note)
    ui.chart(monitoring_charts.live_figure(live), key=f"ch_live_{d.id}")
    ui.link_table(
        [
            {
                "run": f"results?run={r.run_id}",
                "labelled rows": r.rows,
                f"main {metric}": (r.main or {}).get(metric),
                f"challenger {metric}": (r.challenger or {}).get(metric),
                "difference": (r.difference or {}).get(metric),
                "CI low": r.ci[0] if r.ci else None,
                "CI high": r.ci[1] if r.ci else None,
            }
            for r in live.runs
        ],
        "run",
        key=f"ch_live_table_{d.id}",
    )


def _fmt(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")


def _swap(store: Store, d: Deployment) -> None:
    st.subheader("Swap")
    if d.current is None or not d.current.challenger_model_id:
        st.caption(f"No challenger to swap in. {challenger.ADD_CHALLENGER_HINT}")
        return
    names = ui.model_names(store, d.experiment_id)
    shadow, main = d.current.challenger_model_id, d.current.main_model_id
    st.write(
        f"Make {ui.named(names, shadow, strong=True)} the main model and "
        f"{ui.named(names, main, strong=True)} the challenger (a new version; roll back to "
        "undo)."
    )
    why = ui.denied(store, d.project_id, "swap")
    ui.say_denied(why)
    confirm = st.checkbox("I want to swap the models", key=f"ch_swap_ok_{d.id}", disabled=bool(why))

    def swap() -> str:  # a callback: the page renders the swapped pins in the same run
        swapped = challenger.swap(store, d.name, actor=ui.actor())
        st.session_state[f"ch_swap_ok_{d.id}"] = False  # a second swap asks again
        number = swapped.current.number if swapped.current else "?"
        return (
            f"Swapped: version {number} is current, with main {ui.named(names, shadow)} "
            f"and challenger {ui.named(names, main)}. Roll back in Versions to undo."
        )

    st.button(
        "Swap main and challenger",
        key=f"ch_swap_{d.id}",
        disabled=not confirm or bool(why),
        help=why,
        on_click=ui.act,
        args=(swap,),
    )


def challenger_tab(store: Store, d: Deployment) -> None:
    """Champion vs challenger over a window of runs, of API and form calls, or both; ground
    truth and live metrics; swap."""
    source = traffic.pick_source(store, d, "ch")
    window: dict[str, Any] = {}
    if source != "calls":
        if source == "both":
            st.subheader("Runs")
        window = ui_drift.run_window(
            store, d, "ch", default_last=challenger.DEFAULT_LAST, max_last=500, dates=False
        )
        _runs_comparison(store, d, window)
    if source != "runs":
        if source == "both":
            st.subheader("API and form calls")
        calls = traffic.window(d, "calls")
        found = traffic.comparison_of(store, d, calls)
        if isinstance(found, InvalidInput):
            st.info(f"{found.message} {ui.hint_text(found)}".strip())
        else:
            _comparison(found, d, calls.bucket)
        window = {"start": calls.start, "end": calls.end}  # live metrics: runs and calls in it
    _live(store, d, window)
    _swap(store, d)


def _runs_comparison(store: Store, d: Deployment, window: dict[str, Any]) -> None:
    try:
        found = _compare(str(store.workspace.home), d.name, tuple(window.items()), _token(store, d))
    except InvalidInput as exc:  # an empty window, or no challenger: a state, not a failure
        st.info(f"{exc.message} {ui.hint_text(exc)}".strip())
    except ModelDeckError as exc:
        ui.show_error(exc)
    else:
        _comparison(found, d)


# ---------------------------------------------------------------------------- predictions
def _retention() -> None:
    """How long the log keeps calls ($MODELDECK_LOG_RETENTION_DAYS, read by the worker)."""
    env = prediction_log.RETENTION_ENV
    try:
        days = prediction_log.retention_days()
    except InvalidInput as exc:
        ui.show_error(exc)
        return
    if days is None:
        st.caption(f"The log keeps every day of calls; set `{env}` to remove older days.")
    else:
        st.caption(
            f"The log keeps the last {days:,} day{'s' if days != 1 else ''} of calls (`{env}`);"
            " the worker removes older days, with their drift counts."
        )


def _logged_days(store: Store, d: Deployment) -> None:
    """The API's and the prediction form's calls by day, each day downloadable as CSV."""
    st.subheader("API and form calls by day")
    _retention()
    found = prediction_log.days(store.workspace, d.id)
    if not found:
        st.caption(
            "No call yet. Every call to the API or the prediction form is logged here by day"
            " (General shows how to call it)."
        )
        return
    st.dataframe(
        [
            {
                "day (UTC)": f"{r['day']:%Y-%m-%d}",
                "calls": r["requests"],
                "rows": r["rows"],
                "errors": r["errors"],
            }
            for r in found
        ],
        hide_index=True,
    )
    day = st.selectbox(
        "Download the calls of",
        [r["day"] for r in found],
        format_func=lambda x: f"{x:%Y-%m-%d}",
        key=f"log_day_{d.id}",
    )
    st.download_button(
        "Download CSV",
        key=f"log_csv_{d.id}",
        mime="text/csv",
        file_name=f"{d.name}-calls-{day:%Y-%m-%d}.csv",
        on_click="ignore",
        data=lambda: prediction_log.day_csv(store.workspace, d.id, day),
        help="One line per call and per challenger answer, inputs and outputs as JSON.",
    )


def predictions_tab(store: Store, d: Deployment) -> None:
    """Every run of the deployment with rows, status and its results files; the files of the
    chosen run download as CSV or Parquet (built only when clicked)."""
    _logged_days(store, d)
    st.subheader("Runs")
    found = ui.cached_read(runs.list_runs, store, d.name, limit=PREDICTION_RUNS)
    if not found:
        st.info("No runs yet: their predictions are listed here once a run has scored data.")
        ui.section_link(d, "runs", "Run it now in the Runs section")
        return
    files = {r.id: challenger.result_files(store, r) for r in found}

    def size(path: Any) -> str:
        return f"{path.stat().st_size / 1e6:.2f} MB" if path is not None else ""

    ui.link_table(
        [
            {
                "run": f"results?run={r.id}",
                "status": r.status,
                "rows": r.rows_out,
                "finished": r.finished_at,
                "trigger": r.trigger,
                "main results": size(files[r.id]["main"]),
                "challenger results": size(files[r.id]["challenger"]),
                "note": "purged" if r.purged_at else (r.error or ""),
            }
            for r in found
        ],
        "run",
        key=f"pred_table_{d.id}",
    )
    ready = [r for r in found if files[r.id]["main"] is not None]
    if not ready:
        st.caption(
            "No run has results to download: failed runs keep none, and purged runs lost "
            "theirs. Run it again from the Runs section."
        )
        return
    run = st.selectbox(
        "Download the results of",
        ready,
        key=f"pred_run_{d.id}",
        format_func=lambda r: f"{r.id} · {r.rows_out or 0:,} rows",
    )
    cols = st.columns(2)
    for col, which in zip(cols, ("main", "challenger"), strict=True):
        with col:
            if files[run.id][which] is None:
                st.caption(f"No {which} results (the run had no challenger).")
                continue
            st.caption(f"{which.capitalize()} model")
            ui.download_results(run.id, which, key=f"pred_{run.id}_{which}")
