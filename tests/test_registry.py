"""The registry: projects > experiments > versions > models, and guarded artifact loading."""

from __future__ import annotations

from typing import Any

import pytest

from core import projects, registry
from core.entities import DEFAULT_PROJECT
from core.errors import ArtifactError, InvalidInput, NotFound, Step
from core.store import Store

# Migration 0001 creates the Default project; these tests count the ones they make.
USER_PROJECTS = "FROM projects WHERE id <> 'prj_default'"


def test_the_default_project_always_exists(store: Store) -> None:
    assert [p.name for p in projects.list_projects(store)] == [DEFAULT_PROJECT]
    assert [p.name for p in projects.list_projects(store)] == [DEFAULT_PROJECT]  # idempotent


def test_an_empty_project_name_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match="project name cannot be empty") as info:
        projects.create_project(store, "  ", actor="tester")
    assert info.value.hint
    assert store.query(f"SELECT count(*) {USER_PROJECTS}").scalar() == 0


def test_models_hang_off_a_project_experiment_and_version(trained_store: Store) -> None:
    experiments = registry.list_experiments(trained_store)
    assert len(experiments) == 1
    experiment = experiments[0]
    assert registry.get_experiment(trained_store, experiment.id) == experiment
    project = next(
        p for p in projects.list_projects(trained_store) if p.id == experiment.project_id
    )
    assert registry.list_experiments(trained_store, project.id) == experiments
    assert registry.list_experiments(trained_store, "prj_other") == []
    versions = registry.list_versions(trained_store, experiment.id)
    assert [v.number for v in versions] == [1]

    models = registry.list_models(trained_store)
    assert {m.algorithm for m in models} == {"linear", "gradient_boosting"}
    for model in models:
        assert (model.project, model.experiment, model.version) == (DEFAULT_PROJECT, "churn", 1)
        assert (model.experiment_id, model.version_id) == (experiment.id, versions[0].id)
    assert registry.list_models(trained_store, experiment_id=experiment.id) == models
    assert registry.list_models(trained_store, version_id=versions[0].id) == models
    assert registry.list_models(trained_store, experiment_id="exp_other") == []


def test_get_model_by_id_and_unique_prefix(trained_store: Store) -> None:
    models = registry.list_models(trained_store)
    for model in models:
        assert registry.get_model(trained_store, model.id) == model
    a, b = (m.id for m in models)
    common = next(i for i in range(len(a)) if a[i] != b[i])
    assert registry.get_model(trained_store, a[: common + 1]).id == a


def test_get_model_not_found_or_ambiguous(trained_store: Store) -> None:
    with pytest.raises(NotFound) as info:
        registry.get_model(trained_store, "mdl_nope")
    assert info.value.message == "No model 'mdl_nope'." and info.value.step == Step("list-models")
    assert info.value.status == 404
    with pytest.raises(NotFound) as info:
        registry.get_model(trained_store, "mdl_")
    assert "Several models start with that" in info.value.hint
    with pytest.raises(NotFound, match="No experiment 'exp_nope'"):
        registry.get_experiment(trained_store, "exp_nope")


def test_summary_and_details_shapes(trained_store: Store) -> None:
    model = registry.list_models(trained_store)[0]
    summary = model.summary()
    assert set(summary) == {
        "id",
        "project",
        "experiment",
        "experiment_id",
        "version",
        "algorithm",
        "task",
        "origin",
        "metrics",
        "train_seconds",
        "size_bytes",
        "created_at",
    }
    assert summary["created_at"].endswith("Z")
    details = model.details()
    assert details["artifact"] == {
        "path": model.artifact_path,
        "format": "joblib",
        "sha256": model.sha256,
        "trusted_types": [],
    }
    assert details["schema"]["key_column"] == "customer_id"
    assert set(details["profile"]["features"]) == set(model.schema.feature_names)


def test_background_sample_has_the_raw_feature_columns(trained_store: Store) -> None:
    model = registry.list_models(trained_store)[0]
    background = registry.background_sample(trained_store, model)
    assert list(background.columns) == model.schema.feature_names
    assert background["contract"].dtype != float  # raw categories, not encoded


