"""Charts of deployments over time, as Vega-Lite specs (core/ui/charts.py has the building
blocks and the models' and explanations' charts): drift per feature and per run, validation
(confusion, residuals), the challenger beside the main model, live performance, traffic and
usage. No streamlit here: pages decide where they go. Charts over runs are drawn in run order
with dates as labels, and say when there are too few runs for a trend (issue 13, item 11)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.ui.charts import (
    ACCENT,
    GREY,
    RUN_AXIS,
    TREND_RUNS,
    Spec,
    axis,
    dot_layers,
    label_expr,
    names_axis,
    spec,
)

if TYPE_CHECKING:
    from core.challenger import Comparison
    from core.ground_truth import LiveMetrics

TRAINING_COLOR, SERVED_COLOR = GREY, ACCENT

STATUS_COLORS = {"stable": "#2f9e44", "moderate": "#f08c00", "drifted": "#e03131", "n/a": "#adb5bd"}


def _series(
    domain: Sequence[str], colours: Sequence[str], title: str | None = None
) -> dict[str, Any]:
    """A colour channel naming each series (field "series") in a legend below the chart."""
    return {
        "field": "series",
        "type": "nominal",
        "sort": list(domain),
        "scale": {"domain": list(domain), "range": list(colours)},
        "legend": {"title": title, "orient": "bottom"},
    }


def drift_overlay_figure(f: Any) -> Spec:
    """A feature's (core.drift_scores.FeatureDrift) training vs served shares per bucket."""
    buckets = [str(b) for b in f.buckets]
    rows = [
        {"bucket": b, "series": series, "share": v}
        for series, values in (("training", f.training), ("served", f.served))
        for b, v in zip(buckets, values, strict=True)
    ]
    return spec(
        f"{f.name}: {f.status} (PSI {f.psi or 0:.3f})",
        rows,
        {
            # classes 0 and 1 are names, not points on a number line
            "x": {
                "field": "bucket",
                "type": "nominal",
                "sort": buckets,
                "axis": names_axis(
                    f"{f.name} (training bins)" if f.kind == "numeric" else f.name, buckets
                ),
            },
            "y": {
                "field": "share",
                "type": "quantitative",
                "stack": None,  # overlaid, not stacked
                "axis": axis("share of rows", format=".0%"),
            },
            "color": _series(("training", "served"), (TRAINING_COLOR, SERVED_COLOR)),
            "opacity": {"value": 0.7},
        },
        height=240,
    )


def _when(at: datetime | None) -> str:
    return "" if at is None else f"{at:%b %d %H:%M}"


def _at(at: datetime | None) -> str:
    return "" if at is None else f"{at:%Y-%m-%d %H:%M} UTC"


def over_runs(
    title: str,
    rows: list[dict[str, Any]],
    times: Sequence[datetime | None],
    y: dict[str, Any],
    unit: str = "run",
    **more: Any,
) -> Spec:
    """A chart whose x axis is the run order (field "n", 1 = oldest), labelled by date and
    minute, never by milliseconds (two runs a second apart gave ticks such as 20:03:18.4475),
    saying under its title when there are too few runs for a trend. `unit`: what a point is
    (run, hour, day)."""
    n = len(times)
    step = max(1, math.ceil(n / 10))
    ticks = list(range(1, n + 1))[::step]
    few = (
        None
        if n >= TREND_RUNS
        else f"No {unit} yet"
        if n == 0
        else f"Only {n} {unit}{'s' if n > 1 else ''} so far: a trend shows from {TREND_RUNS} "
        f"{unit}s on."
    )
    x = {
        "field": "n",
        "type": "quantitative",
        "scale": {"domain": [0.5, max(n, 1) + 0.5], "nice": False, "zero": False},
        "axis": axis(
            RUN_AXIS if unit == "run" else f"{unit} with traffic (oldest first)",
            values=ticks,
            labelExpr=label_expr(ticks, [_when(times[t - 1]) for t in ticks]),
            grid=False,
        ),
    }
    return spec(title, rows, {"x": x, "y": y, **more.pop("encoding", {})}, subtitle=few, **more)


