"""Every figure core/ui/charts.py builds, from real results: a title and both axis titles, and
charts over runs in run order with dates (never millisecond ticks), saying when there are too
few runs for a trend (issue 13, item 11). AppTest does not render plotly, so the figures are
checked as specs, each against Vega-Lite's JSON schema (the one altair, a dependency of
Streamlit, ships)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import altair
import jsonschema
import pytest

from core import challenger, drift, explain, ground_truth, registry
from core.entities import Deployment
from core.store import Store
from core.ui import charts, monitoring_charts
from tests.test_drift import score as score_with_drift
from tests.test_drift import served
from tests.test_ground_truth import truth, write


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    return deploy_churn("gradient_boosting", challenger="linear", name="churn-staging")


def titled(chart: charts.Spec) -> tuple[str, str, str]:
    return charts.title_of(chart), charts.axis_title(chart, "x"), charts.axis_title(chart, "y")


def annotations(chart: charts.Spec) -> list[str]:
    """What the chart says under its title (too few runs for a trend)."""
    subtitle = chart["title"].get("subtitle")
    return [subtitle] if subtitle else []


@cache
def vega_lite() -> jsonschema.Draft7Validator:
    schema = Path(altair.__file__).parent / "vegalite" / "v6" / "schema" / "vega-lite-schema.json"
    return jsonschema.Draft7Validator(json.loads(schema.read_text()))


def invalid(chart: charts.Spec) -> list[str]:
    """Where a spec breaks Vega-Lite's schema (as Streamlit sends it: JSON)."""
    found: Any = json.loads(json.dumps(chart))
    return [f"{e.message[:200]} at {list(e.absolute_path)}" for e in vega_lite().iter_errors(found)]


def test_every_chart_has_a_title_and_axis_titles(
    trained_store: Store, deployed: Deployment
) -> None:
    models = registry.list_models(trained_store)
    run = score_with_drift(trained_store, deployed.name, served(400, shifted=True))
    series = drift.drift_over_time(trained_store, deployed.name, 30)
    report = drift.drift_report(trained_store, deployed.name)
    [row] = explain.explain_rows(trained_store, run.id, [0], "main", None, by="row")
    importance = explain.global_importance(trained_store, run.id, sample=60)
    sample = explain.get_shap_sample(trained_store, run.id)
    labels = truth(400).rename(columns={"customer_id": "id", "churn": "outcome"})
    ground_truth.add_labels(
        trained_store,
        deployed.name,
        {"kind": "upload", "path": write(trained_store, labels)},
        "id",
        "outcome",
        actor="tester",
    )
    found = challenger.compare(trained_store, deployed.name)
    live = ground_truth.live_metrics(trained_store, deployed.name)
    feature = models[0].schema.features[0].name
    figures = {
        "leaderboard": charts.leaderboard_figure(models, "roc_auc"),
        "profile": charts.profile_figure(feature, models[0].profile["features"][feature]),
        "explanation": charts.explanation_figure(row),
        "importance": charts.importance_figure(importance),
        "beeswarm": charts.beeswarm_figure(sample, "top features"),
        "dependence": charts.dependence_figure(sample, "age", "age"),
        "drift overlay": monitoring_charts.drift_overlay_figure(report.features[0]),
        "drift per run": monitoring_charts.drift_time_figure(series, "age"),
        "drifted share": monitoring_charts.drift_share_figure(series),
        "agreement": monitoring_charts.agreement_figure(found),
        "distribution": monitoring_charts.distribution_figure(found),
        "live": monitoring_charts.live_figure(live),
        "confusion": monitoring_charts.confusion_figure(
            {"labels": ["no", "yes"], "matrix": [[5, 1], [2, 4]]}, "confusion matrix"
        ),
        "residuals": monitoring_charts.residual_figure(
            {"prediction": [1.0, 2.0], "residual": [0.1, -0.2]}, "residuals"
        ),
    }
    untitled = {name: titled(fig) for name, fig in figures.items() if not all(titled(fig))}
    assert not untitled, untitled
    broken = {name: invalid(fig) for name, fig in figures.items() if invalid(fig)}
    assert not broken, broken
    # classes are names on the axis, not points of a number line from -0.5 to 1.5
    assert (
        monitoring_charts.drift_overlay_figure(report.prediction)["encoding"]["x"]["type"]
        == "nominal"
    )
    assert figures["distribution"]["encoding"]["x"]["type"] == "nominal"
    # PSI is never negative
    assert figures["drift per run"]["encoding"]["y"]["scale"] == {"zero": True}


