"""Model files and importing: safe loading, trust decisions, damaged files, schema checks."""

from __future__ import annotations

import io
import operator
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from core import datasets, registry
from core.engine import artifacts
from core.entities import Dataset, Model
from core.errors import ArtifactError, ModelDeckError, SchemaMismatch, UntrustedArtifact
from core.model_import import ImportRequest, import_model
from core.store import Store

State = Callable[[Store], dict[str, object]]
WINE = datasets.demo_frame("wine")
X_WINE, Y_WINE = WINE.drop(columns="cultivar"), WINE["cultivar"]
CUSTOM_TYPE = "_operator.pos"


def _joblib_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scaled_logit() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_WINE, Y_WINE)


@pytest.fixture(scope="module")
def forest() -> Any:
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(X_WINE, Y_WINE)


@pytest.fixture(scope="module")
def custom() -> Any:
    """A pipeline with a function skops does not trust by default."""
    return make_pipeline(
        FunctionTransformer(operator.pos), StandardScaler(), LogisticRegression(max_iter=2000)
    ).fit(X_WINE, Y_WINE)


@pytest.fixture
def wine(store: Store) -> Dataset:
    return datasets.add_demo(store, "wine", actor="tester")


def _import(store: Store, dataset: Dataset, filename: str, data: bytes, **changes: Any) -> Model:
    request = ImportRequest(
        filename=filename,
        data=data,
        dataset_id=dataset.id,
        target=changes.pop("target", "cultivar"),
        **changes,
    )
    return import_model(store, request, actor="tester")


def _refused(
    store: Store,
    state: State,
    dataset: Dataset,
    error: type[ModelDeckError],
    filename: str,
    data: bytes,
    *parts: str,
    **changes: Any,
) -> ModelDeckError:
    before = state(store)
    with pytest.raises(error) as info:
        _import(store, dataset, filename, data, **changes)
    for part in parts:
        assert part in info.value.message, info.value.message
    assert info.value.hint
    after = state(store)
    assert after == before and (after["models"], after["artifacts/"]) == (0, [])
    return info.value


def _assert_loads_back(store: Store, model: Model, original: Any) -> None:
    estimator = registry.load_estimator(store, model)
    assert (estimator.predict(X_WINE) == original.predict(X_WINE)).all()


# ---------------------------------------------------------------------------- skops
@pytest.mark.parametrize("which", ["scaled_logit", "forest"])
def test_skops_with_ordinary_sklearn_types_imports_without_approval(
    store: Store, wine: Dataset, which: str, request: pytest.FixtureRequest
) -> None:
    original = request.getfixturevalue(which)
    model = _import(store, wine, "wine.skops", sio.dumps(original))
    assert (model.origin, model.artifact_format, model.task) == ("imported", "skops", "multiclass")
    assert (
        model.algorithm == type(original).__name__
        if which == "forest"
        else (model.algorithm == "LogisticRegression")
    )
    assert (model.project, model.experiment, model.version) == ("Default", "wine (imported)", 1)
    assert model.schema.feature_names == list(X_WINE.columns)
    assert model.schema.classes == ("class_0", "class_1", "class_2")
    assert set(model.profile["features"]) == set(X_WINE.columns)
    assert model.metrics["reference_rows"] == len(WINE) and model.metrics["accuracy"] > 0.9
    assert model.trusted_types == () and model.train_seconds == 0.0
    folder = store.workspace.artifact_dir(model.id)
    assert sorted(p.name for p in folder.iterdir()) == ["background.parquet", "model.skops"]
    version = registry.list_versions(store, model.experiment_id)[0]
    assert version.settings["imported_from"] == "wine.skops"
    _assert_loads_back(store, model, original)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_pipelines_modeldeck_trains_need_no_approval(
    every_algorithm: dict[str, Any], task: str
) -> None:
    trained = every_algorithm[task]
    for model in trained.result.models:
        pipeline = registry.load_estimator(trained.store, model)
        check = artifacts.inspect_bytes("m.skops", sio.dumps(pipeline))
        assert check == artifacts.ArtifactCheck("skops", ()), model.algorithm
        assert not check.runs_code


