"""Charts built from core results, as Vega-Lite specs (dicts) for st.vega_lite_chart. No
streamlit here: pages decide where they go.

Vega-Lite, not plotly: Streamlit's Vega chunk is 0.8 MB of JavaScript against plotly's 4.7 MB,
and a cold tab drew its first chart ~0.26 s after the text instead of ~0.96 s (Chromium here,
docs/architecture.md "How the app reads"). Every spec has a title and both axis titles (issue
13, item 11); its rows are under spec["data"]["values"]."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.engine.profiles import plain_number
from core.entities import Model

if TYPE_CHECKING:  # core.explain imports shap: not needed to draw its results
    from core.explain import Explanation, Importance, ShapSample

Spec = dict[str, Any]
ACCENT = "#3b5bdb"
POSITIVE, NEGATIVE = "#2f9e44", "#1c7ed6"  # SHAP: green pushes the output up, blue down
GREY = "#868e96"
SHOWN_FEATURES = 12
HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "roc_auc", "r2"}
TREND_RUNS = 3  # a chart over runs shows a trend from this many runs on
RUN_AXIS = "run (oldest first)"
BAR_STEP = 24  # px per bar of a horizontal bar chart


def spec(
    title: str,
    rows: Sequence[dict[str, Any]],
    encoding: dict[str, Any],
    mark: dict[str, Any] | None = None,
    layer: list[dict[str, Any]] | None = None,
    height: int | dict[str, int] = 260,
    subtitle: str | None = None,
) -> Spec:
    """A Vega-Lite spec: one data table, shared encodings, one mark or layers of marks."""
    out: Spec = {
        "title": {"text": title, "anchor": "start", **({"subtitle": subtitle} if subtitle else {})},
        "data": {"values": [dict(r) for r in rows]},
        "height": height,  # of the plot area: axes, labels and legend add to it
        "autosize": {"type": "fit-x", "contains": "padding"},  # the width fits the page
        "encoding": encoding,
    }
    if layer is not None:
        out["layer"] = layer
    else:
        out["mark"] = mark or {"type": "bar"}
    return out


def axis(title: str, **more: Any) -> dict[str, Any]:
    """An axis with its title (and format, values, label expression...)."""
    return {"title": title, **more}


def title_of(chart: Spec) -> str:
    """The chart's title text."""
    return str(chart["title"]["text"])


def axis_title(chart: Spec, channel: str) -> str:
    """The title of an axis ("x" or "y"), wherever the spec puts it."""
    found = chart["encoding"].get(channel) or (chart.get("layer") or [{}])[0].get(
        "encoding", {}
    ).get(channel, {})
    return str(found.get("axis", {}).get("title") or "")


def rows_of(chart: Spec) -> list[dict[str, Any]]:
    """The data rows of a chart."""
    return list(chart["data"]["values"])


def names_axis(title: str, names: Sequence[str]) -> dict[str, Any]:
    """An axis of names (classes, bins): level when they are short, slanted when long."""
    return axis(title, labelAngle=0 if max(map(len, names), default=0) <= 12 else -30)


def label_expr(values: Sequence[int], texts: Sequence[str]) -> str:
    """A Vega expression naming each axis value by a text (integer positions from 0)."""
    named = [""] * (max(values, default=-1) + 1)
    for v, t in zip(values, texts, strict=True):
        named[v] = t
    return f"{json.dumps(named)}[datum.value] || ''"


def tick_texts(chart: Spec, channel: str = "x") -> list[str]:
    """The labels of an axis's ticks that a label expression names (charts over runs)."""
    found = (chart["encoding"].get(channel) or chart["layer"][0]["encoding"][channel])["axis"]
    named = json.loads(found["labelExpr"].split("[datum.value]")[0])
    return [named[v] for v in found["values"]]


def _bars_h(
    title: str,
    rows: list[dict[str, Any]],
    x_title: str,
    y_title: str,
    colour: dict[str, Any],
    x_scale: dict[str, Any] | None = None,
) -> Spec:
    """Horizontal bars: one row per bar, top to bottom, its value and text beside it."""
    order = [r["label"] for r in rows]
    return spec(
        title,
        rows,
        {
            "y": {
                "field": "label",
                "type": "nominal",
                "sort": order,
                "axis": axis(y_title, labelLimit=280),
            },
            "x": {
                "field": "value",
                "type": "quantitative",
                "axis": axis(x_title),
                **({"scale": x_scale} if x_scale else {}),
            },
        },
        layer=[
            {"mark": {"type": "bar"}, "encoding": {"color": colour}},
            *(  # the value beside its bar's end, outside the bar
                {
                    "transform": [{"filter": f"datum.value {test} 0"}],
                    "mark": {"type": "text", "align": align, "dx": dx},
                    "encoding": {"text": {"field": "text"}},
                }
                for test, align, dx in ((">=", "left", 3), ("<", "right", -3))
            ),
        ],
        height={"step": BAR_STEP},
    )


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


