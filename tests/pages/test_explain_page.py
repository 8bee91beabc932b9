"""Explain a row and read global importance on the results page (AppTest)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import deployments, explain, registry, runs, worker
from core.entities import Run
from core.store import Store

OpenPage = Callable[..., AppTest]


@pytest.fixture
def run(trained_store: Store) -> Run:
    """A succeeded churn run (gradient boosting main, linear challenger) by the worker."""
    by_algorithm = {m.algorithm: m.id for m in registry.list_models(trained_store)}
    name = deployments.deploy(trained_store, by_algorithm["gradient_boosting"], "staging",
                              challenger_id=by_algorithm["linear"]).name
    queued = runs.enqueue_run(trained_store, name)
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


def test_global_importance_main_and_challenger(trained_store: Store, run: Run,
                                               open_page: OpenPage) -> None:
    at = open_page("pages/results.py", run=run.id)
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    assert any(t.startswith("main: mean |SHAP| (log-odds), 600 rows") for t in titles), titles
    assert any(t.startswith("challenger: mean |SHAP|") for t in titles), titles
    explain.importance_path(trained_store, run.id, "challenger").unlink()
    at = open_page("pages/results.py", run=run.id)
    assert any(i.value == "challenger: computing…" for i in at.info)
    assert any(b.label == "Refresh" for b in at.button)