def _line(colour: str) -> dict[str, Any]:
    """A line with a dot on each point, both in `colour`."""
    return {"type": "line", "color": colour, "point": {"color": colour, "filled": True}}


def drift_time_figure(series: Any, feature: str, unit: str = "run") -> Spec:
    """PSI of one feature per run, or per hour or day of calls (core.drift.DriftSeries),
    oldest first, coloured by status."""
    points = [p for p in series.points if p.feature == feature]
    times = [p.at for p in points]
    rows = [
        {"n": i, "psi": p.psi, "status": p.status, "run": p.run_id, "at": _at(p.at)}
        for i, p in enumerate(points, 1)
    ]
    statuses = list(STATUS_COLORS)
    return over_runs(
        f"{feature}: PSI per {unit}",
        rows,
        times,
        {"field": "psi", "type": "quantitative", "scale": {"zero": True}, "axis": axis("PSI")},
        unit,
        encoding={
            "tooltip": [{"field": "run"}, {"field": "at"}, {"field": "psi", "format": ".3f"}]
        },
        layer=[
            {"mark": {"type": "line", "color": ACCENT}},
            {
                "mark": {"type": "point", "filled": True, "size": 80},
                "encoding": {
                    "color": {
                        "field": "status",
                        "type": "nominal",
                        "scale": {
                            "domain": statuses,
                            "range": [STATUS_COLORS[s] for s in statuses],
                        },
                        "legend": {"title": None, "orient": "bottom"},
                    }
                },
            },
        ],
        height=220,
    )


def _share_per_run(
    title: str,
    field: str,
    points: Sequence[tuple[str, datetime | None, float]],
    y: tuple[str, float, str],
    colour: str,
    unit: str = "run",
) -> Spec:
    """A share (0 to 1) per run, oldest first: (run id, time, share) points; `y` is the axis's
    (title, top, tooltip format)."""
    y_title, top, shown = y
    rows = [{"n": i, field: v, "run": r, "at": _at(t)} for i, (r, t, v) in enumerate(points, 1)]
    return over_runs(
        title,
        rows,
        [t for _, t, _ in points],
        {
            "field": field,
            "type": "quantitative",
            "scale": {"domain": [0, top], "nice": False},
            "axis": axis(y_title, format=".0%"),
        },
        unit,
        encoding={
            "tooltip": [{"field": "run"}, {"field": "at"}, {"field": field, "format": shown}]
        },
        mark=_line(colour),
        height=200,
    )


def drift_share_figure(series: Any) -> Spec:
    """The share of drifted features per run (core.drift.DriftSeries), oldest first."""
    return _share_per_run(
        "Share of drifted features per run",
        "share",
        [(s[0], s[1], s[2]) for s in series.shares],
        ("features drifted", 1.05, ".0%"),
        STATUS_COLORS["drifted"],
    )


# ---------------------------------------------------------------------------- validation
def confusion_figure(confusion: dict[str, Any], title: str) -> Spec:
    """The confusion matrix as a heatmap: true labels down, predicted across, counts shown."""
    labels = [str(v) for v in confusion["labels"]]
    matrix = confusion["matrix"]
    rows: list[dict[str, Any]] = [
        {"true": t, "predicted": p, "count": int(matrix[i][j])}
        for i, t in enumerate(labels)
        for j, p in enumerate(labels)
    ]
    most = max((int(r["count"]) for r in rows), default=0)
    return spec(
        title,
        rows,
        {
            "x": {
                "field": "predicted",
                "type": "nominal",
                "sort": labels,
                "axis": names_axis("predicted", labels),
            },
            "y": {"field": "true", "type": "nominal", "sort": labels, "axis": axis("true")},
        },
        layer=[
            {
                "mark": {"type": "rect"},
                "encoding": {
                    "color": {
                        "field": "count",
                        "type": "quantitative",
                        "scale": {"scheme": "blues"},
                        "legend": None,
                    }
                },
            },
            {
                "mark": {"type": "text"},
                "encoding": {
                    "text": {"field": "count", "format": ","},
                    "color": {
                        "condition": {"test": f"datum.count > {most / 2}", "value": "white"},
                        "value": "black",
                    },
                },
            },
        ],
        height=280,
    )