def test_charts_over_runs_use_run_order_and_say_when_runs_are_few(
    trained_store: Store, deployed: Deployment
) -> None:
    first = score_with_drift(trained_store, deployed.name, served(300, seed=1), "a.parquet")
    second = score_with_drift(trained_store, deployed.name, served(300, seed=2), "b.parquet")
    series = drift.drift_over_time(trained_store, deployed.name, 30)
    found = challenger.compare(trained_store, deployed.name)
    for fig in (
        monitoring_charts.drift_time_figure(series, "age"),
        monitoring_charts.drift_share_figure(series),
        monitoring_charts.agreement_figure(found),
    ):
        # run order, not timestamps a second apart
        assert [r["n"] for r in charts.rows_of(fig)] == [1, 2]
        assert charts.axis_title(fig, "x") == "run (oldest first)"
        assert charts.tick_texts(fig) == [f"{r.finished_at:%b %d %H:%M}" for r in (first, second)]
        assert annotations(fig) == ["Only 2 runs so far: a trend shows from 3 runs on."]
    score_with_drift(trained_store, deployed.name, served(300, seed=3), "c.parquet")
    series = drift.drift_over_time(trained_store, deployed.name, 30)
    assert annotations(monitoring_charts.drift_share_figure(series)) == []


def test_explanations_read_as_plain_numbers() -> None:
    e = explain.Explanation(
        run_id="run_x",
        which="main",
        row=3,
        key=None,
        model_id="mdl_x",
        algorithm="linear",
        explainer="LinearExplainer",
        scale="value",
        class_=None,
        prediction=42390.25,
        probability=None,
        base_value=40000.0,
        output=42390.25,
        contributions=(
            explain.Contribution("income", 123456.0, 2000.25),
            explain.Contribution("rate", 0.000123, 390.0),
            explain.Contribution("region", None, 0.0),
        ),
    )
    assert charts.explanation_bars(e) == [
        ("income = 123,456", 2000.25),
        ("rate = 0.000123", 390.0),
        ("region = missing", 0.0),
    ]
    fig = charts.explanation_figure(e)
    assert [r["text"] for r in charts.rows_of(fig)] == ["+2,000", "+390", "+0"]  # top down
    assert charts.title_of(fig) == "value: average row 40,000 → this row 42,390"
    assert [charts.percent(p) for p in (0.671, 0.004, 0.9951)] == ["67 %", "0.4 %", "99.5 %"]


def test_drift_buckets_read_as_plain_numbers() -> None:
    from core.engine.drift_scores import numeric_buckets

    assert numeric_buckets([300.0, 10300.0, 12400.5, 62600.0]) == [
        "< 300",
        "[300, 10,300)",
        "[10,300, 12,400)",
        "[12,400, 62,600]",
        "> 62,600",
        "missing",
    ]
    assert numeric_buckets([0.000123, 0.5]) == ["< 0.000123", "[0.000123, 0.5]", "> 0.5", "missing"]


def test_usage_over_time_never_ticks_below_a_second() -> None:
    start = datetime(2026, 12, 7, 6, 49, 0)
    samples = [
        {"sampled_at": start + timedelta(seconds=5 * i), "process": "api", "pid": 7, "cpu": i}
        for i in range(12)
    ]
    fig = monitoring_charts.usage_figure(samples, "cpu", "CPU % of the API and worker processes")
    assert titled(fig) == ("CPU % of the API and worker processes", "time (UTC)", "CPU %")
    assert not invalid(fig)
    axis = fig["encoding"]["x"]["axis"]
    # a minute of samples: seconds on the ticks (not "06:49" eleven times), never milliseconds
    assert (axis["format"], axis["tickMinStep"]) == ("%H:%M:%S", 1000)
    days = [dict(s, sampled_at=start + timedelta(hours=5 * i)) for i, s in enumerate(samples)]
    assert monitoring_charts.usage_figure(days, "cpu", "CPU")["encoding"]["x"]["axis"][
        "format"
    ] == ("%b %d %H:%M")
