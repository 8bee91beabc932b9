"""Training: every algorithm through train -> save -> load -> predict, and every refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from core import datasets, training
from core.entities import TASKS, Dataset
from core.errors import DatasetError, InvalidInput, ModelDeckError, NotFound
from core.registry import list_experiments, list_versions, load_estimator, sha256_file
from core.store import Store

State = Callable[[Store], dict[str, object]]
CLASSIFICATION_METRICS = {"accuracy", "precision", "recall", "f1", "roc_auc", "holdout_rows"}
REGRESSION_METRICS = {"mae", "rmse", "r2", "holdout_rows"}


def _holdout(t: Any) -> tuple[pd.DataFrame, pd.Series]:
    """The holdout rows train() used, rebuilt from the recorded settings."""
    settings = t.result.version.settings
    labelled = t.frame[t.frame[settings["target"]].notna()]
    y = labelled[settings["target"]]
    stratify = y if settings["task"] != "regression" else None
    _, X_test, _, y_test = train_test_split(
        labelled,
        y,
        test_size=settings["test_size"],
        random_state=settings["seed"],
        stratify=stratify,
    )
    return X_test, y_test


# ---------------------------------------------------------------------------- every algorithm
@pytest.mark.parametrize("algorithm", list(training.ALGORITHMS))
@pytest.mark.parametrize("task", TASKS)
def test_train_save_load_predict(
    every_algorithm: dict[str, Any], task: str, algorithm: str
) -> None:
    t = every_algorithm[task]
    model = next(m for m in t.result.models if m.algorithm == algorithm)
    assert (model.task, model.origin, model.version) == (task, "trained", 1)

    artifact = t.store.workspace.home / model.artifact_path
    assert artifact == t.store.workspace.artifact_dir(model.id) / "model.joblib"
    assert sha256_file(artifact) == model.sha256 and artifact.stat().st_size == model.size_bytes
    background = pd.read_parquet(artifact.parent / "background.parquet")
    assert list(background.columns) == model.schema.feature_names
    assert 0 < len(background) <= training.BACKGROUND_ROWS

    estimator = load_estimator(t.store, model)
    raw = t.frame.head(40)  # raw rows: key, target, missing values and all
    predictions = estimator.predict(raw)
    assert len(predictions) == len(raw)
    if task == "regression":
        assert np.isfinite(predictions.astype(float)).all()
    else:
        assert set(predictions) <= set(model.schema.classes)
        proba = estimator.predict_proba(raw)
        assert proba.shape == (len(raw), len(model.schema.classes))
        assert np.allclose(proba.sum(axis=1), 1.0)

    # The loaded model is the one that was measured: its holdout metrics come out the same.
    X_test, y_test = _holdout(t)
    metrics, _ = training.evaluate(
        estimator, X_test[model.schema.feature_names], y_test, task, list(model.schema.classes)
    )
    assert {**metrics, "holdout_rows": len(X_test)} == model.metrics
    json.dumps(model.params)  # JSON-safe


@pytest.mark.parametrize("task", TASKS)
def test_metrics_keys_per_task(every_algorithm: dict[str, Any], task: str) -> None:
    expected = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    for model in every_algorithm[task].result.models:
        assert set(model.metrics) == expected
        assert all(v is None or isinstance(v, float | int) for v in model.metrics.values())
    if task != "regression":
        assert all(0.5 < m.metrics["accuracy"] <= 1 for m in every_algorithm[task].result.models)


def test_churn_schema_key_and_profile(every_algorithm: dict[str, Any]) -> None:
    t = every_algorithm["binary"]
    plan = t.result.plan
    assert plan.key_column == "customer_id"
    assert "customer_id" not in plan.features and "churn" not in plan.features
    assert plan.features == [
        "age",
        "tenure_months",
        "monthly_charges",
        "support_tickets",
        "contract",
        "internet_service",
        "payment_method",
    ]
    experiment = list_experiments(t.store)[0]
    assert experiment.key_column == "customer_id" and list(experiment.features) == plan.features
    for model in t.result.models:
        schema = model.schema
        assert (schema.target, schema.task, schema.key_column) == ("churn", "binary", "customer_id")
        assert schema.classes == ("no", "yes")
        kinds = {f.name: f for f in schema.features}
        assert kinds["age"].kind == "numeric" and kinds["age"].dtype == "float64"
        assert kinds["contract"].kind == "categorical"
        assert kinds["contract"].categories == ("month-to-month", "one-year", "two-year")
        settings = t.result.version.settings
        assert set(model.profile["features"]) == set(plan.features)
        assert model.profile["n_rows"] == settings["train_rows"]
        assert model.profile["features"]["age"]["missing_rate"] > 0
        assert set(model.profile["prediction"]["frequencies"]) <= {"no", "yes"}


def test_version_settings_record_the_request(every_algorithm: dict[str, Any]) -> None:
    t = every_algorithm["regression"]
    settings = t.result.version.settings
    assert settings["algorithms"] == list(training.ALGORITHMS)
    assert settings["seed"] == 42 and settings["test_size"] == training.TEST_SIZE
    assert settings["train_rows"] + settings["holdout_rows"] == len(t.frame)
    assert t.result.version.number == 1 and t.result.version.dataset_id == t.dataset.id
    assert t.result.plan.key_column is None


# ---------------------------------------------------------------------------- versions
@pytest.fixture
def small(store: Store) -> Dataset:
    """60 labelled rows: a numeric, a categorical and a row number column, a binary label."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=60)
    frame = pd.DataFrame(
        {
            "row": range(60),
            "x": x,
            "color": rng.choice(["red", "green", "blue"], 60),
            "label": np.where(x > 0, "up", "down"),
            "level": np.tile(["low", "mid", "high"], 20),
            "amount": x * 10 + 3,
            "name": ["same"] * 60,
        }
    )
    return datasets.register_frame(
        store, frame, name="small", kind="upload", source="s.csv", actor="tester"
    )