def residual_figure(residuals: dict[str, list[float]], title: str) -> Spec:
    """Residual (label - prediction) against prediction, with the zero line."""
    rows = [
        {"prediction": p, "residual": r}
        for p, r in zip(residuals["prediction"], residuals["residual"], strict=True)
    ]
    return dot_layers(
        title,
        rows,
        {
            "x": {
                "field": "prediction",
                "type": "quantitative",
                "scale": {"zero": False},
                "axis": axis("prediction"),
            },
            "y": {"field": "residual", "type": "quantitative", "axis": axis("label - prediction")},
        },
        [{"mark": {"type": "circle", "color": ACCENT, "opacity": 0.6}}],
        "y",
        height=280,
    )


# ---------------------------------------------------------------------------- challenger
def agreement_figure(found: Comparison, unit: str = "run") -> Spec:
    """Agreement rate per run (or per hour or day of calls), oldest first."""
    return _share_per_run(
        f"Agreement of main and challenger per {unit}",
        "agreement",
        [(r.run_id, r.at, r.agreement_rate) for r in reversed(found.runs)],
        ("rows agreeing", 1.02, ".1%"),
        ACCENT,
        unit,
    )


def _grouped(
    title: str,
    rows: list[dict[str, Any]],
    buckets: list[str],
    x_title: str,
    y: dict[str, Any],
    series: Sequence[str],
    colours: Sequence[str],
) -> Spec:
    """Bars of each series side by side per bucket (field "bucket"; classes are names)."""
    return spec(
        title,
        rows,
        {
            "x": {
                "field": "bucket",
                "type": "nominal",
                "sort": buckets,
                "axis": names_axis(x_title, buckets),
            },
            "xOffset": {"field": "series", "sort": list(series)},
            "y": y,
            "color": _series(series, colours),
        },
        height=220,
    )


def distribution_figure(found: Comparison) -> Spec:
    """The window's predictions of main and challenger side by side."""
    buckets = [str(b) for b in found.buckets]
    rows = [
        {"bucket": b, "series": role, "rows": int(c)}
        for role, counts in (("main", found.main), ("challenger", found.challenger))
        for b, c in zip(buckets, counts, strict=True)
    ]
    return _grouped(
        "Predictions in the window",
        rows,
        buckets,
        "predicted value" if found.task == "regression" else "predicted class",
        {"field": "rows", "type": "quantitative", "axis": axis("rows")},
        ("main", "challenger"),
        (ACCENT, "#f08c00"),
    )


def live_figure(live: LiveMetrics) -> Spec:
    """The headline metric of main and challenger per run, oldest first."""
    points = [r for r in reversed(live.runs) if r.main]
    times = [r.at for r in points]
    rows = [
        {
            "n": i,
            "series": role,
            "value": (getattr(r, role) or {}).get(live.metric),
            "run": r.run_id,
            "at": _at(r.at),
        }
        for role in ("main", "challenger")
        for i, r in enumerate(points, 1)
    ]
    return over_runs(
        f"Live {live.metric} per run",
        rows,
        times,
        {"field": "value", "type": "quantitative", "axis": axis(f"{live.metric} on labelled rows")},
        encoding={
            "color": _series(("main", "challenger"), (ACCENT, "#f08c00")),
            "tooltip": [
                {"field": "series"},
                {"field": "run"},
                {"field": "at"},
                {"field": "value", "format": ".4f"},
            ],
        },
        mark={"type": "line", "point": True},
        height=200,
    )


# ---------------------------------------------------------------------------- live traffic
SOURCE_COLORS = {"api": ACCENT, "form": "#f08c00", "run": GREY}
SOURCE_WORDS = {"api": "API calls", "form": "prediction form", "run": "pipeline runs"}


