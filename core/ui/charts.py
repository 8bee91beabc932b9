"""Plotly figures built from core results. No streamlit here: pages decide where they go."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

from core.engine.profiles import plain_number
from core.entities import Model

if TYPE_CHECKING:  # core.explain imports shap: not needed to draw its results
    from core.challenger import Comparison
    from core.explain import Explanation, Importance, ShapSample
    from core.ground_truth import LiveMetrics

ACCENT = "#3b5bdb"
POSITIVE, NEGATIVE = "#2f9e44", "#1c7ed6"  # SHAP: green pushes the output up, blue down
SHOWN_FEATURES = 12
HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "roc_auc", "r2"}
TREND_RUNS = 3  # a chart over runs shows a trend from this many runs on
RUN_AXIS = "run (oldest first)"


def model_name(model: Model) -> str:
    """How a person reads a model: "linear · v1" (algorithm and version of its experiment)."""
    return f"{model.algorithm} · v{model.version}"


def headline_metric(task: str) -> str:
    """The metric a leaderboard sorts by: ROC-AUC for binary, F1 for multiclass, RMSE else."""
    return {"binary": "roc_auc", "multiclass": "f1"}.get(task, "rmse")


def ranked(models: list[Model], metric: str) -> list[Model]:
    """Models best first by `metric`; those without it last."""
    sign = -1 if metric in HIGHER_IS_BETTER else 1
    return sorted(
        models, key=lambda m: (m.metrics.get(metric) is None, sign * (m.metrics.get(metric) or 0.0))
    )


def leaderboard_figure(models: list[Model], metric: str) -> go.Figure:
    """Horizontal bars of one holdout metric per model, best on top."""
    # Plotly draws the first bar at the bottom, so the ranking goes in reversed.
    scored = [m for m in ranked(models, metric) if m.metrics.get(metric) is not None][::-1]
    fig = go.Figure(
        go.Bar(
            x=[m.metrics[metric] for m in scored],
            y=[f"{model_name(m)} ({m.id})" for m in scored],
            orientation="h",
            marker_color=ACCENT,
            text=[f"{m.metrics[metric]:.4f}" for m in scored],
            textposition="auto",
        )
    )
    fig.update_layout(
        title=f"Holdout {metric}",
        height=120 + 40 * len(scored),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title=metric,
        yaxis_title="model",
    )
    return fig


def profile_figure(name: str, feature: dict[str, Any]) -> go.Figure:
    """The training distribution of one feature: quantile bins or category shares."""
    if feature["kind"] == "numeric":
        edges = feature["edges"]
        labels = [
            f"{plain_number(lo)} to {plain_number(hi)}" for lo, hi in itertools.pairwise(edges)
        ]
        shares = feature["fractions"]
        if not labels:  # a constant column: one bin
            labels = [plain_number(feature["min"])] if feature["min"] is not None else ["(missing)"]
    else:
        labels = list(feature["frequencies"])
        shares = list(feature["frequencies"].values())
        if feature.get("other_fraction"):
            labels.append("(other)")
            shares.append(feature["other_fraction"])
    fig = go.Figure(go.Bar(x=labels, y=shares, marker_color=ACCENT))
    fig.update_layout(
        title=f"{name}: training distribution",
        xaxis_title=name,
        yaxis_title="share of rows",
        yaxis_tickformat=".0%",
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def signed_number(x: float) -> str:
    """plain_number with its sign: +0.42, -1,250."""
    return ("+" if x >= 0 else "-") + plain_number(abs(x))


def value_text(value: Any) -> str:
    """A feature's value as a person reads it: plain numbers, "missing" for None."""
    return _shown(value)