def test_untrusted_skops_type_needs_approval(
    store: Store, state: State, wine: Dataset, custom: Any
) -> None:
    data = sio.dumps(custom)
    exc = _refused(
        store,
        state,
        wine,
        UntrustedArtifact,
        "custom.skops",
        data,
        "'custom.skops' contains types that are not trusted",
        CUSTOM_TYPE,
    )
    assert isinstance(exc, UntrustedArtifact) and exc.untrusted_types == [CUSTOM_TYPE]
    assert exc.step is not None and exc.step.action == "trust-type" and exc.status == 403
    _refused(
        store,
        state,
        wine,
        UntrustedArtifact,
        "custom.skops",
        data,
        CUSTOM_TYPE,
        trusted_types=("numpy.float64",),
    )  # approving something else is not enough

    model = _import(store, wine, "custom.skops", data, trusted_types=(CUSTOM_TYPE,))
    assert model.trusted_types == (CUSTOM_TYPE,)
    _assert_loads_back(store, model, custom)


# ---------------------------------------------------------------------------- joblib
def test_joblib_needs_trust_pickle(
    store: Store, state: State, wine: Dataset, scaled_logit: Any
) -> None:
    data = _joblib_bytes(scaled_logit)
    exc = _refused(
        store,
        state,
        wine,
        UntrustedArtifact,
        "model.joblib",
        data,
        "'model.joblib' is a pickle/joblib file",
        "runs any code",
    )
    assert exc.step is not None and exc.step.action == "trust-pickle"
    model = _import(store, wine, "model.joblib", data, trust_pickle=True)
    assert (model.artifact_format, model.algorithm) == ("joblib", "LogisticRegression")
    assert (store.workspace.artifact_dir(model.id) / "model.joblib").is_file()
    _assert_loads_back(store, model, scaled_logit)


def test_a_pickled_regressor_is_described_as_regression(store: Store) -> None:
    frame = datasets.demo_frame("diabetes")
    X, y = frame.drop(columns="progression"), frame["progression"]
    dataset = datasets.add_demo(store, "diabetes", actor="tester")
    model = _import(
        store,
        dataset,
        "ridge.pkl",
        _joblib_bytes(Ridge().fit(X, y)),
        target="progression",
        trust_pickle=True,
    )
    assert model.task == "regression" and set(model.metrics) == {
        "mae",
        "rmse",
        "r2",
        "reference_rows",
    }


# ---------------------------------------------------------------------------- not models
def test_a_file_that_is_not_a_model(store: Store, state: State, wine: Dataset) -> None:
    not_model = {"weights": [1, 2, 3]}
    _refused(
        store,
        state,
        wine,
        ArtifactError,
        "dict.joblib",
        _joblib_bytes(not_model),
        "'dict.joblib' holds a dict, not a model with predict()",
        trust_pickle=True,
    )
    _refused(
        store,
        state,
        wine,
        ArtifactError,
        "dict.skops",
        sio.dumps(not_model),
        "'dict.skops' holds a dict, not a model",
    )
    _refused(store, state, wine, ArtifactError, "empty.skops", b"", "'empty.skops' is empty")
    exc = _refused(
        store,
        state,
        wine,
        ArtifactError,
        "notes.txt",
        b"hello",
        "'notes.txt' is not a model file ModelDeck can import",
    )
    assert ".skops" in exc.hint


