"""The deployment page's drift panels: the Drift tab, the General tab's banner and headline.

Streamlit only; every number comes from core.drift (stored per-run counts), every figure from
core.charts.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

import streamlit as st

from core import drift, registry, runs, ui
from core.engine.drift_scores import FeatureDrift, Thresholds
from core.entities import Deployment
from core.errors import InvalidInput
from core.store import Store, utcnow
from core.ui import monitoring_charts, tables, traffic

OVER_TIME = 30  # runs in the over-time charts


def run_window(
    store: Store,
    d: Deployment,
    prefix: str,
    *,
    default_last: int = 1,
    max_last: int = drift.MAX_WINDOW,
    dates: bool = True,
) -> dict[str, Any]:
    """The window of runs the user picks (drift and challenger tabs; `prefix` keeps their
    widgets apart): the last N runs, one run, or (with `dates`) a date range in UTC. Returns
    the keyword arguments of drift.window_runs."""
    kinds = ["Last runs", "One run", *(["Date range"] if dates else [])]
    kind = st.radio("Window", kinds, horizontal=True, key=f"{prefix}_window_{d.id}")
    if kind == "Last runs":
        return {
            "last": int(
                st.number_input("Runs", 1, max_last, default_last, key=f"{prefix}_last_{d.id}")
            )
        }
    if kind == "One run":
        listed = ui.cached_read(runs.list_runs, store, d.name, limit=100)
        found = [r for r in listed if r.status == "succeeded"]
        if not found:
            return {"last": 1}  # the report says there are no runs
        run = st.selectbox(
            "Run",
            found,
            key=f"{prefix}_run_{d.id}",
            format_func=lambda r: (
                f"{r.id} · {r.finished_at or r.queued_at:%Y-%m-%d %H:%M} · {r.rows_out} rows"
            ),
        )
        return {"run_id": run.id}
    today = utcnow().date()
    picked = st.date_input(
        "Dates (UTC)", (today - timedelta(days=7), today), key=f"{prefix}_dates_{d.id}"
    )
    days = list(picked) if isinstance(picked, tuple | list) else [picked]
    first, last = days[0], days[-1]  # while picking, the range has one end only
    return {
        "start": datetime.combine(first, time()),
        "end": datetime.combine(last, time()) + timedelta(days=1),
    }


def most_drifted_first(report: drift.DriftReport) -> list[FeatureDrift]:
    """The features by PSI, highest first (unscored ones last): the table's and picker's order."""
    return sorted(report.features, key=lambda f: -(f.psi or -1))


def _table(report: drift.DriftReport) -> None:
    rows = [
        {
            "feature": f.name,
            "kind": f.kind,
            "status": f.status,
            "PSI": f.psi,
            "distance": f.distance,
            "distance kind": f.distance_kind,
            "p-value": f.p_value,
            "test": f.test,
            "rows": f.served_rows,
            "note": f.note,
        }
        for f in most_drifted_first(report)
    ]
    tables.small_table(
        rows,
        formats={"PSI": ".3f", "distance": ".3f", "p-value": ".2g", "rows": ","},
        key=f"drift_table_{report.deployment}",
    )
    st.caption(
        "Most drifted first. The status comes from PSI; the p-value is for information only:"
        " at 100k+ rows it flags negligible shifts."
    )


def _thresholds(store: Store, d: Deployment, current: Thresholds) -> None:
    keys = {"moderate": f"drift_moderate_{d.id}", "drifted": f"drift_drifted_{d.id}"}
    for name, key in keys.items():  # the stored values, also right after a save
        st.session_state[key] = getattr(current, name)

    def save() -> str:  # a callback: the report below already uses the saved thresholds
        saved = drift.set_thresholds(
            store,
            d.name,
            st.session_state[keys["moderate"]],
            st.session_state[keys["drifted"]],
            actor=ui.actor(),
        )
        return (
            f"PSI thresholds saved: moderate from {saved.moderate:g}, "
            f"drifted from {saved.drifted:g}."
        )

    with st.expander("PSI thresholds"), st.form(f"drift_thresholds_{d.id}"):
        left, right = st.columns(2)
        left.number_input("Moderate from", 0.0, None, step=0.01, key=keys["moderate"])
        right.number_input("Drifted from", 0.0, None, step=0.01, key=keys["drifted"])
        why = ui.denied(store, d.project_id, "drift-thresholds")
        ui.say_denied(why)
        st.form_submit_button(
            "Save thresholds", on_click=ui.act, args=(save,), disabled=bool(why), help=why
        )


def _overlay(feature: FeatureDrift, key: str) -> None:
    if feature.status == "n/a":
        st.info(f"{feature.name}: not scored ({feature.note}).")
        return
    ui.chart(monitoring_charts.drift_overlay_figure(feature), key=key)
    if feature.note:
        st.caption(feature.note)


def drift_tab(store: Store, d: Deployment) -> None:
    """Source and window pickers, scores per feature (sortable), overlays and PSI per run or
    per hour/day of calls, input quality of calls."""
    source = traffic.pick_source(store, d, "drift")
    if source != "runs":
        _traffic_drift(store, d, source)
        return
    listed = ui.cached_read(runs.list_runs, store, d.name, limit=200)
    if not any(r.status == "succeeded" for r in listed):
        st.info(
            "Drift compares the data this deployment scored with the training data: it "
            "appears once a run has succeeded (Runs section, Run now), or for API and form "
            "calls (Traffic from, above)."
        )
        return
    window = run_window(store, d, "drift")
    try:
        report = ui.cached_read(drift.drift_report, store, d.name, **window)
    except InvalidInput as exc:
        ui.show_error(exc)
        return
    cols = st.columns(4)
    cols[0].metric("Drifted features", f"{len(report.drifted)} of {len(report.scored)}")
    cols[1].metric("Rows", f"{report.rows:,}")
    cols[2].metric("Runs", len(report.run_ids))
    cols[3].metric("Prediction", report.prediction.status if report.prediction else "n/a")
    for note in report.notes:
        st.caption(note)
    _thresholds(store, d, report.thresholds)
    _table(report)
    _feature(store, d, report, over_time(store, d))  # the deployment's thresholds, as the report's
    if report.prediction is not None:
        st.subheader("Prediction")
        _overlay(report.prediction, key=f"drift_prediction_{d.id}")


def _traffic_drift(store: Store, d: Deployment, source: str) -> None:
    """Drift of the calls (or calls and runs) in the Monitoring window: one point per bucket."""
    window = traffic.window(d, source)
    found = traffic.drift_of(store, d, window)
    if isinstance(found, InvalidInput):
        st.info(f"{found.message} {ui.hint_text(found)}".strip())
        return
    report = found.report
    cols = st.columns(4)
    cols[0].metric("Drifted features", f"{len(report.drifted)} of {len(report.scored)}")
    cols[1].metric("Rows", f"{report.rows:,}")
    cols[2].metric("Calls and runs", f"{found.requests:,} + {len(report.run_ids)}")
    cols[3].metric("Prediction", report.prediction.status if report.prediction else "n/a")
    st.caption(
        f"Against the training profile of the current main model, {window.bucket} by "
        f"{window.bucket} ({len(found.series.shares)} with traffic)."
    )
    for note in report.notes:
        st.caption(note)
    _thresholds(store, d, report.thresholds)
    _table(report)
    _feature(store, d, report, found.series, window.bucket)
    if report.prediction is not None:
        st.subheader("Prediction")
        _overlay(report.prediction, key=f"drift_prediction_{d.id}")
        if report.prediction.status != "n/a":
            ui.chart(
                monitoring_charts.drift_time_figure(
                    found.series, report.prediction.name, window.bucket
                ),
                key=f"drift_prediction_time_{d.id}",
            )
    st.subheader("Input quality")
    shares = ("missing", "out of training range", "unseen category")
    tables.small_table(
        [
            {
                "feature": q.name,
                "rows": q.rows,
                "missing": q.missing / q.rows if q.rows else 0.0,
                "out of training range": q.out_of_range / q.rows if q.rows else 0.0,
                "unseen category": q.unseen / q.rows if q.rows else 0.0,
            }
            for q in found.quality
        ],
        formats={"rows": ",", **dict.fromkeys(shares, "percent")},
        key=f"drift_quality_{d.id}",
    )
    st.caption("Infinite values cannot be logged (JSON has none): in calls they count as missing.")


CHIPS_UP_TO = 12  # features shown as one-click chips; more get a select box that filters


def pick_feature(names: list[str], key: str) -> str:
    """The feature to chart, the first (most drifted) at first: one click on a chip when there
    are few (a select box took a click, typing and Enter), a select box that filters as one
    types when there are many. Clicking the chosen chip again keeps it."""
    if len(names) > CHIPS_UP_TO:
        return str(st.selectbox("Feature", names, key=key))
    kept = f"{key}_kept"
    chosen = st.pills("Feature", names, default=names[0], key=key)
    if chosen not in names:  # clicked again (no chip left chosen), or another run's features
        before = st.session_state.get(kept)
        chosen = before if before in names else names[0]
    st.session_state[kept] = chosen
    return str(chosen)


@st.fragment
def _feature(
    store: Store,
    d: Deployment,
    report: drift.DriftReport,
    series: drift.DriftSeries | None,
    unit: str = "run",
) -> None:
    """The feature picker and its charts: picking a feature reruns only this fragment, on the
    report of the page's run."""
    ui.recheck_access(store, d.project_id)
    names = [f.name for f in most_drifted_first(report)]  # opens on the most drifted one
    chosen = pick_feature(names, key=f"drift_feature_{d.id}")
    feature = next(f for f in report.features if f.name == chosen)
    _overlay(feature, key=f"drift_overlay_{d.id}")
    if series is not None and feature.status != "n/a":
        ui.chart(
            monitoring_charts.drift_time_figure(series, chosen, unit), key=f"drift_time_{d.id}"
        )