def leaderboard_figure(models: list[Model], metric: str) -> Spec:
    """Horizontal bars of one holdout metric per model, best on top."""
    scored = [m for m in ranked(models, metric) if m.metrics.get(metric) is not None]
    rows = [
        {
            "label": f"{model_name(m)} ({m.id})",
            "value": m.metrics[metric],
            "text": f"{m.metrics[metric]:.4f}",
        }
        for m in scored
    ]
    return _bars_h(f"Holdout {metric}", rows, metric, "model", {"value": ACCENT})


def profile_figure(name: str, feature: dict[str, Any]) -> Spec:
    """The training distribution of one feature: quantile bins or category shares."""
    if feature["kind"] == "numeric":
        edges = feature["edges"]
        labels = [
            f"{plain_number(lo)} to {plain_number(hi)}" for lo, hi in itertools.pairwise(edges)
        ]
        shares = list(feature["fractions"])
        if not labels:  # a constant column: one bin
            labels = [plain_number(feature["min"])] if feature["min"] is not None else ["(missing)"]
    else:
        labels = list(feature["frequencies"])
        shares = list(feature["frequencies"].values())
        if feature.get("other_fraction"):
            labels.append("(other)")
            shares.append(feature["other_fraction"])
    return spec(
        f"{name}: training distribution",
        [{"bucket": b, "share": v} for b, v in zip(labels, shares, strict=False)],
        {
            "x": {
                "field": "bucket",
                "type": "nominal",
                "sort": labels,
                "axis": names_axis(name, labels),
            },
            "y": {
                "field": "share",
                "type": "quantitative",
                "axis": axis("share of rows", format=".0%"),
            },
            "color": {"value": ACCENT},
        },
        height=240,
    )


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


def explanation_figure(e: Explanation, shown: int = SHOWN_FEATURES) -> Spec:
    """Signed horizontal bars of one row's SHAP values, largest on top, green up / blue down."""
    rows = [
        {
            "label": label,
            "value": v,
            "text": signed_number(v),
            "direction": "pushes up" if v >= 0 else "pushes down",
        }
        for label, v in explanation_bars(e, shown)
    ]
    what = e.scale + (f" of class {e.class_}" if e.class_ is not None else "")
    return _bars_h(
        f"{what}: average row {plain_number(e.base_value)} → this row {plain_number(e.output)}",
        rows,
        f"contribution ({e.scale})",
        "feature = this row's value",
        {
            "field": "direction",
            "type": "nominal",
            "scale": {"domain": ["pushes up", "pushes down"], "range": [POSITIVE, NEGATIVE]},
            "legend": {"title": None, "orient": "bottom"},
        },
    )


MEAN_SHAP_WORDS = (
    "Mean |SHAP|: how far a feature moves a prediction away from the average prediction, "
    "in either direction, averaged over the rows. A longer bar means the feature matters "
    "more; it does not say in which direction."
)


def importance_figure(imp: Importance, shown: int = 20, x_max: float | None = None) -> Spec:
    """Mean |SHAP| per original feature, largest on top; `x_max` puts charts shown side by
    side on one scale."""
    rows = [{"label": f, "value": v, "text": plain_number(v)} for f, v in imp.features[:shown]]
    return _bars_h(
        f"{imp.which}: average impact per feature, {imp.rows:,} rows",
        rows,
        f"mean |SHAP| ({imp.scale})",
        "feature",
        {"value": ACCENT},
        {"domain": [0, x_max * 1.05]} if x_max else None,
    )


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


def _value_colour(title: str) -> list[dict[str, Any]]:
    """Layers of dots coloured by a value in [0, 1] (field "colour": low blue, high red), and
    the rows without one (null) grey."""
    return [
        {
            "transform": [{"filter": "isValid(datum.colour)"}],
            "mark": {"type": "circle", "opacity": 0.8},
            "encoding": {
                "color": {
                    "field": "colour",
                    "type": "quantitative",
                    "scale": {"domain": [0, 1], "range": [LOW, HIGH]},
                    "legend": {
                        "title": title,
                        "values": [0, 1],
                        "labelExpr": "datum.value < 0.5 ? 'low' : 'high'",
                    },
                }
            },
        },
        {
            "transform": [{"filter": "!isValid(datum.colour)"}],
            "mark": {"type": "circle", "opacity": 0.8, "color": MISSING_COLOR},
        },
    ]


