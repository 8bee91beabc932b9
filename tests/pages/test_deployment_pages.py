"""Deploy, promote, roll back, run and read results by clicking through the pages (AppTest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import audit, deployments, promotion, registry, runs
from core.store import Store
from core.worker import loop as worker
from tests.files import source_gone

OpenPage = Callable[..., AppTest]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture
def deployed(trained_store: Store) -> str:
    main, challenger = (m.id for m in registry.list_models(trained_store))
    return deployments.deploy(
        trained_store, main, "staging", challenger_id=challenger, actor="tester"
    ).name


def test_deploy_from_the_model_page(trained_store: Store, open_page: OpenPage) -> None:
    model = registry.list_models(trained_store)[0]
    at = open_page("pages/model.py", id=model.id)
    at.session_state["model_tabs"] = "Deploy"  # only the open tab renders
    at.run()
    button(at, "Deploy to staging").click().run()
    assert not at.exception and not errors(at)
    assert any("Deployed as version 1 of churn-staging" in s.value for s in at.success)
    [d] = deployments.list_deployments(trained_store)
    assert d.current.main_model_id == model.id


def test_deployments_list_shows_status_and_link(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployments.py")
    table = at.dataframe[0].value
    assert list(table["deployment"]) == [deployed]
    assert list(table["status"]) == ["deployed"] and list(table["last run"]) == ["never"]
    # selecting a row opens the deployment in the same browser tab (no LinkColumn, no new tab)
    at.session_state["deployments_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert at.title[0].value == "Deployment" and at.query_params["name"] == deployed


def test_promote_then_roll_back_from_the_deployment_page(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed)
    assert not at.exception and not errors(at)
    assert button(at, "Promote to production").disabled  # not validated: the gate fails
    at.text_area(
        key=next(t.key for t in at.text_area if t.label.startswith("Override reason"))
    ).set_value("the gate is tested in test_validation_page.py").run()
    button(at, "Promote to production").click().run()
    assert any("churn-production now serves version 1" in s.value for s in at.success)
    other = registry.list_models(trained_store)[1].id
    deployments.deploy(trained_store, other, "staging", actor="tester")
    at = open_page("pages/deployment.py", name=deployed, section="versions")
    button(at, "Make current").click().run()
    assert deployments.get_deployment(trained_store, deployed).current.number == 1
    assert audit.list_entries(trained_store, deployed)[0].action == "rollback"


def test_delete_needs_the_typed_name(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed)
    d = deployments.get_deployment(trained_store, deployed)
    at.session_state[f"delete_open_{d.id}"] = True  # the user opens "Delete this deployment"
    at.run()
    assert button(at, "Delete").disabled
    at.text_input(key=next(t.key for t in at.text_input if "to confirm" in t.label)).set_value(
        deployed
    ).run()
    button(at, "Delete").click().run()
    assert deployments.list_deployments(trained_store) == []


def test_unknown_deployment_name_is_explained(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name="nope")
    assert any("No deployment 'nope'" in e for e in errors(at))
    assert not at.exception


def test_pipeline_preview_shows_each_block_and_a_sql_error(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="pipeline")
    assert any("Model block (locked)" in i.value for i in at.info)
    button(at, "Add a transform").click().run()
    sql = next(t for t in at.text_area if t.label == "SELECT over `input`")
    sql.set_value("SELECT * FROM input WHERE tenure_months > 12").run()
    button(at, "Preview").click().run()
    assert not at.exception
    assert any("fits the model's schema" in s.value for s in at.success), errors(at)
    sql = next(t for t in at.text_area if t.label == "SELECT over `input`")
    sql.set_value("SELEC nonsense").run()
    button(at, "Preview").click().run()
    assert any("transform_1" in e for e in errors(at)), errors(at)


def test_run_now_then_open_the_results(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="runs")
    button(at, "Run now").click().run()
    assert not at.exception and not errors(at)
    [queued] = runs.list_runs(trained_store, deployed)
    assert queued.status == "queued"
    assert worker.run_once(trained_store)
    run = runs.get_run(trained_store, queued.id)
    assert run.status == "succeeded", run.error
    at = open_page("pages/results.py", run=run.id)
    assert not at.exception and not errors(at)
    assert at.metric[0].value == f"{run.rows_out:,}"
    table = at.dataframe[0].value
    assert {"customer_id", "prediction", "confidence", "input_quality"} <= set(table.columns)
    assert len(table) == 50
    at.multiselect(key=next(m.key for m in at.multiselect if m.label == "Input columns")).set_value(
        ["age"]
    ).run()
    assert "contract" not in at.dataframe[0].value.columns
    at.multiselect(key="results_classes").set_value(["yes"]).run()
    assert set(at.dataframe[0].value["prediction"]) == {"yes"}


def test_results_of_a_failed_run_show_the_reason(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    source_gone(trained_store, deployed, "missing.csv")
    run = runs.enqueue_run(trained_store, deployed, actor="tester")
    worker.run_once(trained_store)
    at = open_page("pages/results.py", run=run.id)
    assert any("The run failed" in e and "missing.csv" in e for e in errors(at)), errors(at)


def test_purge_and_runs_of_a_deleted_deployment(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    run = runs.enqueue_run(trained_store, deployed, actor="tester")
    assert worker.run_once(trained_store)
    run = runs.get_run(trained_store, run.id)
    promotion.delete_deployment(trained_store, deployed, confirm=deployed, actor="tester")
    at = open_page("pages/results.py")  # no run given: every run is offered, deleted ones too
    assert at.selectbox(key="results_pick").value == run.id
    assert not at.exception and not errors(at)
    button(at, "Purge results").click().run()
    assert any(f"results of run {run.id} were purged" in e for e in errors(at)), errors(at)
    assert at.metric[0].value == f"{run.rows_out:,}"  # the summary stays


def test_drift_banner_links_to_retraining(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    import pandas as pd

    from core import datasets

    served = datasets.churn_frame(n_rows=2000, seed=3).drop(columns=["churn"])
    served["age"] = served["age"] + 30
    served["contract"] = "two-year"
    path = trained_store.workspace.home / "incoming" / "shifted.parquet"
    path.parent.mkdir()
    pd.DataFrame(served).to_parquet(path, index=False)
    runs.enqueue_run(
        trained_store,
        deployed,
        source_override={"kind": "file", "path": "incoming/shifted.parquet"},
        actor="tester",
    )
    assert worker.run_once(trained_store)
    at = open_page("pages/deployment.py", name=deployed)
    assert not at.exception and not errors(at)
    [banner] = [w.value for w in at.warning if "Model may be obsolete" in w.value]
    assert "age" in banner and "contract" in banner
    link = next(p for p in at.get("page_link") if "Retrain" in p.proto.label)
    experiment = registry.get_experiment(
        trained_store, registry.list_models(trained_store)[0].experiment_id
    )
    assert link.proto.page == "train"
    assert link.proto.query_string == f"dataset={experiment.dataset_id}&target=churn"