def _request(dataset: Dataset, **changes: object) -> training.TrainRequest:
    base = {"dataset_id": dataset.id, "target": "label", "algorithms": ("linear",)}
    return training.TrainRequest(**{**base, **changes})  # type: ignore[arg-type]


def test_training_the_same_experiment_again_adds_version_two(store: Store, small: Dataset) -> None:
    first = training.train(store, _request(small, experiment="exp"), actor="tester")
    second = training.train(store, _request(small, experiment="exp"), actor="tester")
    assert (first.version.number, second.version.number) == (1, 2)
    assert second.version.experiment_id == first.version.experiment_id
    assert [v.number for v in list_versions(store, first.version.experiment_id)] == [2, 1]
    assert [m.version for m in second.models] == [2]
    assert len(list_experiments(store)) == 1


def test_progress_reports_rise_to_one(store: Store, small: Dataset) -> None:
    seen: list[tuple[float, str]] = []
    training.train(
        store,
        _request(small, algorithms=("linear", "random_forest")),
        lambda fraction, text: seen.append((fraction, text)),
        actor="tester",
    )
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("(2/2)" in text for _, text in seen)


def test_plan_training_defaults_and_choices(small: Dataset, store: Store) -> None:
    frame = datasets.load_frame(store, small)
    plan = training.plan_training(frame, "label")
    assert plan.key_column == "row" and plan.task == "binary"
    assert plan.features == ["x", "color", "level", "amount", "name"]
    assert plan.classes == ["down", "up"]
    no_key = training.plan_training(frame, "label", key_column="", exclude=["name"])
    assert no_key.key_column is None
    assert no_key.excluded == {"row": "identifier (unique per row)", "name": "excluded by you"}
    chosen = training.plan_training(frame, "amount", features=["x", "color"])
    assert (chosen.task, chosen.features, chosen.classes) == ("regression", ["x", "color"], [])


def test_plan_training_leaves_out_empty_and_date_columns() -> None:
    frame = pd.DataFrame(
        {
            "y": [0, 1] * 20,
            "x": np.arange(40.0),
            "when": pd.date_range("2024-01-01", periods=20).repeat(2),
            "blank": [None] * 40,
        }
    )
    frame.loc[0, "y"] = None
    plan = training.plan_training(frame, "y", key_column="")
    assert plan.features == ["x"] and plan.dropped_rows == 1
    assert plan.excluded["blank"] == "all values missing"
    assert "date/time" in plan.excluded["when"]


def test_default_experiment_name(store: Store, small: Dataset) -> None:
    assert training.default_experiment_name(store, small, "label") == "small"
    training.train(store, _request(small), actor="tester")
    assert training.default_experiment_name(store, small, "label") == "small"
    assert training.default_experiment_name(store, small, "level") == "small · level"


# ---------------------------------------------------------------------------- refusals
def _refused(
    store: Store,
    state: State,
    request: training.TrainRequest,
    error: type[ModelDeckError],
    *parts: str,
) -> ModelDeckError:
    before = state(store)
    with pytest.raises(error) as info:
        training.train(store, request, actor="tester")
    for part in parts:
        assert part in info.value.message, info.value.message
    assert info.value.hint
    after = state(store)
    assert after == before
    assert (after["experiments"], after["versions"], after["models"]) == (0, 0, 0)
    assert after["artifacts/"] == []
    return info.value


