"""A deployment's Monitoring and Usage sections: live traffic from the prediction log and runs
over one window, main and challenger predictions, and the processes' CPU and memory."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import streamlit as st

from core import monitoring, ui, usage
from core.entities import Deployment
from core.store import Store, utcnow
from core.ui import monitoring_charts

WINDOWS = {  # label -> (length, bucket)
    "last 24 hours": (timedelta(hours=24), "hour"),
    "last 7 days": (timedelta(days=7), "hour"),
    "last 30 days": (timedelta(days=30), "day"),
}
SOURCES = {"all": "everything", "api": "API calls", "form": "the prediction form", "run": "runs"}


def window_select(d: Deployment, source: str, where: Any = st) -> monitoring.Window:
    """The Window control over `source`: one choice per deployment, kept while the session
    lasts and shared by the sections that read the log (Monitoring, Usage, Drift,
    Challenger). It ends with the current hour."""
    label = where.selectbox("Window", list(WINDOWS), key=f"window_{d.id}")
    length, bucket = WINDOWS[label]
    end = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return monitoring.Window(end - length, end, bucket, source)


def _window(d: Deployment, with_source: bool) -> monitoring.Window:
    """The one window control of a section (kept per deployment while the session lasts)."""
    cols = st.columns(2)
    source = "all"
    if with_source:
        source = cols[1].selectbox(
            "Traffic from", list(SOURCES), format_func=SOURCES.__getitem__, key=f"source_{d.id}"
        )
    return window_select(d, source, cols[0])


def monitoring_section(store: Store, d: Deployment) -> None:
    """Requests and rows by source over time, and the predictions of main and challenger."""
    window = _window(d, with_source=True)
    found = ui.cached_log_read(monitoring.traffic, store, d.name, window)
    if not found:
        st.info(
            "No traffic in this window. Call the API or open the prediction form (General"
            " shows both), or run the pipeline (Runs): each call and run shows here."
        )
        return
    requests = sum(r["requests"] for r in found)
    rows = sum(r["rows"] for r in found)
    cols = st.columns(3)
    cols[0].metric("Requests and runs", f"{requests:,}")
    cols[1].metric("Rows predicted", f"{rows:,}")
    cols[2].metric(
        "Sources", ", ".join(sorted({monitoring_charts.SOURCE_WORDS[r["source"]] for r in found}))
    )
    ui.chart(monitoring_charts.traffic_figure(found, window, "requests"), key=f"req_{d.id}")
    ui.chart(monitoring_charts.traffic_figure(found, window, "rows"), key=f"rows_{d.id}")
    shares = ui.cached_log_read(monitoring.distributions, store, d.name, window)
    if not shares.main and not shares.challenger:
        st.caption("No predictions to compare in this window.")
        return
    ui.chart(monitoring_charts.prediction_shares_figure(shares), key=f"shares_{d.id}")
    if not any(shares.challenger):
        st.caption(
            "No challenger predictions in this window: set a challenger on Versions to see "
            "its answers beside the main model's."
        )
    st.caption(
        "The same window, feature by feature and model against model (live metrics once true"
        " labels arrive):"
    )
    ui.section_link(d, "drift", "Input and prediction drift of this traffic (Drift)")
    ui.section_link(d, "challenger", "Main vs challenger on these calls (Challenger)")


def usage_section(store: Store, d: Deployment) -> None:
    """This deployment's serving figures, and the API and worker processes' CPU and memory."""
    window = _window(d, with_source=False)
    mine = ui.cached_log_read(usage.deployment_usage, store, d.id, window.start, window.end)
    cols = st.columns(5)
    cols[0].metric("Requests answered", f"{int(mine.get('requests') or 0):,}")
    cols[1].metric("Rows predicted", f"{int(mine.get('rows') or 0):,}")
    cols[2].metric("CPU in predict", f"{float(mine.get('cpu_seconds') or 0):.2f} s")
    cols[3].metric("Latency p50", _ms(mine.get("p50_ms")))
    cols[4].metric("Latency p99", _ms(mine.get("p99_ms")))
    memory = mine.get("model_bytes") or {}
    if memory:
        st.caption(
            "Models in memory (about their artifact's size): "
            + ", ".join(f"{role} {_size(size)}" for role, size in memory.items())
        )
    samples = usage.series(store.workspace, start=window.start, end=window.end).to_pylist()
    if not samples:
        st.info(
            "No usage samples in this window: the API and the worker record their CPU and"
            " memory every few seconds while they run. Start them with `modeldeck up`."
        )
        return
    for row in samples:
        row["rss_mb"] = row["rss_bytes"] / 1e6
    ui.chart(
        monitoring_charts.usage_figure(
            samples, "cpu_percent", "CPU % of the API and worker processes"
        ),
        key=f"cpu_{d.id}",
    )
    ui.chart(
        monitoring_charts.usage_figure(
            samples, "rss_mb", "Memory (MB) of the API and worker processes"
        ),
        key=f"rss_{d.id}",
    )


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"


def _ms(value: Any) -> str:
    return "no calls" if value is None else f"{float(value):.1f} ms"
