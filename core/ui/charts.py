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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from core.engine.profiles import plain_number
from core.entities import Model

if TYPE_CHECKING:  # core.explain imports shap: not needed to draw its results
    from core.challenger import Comparison
    from core.explain import Explanation, Importance, ShapSample
    from core.ground_truth import LiveMetrics

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


def _labels(values: Sequence[int], texts: Sequence[str]) -> str:
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
    return _dots(
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
                    labelExpr=_labels(positions, features),
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


def _dots(
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
    return _dots(
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
            labelExpr=_labels(ticks, [_when(times[t - 1]) for t in ticks]),
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
    return _dots(
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
            "y": {"field": "high", "type": "quantitative", "axis": axis(measure)},
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