# ---------------------------------------------------------------------------- artifacts
def test_load_estimator_predicts(trained_store: Store) -> None:
    model = registry.list_models(trained_store)[0]
    rows = registry.background_sample(trained_store, model)
    predictions = registry.load_estimator(trained_store, model).predict(rows)
    assert set(predictions) <= {"no", "yes"}


def _assert_refused_load(store: Store, *parts: str) -> None:
    for model in registry.list_models(store):
        with pytest.raises(ArtifactError) as info:
            registry.load_estimator(store, model)
        for part in parts:
            assert part.format(id=model.id) in info.value.message, info.value.message
        assert info.value.hint and info.value.status == 422


def test_a_modified_artifact_is_refused(trained_store: Store) -> None:
    for model in registry.list_models(trained_store):
        path = trained_store.workspace.home / model.artifact_path
        path.write_bytes(path.read_bytes() + b"\0")
    _assert_refused_load(
        trained_store, "artifact of model {id} changed on disk", "the registry recorded"
    )


def test_a_swapped_artifact_is_refused(trained_store: Store) -> None:
    a, b = registry.list_models(trained_store)
    path_a = trained_store.workspace.home / a.artifact_path
    path_b = trained_store.workspace.home / b.artifact_path
    data_a = path_a.read_bytes()
    path_a.write_bytes(path_b.read_bytes())  # a valid model, just not the recorded one
    path_b.write_bytes(data_a)
    _assert_refused_load(trained_store, "changed on disk")


def test_a_truncated_artifact_is_refused(trained_store: Store) -> None:
    for model in registry.list_models(trained_store):
        path = trained_store.workspace.home / model.artifact_path
        path.write_bytes(path.read_bytes()[: model.size_bytes // 2])
    _assert_refused_load(trained_store, "changed on disk")


def test_a_missing_artifact_is_refused(trained_store: Store) -> None:
    for model in registry.list_models(trained_store):
        (trained_store.workspace.home / model.artifact_path).unlink()
    _assert_refused_load(trained_store, "artifact of model {id} is missing")


def test_discard_artifacts_removes_only_the_given_folders(trained_store: Store) -> None:
    keep, drop = registry.list_models(trained_store)
    registry.discard_artifacts(trained_store, [drop.id, "mdl_never_written"])
    assert not trained_store.workspace.artifact_dir(drop.id).exists()
    assert trained_store.workspace.artifact_dir(keep.id).is_dir()
    rows = registry.background_sample(trained_store, keep)
    assert len(registry.load_estimator(trained_store, keep).predict(rows)) == len(rows)


# ---------------------------------------------------------------------------- process cache
def test_a_model_row_is_read_from_the_store_once_per_process(
    trained_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = registry.list_models(trained_store)[0]
    registry.clear_cache()
    reads: list[str] = []
    original = Store._once

    def counting(self: Store, fn: Any, *, write: bool) -> Any:
        reads.append("write" if write else "read")
        return original(self, fn, write=write)

    monkeypatch.setattr(Store, "_once", counting)
    assert registry.get_model(trained_store, model.id) == model
    assert registry.get_model(trained_store, model.id) == model
    assert reads == ["read"]
    with pytest.raises(NotFound):  # unknown ids are never kept
        registry.get_model(trained_store, "mdl_unknown")
    with pytest.raises(NotFound):
        registry.get_model(trained_store, "mdl_unknown")
    assert reads == ["read"] * 3


def test_a_kept_estimator_is_verified_again_once_its_file_changes(trained_store: Store) -> None:
    model = registry.list_models(trained_store)[0]
    first = registry.cached_estimator(trained_store, model)
    assert registry.cached_estimator(trained_store, model) is first  # kept, not loaded again
    path = trained_store.workspace.home / model.artifact_path
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="changed on disk"):
        registry.cached_estimator(trained_store, model)
    path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        registry.cached_estimator(trained_store, model)
