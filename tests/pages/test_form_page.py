"""The prediction form page (issue 17 item 14) and the deployments list's URL and running
columns (item 15), on a real store with real models (AppTest)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core import (
    api_status,
    datasets,
    deployments,
    prediction_log,
    projects,
    promotion,
    registry,
    users,
)
from core.entities import Deployment
from core.store import RACY_SECONDS, Store, utcnow
from core.training import TrainRequest, train
from core.ui.auth import FORM_LOGIN_NOTE
from tests.conftest import DeployChurn

OpenPage = Callable[..., AppTest]
FORM = "pages/form.py"


def _form_records(store: Store) -> list[dict[str, Any]]:
    return [
        r for r in prediction_log.read_all(store.workspace).to_pylist() if r["source"] == "form"
    ]


def _predict(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Predict").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_the_form_has_a_field_per_feature_with_hints_and_defaults(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    d = deploy_churn("linear")
    at = open_page(FORM, name=d.name)
    assert not at.exception and not _errors(at)
    assert [t.value for t in at.title] == ["Prediction form"]
    numbers = {n.label: n for n in at.number_input}
    assert set(numbers) == {"age", "tenure_months", "monthly_charges", "support_tickets"}
    tenure = numbers["tenure_months"]
    assert d.current is not None
    model = registry.get_model(trained_store, d.current.main_model_id)
    edges = model.profile["features"]["tenure_months"]["edges"]
    assert tenure.value == round(edges[5])  # the training median, an integer
    hints = [c.value for c in at.caption]
    assert f"training range 0 to 71, median {tenure.value}" in hints  # under the field
    selects = {s.label: s for s in at.selectbox}
    contract = selects["contract"]
    assert set(contract.options) == {"month-to-month", "one-year", "two-year"}
    assert contract.value in contract.options and "most common" in (contract.help or "")
    assert "customer_id" not in numbers and "customer_id" not in selects  # the key is no input


def test_submitting_shows_the_prediction_why_and_logs_one_form_record(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    d = deploy_churn("gradient_boosting")
    at = _predict(open_page(FORM, name=d.name))
    text = _texts(at)
    assert "likely churn = " in text  # "67 % likely churn = yes"
    assert "The bars are in log-odds" in text and "The average row starts at" in text
    assert "green pushes the prediction up" in text
    assert len(at.get("vega_lite_chart")) == 1
    probabilities = at.dataframe[0].value
    assert set(probabilities["class"]) == {"no", "yes"}
    assert abs(probabilities["probability"].sum() - 1) < 1e-9
    [record] = _form_records(trained_store)
    assert (record["kind"], record["key_id"], record["user"], record["deployment"]) == (
        "main",
        None,
        "tester",
        d.name,
    )
    assert record["request_id"] in text
    at.run()  # a rerun shows the same answer and logs nothing more
    assert "likely churn = " in _texts(at) and len(_form_records(trained_store)) == 1


def test_a_public_form_needs_no_login(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    d = deploy_churn("linear")
    deployments.set_access(trained_store, d.name, "public", actor="tester")
    at = open_page(FORM, as_user=None, name=d.name)
    assert [t.value for t in at.title] == ["Prediction form"]
    assert not at.sidebar.caption, "no workspace path or sidecar status for visitors"
    _predict(at)
    assert "likely churn = " in _texts(at)
    [record] = _form_records(trained_store)
    assert record["user"] is None and record["key_id"] is None
    # the exemption is the form of that deployment only: any other page is the login page
    other = open_page("pages/deployment.py", as_user=None, name=d.name)
    assert [t.value for t in other.title] == ["Log in to ModelDeck"]


def test_a_form_that_is_not_public_asks_a_visitor_to_log_in(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    d = deploy_churn("linear")  # project access by default
    for name in (d.name, "no-such-deployment"):  # a visitor is not told which names exist
        at = open_page(FORM, as_user=None, name=name)
        assert [t.value for t in at.title] == ["Log in to ModelDeck"]
        assert [i.value for i in at.info] == [FORM_LOGIN_NOTE]


def _outsider(store: Store, name: str, role: str | None = None) -> None:
    users.create_user(store, name, password=None, actor="tester")
    if role:
        projects.set_collaborator(store, "Default", name, role, actor="tester")


def test_instance_and_project_forms_refuse_who_may_not_use_them(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    d = deploy_churn("linear")
    _outsider(trained_store, "otto")
    _outsider(trained_store, "vic", "viewer")
    at = open_page(FORM, as_user="otto", name=d.name)  # project, the default level
    [error] = _errors(at)
    assert "open to collaborators of project Default only; you are not one" in error
    assert "a viewer is enough" in error and not at.number_input
    at = open_page(FORM, as_user="vic", name=d.name)
    assert not _errors(at) and at.number_input
    deployments.set_access(trained_store, d.name, "instance", actor="tester")
    at = open_page(FORM, as_user="otto", name=d.name)  # instance: any logged-in user
    assert not _errors(at) and at.number_input


def test_unknown_and_deleted_deployments_say_so(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    d = deploy_churn("linear")
    [error] = _errors(open_page(FORM, name="nope"))
    assert "No deployment 'nope'." in error and "there is no such deployment" in error
    promotion.delete_deployment(trained_store, d.name, confirm=d.name, actor="tester")
    [error] = _errors(open_page(FORM, name=d.name))
    assert "It was deleted on" in error
    at = open_page(FORM)
    assert "Open a form from a deployment's link" in at.info[0].value


def test_an_empty_number_and_a_non_ascii_category_are_scored(
    store: Store, open_page: OpenPage
) -> None:
    frame = datasets.loans_frame(n_rows=300, seed=3)  # 0/1 labels, yes/no text, "Île-de-France"
    frame.loc[frame.index[::7], "income"] = None
    dataset = datasets.register_frame(
        store, frame, name="loans", kind="upload", source="loans.csv", actor="tester"
    )
    request = TrainRequest(dataset_id=dataset.id, target="default", algorithms=("linear",))
    model = train(store, request, actor="tester").models[0]
    deployments.deploy(store, model.id, "staging", name="loans", actor="tester")
    at = open_page(FORM, name="loans")
    at.multiselect[0].set_value(["income"])
    next(n for n in at.number_input if n.label == "credit_score").set_value(9000)
    next(s for s in at.selectbox if s.label == "region").set_value("Île-de-France")
    _predict(at)
    assert not _errors(at)
    text = _texts(at)
    assert "likely default = " in text
    assert "credit_score = 9,000 is outside the training range (301 to 848)" in text
    assert any("Left missing: income" in i.value for i in at.info)
    [record] = _form_records(store)
    inputs = json.loads(record["inputs"])
    assert inputs["income"] == [None] and inputs["region"] == ["Île-de-France"]
    assert json.loads(record["outputs"])["predictions"][0] in (0, 1)


def test_a_rollback_is_followed(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    deploy_churn("linear")
    d = deploy_churn("gradient_boosting")
    at = open_page(FORM, name=d.name)
    assert "version 2" in _texts(at)
    deployments.rollback(trained_store, d.name, 1, actor="tester")
    at.run()
    assert "version 1" in _texts(at) and "version 2" not in _texts(at)
    _predict(at)
    assert _form_records(trained_store)[0]["version"] == 1


def test_the_deployment_page_links_its_form(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    d = deploy_churn("linear")
    at = open_page("pages/deployment.py", name=d.name)
    assert not at.exception
    text = _texts(at)
    assert f"Share it: /form?name={d.name} · open to collaborators of project Default." in text
    assert "API: not running: the API is stopped" in text
    links = [e for e in at.get("page_link") if "prediction form" in str(e.proto.label)]
    assert links and links[0].proto.page == "form"


def _publish(store: Store, d: Deployment) -> None:
    assert d.current is not None
    served = api_status.Served(d.name, d.id, d.current.number, True)
    now = utcnow()
    api_status.write(store.workspace, api_status.ApiState(os.getpid(), now, now, {d.name: served}))


def test_the_deployments_list_has_the_form_url_and_running(
    deploy_churn: DeployChurn, trained_store: Store, open_page: OpenPage
) -> None:
    d = deploy_churn("linear")
    at = open_page("pages/deployments.py")
    table = at.dataframe[0].value
    assert list(table["URL"]) == [f"/form?name={d.name}"]
    assert list(table["status"]) == ["deployed"]
    assert table["running"].iloc[0].startswith("not running: the API is stopped")
    assert "start it with `modeldeck up`" in table["running"].iloc[0]  # the app says how
    _publish(trained_store, d)
    at.run()
    assert list(at.dataframe[0].value["running"]) == ["running"]
    # a click on the URL cell opens the form in the same tab
    at.session_state["deployments_table"] = {
        "selection": {"rows": [], "columns": [], "cells": [[0, "URL"]]}
    }
    at.run()
    assert [t.value for t in at.title] == ["Prediction form"]
    assert at.query_params["name"] == d.name


def test_a_rerun_of_the_form_reads_nothing_until_access_changes(
    deploy_churn: DeployChurn,
    trained_store: Store,
    open_page: OpenPage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The form's lookup and access check are kept until the next write to the store, so a
    rerun (every widget change) opens no connection, and a removed collaborator is refused at
    the next run all the same."""
    from tests.test_worker import count_connections

    d = deploy_churn("linear")
    _outsider(trained_store, "vic", "viewer")
    at = open_page(FORM, as_user="vic", name=d.name)
    assert not _errors(at) and at.number_input
    time.sleep(RACY_SECONDS + 0.1)  # nothing is kept while the newest write is this recent
    at.run()
    opened = count_connections(monkeypatch)
    at.run()
    assert opened == [] and not _errors(at)
    projects.remove_collaborator(trained_store, "Default", "vic", actor="tester")
    at.run()
    [error] = _errors(at)
    assert "open to collaborators of project Default only; you are not one" in error
