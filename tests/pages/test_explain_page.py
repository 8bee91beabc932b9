"""Explain a row and read global importance on the results page (AppTest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import datasets, deployments, explain, registry, runs
from core.entities import Run
from core.store import Store
from core.training import TrainRequest, train
from core.ui import charts as ui_charts
from core.ui import explain as ui_explain
from core.worker import loop as worker
from tests.pages.conftest import chart_specs

OpenPage = Callable[..., AppTest]


@pytest.fixture
def run(trained_store: Store) -> Run:
    """A succeeded churn run (gradient boosting main, linear challenger) by the worker."""
    by_algorithm = {m.algorithm: m.id for m in registry.list_models(trained_store)}
    name = deployments.deploy(
        trained_store,
        by_algorithm["gradient_boosting"],
        "staging",
        challenger_id=by_algorithm["linear"],
        actor="tester",
    ).name
    queued = runs.enqueue_run(trained_store, name, actor="tester")
    assert worker.run_once(trained_store)
    return runs.get_run(trained_store, queued.id)


def charts(at: AppTest) -> list[dict[str, Any]]:
    """The charts of the page (AppTest does not draw them: read their specs)."""
    return chart_specs(at)


def title(chart: dict[str, Any]) -> str:
    return ui_charts.title_of(chart)


def select_row(at: AppTest, which: str, position: int) -> AppTest:
    """Select a row of the results table, as a click on its box does."""
    rows = {"rows": [position], "columns": [], "cells": []}
    at.session_state[f"results_rows_{which}"] = {"selection": rows}
    return at.run()


def test_explain_a_row_selected_in_the_table(
    trained_store: Store, run: Run, open_page: OpenPage
) -> None:
    at = open_page("pages/results.py", run=run.id)
    assert not at.exception and not at.error
    assert "explain_row_main" not in [s.key for s in at.selectbox]  # no picker of the page
    assert any(c.value.startswith("Select a row in the table") for c in at.caption)
    at.number_input(key="results_page").set_value(3).run()  # any page, not only the first
    third = at.dataframe[0].value.iloc[4]
    select_row(at, "main", 4)
    assert not at.exception and not at.error
    [e] = explain.explain_rows(trained_store, run.id, [third["customer_id"]])
    up = next(c for c in e.contributions if c.contribution > 0)
    lead = next(m.value for m in at.markdown if "likely churn" in m.value)
    assert lead.startswith(
        f"{e.key}: **{e.probability:.0%} likely churn = {e.class_}**".replace("%", " %")
    )
    assert f"{up.feature} = " in lead and "raised it most" in lead
    words = next(c.value for c in at.caption if c.value.startswith("The bars are in log-odds"))
    assert "The average row starts at" in words and "this row's values bring it to" in words
    caption = next(c.value for c in at.caption if c.value.startswith("Average row"))
    assert "Explainer: TreeExplainer" in caption and "gradient_boosting · v1 (" in caption
    bars = next(f for f in charts(at) if title(f).startswith("log-odds"))
    rows = ui_charts.rows_of(bars)
    labels = [r["label"] for r in rows]  # top down
    assert len(labels) == 7 and labels[0].startswith(e.contributions[0].feature + " = ")
    colour = bars["layer"][0]["encoding"]["color"]["scale"]
    assert colour["domain"] == ["pushes up", "pushes down"]
    assert colour["range"] == ["#2f9e44", "#1c7ed6"]  # green up, blue down
    assert [r["direction"] == "pushes up" for r in rows] == [r["value"] >= 0 for r in rows]
    assert "e+" not in " ".join(labels + [r["text"] for r in rows])


def test_global_importance_main_and_challenger(
    trained_store: Store, run: Run, open_page: OpenPage
) -> None:
    at = open_page("pages/results.py", run=run.id)
    # Closed, the expander's content does not run: no chart is sent for it.
    assert [e.label for e in at.expander if e.label == "Global explainability"]
    assert not [t for t in map(title, charts(at)) if "average impact" in t]
    assert not any(c.value.startswith("Mean |SHAP|") for c in at.caption)
    at.session_state[ui_explain.GLOBAL_KEY] = True  # the user opens it: it stays open
    at.run()
    figures = {title(f): f for f in charts(at)}
    main = figures["main: average impact per feature, 600 rows"]
    challenger = next(f for t, f in figures.items() if t.startswith("challenger: average impact"))
    assert ui_charts.axis_title(main, "x") == "mean |SHAP| (log-odds)"
    # side by side on one scale: the same x range, wide enough for either's largest bar
    domain = main["encoding"]["x"]["scale"]["domain"]
    assert domain == challenger["encoding"]["x"]["scale"]["domain"]
    values = [r["value"] for f in (main, challenger) for r in ui_charts.rows_of(f)]
    assert domain[1] >= max(values)
    assert any("Both charts share one scale" in c.value for c in at.caption)
    assert any(c.value.startswith("Mean |SHAP|: how far a feature moves") for c in at.caption)
    explain.importance_path(trained_store, run.id, "challenger").unlink()
    at.run()
    assert any(i.value == "challenger: computing…" for i in at.info)
    assert not any(b.label == "Refresh" for b in at.button)  # it polls by itself
    assert any("updates by itself" in c.value for c in at.caption)
    explain.global_importance(trained_store, run.id, "challenger")
    at.run()
    assert not any("computing" in i.value for i in at.info)


def test_beeswarm_and_dependence_views_of_a_run(
    trained_store: Store, run: Run, open_page: OpenPage
) -> None:
    at = open_page("pages/results.py", run=run.id)
    at.session_state[ui_explain.GLOBAL_KEY] = True  # "Global explainability" opened
    at.run()
    at.radio(key="importance_view_main").set_value("Beeswarm").run()
    assert not at.exception and not at.error
    sample = explain.get_shap_sample(trained_store, run.id, "main")
    assert sample is not None
    swarm = next(
        f for f in charts(at) if title(f) == "main: SHAP on the log-odds scale, top features"
    )
    assert ui_charts.tick_texts(swarm, "y") == sample.ranked()[:10][::-1]
    assert len(ui_charts.rows_of(swarm)) == 7 * sample.rows
    assert any("SHAP of class yes" in c.value for c in at.caption)
    at.radio(key="importance_view_main").set_value("Dependence").run()
    at.selectbox(key="dependence_feature_main").set_value("tenure_months").run()
    assert not at.exception and not at.error
    view = next(f for f in charts(at) if title(f) == "main: tenure_months")
    shap_values = [r["shap"] for r in ui_charts.rows_of(view)]
    assert shap_values == pytest.approx(sample.shap("tenure_months").tolist())


def test_the_model_page_explains_the_holdout_once(
    trained_store: Store, open_page: OpenPage
) -> None:
    model = next(
        m for m in registry.list_models(trained_store) if m.algorithm == "gradient_boosting"
    )
    stored = explain.model_importance_path(trained_store, model)
    at = open_page("pages/model.py", id=model.id)
    assert not at.exception and not stored.exists()  # a closed tab computes nothing
    at.session_state["model_tabs"] = "Explainability"
    at.run()
    assert not at.exception and not at.error
    assert stored.exists() and not at.get("progress")  # computed now; the bar went when done
    titles = [title(f) for f in charts(at)]
    assert "holdout: average impact per feature, 120 rows" in titles, titles
    assert any(c.value.startswith("Mean |SHAP|: how far") for c in at.caption)
    assert any("120 holdout rows" in c.value for c in at.caption)
    written = stored.stat().st_mtime_ns
    at.radio(key="importance_view_model").set_value("Beeswarm").run()
    assert not at.exception and not at.get("progress")  # read from the file
    assert any(title(f) == "holdout: SHAP on the log-odds scale, top features" for f in charts(at))
    assert stored.stat().st_mtime_ns == written


def test_the_model_page_shows_why_the_holdout_cannot_be_rebuilt(
    trained_store: Store, open_page: OpenPage
) -> None:
    model = next(m for m in registry.list_models(trained_store) if m.algorithm == "linear")
    (trained_store.workspace.home / datasets.list_datasets(trained_store)[0].snapshot_path).unlink()
    at = open_page("pages/model.py", id=model.id)
    at.session_state["model_tabs"] = "Explainability"
    at.run()
    assert not at.exception
    assert at.error[0].value.startswith("**The snapshot of dataset 'churn' is missing")


def demo_run(store: Store, demo: str, target: str, algorithm: str) -> Run:
    """A succeeded run, by the worker, of one model trained on a demo table, deployed alone."""
    dataset = datasets.add_demo(store, demo, actor="tester")
    result = train(
        store,
        TrainRequest(dataset_id=dataset.id, target=target, algorithms=(algorithm,)),
        actor="tester",
    )
    name = deployments.deploy(store, result.models[0].id, "staging", actor="tester").name
    queued = runs.enqueue_run(store, name, actor="tester")
    assert worker.run_once(store)
    done = runs.get_run(store, queued.id)
    assert done.status == "succeeded", done.error
    return done


@pytest.fixture
def wine_run(store: Store) -> Run:
    """A succeeded run of a multiclass (wine) logistic regression, rows without a key."""
    return demo_run(store, "wine", "cultivar", "linear")


def test_the_class_selector_of_a_multiclass_run(
    store: Store, wine_run: Run, open_page: OpenPage
) -> None:
    at = open_page("pages/results.py", run=wine_run.id)
    select_row(at, "main", 0)
    assert not at.exception and not at.error
    chooser = at.selectbox(key="explain_class_main")
    assert chooser.value == "predicted class"
    [e] = explain.explain_rows(store, wine_run.id, [0], by="row")
    assert e.class_ == e.prediction

    def shown() -> tuple[str, list[float]]:
        caption = next(c.value for c in at.caption if c.value.startswith("Average row"))
        bars = next(f for f in charts(at) if title(f).startswith("logit"))
        return caption, [r["value"] for r in ui_charts.rows_of(bars)]

    caption, predicted_bars = shown()
    assert f"(logit (softmax input) of class {e.class_})" in caption
    other = next(c for c in chooser.options if c not in ("predicted class", str(e.class_)))
    chooser.set_value(other).run()
    assert not at.exception and not at.error
    caption, other_bars = shown()
    assert f"(logit (softmax input) of class {other})" in caption
    [o] = explain.explain_rows(store, wine_run.id, [0], class_=other, by="row")
    assert o.output != pytest.approx(e.output)
    lead = next(m.value for m in at.markdown if "likely cultivar" in m.value)
    assert f"likely cultivar = {other}** (predicted: {e.prediction})" in lead
    assert sorted(other_bars) == pytest.approx(sorted(c.contribution for c in o.contributions))
    assert sorted(other_bars) != pytest.approx(sorted(predicted_bars))


def test_a_regression_forest_shows_its_spread_not_a_confidence(
    store: Store, open_page: OpenPage
) -> None:
    run = demo_run(store, "diabetes", "progression", "random_forest")
    spreads = pd.read_parquet(runs.result_path(store.workspace, run.id))["confidence"]
    at = open_page("pages/results.py", run=run.id)
    assert not at.exception and not at.error
    labels = [m.label for m in at.metric]
    assert "Mean spread of trees (main)" in labels and not any("confidence" in x for x in labels)
    shown = next(m.value for m in at.metric if m.label.startswith("Mean spread"))
    assert shown == f"± {spreads.mean():,.4g}"
    assert not [s for s in at.slider if s.label.startswith("Confidence")]
    select_row(at, "main", 1)  # number columns only: the row number stays an integer
    assert not at.exception and not at.error, [e.value for e in at.error]
    [e] = explain.explain_rows(store, run.id, [1], by="row")
    lead = next(m.value for m in at.markdown if "Predicted progression" in m.value)
    assert lead.startswith(
        f"row 1: **Predicted progression = {ui_charts.plain_number(e.prediction)}**"
    )
    words = next(
        c.value for c in at.caption if c.value.startswith("The bars are in the target's unit")
    )
    assert "unit: they start from the average row's" in words
    slider = at.slider(key="results_spread_main")
    assert slider.value == pytest.approx(spreads.max()) and slider.max == pytest.approx(
        spreads.max()
    )
    cut = float(spreads.median())
    slider.set_value(cut).run()
    caption = next(c.value for c in at.caption if "rows match" in c.value)
    assert caption.startswith(f"{int((spreads <= cut).sum()):,} rows match")