def _colour(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def beeswarm_figure(sample: ShapSample, title: str, top: int = BEESWARM_FEATURES) -> Spec:
    """One dot per sampled row and top feature: x = its SHAP value, y = the feature (largest
    mean |SHAP| on top), colour = the row's value of the feature (low blue, high red, missing
    grey; categories by code, named in the tooltip)."""
    features = sample.ranked()[:top][::-1]  # position 0 at the bottom
    rows: list[dict[str, Any]] = []
    for position, feature in enumerate(features):
        shap_values = sample.shap(feature)
        scaled, texts = normalised(sample.values(feature), feature in sample.categorical)
        ys = position + _jitter(shap_values, position)
        rows += [
            {
                "shap": float(x),
                "y": float(y),
                "colour": _colour(c),
                "feature": feature,
                "value": t,
            }
            for x, y, c, t in zip(shap_values, ys, scaled, texts, strict=True)
        ]
    positions = list(range(len(features)))
    return dot_layers(
        title,
        rows,
        {
            "x": {
                "field": "shap",
                "type": "quantitative",
                "axis": axis(f"SHAP value ({sample.scale})"),
            },
            "y": {
                "field": "y",
                "type": "quantitative",
                "scale": {"domain": [-0.6, len(features) - 0.4], "nice": False, "zero": False},
                "axis": axis(
                    "feature",
                    values=positions,
                    labelExpr=label_expr(positions, features),
                    grid=False,
                ),
            },
            "size": {"value": 20},
            "tooltip": [
                {"field": "feature"},
                {"field": "value"},
                {"field": "shap", "title": "SHAP", "format": "+.4~g"},
            ],
        },
        _value_colour("value"),
        "x",
        height=40 + 34 * len(features),
    )


def _zero_rule(channel: str, **mark: Any) -> dict[str, Any]:
    """A grey line at 0 on `channel` (x: vertical, y: horizontal) across the chart."""
    return {
        "data": {"values": [{}]},
        "mark": {"type": "rule", "color": GREY, "strokeWidth": 1, **mark},
        "encoding": {channel: {"datum": 0, "type": "quantitative"}},
    }


def dot_layers(
    title: str,
    rows: list[dict[str, Any]],
    encoding: dict[str, Any],
    dots: list[dict[str, Any]],
    zero: str,
    height: int,
) -> Spec:
    """Dots (layers sharing `encoding`) with a line at 0 on the `zero` axis."""
    return spec(
        title,
        rows,
        {},
        layer=[{"encoding": encoding, "layer": dots}, _zero_rule(zero)],
        height=height,
    )


def dependence_figure(
    sample: ShapSample, feature: str, title: str, colour_by: str | None = None
) -> Spec:
    """A feature's value (x) against its SHAP value (y), one dot per sampled row, coloured by
    the value of `colour_by` (default: the feature itself). Missing values sit at "missing"
    for a category and are counted in the title for a number."""
    colour_by = colour_by or feature
    values, shap_values = sample.values(feature), sample.shap(feature)
    scaled, texts = normalised(sample.values(colour_by), colour_by in sample.categorical)
    categorical = feature in sample.categorical
    keep = [i for i, v in enumerate(values) if categorical or v is not None]
    rows = [
        {
            "x": ("missing" if values[i] is None else str(values[i])) if categorical else values[i],
            "shap": float(shap_values[i]),
            "colour": _colour(scaled[i]),
            "value": _shown(values[i]),
            "colour_value": texts[i],
        }
        for i in keep
    ]
    dropped = len(values) - len(keep)
    return dot_layers(
        title + (f" ({dropped} rows with {feature} missing not shown)" if dropped else ""),
        rows,
        {
            "x": {
                "field": "x",
                "type": "nominal" if categorical else "quantitative",
                "axis": names_axis(feature, [str(r["x"]) for r in rows])
                if categorical
                else axis(feature),
                **({"sort": "ascending"} if categorical else {"scale": {"zero": False}}),
            },
            "y": {
                "field": "shap",
                "type": "quantitative",
                "axis": axis(f"SHAP value of {feature} ({sample.scale})"),
            },
            "size": {"value": 30},
            "tooltip": [
                {"field": "value", "title": feature},
                {"field": "colour_value", "title": colour_by},
                {"field": "shap", "title": "SHAP", "format": "+.4~g"},
            ],
        },
        _value_colour(colour_by),
        "y",
        height=300,
    )


# ---------------------------------------------------------------------------- drift
