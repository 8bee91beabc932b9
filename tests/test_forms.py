"""The prediction form's core (issue 17 item 14): fields from the schema and training profile
on data users bring, who may use a form, and one row scored as the API scores it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core import datasets, deployments, forms, projects, registry, users
from core.datasets import loans_frame
from core.entities import Deployment
from core.errors import Forbidden, NotFound, Unauthorized
from core.store import Store
from core.training import TrainRequest, train
from tests.test_api import api_server, call


def _deploy(store: Store, frame: pd.DataFrame, target: str, name: str) -> Deployment:
    dataset = datasets.register_frame(
        store, frame, name=name, kind="upload", source=f"{name}.csv", actor="tester"
    )
    result = train(
        store,
        TrainRequest(dataset_id=dataset.id, target=target, algorithms=("linear",)),
        actor="tester",
    )
    return deployments.deploy(store, result.models[0].id, "staging", name=name, actor="tester")


def _loans() -> pd.DataFrame:
    frame = loans_frame(n_rows=300, seed=3)
    frame.loc[frame.index[::7], "income"] = None
    frame.loc[frame.index[::11], "home_owner"] = None
    return frame


def test_fields_of_loans_0_1_labels_yes_no_text_missing_values_non_ascii(store: Store) -> None:
    d = _deploy(store, _loans(), "default", "loans")
    model = forms.endpoint(store, d).main
    by = {f.name: f for f in forms.fields(model)}
    assert list(by) == model.schema.feature_names  # the schema's order, the key left out
    income = by["income"]
    assert income.kind == "number" and income.low is not None and income.high is not None
    assert income.low < income.default < income.high
    assert "training range" in income.hint and "missing in 1" in income.hint  # 1/7 missing
    score = by["credit_score"]
    assert score.kind == "integer" and isinstance(score.default, int)
    owner = by["home_owner"]
    assert (owner.kind, owner.categories) == ("category", ("no", "yes"))
    region = by["region"]
    assert "Île-de-France" in region.categories and region.default in region.categories
    frequencies = model.profile["features"]["region"]["frequencies"]
    assert region.default == max(frequencies, key=frequencies.__getitem__)  # the mode
    edges = model.profile["features"]["credit_score"]["edges"]
    assert len(edges) == 11 and score.default == round(edges[5])  # the training rows' median


def test_fields_of_boolean_labels_and_flags(store: Store) -> None:
    rng = np.random.default_rng(4)
    n = 300
    member = rng.random(n) < 0.7
    spend = rng.normal(50, 10, n).round(1)
    frame = pd.DataFrame(
        {"member": member, "spend": spend, "left": (~member & (spend < 55)) | (rng.random(n) < 0.1)}
    )
    d = _deploy(store, frame, "left", "members")
    e = forms.endpoint(store, d)
    member_field, spend_field = forms.fields(e.main)
    assert (member_field.kind, member_field.default) == ("flag", True)  # 70 % true
    assert spend_field.kind == "number" and spend_field.default is not None
    share = e.main.profile["features"]["member"]["mean"]
    assert member_field.hint == f"true in {share:.0%} of training rows".replace("%", " %")
    done = forms.predict(e, {"member": False, "spend": 40.0}, "tester")
    assert isinstance(done.prediction, bool) and set(done.probabilities or {}) == {"False", "True"}
    assert done.explanation is not None and done.explanation.class_ is done.prediction


@pytest.mark.parametrize(
    ("stats", "median"),
    [
        ({"edges": [float(i) for i in range(11)], "fractions": [0.1] * 10}, 5.0),
        ({"edges": [0.0, 1.0, 3.0], "fractions": [0.8, 0.2]}, 0.625),  # most rows at 0..1
        ({"edges": [2.0], "fractions": [1.0]}, 2.0),  # a constant
        ({"edges": [], "fractions": []}, None),  # no training values
    ],
)
def test_the_training_median_from_the_profile(
    stats: dict[str, list[float]], median: float | None
) -> None:
    assert forms.training_median(stats) == median


def test_a_form_predicts_what_the_api_predicts_for_the_same_row(store: Store) -> None:
    d = _deploy(store, _loans(), "default", "loans")
    deployments.set_access(store, "loans", "public", actor="tester")
    e = forms.endpoint(store, deployments.get_deployment(store, "loans"))
    rows = [
        {f.name: f.default for f in forms.fields(e.main)},
        {
            "income": None,
            "credit_score": 320,
            "loan_amount": 30000.0,
            "home_owner": "yes",
            "region": "Île-de-France",
        },
        {
            "income": 90000.0,
            "credit_score": 800,
            "loan_amount": 1000.0,
            "home_owner": None,
            "region": "Région inconnue",
        },  # a category the model never saw
    ]
    done = [forms.predict(e, row, None) for row in rows]
    url = "/v1/deployments/loans/invocations?explain=true"
    with api_server(store) as base:  # one call per row, as the form sends it
        answers = [call(base + url, {"dataframe_records": [row]}) for row in rows]
    for (status, answer), p in zip(answers, done, strict=True):
        assert status == 200 and p.explanation is not None
        assert answer["predictions"] == [p.prediction]
        assert answer["probabilities"] == [p.probabilities]  # to the last bit
        [explained] = answer["explanations"]
        assert explained["output"] == p.explanation.output
        assert explained["contributions"] == {
            c.feature: c.contribution for c in p.explanation.contributions
        }
    record = done[1].record
    assert (record["source"], record["key_id"], record["user"], record["deployment_id"]) == (
        "form",
        None,
        None,
        d.id,
    )
    assert json.loads(json.dumps(record["inputs"]))["region"] == ["Île-de-France"]
    assert done[1].explanation is not None and "Left missing: income" in done[1].explanation.note


def test_who_may_use_a_form(deploy_churn: object, trained_store: Store) -> None:
    d = deploy_churn("linear")  # type: ignore[operator]
    for name, role in (("vic", "viewer"), ("otto", None)):
        users.create_user(trained_store, name, password=None, actor="tester")
        if role:
            projects.set_collaborator(trained_store, "Default", name, role, actor="tester")
    deployments.set_access(trained_store, d.name, "project", actor="tester")
    d = deployments.get_deployment(trained_store, d.name)
    forms.check_access(trained_store, d, "vic")
    forms.check_access(trained_store, d, "tester")  # an admin
    with pytest.raises(Forbidden, match="open to collaborators of project Default only"):
        forms.check_access(trained_store, d, "otto")
    with pytest.raises(Unauthorized, match="is for logged-in users"):
        forms.check_access(trained_store, d, None)
    deployments.set_access(trained_store, d.name, "instance", actor="tester")
    d = deployments.get_deployment(trained_store, d.name)
    forms.check_access(trained_store, d, "otto")
    users.set_disabled(trained_store, "otto", True, actor="tester")
    with pytest.raises(Forbidden, match="must be logged in as an active user"):
        forms.check_access(trained_store, d, "otto")
    with pytest.raises(Unauthorized):
        forms.check_access(trained_store, d, None)
    deployments.set_access(trained_store, d.name, "public", actor="tester")
    forms.check_access(trained_store, deployments.get_deployment(trained_store, d.name), None)
    assert forms.is_public(trained_store, d.name) and not forms.is_public(trained_store, "nope")


def test_unknown_and_deleted_forms_say_which(deploy_churn: object, trained_store: Store) -> None:
    from core import promotion

    d = deploy_churn("linear")  # type: ignore[operator]
    with pytest.raises(NotFound, match="there is no such deployment"):
        forms.find(trained_store, "nope")
    promotion.delete_deployment(trained_store, d.name, confirm=d.name, actor="tester")
    with pytest.raises(NotFound, match=r"It was deleted on .* so its form is gone too"):
        forms.find(trained_store, d.name)
    assert forms.form_path("churn prod") == "form?name=churn+prod"
    assert registry.list_models(trained_store)  # the models stay


def test_a_forms_challenger_answer_is_logged_beside_the_main_one(store: Store) -> None:
    dataset = datasets.register_frame(
        store, _loans(), name="loans", kind="upload", source="loans.csv", actor="tester"
    )
    result = train(
        store,
        TrainRequest(
            dataset_id=dataset.id, target="default", algorithms=("linear", "random_forest")
        ),
        actor="tester",
    )
    main, other = result.models
    deployments.deploy(
        store, main.id, "staging", name="loans", challenger_id=other.id, actor="tester"
    )
    e = forms.endpoint(store, deployments.get_deployment(store, "loans"))
    row = {f.name: f.default for f in forms.fields(e.main)} | {"region": "Île-de-France"}
    done = forms.predict(e, row, "tester")
    shadow = done.challenger_record
    assert shadow is not None and shadow["status"] == 200
    assert (shadow["kind"], shadow["request_id"], shadow["source"], shadow["rows"]) == (
        "challenger",
        done.record["request_id"],
        "form",
        1,
    )
    expected = registry.load_estimator(store, other).predict(
        pd.DataFrame([row])[other.schema.feature_names]
    )
    assert shadow["outputs"]["predictions"] == expected.tolist()
    alone = forms.endpoint(
        store, deployments.deploy(store, main.id, "staging", name="loans", actor="tester")
    )
    assert forms.predict(alone, row, None).challenger_record is None  # no challenger, no record