def test_truncated_files_are_refused(
    store: Store, state: State, wine: Dataset, scaled_logit: Any
) -> None:
    pickled = _joblib_bytes(scaled_logit)
    _refused(
        store,
        state,
        wine,
        ArtifactError,
        "cut.joblib",
        pickled[: len(pickled) // 2],
        "'cut.joblib' could not be loaded",
        trust_pickle=True,
    )
    zipped = sio.dumps(scaled_logit)
    exc = _refused(
        store,
        state,
        wine,
        ArtifactError,
        "cut.skops",
        zipped[: len(zipped) // 2],
        "'cut.skops' is not a valid skops file",
    )
    assert "truncated" in exc.hint


def test_format_is_detected_from_suffix_or_signature(scaled_logit: Any) -> None:
    zipped = sio.dumps(scaled_logit)
    assert artifacts.detect_format("model", zipped) == "skops"
    assert artifacts.detect_format("model.PKL", b"x") == "joblib"
    assert artifacts.inspect_bytes("m.pickle", b"x") == artifacts.ArtifactCheck("joblib", ())
    loaded = artifacts.load_bytes("exported", zipped)  # no suffix: recognised by its signature
    assert (loaded.predict(X_WINE) == scaled_logit.predict(X_WINE)).all()


def test_a_stored_skops_file_cut_in_half_is_refused(
    store: Store, wine: Dataset, forest: Any
) -> None:
    model = _import(store, wine, "forest.skops", sio.dumps(forest))
    path = store.workspace.home / model.artifact_path
    path.write_bytes(path.read_bytes()[: model.size_bytes // 2])
    with pytest.raises(ArtifactError, match=f"artifact of model {model.id} changed on disk"):
        registry.load_estimator(store, model)


# ---------------------------------------------------------------------------- schema checks
# sklearn warns before it refuses; the refusal is what a user meets (warnings are not errors).
@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
def test_a_model_that_cannot_predict_the_reference_data(
    store: Store, state: State, wine: Dataset
) -> None:
    three = LogisticRegression(max_iter=2000).fit(X_WINE.iloc[:, :3].to_numpy(), Y_WINE)
    exc = _refused(
        store,
        state,
        wine,
        SchemaMismatch,
        "three.skops",
        sio.dumps(three),
        "could not predict the reference dataset 'wine'",
        "expecting 3 features",
    )
    assert "trained on" in exc.hint and exc.status == 422


def test_a_model_whose_columns_the_reference_lacks(
    store: Store, state: State, scaled_logit: Any
) -> None:
    diabetes = datasets.add_demo(store, "diabetes", actor="tester")
    _refused(
        store,
        state,
        diabetes,
        SchemaMismatch,
        "wine.skops",
        sio.dumps(scaled_logit),
        "expects columns the reference dataset lacks: alcohol, malic_acid",
        target="progression",
    )


def test_a_model_that_takes_the_target_as_input(
    store: Store, state: State, wine: Dataset, scaled_logit: Any
) -> None:
    _refused(
        store,
        state,
        wine,
        ArtifactError,
        "wine.skops",
        sio.dumps(scaled_logit),
        "takes the target 'alcohol' as an input",
        target="alcohol",
    )


def test_numeric_model_on_text_columns_is_a_schema_mismatch(store: Store, state: State) -> None:
    frame = pd.DataFrame({"a": np.arange(40.0), "b": ["x", "y"] * 20, "y": ["p", "q"] * 20})
    fitted = LogisticRegression().fit(
        pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 2}), frame["y"]
    )
    dataset = datasets.register_frame(
        store, frame, name="text", kind="upload", source="t", actor="tester"
    )
    _refused(
        store,
        state,
        dataset,
        SchemaMismatch,
        "m.skops",
        sio.dumps(fitted),
        "could not predict the reference dataset 'text'",
        target="y",
    )


def test_a_model_fitted_on_integer_labels_imports_with_its_classes(store: Store) -> None:
    frame = datasets.loans_frame(n_rows=600)
    dataset = datasets.register_frame(
        store, frame, name="loans", kind="upload", source="loans.csv", actor="tester"
    )
    X = frame[["credit_score", "loan_amount"]]  # no holes: a bare estimator has no imputer
    fitted = LogisticRegression(max_iter=2000).fit(X, frame["default"])
    model = _import(
        store,
        dataset,
        "loans.skops",
        sio.dumps(fitted),
        target="default",
        features=list(X.columns),
        key_column="loan_id",
    )
    assert model.task == "binary" and model.schema.classes == (0, 1)
    assert [type(c) for c in model.schema.classes] == [int, int]
    assert model.metrics["accuracy"] > 0.6 and model.metrics["reference_rows"] == 600