def _shown(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else plain_number(value)


def percent(p: float) -> str:
    """A probability as "67 %" (one decimal below 1 % and above 99 %: never a false 0 or 100)."""
    return f"{p:.1%}".replace("%", " %") if p < 0.01 or p > 0.99 else f"{p:.0%}".replace("%", " %")


SCALE_WORDS = {
    "log-odds": "log-odds (the scale the model adds evidence on before turning it into a "
    "probability: a bar to the right raised the probability, to the left lowered it)",
    "logit (softmax input)": "logits (the scores the model turns into class probabilities: "
    "a bar to the right raised this class's probability, to the left lowered it)",
    "probability": "probability points (the bars add up to the probability itself)",
    "value": "the target's unit",
}


def scale_words(scale: str) -> str:
    """What a SHAP scale means, for a reader who does not know the word."""
    return SCALE_WORDS.get(scale, scale)


def explanation_bars(e: Explanation, shown: int = SHOWN_FEATURES) -> list[tuple[str, float]]:
    """("feature = value", contribution) largest first; beyond `shown`, one "other N features"
    bar holds the sum of the rest (so the bars still add up to output - base)."""
    bars = [(f"{c.feature} = {_shown(c.value)}", c.contribution) for c in e.contributions[:shown]]
    rest = e.contributions[shown:]
    if rest:
        bars.append((f"other {len(rest)} features", sum(c.contribution for c in rest)))
    return bars


def explanation_figure(e: Explanation, shown: int = SHOWN_FEATURES) -> go.Figure:
    """Signed horizontal bars of one row's SHAP values, largest on top, green up / blue down."""
    bars = explanation_bars(e, shown)[::-1]  # plotly draws the first bar at the bottom
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in bars],
            y=[label for label, _ in bars],
            orientation="h",
            marker_color=[POSITIVE if v >= 0 else NEGATIVE for _, v in bars],
            text=[signed_number(v) for _, v in bars],
            textposition="auto",
        )
    )
    what = e.scale + (f" of class {e.class_}" if e.class_ is not None else "")
    fig.update_layout(
        title=f"{what}: average row {plain_number(e.base_value)} → this row "
        f"{plain_number(e.output)}",
        xaxis_title=f"contribution ({e.scale})",
        yaxis_title="feature = this row's value",
        height=140 + 28 * len(bars),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


MEAN_SHAP_WORDS = (
    "Mean |SHAP|: how far a feature moves a prediction away from the average prediction, "
    "in either direction, averaged over the rows. A longer bar means the feature matters "
    "more; it does not say in which direction."
)


def importance_figure(imp: Importance, shown: int = 20, x_max: float | None = None) -> go.Figure:
    """Mean |SHAP| per original feature, largest on top; `x_max` puts figures shown side by
    side on one scale."""
    top = list(imp.features[:shown])[::-1]
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in top],
            y=[f for f, _ in top],
            orientation="h",
            marker_color=ACCENT,
            text=[plain_number(v) for _, v in top],
            textposition="auto",
        )
    )
    fig.update_layout(
        title=f"{imp.which}: average impact per feature, {imp.rows:,} rows",
        xaxis_title=f"mean |SHAP| ({imp.scale})",
        yaxis_title="feature",
        height=140 + 26 * len(top),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    if x_max:
        fig.update_xaxes(range=[0, x_max * 1.05])
    return fig


def shared_range(importances: Sequence[Importance]) -> float | None:
    """One x range for importances shown side by side (the largest bar of any), or None when
    they are on different scales (log-odds and probability cannot share an axis)."""
    found = [imp for imp in importances if imp.features]
    if len(found) < 2 or len({imp.scale for imp in found}) > 1:
        return None
    return max(v for imp in found for _, v in imp.features)


LOW, HIGH, MISSING_COLOR = "#1c7ed6", "#e03131", "#adb5bd"  # a feature's value: low -> high
BEESWARM_FEATURES = 10


def normalised(values: list[Any], categorical: bool) -> tuple[np.ndarray, list[str]]:
    """Colour positions in [0, 1] (NaN = missing) and hover texts of one feature's values.

    Numbers are scaled between their 5th and 95th percentiles (clipped), so one outlier does
    not wash out the colours; categories are coloured by their code in sorted order.
    """
    texts = [_shown(v) for v in values]
    if categorical:
        names = sorted({str(v) for v in values if v is not None})
        codes = {n: i for i, n in enumerate(names)}
        span = max(len(names) - 1, 1)
        return np.asarray(
            [np.nan if v is None else codes[str(v)] / span for v in values], dtype=np.float64
        ), texts
    numbers = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    present = numbers[~np.isnan(numbers)]
    if not len(present):
        return numbers, texts
    low, high = np.percentile(present, [5, 95])
    if high <= low:
        low, high = float(present.min()), float(present.max())
    scaled = (
        (np.clip(numbers, low, high) - low) / (high - low)
        if high > low
        else np.where(np.isnan(numbers), np.nan, 0.5)
    )
    return scaled, texts


def _jitter(x: np.ndarray, seed: int) -> np.ndarray:
    """Vertical offsets in (-0.4, 0.4), wider where points are dense along x (a beeswarm)."""
    if len(x) < 2 or np.ptp(x) == 0:
        return np.random.default_rng(seed).uniform(-0.4, 0.4, len(x)) * (len(x) > 1)
    counts, edges = np.histogram(x, bins=min(50, len(x)))
    density = counts[np.clip(np.digitize(x, edges[1:-1]), 0, len(counts) - 1)] / counts.max()
    offsets: np.ndarray = np.random.default_rng(seed).uniform(-0.4, 0.4, len(x)) * density
    return offsets


def _value_traces(
    x: list[Any],
    y: list[float],
    scaled: np.ndarray,
    hovers: list[str],
    colour_title: str,
    size: int,
) -> list[go.Scatter]:
    """Dots coloured by a value in [0, 1] (low blue, high red), and the missing ones grey."""
    present = ~np.isnan(scaled)
    traces = []
    for keep, name in ((present, "value"), (~present, "missing")):
        if name == "missing" and not keep.any():
            continue
        marker: dict[str, Any] = {"color": MISSING_COLOR, "size": size, "opacity": 0.8}
        if name == "value":
            marker.update(
                color=scaled[keep].tolist(),
                cmin=0,
                cmax=1,
                colorscale=[[0, LOW], [1, HIGH]],
                colorbar={
                    "title": {"text": colour_title},
                    "tickvals": [0, 1],
                    "ticktext": ["low", "high"],
                },
            )
        traces.append(
            go.Scatter(
                x=[v for v, k in zip(x, keep, strict=True) if k],
                y=[v for v, k in zip(y, keep, strict=True) if k],
                text=[t for t, k in zip(hovers, keep, strict=True) if k],
                hoverinfo="text",
                mode="markers",
                name=f"{colour_title} {name}" if name == "missing" else name,
                marker=marker,
            )
        )
    return traces


def beeswarm_figure(sample: ShapSample, title: str, top: int = BEESWARM_FEATURES) -> go.Figure:
    """One dot per sampled row and top feature: x = its SHAP value, y = the feature (largest
    mean |SHAP| on top), colour = the row's value of the feature (low blue, high red, missing
    grey; categories by code, named in the hover)."""
    features = sample.ranked()[:top][::-1]  # plotly puts the first category at the bottom
    xs: list[Any] = []
    ys: list[float] = []
    colours, hovers = [], []
    for position, feature in enumerate(features):
        shap_values = sample.shap(feature)
        scaled, texts = normalised(sample.values(feature), feature in sample.categorical)
        xs += shap_values.tolist()
        ys += (position + _jitter(shap_values, position)).tolist()
        colours.append(scaled)
        hovers += [
            f"{feature} = {t}<br>SHAP {signed_number(x)}"
            for x, t in zip(shap_values, texts, strict=True)
        ]
    scaled_all = np.concatenate(colours) if colours else np.zeros(0)
    fig = go.Figure(_value_traces(xs, ys, scaled_all, hovers, "value", 5))
    fig.update_layout(
        title=title,
        xaxis_title=f"SHAP value ({sample.scale})",
        showlegend=False,
        yaxis_title="feature",
        yaxis={
            "tickvals": list(range(len(features))),
            "ticktext": features,
            "range": [-0.6, len(features) - 0.4],
        },
        height=160 + 34 * len(features),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    fig.add_vline(x=0, line_color="#868e96", line_width=1)
    return fig


def dependence_figure(
    sample: ShapSample, feature: str, title: str, colour_by: str | None = None
) -> go.Figure:
    """A feature's value (x) against its SHAP value (y), one dot per sampled row, coloured by
    the value of `colour_by` (default: the feature itself). Missing values sit at "missing"
    for a category and are counted in the title for a number."""
    colour_by = colour_by or feature
    values, shap_values = sample.values(feature), sample.shap(feature)
    scaled, texts = normalised(sample.values(colour_by), colour_by in sample.categorical)
    categorical = feature in sample.categorical
    keep = [i for i, v in enumerate(values) if categorical or v is not None]
    x = [
        ("missing" if values[i] is None else str(values[i])) if categorical else values[i]
        for i in keep
    ]
    hovers = [
        f"{feature} = {_shown(values[i])}<br>{colour_by} = {texts[i]}"
        f"<br>SHAP {signed_number(shap_values[i])}"
        for i in keep
    ]
    fig = go.Figure(
        _value_traces(x, shap_values[keep].tolist(), scaled[keep], hovers, colour_by, 6)
    )
    dropped = len(values) - len(keep)
    fig.update_layout(
        title=title + (f" ({dropped} rows with {feature} missing not shown)" if dropped else ""),
        xaxis_title=feature,
        yaxis_title=f"SHAP value of {feature} ({sample.scale})",
        xaxis={"type": "category", "categoryorder": "category ascending"} if categorical else {},
        height=380,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        showlegend=False,
    )
    fig.add_hline(y=0, line_color="#868e96", line_width=1)
    return fig


# ---------------------------------------------------------------------------- drift
TRAINING_COLOR, SERVED_COLOR = "#868e96", ACCENT
STATUS_COLORS = {"stable": "#2f9e44", "moderate": "#f08c00", "drifted": "#e03131", "n/a": "#adb5bd"}


def drift_overlay_figure(f: Any) -> go.Figure:
    """A feature's (core.drift_scores.FeatureDrift) training vs served shares per bucket."""
    fig = go.Figure(
        [
            go.Bar(
                x=list(f.buckets),
                y=list(f.training),
                name="training",
                marker_color=TRAINING_COLOR,
                opacity=0.7,
            ),
            go.Bar(
                x=list(f.buckets),
                y=list(f.served),
                name="served",
                marker_color=SERVED_COLOR,
                opacity=0.7,
            ),
        ]
    )
    fig.update_layout(
        barmode="overlay",
        title=f"{f.name}: {f.status} (PSI {f.psi or 0:.3f})",
        xaxis={
            "title": {"text": f"{f.name} (training bins)" if f.kind == "numeric" else f.name},
            "type": "category",  # classes 0 and 1 are names, not points on a number line
        },
        yaxis_title="share of rows",
        yaxis_tickformat=".0%",
        margin={"t": 40, "b": 10},
        height=320,
    )
    return fig


def _when(at: datetime | None) -> str:
    return "" if at is None else f"{at:%b %d %H:%M}"


def over_runs(fig: go.Figure, times: Sequence[datetime | None], unit: str = "run") -> go.Figure:
    """Put a chart's x axis in run order (1 = oldest), labelled by date and minute, never by
    milliseconds (two runs a second apart gave ticks such as 20:03:18.4475), and say on the
    chart when there are too few runs for a trend. `unit`: what a point is (run, hour, day)."""
    n = len(times)
    step = max(1, math.ceil(n / 10))
    fig.update_xaxes(
        title_text=RUN_AXIS if unit == "run" else f"{unit} with traffic (oldest first)",
        tickmode="array",
        tickvals=list(range(1, n + 1))[::step],
        ticktext=[_when(t) for t in times][::step],
        range=[0.5, max(n, 1) + 0.5],
    )
    if n < TREND_RUNS:
        fig.add_annotation(
            text=(
                f"No {unit} yet"
                if n == 0
                else f"Only {n} {unit}{'s' if n > 1 else ''} so far: a trend shows "
                f"from {TREND_RUNS} {unit}s on."
            ),
            xref="paper",
            yref="paper",
            x=1,
            y=1.02,
            xanchor="right",
            yanchor="bottom",
            showarrow=False,
            font={"color": "#868e96"},
        )
    return fig


def _hover(run_ids: Sequence[str], times: Sequence[datetime | None]) -> list[str]:
    return [
        f"{r}<br>{'' if t is None else f'{t:%Y-%m-%d %H:%M} UTC'}"
        for r, t in zip(run_ids, times, strict=True)
    ]


def drift_time_figure(series: Any, feature: str, unit: str = "run") -> go.Figure:
    """PSI of one feature per run, or per hour or day of calls (core.drift.DriftSeries),
    oldest first, coloured by status."""
    points = [p for p in series.points if p.feature == feature]
    times = [p.at for p in points]
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(points) + 1)),
            y=[p.psi for p in points],
            mode="lines+markers",
            name=feature,
            marker={"color": [STATUS_COLORS.get(p.status, ACCENT) for p in points], "size": 9},
            line={"color": ACCENT},
            text=_hover([p.run_id for p in points], times),
            hovertemplate="%{text}<br>PSI %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{feature}: PSI per {unit}",
        yaxis_title="PSI",
        yaxis_rangemode="tozero",
        margin={"t": 40, "b": 10},
        height=300,
    )
    return over_runs(fig, times, unit)