def _ms(at: datetime) -> float:
    """A time as epoch milliseconds, what a Vega-Lite time scale reads (naive times are UTC,
    as the store and the logs keep them)."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() * 1000


def traffic_figure(rows: Sequence[dict[str, Any]], window: Any, measure: str) -> Spec:
    """Requests (or rows) per time bucket of a window (core.monitoring.Window), stacked by
    source (core.monitoring.traffic); the axis spans the whole window, one bar per bucket."""
    step = timedelta(hours=1 if window.bucket == "hour" else 24)
    pad = step * 0.05
    below: dict[datetime, float] = {}
    bars = []
    for source in SOURCE_COLORS:  # stacked in this order, bottom up
        for r in rows:
            if r["source"] != source:
                continue
            low = below.get(r["bucket"], 0)
            below[r["bucket"]] = low + r[measure]
            bars.append(
                {
                    "start": _ms(r["bucket"] + pad),
                    "end": _ms(r["bucket"] + step - pad),
                    "low": low,
                    "high": low + r[measure],
                    "series": SOURCE_WORDS[source],
                    measure: r[measure],
                    "bucket": _at(r["bucket"]),
                }
            )
    return spec(
        f"{measure.capitalize()} per {window.bucket}, by source",
        bars,
        {
            "x": {
                "field": "start",
                "type": "temporal",
                "scale": {"type": "utc", "domain": [_ms(window.start), _ms(window.end)]},
                "axis": axis(
                    f"{window.bucket} (UTC)",
                    format="%b %d %H:%M" if window.bucket == "hour" else "%b %d",
                ),
            },
            "x2": {"field": "end"},
            # whole requests and rows: no 0.2 ticks when a bucket holds one call
            "y": {
                "field": "high",
                "type": "quantitative",
                "axis": axis(measure, format=",d", tickMinStep=1),
            },
            "y2": {"field": "low"},
            "color": _series(list(SOURCE_WORDS.values()), list(SOURCE_COLORS.values())),
            "tooltip": [
                {"field": "series", "title": "source"},
                {"field": "bucket"},
                {"field": measure, "format": ","},
            ],
        },
        height=220,
    )


def prediction_shares_figure(found: Any) -> Spec:
    """Main and challenger predictions side by side (core.monitoring.Distributions): the share
    of each class, or of each bin of predicted values."""
    buckets = [str(b) for b in found.labels]
    rows, series = [], []
    for role, counts in (("main", found.main), ("challenger", found.challenger)):
        total = sum(counts)
        if total:
            name = f"{role} ({total:,} predictions)"
            series.append(name)
            rows += [
                {"bucket": b, "series": name, "share": c / total}
                for b, c in zip(buckets, counts, strict=True)
            ]
    what = "class" if found.kind == "classes" else "predicted value"
    return _grouped(
        f"Predictions by {what}: main and challenger",
        rows,
        buckets,
        what,
        {
            "field": "share",
            "type": "quantitative",
            "axis": axis("share of predictions", format=".0%"),
        },
        series,
        (ACCENT, "#f08c00")[: len(series)],
    )


def _time_format(rows: Sequence[dict[str, Any]]) -> str:
    """Tick labels for times ("at", epoch ms) as fine as their span needs: seconds within ten
    minutes, minutes within two days, else the day too."""
    span = (max(r["at"] for r in rows) - min(r["at"] for r in rows)) / 1000 if rows else 0
    return "%H:%M:%S" if span <= 600 else "%H:%M" if span <= 2 * 86400 else "%b %d %H:%M"


def usage_figure(samples: Sequence[dict[str, Any]], measure: str, title: str) -> Spec:
    """One line per process (api, worker; by pid) of a usage measure over time."""
    rows = [
        {
            "at": _ms(s["sampled_at"]),
            "value": s[measure],
            "series": f"{s['process']} (pid {s['pid']})",
        }
        for s in sorted(samples, key=lambda s: (s["process"], s["pid"], s["sampled_at"]))
    ]
    return spec(
        title,
        rows,
        {
            "x": {
                "field": "at",
                "type": "temporal",
                "scale": {"type": "utc"},
                # whole seconds at least: never millisecond ticks
                "axis": axis("time (UTC)", format=_time_format(rows), tickMinStep=1000),
            },
            "y": {"field": "value", "type": "quantitative", "axis": axis(title.split(" of ")[0])},
            "color": {
                "field": "series",
                "type": "nominal",
                "legend": {"title": None, "orient": "bottom"},
            },
        },
        mark={"type": "line"},
        height=200,
    )
