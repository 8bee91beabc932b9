"""Explain a row and read global importance on the results page (AppTest)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import datasets, deployments, explain, registry, runs
from core.entities import Run
from core.store import Store
from core.training import TrainRequest, train
from core.worker import loop as worker

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


def charts(at: AppTest) -> list[dict]:
    """The plotly figures of the page (AppTest does not render them: read their spec)."""
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def test_explain_a_row_of_the_page(trained_store: Store, run: Run, open_page: OpenPage) -> None:
    at = open_page("pages/results.py", run=run.id)
    assert not at.exception and not at.error
    picker = at.selectbox(key="explain_row_main")
    first_key = at.dataframe[0].value["customer_id"].iloc[0]
    assert picker.options[0] == first_key and picker.value is None
    picker.set_value(first_key).run()
    assert not at.exception and not at.error
    [e] = explain.explain_rows(trained_store, run.id, [first_key])
    caption = next(c.value for c in at.caption if c.value.startswith("Base value"))
    assert "Explainer: TreeExplainer" in caption and "log-odds" in caption
    assert f"output {e.output:.4g}" in caption
    bars = next(f for f in charts(at) if f["layout"]["title"]["text"].startswith("log-odds"))
    labels = bars["data"][0]["y"]
    assert len(labels) == 7 and labels[-1].startswith(e.contributions[0].feature + " = ")
    assert set(bars["data"][0]["marker"]["color"]) <= {"#2f9e44", "#1c7ed6"}


def test_global_importance_main_and_challenger(
    trained_store: Store, run: Run, open_page: OpenPage
) -> None:
    at = open_page("pages/results.py", run=run.id)
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    assert any(t.startswith("main: mean |SHAP| (log-odds), 600 rows") for t in titles), titles
    assert any(t.startswith("challenger: mean |SHAP|") for t in titles), titles
    explain.importance_path(trained_store, run.id, "challenger").unlink()
    at = open_page("pages/results.py", run=run.id)
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
    at.radio(key="importance_view_main").set_value("Beeswarm").run()
    assert not at.exception and not at.error
    sample = explain.get_shap_sample(trained_store, run.id, "main")
    assert sample is not None
    swarm = next(
        f
        for f in charts(at)
        if f["layout"]["title"]["text"] == "main: SHAP on the log-odds scale, top features"
    )
    assert swarm["layout"]["yaxis"]["ticktext"] == sample.ranked()[:10][::-1]
    assert sum(len(trace["x"]) for trace in swarm["data"]) == 7 * sample.rows
    assert any("SHAP of class yes" in c.value for c in at.caption)
    at.radio(key="importance_view_main").set_value("Dependence").run()
    at.selectbox(key="dependence_feature_main").set_value("tenure_months").run()
    assert not at.exception and not at.error
    view = next(f for f in charts(at) if f["layout"]["title"]["text"] == "main: tenure_months")
    assert view["data"][0]["y"] == pytest.approx(sample.shap("tenure_months").tolist())


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
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    assert "holdout: mean |SHAP| (log-odds), 120 rows" in titles, titles
    assert any("120 holdout rows" in c.value for c in at.caption)
    written = stored.stat().st_mtime_ns
    at.radio(key="importance_view_model").set_value("Beeswarm").run()
    assert not at.exception and not at.get("progress")  # read from the file
    assert any(
        f["layout"]["title"]["text"] == "holdout: SHAP on the log-odds scale, top features"
        for f in charts(at)
    )
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
    dataset = datasets.add_demo(store, demo)
    result = train(
        store, TrainRequest(dataset_id=dataset.id, target=target, algorithms=(algorithm,))
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
    at.selectbox(key="explain_row_main").set_value(0).run()
    assert not at.exception and not at.error
    chooser = at.selectbox(key="explain_class_main")
    assert chooser.value == "predicted class"
    [e] = explain.explain_rows(store, wine_run.id, [0], by="row")
    assert e.class_ == e.prediction

    def shown() -> tuple[str, list[float]]:
        caption = next(c.value for c in at.caption if c.value.startswith("Base value"))
        bars = next(f for f in charts(at) if f["layout"]["title"]["text"].startswith("logit"))
        return caption, bars["data"][0]["x"]

    caption, predicted_bars = shown()
    assert f"of class {e.class_} scale" in caption
    other = next(c for c in chooser.options if c not in ("predicted class", str(e.class_)))
    chooser.set_value(other).run()
    assert not at.exception and not at.error
    caption, other_bars = shown()
    assert f"of class {other} scale" in caption
    [o] = explain.explain_rows(store, wine_run.id, [0], class_=other, by="row")
    assert f"output {o.output:.4g}" in caption and o.output != pytest.approx(e.output)
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
    slider = at.slider(key="results_spread_main")
    assert slider.value == pytest.approx(spreads.max()) and slider.max == pytest.approx(
        spreads.max()
    )
    cut = float(spreads.median())
    slider.set_value(cut).run()
    caption = next(c.value for c in at.caption if "rows match" in c.value)
    assert caption.startswith(f"{int((spreads <= cut).sum()):,} rows match")