def runs_token(store: Store, d: Deployment) -> tuple[str, ...]:
    """What drift results depend on: the deployment's settings (thresholds) and its runs'
    states. A cached result keyed by it is dropped by any run or settings change."""
    found = ui.cached_read(runs.list_runs, store, d.name, limit=drift.MAX_WINDOW)
    return (str(d.updated_at), "|".join(f"{r.id}:{r.status}:{r.purged_at}" for r in found))


@st.cache_data(max_entries=32, show_spinner=False)
def _over_time(home: str, name: str, last: int, token: tuple[str, ...]) -> drift.DriftSeries | None:
    """drift.drift_over_time (None without a succeeded run), kept while `token` holds."""
    try:
        return drift.drift_over_time(Store.open(home), name, last)
    except InvalidInput:
        return None


def over_time(store: Store, d: Deployment) -> drift.DriftSeries | None:
    """The share of drifted features over the last runs; cached per runs and settings."""
    return _over_time(str(store.workspace.home), d.name, OVER_TIME, runs_token(store, d))


def drift_banner(store: Store, d: Deployment, series: drift.DriftSeries | None) -> None:
    """A warning when the latest run shows drifted features, linking to retraining."""
    alert = drift.alert_of(series) if series is not None else None
    if alert is None:
        return
    st.warning(
        f"**Model may be obsolete: {alert.n_drifted} of {alert.n_features} features "
        f"drifted since {alert.since:%Y-%m-%d %H:%M} UTC** "
        f"({', '.join(alert.drifted)}).",
        icon=":material/trending_up:",
    )
    experiment = registry.get_experiment(store, d.experiment_id)
    st.page_link(
        "pages/train.py",
        label="Retrain in the training playground",
        query_params={"dataset": experiment.dataset_id, "target": experiment.target},
        icon=":material/model_training:",
    )


def drift_headline(d: Deployment, series: drift.DriftSeries | None) -> None:
    """The share of drifted features per run over the last runs."""
    if series is None:
        st.caption(
            "Drift appears here once the deployment has a succeeded run (Runs section, Run now)."
        )
        return
    ui.chart(monitoring_charts.drift_share_figure(series), key=f"drift_headline_{d.id}")
