"""Every page renders on the demo workspace, and the main flows are clicked through (AppTest)."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path

import joblib
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from streamlit.testing.v1 import AppTest

from core import datasets, registry
from core.store import Store
from core.ui import PAGES

OpenPage = Callable[..., AppTest]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture
def demo_env(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("MODELDECK_HOME", str(demo_home))
    return Store.open(demo_home)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.url_path)
def test_every_page_renders_on_the_demo_workspace(
    demo_env: Store, page, open_page: OpenPage
) -> None:
    at = open_page(page.path)
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [page.title]
    assert not errors(at)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.url_path)
def test_every_page_renders_on_an_empty_workspace(store: Store, page, open_page: OpenPage) -> None:
    at = open_page(page.path)
    assert not at.exception, [e.value for e in at.exception]
    assert not errors(at)


def test_overview_offers_the_demo_when_empty(store: Store, open_page: OpenPage) -> None:
    at = open_page("pages/home.py")
    assert any("Create the demo workspace" in b.label for b in at.button)


def test_training_flow_detects_the_key_and_shows_a_leaderboard(
    store: Store, open_page: OpenPage
) -> None:
    datasets.add_demo(store, "customer_churn", actor="tester")
    at = open_page("pages/train.py")
    scope = next(s for s in at.selectbox if s.label == "Prediction key")
    assert scope.value == "customer_id"
    features = next(m for m in at.multiselect if m.label == "Features")
    assert "customer_id" not in features.value and "contract" in features.value
    assert any("`customer_id` is the prediction key" in c.value for c in at.caption)
    next(m for m in at.multiselect if m.label == "Algorithms").set_value(
        ["linear", "hist_gradient_boosting"]
    )
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not errors(at)
    assert any("Trained version 1" in s.value for s in at.success)
    board = at.dataframe[-1].value
    assert sorted(board["model"]) == ["hist_gradient_boosting · v1", "linear · v1"]
    assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(board.columns)
    models = registry.list_models(store)
    assert len(models) == 2 and all(m.schema.key_column == "customer_id" for m in models)
    next(b for b in at.button if b.label == "Deploy to staging").click().run()  # next step
    assert any("Deployed as version 1" in s.value for s in at.success), errors(at)


def test_training_form_explains_a_bad_target_and_disables_training(
    store: Store, open_page: OpenPage
) -> None:
    frame = datasets.demo_frame("diabetes").assign(constant=1)
    datasets.register_frame(
        store, frame, name="diab", kind="upload", source="diab.csv", actor="tester"
    )
    at = open_page("pages/train.py", target="constant")
    assert any("has only the value '1'" in e for e in errors(at))
    train = next(b for b in at.button if b.label == "Train")
    assert train.disabled
    assert registry.list_models(store) == []


def test_registering_an_upload_and_a_broken_one(store: Store, open_page: OpenPage) -> None:
    at = open_page("pages/datasets.py")
    good = pd.DataFrame({"a": range(30), "b": ["x", "y"] * 15}).to_csv(index=False).encode()
    at.get("file_uploader")[0].upload("sales.csv", good, "text/csv")
    at.run()
    next(b for b in at.button if b.label == "Register upload").click().run()
    assert any("Registered sales (30 rows)" in s.value for s in at.success)
    at.get("file_uploader")[0].clear().upload("broken.csv", b"a,b\n1,2\n3,4,5,6\n", "text/csv")
    at.run()
    next(b for b in at.button if b.label == "Register upload").click().run()
    assert any("could not be read as CSV" in e for e in errors(at))
    assert [d.name for d in datasets.list_datasets(store)] == ["sales"]


def test_a_path_outside_the_workspace_is_refused(
    store: Store, tmp_path: Path, open_page: OpenPage
) -> None:
    outside = tmp_path.parent / "outside.csv"
    outside.write_text("a,b\n1,2\n")
    at = open_page("pages/datasets.py")
    at.text_input(key="ds_path").set_value(str(outside)).run()
    next(b for b in at.button if b.label == "Register path").click().run()
    assert any("outside the workspace" in e for e in errors(at))
    assert datasets.list_datasets(store) == []


def test_models_page_runs_a_deploy_form_only_once_it_is_opened(
    demo_env: Store, open_page: OpenPage
) -> None:
    at = open_page("pages/models.py")
    assert not at.exception
    closed = [e for e in at.expander if e.label == "Deploy a model of this version"]
    assert closed and not [b for b in at.button if b.label.startswith("Deploy to")]
    version = registry.list_models(demo_env, experiment_id=None)[0].version_id
    at.session_state[f"deploy_open_{version}"] = True  # the user opens one: it stays open
    at.run()
    assert not at.exception
    assert [b.key for b in at.button if b.label.startswith("Deploy to")] == [f"deploy_{version}_go"]
    assert at.run().selectbox(key=f"deploy_pick_{version}").value is not None


def test_model_page_deep_link_and_unknown_id(demo_env: Store, open_page: OpenPage) -> None:
    model = registry.list_models(demo_env)[0]
    at = open_page("pages/model.py", id=model.id)
    assert any(model.algorithm in s.value for s in at.subheader)
    # Only the open tab renders, and the leaderboard's chart (it repeats the table's headline
    # metric) waits for its toggle.
    assert not at.get("vega_lite_chart") and not [s for s in at.selectbox if s.label == "Feature"]
    at.toggle(key="model_board_show").set_value(True).run()
    assert len(at.get("vega_lite_chart")) == 1
    at.session_state["model_tabs"] = "Training profile"
    at.run()
    assert at.selectbox(key="profile_feature").value == model.schema.features[0].name
    assert len(at.get("vega_lite_chart")) == 2  # the feature's and the prediction's profile
    at = open_page("pages/model.py", id="mdl_nope")
    assert any("No model 'mdl_nope'" in e for e in errors(at))
    assert not at.exception


def _pickled_model(store: Store) -> tuple[bytes, str]:
    frame = datasets.demo_frame("breast_cancer")
    dataset = datasets.register_frame(
        store, frame, name="bc", kind="upload", source="bc.csv", actor="tester"
    )
    X = frame.drop(columns="diagnosis")
    model = LogisticRegression(max_iter=5000).fit(X, frame["diagnosis"])
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue(), dataset.id


def test_import_of_a_pickle_needs_explicit_trust(store: Store, open_page: OpenPage) -> None:
    data, _ = _pickled_model(store)
    at = open_page("pages/import_model.py")
    at.get("file_uploader")[0].upload("clf.joblib", data)
    at.run()
    assert any("runs any code" in w.value for w in at.warning)
    target = at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Target column"))
    target.set_value("diagnosis").run()
    button = next(b for b in at.button if b.label == "Import")
    assert button.disabled
    at.checkbox(key="import_trust").check().run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert not errors(at), errors(at)
    assert any("Imported LogisticRegression" in s.value for s in at.success)
    [model] = registry.list_models(store)
    assert model.origin == "imported" and model.schema.target == "diagnosis"


def test_import_of_a_file_that_is_not_a_model(store: Store, open_page: OpenPage) -> None:
    at = open_page("pages/import_model.py")
    at.get("file_uploader")[0].upload("notes.pkl", pickle.dumps({"not": "a model"}))
    at.run()
    _pickled_model(store)
    at.run()
    at.checkbox(key="import_trust").check().run()
    target = at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Target column"))
    target.set_value("diagnosis").run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert any("not a model with predict()" in e for e in errors(at))
    assert registry.list_models(store) == []
