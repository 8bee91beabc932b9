"""Plotly figures built from core results. No streamlit here: pages decide where they go."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from core.entities import Model

if TYPE_CHECKING:  # core.explain imports shap: not needed to draw its results
    from core.explain import Explanation, Importance

ACCENT = "#3b5bdb"
POSITIVE, NEGATIVE = "#2f9e44", "#1c7ed6"  # SHAP: green pushes the output up, blue down
SHOWN_FEATURES = 12
HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "roc_auc", "r2"}


def headline_metric(task: str) -> str:
    """The metric a leaderboard sorts by: ROC-AUC for binary, F1 for multiclass, RMSE else."""
    return {"binary": "roc_auc", "multiclass": "f1"}.get(task, "rmse")


def ranked(models: list[Model], metric: str) -> list[Model]:
    """Models best first by `metric`; those without it last."""
    sign = -1 if metric in HIGHER_IS_BETTER else 1
    return sorted(models, key=lambda m: (m.metrics.get(metric) is None,
                                         sign * (m.metrics.get(metric) or 0.0)))


def leaderboard_figure(models: list[Model], metric: str) -> go.Figure:
    """Horizontal bars of one holdout metric per model, best on top."""
    # Plotly draws the first bar at the bottom, so the ranking goes in reversed.
    scored = [m for m in ranked(models, metric) if m.metrics.get(metric) is not None][::-1]
    fig = go.Figure(go.Bar(
        x=[m.metrics[metric] for m in scored], y=[f"{m.algorithm} ({m.id})" for m in scored],
        orientation="h", marker_color=ACCENT,
        text=[f"{m.metrics[metric]:.4f}" for m in scored], textposition="auto"))
    fig.update_layout(title=f"Holdout {metric}", height=120 + 40 * len(scored),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title=metric)
    return fig


def profile_figure(name: str, feature: dict[str, Any]) -> go.Figure:
    """The training distribution of one feature: quantile bins or category shares."""
    if feature["kind"] == "numeric":
        edges = feature["edges"]
        labels = [f"{lo:.4g} to {hi:.4g}" for lo, hi in itertools.pairwise(edges)]
        shares = feature["fractions"]
        if not labels:  # a constant column: one bin
            labels = [f"{feature['min']:.4g}"] if feature["min"] is not None else ["(missing)"]
    else:
        labels = list(feature["frequencies"])
        shares = list(feature["frequencies"].values())
        if feature.get("other_fraction"):
            labels.append("(other)")
            shares.append(feature["other_fraction"])
    fig = go.Figure(go.Bar(x=labels, y=shares, marker_color=ACCENT))
    fig.update_layout(title=f"{name}: training distribution", yaxis_title="share of rows",
                      yaxis_tickformat=".0%", height=320,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def _shown(value: Any) -> str:
    if value is None:
        return "missing"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def explanation_bars(e: Explanation, shown: int = SHOWN_FEATURES) -> list[tuple[str, float]]:
    """("feature = value", contribution) largest first; beyond `shown`, one "other N features"
    bar holds the sum of the rest (so the bars still add up to output - base)."""
    bars = [(f"{c.feature} = {_shown(c.value)}", c.contribution)
            for c in e.contributions[:shown]]
    rest = e.contributions[shown:]
    if rest:
        bars.append((f"other {len(rest)} features", sum(c.contribution for c in rest)))
    return bars


def explanation_figure(e: Explanation, shown: int = SHOWN_FEATURES) -> go.Figure:
    """Signed horizontal bars of one row's SHAP values, largest on top, green up / blue down."""
    bars = explanation_bars(e, shown)[::-1]  # plotly draws the first bar at the bottom
    fig = go.Figure(go.Bar(
        x=[v for _, v in bars], y=[label for label, _ in bars], orientation="h",
        marker_color=[POSITIVE if v >= 0 else NEGATIVE for _, v in bars],
        text=[f"{v:+.4g}" for _, v in bars], textposition="auto"))
    what = e.scale + (f" of class {e.class_}" if e.class_ is not None else "")
    fig.update_layout(
        title=f"{what}: base {e.base_value:.4g} → output {e.output:.4g}",
        xaxis_title=f"contribution ({e.scale})", height=140 + 28 * len(bars),
        margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def importance_figure(imp: Importance, shown: int = 20) -> go.Figure:
    """Mean |SHAP| per original feature, largest on top."""
    top = list(imp.features[:shown])[::-1]
    fig = go.Figure(go.Bar(x=[v for _, v in top], y=[f for f, _ in top], orientation="h",
                           marker_color=ACCENT, text=[f"{v:.4g}" for _, v in top],
                           textposition="auto"))
    fig.update_layout(title=f"{imp.which}: mean |SHAP| ({imp.scale}), {imp.rows:,} rows",
                      xaxis_title=f"mean |contribution| ({imp.scale})",
                      height=140 + 26 * len(top), margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


# ---------------------------------------------------------------------------- drift
TRAINING_COLOR, SERVED_COLOR = "#868e96", ACCENT
STATUS_COLORS = {"stable": "#2f9e44", "moderate": "#f08c00", "drifted": "#e03131", "n/a": "#adb5bd"}


def drift_overlay_figure(f: Any) -> go.Figure:
    """A feature's (core.drift_scores.FeatureDrift) training vs served shares per bucket."""
    fig = go.Figure([
        go.Bar(x=list(f.buckets), y=list(f.training), name="training",
               marker_color=TRAINING_COLOR, opacity=0.7),
        go.Bar(x=list(f.buckets), y=list(f.served), name="served", marker_color=SERVED_COLOR,
               opacity=0.7)])
    fig.update_layout(barmode="overlay", title=f"{f.name}: {f.status} (PSI {f.psi or 0:.3f})",
                      yaxis_title="share of rows", yaxis_tickformat=".0%",
                      margin={"t": 40, "b": 10}, height=320)
    return fig


def drift_time_figure(series: Any, feature: str) -> go.Figure:
    """PSI of one feature per run (core.drift.DriftSeries), oldest first, coloured by status."""
    points = [p for p in series.points if p.feature == feature]
    fig = go.Figure(go.Scatter(
        x=[p.at for p in points], y=[p.psi for p in points], mode="lines+markers", name=feature,
        marker={"color": [STATUS_COLORS.get(p.status, ACCENT) for p in points], "size": 9},
        line={"color": ACCENT}, text=[p.run_id for p in points],
        hovertemplate="%{text}<br>PSI %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"{feature}: PSI per run", yaxis_title="PSI",
                      margin={"t": 40, "b": 10}, height=300)
    return fig


def drift_share_figure(series: Any) -> go.Figure:
    """The share of drifted features per run (core.drift.DriftSeries), oldest first."""
    fig = go.Figure(go.Scatter(
        x=[s[1] for s in series.shares], y=[s[2] for s in series.shares], mode="lines+markers",
        name="drifted features", line={"color": STATUS_COLORS["drifted"]},
        text=[s[0] for s in series.shares],
        hovertemplate="%{text}<br>%{y:.0%} of features drifted<extra></extra>"))
    fig.update_layout(title="Share of drifted features per run", yaxis_tickformat=".0%",
                      yaxis_range=[0, 1.05], margin={"t": 40, "b": 10}, height=280)
    return fig
