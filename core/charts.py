"""Plotly figures built from core results. No streamlit here: pages decide where they go."""

from __future__ import annotations

import itertools
from typing import Any

import plotly.graph_objects as go

from core.entities import Model

ACCENT = "#3b5bdb"
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
