"""The demo workspace: five experiments of three models each, built once, never duplicated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core import datasets, demo, projects, registry
from core.cli import main as cli
from core.store import Store
from core.training import DEFAULT_ALGORITHMS

EXPECTED = {  # experiment -> (dataset, task, target, key column, classes)
    "Breast cancer diagnosis": (
        "breast_cancer",
        "binary",
        "diagnosis",
        None,
        ("benign", "malignant"),
    ),
    "Wine cultivar": ("wine", "multiclass", "cultivar", None, ("class_0", "class_1", "class_2")),
    "Diabetes progression": ("diabetes", "regression", "progression", None, ()),
    "Customer churn": ("customer_churn", "binary", "churn", "customer_id", ("no", "yes")),
    "Loan defaults": ("loan_defaults", "binary", "default", "loan_id", (0, 1)),
}


def _counts(store: Store) -> dict[str, int]:
    return {
        table: store.query(f"SELECT count(*) FROM {table}").scalar()
        for table in ("projects", "datasets", "experiments", "versions", "models")
    }


def test_demo_has_five_experiments_of_three_models(demo_home: Path) -> None:
    store = Store.open(demo_home)
    assert _counts(store) == {
        "projects": 2,
        "datasets": 5,
        "experiments": 5,
        "versions": 5,
        "models": 15,
    }
    assert [p.name for p in projects.list_projects(store)] == ["Default", demo.DEMO_PROJECT]
    experiments = {e.name: e for e in registry.list_experiments(store)}
    assert set(experiments) == set(EXPECTED)
    by_id = {d.id: d for d in datasets.list_datasets(store)}
    for name, (dataset, task, target, key, classes) in EXPECTED.items():
        experiment = experiments[name]
        assert by_id[experiment.dataset_id].name == dataset
        assert by_id[experiment.dataset_id].kind == "demo"
        assert (experiment.task, experiment.target, experiment.key_column) == (task, target, key)
        models = registry.list_models(store, experiment_id=experiment.id)
        assert sorted(m.algorithm for m in models) == sorted(DEFAULT_ALGORITHMS)
        for model in models:
            assert model.schema.classes == classes and model.version == 1
            assert [type(c) for c in model.schema.classes] == [type(c) for c in classes]
            assert (model.schema.key_column, model.task) == (key, task)
            assert target not in model.schema.feature_names
            assert key is None or key not in model.schema.feature_names


def test_every_demo_model_loads_and_predicts(demo_home: Path) -> None:
    store = Store.open(demo_home)
    for model in registry.list_models(store):
        rows = registry.background_sample(store, model).head(20)
        predictions = registry.load_estimator(store, model).predict(rows)
        assert len(predictions) == len(rows)
        if model.task != "regression":
            assert set(predictions) <= set(model.schema.classes)
            assert model.metrics["accuracy"] > 0.6
        else:
            assert model.metrics["r2"] > 0.2


def test_demo_is_not_empty_and_a_new_workspace_is(demo_home: Path, store: Store) -> None:
    assert not demo.is_empty(Store.open(demo_home))
    assert demo.is_empty(store)


def test_demo_if_empty_leaves_a_workspace_with_data_alone(
    demo_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    copy = tmp_path / "demo_copy"
    shutil.copytree(demo_home, copy)
    monkeypatch.setenv("MODELDECK_HOME", str(copy))
    before = _counts(Store.open(copy))
    assert cli.main(["--home", str(copy), "demo", "--if-empty"]) == 0
    assert "already has data; demo not created" in capsys.readouterr().out
    assert _counts(Store.open(copy)) == before


@pytest.mark.slow
def test_demo_if_empty_twice_does_not_duplicate(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo", "--if-empty"]) == 0
    out, err = capsys.readouterr()
    assert "Demo workspace ready" in out and "5 experiments, 15 models" in out
    assert "olivia / olivia-demo-pass (owner)" in out
    assert out.count("Created the first admin: user admin, password ") == 1
    assert "100%" in err
    created = _counts(Store.open(home))
    assert created["models"] == 15 and created["experiments"] == 5
    assert cli.main(["demo", "--if-empty"]) == 0
    again = capsys.readouterr().out
    assert "already has data" in again and "first admin" not in again
    assert _counts(Store.open(home)) == created