def drift_share_figure(series: Any) -> go.Figure:
    """The share of drifted features per run (core.drift.DriftSeries), oldest first."""
    times = [s[1] for s in series.shares]
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(times) + 1)),
            y=[s[2] for s in series.shares],
            mode="lines+markers",
            name="drifted features",
            line={"color": STATUS_COLORS["drifted"]},
            text=_hover([s[0] for s in series.shares], times),
            hovertemplate="%{text}<br>%{y:.0%} of features drifted<extra></extra>",
        )
    )
    fig.update_layout(
        title="Share of drifted features per run",
        yaxis_title="features drifted",
        yaxis_tickformat=".0%",
        yaxis_range=[0, 1.05],
        margin={"t": 40, "b": 10},
        height=280,
    )
    return over_runs(fig, times)


# ---------------------------------------------------------------------------- validation
def confusion_figure(confusion: dict[str, Any], title: str) -> go.Figure:
    """The confusion matrix as a heatmap: true labels down, predicted across, counts shown."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            colorscale="Blues",
            text=matrix,
            texttemplate="%{text}",
            showscale=False,
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        height=360,
        margin={"t": 40},
    )
    return fig


def residual_figure(residuals: dict[str, list[float]], title: str) -> go.Figure:
    """Residual (label - prediction) against prediction, with the zero line."""
    fig = go.Figure(
        go.Scatter(
            x=residuals["prediction"],
            y=residuals["residual"],
            mode="markers",
            marker={"color": ACCENT, "opacity": 0.6},
        )
    )
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    fig.update_layout(
        title=title,
        xaxis_title="prediction",
        yaxis_title="label - prediction",
        height=360,
        margin={"t": 40},
    )
    return fig


# ---------------------------------------------------------------------------- challenger
def agreement_figure(found: Comparison, unit: str = "run") -> go.Figure:
    """Agreement rate per run (or per hour or day of calls), oldest first."""
    points = list(reversed(found.runs))
    times = [r.at for r in points]
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(points) + 1)),
            y=[r.agreement_rate for r in points],
            mode="lines+markers",
            text=_hover([r.run_id for r in points], times),
            hovertemplate="%{text}<br>%{y:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Agreement of main and challenger per {unit}",
        height=280,
        yaxis={"tickformat": ".0%", "range": [0, 1.02], "title": {"text": "rows agreeing"}},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return over_runs(fig, times, unit)


def distribution_figure(found: Comparison) -> go.Figure:
    """The window's predictions of main and challenger side by side."""
    fig = go.Figure(
        [
            go.Bar(name=role, x=list(found.buckets), y=list(counts))
            for role, counts in (("main", found.main), ("challenger", found.challenger))
        ]
    )
    fig.update_layout(
        barmode="group",
        height=300,
        title="Predictions in the window",
        xaxis={
            "title": {
                "text": "predicted value" if found.task == "regression" else "predicted class"
            },
            "type": "category",
        },
        yaxis_title="rows",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def live_figure(live: LiveMetrics) -> go.Figure:
    """The headline metric of main and challenger per run, oldest first."""
    points = [r for r in reversed(live.runs) if r.main]
    times = [r.at for r in points]
    fig = go.Figure()
    for role in ("main", "challenger"):
        values = [(getattr(r, role) or {}).get(live.metric) for r in points]
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(points) + 1)),
                y=values,
                name=role,
                mode="lines+markers",
                text=_hover([r.run_id for r in points], times),
                hovertemplate="%{text}<br>%{y:.4f}<extra>" + role + "</extra>",
            )
        )
    fig.update_layout(
        title=f"Live {live.metric} per run",
        yaxis_title=f"{live.metric} on labelled rows",
        height=280,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return over_runs(fig, times)


# ---------------------------------------------------------------------------- reading


# ---------------------------------------------------------------------------- live traffic
SOURCE_COLORS = {"api": ACCENT, "form": "#f08c00", "run": "#868e96"}
SOURCE_WORDS = {"api": "API calls", "form": "prediction form", "run": "pipeline runs"}


def traffic_figure(rows: Sequence[dict[str, Any]], window: Any, measure: str) -> go.Figure:
    """Requests (or rows) per time bucket of a window (core.monitoring.Window), stacked by
    source (core.monitoring.traffic); the axis spans the whole window, one bar per bucket."""
    step = timedelta(hours=1 if window.bucket == "hour" else 24)
    fig = go.Figure()
    for source in SOURCE_COLORS:
        mine = [r for r in rows if r["source"] == source]
        if mine:
            fig.add_bar(
                x=[r["bucket"] + step / 2 for r in mine],  # centred on its bucket
                y=[r[measure] for r in mine],
                width=step.total_seconds() * 1000 * 0.9,
                name=SOURCE_WORDS[source],
                marker_color=SOURCE_COLORS[source],
                hovertemplate=f"%{{y:,}} {measure}<extra>{SOURCE_WORDS[source]}</extra>",
            )
    fig.update_layout(
        title=f"{measure.capitalize()} per {window.bucket}, by source",
        barmode="stack",
        xaxis_title=f"{window.bucket} (UTC)",
        yaxis_title=measure,
        margin={"t": 40, "b": 10},
        height=300,
        legend={"orientation": "h", "y": -0.25},
    )
    fig.update_xaxes(
        range=[window.start, window.end],
        tickformat="%b %d %H:%M" if window.bucket == "hour" else "%b %d",
    )
    return fig


def prediction_shares_figure(found: Any) -> go.Figure:
    """Main and challenger predictions side by side (core.monitoring.Distributions): the share
    of each class, or of each bin of predicted values."""
    fig = go.Figure()
    for role, counts, color in (
        ("main", found.main, ACCENT),
        ("challenger", found.challenger, "#f08c00"),
    ):
        total = sum(counts)
        if total:
            fig.add_bar(
                x=list(found.labels),
                y=[c / total for c in counts],
                name=f"{role} ({total:,} predictions)",
                marker_color=color,
            )
    what = "class" if found.kind == "classes" else "predicted value"
    fig.update_layout(
        title=f"Predictions by {what}: main and challenger",
        barmode="group",
        xaxis_title=what,
        yaxis_title="share of predictions",
        yaxis_tickformat=".0%",
        margin={"t": 40, "b": 10},
        height=300,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def usage_figure(samples: Sequence[dict[str, Any]], measure: str, title: str) -> go.Figure:
    """One line per process (api, worker; by pid) of a usage measure over time."""
    fig = go.Figure()
    keyed = sorted({(s["process"], s["pid"]) for s in samples})
    for process, pid in keyed:
        mine = [s for s in samples if (s["process"], s["pid"]) == (process, pid)]
        fig.add_scatter(
            x=[s["sampled_at"] for s in mine],
            y=[s[measure] for s in mine],
            mode="lines",
            name=f"{process} (pid {pid})",
        )
    fig.update_layout(
        title=title,
        xaxis_title="time (UTC)",
        yaxis_title=title.split(" of ")[0],
        margin={"t": 40, "b": 10},
        height=280,
        legend={"orientation": "h", "y": -0.3},
    )
    return fig