@pytest.mark.parametrize(
    ("changes", "error", "parts"),
    [
        ({"algorithms": ("linear", "xgboost")}, InvalidInput, ["Unknown algorithm 'xgboost'"]),
        ({"algorithms": ()}, InvalidInput, ["No algorithm chosen"]),
        ({"task": "ranking"}, InvalidInput, ["Unknown task 'ranking'"]),
        ({"target": "nope"}, DatasetError, ["target column 'nope' is not in the dataset"]),
        ({"target": "name"}, DatasetError, ["target 'name' has only the value 'same'"]),
        (
            {"target": "color", "task": "regression"},
            DatasetError,
            ["'color' is not numeric", "regression"],
        ),
        ({"target": "level", "task": "binary"}, DatasetError, ["'level' has 3 classes, not 2"]),
        ({"task": "multiclass"}, DatasetError, ["'label' has exactly 2 classes"]),
        ({"features": ["x", "label"]}, InvalidInput, ["'label' cannot be a feature"]),
        ({"features": ["x", "zzz"]}, DatasetError, ["feature 'zzz' is not in the dataset"]),
        ({"key_column": "nokey"}, DatasetError, ["key column 'nokey' is not in the dataset"]),
        ({"exclude": ("absent",)}, DatasetError, ["excluded column 'absent'"]),
        (
            {"exclude": ("x", "color", "level", "amount", "name")},
            DatasetError,
            ["No feature columns are left"],
        ),
        ({"dataset_id": "ds_nope"}, NotFound, ["No dataset 'ds_nope'"]),
    ],
    ids=[
        "unknown-algorithm",
        "no-algorithm",
        "unknown-task",
        "missing-target",
        "one-class",
        "regression-on-text",
        "binary-with-3-classes",
        "multiclass-with-2",
        "target-as-feature",
        "missing-feature",
        "missing-key",
        "missing-exclude",
        "no-features",
        "no-dataset",
    ],
)
def test_bad_requests_store_nothing(
    store: Store,
    state: State,
    small: Dataset,
    changes: dict[str, object],
    error: type[ModelDeckError],
    parts: list[str],
) -> None:
    _refused(store, state, _request(small, **changes), error, *parts)


def _register(store: Store, frame: pd.DataFrame) -> Dataset:
    return datasets.register_frame(
        store, frame, name="t", kind="upload", source="t.csv", actor="tester"
    )


def test_target_without_values_is_refused(store: Store, state: State) -> None:
    frame = pd.DataFrame({"x": range(30), "y": [None] * 30}, dtype=float)
    dataset = _register(store, frame)
    _refused(store, state, _request(dataset, target="y"), DatasetError, "target 'y' has no values")


def test_too_few_rows_for_the_split(store: Store, state: State) -> None:
    frame = pd.DataFrame({"x": np.arange(24.0), "label": ["a", "b"] * 12})
    exc = _refused(
        store,
        state,
        _request(_register(store, frame)),
        DatasetError,
        "24 rows with a 'label' value",
        "at least 25",
    )
    assert "larger dataset" in exc.hint


def test_a_class_with_one_row(store: Store, state: State) -> None:
    frame = pd.DataFrame({"x": np.arange(40.0), "label": ["a"] * 20 + ["b"] * 19 + ["c"]})
    _refused(
        store,
        state,
        _request(_register(store, frame)),
        DatasetError,
        "Class 'c' of 'label' has only 1 row",
    )


def test_more_classes_than_holdout_rows(store: Store, state: State) -> None:
    frame = pd.DataFrame({"x": np.arange(30.0), "label": [f"c{i % 10}" for i in range(30)]})
    _refused(
        store,
        state,
        _request(_register(store, frame)),
        DatasetError,
        "cannot be split into training and holdout sets",
        "number of classes = 10",
    )


def test_a_failure_after_fitting_removes_saved_artifacts(
    store: Store, state: State, small: Dataset
) -> None:
    training.train(store, _request(small, experiment="exp"), actor="tester")
    before = state(store)
    changed = _request(
        small, experiment="exp", target="level", algorithms=("linear", "random_forest")
    )
    with pytest.raises(InvalidInput) as info:  # raised while recording, after both fits
        training.train(store, changed, actor="tester")
    assert "Experiment 'exp' predicts 'label' (binary), not 'level'" in info.value.message
    assert "another experiment name" in info.value.hint
    assert state(store) == before


def test_a_cancelled_training_stores_nothing(store: Store, state: State, small: Dataset) -> None:
    before = state(store)

    def cancel_at_second_model(fraction: float, text: str) -> None:
        if "(2/2)" in text:
            raise KeyboardInterrupt  # the user stops the run after the first model is saved

    with pytest.raises(KeyboardInterrupt):
        training.train(
            store,
            _request(small, algorithms=("linear", "random_forest")),
            cancel_at_second_model,
            actor="tester",
        )
    assert state(store) == before
    assert list(Path(store.workspace.artifacts_dir).iterdir()) == []
